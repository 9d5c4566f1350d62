"""Factories for the closures that translated code is made of.

Every instruction of translated code is a closure ``h(r, pc) -> next_pc`` over the frame's register
list ``r`` (params and locals, then operand-stack slots, then constants; see docs/vm.md). The
register indices an instruction reads and writes are fixed at translation time and captured as
closure cells, so executing ``i32.add`` is one list read per operand, one write, and no stack
push/pop. A negative return value ``-1 - pc`` hands control to the machine loop for calls, returns
and fuel exhaustion (see :mod:`vm.execution.machine`).

The hot arithmetic instructions are generated from expression templates (one ``exec`` per template
at import) so that the expression is inline in the closure; the rest call :mod:`numerics`.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from ..errors import TrapError
from . import numerics

Handler = Callable[[list, int], int]

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF

# --- expression templates -------------------------------------------------------------------
# {a} and {b} are replaced by the operand register reads.

BINARY_EXPR: dict[str, str] = {
    "i32.add": "({a} + {b}) & 0xFFFFFFFF",
    "i32.sub": "({a} - {b}) & 0xFFFFFFFF",
    "i32.mul": "({a} * {b}) & 0xFFFFFFFF",
    "i32.and": "{a} & {b}",
    "i32.or": "{a} | {b}",
    "i32.xor": "{a} ^ {b}",
    "i32.shl": "({a} << ({b} & 31)) & 0xFFFFFFFF",
    "i32.shr_u": "{a} >> ({b} & 31)",
    "i32.shr_s": "((({a} ^ 0x80000000) - 0x80000000) >> ({b} & 31)) & 0xFFFFFFFF",
    "i32.eq": "1 if {a} == {b} else 0",
    "i32.ne": "1 if {a} != {b} else 0",
    "i32.lt_u": "1 if {a} < {b} else 0",
    "i32.gt_u": "1 if {a} > {b} else 0",
    "i32.le_u": "1 if {a} <= {b} else 0",
    "i32.ge_u": "1 if {a} >= {b} else 0",
    "i32.lt_s": "1 if ({a} ^ 0x80000000) < ({b} ^ 0x80000000) else 0",
    "i32.gt_s": "1 if ({a} ^ 0x80000000) > ({b} ^ 0x80000000) else 0",
    "i32.le_s": "1 if ({a} ^ 0x80000000) <= ({b} ^ 0x80000000) else 0",
    "i32.ge_s": "1 if ({a} ^ 0x80000000) >= ({b} ^ 0x80000000) else 0",
    "i64.add": "({a} + {b}) & 0xFFFFFFFFFFFFFFFF",
    "i64.sub": "({a} - {b}) & 0xFFFFFFFFFFFFFFFF",
    "i64.mul": "({a} * {b}) & 0xFFFFFFFFFFFFFFFF",
    "i64.and": "{a} & {b}",
    "i64.or": "{a} | {b}",
    "i64.xor": "{a} ^ {b}",
    "i64.shl": "({a} << ({b} & 63)) & 0xFFFFFFFFFFFFFFFF",
    "i64.shr_u": "{a} >> ({b} & 63)",
    "i64.shr_s": "((({a} ^ 0x8000000000000000) - 0x8000000000000000) >> ({b} & 63))"
                 " & 0xFFFFFFFFFFFFFFFF",
    "i64.eq": "1 if {a} == {b} else 0",
    "i64.ne": "1 if {a} != {b} else 0",
    "i64.lt_u": "1 if {a} < {b} else 0",
    "i64.gt_u": "1 if {a} > {b} else 0",
    "i64.le_u": "1 if {a} <= {b} else 0",
    "i64.ge_u": "1 if {a} >= {b} else 0",
    "i64.lt_s": "1 if ({a} ^ 0x8000000000000000) < ({b} ^ 0x8000000000000000) else 0",
    "i64.gt_s": "1 if ({a} ^ 0x8000000000000000) > ({b} ^ 0x8000000000000000) else 0",
    "i64.le_s": "1 if ({a} ^ 0x8000000000000000) <= ({b} ^ 0x8000000000000000) else 0",
    "i64.ge_s": "1 if ({a} ^ 0x8000000000000000) >= ({b} ^ 0x8000000000000000) else 0",
    # Python float arithmetic is IEEE-754 double arithmetic; NaN results are arithmetic NaNs.
    "f64.add": "{a} + {b}",
    "f64.sub": "{a} - {b}",
    "f64.mul": "{a} * {b}",
    "f64.eq": "1 if {a} == {b} else 0",
    "f64.ne": "1 if {a} != {b} else 0",
    "f64.lt": "1 if {a} < {b} else 0",
    "f64.gt": "1 if {a} > {b} else 0",
    "f64.le": "1 if {a} <= {b} else 0",
    "f64.ge": "1 if {a} >= {b} else 0",
    "f32.eq": "1 if {a} == {b} else 0",
    "f32.ne": "1 if {a} != {b} else 0",
    "f32.lt": "1 if {a} < {b} else 0",
    "f32.gt": "1 if {a} > {b} else 0",
    "f32.le": "1 if {a} <= {b} else 0",
    "f32.ge": "1 if {a} >= {b} else 0",
}

# Conditions for fused compare-and-branch: the branch is taken when the expression is true.
COMPARE_COND: dict[str, str] = {
    name: expr[len("1 if "):-len(" else 0")]
    for name, expr in BINARY_EXPR.items() if expr.startswith("1 if ")
}

UNARY_EXPR: dict[str, str] = {
    "i32.eqz": "1 if {a} == 0 else 0",
    "i64.eqz": "1 if {a} == 0 else 0",
    "i32.wrap_i64": "{a} & 0xFFFFFFFF",
    "i64.extend_i32_u": "{a}",
    "i64.extend_i32_s": "(({a} ^ 0x80000000) - 0x80000000) & 0xFFFFFFFFFFFFFFFF",
    "i32.extend8_s": "((({a} & 0xFF) ^ 0x80) - 0x80) & 0xFFFFFFFF",
    "i32.extend16_s": "((({a} & 0xFFFF) ^ 0x8000) - 0x8000) & 0xFFFFFFFF",
    "f64.neg": "-{a}",
}


def _compile_factory(params: str, body: str, env: dict[str, Any]) -> Callable[..., Handler]:
    src = f"def factory({params}):\n    def h(r, pc):\n{body}\n    return h\n"
    ns: dict[str, Any] = dict(env)
    exec(compile(src, "<dwasm handler>", "exec"), ns)
    return ns["factory"]


def _binary_factory(expr: str) -> Callable[..., Handler]:
    body = f"        r[d] = {expr.format(a='r[a]', b='r[b]')}\n        return pc + 1"
    return _compile_factory("d, a, b", body, {})


def _unary_factory(expr: str) -> Callable[..., Handler]:
    body = f"        r[d] = {expr.format(a='r[a]')}\n        return pc + 1"
    return _compile_factory("d, a", body, {})


def _cmp_branch_factory(cond: str, negate: bool, fuel: bool) -> Callable[..., Handler]:
    c = cond.format(a="r[a]", b="r[b]")
    if negate:
        c = f"not ({c})"
    if fuel:
        body = (f"        if {c}:\n            if fuel[0] <= 0:\n                return -1 - pc\n"
                "            fuel[0] -= 1\n            return t\n        return pc + 1")
        return _compile_factory("a, b, t, fuel", body, {})
    body = f"        if {c}:\n            return t\n        return pc + 1"
    return _compile_factory("a, b, t", body, {})


class LazyFactories(dict):
    """name -> factory, each compiled on first use: compiling all of them at import took about
    40 ms of every process's start-up, for instructions most programs never use."""

    def __init__(self, make: Callable[[str], Callable[..., Handler]], sources: dict[str, str]
                 ) -> None:
        super().__init__()
        self._make = make
        self._sources = sources

    def __missing__(self, name: str) -> Callable[..., Handler]:
        factory = self[name] = self._make(self._sources[name])
        return factory

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self._sources else default

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


BINARY: dict[str, Callable[..., Handler]] = LazyFactories(_binary_factory, BINARY_EXPR)
UNARY: dict[str, Callable[..., Handler]] = LazyFactories(_unary_factory, UNARY_EXPR)
# Fused compare-and-branch, indexed by (negate, fuel): the "fuel" variants are backward branches
# (loop back-edges), the preemption points of running code.
CMP_BRANCH: dict[tuple[bool, bool], dict[str, Callable[..., Handler]]] = {
    (neg, fuel): LazyFactories(lambda c, neg=neg, fuel=fuel: _cmp_branch_factory(c, neg, fuel),
                               COMPARE_COND)
    for neg in (False, True) for fuel in (False, True)}


def call_unary(fn: Callable[[Any], Any], d: int, a: int) -> Handler:
    def h(r: list, pc: int) -> int:
        r[d] = fn(r[a])
        return pc + 1
    return h


def call_binary(fn: Callable[[Any, Any], Any], d: int, a: int, b: int) -> Handler:
    def h(r: list, pc: int) -> int:
        r[d] = fn(r[a], r[b])
        return pc + 1
    return h


# --- data movement ----------------------------------------------------------------------------

def copy(d: int, a: int) -> Handler:
    def h(r: list, pc: int) -> int:
        r[d] = r[a]
        return pc + 1
    return h


def copies(pairs: tuple[tuple[int, int], ...]) -> Handler:
    def h(r: list, pc: int) -> int:
        for d, a in pairs:
            r[d] = r[a]
        return pc + 1
    return h


def select(d: int, a: int, b: int, c: int) -> Handler:
    def h(r: list, pc: int) -> int:
        r[d] = r[a] if r[c] else r[b]
        return pc + 1
    return h


def global_get(d: int, g: Any) -> Handler:
    def h(r: list, pc: int) -> int:
        r[d] = g.value
        return pc + 1
    return h


def global_set(g: Any, a: int) -> Handler:
    def h(r: list, pc: int) -> int:
        g.value = r[a]
        return pc + 1
    return h


# --- control ----------------------------------------------------------------------------------

def jump(t: int) -> Handler:
    def h(r: list, pc: int) -> int:
        return t
    return h


def jump_fuel(pairs: tuple[tuple[int, int], ...], t: int, fuel: list[int]) -> Handler:
    """An unconditional backward branch (``br`` to a loop): a preemption point.

    Fuel is checked before the branch's copies, so a stop leaves the frame exactly at the ``br``.
    """
    if not pairs:
        def h(r: list, pc: int) -> int:
            if fuel[0] <= 0:
                return -1 - pc
            fuel[0] -= 1
            return t
        return h

    def hc(r: list, pc: int) -> int:
        if fuel[0] <= 0:
            return -1 - pc
        fuel[0] -= 1
        for d, a in pairs:
            r[d] = r[a]
        return t
    return hc


def copy_jump(pairs: tuple[tuple[int, int], ...], t: int) -> Handler:
    def h(r: list, pc: int) -> int:
        for d, a in pairs:
            r[d] = r[a]
        return t
    return h


def br_if(c: int, t: int) -> Handler:
    def h(r: list, pc: int) -> int:
        if r[c]:
            return t
        return pc + 1
    return h


def br_unless(c: int, t: int) -> Handler:
    def h(r: list, pc: int) -> int:
        if r[c]:
            return pc + 1
        return t
    return h


def br_if_fuel(c: int, t: int, fuel: list[int]) -> Handler:
    def h(r: list, pc: int) -> int:
        if r[c]:
            if fuel[0] <= 0:
                return -1 - pc
            fuel[0] -= 1
            return t
        return pc + 1
    return h


def br_unless_fuel(c: int, t: int, fuel: list[int]) -> Handler:
    def h(r: list, pc: int) -> int:
        if r[c]:
            return pc + 1
        if fuel[0] <= 0:
            return -1 - pc
        fuel[0] -= 1
        return t
    return h


def br_table(c: int, targets: tuple[tuple[int, tuple[tuple[int, int], ...], bool], ...],
             fuel: list[int]) -> Handler:
    """``targets[-1]`` is the default; each target is (pc, copies, backward). A backward target
    (a loop) checks fuel before anything else, like the other back-edges."""
    last = len(targets) - 1

    def h(r: list, pc: int) -> int:
        i = r[c]
        t, pairs, backward = targets[i if i < last else last]
        if backward:
            if fuel[0] <= 0:
                return -1 - pc
            fuel[0] -= 1
        for d, a in pairs:
            r[d] = r[a]
        return t
    return h


def special(r: list, pc: int) -> int:
    """Hands control to the machine loop (calls, returns); see ``Compiled.specials``."""
    return -1 - pc


def unreachable(r: list, pc: int) -> int:
    raise TrapError("unreachable")


# --- memory -----------------------------------------------------------------------------------

_LOADS: dict[str, tuple[str, str]] = {
    # name: (struct format, post-processing expression on v)
    "i32.load": ("<I", "v"),
    "i64.load": ("<Q", "v"),
    "f64.load": ("<d", "v"),
    "i32.load8_s": ("<b", "v & 0xFFFFFFFF"),
    "i32.load8_u": ("<B", "v"),
    "i32.load16_s": ("<h", "v & 0xFFFFFFFF"),
    "i32.load16_u": ("<H", "v"),
    "i64.load8_s": ("<b", "v & 0xFFFFFFFFFFFFFFFF"),
    "i64.load8_u": ("<B", "v"),
    "i64.load16_s": ("<h", "v & 0xFFFFFFFFFFFFFFFF"),
    "i64.load16_u": ("<H", "v"),
    "i64.load32_s": ("<i", "v & 0xFFFFFFFFFFFFFFFF"),
    "i64.load32_u": ("<I", "v"),
    "f32.load": ("<I", "f32_from_bits(v)"),
}

_STORES: dict[str, tuple[str, str]] = {
    "i32.store": ("<I", "v"),
    "i64.store": ("<Q", "v"),
    "f64.store": ("<d", "v"),
    "f32.store": ("<I", "f32_to_bits(v)"),
    "i32.store8": ("<B", "v & 0xFF"),
    "i32.store16": ("<H", "v & 0xFFFF"),
    "i64.store8": ("<B", "v & 0xFF"),
    "i64.store16": ("<H", "v & 0xFFFF"),
    "i64.store32": ("<I", "v & 0xFFFFFFFF"),
}

_ENV = {"f32_from_bits": numerics.f32_from_bits, "f32_to_bits": numerics.f32_to_bits}


def _load_factory(fmt: str, post: str) -> Callable[..., Handler]:
    # Bounds checks come for free: unpack_from raises struct.error past the end of memory, and
    # the machine turns that into the spec's trap.
    unpack = struct.Struct(fmt).unpack_from
    if post == "v":
        body = "        r[d] = unpack(mem, r[a] + off)[0]\n        return pc + 1"
    else:
        body = f"        v = unpack(mem, r[a] + off)[0]\n        r[d] = {post}\n        return pc + 1"
    return _compile_factory("d, a, off, mem", body, dict(_ENV, unpack=unpack))


def _store_factory(fmt: str, pre: str) -> Callable[..., Handler]:
    pack = struct.Struct(fmt).pack_into
    body = (f"        v = r[b]\n        pack(mem, r[a] + off, {pre})\n        return pc + 1")
    return _compile_factory("a, b, off, mem", body, dict(_ENV, pack=pack))


LOAD: dict[str, Callable[..., Handler]] = LazyFactories(lambda s: _load_factory(*s),
                                                       _LOADS)  # type: ignore[arg-type]
STORE: dict[str, Callable[..., Handler]] = LazyFactories(lambda s: _store_factory(*s),
                                                        _STORES)  # type: ignore[arg-type]


def memory_size(d: int, mem: Any) -> Handler:
    data = mem.data

    def h(r: list, pc: int) -> int:
        r[d] = len(data) >> 16
        return pc + 1
    return h


def memory_grow(d: int, a: int, mem: Any) -> Handler:
    grow = mem.grow

    def h(r: list, pc: int) -> int:
        r[d] = grow(r[a]) & 0xFFFFFFFF
        return pc + 1
    return h


def _oob_memory() -> TrapError:
    return TrapError("out of bounds memory access")


def memory_fill(dst: int, val: int, n: int, mem: Any) -> Handler:
    data = mem.data

    def h(r: list, pc: int) -> int:
        d, v, count = r[dst], r[val], r[n]
        if d + count > len(data):
            raise _oob_memory()
        if count:
            data[d:d + count] = bytes([v & 0xFF]) * count
        return pc + 1
    return h


def memory_copy(dst: int, src: int, n: int, mem: Any) -> Handler:
    data = mem.data

    def h(r: list, pc: int) -> int:
        d, s, count = r[dst], r[src], r[n]
        size = len(data)
        if s + count > size or d + count > size:
            raise _oob_memory()
        if count:
            data[d:d + count] = data[s:s + count]
        return pc + 1
    return h


def memory_init(dst: int, src: int, n: int, mem: Any, inst: Any, seg: int) -> Handler:
    data = mem.data
    datas = inst.datas

    def h(r: list, pc: int) -> int:
        d, s, count = r[dst], r[src], r[n]
        seg_bytes = datas[seg]
        if s + count > len(seg_bytes) or d + count > len(data):
            raise _oob_memory()
        if count:
            data[d:d + count] = seg_bytes[s:s + count]
        return pc + 1
    return h


def data_drop(inst: Any, seg: int) -> Handler:
    datas = inst.datas

    def h(r: list, pc: int) -> int:
        datas[seg] = b""
        return pc + 1
    return h


# --- tables and references --------------------------------------------------------------------

def _oob_table() -> TrapError:
    return TrapError("out of bounds table access")


def table_get(d: int, a: int, table: Any) -> Handler:
    elements = table.elements

    def h(r: list, pc: int) -> int:
        i = r[a]
        if i >= len(elements):
            raise _oob_table()
        r[d] = elements[i]
        return pc + 1
    return h


def table_set(a: int, b: int, table: Any) -> Handler:
    elements = table.elements

    def h(r: list, pc: int) -> int:
        i = r[a]
        if i >= len(elements):
            raise _oob_table()
        elements[i] = r[b]
        return pc + 1
    return h


def table_size(d: int, table: Any) -> Handler:
    elements = table.elements

    def h(r: list, pc: int) -> int:
        r[d] = len(elements)
        return pc + 1
    return h


def table_grow(d: int, init: int, n: int, table: Any) -> Handler:
    grow = table.grow

    def h(r: list, pc: int) -> int:
        r[d] = grow(r[n], r[init]) & 0xFFFFFFFF
        return pc + 1
    return h


def table_fill(dst: int, val: int, n: int, table: Any) -> Handler:
    elements = table.elements

    def h(r: list, pc: int) -> int:
        d, v, count = r[dst], r[val], r[n]
        if d + count > len(elements):
            raise _oob_table()
        elements[d:d + count] = [v] * count
        return pc + 1
    return h


def table_copy(dst: int, src: int, n: int, tdst: Any, tsrc: Any) -> Handler:
    de, se = tdst.elements, tsrc.elements

    def h(r: list, pc: int) -> int:
        d, s, count = r[dst], r[src], r[n]
        if s + count > len(se) or d + count > len(de):
            raise _oob_table()
        de[d:d + count] = se[s:s + count]
        return pc + 1
    return h


def table_init(dst: int, src: int, n: int, table: Any, inst: Any, seg: int) -> Handler:
    elements = table.elements
    elems = inst.elems

    def h(r: list, pc: int) -> int:
        d, s, count = r[dst], r[src], r[n]
        segment = elems[seg]
        if s + count > len(segment) or d + count > len(elements):
            raise _oob_table()
        elements[d:d + count] = segment[s:s + count]
        return pc + 1
    return h


def elem_drop(inst: Any, seg: int) -> Handler:
    elems = inst.elems

    def h(r: list, pc: int) -> int:
        elems[seg] = []
        return pc + 1
    return h


def ref_is_null(d: int, a: int) -> Handler:
    def h(r: list, pc: int) -> int:
        r[d] = 1 if r[a] is None else 0
        return pc + 1
    return h
