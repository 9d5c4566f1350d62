"""The official WebAssembly 2.0 core spec suite, one test per spec file.

Each test runs every command of one file through :func:`vm.spectest.run_file` and requires that
none failed (text-format commands are the only skips), SIMD files included.
The tests after those check the runner itself on a small suite written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spec_suite
import wasmtime

from vm import spectest
from vm.execution import tier as vm_tier

# Discovered at collection time, so new files in the suite become new tests automatically.
_FILES = spec_suite.spec_files()
_PARAMS = ([pytest.param(p, id=p.stem) for p in _FILES]
           or [pytest.param(None, id="spec-suite-missing")])

_SHOWN_FAILURES = 30


@pytest.mark.spec
@pytest.mark.parametrize("path", _PARAMS)
def test_spec_file(path: Path | None) -> None:
    if path is None:
        if spec_suite.required():
            pytest.fail(spec_suite.missing_reason() + " (required: DWASM_REQUIRE_SPEC=1)")
        pytest.skip(spec_suite.missing_reason())
    result = spectest.run_file(path)
    if result.failed:
        shown = "\n".join(f"  {f}" for f in result.failures[:_SHOWN_FAILURES])
        more = result.failed - min(result.failed, _SHOWN_FAILURES)
        tail = f"\n  ... and {more} more" if more else ""
        pytest.fail(f"{result.summary()}\n{shown}{tail}", pytrace=False)
    assert result.passed + result.skipped == result.total > 0


@pytest.mark.spec
@pytest.mark.parametrize("path", _PARAMS)
def test_spec_file_compiled(path: Path | None) -> None:
    """The same with the compiled tier forced on: every function is compiled to Python on its
    first call (vm.execution.tier); the tier may refuse only functions beyond CPython's limits
    (20 nested loops), which the suite hardly has."""
    if path is None:
        if spec_suite.required():
            pytest.fail(spec_suite.missing_reason() + " (required: DWASM_REQUIRE_SPEC=1)")
        pytest.skip(spec_suite.missing_reason())
    before = dict(vm_tier.stats)
    result = spectest.run_file(path, tier="compiled")
    if result.failed:
        shown = "\n".join(f"  {f}" for f in result.failures[:_SHOWN_FAILURES])
        more = result.failed - min(result.failed, _SHOWN_FAILURES)
        tail = f"\n  ... and {more} more" if more else ""
        pytest.fail(f"compiled tier: {result.summary()}\n{shown}{tail}", pytrace=False)
    assert result.passed + result.skipped == result.total > 0
    compiled = vm_tier.stats["compiled"] - before["compiled"]
    failed = vm_tier.stats["failed"] - before["failed"]
    assert failed <= compiled // 100, f"{failed} of {compiled + failed} functions stayed " \
                                      "interpreted"


# --- the runner itself, on a small suite made here -------------------------------------------

_MAIN_WAT = """
(module
  (import "spectest" "print_i32" (func $print (param i32)))
  (import "spectest" "global_i32" (global $g i32))
  (import "spectest" "global_f32" (global $gf f32))
  (import "spectest" "memory" (memory 1))
  (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)
  (func (export "g") (result i32) global.get $g)
  (func (export "gf") (result f32) global.get $gf)
  (func (export "nan") (result f32) f32.const nan)
  (func (export "nan64") (result f64) f64.const nan:0x8000000000004)
  (func (export "id") (param externref) (result externref) local.get 0)
  (func (export "fn") (result funcref) ref.func $self)
  (func $self (export "self") i32.const 7 call $print)
  (func (export "trap") unreachable)
  (func $r (export "recurse") call $r)
  (func (export "hang") (loop br 0))
  (global (export "answer") i32 (i32.const 42)))
"""
_EXPORTER_WAT = '(module (func (export "one") (result i32) i32.const 1))'
_IMPORTER_WAT = '(module (import "ex" "one" (func (result i32))) (export "one" (func 0)))'
_UNLINKABLE_WAT = '(module (import "ex" "two" (func)))'
_UNINSTANTIABLE_WAT = '(module (func $t unreachable) (start $t))'
_INVALID_WAT = '(module (func (result i32) i64.const 0))'
_SIMD_WAT = '(module (func (export "v") (param v128) (result v128) local.get 0))'


def _i32(v: int) -> dict:
    return {"type": "i32", "value": str(v)}


def _invoke(field: str, *args: dict, module: str | None = None) -> dict:
    action = {"type": "invoke", "field": field, "args": list(args)}
    if module:
        action["module"] = module
    return action


def _make_suite(folder: Path) -> tuple[Path, dict[str, str]]:
    """Writes a NAME/NAME.json suite exercising every command type; returns it and the
    outcome expected for each line."""
    sub = folder / "mini"
    sub.mkdir()
    for name, wat in [("main", _MAIN_WAT), ("exporter", _EXPORTER_WAT),
                      ("importer", _IMPORTER_WAT), ("unlinkable", _UNLINKABLE_WAT),
                      ("uninstantiable", _UNINSTANTIABLE_WAT), ("invalid", _INVALID_WAT),
                      ("simd", _SIMD_WAT)]:
        (sub / f"{name}.wasm").write_bytes(bytes(wasmtime.wat2wasm(wat)))
    (sub / "garbage.wasm").write_bytes(b"\0asm\x01\0\0\0\x01")
    v128 = {"type": "v128", "lane_type": "i32", "value": ["1", "2", "3", "4"]}
    nan32 = {"type": "f32", "value": "nan:canonical"}
    commands: list[tuple[str, dict]] = [
        ("pass", {"type": "module", "filename": "main.wasm", "name": "$main"}),
        ("pass", {"type": "assert_return", "action": _invoke("add", _i32(1), _i32(2)),
                  "expected": [_i32(3)]}),
        ("pass", {"type": "assert_return", "action": _invoke("add", _i32(2**32 - 1), _i32(0)),
                  "expected": [_i32(2**32 - 1)]}),
        ("fail", {"type": "assert_return", "action": _invoke("add", _i32(1), _i32(2)),
                  "expected": [_i32(4)]}),
        ("pass", {"type": "assert_return", "action": _invoke("g"), "expected": [_i32(666)]}),
        ("pass", {"type": "assert_return", "action": _invoke("gf"),
                  "expected": [{"type": "f32", "value": str(0x4426A666)}]}),
        ("pass", {"type": "assert_return", "action": _invoke("nan"), "expected": [nan32]}),
        ("pass", {"type": "assert_return", "action": _invoke("nan64"),
                  "expected": [{"type": "f64", "value": "nan:arithmetic"}]}),
        ("fail", {"type": "assert_return", "action": _invoke("nan64"),
                  "expected": [{"type": "f64", "value": "nan:canonical"}]}),
        ("pass", {"type": "assert_return",
                  "action": _invoke("id", {"type": "externref", "value": "5"}),
                  "expected": [{"type": "externref", "value": "5"}]}),
        ("fail", {"type": "assert_return",
                  "action": _invoke("id", {"type": "externref", "value": "5"}),
                  "expected": [{"type": "externref", "value": "6"}]}),
        ("pass", {"type": "assert_return",
                  "action": _invoke("id", {"type": "externref", "value": "null"}),
                  "expected": [{"type": "externref", "value": "null"}]}),
        ("pass", {"type": "assert_return", "action": _invoke("fn"),
                  "expected": [{"type": "funcref"}]}),
        ("pass", {"type": "action", "action": _invoke("self"), "expected": []}),
        ("pass", {"type": "assert_return", "action": {"type": "get", "field": "answer"},
                  "expected": [_i32(42)]}),
        ("pass", {"type": "assert_trap", "action": _invoke("trap"), "text": "unreachable",
                  "expected": []}),
        ("fail", {"type": "assert_trap", "action": _invoke("add", _i32(1), _i32(1)),
                  "text": "unreachable", "expected": [{"type": "i32"}]}),
        ("pass", {"type": "assert_exhaustion", "action": _invoke("recurse"),
                  "text": "call stack exhausted", "expected": []}),
        ("fail", {"type": "assert_return", "action": _invoke("hang"), "expected": []}),
        ("fail", {"type": "assert_return", "action": _invoke("missing"), "expected": []}),
        ("skip", {"type": "assert_malformed", "filename": "x.wat", "text": "unexpected token",
                  "module_type": "text"}),
        ("pass", {"type": "assert_malformed", "filename": "garbage.wasm", "text": "unexpected end",
                  "module_type": "binary"}),
        ("fail", {"type": "assert_malformed", "filename": "invalid.wasm", "text": "x",
                  "module_type": "binary"}),
        ("pass", {"type": "assert_invalid", "filename": "invalid.wasm", "text": "type mismatch",
                  "module_type": "binary"}),
        ("pass", {"type": "module", "filename": "exporter.wasm"}),
        ("pass", {"type": "register", "as": "ex"}),
        ("pass", {"type": "module", "filename": "importer.wasm"}),
        ("pass", {"type": "assert_return", "action": _invoke("one"), "expected": [_i32(1)]}),
        ("pass", {"type": "assert_unlinkable", "filename": "unlinkable.wasm",
                  "text": "unknown import", "module_type": "binary"}),
        ("pass", {"type": "assert_uninstantiable", "filename": "uninstantiable.wasm",
                  "text": "unreachable", "module_type": "binary"}),
        ("pass", {"type": "assert_return", "action": _invoke("add", _i32(5), _i32(5),
                                                             module="$main"),
                  "expected": [_i32(10)]}),
        ("fail", {"type": "module", "filename": "garbage.wasm", "name": "$bad"}),
        ("fail", {"type": "assert_return", "action": _invoke("one"), "expected": [_i32(1)]}),
        ("fail", {"type": "register", "as": "bad"}),
        # v128 values are lanes packed into one int; they are never skipped.
        ("pass", {"type": "module", "filename": "simd.wasm"}),
        ("pass", {"type": "assert_return", "action": _invoke("v", v128), "expected": [v128]}),
        ("fail", {"type": "assert_return", "action": _invoke("v", v128),
                  "expected": [dict(v128, value=["1", "2", "3", "5"])]}),
        ("fail", {"type": "assert_return", "action": _invoke("add", _i32(1), _i32(1),
                                                             module="$bad"),
                  "expected": [_i32(2)]}),
    ]
    outcomes = {}
    for line, (outcome, cmd) in enumerate(commands, start=1):
        cmd["line"] = line
        outcomes[str(line)] = outcome
    path = sub / "mini.json"
    path.write_text(json.dumps({"source_filename": "mini.wast",
                                "commands": [c for _, c in commands]}))
    return folder, outcomes


@pytest.fixture(scope="module")
def mini_suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return _make_suite(tmp_path_factory.mktemp("spec"))


def test_runner_counts_each_command_once(mini_suite: tuple[Path, dict[str, str]]) -> None:
    folder, outcomes = mini_suite
    result = spectest.run_file(folder / "mini" / "mini.json", timeout=0.5)
    failed_lines = {str(f.line) for f in result.failures}
    assert failed_lines == {line for line, o in outcomes.items() if o == "fail"}
    assert result.passed == sum(o == "pass" for o in outcomes.values())
    assert result.skipped == sum(o == "skip" for o in outcomes.values())
    assert result.total == len(outcomes)
    assert any("timed out" in f.got for f in result.failures)


def test_runner_command_line(mini_suite: tuple[Path, dict[str, str]], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    folder, outcomes = mini_suite
    report = tmp_path / "report.json"
    code = spectest.main([str(folder), "--json", str(report), "--timeout", "0.5", "-v"])
    out = capsys.readouterr().out.splitlines()
    n_pass, n_fail, n_skip = (sum(o == k for o in outcomes.values())
                              for k in ("pass", "fail", "skip"))
    assert code == 1
    assert out[0] == f"mini: {n_pass} passed, {n_fail} failed, {n_skip} skipped"
    assert out[-1] == f"{n_pass} passed, {n_fail} failed, {n_skip} skipped"
    assert sum(line.startswith("  FAIL mini:") for line in out) == n_fail
    data = json.loads(report.read_text())
    assert data["files"][0]["failed"] == n_fail
    assert data["total"] == {"passed": n_pass, "failed": n_fail, "skipped": n_skip,
                             "message_mismatches": data["files"][0]["message_mismatches"]}


def test_runner_exit_status_and_bad_paths(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert spectest.main([str(tmp_path / "nowhere")]) == 2
    assert spectest.main([str(tmp_path)]) == 2  # an empty folder holds no spec files
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"commands": [
        {"type": "assert_malformed", "line": 1, "filename": "a.wat", "module_type": "text"}]}))
    assert spectest.main([str(ok)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 passed, 0 failed, 1 skipped"


def test_values_parse_and_match() -> None:
    assert spectest.parse_value({"type": "i64", "value": "18446744073709551615"}) == 2**64 - 1
    assert spectest.parse_value({"type": "externref", "value": "3"}) == spectest.ExternRef(3)
    assert spectest.parse_value({"type": "externref", "value": "null"}) is None
    lanes = {"type": "v128", "lane_type": "i16", "value": ["1", "65535"] + ["0"] * 6}
    assert spectest.parse_value(lanes) == 1 | 0xFFFF << 16
    assert spectest.value_matches(lanes, 1 | 0xFFFF << 16)
    f32_lanes = {"type": "v128", "lane_type": "f32",
                 "value": ["nan:canonical", "nan:arithmetic", "0", str(0x80000000)]}
    assert spectest.value_matches(f32_lanes, 0x7FC00000 | 0xFFC00001 << 32 | 0x80000000 << 96)
    assert not spectest.value_matches(f32_lanes, 0x7FC00001)
    f64 = {"type": "f64", "value": str(0x8000000000000000)}
    assert spectest.value_matches(f64, -0.0) and not spectest.value_matches(f64, 0.0)
    assert not spectest.value_matches({"type": "i32", "value": "1"}, True)
