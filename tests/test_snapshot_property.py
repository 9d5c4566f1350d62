"""The snapshot property: stopping a program every N units of fuel, and carrying it across a full
snapshot round trip each time (capture → dumps → loads → restore into a fresh store), changes
nothing — the same results or trap, the same memory bytes, globals and tables, and the same fuel
spent as one uninterrupted run.

Programs: the C kernels of bench/ and examples/ with small arguments, a program that suspends at
host calls, and every ``assert_return`` of a handful of spec-suite files (run in order, so that
each invocation starts from the state the previous ones left, itself carried in a snapshot).

Every test runs twice: with the interpreter alone, and *mixed*, where the run starts in the
compiled tier and each restore goes into a store of the next tier in turn (compiled, interp,
auto), with tiering thresholds at their minimum so that restored interpreter frames move into
compiled code at their first loop back-edge (on-stack replacement). So snapshots taken in
compiled code restore into the interpreter and the other way round.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

import spec_suite
import vm
from vm import snapshot
from vm.execution import tier as vm_tier
from vm.spectest import parse_value, spectest_module, value_matches
from vm.structure import I32, FuncType

REPO = Path(__file__).resolve().parent.parent
SLICES = (1, 2, 3, 5, 8, 13, 100, 1000)
# Spec functions that run long are sliced only as finely as this many stops per run.
MAX_STOPS = 150
# No program here needs more fuel than this (the spec's longest loops take about 65,000).
MAX_FUEL = 1_000_000
BIG_FUEL = 1 << 40

ImportsFactory = Callable[[], dict | None]

# The tiers restores go into, in turn (None: the store's default).
_RESTORE_TIERS: list[str | None] = [None]


@pytest.fixture(autouse=True, params=["interp", "mixed"])
def tiers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "interp":
        monkeypatch.setenv("DWASM_TIER", "interp")
        monkeypatch.setattr(sys.modules[__name__], "_RESTORE_TIERS", ["interp"])
    else:
        monkeypatch.setenv("DWASM_TIER", "compiled")
        monkeypatch.setattr(sys.modules[__name__], "_RESTORE_TIERS",
                            ["compiled", "interp", "auto"])
        monkeypatch.setattr(vm_tier, "TICK", 1)
        monkeypatch.setattr(vm_tier, "HOT_CALLS", 1)
    return request.param
Answer = Callable[[list[Any]], Any]


# --------------------------------------------------------------------------------------------
# State, compared independently of the snapshot code


def value_key(value: Any, funcs: dict[int, int]) -> Any:
    """A comparable form of a value: floats by bits, functions by index in their instance."""
    if isinstance(value, float):
        return ("f", struct.unpack("<Q", struct.pack("<d", value))[0])
    if isinstance(value, vm.Function):
        return ("func", funcs.get(id(value), "foreign"))
    if isinstance(value, int) or value is None:
        return value
    return ("extern", json.dumps(value, sort_keys=True))


def instance_state(inst: vm.Instance) -> dict[str, Any]:
    funcs = {id(f): i for i, f in enumerate(inst.funcs)}
    return {
        "memories": [(len(m.data), hashlib.sha256(m.data).hexdigest()) for m in inst.mems],
        "globals": [value_key(g.value, funcs) for g in inst.globals],
        "tables": [[value_key(v, funcs) for v in t.elements] for t in inst.tables],
        "elems": [len(e) for e in inst.elems],
        "datas": [len(d) for d in inst.datas],
    }


@dataclass
class Outcome:
    """What a run leaves: its results (or trap message), the instance's state, fuel spent."""

    results: list[Any] | None
    trap: str | None
    state: dict[str, Any]
    fuel: int | None = None
    inst: vm.Instance | None = None  # the instance the run ended in
    values: list[Any] | None = None  # the results as values (``results`` holds their keys)

    def same_as(self, other: Outcome) -> bool:
        return (self.results, self.trap, self.state) == (other.results, other.trap, other.state)


def results_key(inst: vm.Instance, values: list[Any]) -> list[Any]:
    funcs = {id(f): i for i, f in enumerate(inst.funcs)}
    return [value_key(v, funcs) for v in values]


# --------------------------------------------------------------------------------------------
# Runners


def run_plain(inst: vm.Instance, export: str, args: list[Any]) -> Outcome:
    """The reference: one ordinary invocation, host functions answering directly."""
    try:
        values: list[Any] | None = inst.invoke(export, args)
        trap = None
    except vm.TrapError as exc:
        values, trap = None, exc.message
    results = None if values is None else results_key(inst, values)
    return Outcome(results, trap, instance_state(inst), inst=inst, values=values)


def fuel_of(inst: vm.Instance, export: str, args: list[Any]) -> int:
    """Fuel an uninterrupted resumable run spends (host functions answering directly)."""
    ex = inst.store.start(inst.exports[export], args)
    assert ex.run(fuel=BIG_FUEL) == "done"
    assert ex.fuel_left is not None
    return BIG_FUEL - ex.fuel_left


class Checkpoints:
    """A chunk store shared by the checkpoints of one run, as a durable flow keeps it."""

    def __init__(self) -> None:
        self.chunks: dict[str, bytes] = {}
        self.restores = 0

    def roundtrip(self, inst: vm.Instance, ex: vm.Execution | None, module: vm.Module,
                  imports: dict | None) -> tuple[vm.Instance, vm.Execution | None]:
        manifest, new = snapshot.capture(inst, ex, known=self.chunks)
        assert not set(new) & set(self.chunks)
        self.chunks.update(new)
        manifest2, chunks = snapshot.loads(snapshot.dumps(manifest, self.chunks))
        assert manifest2 == manifest
        tier = _RESTORE_TIERS[self.restores % len(_RESTORE_TIERS)]
        self.restores += 1
        return snapshot.restore(manifest2, chunks, module, imports, vm.Store(tier=tier))


def run_sliced(inst: vm.Instance, module: vm.Module, export: str, args: list[Any], n: int,
               imports: ImportsFactory, answer: Answer | None = None,
               max_fuel: int = MAX_FUEL) -> Outcome:
    """Run in slices of ``n`` fuel, with a snapshot round trip before every slice and after the
    end; host calls that suspend get ``answer(args)`` delivered (also across a round trip).
    A run that spends more than ``max_fuel`` fails the test (a broken restore can loop)."""
    checkpoints = Checkpoints()
    ex: vm.Execution | None = inst.store.start(inst.exports[export], args)
    spent = 0
    while True:
        inst, ex = checkpoints.roundtrip(inst, ex, module, imports())
        assert ex is not None
        if ex.status == "done":
            return Outcome(results_key(inst, ex.results or []), None, instance_state(inst),
                           spent, inst)
        if ex.status == "host":
            assert answer is not None and ex.pending is not None
            ex.complete_host(answer(list(ex.pending.call_args)))
            continue
        try:
            status = ex.run(fuel=n)
        except vm.TrapError as exc:
            spent += n - (ex.fuel_left or 0)
            return Outcome(None, exc.message, instance_state(inst), spent, inst)
        assert ex.fuel_left is not None
        spent += n - ex.fuel_left
        assert spent <= max_fuel, f"{export}: still running after {spent} units of fuel"
        if status == "suspended":
            assert ex.fuel_left == 0, "a fuel stop before the slice was spent"


# --------------------------------------------------------------------------------------------
# Programs


@dataclass(frozen=True)
class Program:
    """``export(*args)`` of a module; ``imports`` suspend at host calls (the sliced run delivers
    ``answer(args)``), ``plain_imports`` answer directly (the reference run)."""

    name: str
    wasm: bytes
    export: str
    args: tuple[int, ...]
    imports: ImportsFactory = lambda: None
    plain_imports: ImportsFactory = lambda: None
    answer: Answer | None = None

    def module(self) -> vm.Module:
        return vm.load(self.wasm)

    def __str__(self) -> str:
        return f"{self.name}{self.args}"


HOST_WAT = """(module
  (import "env" "ask" (func $ask (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 5))
  (func $work (param $n i32) (result i32) (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (i32.mul (local.get $i) (global.get $g))))
      (i32.store (i32.mul (local.get $i) (i32.const 4)) (local.get $acc))
      (if (i32.eqz (i32.rem_u (local.get $i) (i32.const 7)))
        (then (global.set $g (call $ask (local.get $acc)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (i32.add (local.get $acc) (call $ask (local.get $acc))))
  (func (export "main") (param i32) (result i32)
    (i32.add (i32.const 1000) (call $work (local.get 0)))))"""


def host_imports(suspend: bool) -> dict:
    def ask(x: int) -> int:
        if suspend:
            raise vm.Suspend({"x": x})
        return x % 13

    return {"env": {"ask": vm.HostFunction(FuncType((I32,), (I32,)), ask)}}


def c_program(path: str, export: str, *args: int) -> Program:
    return Program(Path(path).stem + "." + export, (REPO / path).read_bytes(), export, args)


# The benchmarks of bench/vs_pywasm.py with arguments shrunk to a few hundred fuel units.
PROGRAMS = [
    c_program("bench/c/fib.wasm", "fib", 12),
    c_program("bench/c/fib.wasm", "fib_sum", 8),
    c_program("bench/c/hash.wasm", "fnv1a", 200, 2),
    c_program("bench/c/hash.wasm", "mix32", 256, 3),
    c_program("bench/c/sieve.wasm", "sieve", 100, 1),
    c_program("bench/c/matmul.wasm", "matmul", 6),
    c_program("bench/c/mandelbrot.wasm", "mandelbrot", 6, 8),
    c_program("bench/c/nbody.wasm", "nbody", 12),
    Program("examples.fib", (REPO / "examples/fib.wasm").read_bytes(), "fib", (11,)),
    Program("host.main", wasmtime.wat2wasm(HOST_WAT), "main", (150,),
            lambda: host_imports(True), lambda: host_imports(False), lambda a: a[0] % 13),
]


def reference(program: Program) -> tuple[vm.Module, Outcome]:
    module = program.module()
    ref = run_plain(vm.instantiate(vm.Store(), module, program.plain_imports()), program.export,
                    list(program.args))
    assert ref.trap is None
    ref.fuel = fuel_of(vm.instantiate(vm.Store(), module, program.plain_imports()),
                       program.export, list(program.args))
    return module, ref


def check_sliced(program: Program, module: vm.Module, ref: Outcome, n: int) -> None:
    inst = vm.instantiate(vm.Store(), module, program.imports())
    assert ref.fuel is not None
    got = run_sliced(inst, module, program.export, list(program.args), n, program.imports,
                     program.answer, max_fuel=2 * ref.fuel)
    assert got.results == ref.results, f"{program} every {n}: results differ"
    assert got.state == ref.state, f"{program} every {n}: memory, globals or tables differ"
    assert got.fuel == ref.fuel, f"{program} every {n}: fuel spent differs"


@pytest.mark.parametrize("program", PROGRAMS, ids=str)
def test_programs_survive_a_snapshot_every_n_fuel(program: Program) -> None:
    module, ref = reference(program)
    assert ref.fuel is not None and 100 <= ref.fuel <= 3000, "keep the programs small"
    for n in SLICES:
        check_sliced(program, module, ref, n)


_REFERENCES: dict[str, tuple[vm.Module, Outcome]] = {}


@settings(max_examples=40, deadline=None, derandomize=True)
@given(program=st.sampled_from(PROGRAMS), n=st.integers(min_value=1, max_value=400))
def test_programs_survive_a_snapshot_every_n_fuel_chosen_n(program: Program, n: int) -> None:
    if str(program) not in _REFERENCES:
        _REFERENCES[str(program)] = reference(program)
    module, ref = _REFERENCES[str(program)]
    check_sliced(program, module, ref, n)


# --------------------------------------------------------------------------------------------
# Spec-suite functions

SPEC_FILES = ["fac", "call", "call_indirect", "br_table", "br_if", "loop", "memory_grow",
              "left-to-right", "i64", "float_exprs", "unwind", "bulk", "memory_fill", "switch",
              "labels", "stack", "local_tee", "select", "global", "table_grow"]


def spec_arg(spec: dict[str, Any]) -> Any:
    """A spec argument as a value; externrefs become JSON values so that snapshots can hold
    them (vm.spectest's ExternRef objects are not JSON)."""
    if spec["type"] == "externref" and spec.get("value") != "null":
        return {"ref.extern": int(spec["value"])}
    return parse_value(spec)


def expected_matches(expected: list[dict[str, Any]], results: list[Any]) -> bool:
    """Whether the reference run itself did what the suite says (else the comparison is moot)."""
    if len(expected) != len(results):
        return False
    for spec, value in zip(expected, results):
        if spec["type"] == "externref" and spec.get("value") not in (None, "null"):
            if value != {"ref.extern": int(spec["value"])}:
                return False
        elif not value_matches(spec, value):
            return False
    return True


class SpecModule:
    """One module of a spec file, twice: the reference instance, run plainly, and its twin,
    kept between commands only as a snapshot and run in fuel slices."""

    def __init__(self, module: vm.Module) -> None:
        self.module = module
        self.ref = vm.instantiate(vm.Store(), module, {"spectest": spectest_module()})
        # The twin's imports stay the same objects across restores (a restore writes the state
        # of imported memories, tables and globals back into them).
        self.twin_imports = {"spectest": spectest_module()}
        twin = vm.instantiate(vm.Store(), module, self.twin_imports)
        self.state = snapshot.capture(twin)

    def twin(self) -> vm.Instance:
        manifest, chunks = self.state
        inst, _ = snapshot.restore(manifest, snapshot.MemoryChunks(chunks), self.module,
                                   self.twin_imports, vm.Store())
        return inst

    def imports(self) -> dict:
        return self.twin_imports

    def keep(self, inst: vm.Instance) -> None:
        self.state = snapshot.capture(inst)


def spec_invoke(entry: SpecModule, cmd: dict[str, Any], where: str) -> None:
    action = cmd["action"]
    name = action["field"]
    if action["type"] == "get":
        funcs = {id(f): i for i, f in enumerate(entry.ref.funcs)}
        twin = entry.twin()
        twin_funcs = {id(f): i for i, f in enumerate(twin.funcs)}
        assert (value_key(twin.exports[name].value, twin_funcs)
                == value_key(entry.ref.exports[name].value, funcs)), where
        return
    args = [spec_arg(a) for a in action.get("args", [])]
    if cmd["type"] == "assert_exhaustion":
        # Thousands of frames per slice would make this slow; the state still has to follow.
        twin = entry.twin()
        with pytest.raises(vm.ExhaustionError):
            twin.invoke(name, args)
        with pytest.raises(vm.ExhaustionError):
            entry.ref.invoke(name, args)
        entry.keep(twin)
        return
    ref = run_plain(entry.ref, name, args)
    if cmd["type"] == "assert_return":
        assert ref.trap is None and ref.results is not None, where
        assert expected_matches(cmd.get("expected", []), ref.values), where
    # The largest slice first: the fuel it spends tells which smaller slices differ from it.
    first = run_sliced(entry.twin(), entry.module, name, args, SLICES[-1], entry.imports)
    assert first.fuel is not None
    # Smaller slices: those that stop at least once and at most MAX_STOPS times (else one that
    # stops MAX_STOPS times), each from the state the command started in.
    fuel = first.fuel
    slices = [n for n in SLICES[:-1] if n < fuel <= n * MAX_STOPS]
    if not slices and fuel > MAX_STOPS:
        slices = [-(-fuel // MAX_STOPS)]
    outcomes = [first] + [run_sliced(entry.twin(), entry.module, name, args, n, entry.imports)
                          for n in slices]
    for n, got in zip([SLICES[-1], *slices], outcomes):
        assert got.same_as(ref), f"{where}: every {n} fuel: {got.results or got.trap} vs " \
                                 f"{ref.results or ref.trap}"
        assert got.fuel == first.fuel, f"{where}: every {n} fuel: fuel spent differs"
    assert outcomes[-1].inst is not None
    entry.keep(outcomes[-1].inst)


def spec_path(name: str) -> Path | None:
    root = spec_suite.suite_dir()
    return None if root is None else root / name / f"{name}.json"


@pytest.mark.spec
@pytest.mark.parametrize("name", SPEC_FILES)
def test_spec_functions_survive_a_snapshot_every_n_fuel(name: str) -> None:
    path = spec_path(name)
    if path is None or not path.is_file():
        if spec_suite.required():
            pytest.fail(spec_suite.missing_reason())
        pytest.skip(spec_suite.missing_reason())
    commands = json.loads(path.read_text())["commands"]
    current: SpecModule | None = None
    named: dict[str, SpecModule | None] = {}
    invoked = 0
    for cmd in commands:
        where = f"{name}.json line {cmd.get('line')}"
        kind = cmd["type"]
        if kind == "module":
            current = None
            if cmd.get("module_type") != "text":
                module = vm.load((path.parent / cmd["filename"]).read_bytes())
                if all(imp.module == "spectest" for imp in module.imports):
                    current = SpecModule(module)
            if "name" in cmd:
                named[cmd["name"]] = current
        elif kind in ("assert_return", "action", "assert_trap", "assert_exhaustion"):
            target = cmd["action"].get("module")
            entry = named.get(target) if target is not None else current
            if entry is not None:
                spec_invoke(entry, cmd, where)
                invoked += 1
    assert invoked > 0
