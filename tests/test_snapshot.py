"""Snapshots (docs/snapshot-format.md): every execution state captures and restores into a fresh
store, every part of an instance survives, checkpoints are incremental, and anything malformed is
a ``SnapshotError``. The golden files in tests/golden/ must keep restoring in every later version.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import wasmtime

import vm
from vm import snapshot
from vm.execution.numerics import f32_from_bits, f32_to_bits
from vm.snapshot import CHUNK_SIZE, SnapshotError
from vm.structure import F32, F64, I32, I64, FuncType, GlobalType

GOLDEN = Path(__file__).resolve().parent / "golden"

# A signalling f32 NaN with a payload, and its value as the engine holds it.
F32_SNAN_BITS = 0x7FA00001
F32_SNAN = f32_from_bits(F32_SNAN_BITS)


def load(src: str) -> vm.Module:
    return vm.load(wasmtime.wat2wasm(src))


def roundtrip(inst: vm.Instance, ex: vm.Execution | None, module: vm.Module,
              imports: dict | None = None, store: vm.Store | None = None,
              host: Any = None) -> tuple[vm.Instance, vm.Execution | None]:
    """capture → dumps → loads → restore into a fresh store, checking the manifest is JSON."""
    manifest, chunks = snapshot.capture(inst, ex, host=host)
    assert json.loads(json.dumps(manifest)) == manifest
    blob = snapshot.dumps(manifest, chunks)
    manifest2, chunks2 = snapshot.loads(blob)
    assert manifest2 == manifest
    return snapshot.restore(manifest2, chunks2, module, imports, store or vm.Store())


def bits(values: list[Any]) -> list[tuple[str, int]]:
    """Values compared bit-exactly (floats by their double's bits, so NaN payloads count)."""
    out = []
    for v in values:
        if isinstance(v, float):
            out.append(("f", struct.unpack("<Q", struct.pack("<d", v))[0]))
        else:
            out.append(("i", v))
    return out


def host_fn(params: tuple[int, ...], results: tuple[int, ...], fn: Any) -> vm.HostFunction:
    return vm.HostFunction(FuncType(params, results), fn)


class Asker:
    """An ``env.ask`` import that suspends with its arguments, counting its calls."""

    def __init__(self, params: tuple[int, ...] = (I32,)) -> None:
        self.calls = 0
        self.params = params

    def __call__(self, *args: Any) -> None:
        self.calls += 1
        raise vm.Suspend({"args": list(args)})

    def imports(self) -> dict:
        return {"env": {"ask": host_fn(self.params, (I32,), self)}}


# --------------------------------------------------------------------------------------------
# Execution states

LOOP = """(module
  (memory (export "memory") 1)
  (global $g (export "g") (mut i64) (i64.const 7))
  (func (export "sum") (param $n i32) (result i32) (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (local.get $i)))
      (i32.store8 (local.get $i) (local.get $i))
      (global.set $g (i64.add (global.get $g) (i64.extend_i32_u (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc))
  (func (export "args") (param i32 i64 f32 f64) (result f64 f32 i64 i32)
    (local.get 3) (local.get 2) (local.get 1) (local.get 0)))"""


def test_never_run_execution_keeps_its_arguments() -> None:
    module = load(LOOP)
    store = vm.Store()
    inst = vm.instantiate(store, module)
    args = [0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, F32_SNAN, float("-inf")]
    ex = store.start(inst.exports["args"], args)
    manifest, _ = snapshot.capture(inst, ex)
    state = manifest["execution"]
    assert state["status"] == "ready" and state["frames"] == [] and len(state["args"]) == 4
    inst2, ex2 = roundtrip(inst, ex, module)
    assert ex2 is not None and ex2.status == "ready"
    assert ex2.run() == "done"
    assert bits(ex2.results) == bits(args[::-1])
    assert f32_to_bits(ex2.results[1]) == F32_SNAN_BITS


def test_fuel_suspended_execution_continues_where_it_stopped() -> None:
    module = load(LOOP)
    ref = vm.instantiate(vm.Store(), module)
    want = ref.invoke("sum", [50])
    store = vm.Store()
    inst = vm.instantiate(store, module)
    ex = store.start(inst.exports["sum"], [50])
    assert ex.run(fuel=10) == "suspended"
    manifest, _ = snapshot.capture(inst, ex)
    [frame] = manifest["execution"]["frames"]
    assert frame["in_call"] is False and frame["offset"] == ex.frames[0].offset
    inst2, ex2 = roundtrip(inst, ex, module)
    assert ex2 is not None and ex2.status == "suspended"
    assert ex2.frames[0].offset == ex.frames[0].offset
    assert ex2.run() == "done"
    assert ex2.results == want
    assert inst2.exports["memory"].data == ref.exports["memory"].data
    assert inst2.exports["g"].value == ref.exports["g"].value


def test_snapshot_does_not_alias_the_original_instance() -> None:
    module = load(LOOP)
    store = vm.Store()
    inst = vm.instantiate(store, module)
    ex = store.start(inst.exports["sum"], [20])
    ex.run(fuel=5)
    manifest, chunks = snapshot.capture(inst, ex)
    before = bytes(inst.exports["memory"].data)
    ex.run()  # the original goes on and changes memory after the capture
    fresh = vm.Store()
    inst2, ex2 = snapshot.restore(manifest, chunks, module, None, fresh)
    assert inst2.store is fresh and inst2 is not inst
    assert bytes(inst2.exports["memory"].data) == before
    assert ex2 is not None and ex2.run() == "done" and ex2.results == ex.results


HOST = """(module
  (type $t (func (param i32) (result i32)))
  (import "env" "ask" (func $ask (type $t)))
  (import "env" "ask0" (func $ask0 (result i32)))
  (table 2 funcref)
  (elem (i32.const 0) $ask $twice)
  (func $twice (type $t) (i32.mul (local.get 0) (i32.const 2)))
  (func (export "direct") (param i32) (result i32)
    (i32.add (i32.mul (local.get 0) (i32.const 3)) (call $ask (local.get 0))))
  (func (export "indirect") (param i32) (result i32)
    (i32.add (i32.mul (local.get 0) (i32.const 3))
      (call_indirect (type $t) (local.get 0) (i32.const 0))))
  (func (export "first") (result i32) (i32.add (call $ask0) (i32.const 1))))"""


def host_imports(asker: Asker) -> dict:
    def ask0() -> None:
        asker.calls += 1
        raise vm.Suspend("ask0")

    return {"env": {"ask": host_fn((I32,), (I32,), asker), "ask0": host_fn((), (I32,), ask0)}}


@pytest.mark.parametrize("export", ["direct", "indirect"])
def test_host_pending_call_restores_with_its_reason(export: str) -> None:
    module = load(HOST)
    asker = Asker()
    store = vm.Store()
    inst = vm.instantiate(store, module, host_imports(asker))
    ex = store.start(inst.exports[export], [5])
    assert ex.run() == "host"
    manifest, _ = snapshot.capture(inst, ex)
    state = manifest["execution"]
    assert state["status"] == "host"
    assert state["pending"] == {"func": 0, "args": [["i", 5]], "reason": {"args": [5]},
                                "results": None}
    [frame] = state["frames"]
    # The call's arguments (and call_indirect's table index) belong to the callee, not the stack.
    assert frame["in_call"] is True and frame["stack"] == [["i", 15]]
    inst2, ex2 = roundtrip(inst, ex, module, host_imports(asker))
    assert ex2 is not None and ex2.status == "host"
    assert ex2.pending is not None and list(ex2.pending.call_args) == [5]
    assert ex2.pending.reason == {"args": [5]}
    ex2.complete_host(1000)
    assert ex2.run() == "done" and ex2.results == [1015]
    assert asker.calls == 1  # the host function is not called again


@pytest.mark.parametrize("export, args, want", [("direct", [5], [1015]), ("first", [], [1001])])
def test_host_delivered_results_survive_a_snapshot(export: str, args: list, want: list) -> None:
    # "first" calls the host as its very first instruction: the frame stands at position 0, which
    # must not be mistaken for a never-run execution.
    module = load(HOST)
    asker = Asker()
    store = vm.Store()
    inst = vm.instantiate(store, module, host_imports(asker))
    ex = store.start(inst.exports[export], args)
    assert ex.run() == "host"
    ex.complete_host(1000)
    manifest, _ = snapshot.capture(inst, ex)
    assert manifest["execution"]["pending"]["results"] == [["i", 1000]]
    inst2, ex2 = roundtrip(inst, ex, module, host_imports(asker))
    assert ex2 is not None and ex2.status == "ready"
    assert ex2.run() == "done" and ex2.results == want
    assert asker.calls == 1


MULTI = """(module
  (func (export "mv") (param $n i32) (result i32 i64 f32 f64) (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $i) (i64.const -1) (f32.reinterpret_i32 (i32.const 0x7fa00001))
    (f64.const -0.0)))"""


def test_done_execution_keeps_multi_value_results() -> None:
    module = load(MULTI)
    store = vm.Store()
    inst = vm.instantiate(store, module)
    ex = store.start(inst.exports["mv"], [30])
    while ex.run(fuel=7) != "done":
        inst, ex = roundtrip(inst, ex, module)
        assert ex is not None
    inst2, ex2 = roundtrip(inst, ex, module)
    assert ex2 is not None and ex2.status == "done"
    assert bits(ex2.results) == bits([30, 0xFFFFFFFFFFFFFFFF, F32_SNAN, -0.0])
    assert f32_to_bits(ex2.results[2]) == F32_SNAN_BITS
    with pytest.raises(vm.WasmError):
        ex2.run()


def test_failed_execution_cannot_be_captured() -> None:
    module = load('(module (func (export "boom") (unreachable)))')
    store = vm.Store()
    inst = vm.instantiate(store, module)
    ex = store.start(inst.exports["boom"], [])
    with pytest.raises(vm.TrapError):
        ex.run()
    assert ex.status == "failed"
    with pytest.raises(SnapshotError, match="failed"):
        snapshot.capture(inst, ex)
    # The instance alone still can be.
    manifest, _ = snapshot.capture(inst)
    assert manifest["execution"] is None


# --------------------------------------------------------------------------------------------
# Instance state

TABLES = """(module
  (type $t (func (result i32)))
  (table $tab (export "tab") 4 10 funcref)
  (table $ext (export "ext") 2 externref)
  (elem (table $tab) (i32.const 1) func $a $b)
  (elem declare func $c)
  (func $a (result i32) (i32.const 1))
  (func $b (result i32) (i32.const 2))
  (func $c (result i32) (i32.const 3))
  (func (export "setup")
    (table.set $tab (i32.const 0) (ref.func $c))
    (table.set $tab (i32.const 1) (ref.null func))
    (drop (table.grow $tab (ref.func $b) (i32.const 2))))
  (func (export "call") (param i32) (result i32) (call_indirect $tab (type $t) (local.get 0))))"""


def test_tables_keep_funcrefs_nulls_and_size() -> None:
    module = load(TABLES)
    inst = vm.instantiate(vm.Store(), module)
    inst.invoke("setup")
    inst.exports["ext"].elements[1] = {"fd": [1, 2]}
    manifest, _ = snapshot.capture(inst)
    assert manifest["tables"] == [
        [["r", 2], ["n", None], ["r", 1], ["n", None], ["r", 1], ["r", 1]],
        [["n", None], ["x", {"fd": [1, 2]}]]]
    inst2, _ = roundtrip(inst, None, module)
    tab = inst2.exports["tab"].elements
    assert len(tab) == 6 and tab[1] is None and tab[3] is None
    assert all(f is None or f.instance is inst2 for f in tab)
    assert [inst2.invoke("call", [i]) for i in (0, 2, 4, 5)] == [[3], [2], [2], [2]]
    with pytest.raises(vm.TrapError, match="uninitialized element"):
        inst2.invoke("call", [1])
    with pytest.raises(vm.TrapError, match="undefined element"):
        inst2.invoke("call", [6])
    assert inst2.exports["ext"].elements == [None, {"fd": [1, 2]}]
    assert inst2.exports["tab"].grow(4) == 6 and inst2.exports["tab"].grow(1) == -1


def test_funcref_of_another_instance_cannot_be_captured() -> None:
    module = load(TABLES)
    inst = vm.instantiate(vm.Store(), module)
    other = vm.instantiate(vm.Store(), module)
    inst.exports["tab"].elements[0] = other.exports["call"]
    with pytest.raises(SnapshotError, match="another instance"):
        snapshot.capture(inst)


def test_externref_that_is_not_json_cannot_be_captured() -> None:
    module = load(TABLES)
    inst = vm.instantiate(vm.Store(), module)
    inst.exports["ext"].elements[0] = object()
    with pytest.raises(SnapshotError, match="JSON"):
        snapshot.capture(inst)


GLOBALS = """(module
  (import "env" "gi" (global $gi (mut i32)))
  (global $a (export "a") (mut i32) (i32.const 0))
  (global $b (export "b") (mut i64) (i64.const 0))
  (global $c (export "c") (mut f32) (f32.const 0))
  (global $d (export "d") (mut f64) (f64.const 0))
  (global $e (export "e") (mut funcref) (ref.null func))
  (global $x (export "x") (mut externref) (ref.null extern))
  (global $k (export "k") f64 (f64.const 2.5))
  (elem declare func $f)
  (func $f (export "f") (result i32) (global.get $gi))
  (func (export "set")
    (global.set $a (i32.const -1))
    (global.set $b (i64.const -2))
    (global.set $c (f32.reinterpret_i32 (i32.const 0x7fa00001)))
    (global.set $d (f64.const -0.0))
    (global.set $e (ref.func $f))
    (global.set $gi (i32.const 99))))"""


def global_imports() -> dict:
    return {"env": {"gi": vm.Global(GlobalType(I32, True), 1)}}


def test_globals_of_every_type_survive() -> None:
    module = load(GLOBALS)
    inst = vm.instantiate(vm.Store(), module, global_imports())
    inst.invoke("set")
    inst.exports["x"].value = ["opaque", 7]
    imports = global_imports()
    inst2, _ = roundtrip(inst, None, module, imports)
    g = inst2.exports
    assert bits([g[n].value for n in "abcdk"]) == bits(
        [0xFFFFFFFF, 0xFFFFFFFFFFFFFFFE, F32_SNAN, -0.0, 2.5])
    assert f32_to_bits(g["c"].value) == F32_SNAN_BITS
    assert g["e"].value is g["f"]
    assert g["x"].value == ["opaque", 7]
    # The imported global is part of the instance's state: restore writes it into the import.
    assert imports["env"]["gi"].value == 99 and inst2.invoke("f") == [99]


SEGMENTS = """(module
  (memory (export "memory") 1)
  (table 4 funcref)
  (data $act (i32.const 0) "act")
  (data $p1 "pass1")
  (data $p2 "pass2")
  (elem $eact (i32.const 0) func $f)
  (elem $e1 func $f)
  (elem $e2 func $f $f)
  (func $f)
  (func (export "drop") (data.drop $p1) (elem.drop $e1))
  (func (export "init_act") (param i32) (memory.init $act (i32.const 100) (i32.const 0)
    (local.get 0)))
  (func (export "init_p1") (param i32) (memory.init $p1 (i32.const 100) (i32.const 0)
    (local.get 0)))
  (func (export "init_p2") (param i32) (memory.init $p2 (i32.const 100) (i32.const 0)
    (local.get 0)))
  (func (export "tinit_e1") (param i32) (table.init $e1 (i32.const 1) (i32.const 0) (local.get 0)))
  (func (export "tinit_e2") (param i32) (table.init $e2 (i32.const 1) (i32.const 0)
    (local.get 0))))"""


def test_dropped_segments_stay_dropped() -> None:
    module = load(SEGMENTS)
    inst = vm.instantiate(vm.Store(), module)
    inst.invoke("drop")
    manifest, _ = snapshot.capture(inst)
    # Active segments are dropped by instantiation, passive ones by data.drop / elem.drop.
    assert manifest["dropped_datas"] == [0, 1] and manifest["dropped_elems"] == [0, 1]
    inst2, _ = roundtrip(inst, None, module)
    for name in ("init_act", "init_p1"):
        inst2.invoke(name, [0])  # a dropped segment still allows an empty copy
        with pytest.raises(vm.TrapError, match="out of bounds memory access"):
            inst2.invoke(name, [1])
    with pytest.raises(vm.TrapError, match="out of bounds table access"):
        inst2.invoke("tinit_e1", [1])
    inst2.invoke("init_p2", [5])
    inst2.invoke("tinit_e2", [2])
    assert bytes(inst2.exports["memory"].data[100:105]) == b"pass2"


GROW = """(module
  (memory (export "memory") 1 8)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "size") (result i32) (memory.size))
  (func (export "poke") (param i32 i32) (i32.store (local.get 0) (local.get 1))))"""


def test_memory_grown_after_instantiation() -> None:
    module = load(GROW)
    inst = vm.instantiate(vm.Store(), module)
    assert inst.invoke("grow", [3]) == [1]
    top = 4 * 65536 - 4
    inst.invoke("poke", [top, 0xDEADBEEF])
    manifest, _ = snapshot.capture(inst)
    assert manifest["memories"][0]["pages"] == 4 and len(manifest["memories"][0]["chunks"]) == 4
    inst2, _ = roundtrip(inst, None, module)
    assert inst2.invoke("size") == [4]
    assert inst2.exports["memory"].data == inst.exports["memory"].data
    assert inst2.invoke("grow", [5]) == [0xFFFFFFFF]  # the declared maximum still holds
    assert inst2.invoke("grow", [4]) == [4]


def test_memory_beyond_the_new_stores_limit_is_refused() -> None:
    module = load(GROW)
    inst = vm.instantiate(vm.Store(), module)
    inst.invoke("grow", [3])
    manifest, chunks = snapshot.capture(inst)
    with pytest.raises(SnapshotError, match="exceeds the limit"):
        snapshot.restore(manifest, chunks, module, None, vm.Store(max_memory_pages=2))


INDIRECT_LOOP = """(module
  (type $t (func (param i32) (result i32)))
  (table 3 funcref)
  (elem (i32.const 2) $count)
  (func $count (type $t) (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get 0))))
    (local.get $i))
  (func (export "main") (param i32) (result i32)
    (i32.add (i32.mul (local.get 0) (i32.const 1000))
      (call_indirect (type $t) (local.get 0) (i32.const 2)))))"""


def test_call_indirect_frame_in_the_stack() -> None:
    module = load(INDIRECT_LOOP)
    store = vm.Store()
    inst = vm.instantiate(store, module)
    ex = store.start(inst.exports["main"], [40])
    assert ex.run(fuel=10) == "suspended"
    manifest, _ = snapshot.capture(inst, ex)
    outer, inner = manifest["execution"]["frames"]
    assert outer["in_call"] is True and outer["stack"] == [["i", 40000]]
    assert inner["func"] == 0 and inner["locals"][0] == ["i", 40]
    inst2, ex2 = roundtrip(inst, ex, module)
    assert ex2 is not None and len(ex2.frames) == 2
    assert ex2.run() == "done" and ex2.results == [40040]


RECURSE = """(module
  (import "env" "ask" (func $ask (param i32) (result i32)))
  (func $f (export "f") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0)) (then (call $ask (i32.const 7)))
      (else (i32.add (i32.const 1) (call $f (i32.sub (local.get 0) (i32.const 1))))))))"""


def test_deep_call_stack_fuel_stop_and_host_call() -> None:
    module = load(RECURSE)
    asker = Asker()
    store = vm.Store()
    inst = vm.instantiate(store, module, asker.imports())
    ex = store.start(inst.exports["f"], [1500])
    # Every call costs one unit of fuel: this stops 1000 calls deep, at a call.
    assert ex.run(fuel=1000) == "suspended" and len(ex.frames) == 1001
    inst, ex = roundtrip(inst, ex, module, asker.imports())
    assert ex is not None and ex.status == "suspended" and len(ex.frames) == 1001
    assert ex.run() == "host" and len(ex.frames) == 1501
    inst, ex = roundtrip(inst, ex, module, asker.imports())
    assert ex is not None and ex.status == "host" and len(ex.frames) == 1501
    assert ex.pending is not None and list(ex.pending.call_args) == [7]
    ex.complete_host(1)
    inst, ex = roundtrip(inst, ex, module, asker.imports())
    assert ex is not None and ex.run() == "done" and ex.results == [1501]
    assert asker.calls == 1


def test_host_state_is_kept_verbatim() -> None:
    module = load(LOOP)
    inst = vm.instantiate(vm.Store(), module)
    host = {"fds": [{"fd": 3, "path": "/tmp/x", "offset": 12}], "clock": 1.5, "rng": None}
    manifest, chunks = snapshot.capture(inst, host=host)
    manifest2, _ = snapshot.loads(snapshot.dumps(manifest, chunks))
    assert manifest2["host"] == host


# --------------------------------------------------------------------------------------------
# Incremental checkpoints

def test_identical_chunks_are_stored_once() -> None:
    module = load('(module (memory (export "memory") 4))')
    inst = vm.instantiate(vm.Store(), module)
    manifest, chunks = snapshot.capture(inst)
    hashes = manifest["memories"][0]["chunks"]
    assert len(hashes) == 4 and len(set(hashes)) == 1 and list(chunks) == hashes[:1]
    assert hashes[0] == hashlib.sha256(bytes(CHUNK_SIZE)).hexdigest()
    blob = snapshot.dumps(manifest, chunks)
    assert blob.count(f"{hashes[0]} ".encode()) == 1  # one chunk header
    _, chunks2 = snapshot.loads(blob)
    assert list(chunks2.chunks) == hashes[:1]


def test_second_checkpoint_after_one_byte_writes_one_chunk() -> None:
    module = load('(module (memory (export "memory") 4))')
    inst = vm.instantiate(vm.Store(), module)
    data = inst.exports["memory"].data
    data[:] = random.Random(4).randbytes(len(data))  # four distinct chunks
    stored: dict[str, bytes] = {}
    manifest1, new1 = snapshot.capture(inst, known=stored)
    stored.update(new1)
    assert len(new1) == 4
    manifest2, new2 = snapshot.capture(inst, known=stored)
    assert new2 == {} and manifest2 == manifest1
    data[2 * CHUNK_SIZE + 17] ^= 0xFF
    manifest3, new3 = snapshot.capture(inst, known=stored)
    old, now = manifest1["memories"][0]["chunks"], manifest3["memories"][0]["chunks"]
    assert list(new3) == [now[2]] and now[2] != old[2]
    assert now[:2] == old[:2] and now[3:] == old[3:]
    stored.update(new3)
    inst2, _ = snapshot.restore(manifest3, snapshot.MemoryChunks(stored), module)
    assert inst2.exports["memory"].data == data


def test_max_bytes_bounds_a_snapshot() -> None:
    module = load(GROW)
    inst = vm.instantiate(vm.Store(), module)
    inst.invoke("grow", [3])
    with pytest.raises(SnapshotError, match="exceeds the limit"):
        snapshot.capture(inst, max_bytes=4 * 65536 - 1)
    with pytest.raises(SnapshotError, match="exceeds the limit"):
        snapshot.capture(inst, max_bytes=4 * 65536)  # the manifest counts too
    manifest, _ = snapshot.capture(inst, max_bytes=4 * 65536 + 4096)
    assert manifest["memories"][0]["pages"] == 4


# --------------------------------------------------------------------------------------------
# Malformed snapshots

def small_snapshot() -> tuple[vm.Module, dict, bytes]:
    """A snapshot with every part: memory chunks, a table, globals, a suspended call stack."""
    module = load(INDIRECT_LOOP.replace("(table 3 funcref)",
                                        '(table 3 funcref) (memory 1) (global (mut i32) '
                                        '(i32.const 5)) (data (i32.const 8) "xyz")'))
    store = vm.Store()
    inst = vm.instantiate(store, module)
    ex = store.start(inst.exports["main"], [40])
    ex.run(fuel=10)
    manifest, chunks = snapshot.capture(inst, ex)
    return module, manifest, snapshot.dumps(manifest, chunks)


def restore_blob(module: vm.Module, blob: bytes) -> tuple[vm.Instance, vm.Execution | None]:
    manifest, chunks = snapshot.loads(blob)
    return snapshot.restore(manifest, chunks, module, None, vm.Store())


def test_wrong_module_is_refused() -> None:
    _, manifest, blob = small_snapshot()
    other = load(LOOP)
    with pytest.raises(SnapshotError, match="snapshot is of module"):
        restore_blob(other, blob)


@pytest.mark.parametrize("key, value, message", [
    ("version", 2, "version 2 is not supported"),
    ("version", None, "not supported"),
    ("format", "something-else", "not a dwasm snapshot"),
    ("compression", "zstd", "unknown chunk compression"),
])
def test_unknown_format_or_version_is_refused(key: str, value: Any, message: str) -> None:
    module, manifest, _ = small_snapshot()
    manifest[key] = value
    with pytest.raises(SnapshotError, match=message):
        snapshot.restore(manifest, snapshot.MemoryChunks(), module)


def test_every_truncation_is_a_snapshot_error() -> None:
    module, _, blob = small_snapshot()
    assert len(blob) < 2000
    restore_blob(module, blob)
    for n in range(len(blob)):
        with pytest.raises(SnapshotError):
            restore_blob(module, blob[:n])


def garbled(blob: bytes, start: int, end: int) -> list[bytes]:
    variants = []
    for pos in range(start, end):
        for value in {blob[pos] ^ 0xFF, blob[pos] ^ 0x01, ord("0"), ord('"'), ord("\n")}:
            if value != blob[pos]:
                variants.append(blob[:pos] + bytes([value]) + blob[pos + 1:])
    return variants


def test_garbled_manifest_is_refused_or_restored() -> None:
    # A changed byte may still make a valid manifest (another number), but never may it make
    # anything other than a SnapshotError escape.
    module, _, blob = small_snapshot()
    manifest_end = blob.index(b"\n", len(snapshot.container.MAGIC)) + 1
    for variant in garbled(blob, 0, manifest_end):
        try:
            restore_blob(module, variant)
        except SnapshotError:
            pass


def test_garbled_chunk_data_is_a_snapshot_error() -> None:
    module, _, blob = small_snapshot()
    manifest_end = blob.index(b"\n", len(snapshot.container.MAGIC)) + 1
    chunk_start = blob.index(b"\n", manifest_end) + 1
    for variant in garbled(blob, chunk_start, len(blob)):
        try:
            restore_blob(module, variant)
        except SnapshotError:
            pass


def test_chunk_whose_contents_do_not_match_its_name_is_refused() -> None:
    module, manifest, blob = small_snapshot()
    _, chunks = snapshot.loads(blob)
    [digest] = manifest["memories"][0]["chunks"]
    chunks.chunks[digest] = zlib.compress(b"\x01" * CHUNK_SIZE)
    with pytest.raises(SnapshotError):
        snapshot.restore(manifest, chunks, module)


def test_bad_magic_is_refused() -> None:
    _, _, blob = small_snapshot()
    with pytest.raises(SnapshotError, match="magic"):
        snapshot.loads(b"DWSNAP2\n" + blob[8:])
    with pytest.raises(SnapshotError, match="magic"):
        snapshot.loads(b"")


def test_missing_chunk_is_refused() -> None:
    module, manifest, _ = small_snapshot()
    with pytest.raises(SnapshotError, match="missing"):
        snapshot.restore(manifest, snapshot.MemoryChunks(), module)


@pytest.mark.parametrize("size", [CHUNK_SIZE + 1, 4 * CHUNK_SIZE, CHUNK_SIZE - 1, 0])
def test_chunk_that_does_not_inflate_to_its_size_is_refused(size: int) -> None:
    module, manifest, _ = small_snapshot()
    [digest] = manifest["memories"][0]["chunks"]
    chunks = snapshot.MemoryChunks({digest: zlib.compress(bytes(size), 9)})
    with pytest.raises(SnapshotError, match="inflate"):
        snapshot.restore(manifest, chunks, module)


def test_chunks_must_add_up_to_the_memory_size() -> None:
    module, manifest, blob = small_snapshot()
    _, chunks = snapshot.loads(blob)
    manifest["memories"][0]["chunks"] *= 2
    with pytest.raises(SnapshotError):
        snapshot.restore(manifest, chunks, module)


def test_offset_that_is_not_a_stop_point_is_refused() -> None:
    module, manifest, blob = small_snapshot()
    _, chunks = snapshot.loads(blob)
    manifest["execution"]["frames"][1]["offset"] += 1
    with pytest.raises(SnapshotError, match="no stop point"):
        snapshot.restore(manifest, chunks, module)


@pytest.mark.parametrize("path, value, message", [
    (("frames", 1, "locals"), [["i", 1]], "locals, expected"),
    (("frames", 1, "stack"), [["i", 1]] * 50, "too deep a stack"),
    (("frames", 1, "locals", 0), ["q", 1], "unknown value tag"),
    (("frames", 1, "locals", 0), ["i", "1"], "malformed value"),
    (("frames", 0, "func"), 99, "malformed snapshot"),
    (("entry",), 99, "malformed snapshot"),
])
def test_malformed_frames_are_refused(path: tuple, value: Any, message: str) -> None:
    module, manifest, blob = small_snapshot()
    _, chunks = snapshot.loads(blob)
    node = manifest["execution"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(SnapshotError, match=message):
        snapshot.restore(manifest, chunks, module)


# --------------------------------------------------------------------------------------------
# Golden files: snapshots written by earlier versions must restore and finish as recorded.

def golden_cases() -> list[dict]:
    path = GOLDEN / "expected.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text())["cases"]


def golden_imports(spec: dict | None) -> dict | None:
    """Imports rebuilt from the case's description: each host function suspends with its
    arguments; the test delivers the recorded answers."""
    if not spec:
        return None
    types = {"i32": I32, "i64": I64, "f32": F32, "f64": F64}

    def suspend(*args: Any) -> None:
        raise vm.Suspend({"args": list(args)})

    return {mod: {name: host_fn(tuple(types[t] for t in sig["params"]),
                                tuple(types[t] for t in sig["results"]), suspend)
                  for name, sig in fields.items()}
            for mod, fields in spec.items()}


def test_golden_files_are_present() -> None:
    cases = golden_cases()
    assert len(cases) >= 3
    for case in cases:
        assert (GOLDEN / case["snapshot"]).stat().st_size < 16 * 1024


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: c["snapshot"])
def test_golden_snapshot_resumes_to_the_recorded_outcome(case: dict) -> None:
    module_bytes = (GOLDEN / case["module"]).read_bytes()
    assert hashlib.sha256(module_bytes).hexdigest() == case["module_sha256"]
    module = vm.load(module_bytes)
    imports = golden_imports(case.get("imports"))
    manifest, chunks = snapshot.loads((GOLDEN / case["snapshot"]).read_bytes())
    inst, ex = snapshot.restore(manifest, chunks, module, imports, vm.Store())
    assert ex is not None and ex.status == case["status"]
    answers = list(case["host_answers"])
    reasons = []
    while ex.status != "done":
        if ex.status == "host":
            assert ex.pending is not None
            reasons.append(ex.pending.reason)
            ex.complete_host(answers.pop(0))
        else:
            ex.run()
    assert answers == [] and reasons == case["host_reasons"]
    assert bits(ex.results) == [tuple(v) for v in case["results"]]
    mems = [hashlib.sha256(m.data).hexdigest() for m in inst.mems]
    assert mems == case["memory_sha256"]
    assert bits([g.value for g in inst.globals]) == [tuple(v) for v in case["globals"]]


@pytest.mark.parametrize("damage, message", [
    (lambda m: m["execution"]["frames"][0]["locals"].__setitem__(0, ["f", 0]), "is not a i32"),
    (lambda m: m["execution"]["frames"][0]["locals"].__setitem__(0, ["i", 1 << 40]),
     "is not a i32"),
    (lambda m: m["execution"].__setitem__("status", "bogus"), "unknown execution status"),
])
def test_values_and_status_are_checked_on_restore(damage, message: str) -> None:
    module, manifest, blob = small_snapshot()
    manifest, chunks = snapshot.loads(blob)
    damage(manifest)
    with pytest.raises(SnapshotError, match=message):
        snapshot.restore(manifest, chunks, module, None, vm.Store())


def test_host_entry_execution_is_refused_until_done() -> None:
    host = vm.HostFunction(vm.structure.FuncType((), ()), lambda: None)
    module = load('(module (import "env" "f" (func)))')
    inst = vm.instantiate(vm.Store(), module, {"env": {"f": host}})
    ex = inst.store.start(host, [])
    with pytest.raises(SnapshotError, match="host function"):
        snapshot.capture(inst, ex)
