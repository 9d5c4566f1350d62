"""Runs the official WebAssembly spec test suite, converted to wabt JSON, against vm/.

Usage::

    python -m vm.spectest PATH... [--json FILE] [-v] [--timeout SECONDS] [--exclude GLOB]

A PATH is a ``.json`` file, a folder holding ``NAME/NAME.json`` (one spec file), or a folder of
such folders (the whole suite). The runner prints ``name: P passed, F failed, S skipped`` per file
and closes with ``N passed, M failed, K skipped`` over all files, where every command of every
file counts exactly once. Only commands on text-format modules (``module_type: text``) are
skipped: vm/ is a binary-only engine. Everything else either passes or fails, including SIMD
commands before vm/ supports SIMD, so that the totals tell how far the engine is from done.

The tests (tests/test_spec.py) call :func:`run_file` directly; the command line is for people.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vm
from vm import structure as S
from vm.errors import (
    ExhaustionError,
    InvalidError,
    LinkError,
    MalformedError,
    TrapError,
    WasmError,
)

#: Seconds one command may run before it is counted failed; generous because vm/ is pure Python.
DEFAULT_TIMEOUT = 60.0

# Artifacts of the conversion (see shared/spec/README.md): these binaries use a data index
# (data.drop / memory.init) without a data count section, which makes them malformed (spec 5.5.16)
# before they are invalid, so either error class is right. memory_init.4.wasm is the documented
# one; memory_init.9.wasm (line 227, "unknown memory 0") has the same defect.
_MALFORMED_OR_INVALID = frozenset({"memory_init.4.wasm", "memory_init.9.wasm"})


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class ExternRef:
    """The host reference the suite writes as ``ref.extern N``: equal iff the numbers are."""

    n: int

    def __str__(self) -> str:
        return f"ref.extern {self.n}"


_LANE_BITS = {"i8": 8, "i16": 16, "i32": 32, "i64": 64, "f32": 32, "f64": 64}
_CANONICAL_NAN = {32: 0x7FC00000, 64: 0x7FF8000000000000}
_SIGN_MASK = {32: 0x7FFFFFFF, 64: 0x7FFFFFFFFFFFFFFF}


def _f32_from_bits(bits: int) -> float:
    from vm.execution.numerics import f32_from_bits

    return f32_from_bits(bits)


def _f32_to_bits(value: float) -> int:
    from vm.execution.numerics import f32_to_bits

    return f32_to_bits(value)


def _f64_from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _f64_to_bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def _v128_from_lanes(lane_type: str, lanes: Sequence[str]) -> int:
    """Packs lane bit patterns little-endian into one 128-bit unsigned int."""
    width = _LANE_BITS[lane_type]
    mask = (1 << width) - 1
    value = 0
    for i, lane in enumerate(lanes):
        value |= (int(lane) & mask) << (i * width)
    return value


def parse_value(spec: Mapping[str, Any]) -> Any:
    """Converts one wabt JSON argument (``{"type": ..., "value": ...}``) to vm/'s Python value.

    v128 values become a 128-bit unsigned int (lane 0 in the low bits), vm/'s representation.
    """
    kind = spec["type"]
    value: Any = spec.get("value")
    if kind in ("i32", "i64"):
        return int(value)
    if kind == "f32":
        return _f32_from_bits(int(value))
    if kind == "f64":
        return _f64_from_bits(int(value))
    if kind in ("funcref", "externref"):
        if value == "null":
            return None
        if kind == "externref":
            return ExternRef(int(value))
        raise ValueError("a non-null funcref cannot be written as an argument")
    if kind == "v128":
        return _v128_from_lanes(spec["lane_type"], value)
    raise ValueError(f"unknown value type {kind!r}")


def _float_matches(expected: str, bits: int, width: int) -> bool:
    if expected == "nan:canonical":
        return bits & _SIGN_MASK[width] == _CANONICAL_NAN[width]
    if expected == "nan:arithmetic":
        return bits & _CANONICAL_NAN[width] == _CANONICAL_NAN[width]
    return bits == int(expected)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def value_matches(spec: Mapping[str, Any], got: Any) -> bool:
    """Whether result ``got`` is what the wabt JSON ``expected`` entry ``spec`` asks for.

    Integers compare exactly (as unsigned bit patterns), floats bit-exactly or by NaN class,
    references by nullness and, for externrefs, by their number.
    """
    kind = spec["type"]
    value: Any = spec.get("value")
    if kind in ("i32", "i64"):
        return _is_int(got) and got == int(value)
    if kind == "f32":
        return isinstance(got, float) and _float_matches(value, _f32_to_bits(got), 32)
    if kind == "f64":
        return isinstance(got, float) and _float_matches(value, _f64_to_bits(got), 64)
    if kind == "funcref":
        if value == "null":
            return got is None
        return isinstance(got, vm.Function)
    if kind == "externref":
        if value == "null":
            return got is None
        if value is None:
            return got is not None
        return got == ExternRef(int(value))
    if kind == "v128":
        if not _is_int(got) or not 0 <= got < 1 << 128:
            return False
        width = _LANE_BITS[spec["lane_type"]]
        mask = (1 << width) - 1
        for i, lane in enumerate(value):
            bits = (got >> (i * width)) & mask
            if spec["lane_type"].startswith("f"):
                if not _float_matches(lane, bits, width):
                    return False
            elif bits != int(lane) & mask:
                return False
        return True
    raise ValueError(f"unknown value type {kind!r}")


def describe_expected(spec: Mapping[str, Any]) -> str:
    """Short text of an expected value for failure reports, e.g. ``f32:0x7fc00000``."""
    kind = spec["type"]
    value: Any = spec.get("value")
    if kind == "v128":
        return f"v128:{spec.get('lane_type')}[{' '.join(map(str, value or []))}]"
    if value is None:
        return kind
    if kind in ("f32", "f64") and not value.startswith("nan"):
        return f"{kind}:{int(value):#x}"
    return f"{kind}:{value}"


def describe_value(got: Any, kind: str | None = None) -> str:
    """Short text of a result value; floats carry their bits (as ``kind``, f32 or f64) so that
    NaNs and signed zeros can be told apart."""
    if got is None:
        return "null"
    if isinstance(got, float):
        if kind == "f32":
            try:
                return f"{got!r} (f32 bits {_f32_to_bits(got):#x})"
            except (ValueError, OverflowError, struct.error):
                pass
        return f"{got!r} (f64 bits {_f64_to_bits(got):#x})"
    if isinstance(got, vm.Function):
        return "funcref"
    if _is_int(got):
        return str(got)
    return f"{type(got).__name__}:{got!r}"


def _describe_values(values: Sequence[Any],
                     expected: Sequence[Mapping[str, Any]] = ()) -> str:
    kinds = [e.get("type") for e in expected] + [None] * len(values)
    return "[" + ", ".join(describe_value(v, k) for v, k in zip(values, kinds)) + "]"


# --------------------------------------------------------------------------------------------
# Results


@dataclass(slots=True)
class Failure:
    """One failed command, or one command whose error message differs from the suite's."""

    file: str
    line: int
    command: str
    expected: str
    got: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.command}: expected {self.expected}, got {self.got}"

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "command": self.command, "expected": self.expected,
                "got": self.got}


@dataclass(slots=True)
class FileResult:
    """Counts of one spec file. ``mismatches`` lists passed commands whose message differed."""

    name: str
    path: Path
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)
    mismatches: list[Failure] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    def summary(self) -> str:
        return f"{self.name}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped"

    def to_json(self, max_items: int = 200) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "message_mismatches": len(self.mismatches),
            "failures": [f.to_json() for f in self.failures[:max_items]],
            "mismatches": [f.to_json() for f in self.mismatches[:max_items]],
        }


class _Fail(Exception):
    """A command did not do what the suite expects."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


class CommandTimeout(BaseException):
    """Raised into a command that ran past its time budget.

    A BaseException so that engine code catching ``Exception`` cannot swallow it.
    """


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupts the body with CommandTimeout after ``seconds`` (main thread on POSIX only)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not seconds or not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CommandTimeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True, slots=True)
class _Broken:
    """Stands in for a module that failed to load, so that commands using it fail too."""

    reason: str


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# The spectest host module


def spectest_module(log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The ``spectest`` import module as the reference interpreter defines it.

    Fresh objects on every call: each spec file gets its own, so that one file's writes to the
    shared memory or table cannot leak into another.
    """

    def printer(name: str) -> Callable[..., None]:
        def print_values(*args: Any) -> None:
            if log is not None:
                log(f"spectest.{name}({', '.join(map(str, args))})")

        return print_values

    prints = {
        "print": (),
        "print_i32": (S.I32,),
        "print_i64": (S.I64,),
        "print_f32": (S.F32,),
        "print_f64": (S.F64,),
        "print_i32_f32": (S.I32, S.F32),
        "print_f64_f64": (S.F64, S.F64),
    }
    exports: dict[str, Any] = {
        name: vm.HostFunction(S.FuncType(params, ()), printer(name))
        for name, params in prints.items()
    }
    f32_666_6 = _f32_from_bits(struct.unpack("<I", struct.pack("<f", 666.6))[0])
    exports["global_i32"] = vm.Global(S.GlobalType(S.I32, False), 666)
    exports["global_i64"] = vm.Global(S.GlobalType(S.I64, False), 666)
    exports["global_f32"] = vm.Global(S.GlobalType(S.F32, False), f32_666_6)
    exports["global_f64"] = vm.Global(S.GlobalType(S.F64, False), 666.6)
    exports["table"] = vm.Table(S.TableType(S.FUNCREF, S.Limits(10, 20)))
    exports["memory"] = vm.Memory(S.MemType(S.Limits(1, 2)))
    return exports


# --------------------------------------------------------------------------------------------
# Running one file


class _FileRun:
    """Interprets the commands of one spec file against one fresh store."""

    def __init__(self, path: Path, result: FileResult, log: Callable[[str], None] | None,
                 tier: str | None = None) -> None:
        self.dir = path.parent
        self.result = result
        self.store = vm.Store(tier=tier)
        # Import namespace: registered module name -> exports (or _Broken).
        self.registry: dict[str, Any] = {"spectest": spectest_module(log)}
        self.named: dict[str, Any] = {}
        self.current: Any = None
        self.line = 0
        self.command = ""

    # -- helpers ---------------------------------------------------------------------------

    def _instance(self, name: str | None) -> Any:
        inst = self.named.get(name) if name is not None else self.current
        if inst is None:
            raise _Fail("a loaded module", f"no module {name or '(current)'}")
        if isinstance(inst, _Broken):
            raise _Fail("a loaded module", f"depends on a module that failed: {inst.reason}")
        return inst

    def _load(self, filename: str) -> S.Module:
        return vm.load((self.dir / filename).read_bytes())

    def _imports(self, module: S.Module) -> dict[str, Any]:
        for imp in module.imports:
            entry = self.registry.get(imp.module)
            if isinstance(entry, _Broken):
                raise _Fail("imports to resolve",
                            f"imports from {imp.module!r}, which failed: {entry.reason}")
        return {name: exports for name, exports in self.registry.items()
                if not isinstance(exports, _Broken)}

    def _instantiate(self, module: S.Module) -> Any:
        return vm.instantiate(self.store, module, self._imports(module))

    def _action(self, action: Mapping[str, Any]) -> list[Any]:
        inst = self._instance(action.get("module"))
        name = action["field"]
        try:
            extern = inst.exports[name]
        except KeyError:
            raise _Fail(f"an export {name!r}", "no such export") from None
        if action["type"] == "get":
            return [extern.value]
        if action["type"] != "invoke":
            raise _Fail("invoke or get", f"action type {action['type']!r}")
        args = [parse_value(a) for a in action.get("args", [])]
        return list(self.store.invoke(extern, args))

    def _message(self, cmd: Mapping[str, Any], exc: BaseException) -> None:
        """Notes (without failing) an error whose message lacks the suite's expected text."""
        text = cmd.get("text", "")
        if text and text not in str(exc):
            self.result.mismatches.append(Failure(
                self.result.name, self.line, self.command, repr(text), _error_text(exc)))

    # -- commands ----------------------------------------------------------------------------

    def cmd_module(self, cmd: Mapping[str, Any]) -> None:
        name = cmd.get("name")
        # Marked broken first, so that any way out of here short of success leaves it broken.
        self.current = _Broken(f"{cmd['filename']} (line {self.line})")
        if name is not None:
            self.named[name] = self.current
        try:
            inst = self._instantiate(self._load(cmd["filename"]))
        except WasmError as exc:
            raise _Fail("module to load and instantiate", _error_text(exc)) from None
        self.current = inst
        if name is not None:
            self.named[name] = inst

    def cmd_register(self, cmd: Mapping[str, Any]) -> None:
        as_name = cmd["as"]
        self.registry[as_name] = _Broken(f"registration of {as_name!r} (line {self.line})")
        inst = self._instance(cmd.get("name"))
        self.registry[as_name] = inst.exports

    def cmd_action(self, cmd: Mapping[str, Any]) -> None:
        try:
            self._action(cmd["action"])
        except WasmError as exc:
            raise _Fail("the action to complete", _error_text(exc)) from None

    def cmd_assert_return(self, cmd: Mapping[str, Any]) -> None:
        expected = cmd.get("expected", [])
        want = "[" + ", ".join(describe_expected(e) for e in expected) + "]"
        try:
            results = self._action(cmd["action"])
        except WasmError as exc:
            raise _Fail(want, _error_text(exc)) from None
        if len(results) != len(expected) or not all(
                value_matches(e, r) for e, r in zip(expected, results)):
            raise _Fail(want, _describe_values(results, expected))

    def _expect_error(self, cmd: Mapping[str, Any], run: Callable[[], Any],
                      classes: tuple[type[BaseException], ...], *, require_text: bool) -> None:
        want = " or ".join(c.__name__ for c in classes) + f" {cmd.get('text', '')!r}"
        try:
            outcome = run()
        except classes as exc:
            if require_text and cmd.get("text", "") not in str(exc):
                raise _Fail(want, _error_text(exc)) from None
            self._message(cmd, exc)
            return
        except WasmError as exc:
            raise _Fail(want, _error_text(exc)) from None
        got = _describe_values(outcome) if isinstance(outcome, list) else "success"
        raise _Fail(want, got)

    def cmd_assert_trap(self, cmd: Mapping[str, Any]) -> None:
        self._expect_error(cmd, lambda: self._action(cmd["action"]), (TrapError,),
                           require_text=True)

    def cmd_assert_exhaustion(self, cmd: Mapping[str, Any]) -> None:
        self._expect_error(cmd, lambda: self._action(cmd["action"]), (ExhaustionError,),
                           require_text=False)

    def cmd_assert_invalid(self, cmd: Mapping[str, Any]) -> None:
        classes: tuple[type[BaseException], ...] = (InvalidError,)
        if cmd["filename"] in _MALFORMED_OR_INVALID:
            classes = (InvalidError, MalformedError)
        self._expect_error(cmd, lambda: self._load(cmd["filename"]), classes, require_text=False)

    def cmd_assert_malformed(self, cmd: Mapping[str, Any]) -> None:
        self._expect_error(cmd, lambda: self._load(cmd["filename"]), (MalformedError,),
                           require_text=False)

    def _load_then_instantiate(self, cmd: Mapping[str, Any]) -> Any:
        try:
            module = self._load(cmd["filename"])
        except WasmError as exc:
            raise _Fail("module to load", _error_text(exc)) from None
        return self._instantiate(module)

    def cmd_assert_unlinkable(self, cmd: Mapping[str, Any]) -> None:
        self._expect_error(cmd, lambda: self._load_then_instantiate(cmd), (LinkError,),
                           require_text=False)

    def cmd_assert_uninstantiable(self, cmd: Mapping[str, Any]) -> None:
        self._expect_error(cmd, lambda: self._load_then_instantiate(cmd), (TrapError,),
                           require_text=False)

    # -- driver --------------------------------------------------------------------------------

    def run(self, cmd: Mapping[str, Any], timeout: float | None) -> None:
        """Runs one command and counts it exactly once, whatever happens inside."""
        self.line = cmd.get("line", 0)
        self.command = cmd.get("type", "?")
        result = self.result
        if cmd.get("module_type") == "text":
            result.skipped += 1
            return
        handler = getattr(self, f"cmd_{self.command}", None)
        try:
            if handler is None:
                raise _Fail("a known command type", repr(self.command))
            with _time_limit(timeout):
                handler(cmd)
        except _Fail as fail:
            self._failed(fail.expected, fail.got)
        except CommandTimeout as exc:
            self._failed("the command to finish", str(exc))
        except Exception as exc:  # an engine bug must not stop the run
            self._failed("no Python exception", f"unexpected {_error_text(exc)}")
        else:
            result.passed += 1

    def _failed(self, expected: str, got: str) -> None:
        self.result.failed += 1
        self.result.failures.append(
            Failure(self.result.name, self.line, self.command, expected, got))


def run_file(path: str | Path, *, timeout: float | None = DEFAULT_TIMEOUT,
             log: Callable[[str], None] | None = None, tier: str | None = None) -> FileResult:
    """Runs every command of one wabt JSON spec file in a fresh store and counts the outcomes.

    Never raises for engine misbehaviour: each command that errors, hangs past ``timeout``
    seconds or raises an unexpected Python exception is counted failed, and the run goes on.
    ``log`` receives the output of the ``spectest.print*`` host functions. ``tier`` is the
    execution tier of the file's store (``vm.Store``; default: ``$DWASM_TIER``).
    """
    path = Path(path)
    result = FileResult(path.stem, path)
    commands = json.loads(path.read_text(encoding="utf-8"))["commands"]
    try:
        runner = _FileRun(path, result, log, tier)
    except Exception as exc:  # no working store: every command fails, with the reason
        for cmd in commands:
            if cmd.get("module_type") == "text":
                result.skipped += 1
            else:
                result.failed += 1
                result.failures.append(Failure(result.name, cmd.get("line", 0),
                                               cmd.get("type", "?"), "a store",
                                               f"unexpected {_error_text(exc)}"))
        return result
    for cmd in commands:
        runner.run(cmd, timeout)
    return result


def discover(paths: Sequence[str | Path], exclude: Sequence[str] = ()) -> list[Path]:
    """Lists the spec files named by ``paths`` (files, NAME/ folders or suite folders), sorted.

    A name (file stem) matching one of the ``exclude`` globs is left out.
    """
    found: list[Path] = []

    def walk(folder: Path) -> None:
        own = folder / f"{folder.name}.json"
        if own.is_file():
            found.append(own)
            return
        for child in sorted(folder.iterdir()):
            if child.is_dir():
                walk(child)
            elif child.suffix == ".json":
                found.append(child)

    for p in map(Path, paths):
        if p.is_dir():
            walk(p)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return [f for f in found if not any(fnmatch.fnmatch(f.stem, g) for g in exclude)]


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vm.spectest",
        description="Run wabt-JSON WebAssembly spec test files against vm/.",
        epilog="Exit status: 0 if no command failed, 1 if some failed, 2 on bad arguments.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="a NAME.json file, a folder holding NAME.json, or a suite folder")
    parser.add_argument("--json", metavar="FILE", help="write per-file counts and failures as JSON")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="print each failure and message mismatch; -vv also spectest prints")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"time budget of one command (default {DEFAULT_TIMEOUT:g}; 0: none)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="leave out files whose name matches GLOB (e.g. 'simd_*'); repeatable")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vm.spectest``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        files = discover(args.paths, args.exclude)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not files:
        print("error: no spec files found in " + " ".join(args.paths), file=sys.stderr)
        return 2
    log = print if args.verbose >= 2 else None
    results: list[FileResult] = []
    for path in files:
        result = run_file(path, timeout=args.timeout or None, log=log)
        results.append(result)
        print(result.summary(), flush=True)
        if args.verbose:
            for failure in result.failures:
                print(f"  FAIL {failure}")
            for mismatch in result.mismatches:
                print(f"  message mismatch {mismatch}")
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    skipped = sum(r.skipped for r in results)
    if args.json:
        report = {
            "files": [r.to_json() for r in results],
            "total": {"passed": passed, "failed": failed, "skipped": skipped,
                      "message_mismatches": sum(len(r.mismatches) for r in results)},
        }
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
