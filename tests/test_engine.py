"""Execution engine behaviour that the spec suite does not pin down: limits, fuel, backtraces,
host calls, and the translator's register allocation (fusion must never change results).
Each test runs with the interpreter and with the compiled tier forced on."""

from __future__ import annotations

import pytest
import wasmtime

import vm
from vm.structure import I32, FuncType


@pytest.fixture(autouse=True, params=["interp", "compiled"])
def tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs in both execution tiers (stores take theirs from DWASM_TIER)."""
    monkeypatch.setenv("DWASM_TIER", request.param)
    return request.param


def load(src: str) -> vm.Module:
    return vm.load(wasmtime.wat2wasm(src))


def run(src: str, name: str, *args: int, imports: dict | None = None,
        store: vm.Store | None = None) -> list:
    inst = vm.instantiate(store or vm.Store(), load(src), imports or {})
    return inst.invoke(name, list(args))


RECURSE = """(module
  (func $f (export "f") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
      (else (i32.add (i32.const 1) (call $f (i32.sub (local.get 0) (i32.const 1))))))))"""


def test_deep_recursion_within_default_limit() -> None:
    # Native engines allow at least 10,000 nested calls; so do we, without Python recursion.
    assert run(RECURSE, "f", 15_000) == [15_000]


def test_runaway_recursion_is_exhaustion_not_recursion_error() -> None:
    store = vm.Store(max_call_depth=500)
    with pytest.raises(vm.ExhaustionError, match="call stack exhausted"):
        run(RECURSE, "f", 501, store=store)
    # The store stays usable after the guest blew its stack.
    assert run(RECURSE, "f", 100, store=store) == [100]


def test_fuel_stops_infinite_loop() -> None:
    src = '(module (func (export "spin") (loop $l (br $l))))'
    store = vm.Store(fuel=10_000)
    with pytest.raises(vm.ExhaustionError, match="fuel"):
        run(src, "spin", store=store)


def test_trap_backtrace_names_wasm_frames() -> None:
    src = """(module
      (func $inner (unreachable))
      (func $outer (export "outer") (call $inner)))"""
    with pytest.raises(vm.TrapError) as info:
        run(src, "outer")
    assert str(info.value) == "unreachable"
    assert [f for f, _ in info.value.backtrace] == [0, 1]
    offsets = [off for _, off in info.value.backtrace]
    assert all(off > 0 for off in offsets)


def test_host_function_receives_and_returns_values() -> None:
    seen = []

    def add(a: int, b: int) -> int:
        seen.append((a, b))
        return (a + b) & 0xFFFFFFFF

    host = vm.HostFunction(FuncType((I32, I32), (I32,)), add)
    src = """(module (import "env" "add" (func $add (param i32 i32) (result i32)))
      (func (export "f") (param i32) (result i32)
        (call $add (local.get 0) (i32.lt_u (local.get 0) (i32.const 10)))))"""
    assert run(src, "f", 5, imports={"env": {"add": host}}) == [6]
    # Comparison results reach the host as ints, never bools.
    assert seen == [(5, 1)] and type(seen[0][1]) is int


def test_host_trap_propagates_with_backtrace() -> None:
    def boom() -> None:
        raise vm.TrapError("host said no")

    host = vm.HostFunction(FuncType((), ()), boom)
    src = """(module (import "env" "boom" (func $b))
      (func (export "f") (call $b)))"""
    with pytest.raises(vm.TrapError, match="host said no") as info:
        run(src, "f", imports={"env": {"boom": host}})
    assert info.value.backtrace and info.value.backtrace[0][0] == 1


def test_results_are_ints_not_bools() -> None:
    src = '(module (func (export "lt") (param i32 i32) (result i32) (i32.lt_s (local.get 0) (local.get 1))))'
    (res,) = run(src, "lt", 1, 2)
    assert res == 1 and type(res) is int


def test_local_tee_and_set_fusion_respect_pending_reads() -> None:
    # local.get 0 is still on the stack when local 0 is overwritten: the old value must be used.
    src = """(module (func (export "f") (param i32) (result i32)
      (local.get 0)
      (local.set 0 (i32.add (local.get 0) (i32.const 100)))
      (local.tee 0 (i32.mul (local.get 0) (i32.const 2)))
      (i32.add)
      (local.get 0)
      (i32.sub)))"""
    # stack: x; x := x+100; x := 2x (tee pushes 2x); x + 2x'; minus x
    x = 7
    x1 = x + 100
    x2 = x1 * 2
    assert run(src, "f", x) == [((x + x2) - x2) & 0xFFFFFFFF]


def test_multi_value_blocks_and_branches() -> None:
    src = """(module (func (export "f") (param i32) (result i32 i32)
      (block $b (result i32 i32)
        (i32.const 1) (i32.const 2)
        (br_if $b (local.get 0))
        (drop) (drop) (i32.const 3) (i32.const 4))))"""
    assert run(src, "f", 1) == [1, 2]
    assert run(src, "f", 0) == [3, 4]


def test_loop_with_params_carries_values() -> None:
    src = """(module (type $t (func (param i32 i32) (result i32)))
      (func (export "sum") (param i32) (result i32)
        (i32.const 0) (local.get 0)
        (loop $l (type $t)
          (local.set 0)                   ;; counter
          (i32.add (local.get 0))         ;; acc += counter
          (local.tee 0 (i32.sub (local.get 0) (i32.const 1)))
          (br_if $l (local.get 0))
          (drop))))"""
    # acc = n + (n-1) + ... + 1
    assert run(src, "sum", 10) == [55]


def test_br_table_to_loop_block_and_function() -> None:
    src = """(module
      (func (export "count") (param i32) (result i32) (local i32)
        (block $out
          (loop $l
            (local.set 1 (i32.add (local.get 1) (i32.const 1)))
            (br_table $l $out (i32.ge_u (local.get 1) (local.get 0)))))
        (local.get 1))
      (func (export "ret") (param i32) (result i32)
        (i32.const 7)
        (loop $l (param i32) (result i32)
          (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
          (br_table $l 1 (i32.add (i32.const 1)) (i32.eqz (local.get 0))))))"""
    assert run(src, "count", 10) == [10]
    assert run(src, "count", 0) == [1]
    # Loops (adding 1 each time) until the param reaches 0, then returns via the function label.
    assert run(src, "ret", 3) == [10]


def test_memory_grow_failure_returns_minus_one() -> None:
    src = """(module (memory 1 2)
      (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"""
    inst = vm.instantiate(vm.Store(), load(src))
    assert inst.invoke("grow", [1]) == [1]
    assert inst.invoke("grow", [1]) == [0xFFFFFFFF]
    assert inst.exports  # no exports besides the function
