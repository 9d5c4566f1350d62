"""The ``dwasm`` import module: the durable calls of a flow, and their state (docs/guest-abi.md).

A flow is a WASI command that may also import module ``dwasm`` to schedule tasks, start child
flows, await them, sleep and wait for signals. ``GuestApi`` implements those imports for one
flow. It holds no connection, thread or timer: everything it knows is plain data
(:meth:`GuestApi.state`), saved in each checkpoint next to WASI's state, and a call that must
wait raises ``vm.Suspend`` with a JSON *reason* that says what it waits for. The engine
(app/flows/engine.py) does the I/O.

Contract with the engine
------------------------

1. **Build.** ``guest = GuestApi(clock=...)`` for a new flow, or ``GuestApi.from_state(
   manifest["host"]["guest"], clock=...)`` when restoring one. Pass ``{**wasi.imports(),
   **guest.imports()}`` to ``vm.instantiate`` / ``vm.snapshot.restore``, then
   ``guest.bind(instance)`` (and ``wasi.bind(instance)``). ``clock`` returns the current time in
   epoch milliseconds; it is read only when a wait starts, to turn a timeout into an absolute
   deadline that is stored in the reason.
2. **Suspensions.** When ``execution.run()`` returns ``"host"`` and
   ``is_guest_wait(execution.pending.reason)``, the reason is one of::

       {"op": "await",  "handles": [h, ...], "deadline_ms": int | None}
       {"op": "sleep",  "until_ms": int}
       {"op": "signal", "name": str, "deadline_ms": int | None}

   (``None``: no timeout). The reason is stored in the snapshot (``pending.reason``), so it
   survives restarts; ``wake_at_ms(reason)`` is when the wait ends by itself (``flows.wake_at``)
   and ``awaited(reason)`` the handles whose outcomes are still missing (``awaited_by_kind``:
   split into task seqs and child flows' parent handles, the database's keys).
3. **Checkpoint.** ``items = guest.take_outbox()`` removes and returns the tasks and children
   scheduled since the last checkpoint (``TaskRequest`` / ``ChildRequest``, in handle order).
   Then capture the snapshot with ``host={"wasi": wasi.state(), "guest": guest.state()}`` and
   commit it in ONE transaction with the inserts of ``items`` (task ``seq`` = its handle,
   task id ``f"{flow_id}/{handle}"``; a child flow's ``parent_handle`` = its handle) and the
   ``delivered``/``consumed`` marks of the outcomes and signal handed over since the previous
   checkpoint. If that transaction fails, drop the in-memory flow and restore the last
   checkpoint: it predates the items, so the guest schedules them again with the same handles.
   A handle always names the same task, so inserts may also be made idempotent (``ON CONFLICT
   DO NOTHING``). The engine checkpoints at least at every suspension it does not resolve at
   once, so the outbox never outlives a wait.
4. **Wake-up.** Hand over what has arrived, then ask whether the wait is over:
   ``guest.deliver_outcomes({handle: (status, bytes)})`` for finished tasks and children,
   ``guest.deliver_signal(payload, name)`` for the oldest unconsumed signal of the awaited name
   (only while the flow waits for that signal, at most one per wait), then
   ``results = guest.resolve(reason, now_ms)``: ``None`` means keep waiting; otherwise
   ``execution.complete_host(results)`` and run on (``complete(execution)`` does both).
   ``resolve`` does not change any state, so asking again is harmless.
5. **Exactly once.** ``deliver_outcomes`` applies an outcome only for a handle that has none yet
   and returns the handles it applied; later deliveries of the same handle are ignored. After a
   crash the restored state predates the outcomes the lost run received and the database has
   not marked them delivered, so they are handed over again: each result enters the flow once.
   The same holds for a signal: one not marked consumed is delivered again after a restore.

Every call is deterministic given the state, the arguments, the outcomes and signals delivered
and the clock readings at the start of waits: re-executing from a checkpoint schedules the same
tasks under the same handles.
"""

from __future__ import annotations

import base64
import re
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from vm.errors import Suspend, WasmError
from vm.runtime.objects import HostFunction, Memory
from vm.structure import I32, I64, FuncType
from vm.wasi.memory import GuestMemory

MODULE = "dwasm"
ABI_VERSION = 1
FORMAT = "dwasm-guest"
VERSION = 2  # 2: outcomes as an append-only binary log; version 1 states are still read
_READABLE_VERSIONS = (1, 2)
# One record of the outcome log: handle, status (| _RELEASED once released), result length.
_LOG_RECORD = struct.Struct("<IBI")
_RELEASED = 0x80

PENDING, SUCCEEDED, FAILED = 0, 1, 2
_STATUS_NAMES = {SUCCEEDED: "succeeded", FAILED: "failed"}
# Statuses as the engine may spell them (task and flow statuses of the schema included).
_STATUS_CODES = {"succeeded": SUCCEEDED, "completed": SUCCEEDED, "failed": FAILED,
                 "cancelled": FAILED, SUCCEEDED: SUCCEEDED, FAILED: FAILED}

DEFAULT_MAX_PAYLOAD = 16 << 20  # bytes of a task payload or of a child's arguments
DEFAULT_MAX_OUTBOX_BYTES = 64 << 20  # payload bytes scheduled between two checkpoints
DEFAULT_MAX_OUTBOX_ITEMS = 10_000  # tasks and children scheduled between two checkpoints
MAX_AWAIT = 65_536  # handles in one await_any
MAX_NAME = 200
MODULE_ID_LEN = len("sha256:") + 64
# Deadlines are clamped to the last millisecond of year 9999, which every datetime type holds.
MAX_DEADLINE_MS = 253_402_300_799_999

_NAME = re.compile(rb"[A-Za-z0-9._-]{1,%d}" % MAX_NAME)
_MODULE_ID = re.compile(rb"sha256:[0-9a-f]{64}")

# Results of the calls (docs/guest-abi.md).
ERR_NAME = -1
ERR_TOO_LARGE = -2
ERR_OUTBOX_FULL = -3
TIMEOUT = -1
ERR_COUNT = -2
ERR_HANDLE = -3
ERR_SIGNAL_NAME = -2
UNKNOWN = -1
RELEASED = -2
NO_SIGNAL = -1


class GuestStateError(ValueError):
    """A saved guest state cannot be restored: wrong format or version, or malformed."""


def now_ms() -> int:
    """The wall clock in epoch milliseconds (the default clock)."""
    return time.time_ns() // 1_000_000


def valid_name(name: str | bytes) -> bool:
    """Whether ``name`` is a valid queue or signal name: 1..200 characters of [A-Za-z0-9._-].

    The REST API validates queue and signal names with this same rule."""
    raw = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else name
    return _NAME.fullmatch(raw) is not None


def valid_module_id(module: str | bytes) -> bool:
    """Whether ``module`` is a module id: ``sha256:`` and 64 lowercase hex digits."""
    raw = module.encode("utf-8", "surrogatepass") if isinstance(module, str) else module
    return _MODULE_ID.fullmatch(raw) is not None


def split_args(raw: bytes) -> list[str]:
    """Decode ``child_start``'s arguments: UTF-8 strings, each ended by NUL; the last NUL may be
    left out, so ``b"a\\0b"`` and ``b"a\\0b\\0"`` are both ``["a", "b"]``. UnicodeDecodeError if
    not UTF-8."""
    if not raw:
        return []
    parts = raw.split(b"\0")
    if raw.endswith(b"\0"):
        parts.pop()
    return [p.decode("utf-8") for p in parts]


@dataclass(frozen=True)
class TaskRequest:
    """A task the flow scheduled: insert it with ``seq = handle``."""

    handle: int
    queue: str
    payload: bytes


@dataclass(frozen=True)
class ChildRequest:
    """A child flow the flow started: create it with ``parent_handle = handle``, no env, no
    stdin. If ``module`` is not stored, deliver a failed outcome for the handle instead."""

    handle: int
    module: str
    args: list[str]


Scheduled = Union[TaskRequest, ChildRequest]


@dataclass
class Outcome:
    """The delivered outcome of a handle: ``SUCCEEDED``/``FAILED`` and the result payload (the
    error message of a failed task, a failed child's stderr), or None once released."""

    status: int
    result: bytes | None


def is_guest_wait(reason: object) -> bool:
    """Whether a suspension reason comes from this module (and not from WASI)."""
    return isinstance(reason, dict) and reason.get("op") in ("await", "sleep", "signal")


def wake_at_ms(reason: Mapping[str, Any]) -> int | None:
    """When the wait ends by itself (epoch ms), or None if only an outcome or signal ends it."""
    if reason.get("op") == "sleep":
        return int(reason["until_ms"])
    deadline = reason.get("deadline_ms")
    return None if deadline is None else int(deadline)


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _signed64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def _read_outcome_log(log: bytes | bytearray) -> dict[int, "Outcome"]:
    """The outcomes a log describes (later records win); GuestStateError if it is damaged."""
    outcomes: dict[int, Outcome] = {}
    view = memoryview(log)
    pos = 0
    while pos < len(view):
        if pos + _LOG_RECORD.size > len(view):
            raise GuestStateError("the outcome log is truncated")
        handle, code, size = _LOG_RECORD.unpack_from(view, pos)
        pos += _LOG_RECORD.size
        if code & ~_RELEASED not in (SUCCEEDED, FAILED) or pos + size > len(view):
            raise GuestStateError("the outcome log is damaged")
        if code & _RELEASED:
            outcomes[handle] = Outcome(code & ~_RELEASED, None)
        else:
            outcomes[handle] = Outcome(code, bytes(view[pos:pos + size]))
        pos += size
    return outcomes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class GuestApi:
    """The ``dwasm`` imports of one flow and their durable state (module docstring: the
    engine's contract; docs/guest-abi.md: the guest's)."""

    def __init__(self, clock: Callable[[], int] = now_ms, *,
                 max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES,
                 max_outbox_items: int = DEFAULT_MAX_OUTBOX_ITEMS) -> None:
        self.clock = clock
        self.max_payload = max_payload
        self.max_outbox_bytes = max_outbox_bytes
        self.max_outbox_items = max_outbox_items
        self.next_handle = 0
        self.outbox: list[Scheduled] = []
        self.outbox_bytes = 0  # payload and argument bytes in the outbox
        self.children: set[int] = set()  # the handles that are child flows (the rest: tasks)
        self.outcomes: dict[int, Outcome] = {}
        # The outcomes as :meth:`state` writes them: an append-only log of deliveries and
        # releases, so that a flow that ran many tasks checkpoints by copying bytes instead
        # of re-encoding every result as JSON each time.
        self._outcome_log = bytearray()
        self.last_signal: bytes | None = None  # what signal_read returns
        # A signal handed over by the engine that the guest's wait has not returned yet: it
        # becomes ``last_signal`` at the guest's next signal call, so ``resolve`` stays pure.
        self.arrived_signal: bytes | None = None
        self.arrived_name: str | None = None
        self._memory: GuestMemory | None = None

    # --- embedding ------------------------------------------------------------------------

    def imports(self) -> dict[str, dict[str, HostFunction]]:
        """``{"dwasm": {name: vm.HostFunction}}`` for ``vm.instantiate`` / snapshot restore."""
        table: dict[str, tuple[tuple[int, ...], tuple[int, ...], Callable[..., Any]]] = {
            "task_schedule": ((I32, I32, I32, I32), (I32,), self.task_schedule),
            "child_start": ((I32, I32, I32, I32), (I32,), self.child_start),
            "await_any": ((I32, I32, I64), (I32,), self.await_any),
            "handle_status": ((I32,), (I32,), self.handle_status),
            "result_len": ((I32,), (I32,), self.result_len),
            "result_read": ((I32, I32, I32), (I32,), self.result_read),
            "handle_release": ((I32,), (I32,), self.handle_release),
            "sleep_ms": ((I64,), (), self.sleep_ms),
            "signal_wait": ((I32, I32, I64), (I32,), self.signal_wait),
            "signal_read": ((I32, I32), (I32,), self.signal_read),
        }
        return {MODULE: {name: HostFunction(FuncType(params, results), _wrap(fn, bool(results)),
                                            name)
                         for name, (params, results, fn) in table.items()}}

    def bind(self, instance: Any, memory: Memory | None = None) -> None:
        """Use ``memory`` (default: the instance's export ``"memory"``) for every call."""
        memory = memory if memory is not None else instance.exports.get("memory")
        if not isinstance(memory, Memory):
            raise WasmError('a flow must export its memory as "memory"')
        self._memory = GuestMemory(memory)

    @property
    def mem(self) -> GuestMemory:
        if self._memory is None:
            raise WasmError("a dwasm function was called before GuestApi.bind(instance)")
        return self._memory

    # --- scheduling -----------------------------------------------------------------------

    def _outbox_full(self, size: int) -> bool:
        return (len(self.outbox) >= self.max_outbox_items
                or self.outbox_bytes + size > self.max_outbox_bytes)

    def _new_handle(self, item: Callable[[int], Scheduled]) -> int:
        handle = self.next_handle
        scheduled = item(handle)
        self.outbox.append(scheduled)
        self.outbox_bytes += _size(scheduled)
        if isinstance(scheduled, ChildRequest):
            self.children.add(handle)
        self.next_handle += 1
        return handle

    def task_schedule(self, queue_ptr: int, queue_len: int, payload_ptr: int,
                      payload_len: int) -> int:
        """ABI ``task_schedule``: queue a task in the outbox; its handle, or -1/-2/-3."""
        mem = self.mem
        mem.check(queue_ptr, queue_len)
        mem.check(payload_ptr, payload_len)
        if queue_len > MAX_NAME or not valid_name(mem.read(queue_ptr, queue_len)):
            return ERR_NAME
        if payload_len > self.max_payload:
            return ERR_TOO_LARGE
        if self._outbox_full(payload_len):
            return ERR_OUTBOX_FULL
        queue = mem.read(queue_ptr, queue_len).decode("ascii")
        payload = mem.read(payload_ptr, payload_len)
        return self._new_handle(lambda h: TaskRequest(h, queue, payload))

    def child_start(self, module_ptr: int, module_len: int, args_ptr: int, args_len: int) -> int:
        """ABI ``child_start``: queue a child flow in the outbox; its handle, or -1/-2/-3."""
        mem = self.mem
        mem.check(module_ptr, module_len)
        mem.check(args_ptr, args_len)
        if module_len > MODULE_ID_LEN or not valid_module_id(mem.read(module_ptr, module_len)):
            return ERR_NAME
        if args_len > self.max_payload:
            return ERR_TOO_LARGE
        try:
            args = split_args(mem.read(args_ptr, args_len))
        except UnicodeDecodeError:
            return ERR_TOO_LARGE
        if self._outbox_full(args_len):
            return ERR_OUTBOX_FULL
        module = mem.read(module_ptr, module_len).decode("ascii")
        return self._new_handle(lambda h: ChildRequest(h, module, args))

    # --- waiting and results --------------------------------------------------------------

    def _deadline(self, timeout_ms: int) -> int | None:
        if timeout_ms < 0:
            return None
        return min(int(self.clock()) + timeout_ms, MAX_DEADLINE_MS)

    def await_any(self, handles_ptr: int, count: int, timeout_ms: int) -> int:
        """ABI ``await_any``: the lowest finished index, -2/-3, or suspend (await reason)."""
        count = _signed32(count)
        if count <= 0 or count > MAX_AWAIT:
            return ERR_COUNT
        mem = self.mem
        mem.check(handles_ptr, 4 * count, 4)
        raw = mem.read(handles_ptr, 4 * count)
        handles = [int.from_bytes(raw[i:i + 4], "little", signed=True)
                   for i in range(0, len(raw), 4)]
        if any(h < 0 or h >= self.next_handle for h in handles):
            return ERR_HANDLE
        index = self._finished_index(handles)
        if index is not None:
            return index
        raise Suspend({"op": "await", "handles": handles,
                       "deadline_ms": self._deadline(_signed64(timeout_ms))})

    def _finished_index(self, handles: Iterable[int]) -> int | None:
        for index, handle in enumerate(handles):
            if handle in self.outcomes:
                return index
        return None

    def handle_status(self, handle: int) -> int:
        """ABI ``handle_status``: 0 pending, 1 succeeded, 2 failed, -1 unknown."""
        handle = _signed32(handle)
        if handle < 0 or handle >= self.next_handle:
            return UNKNOWN
        outcome = self.outcomes.get(handle)
        return PENDING if outcome is None else outcome.status

    def _result(self, handle: int) -> bytes | int:
        outcome = self.outcomes.get(_signed32(handle))
        if outcome is None:
            return UNKNOWN
        return RELEASED if outcome.result is None else outcome.result

    def result_len(self, handle: int) -> int:
        """ABI ``result_len``: the delivered result's length, -1 none, -2 released."""
        result = self._result(handle)
        return result if isinstance(result, int) else len(result)

    def result_read(self, handle: int, buf_ptr: int, buf_len: int) -> int:
        """ABI ``result_read``: copy a prefix of the result; bytes copied, -1, -2."""
        self.mem.check(buf_ptr, buf_len)
        result = self._result(handle)
        if isinstance(result, int):
            return result
        n = min(len(result), buf_len)
        self.mem.write(buf_ptr, result[:n])
        return n

    def handle_release(self, handle: int) -> int:
        """ABI ``handle_release``: drop a finished handle's result bytes; 0 or -1."""
        outcome = self.outcomes.get(_signed32(handle))
        if outcome is None:
            return UNKNOWN
        outcome.result = None
        self._outcome_log += _LOG_RECORD.pack(_signed32(handle), outcome.status | _RELEASED, 0)
        return 0

    def sleep_ms(self, ms: int) -> None:
        """ABI ``sleep_ms``: suspend until the clock passes now + ms (sleep reason)."""
        ms = _signed64(ms)
        if ms <= 0:
            return
        until = min(int(self.clock()) + ms, MAX_DEADLINE_MS)
        raise Suspend({"op": "sleep", "until_ms": until})

    def _settle_signal(self) -> None:
        if self.arrived_signal is not None:
            self.last_signal = self.arrived_signal
            self.arrived_signal = None
            self.arrived_name = None

    def signal_wait(self, name_ptr: int, name_len: int, timeout_ms: int) -> int:
        """ABI ``signal_wait``: -2 for a bad name, else suspend (signal reason)."""
        mem = self.mem
        mem.check(name_ptr, name_len)
        self._settle_signal()
        if name_len > MAX_NAME or not valid_name(mem.read(name_ptr, name_len)):
            return ERR_SIGNAL_NAME
        name = mem.read(name_ptr, name_len).decode("ascii")
        raise Suspend({"op": "signal", "name": name,
                       "deadline_ms": self._deadline(_signed64(timeout_ms))})

    def signal_read(self, buf_ptr: int, buf_len: int) -> int:
        """ABI ``signal_read``: copy a prefix of the last signal; bytes copied or -1."""
        self.mem.check(buf_ptr, buf_len)
        self._settle_signal()
        if self.last_signal is None:
            return NO_SIGNAL
        n = min(len(self.last_signal), buf_len)
        self.mem.write(buf_ptr, self.last_signal[:n])
        return n

    # --- the engine's side ----------------------------------------------------------------

    def take_outbox(self) -> list[Scheduled]:
        """Remove and return what was scheduled since the last call, in handle order; insert it
        in the transaction of the checkpoint captured right after (module docstring, 3)."""
        items, self.outbox = self.outbox, []
        self.outbox_bytes = 0
        return items

    def deliver_outcomes(self, outcomes: Mapping[int, tuple[int | str, bytes | str]]
                         ) -> list[int]:
        """Hand over finished tasks and children: ``{handle: (status, result)}``, status
        ``SUCCEEDED``/``FAILED`` or ``"succeeded"``/``"completed"``/``"failed"``/
        ``"cancelled"``. Returns the handles applied now, in order; handles that already have
        an outcome are ignored (exactly once). ValueError for a handle the flow never created
        or one still in the outbox (not committed yet, so it cannot have finished)."""
        unsent = {item.handle for item in self.outbox}
        parsed: list[tuple[int, int, bytes]] = []
        for handle, (status, result) in sorted(outcomes.items()):
            if not 0 <= handle < self.next_handle or handle in unsent:
                raise ValueError(f"handle {handle} is not a committed task or child of this flow")
            code = _STATUS_CODES.get(status)
            if code is None:
                raise ValueError(f"unknown outcome status {status!r}")
            data = result.encode("utf-8") if isinstance(result, str) else bytes(result)
            parsed.append((handle, code, data))
        applied = []
        for handle, code, data in parsed:
            if handle not in self.outcomes:
                self.outcomes[handle] = Outcome(code, data)
                self._outcome_log += _LOG_RECORD.pack(handle, code, len(data))
                self._outcome_log += data
                applied.append(handle)
        return applied

    def deliver_signal(self, payload: bytes | str, name: str | None = None) -> None:
        """Hand over the signal the flow waits for (``name``: checked against the wait by
        :meth:`resolve` when given). ValueError if one was already handed over for this wait."""
        if self.arrived_signal is not None:
            raise ValueError("a signal was already delivered for this wait")
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        self.arrived_signal = data
        self.arrived_name = name

    def awaited(self, reason: Mapping[str, Any]) -> list[int]:
        """The handles of an await whose outcomes have not been delivered (what to look up)."""
        if reason.get("op") != "await":
            return []
        return sorted({h for h in reason["handles"] if h not in self.outcomes})

    def awaited_by_kind(self, reason: Mapping[str, Any]) -> dict[str, list[int]]:
        """:meth:`awaited` split into ``{"tasks": [seq], "children": [parent_handle]}``, the
        keys under which the database finds them."""
        handles = self.awaited(reason)
        return {"tasks": [h for h in handles if h not in self.children],
                "children": [h for h in handles if h in self.children]}

    def is_child(self, handle: int) -> bool:
        """Whether ``handle`` is a child flow (False: a task, or not issued)."""
        return handle in self.children

    def resolve(self, reason: Mapping[str, Any], now: int | None = None) -> list[int] | None:
        """The results that end the wait ``reason`` at time ``now`` (epoch ms, default: the
        clock), for ``Execution.complete_host``; None to keep waiting. Changes nothing."""
        if not is_guest_wait(reason):
            raise ValueError(f"not a wait of the dwasm module: {reason!r}")
        now = int(self.clock()) if now is None else now
        op = reason["op"]
        if op == "sleep":
            return [] if now >= reason["until_ms"] else None
        if op == "await":
            index = self._finished_index(reason["handles"])
            if index is not None:
                return [index]
        elif self.arrived_signal is not None and self.arrived_name in (None, reason["name"]):
            return [len(self.arrived_signal)]
        deadline = reason.get("deadline_ms")
        if deadline is not None and now >= deadline:
            return [TIMEOUT & 0xFFFFFFFF]
        return None

    def complete(self, execution: Any, now: int | None = None) -> bool:
        """If ``execution`` waits in a dwasm call that :meth:`resolve` can end, deliver the
        results with ``complete_host`` and return True; otherwise False."""
        pending = execution.pending
        if execution.status != "host" or pending is None or not is_guest_wait(pending.reason):
            return False
        results = self.resolve(pending.reason, now)
        if results is None:
            return False
        execution.complete_host(results)
        return True

    # --- durable state --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything this object knows as JSON-serialisable data (docs/guest-abi.md, "State")."""
        outbox: list[dict[str, Any]] = []
        for item in self.outbox:
            if isinstance(item, TaskRequest):
                outbox.append({"handle": item.handle, "kind": "task", "queue": item.queue,
                               "payload": _b64(item.payload)})
            else:
                outbox.append({"handle": item.handle, "kind": "child", "module": item.module,
                               "args": list(item.args)})
        return {
            "format": FORMAT,
            "version": VERSION,
            "next_handle": self.next_handle,
            "outbox": outbox,
            "children": sorted(self.children),
            "outcome_log": _b64(self._outcome_log),
            "last_signal": None if self.last_signal is None else _b64(self.last_signal),
            "arrived_signal": (None if self.arrived_signal is None else
                               {"name": self.arrived_name, "payload": _b64(self.arrived_signal)}),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], clock: Callable[[], int] = now_ms, *,
                   max_payload: int = DEFAULT_MAX_PAYLOAD,
                   max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES,
                   max_outbox_items: int = DEFAULT_MAX_OUTBOX_ITEMS) -> "GuestApi":
        """Rebuild from :meth:`state`, in any process. Raises GuestStateError."""
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise GuestStateError("not a dwasm guest state")
        if state.get("version") not in _READABLE_VERSIONS:
            raise GuestStateError(f"guest state version {state.get('version')} is not supported "
                                  f"(this dwasm reads version {VERSION})")
        api = cls(clock, max_payload=max_payload, max_outbox_bytes=max_outbox_bytes,
                  max_outbox_items=max_outbox_items)
        try:
            api.next_handle = int(state["next_handle"])
            for item in state["outbox"]:
                if item["kind"] == "task":
                    api.outbox.append(TaskRequest(int(item["handle"]), str(item["queue"]),
                                                  _unb64(item["payload"])))
                elif item["kind"] == "child":
                    api.outbox.append(ChildRequest(int(item["handle"]), str(item["module"]),
                                                   [str(a) for a in item["args"]]))
                else:
                    raise GuestStateError(f"unknown outbox item kind {item['kind']!r}")
            if state["version"] == 1:
                for key, value in state["outcomes"].items():
                    code = {"succeeded": SUCCEEDED, "failed": FAILED}[value["status"]]
                    result = value["result"]
                    data = None if result is None else _unb64(result)
                    api.outcomes[int(key)] = Outcome(code, data)
                    api._outcome_log += _LOG_RECORD.pack(int(key), code, len(data or b""))
                    api._outcome_log += data or b""
                    if data is None:
                        api._outcome_log += _LOG_RECORD.pack(int(key), code | _RELEASED, 0)
            else:
                api._outcome_log = bytearray(_unb64(state["outcome_log"]))
                api.outcomes = _read_outcome_log(api._outcome_log)
            last = state["last_signal"]
            api.last_signal = None if last is None else _unb64(last)
            arrived = state["arrived_signal"]
            if arrived is not None:
                api.arrived_signal = _unb64(arrived["payload"])
                api.arrived_name = arrived["name"]
            api.outbox_bytes = sum(_size(item) for item in api.outbox)
            api.children = {int(h) for h in state["children"]}
        except GuestStateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GuestStateError(f"malformed guest state: {type(exc).__name__}: {exc}") from exc
        issued = [*api.outcomes, *api.children, *(i.handle for i in api.outbox)]
        if api.next_handle < 0 or any(not 0 <= h < api.next_handle for h in issued):
            raise GuestStateError("malformed guest state: a handle beyond next_handle")
        return api


def _size(item: Scheduled) -> int:
    """Bytes an outbox item counts against the outbox limit (its payload or its arguments)."""
    if isinstance(item, TaskRequest):
        return len(item.payload)
    return sum(len(a.encode("utf-8")) + 1 for a in item.args)


def _wrap(method: Callable[..., Any], has_result: bool) -> Callable[..., Any]:
    """The host-function form of a call: i32 results as the unsigned bit patterns vm/ uses."""
    if not has_result:
        return method

    def call(*args: int) -> int:
        return method(*args) & 0xFFFFFFFF

    call.__name__ = method.__name__
    return call
