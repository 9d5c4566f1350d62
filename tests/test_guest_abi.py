"""The guest ABI (docs/guest-abi.md): the ``dwasm`` imports of app/flows/guest.py, driven
in-process with vm, vm.wasi and vm.Execution — no server, no database. The test plays the
engine: it runs the example flows until they wait, checks each suspension reason, takes the
outbox, snapshots and restores the flow at every suspension, delivers outcomes, time and
signals, and checks stdout and the exit code. A small WAT module exposes each import as an
export so the error cases and traps go through the real call path."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import wasmtime

import vm
import vm.wasi
from app.flows import guest as G
from app.flows.guest import ChildRequest, GuestApi, GuestStateError, TaskRequest
from app.flows.run import Sink
from vm import snapshot

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "examples" / "flows"
FUEL = 200_000
T0 = 1_700_000_000_000  # the test clock's start, epoch ms
MASK = 0xFFFFFFFF


def signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Flow:
    """One flow run by the test's engine: WASI + GuestApi + a resumable execution of _start."""

    def __init__(self, name: str, args: list[str] | None = None, stdin: bytes = b"",
                 **limits: int) -> None:
        self.module = vm.load((FLOWS / f"{name}.wasm").read_bytes())
        self.stdin = stdin
        self.limits = limits
        self.clock = Clock()
        self.out, self.err = Sink(), Sink()
        self.chunks: dict[str, bytes] = {}
        self.exit_code: int | None = None
        self.wasi = vm.wasi.Wasi([name] + (args or []), {}, (), stdin, self.out, self.err)
        self.guest = GuestApi(self.clock, **limits)
        self.store = vm.Store()
        self.instance = vm.instantiate(self.store, self.module, self.imports())
        self.bind()
        self.ex = vm.Execution(self.store, self.instance.exports["_start"], [])

    def imports(self) -> dict[str, Any]:
        return {**self.wasi.imports(), **self.guest.imports()}

    def bind(self) -> None:
        self.wasi.bind(self.instance)
        self.guest.bind(self.instance)

    def run(self) -> dict[str, Any] | None:
        """Run until the flow waits (returns the reason) or exits (returns None)."""
        while True:
            try:
                status = self.ex.run(fuel=FUEL)
            except vm.wasi.ProcExit as exc:
                self.exit_code = exc.code
                break
            if status == "done":
                self.exit_code = 0
                break
            if status == "host":
                reason = self.ex.pending.reason
                assert G.is_guest_wait(reason)
                return reason
        self.wasi.flush()
        return None

    def checkpoint(self) -> tuple[list[G.Scheduled], dict[str, Any]]:
        """Take the outbox, capture a snapshot (through JSON, as the database stores it), then
        release the output it covers."""
        items = self.guest.take_outbox()
        manifest, chunks = snapshot.capture(
            self.instance, self.ex, host={"wasi": self.wasi.state(), "guest": self.guest.state()},
            known=self.chunks.keys())
        self.chunks.update(chunks)
        self.wasi.flush()
        return items, json.loads(json.dumps(manifest))

    def restore(self, manifest: dict[str, Any]) -> None:
        """Replace the in-memory flow with the one in ``manifest`` (a crash and a restart)."""
        self.wasi.close()
        host = manifest["host"]
        self.wasi = vm.wasi.Wasi.from_state(host["wasi"], stdin=self.stdin, stdout=self.out,
                                            stderr=self.err)
        self.wasi.sync_output(1, len(self.out.data))
        self.wasi.sync_output(2, len(self.err.data))
        self.guest = GuestApi.from_state(host["guest"], self.clock, **self.limits)
        self.store = vm.Store()
        self.instance, ex = snapshot.restore(manifest, self.chunks, self.module, self.imports(),
                                             self.store)
        assert ex is not None
        self.ex = ex
        self.bind()

    def suspend_and_restore(self) -> list[G.Scheduled]:
        items, manifest = self.checkpoint()
        self.restore(manifest)
        return items

    def complete(self) -> bool:
        return self.guest.complete(self.ex)


def square(item: G.Scheduled) -> tuple[str, bytes]:
    assert isinstance(item, TaskRequest) and item.queue == "square"
    return "succeeded", str(int(item.payload) ** 2).encode()


# --- the example flows ---------------------------------------------------------------------

def test_fanout_with_a_snapshot_and_restore_at_every_suspension() -> None:
    flow = Flow("fanout")
    assert flow.run() == {"op": "await", "handles": [0], "deadline_ms": None}
    tasks = flow.suspend_and_restore()
    assert [(t.handle, t.queue, t.payload) for t in tasks] == [
        (i, "square", str(i).encode()) for i in range(20)]
    assert flow.guest.state()["outbox"] == [] and flow.guest.next_handle == 20
    assert flow.ex.pending.reason == {"op": "await", "handles": [0], "deadline_ms": None}

    # Outcomes arrive out of order: most of them first, without the awaited one.
    assert flow.guest.deliver_outcomes({t.handle: square(t) for t in tasks[5:]}) == list(
        range(5, 20))
    assert flow.guest.awaited(flow.ex.pending.reason) == [0]
    assert not flow.complete()
    assert flow.guest.deliver_outcomes({0: square(tasks[0])}) == [0]
    # A duplicate delivery (a worker's late retry) is ignored: results enter the flow once.
    assert flow.guest.deliver_outcomes({0: ("succeeded", b"999"), 7: ("failed", b"x")}) == []
    assert flow.complete()
    flow.suspend_and_restore()  # a checkpoint with the results delivered but not yet applied

    assert flow.run() == {"op": "await", "handles": [1], "deadline_ms": None}
    assert flow.suspend_and_restore() == []
    flow.guest.deliver_outcomes({t.handle: square(t) for t in tasks[1:5]})
    assert flow.complete()

    flow.clock.now = T0 + 5_000
    assert flow.run() == {"op": "sleep", "until_ms": T0 + 5_100}
    flow.suspend_and_restore()
    assert G.wake_at_ms(flow.ex.pending.reason) == T0 + 5_100
    assert not flow.guest.complete(flow.ex, now=T0 + 5_099)
    flow.clock.now = T0 + 5_100
    assert flow.complete()

    assert flow.run() == {"op": "signal", "name": "go", "deadline_ms": None}
    flow.suspend_and_restore()
    flow.guest.deliver_signal(b"7", "go")
    flow.suspend_and_restore()  # the delivered signal is part of the state
    assert flow.complete()
    assert flow.run() is None
    assert flow.out.data == b"2477\n" and flow.err.data == b""
    assert flow.exit_code == 2477 % 256
    # fanout released every result after reading it: the state keeps only statuses.
    outcomes = G._read_outcome_log(base64.b64decode(flow.guest.state()["outcome_log"]))
    assert sorted(outcomes) == list(range(20)) and all(
        (o.status, o.result) == (G.SUCCEEDED, None) for o in outcomes.values())
    assert flow.guest.state()["last_signal"] == "Nw=="


def test_fanout_crash_before_a_checkpoint_repeats_the_same_tasks_and_outcomes() -> None:
    flow = Flow("fanout")
    _, start = flow.checkpoint()  # the checkpoint taken right after the start
    assert flow.run()["op"] == "await"
    lost = flow.guest.take_outbox()  # the crash comes before this outbox is committed
    flow.restore(start)
    assert flow.run() == {"op": "await", "handles": [0], "deadline_ms": None}
    tasks, waiting = flow.checkpoint()
    assert tasks == lost  # same handles, queues and payloads: inserts are idempotent

    # Outcomes delivered to a run that crashes before its next checkpoint are delivered again.
    flow.guest.deliver_outcomes({t.handle: square(t) for t in tasks})
    assert flow.complete()
    assert flow.run()["op"] == "sleep"
    flow.restore(waiting)
    assert flow.guest.outcomes == {}
    assert flow.guest.deliver_outcomes({t.handle: square(t) for t in tasks}) == list(range(20))
    assert flow.complete()
    assert flow.run()["op"] == "sleep"
    flow.clock.now += 100
    assert flow.complete()
    assert flow.run()["op"] == "signal"
    flow.guest.deliver_signal(b"-2470")
    assert flow.complete()
    assert flow.run() is None
    assert flow.out.data == b"0\n" and flow.exit_code == 0


def test_fanout_reports_a_failed_task() -> None:
    flow = Flow("fanout")
    flow.run()
    tasks = flow.guest.take_outbox()
    outcomes = {t.handle: square(t) for t in tasks}
    outcomes[3] = ("failed", b"worker exploded")
    flow.guest.deliver_outcomes(outcomes)
    assert flow.complete()
    assert flow.run() is None
    assert flow.exit_code == 1
    assert flow.err.data == b"fanout: task 3 failed: worker exploded\n"


def test_hello_is_a_plain_wasi_flow() -> None:
    flow = Flow("hello", stdin=b"Ada\n")
    assert flow.run() is None
    assert (flow.exit_code, bytes(flow.out.data)) == (0, b"Hello, Ada!\n")
    flow = Flow("hello", ["Grace"])
    assert flow.run() is None and flow.out.data == b"Hello, Grace!\n"


def cpu_checksum(rounds: int) -> str:
    x, acc, m = 0x9E3779B97F4A7C15, 0, (1 << 64) - 1
    for _ in range(rounds):
        x ^= x >> 12
        x ^= (x << 25) & m
        x ^= x >> 27
        acc = (acc + x * 0x2545F4914F6CDD1D) & m
    return f"checksum {rounds} {acc:016x}\n"


def test_cpu_runs_in_fuel_slices_across_restores() -> None:
    flow = Flow("cpu", ["20000"])
    stops = 0
    while flow.ex.run(fuel=500) == "suspended":
        stops += 1
        flow.suspend_and_restore()
    assert stops > 10 and flow.ex.status == "done"
    flow.exit_code = 0
    flow.wasi.flush()
    assert flow.out.data.decode() == cpu_checksum(20000) and flow.exit_code == 0


@pytest.mark.parametrize("status, code", [("succeeded", 0), ("failed", 1)])
def test_parent_starts_and_awaits_a_child(status: str, code: int) -> None:
    child_id = "sha256:" + "ab" * 32
    flow = Flow("parent", [child_id, "Ada", "", "x y"])
    assert flow.run() == {"op": "await", "handles": [0], "deadline_ms": None}
    assert flow.suspend_and_restore() == [ChildRequest(0, child_id, ["Ada", "", "x y"])]
    flow.guest.deliver_outcomes({0: (status, b"Hello, Ada!\n")})
    assert flow.complete()
    assert flow.run() is None
    assert flow.out.data == f"child {status}: Hello, Ada!\n".encode()
    assert flow.exit_code == code


def test_parent_with_a_malformed_module_id() -> None:
    flow = Flow("parent", ["sha256:nope"])
    assert flow.run() is None and flow.exit_code == 2
    assert b"cannot start a child of sha256:nope: -1" in flow.err.data


# --- each call, through a probe module -------------------------------------------------------

PROBE = """(module
  (import "dwasm" "task_schedule" (func $task_schedule (param i32 i32 i32 i32) (result i32)))
  (import "dwasm" "child_start" (func $child_start (param i32 i32 i32 i32) (result i32)))
  (import "dwasm" "await_any" (func $await_any (param i32 i32 i64) (result i32)))
  (import "dwasm" "handle_status" (func $handle_status (param i32) (result i32)))
  (import "dwasm" "result_len" (func $result_len (param i32) (result i32)))
  (import "dwasm" "result_read" (func $result_read (param i32 i32 i32) (result i32)))
  (import "dwasm" "handle_release" (func $handle_release (param i32) (result i32)))
  (import "dwasm" "sleep_ms" (func $sleep_ms (param i64)))
  (import "dwasm" "signal_wait" (func $signal_wait (param i32 i32 i64) (result i32)))
  (import "dwasm" "signal_read" (func $signal_read (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "task_schedule") (param i32 i32 i32 i32) (result i32)
    (call $task_schedule (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "child_start") (param i32 i32 i32 i32) (result i32)
    (call $child_start (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "await_any") (param i32 i32 i64) (result i32)
    (call $await_any (local.get 0) (local.get 1) (local.get 2)))
  (func (export "handle_status") (param i32) (result i32) (call $handle_status (local.get 0)))
  (func (export "result_len") (param i32) (result i32) (call $result_len (local.get 0)))
  (func (export "result_read") (param i32 i32 i32) (result i32)
    (call $result_read (local.get 0) (local.get 1) (local.get 2)))
  (func (export "handle_release") (param i32) (result i32) (call $handle_release (local.get 0)))
  (func (export "sleep_ms") (param i64) (call $sleep_ms (local.get 0)))
  (func (export "signal_wait") (param i32 i32 i64) (result i32)
    (call $signal_wait (local.get 0) (local.get 1) (local.get 2)))
  (func (export "signal_read") (param i32 i32) (result i32)
    (call $signal_read (local.get 0) (local.get 1))))"""

_PROBE_MODULE: list[vm.Module] = []


class Probe:
    """The probe module instantiated with a GuestApi; calls go through wasm, so traps and
    suspensions take the real path."""

    def __init__(self, **limits: int) -> None:
        if not _PROBE_MODULE:
            _PROBE_MODULE.append(vm.load(wasmtime.wat2wasm(PROBE)))
        self.clock = Clock()
        self.guest = GuestApi(self.clock, **limits)
        self.store = vm.Store()
        self.instance = vm.instantiate(self.store, _PROBE_MODULE[0], self.guest.imports())
        self.guest.bind(self.instance)
        self.mem = self.instance.exports["memory"].data
        self.ex: vm.Execution | None = None

    def put(self, addr: int, data: bytes) -> tuple[int, int]:
        self.mem[addr:addr + len(data)] = data
        return addr, len(data)

    def call(self, name: str, *args: int) -> int | None:
        """Call an export that must not suspend; i32 results come back signed."""
        ex = vm.Execution(self.store, self.instance.exports[name], list(args))
        assert ex.run() == "done"
        return signed(ex.results[0]) if ex.results else None

    def start(self, name: str, *args: int) -> dict[str, Any] | int | None:
        """Call an export that may suspend: the reason if it did, else its result."""
        self.ex = vm.Execution(self.store, self.instance.exports[name], list(args))
        if self.ex.run() == "host":
            return self.ex.pending.reason
        return signed(self.ex.results[0]) if self.ex.results else None

    def finish(self, now: int | None = None) -> int | None:
        """Resolve the pending wait (it must be resolvable) and return the call's result."""
        assert self.ex is not None and self.guest.complete(self.ex, now)
        assert self.ex.run() == "done"
        return signed(self.ex.results[0]) if self.ex.results else None

    def schedule(self, queue: bytes = b"q", payload: bytes = b"p") -> int:
        return self.call("task_schedule", *self.put(0, queue), *self.put(1024, payload))

    def handles(self, *handles: int, addr: int = 4096) -> tuple[int, int]:
        data = b"".join(h.to_bytes(4, "little", signed=True) for h in handles)
        return self.put(addr, data)[0], len(handles)


@pytest.mark.parametrize("queue", [b"square", b"a", b"A-z_0.9", b"q" * 200])
def test_valid_queue_names(queue: bytes) -> None:
    probe = Probe()
    assert probe.schedule(queue, b"payload") == 0
    assert probe.guest.take_outbox() == [TaskRequest(0, queue.decode(), b"payload")]


@pytest.mark.parametrize("queue", [b"", b"q" * 201, b"a b", b"a/b", b"sq\xc3\xa4re", b"a\0"])
def test_bad_queue_names(queue: bytes) -> None:
    probe = Probe()
    assert probe.schedule(queue) == G.ERR_NAME
    assert probe.guest.next_handle == 0 and probe.guest.take_outbox() == []


def test_handles_count_tasks_and_children_in_order() -> None:
    probe = Probe()
    module = b"sha256:" + b"0f" * 32
    assert probe.schedule(b"a", b"") == 0  # an empty payload is fine
    assert probe.call("child_start", *probe.put(0, module), *probe.put(512, b"x\0\0y\0")) == 1
    assert probe.call("child_start", *probe.put(0, module), 512, 0) == 2
    assert probe.schedule(b"b", b"\0\xff") == 3
    assert probe.guest.take_outbox() == [
        TaskRequest(0, "a", b""), ChildRequest(1, module.decode(), ["x", "", "y"]),
        ChildRequest(2, module.decode(), []), TaskRequest(3, "b", b"\0\xff")]
    assert probe.schedule() == 4 and [i.handle for i in probe.guest.take_outbox()] == [4]
    assert [probe.guest.is_child(h) for h in range(6)] == [False, True, True, False, False,
                                                          False]
    reason = probe.start("await_any", *probe.handles(3, 2, 0, 1), 0)
    assert probe.guest.awaited_by_kind(reason) == {"tasks": [0, 3], "children": [1, 2]}
    assert probe.guest.awaited_by_kind({"op": "sleep", "until_ms": 0}) == {"tasks": [],
                                                                          "children": []}


def test_payload_and_argument_limits() -> None:
    probe = Probe(max_payload=100)
    assert probe.schedule(b"q", b"x" * 100) == 0
    assert probe.schedule(b"q", b"x" * 101) == G.ERR_TOO_LARGE
    module = b"sha256:" + b"0f" * 32
    assert probe.call("child_start", *probe.put(0, module), *probe.put(512, b"a" * 101)) \
        == G.ERR_TOO_LARGE
    assert probe.call("child_start", *probe.put(0, module), *probe.put(512, b"\xff\xfe")) \
        == G.ERR_TOO_LARGE  # arguments must be UTF-8
    assert probe.guest.next_handle == 1


@pytest.mark.parametrize("module", [b"", b"sha256:", b"sha256:" + b"0F" * 32,
                                    b"sha256:" + b"0" * 63, b"sha1:" + b"0" * 40,
                                    b"sha256:" + b"0" * 65])
def test_bad_module_ids(module: bytes) -> None:
    probe = Probe()
    assert probe.call("child_start", *probe.put(0, module), 512, 0) == G.ERR_NAME


def test_outbox_limits_until_the_engine_takes_it() -> None:
    probe = Probe(max_outbox_items=3, max_outbox_bytes=10)
    assert [probe.schedule(b"q", b"12") for _ in range(3)] == [0, 1, 2]
    assert probe.schedule(b"q", b"") == G.ERR_OUTBOX_FULL
    assert len(probe.guest.take_outbox()) == 3
    assert probe.schedule(b"q", b"x" * 10) == 3
    assert probe.schedule(b"q", b"x") == G.ERR_OUTBOX_FULL  # 11 bytes > 10
    probe.guest.take_outbox()
    assert probe.schedule(b"q", b"x") == 4


def test_handle_status_and_results() -> None:
    probe = Probe()
    for h in (-1, 0, (1 << 31) - 1):
        assert probe.call("handle_status", h & MASK) == G.UNKNOWN
        assert probe.call("result_len", h & MASK) == G.UNKNOWN
        assert probe.call("handle_release", h & MASK) == G.UNKNOWN
    assert [probe.schedule() for _ in range(3)] == [0, 1, 2]
    assert probe.call("handle_status", 0) == G.PENDING  # scheduled, not finished
    assert probe.call("result_len", 0) == G.UNKNOWN
    assert probe.call("result_read", 0, 100, 10) == G.UNKNOWN
    assert probe.call("handle_release", 0) == G.UNKNOWN
    assert probe.call("handle_status", 3) == G.UNKNOWN
    probe.guest.take_outbox()
    probe.guest.deliver_outcomes({0: (G.SUCCEEDED, b"hello"), 1: ("failed", "boom")})
    assert [probe.call("handle_status", h) for h in (0, 1, 2)] == [1, 2, 0]
    assert probe.call("result_len", 0) == 5 and probe.call("result_len", 1) == 4
    assert probe.call("result_read", 0, 100, 3) == 3 and probe.mem[100:104] == b"hel\0"
    assert probe.call("result_read", 1, 200, 50) == 4 and probe.mem[200:204] == b"boom"
    assert probe.call("result_read", 0, 300, 0) == 0
    assert probe.call("handle_release", 0) == 0 and probe.call("handle_release", 0) == 0
    assert probe.call("handle_status", 0) == G.SUCCEEDED
    assert probe.call("result_len", 0) == G.RELEASED
    assert probe.call("result_read", 0, 100, 10) == G.RELEASED


def test_await_any_returns_the_lowest_finished_index_without_waiting() -> None:
    probe = Probe()
    for _ in range(3):
        probe.schedule()
    probe.guest.take_outbox()
    probe.guest.deliver_outcomes({1: ("succeeded", b""), 0: ("failed", b"")})
    assert probe.start("await_any", *probe.handles(2, 0, 1), -1 & (2**64 - 1)) == 1
    assert probe.start("await_any", *probe.handles(2, 2, 1), 0) == 2
    assert probe.start("await_any", *probe.handles(0, 0), 5) == 0


def test_await_any_suspends_until_an_outcome_or_the_deadline() -> None:
    probe = Probe()
    for _ in range(3):
        probe.schedule()
    probe.guest.take_outbox()
    reason = probe.start("await_any", *probe.handles(2, 1), 250)
    assert reason == {"op": "await", "handles": [2, 1], "deadline_ms": T0 + 250}
    assert probe.guest.awaited(reason) == [1, 2] and G.wake_at_ms(reason) == T0 + 250
    assert probe.guest.resolve(reason, T0 + 249) is None
    assert probe.guest.resolve(reason, T0 + 250) == [G.TIMEOUT & MASK]
    probe.guest.deliver_outcomes({1: ("succeeded", b"late")})
    assert probe.guest.awaited(reason) == [2]
    assert probe.finish(T0 + 10_000) == 1  # an outcome wins over the passed deadline

    reason = probe.start("await_any", *probe.handles(2), 40)
    assert probe.finish(T0 + 40) == G.TIMEOUT
    reason = probe.start("await_any", *probe.handles(2), 0)  # poll: the deadline is now
    assert reason == {"op": "await", "handles": [2], "deadline_ms": T0}
    assert probe.finish() == G.TIMEOUT
    reason = probe.start("await_any", *probe.handles(2), (1 << 63) - 1)
    assert reason["deadline_ms"] == G.MAX_DEADLINE_MS
    reason = probe.start("await_any", *probe.handles(2), (-5) & (2**64 - 1))
    assert reason["deadline_ms"] is None and G.wake_at_ms(reason) is None
    assert probe.guest.resolve(reason, G.MAX_DEADLINE_MS * 2) is None


def test_await_any_errors() -> None:
    probe = Probe()
    probe.schedule()
    for count in (0, -1 & MASK, 65_537):
        assert probe.start("await_any", 4096, count, 0) == G.ERR_COUNT
    assert probe.start("await_any", *probe.handles(0, 1), 0) == G.ERR_HANDLE
    assert probe.start("await_any", *probe.handles(-1), 0) == G.ERR_HANDLE
    # A handle still in the outbox is awaitable: the engine commits it with the checkpoint.
    assert probe.start("await_any", *probe.handles(0), -1 & (2**64 - 1))["handles"] == [0]


def test_sleep_ms() -> None:
    probe = Probe()
    assert probe.start("sleep_ms", 0) is None
    assert probe.start("sleep_ms", -1000 & (2**64 - 1)) is None
    reason = probe.start("sleep_ms", 1500)
    assert reason == {"op": "sleep", "until_ms": T0 + 1500}
    assert probe.guest.resolve(reason, T0 + 1499) is None
    assert probe.guest.resolve(reason, T0 + 1500) == []
    probe.clock.now = T0 + 1500
    assert probe.finish() is None
    assert probe.start("sleep_ms", 1 << 62)["until_ms"] == G.MAX_DEADLINE_MS


def test_signals() -> None:
    probe = Probe()
    assert probe.call("signal_read", 0, 16) == G.NO_SIGNAL
    name = probe.put(0, b"go")
    reason = probe.start("signal_wait", *name, 100)
    assert reason == {"op": "signal", "name": "go", "deadline_ms": T0 + 100}
    assert probe.guest.resolve(reason, T0 + 99) is None
    assert probe.finish(T0 + 100) == G.TIMEOUT
    assert probe.call("signal_read", 0, 16) == G.NO_SIGNAL

    reason = probe.start("signal_wait", *name, -1 & (2**64 - 1))
    assert reason == {"op": "signal", "name": "go", "deadline_ms": None}
    probe.guest.deliver_signal(b"payload", "other")
    assert probe.guest.resolve(reason) is None  # not the signal this wait is for
    probe.guest.arrived_signal = None
    probe.guest.deliver_signal(b"payload", "go")
    with pytest.raises(ValueError, match="already delivered"):
        probe.guest.deliver_signal(b"second")
    assert probe.guest.resolve(reason) == [7] and probe.guest.resolve(reason) == [7]
    assert probe.finish() == 7
    assert probe.call("signal_read", 100, 3) == 3 and probe.mem[100:104] == b"pay\0"
    assert probe.call("signal_read", 100, 64) == 7 and probe.mem[100:107] == b"payload"
    assert probe.guest.state()["last_signal"] is not None

    # The next signal replaces the last one; a timeout changes nothing.
    probe.start("signal_wait", *name, 0)
    probe.guest.deliver_signal(b"")
    assert probe.finish() == 0
    assert probe.call("signal_read", 100, 64) == 0
    assert probe.start("signal_wait", *probe.put(0, b"no way"), 0) == G.ERR_SIGNAL_NAME
    assert probe.start("signal_wait", 0, 0, 0) == G.ERR_SIGNAL_NAME


@pytest.mark.parametrize("name, args", [
    ("task_schedule", (65530, 10, 0, 1)),         # queue past the end of memory
    ("task_schedule", (0, 1, 65536, 1)),          # payload past the end
    ("task_schedule", (0, 1, 0xFFFFFFF0, 0x20)),  # wraps around 2**32
    ("child_start", (65535, 71, 0, 0)),
    ("child_start", (0, 71, 60000, 10000)),
    ("await_any", (65532, 2, 0)),                 # the array runs past the end
    ("await_any", (4098, 1, 0)),                  # misaligned
    ("result_read", (0, 65535, 2)),               # checked even for an unknown handle
    ("signal_wait", (65535, 2, 0)),
    ("signal_read", (65536, 1)),
])
def test_bad_pointers_trap_before_doing_anything(name: str, args: tuple[int, ...]) -> None:
    probe = Probe()
    before = probe.guest.state()
    message = "misaligned pointer" if args == (4098, 1, 0) else "out of bounds memory access"
    with pytest.raises(vm.TrapError, match=message) as info:
        probe.call(name, *args)
    assert info.value.backtrace  # the trap names the wasm frame that made the call
    assert probe.guest.state() == before


def test_calls_before_bind_are_an_embedding_error() -> None:
    with pytest.raises(vm.WasmError, match="before GuestApi.bind"):
        GuestApi().task_schedule(0, 1, 0, 1)


# --- the engine's side ----------------------------------------------------------------------

def test_deliver_outcomes_rejects_what_cannot_have_finished() -> None:
    probe = Probe()
    probe.schedule()
    with pytest.raises(ValueError, match="handle 0"):
        probe.guest.deliver_outcomes({0: ("succeeded", b"")})  # still in the outbox
    probe.guest.take_outbox()
    with pytest.raises(ValueError, match="handle 1"):
        probe.guest.deliver_outcomes({1: ("succeeded", b"")})
    with pytest.raises(ValueError, match="status"):
        probe.guest.deliver_outcomes({0: ("maybe", b"")})
    assert probe.guest.outcomes == {}
    assert probe.guest.deliver_outcomes({0: ("cancelled", b"cancelled")}) == [0]
    assert probe.call("handle_status", 0) == G.FAILED


def test_resolve_refuses_foreign_reasons() -> None:
    assert not G.is_guest_wait({"wasi": "fd_write"}) and not G.is_guest_wait(None)
    with pytest.raises(ValueError, match="not a wait"):
        GuestApi().resolve({"wasi": "fd_write"})


def test_state_round_trip() -> None:
    probe = Probe()
    probe.schedule(b"q", b"\0\1\2")
    probe.call("child_start", *probe.put(0, b"sha256:" + b"1" * 64), *probe.put(512, b"a\0b"))
    probe.guest.take_outbox()
    probe.schedule(b"r", b"payload")
    probe.call("child_start", *probe.put(0, b"sha256:" + b"2" * 64), *probe.put(512, b"c"))
    probe.guest.deliver_outcomes({0: ("succeeded", b"\xff" * 3), 1: ("failed", b"err")})
    probe.call("handle_release", 1)
    probe.guest.deliver_signal(b"sig", "go")
    state = json.loads(json.dumps(probe.guest.state()))
    assert state["next_handle"] == 4 and len(state["outbox"]) == 2
    assert state["children"] == [1, 3]
    copy = GuestApi.from_state(state, probe.clock, max_outbox_items=2)
    assert copy.state() == state
    assert copy.outbox_bytes == probe.guest.outbox_bytes == 9
    assert copy.take_outbox() == [TaskRequest(2, "r", b"payload"),
                                  ChildRequest(3, "sha256:" + "2" * 64, ["c"])]
    assert copy.resolve({"op": "signal", "name": "go", "deadline_ms": None}) == [3]


@pytest.mark.parametrize("mutate", [
    lambda s: s.update(format="other"),
    lambda s: s.update(version=3),
    lambda s: s.pop("outcome_log"),
    lambda s: s.update(next_handle="x"),
    lambda s: s.update(outcome_log=base64.b64encode(struct.pack("<IBI", 0, 7, 0)).decode()),
    lambda s: s.update(outcome_log=base64.b64encode(struct.pack("<IBI", 9, 2, 0)).decode()),
    lambda s: s.update(outcome_log=base64.b64encode(struct.pack("<IBI", 0, 1, 5)).decode()),
    lambda s: s.update(outcome_log="AAAA"),
    lambda s: s.update(version=1, outcomes={"0": {"status": "weird", "result": None}}),
    lambda s: s.update(version=1, outcomes={"9": {"status": "failed", "result": None}}),
    lambda s: s.update(last_signal="not base64!"),
    lambda s: s["outbox"].append({"handle": 0, "kind": "gift"}),
    lambda s: s.update(children=[1]),
    lambda s: s.pop("children"),
])
def test_bad_states_are_refused(mutate: Callable[[dict[str, Any]], None]) -> None:
    state = GuestApi().state()
    state["next_handle"] = 1
    mutate(state)
    with pytest.raises(GuestStateError):
        GuestApi.from_state(state)
    with pytest.raises(GuestStateError):
        GuestApi.from_state([])  # type: ignore[arg-type]


def test_version_1_states_are_still_read() -> None:
    v1 = {"format": "dwasm-guest", "version": 1, "next_handle": 3, "outbox": [],
          "children": [2], "last_signal": None, "arrived_signal": None,
          "outcomes": {"0": {"status": "succeeded", "result": base64.b64encode(b"r0").decode()},
                       "1": {"status": "failed", "result": None}}}
    api = GuestApi.from_state(v1)
    assert {h: (o.status, o.result) for h, o in api.outcomes.items()} == {
        0: (G.SUCCEEDED, b"r0"), 1: (G.FAILED, None)}
    state = api.state()
    assert state["version"] == G.VERSION == 2 and "outcomes" not in state
    again = GuestApi.from_state(state)
    assert {h: (o.status, o.result) for h, o in again.outcomes.items()} == {
        0: (G.SUCCEEDED, b"r0"), 1: (G.FAILED, None)}
    assert again.children == {2} and again.next_handle == 3


def test_name_and_argument_helpers() -> None:
    assert G.valid_name("square") and not G.valid_name("squäre") and not G.valid_name("")
    assert G.valid_module_id("sha256:" + "a" * 64) and not G.valid_module_id("sha256:" + "A" * 64)
    assert G.split_args(b"") == [] and G.split_args(b"\0") == [""]
    assert G.split_args(b"a\0b") == G.split_args(b"a\0b\0") == ["a", "b"]
    assert G.split_args(b"a\0\0") == ["a", ""]


def test_the_header_declares_exactly_the_imports() -> None:
    header = (ROOT / "sdk" / "c" / "dwasm.h").read_text()
    declared = {line.split('"')[1] for line in header.splitlines()
                if line.startswith("DWASM_IMPORT(")}
    assert declared == set(GuestApi().imports()["dwasm"])
    fanout = vm.load((FLOWS / "fanout.wasm").read_bytes())
    types = {f.name: f.type for f in GuestApi().imports()["dwasm"].values()}
    for imp in fanout.imports:
        if imp.module == "dwasm":
            assert fanout.types[imp.desc] == types[imp.name], imp.name

