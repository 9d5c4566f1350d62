"""The compiled tier (vm.execution.tier, vm.execution.codegen): it computes what the interpreter
computes, stops where the interpreter stops (same fuel, same snapshot positions), traps with the
same backtraces, survives deep recursion, tiers up hot code (on-stack replacement included) and
caches generated code on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

import vm
from vm import snapshot
from vm.execution import tier as T
from vm.structure import I32, FuncType

REPO = Path(__file__).resolve().parent.parent


def load(src: str) -> vm.Module:
    return vm.load(wasmtime.wat2wasm(src))


def instance(module: vm.Module, tier: str, imports: dict | None = None, **limits: int
             ) -> vm.Instance:
    return vm.instantiate(vm.Store(tier=tier, **limits), module, imports or {})


TRAPS = """(module
  (memory 1)
  (table 2 funcref)
  (elem (i32.const 0) $leaf)
  (type $v (func))
  (type $i (func (param i32) (result i32)))
  (func $leaf)
  (func $div (param i32) (result i32) (i32.div_u (i32.const 7) (local.get 0)))
  (func $load (param i32) (result i32) (i32.load offset=4 (local.get 0)))
  (func $mid (param i32) (result i32)
    (i32.add (i32.const 1) (call $load (local.get 0))))
  (func (export "oob") (param i32) (result i32) (call $mid (local.get 0)))
  (func (export "div") (param i32) (result i32) (call $div (local.get 0)))
  (func (export "unreachable") (call $leaf) (unreachable))
  (func (export "indirect") (param i32) (call_indirect (type $v) (local.get 0)))
  (func (export "sig") (drop (call_indirect (type $i) (i32.const 0) (i32.const 0)))))"""


@pytest.mark.parametrize("call, message", [
    (("oob", 65533), "out of bounds memory access"),
    (("div", 0), "integer divide by zero"),
    (("unreachable",), "unreachable"),
    (("indirect", 1), "uninitialized element 1"),
    (("indirect", 5), "undefined element 5"),
    (("sig",), "indirect call type mismatch"),
])
def test_traps_have_the_interpreters_message_and_backtrace(call: tuple, message: str) -> None:
    module = load(TRAPS)
    seen = []
    for tier in ("interp", "compiled"):
        inst = instance(module, tier)
        with pytest.raises(vm.TrapError) as info:
            inst.invoke(call[0], list(call[1:]))
        assert info.value.message.startswith(message)
        seen.append(info.value.backtrace)
    assert seen[0] == seen[1] and seen[0]
    if call[0] == "oob":  # load <- mid <- export, each at its instruction's offset
        assert [f for f, _ in seen[1]] == [2, 3, 4]


RECURSE = """(module
  (func $f (export "f") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
      (else (i32.add (i32.const 1) (call $f (i32.sub (local.get 0) (i32.const 1))))))))"""


def test_deep_recursion_never_reaches_pythons_limit() -> None:
    inst = instance(load(RECURSE), "compiled")
    assert inst.invoke("f", [15_000]) == [15_000]
    assert sys.getrecursionlimit() < 15_000  # so the frames cannot all have been Python's
    small = instance(load(RECURSE), "compiled", max_call_depth=300)
    assert small.invoke("f", [299]) == [299]
    with pytest.raises(vm.ExhaustionError, match="call stack exhausted") as info:
        small.invoke("f", [300])
    assert len(info.value.backtrace) == 300
    assert small.invoke("f", [10]) == [10]  # the store stays usable


LOOPS = """(module
  (import "env" "note" (func $note (param i32) (result i32)))
  (memory (export "memory") 1)
  (func $sum (export "sum") (param $n i32) (result i32) (local $i i32) (local $acc i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $acc (i32.add (local.get $acc) (i32.mul (local.get $i) (local.get $i))))
      (i32.store8 (local.get $i) (local.get $acc))
      (if (i32.eqz (i32.rem_u (local.get $i) (i32.const 97)))
        (then (local.set $acc (i32.xor (local.get $acc) (call $note (local.get $i))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $acc))
  (func (export "main") (param i32) (result i32)
    (i32.add (call $sum (local.get 0)) (call $sum (i32.const 3)))))"""


def note_imports(suspend: bool) -> dict:
    def note(x: int) -> int:
        if suspend:
            raise vm.Suspend(x)
        return x * 3 + 1

    return {"env": {"note": vm.HostFunction(FuncType((I32,), (I32,)), note)}}


def fuel_spent(tier: str, n: int) -> tuple[list, int]:
    inst = instance(load(LOOPS), tier, note_imports(False))
    ex = inst.store.start(inst.exports["main"], [n])
    assert ex.run(fuel=10**9) == "done"
    assert ex.fuel_left is not None
    return ex.results or [], 10**9 - ex.fuel_left


def test_fuel_is_counted_exactly_as_in_the_interpreter() -> None:
    assert fuel_spent("compiled", 3000) == fuel_spent("interp", 3000)
    assert fuel_spent("auto", 3000) == fuel_spent("interp", 3000)


@pytest.mark.parametrize("tier", ["compiled", "auto"])
def test_fuel_slices_stop_exactly_when_spent(tier: str) -> None:
    results, total = fuel_spent("interp", 2000)
    inst = instance(load(LOOPS), tier, note_imports(False))
    ex = inst.store.start(inst.exports["main"], [2000])
    spent = 0
    while (status := ex.run(fuel=777)) == "suspended":
        assert ex.fuel_left == 0  # no overshoot, no early stop
        spent += 777
    assert status == "done" and ex.results == results
    assert spent + 777 - (ex.fuel_left or 0) == total


def test_fuel_limit_stops_a_compiled_infinite_loop() -> None:
    inst = instance(load('(module (func (export "spin") (loop $l (br $l))))'), "compiled",
                    fuel=50_000)
    with pytest.raises(vm.ExhaustionError, match="fuel"):
        inst.invoke("spin")


def snapshot_roundtrip(inst: vm.Instance, ex: vm.Execution, module: vm.Module, tier: str,
                       imports: dict) -> tuple[vm.Instance, vm.Execution]:
    manifest, chunks = snapshot.capture(inst, ex)
    inst2, ex2 = snapshot.restore(manifest, chunks, module, imports, vm.Store(tier=tier))
    assert ex2 is not None
    return inst2, ex2


@pytest.mark.parametrize("first, then", [("interp", "compiled"), ("compiled", "interp"),
                                         ("compiled", "compiled")])
def test_snapshots_move_between_tiers(first: str, then: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "TICK", 1)  # so restored loops move into compiled code at once
    module = load(LOOPS)
    plain = instance(module, "interp", note_imports(False))
    expected = plain.invoke("main", [1000])
    inst = instance(module, first, note_imports(True))
    ex = inst.store.start(inst.exports["main"], [1000])
    tiers = [first, then]
    osr_before = T.stats["osr"]
    stops = 0
    while True:
        status = ex.run(fuel=100)
        if status == "done":
            break
        stops += 1
        inst, ex = snapshot_roundtrip(inst, ex, module, tiers[stops % 2], note_imports(True))
        if ex.status == "host":
            assert ex.pending is not None
            ex.complete_host(ex.pending.call_args[0] * 3 + 1)
    assert ex.results == expected
    assert bytes(inst.exports["memory"].data) == bytes(plain.exports["memory"].data)
    assert stops > 10
    if "compiled" in tiers:
        assert T.stats["osr"] > osr_before  # restored interpreter frames went compiled


def test_auto_tier_compiles_hot_functions_and_replaces_running_loops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWASM_CODE_CACHE", "0")
    module = load(LOOPS)
    inst = instance(module, "auto", note_imports(False))
    before = dict(T.stats)
    assert inst.invoke("main", [50_000]) == instance(module, "interp",
                                                     note_imports(False)).invoke("main",
                                                                                 [50_000])
    # $sum was called only twice but ran 50,000 iterations: compiled and entered mid-loop.
    assert T.stats["osr"] > before["osr"]
    assert inst.funcs[1].py is not None
    cold = instance(load(LOOPS), "auto", note_imports(False))
    cold.invoke("main", [10])
    assert cold.funcs[1].py is None  # a cold function stays interpreted
    # Code compiled for a module before (here in memory; across restarts on disk) is used
    # from a function's first call on.
    again = instance(module, "auto", note_imports(False))
    again.invoke("main", [10])
    assert again.funcs[1].py is not None


def nested_loops(depth: int) -> str:
    opens = "".join(f"(loop $l{i} " for i in range(depth))
    closes = "".join(
        f"(br_if $l{i} (i32.lt_u (local.tee 1 (i32.add (local.get 1) (i32.const 1)))"
        f" (local.get 0))))" for i in reversed(range(depth)))
    return f"""(module (func (export "f") (param i32) (result i32) (local i32)
        {opens}{closes} (local.get 1)))"""


def test_functions_beyond_pythons_nesting_limit_stay_interpreted() -> None:
    module = load(nested_loops(25))
    inst = instance(module, "compiled")
    assert inst.invoke("f", [40]) == instance(module, "interp").invoke("f", [40])
    assert inst.funcs[0].py_failed and inst.funcs[0].py is None
    ok = instance(load(nested_loops(5)), "compiled")
    ok.invoke("f", [40])
    assert ok.funcs[0].py is not None


def test_tier_is_chosen_by_store_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DWASM_TIER", "interp")
    assert vm.Store().tier == "interp"
    assert vm.Store(tier="compiled").tier == "compiled"
    monkeypatch.setenv("DWASM_TIER", "fast")
    with pytest.raises(vm.WasmError, match="DWASM_TIER must be one of"):
        vm.Store()
    with pytest.raises(ValueError, match="tier must be one of"):
        vm.Store(tier="jit")


CACHE_CHILD = """
import sys, vm
from vm.execution import tier
module = vm.load(open(sys.argv[1], "rb").read())
inst = vm.instantiate(vm.Store(tier="compiled"), module)
print(inst.invoke("fib", [20])[0], tier.stats["compiled"], tier.stats["cache_hits"])
"""


def test_generated_code_is_cached_on_disk_by_module_hash(tmp_path: Path) -> None:
    env = {"DWASM_CODE_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    wasm = REPO / "bench" / "c" / "fib.wasm"
    runs = [subprocess.run([sys.executable, "-c", CACHE_CHILD, str(wasm)], cwd=REPO, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    assert runs[0][0] == runs[1][0] == "6765"
    assert runs[0][2] == "0" and int(runs[1][2]) == int(runs[1][1]) > 0
    sha = vm.load(wasm.read_bytes()).sha256
    assert [p.name for p in tmp_path.iterdir()][0].startswith(sha)
