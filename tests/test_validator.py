"""Tests of vm.validation: hand-built modules, stack heights, the spec suite's validation cases,
and agreement with wasmtime's validator on random function bodies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vm.binary import opcodes
from vm.errors import InvalidError, MalformedError
from vm.structure import (EXTERNREF, F32, FUNCREF, I32, I64, KIND_FUNC, KIND_GLOBAL, KIND_MEM,
                          MODE_ACTIVE, MODE_DECLARATIVE, MODE_PASSIVE, Data, Elem, Export, Func,
                          FuncType, Global, GlobalType, Import, Limits, MemType, Module,
                          TableType)
from vm.validation import validate_module

EMPTY = -64  # the empty block type


def code(*items: str | tuple) -> list[tuple]:
    """Instruction tuples from ``"name"`` or ``("name", immediate)`` items, offsets = positions."""
    out = []
    for pos, item in enumerate(items):
        name, imm = (item, None) if isinstance(item, str) else item
        out.append((opcodes.BY_NAME[name], imm, pos))
    return out


def const_i32(value: int = 0) -> list[tuple]:
    return code(("i32.const", value), "end")


def module_of(*items: str | tuple, params: tuple = (), results: tuple = (),
              locals_: list[int] | None = None, **fields) -> Module:
    """A module whose only function has the given body (``end`` appended) and type."""
    fields.setdefault("types", [])
    fields["types"] = [FuncType(params, results)] + fields["types"]
    return Module(funcs=[Func(0, locals_ or [], code(*items, "end"))], **fields)


def heights_of(*items: str | tuple, **kwargs) -> list[int]:
    module = module_of(*items, **kwargs)
    validate_module(module)
    return module.funcs[0].heights


def invalid(module: Module, text: str) -> None:
    with pytest.raises(InvalidError) as info:
        validate_module(module)
    assert str(info.value).startswith(text), str(info.value)


# --- stack heights ---------------------------------------------------------------------------

def test_heights_straight_line() -> None:
    assert heights_of(("local.get", 0), ("local.get", 0), "i32.add", ("i32.const", 1), "i32.sub",
                      params=(I32,), results=(I32,)) == [0, 1, 2, 1, 2, 1]


def test_heights_dead_code_after_branch_is_minus_one() -> None:
    module = module_of(("block", -1), ("i32.const", 1), ("br", 0), "unreachable", "i32.add",
                       "end", "drop", results=())
    validate_module(module)
    assert module.funcs[0].heights == [0, 0, 1, -1, -1, -1, 1, 0]
    assert module.funcs[0].max_height == 1


def test_heights_blocks_nested_in_dead_code_stay_dead() -> None:
    hs = heights_of("unreachable", ("block", EMPTY), ("i32.const", 0), "drop", "end",
                    ("loop", EMPTY), "end")
    assert hs == [0, -1, -1, -1, -1, -1, -1, -1]


def test_heights_if_else_counts_condition_and_params() -> None:
    hs = heights_of(("i32.const", 7), ("i32.const", 1), ("if", 1), ("i32.const", 2), "i32.add",
                    "else", ("i32.const", 3), "i32.sub", "end",
                    results=(I32,), types=[FuncType((I32,), (I32,))])
    #            c7  c1  if  c2  add else c3 sub end end
    assert hs == [0, 1, 2, 1, 2, 1, 1, 2, 1, 1]


def test_heights_else_after_unreachable_then_branch() -> None:
    hs = heights_of(("i32.const", 1), ("if", -1), "unreachable", "else", ("i32.const", 3), "end",
                    results=(I32,))
    assert hs == [0, 1, 0, -1, 0, 1, 1]


def test_heights_multi_value_loop_with_params() -> None:
    module = module_of(("i32.const", 1), ("i64.const", 2), ("loop", 1), "drop", ("i64.const", 3),
                       "end", "drop", "drop", types=[FuncType((I32, I64), (I32, I64))])
    validate_module(module)
    assert module.funcs[0].heights == [0, 1, 2, 2, 1, 2, 2, 1, 0]
    assert module.funcs[0].max_height == 2


def test_max_height_at_least_results() -> None:
    module = module_of("unreachable", results=(I32, I64, F32))
    validate_module(module)
    assert module.funcs[0].heights == [0, -1]
    assert module.funcs[0].max_height == 3


def test_heights_br_table_and_return() -> None:
    hs = heights_of(("block", EMPTY), ("local.get", 0), ("br_table", ((0, 0), 0)), "end",
                    ("i32.const", 5), "return", params=(I32,), results=(I32,))
    assert hs == [0, 0, 1, -1, 0, 1, -1]


# --- the polymorphic stack --------------------------------------------------------------------

def test_unreachable_makes_stack_polymorphic() -> None:
    validate_module(module_of("unreachable", "i32.add", "i32.eqz", results=(I32,)))
    validate_module(module_of(("br", 0), "select", ("i32.const", 0), "select", "drop"))
    invalid(module_of("unreachable", ("i64.const", 0), "i32.add", "drop"), "type mismatch")


def test_polymorphic_stack_is_per_block() -> None:
    invalid(module_of("unreachable", ("block", EMPTY), "drop", "end"), "type mismatch")


def test_br_table_with_mixed_arities() -> None:
    invalid(module_of(("block", -1), ("block", EMPTY), ("i32.const", 0),
                      ("br_table", ((0,), 1)), "end", ("i32.const", 0), "end", "drop"),
            "type mismatch")


def test_select_typed_and_untyped() -> None:
    validate_module(module_of(("i32.const", 1), ("i32.const", 2), ("i32.const", 0), "select",
                              results=(I32,)))
    refs = (("ref.null", FUNCREF), ("ref.null", FUNCREF), ("i32.const", 0))
    invalid(module_of(*refs, "select", "drop"), "type mismatch")
    validate_module(module_of(*refs, ("select_t", (FUNCREF,)), "drop"))
    invalid(module_of(*refs, ("select_t", (FUNCREF, FUNCREF)), "drop"), "invalid result arity")
    invalid(module_of(*refs, ("select_t", (EXTERNREF,)), "drop"), "type mismatch")


def test_if_without_else_must_not_change_types() -> None:
    invalid(module_of(("i32.const", 1), ("if", -1), ("i32.const", 1), "end", "drop"),
            "type mismatch")
    validate_module(module_of(("i32.const", 5), ("i32.const", 1), ("if", 1), "end", "drop",
                              types=[FuncType((I32,), (I32,))]))


def test_block_leaving_extra_values() -> None:
    invalid(module_of(("block", EMPTY), ("i32.const", 1), "end"), "type mismatch")
    invalid(module_of(("i32.const", 1), results=()), "type mismatch")


# --- index spaces and module rules ----------------------------------------------------------

def test_unknown_indices() -> None:
    invalid(module_of(("local.get", 1), "drop", params=(I32,)), "unknown local")
    invalid(module_of(("br", 1)), "unknown label")
    invalid(module_of(("call", 3)), "unknown function")
    invalid(module_of(("global.get", 0), "drop"), "unknown global")
    invalid(module_of(("i32.const", 0), ("i32.load", (2, 0)), "drop"), "unknown memory")
    invalid(module_of(("i32.const", 0), ("table.get", 0), "drop"), "unknown table")
    invalid(module_of(("block", 5), "end"), "unknown type")
    invalid(module_of(("elem.drop", 0)), "unknown elem segment")
    invalid(module_of(("data.drop", 0), data_count=0), "unknown data segment")
    invalid(Module(types=[], funcs=[Func(0, [], code("end"))]), "unknown type")


def test_global_is_immutable() -> None:
    glob = Global(GlobalType(I32, False), const_i32())
    invalid(module_of(("i32.const", 1), ("global.set", 0), globals=[glob]), "global is immutable")
    glob = Global(GlobalType(I32, True), const_i32())
    validate_module(module_of(("i32.const", 1), ("global.set", 0), globals=[glob]))


def test_alignment() -> None:
    mem = [MemType(Limits(1))]
    validate_module(module_of(("i32.const", 0), ("i64.load32_u", (2, 0)), "drop", mems=mem))
    invalid(module_of(("i32.const", 0), ("i64.load32_u", (3, 0)), "drop", mems=mem),
            "alignment must not be larger than natural")


def test_limits_and_memories() -> None:
    invalid(Module(mems=[MemType(Limits(2, 1))]), "size minimum must not be greater than maximum")
    invalid(Module(mems=[MemType(Limits(65537))]), "memory size must be at most 65536 pages")
    invalid(Module(tables=[TableType(FUNCREF, Limits(3, 2))]),
            "size minimum must not be greater than maximum")
    imported = Import("m", "mem", KIND_MEM, MemType(Limits(0)))
    invalid(Module(imports=[imported], mems=[MemType(Limits(0))]), "multiple memories")


def test_exports_and_start() -> None:
    invalid(module_of(exports=[Export("a", KIND_FUNC, 0), Export("a", KIND_FUNC, 0)]),
            "duplicate export name")
    invalid(module_of(exports=[Export("g", KIND_GLOBAL, 0)]), "unknown global")
    invalid(module_of("unreachable", params=(I32,), start=0), "start function")
    invalid(module_of(start=1), "unknown function")
    validate_module(module_of(start=0))


def test_constant_expressions() -> None:
    imported = Import("m", "g", KIND_GLOBAL, GlobalType(I32, False))
    imported_mut = Import("m", "h", KIND_GLOBAL, GlobalType(I32, True))
    get0 = code(("global.get", 0), "end")
    validate_module(Module(imports=[imported], globals=[Global(GlobalType(I32, False), get0)]))
    invalid(Module(imports=[imported_mut], globals=[Global(GlobalType(I32, False), get0)]),
            "constant expression required")
    own = [Global(GlobalType(I32, False), const_i32()), Global(GlobalType(I32, False),
                                                               code(("global.get", 0), "end"))]
    invalid(Module(globals=own), "unknown global")
    nonconst = code(("i32.const", 1), ("i32.const", 2), "i32.add", "end")
    invalid(Module(globals=[Global(GlobalType(I32, False), nonconst)]),
            "constant expression required")
    invalid(Module(globals=[Global(GlobalType(I64, False), const_i32())]), "type mismatch")
    invalid(Module(globals=[Global(GlobalType(I32, False), code("end"))]), "type mismatch")


def test_segments() -> None:
    table = [TableType(FUNCREF, Limits(1))]
    funcs = code(("ref.func", 0), "end")
    ok = Elem(FUNCREF, [funcs], MODE_ACTIVE, 0, const_i32())
    validate_module(module_of(tables=table, elems=[ok]))
    invalid(module_of(elems=[ok]), "unknown table")
    extern = Elem(EXTERNREF, [code(("ref.null", EXTERNREF), "end")], MODE_ACTIVE, 0, const_i32())
    invalid(module_of(tables=table, elems=[extern]), "type mismatch")
    data = Data(b"x", MODE_ACTIVE, 0, const_i32())
    invalid(module_of(datas=[data]), "unknown memory")
    validate_module(module_of(datas=[data], mems=[MemType(Limits(1))]))


def test_ref_func_needs_declaration() -> None:
    invalid(module_of(("ref.func", 0), "drop"), "undeclared function reference")
    declared = Elem(FUNCREF, [code(("ref.func", 0), "end")], MODE_DECLARATIVE)
    validate_module(module_of(("ref.func", 0), "drop", elems=[declared]))
    validate_module(module_of(("ref.func", 0), "drop", exports=[Export("f", KIND_FUNC, 0)]))


def test_bulk_and_table_instructions() -> None:
    tables = [TableType(FUNCREF, Limits(1)), TableType(EXTERNREF, Limits(1))]
    passive = Elem(FUNCREF, [], MODE_PASSIVE)
    three = (("i32.const", 0), ("i32.const", 0), ("i32.const", 0))
    validate_module(module_of(*three, ("table.init", (0, 0)), ("elem.drop", 0),
                              tables=tables, elems=[passive]))
    invalid(module_of(*three, ("table.init", (0, 1)), tables=tables, elems=[passive]),
            "type mismatch")
    invalid(module_of(*three, ("table.copy", (0, 1)), tables=tables), "type mismatch")
    validate_module(module_of(("ref.null", EXTERNREF), ("i32.const", 1), ("table.grow", 1),
                              "drop", ("i32.const", 0), ("ref.null", EXTERNREF),
                              ("i32.const", 1), ("table.fill", 1), tables=tables))
    invalid(module_of(*three, ("memory.init", 0), datas=[Data(b"", MODE_PASSIVE)], data_count=1),
            "unknown memory")
    validate_module(module_of(*three, ("memory.init", 0), datas=[Data(b"", MODE_PASSIVE)],
                              data_count=1, mems=[MemType(Limits(1))]))


def test_call_indirect_needs_funcref_table() -> None:
    invalid(module_of(("i32.const", 0), ("call_indirect", (0, 0)),
                      tables=[TableType(EXTERNREF, Limits(1))]), "type mismatch")
    validate_module(module_of(("i32.const", 0), ("call_indirect", (0, 0)),
                              tables=[TableType(FUNCREF, Limits(1))]))


def test_unknown_opcode_is_invalid_not_a_crash() -> None:
    body = [(0xFF, None, 0), (0x0B, None, 1)]
    module = Module(types=[FuncType((), ())], funcs=[Func(0, [], body)])
    invalid(module, "unknown instruction")


# --- the spec suite ---------------------------------------------------------------------------

def _spec_dir() -> Path:
    env = os.environ.get("DWASM_SPEC_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "spec" / "core-2.0"


def _decoder():
    try:
        from vm.binary.decoder import decode_module
    except ImportError:
        pytest.skip("decoder not available")
    return decode_module


def _suite_files() -> list[Path]:
    spec = _spec_dir()
    if not spec.is_dir():
        pytest.skip(f"spec suite not found at {spec}")
    return sorted(spec.glob("*/*.json"))


# Binaries in which wast2json 1.0.32 lost what the assertion is about (see the suite's README):
# without a data count section these are malformed before they are invalid ...
MALFORMED_ARTIFACTS = {"memory_init.4.wasm", "memory_init.9.wasm"}
# ... and ``(select (result))`` was encoded as the untyped select, a plain type error.
TEXT_ARTIFACTS = {"select.2.wasm"}


def test_spec_suite_validation() -> None:
    """Every binary ``assert_invalid`` module is rejected with the suite's message, every
    ``module`` command validates."""
    decode_module = _decoder()
    failures: list[str] = []
    valid = rejected = 0
    for path in _suite_files():
        commands = json.loads(path.read_text())["commands"]
        for cmd in commands:
            kind = cmd["type"]
            if kind not in ("module", "assert_invalid") or cmd.get("module_type") == "text":
                continue
            name = cmd["filename"]
            where = f"{path.parent.name}:{cmd['line']} {name}"
            data = (path.parent / name).read_bytes()
            if kind == "module":
                try:
                    validate_module(decode_module(data))
                    valid += 1
                except (InvalidError, MalformedError) as e:
                    failures.append(f"{where}: valid module rejected: {e}")
                continue
            try:
                validate_module(decode_module(data))
            except InvalidError as e:
                rejected += 1
                if not str(e).startswith(cmd["text"]) and name not in TEXT_ARTIFACTS:
                    failures.append(f"{where}: expected {cmd['text']!r}, got {e}")
            except MalformedError as e:
                if name in MALFORMED_ARTIFACTS:
                    rejected += 1
                else:
                    failures.append(f"{where}: decoder rejected an invalid module: {e}")
            else:
                failures.append(f"{where}: accepted, expected {cmd['text']!r}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
    assert valid > 1000 and rejected > 1000, (valid, rejected)


WAT_HEIGHTS = [
    ("(func (param i32) (result i32) local.get 0 i32.const 1 i32.add)", [0, 1, 2, 1]),
    ("(func (result i32) (block (result i32) i32.const 1 br 0 i32.const 2 drop) i32.const 3"
     " i32.add)", [0, 0, 1, -1, -1, -1, 1, 2, 1]),
    ("(type $t (func (param i32 i32) (result i32)))"
     "(func (result i32) i32.const 1 i32.const 2 i32.const 0 (if (type $t) (param i32 i32)"
     " (result i32) (then i32.add) (else i32.sub)))", [0, 1, 2, 3, 2, 1, 2, 1, 1]),
    ("(func (param i32) (loop $l local.get 0 br_if $l unreachable) nop)",
     [0, 0, 1, 0, -1, 0, 0]),
]


@pytest.mark.parametrize("wat, expected", WAT_HEIGHTS)
def test_heights_of_compiled_wat(wat: str, expected: list[int]) -> None:
    decode_module = _decoder()
    wasmtime = pytest.importorskip("wasmtime")
    module = decode_module(wasmtime.wat2wasm(f"(module {wat})"))
    validate_module(module)
    assert module.funcs[-1].heights == expected


# --- differential test against wasmtime's validator ---------------------------------------------

# Straight-line instructions of the random bodies: (text, operand types, result types); "t" is
# any value type, as for drop and select.
_OPS = [("i32.const 1", "", "i"), ("i64.const 2", "", "I"), ("i32.add", "ii", "i"),
        ("i64.add", "II", "I"), ("i32.eqz", "i", "i"), ("i64.eqz", "I", "i"),
        ("i32.wrap_i64", "I", "i"), ("i64.extend_i32_u", "i", "I"), ("drop", "t", ""),
        ("select", "tti", "t"), ("nop", "", ""), ("local.get 0", "", "i"),
        ("local.get 1", "", "I"), ("local.set 0", "i", ""), ("local.tee 1", "I", "I"),
        ("call 0", "i", "i")]
_BLOCK_TYPES = [("", ""), ("", "i"), ("", "I"), ("i", ""), ("i", "i"), ("I", "i"), ("", "iI"),
                ("ii", "i")]
_WAT_TYPE = {"i": "i32", "I": "i64"}


def _fits(stack: list[str], pops: str) -> bool:
    if len(pops) > len(stack):
        return False
    top = stack[len(stack) - len(pops):]
    return all(p == "t" or p == t for p, t in zip(pops, top)) and (
        "tt" not in pops or top[0] == top[1])


def _random_block(draw, stack: list[str], results: str, labels: list[str], depth: int,
                  out: list[str]) -> None:
    """Appends a random body that is usually (not always) valid for ``stack`` -> ``results``."""
    from hypothesis import strategies as st
    for _ in range(draw(st.integers(0, 8))):
        sloppy = draw(st.integers(0, 19)) == 0  # now and then ignore the operand types
        choice = draw(st.integers(0, 9))
        if choice == 0 and depth < 4:
            params, bresults = draw(st.sampled_from(
                [bt for bt in _BLOCK_TYPES if sloppy or _fits(stack, bt[0])]))
            kind = draw(st.sampled_from(["block", "loop", "if"]))
            bt = "".join(f" (param {_WAT_TYPE[t]})" for t in params) + \
                "".join(f" (result {_WAT_TYPE[t]})" for t in bresults)
            out.append(kind + bt)
            del stack[max(0, len(stack) - len(params) - (kind == "if")):]
            label = params if kind == "loop" else bresults
            _random_block(draw, list(params), bresults, labels + [label], depth + 1, out)
            if kind == "if" and draw(st.booleans()):
                out.append("else")
                _random_block(draw, list(params), bresults, labels + [label], depth + 1, out)
            out.append("end")
            stack += bresults
        elif choice == 1:
            depth_ = draw(st.integers(0, len(labels)))  # one past the end: unknown label
            target = labels[-1 - depth_] if depth_ < len(labels) else ""
            kind = draw(st.sampled_from(["br", "br_if", "br_table", "return", "unreachable"]))
            if kind == "br_table":
                others = [str(d) for d in range(len(labels)) if sloppy or labels[-1 - d] == target]
                out.append(f"br_table {' '.join(others[:3])} {depth_}")
            elif kind in ("return", "unreachable"):
                out.append(kind)
            else:
                out.append(f"{kind} {depth_}")
            if kind == "br_if":
                stack[:] = stack[:max(0, len(stack) - 1 - len(target))] + list(target)
            elif draw(st.integers(0, 3)):
                return  # usually leave dead code empty
        else:
            text, pops, pushes = draw(st.sampled_from(
                [o for o in _OPS if sloppy or _fits(stack, o[1])]))
            out.append(text)
            kept = stack[len(stack) - len(pops):][:1] or ["i"]
            del stack[max(0, len(stack) - len(pops)):]
            stack += [kept[0] if t == "t" else t for t in pushes]
    if draw(st.integers(0, 9)):  # usually leave exactly the results
        for t in stack:
            out.append("drop")
        out += [f"{_WAT_TYPE[t]}.const 0" for t in results]


def _random_function(draw) -> list[str]:
    out: list[str] = []
    _random_block(draw, [], "i", ["i"], 0, out)
    return out


def test_agrees_with_wasmtime_on_random_bodies() -> None:
    """Random well-nested bodies are accepted exactly when wasmtime accepts them, and valid ones
    get one height per instruction."""
    hypothesis = pytest.importorskip("hypothesis")
    wasmtime = pytest.importorskip("wasmtime")
    decode_module = _decoder()
    from hypothesis import strategies as st
    engine = wasmtime.Engine()

    @hypothesis.settings(max_examples=400, deadline=None, derandomize=True)
    @hypothesis.given(st.data())
    def check(data) -> None:
        body = _random_function(data.draw)
        wasm = wasmtime.wat2wasm("(module (func (param i32) (result i32) (local i64) "
                                 + "\n".join(body) + "))")
        try:
            wasmtime.Module.validate(engine, wasm)
            expected = True
        except Exception:
            expected = False
        module = decode_module(bytes(wasm))
        try:
            validate_module(module)
            got = True
        except InvalidError:
            got = False
        assert got == expected, body
        if got:
            func = module.funcs[0]
            assert len(func.heights) == len(func.body)
            assert func.heights[-1] in (-1, 1)
            assert func.max_height >= max(func.heights)

    check()
