"""The dwasm command line: results, argument conversion, and one exit status per error class."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from app import cli
from vm import structure as S

REPO = Path(__file__).resolve().parent.parent
FIB = REPO / "examples" / "fib.wasm"

# Modules for the tests, in the text format; wasmtime's wat2wasm also writes the name section.
CALC_WAT = """
(module
  (func $add (export "add") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add)
  (func (export "add64") (param i64 i64) (result i64)
    local.get 0 local.get 1 i64.add)
  (func (export "third32") (param f32) (result f32)
    local.get 0 f32.const 3 f32.div)
  (func (export "third64") (param f64) (result f64)
    local.get 0 f64.const 3 f64.div)
  (func (export "pair") (result i32 i64) i32.const -1 i64.const -2)
  (func (export "nothing"))
  (func $inner (unreachable))
  (func $outer (export "crash") call $inner)
  (func $forever (export "recurse") call $forever)
  (memory (export "mem") 1))
"""
INVALID_WAT = '(module (func (export "f") (result i32) i64.const 0))'
IMPORTS_WAT = """
(module
  (import "env" "log" (func (param i32)))
  (func (export "f")))
"""


@pytest.fixture(scope="module")
def calc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "calc.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(CALC_WAT)))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- successful runs ----------------------------------------------------------------------


def test_fib_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "run", "--invoke", "fib", FIB, "20") == (0, "6765\n", "")


def test_int_arguments_and_results_are_signed(calc: Path, capsys) -> None:
    assert run(capsys, "run", "--invoke", "add", calc, "-5", "2") == (0, "-3\n", "")
    assert run(capsys, "run", "--invoke", "add", calc, "4294967295", "0") == (0, "-1\n", "")
    assert run(capsys, "run", "--invoke", "add64", calc, "-9223372036854775808", "-1") == (
        0, "9223372036854775807\n", "")


def test_float_results_print_like_wasmtime(calc: Path, capsys) -> None:
    assert run(capsys, "run", "--invoke", "third32", calc, "1")[1] == "0.33333334\n"
    assert run(capsys, "run", "--invoke", "third64", calc, "1")[1] == "0.3333333333333333\n"
    assert run(capsys, "run", "--invoke", "third64", calc, "-inf")[1] == "-inf\n"
    assert run(capsys, "run", "--invoke", "third64", calc, "nan")[1] == "NaN\n"


def test_several_results_one_per_line(calc: Path, capsys) -> None:
    assert run(capsys, "run", "--invoke", "pair", calc) == (0, "-1\n-2\n", "")
    assert run(capsys, "run", "--invoke", "nothing", calc) == (0, "", "")


# --- errors ---------------------------------------------------------------------------------


def test_trap_prints_message_and_named_backtrace(calc: Path, capsys) -> None:
    code, out, err = run(capsys, "run", "--invoke", "crash", calc)
    assert code == cli.EXIT_TRAP and out == ""
    lines = err.splitlines()
    assert lines[0] == "error: trap: unreachable"
    assert lines[1] == "wasm backtrace:"
    assert "$inner" in lines[2] or "inner" in lines[2]
    assert "outer" in lines[3]


def test_call_stack_exhaustion_is_a_trap(calc: Path, capsys) -> None:
    code, _, err = run(capsys, "run", "--invoke", "recurse", calc)
    assert code == cli.EXIT_TRAP
    assert err.startswith("error: trap: ")
    lines = err.splitlines()
    assert len(lines) < 40, "a deep backtrace is cut short"
    assert any("frames omitted" in line for line in lines)


@pytest.mark.parametrize("argv, code, message", [
    (["run", "--invoke", "add", "{calc}", "1"], cli.EXIT_USAGE, "takes 2 argument"),
    (["run", "--invoke", "add", "{calc}", "1", "x"], cli.EXIT_USAGE, "not an integer"),
    (["run", "--invoke", "add", "{calc}", "1", "4294967296"], cli.EXIT_USAGE, "out of range"),
    (["run", "--invoke", "add", "{calc}", "1", "-2147483649"], cli.EXIT_USAGE, "out of range"),
    (["run", "--invoke", "third64", "{calc}", "one"], cli.EXIT_USAGE, "not a number"),
    (["run", "--invoke", "nope", "{calc}"], cli.EXIT_USAGE, "no export 'nope'"),
    (["run", "--invoke", "mem", "{calc}"], cli.EXIT_USAGE, "not a function"),
    (["run", "{calc}"], cli.EXIT_USAGE, "not a WASI command"),
    (["run", "--invoke", "f", "{missing}"], cli.EXIT_FILE, "cannot read"),
    (["run", "--invoke", "f", "{garbage}"], cli.EXIT_MODULE, "malformed"),
    (["run", "--invoke", "f", "{invalid}"], cli.EXIT_MODULE, "invalid"),
    (["run", "--invoke", "f", "{imports}"], cli.EXIT_LINK, "provides only wasi"),
])
def test_errors_have_one_line_and_their_exit_code(
        argv: list[str], code: int, message: str, calc: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "garbage.wasm").write_bytes(b"\0asm\x01\0\0\0\x01")
    # Decodes fine but does not validate: an i64 where the i32 result is declared.
    (tmp_path / "invalid.wasm").write_bytes(bytes(wasmtime.wat2wasm(INVALID_WAT)))
    (tmp_path / "imports.wasm").write_bytes(bytes(wasmtime.wat2wasm(IMPORTS_WAT)))
    paths = {"calc": calc, "missing": tmp_path / "missing.wasm",
             "garbage": tmp_path / "garbage.wasm", "invalid": tmp_path / "invalid.wasm",
             "imports": tmp_path / "imports.wasm"}
    got_code, out, err = run(capsys, *[a.format(**paths) for a in argv])
    assert (got_code, out) == (code, "")
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys)[0] == cli.EXIT_USAGE
    assert run(capsys, "frobnicate")[0] == cli.EXIT_USAGE
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "exit status" in out and "6  the wasm code trapped" in out


# --- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize("value, valtype, text", [
    (0.1, S.F64, "0.1"),
    (1e20, S.F64, "100000000000000000000"),
    (1.5e-7, S.F64, "0.00000015"),
    (100.0, S.F64, "100"),
    (-0.0, S.F64, "-0"),
    (0.0, S.F32, "0"),
    (float("inf"), S.F32, "inf"),
    (float("nan"), S.F32, "NaN"),
    (3.4028234663852886e38, S.F32, "340282350000000000000000000000000000000"),
    (1.401298464324817e-45, S.F32, "0.000000000000000000000000000000000000000000001"),
    (0.10000000149011612, S.F32, "0.1"),
    (16777216.0, S.F32, "16777216"),
])
def test_format_float_matches_rust_display(value: float, valtype: int, text: str) -> None:
    assert cli.format_float(value, valtype) == text


def test_parse_arg_converts_to_bit_patterns() -> None:
    assert cli.parse_arg("-1", S.I32) == 0xFFFFFFFF
    assert cli.parse_arg("0x10", S.I64) == 16
    assert cli.parse_arg("-1", S.I64) == 0xFFFFFFFFFFFFFFFF
    assert cli.parse_arg("0.1", S.F32) == 0.10000000149011612
    assert cli.parse_arg("1e39", S.F32) == float("inf")
    with pytest.raises(ValueError):
        cli.parse_arg("1", S.FUNCREF)


# --- as a program -----------------------------------------------------------------------------


def _subprocess(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def test_subprocess_module(calc: Path) -> None:
    proc = _subprocess([sys.executable, "-m", "app.cli", "run", "--invoke", "fib", str(FIB),
                        "15"])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "610\n", "")
    proc = _subprocess([sys.executable, "-m", "app.cli", "run", "--invoke", "crash", str(calc)])
    assert proc.returncode == cli.EXIT_TRAP
    assert proc.stderr.startswith("error: trap: unreachable\n")


def test_console_script() -> None:
    script = shutil.which("dwasm", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the dwasm console script is not installed next to this Python")
    proc = _subprocess([script, "run", "--invoke", "fib", str(FIB), "10"])
    assert (proc.returncode, proc.stdout) == (0, "55\n")
