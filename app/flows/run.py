"""One flow in memory: its module instance, resumable execution of ``_start``, WASI context and
``dwasm`` guest state, and what it produced since its last committed checkpoint.

Everything here is synchronous and CPU-bound; the engine (``app.flows.engine``) calls
:meth:`FlowRun.advance` and :meth:`FlowRun.capture` in worker threads and does all I/O itself.
Nothing in this module touches the database, so a ``FlowRun`` can be thrown away at any moment
(crash, cancel, a failed commit): the last committed checkpoint is the truth.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, Container

import vm
import vm.wasi
from vm import snapshot
from vm.errors import TrapError

from .guest import ChildRequest, GuestApi, Scheduled, is_guest_wait

ARGV0 = "flow"  # argv[0] of every flow (the API takes the arguments after it)
SLICE_FUEL = 20_000  # fuel per Execution.run; a few ms of wasm, so a step stops on time
OUTBOX_DELAY = 0.2  # a flow that scheduled work checkpoints this soon, so workers see it
OUTPUT_FLUSH = 1 << 16  # bytes of output that make a running flow checkpoint
WASI_MODULE = "wasi_snapshot_preview1"


class FlowSetupError(Exception):
    """The flow cannot be built or restored (bad module, damaged checkpoint): it fails."""


class Sink:
    """Where the flow's flushed stdout/stderr go until the next checkpoint commits them."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


@dataclass
class Step:
    """What :meth:`FlowRun.advance` stopped at."""

    kind: str  # "wait" (unresolved guest wait), "exit", "trap", "slice" (time budget used up)
    reason: dict[str, Any] | None = None  # the guest wait's reason
    exit_code: int | None = None
    error: str | None = None


@dataclass
class Capture:
    """A snapshot taken by :meth:`FlowRun.capture`, ready to be committed."""

    manifest: dict[str, Any]
    chunks: dict[str, bytes]
    items: list[Scheduled]
    stdout: bytes
    stderr: bytes
    seconds: float = 0.0
    error: str | None = None  # the flow could not be captured (it fails)


def check_flow_imports(imports: list[dict[str, str]]) -> str | None:
    """Why a module cannot run as a flow (it imports something dwasm does not provide), or
    None. ``imports`` are the module's imports as stored in the modules table."""
    provided = {WASI_MODULE: set(_wasi_names()), "dwasm": set(_guest_names())}
    for imp in imports:
        names = provided.get(imp.get("module", ""))
        if names is None or imp.get("name") not in names or imp.get("kind") != "func":
            return (f"the module imports {imp.get('module')}.{imp.get('name')} "
                    f"({imp.get('kind')}); a flow may import only functions of "
                    f"{WASI_MODULE} and dwasm")
    return None


def check_flow_exports(exports: list[dict[str, str]]) -> str | None:
    kinds = {e.get("name"): e.get("kind") for e in exports}
    if kinds.get("_start") != "func":
        return "the module exports no function _start (a flow is a WASI command)"
    if kinds.get("memory") != "memory":
        return 'the module exports no memory "memory"'
    return None


_NAMES: dict[str, list[str]] = {}


def _wasi_names() -> list[str]:
    if "wasi" not in _NAMES:
        _NAMES["wasi"] = list(vm.wasi.Wasi().imports()[WASI_MODULE])
    return _NAMES["wasi"]


def _guest_names() -> list[str]:
    if "guest" not in _NAMES:
        _NAMES["guest"] = list(GuestApi().imports()["dwasm"])
    return _NAMES["guest"]


def request_stdin(request: dict[str, Any]) -> bytes:
    return base64.b64decode(request.get("stdin") or "")


class FlowRun:
    """A flow loaded in memory. Build with :meth:`new` or :meth:`restore`."""

    def __init__(self, flow_id: str, module: vm.Module, wasi: vm.wasi.Wasi, guest: GuestApi,
                 store: vm.Store, instance: vm.Instance, execution: vm.Execution,
                 out: Sink, err: Sink, seq: int, fuel_used: int = 0) -> None:
        self.flow_id = flow_id
        self.module = module
        self.wasi = wasi
        self.guest = guest
        self.store = store
        self.instance = instance
        self.execution = execution
        self.out = out
        self.err = err
        self.seq = seq  # checkpoint_seq of the committed checkpoint this run continues
        self.fuel_used = fuel_used
        self.finished = False
        # Not committed yet: output flushed into the sinks, outbox items taken, outcomes and
        # signals handed to the guest (marked in the database by the next checkpoint).
        self.pending_out = bytearray()
        self.pending_err = bytearray()
        self.pending_items: list[Scheduled] = []
        self.delivered_tasks: list[str] = []
        self.consumed_signals: list[int] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.known_chunks: set[str] = set()
        self.child_handles: set[int] = set()  # handles that are child flows, not tasks
        self.last_checkpoint = time.monotonic()

    # --- building -----------------------------------------------------------------------------

    @classmethod
    def new(cls, flow_id: str, module: vm.Module, request: dict[str, Any],
            max_payload: int) -> "FlowRun":
        out, err = Sink(), Sink()
        try:
            wasi = vm.wasi.Wasi([ARGV0, *request.get("args", [])],
                                list(request.get("env", {}).items()), (),
                                request_stdin(request), out, err)
        except ValueError as exc:
            raise FlowSetupError(f"bad arguments or environment: {exc}") from None
        guest = GuestApi(max_payload=max_payload)
        store = vm.Store()
        try:
            instance = vm.instantiate(store, module, {**wasi.imports(), **guest.imports()})
        except (vm.LinkError, TrapError) as exc:
            raise FlowSetupError(f"cannot instantiate the module: {exc}") from None
        start = instance.exports.get("_start")
        if not isinstance(start, vm.Function):
            raise FlowSetupError("the module exports no function _start")
        run = cls(flow_id, module, wasi, guest, store, instance, store.start(start, []), out,
                  err, seq=0)
        run._bind()
        return run

    @classmethod
    def restore(cls, flow_id: str, module: vm.Module, request: dict[str, Any],
                manifest: dict[str, Any], chunks: snapshot.chunks.ChunkSource, seq: int,
                max_payload: int) -> "FlowRun":
        host = manifest.get("host") or {}
        out, err = Sink(), Sink()
        try:
            wasi = vm.wasi.Wasi.from_state(host["wasi"], stdin=request_stdin(request),
                                           stdout=out, stderr=err)
            guest = GuestApi.from_state(host["guest"], max_payload=max_payload)
            store = vm.Store()
            instance, execution = snapshot.restore(manifest, chunks, module,
                                                   {**wasi.imports(), **guest.imports()}, store)
        except (KeyError, TypeError, ValueError, vm.WasmError) as exc:
            raise FlowSetupError(f"cannot restore the checkpoint: {type(exc).__name__}: "
                                 f"{exc}") from None
        if execution is None:
            raise FlowSetupError("the checkpoint holds no execution (the flow had finished)")
        run = cls(flow_id, module, wasi, guest, store, instance, execution, out, err, seq,
                  int(host.get("fuel_used", 0)))
        run._bind()
        run.known_chunks = {h for m in manifest.get("memories", ()) for h in m["chunks"]}
        run.child_handles = {int(h) for h in host.get("children", ())}
        return run

    def _bind(self) -> None:
        try:
            self.wasi.bind(self.instance)
            self.guest.bind(self.instance)
        except vm.WasmError as exc:
            raise FlowSetupError(str(exc)) from None

    # --- running ------------------------------------------------------------------------------

    @property
    def waiting_reason(self) -> dict[str, Any] | None:
        ex = self.execution
        if ex.status == "host" and ex.pending is not None and is_guest_wait(ex.pending.reason):
            return ex.pending.reason
        return None

    def advance(self, budget: float) -> Step:
        """Run for about ``budget`` seconds of wall time, or until the flow waits for something
        that has not arrived, exits or traps."""
        ex = self.execution
        deadline = time.monotonic() + budget
        while True:
            if ex.status == "host":
                reason = ex.pending.reason if ex.pending is not None else None
                if not is_guest_wait(reason):
                    return self._finish(Step("trap", error=f"unexpected suspension {reason!r}"))
                if self.guest.complete(ex):
                    if reason.get("op") == "sleep":
                        self.events.append(("timer", {"until_ms": reason["until_ms"]}))
                    continue
                return Step("wait", reason=reason)
            try:
                status = ex.run(fuel=SLICE_FUEL)
            except vm.wasi.ProcExit as exc:
                return self._finish(Step("exit", exit_code=exc.code))
            except TrapError as exc:
                return self._finish(Step("trap", error=f"trap: {exc.message}"))
            finally:
                self.fuel_used += SLICE_FUEL - (ex.fuel_left or 0)
            if status == "done":
                return self._finish(Step("exit", exit_code=0))
            if status == "suspended" and time.monotonic() >= deadline:
                return Step("slice")

    def _finish(self, step: Step) -> Step:
        self.finished = True
        return step

    # --- checkpoints --------------------------------------------------------------------------

    def memory_size(self) -> int:
        return sum(len(m.data) for m in self.instance.mems)

    def output_pending(self) -> int:
        return self.wasi.output_pending()

    def take_outbox(self) -> None:
        """Move what the guest scheduled into the items the next checkpoint commits."""
        items = self.guest.take_outbox()
        self.pending_items += items
        self.child_handles.update(i.handle for i in items if isinstance(i, ChildRequest))

    def checkpoint_due(self, interval: float) -> bool:
        """Whether a running flow should checkpoint now: it computed for ``interval`` seconds,
        produced much output, or scheduled work that workers should see."""
        since = time.monotonic() - self.last_checkpoint
        return (since >= interval or self.output_pending() >= OUTPUT_FLUSH
                or (bool(self.guest.outbox) and since >= OUTBOX_DELAY))

    def step(self, budget: float, known: Container[str],
             interval: float) -> tuple[Step, Capture | None]:
        """:meth:`advance`, then :meth:`capture` if a checkpoint must follow — unless the
        outbox holds child flows, which the engine checks first (their modules)."""
        step = self.advance(budget)
        if step.kind == "slice" and not self.checkpoint_due(interval):
            return step, None
        self.take_outbox()
        if any(isinstance(i, ChildRequest) for i in self.pending_items):
            return step, None
        try:
            return step, self.capture(known)
        except Exception as exc:  # a state that cannot be saved: the flow fails
            return step, Capture({}, {}, [], b"", b"", error=f"cannot checkpoint: "
                                                            f"{type(exc).__name__}: {exc}")

    def capture(self, known: Container[str]) -> Capture:
        """Take the outbox, flush output and snapshot the flow (its execution too unless it has
        finished). What it returns stays pending in this run until :meth:`committed`."""
        began = time.monotonic()
        self.take_outbox()
        self.wasi.flush()
        self.pending_out += self.out.take()
        self.pending_err += self.err.take()

        class Known:
            def __contains__(inner, digest: object) -> bool:
                return digest in self.known_chunks or digest in known

        host = {"wasi": self.wasi.state(), "guest": self.guest.state(),
                "fuel_used": self.fuel_used, "children": sorted(self.child_handles)}
        manifest, chunks = snapshot.capture(self.instance,
                                            None if self.finished else self.execution,
                                            host=host, known=Known())
        return Capture(manifest, chunks, list(self.pending_items), bytes(self.pending_out),
                       bytes(self.pending_err), time.monotonic() - began)

    def committed(self, capture: Capture, new_seq: int) -> None:
        """The capture's checkpoint is in the database: forget what it covered."""
        self.seq = new_seq
        self.pending_items = self.pending_items[len(capture.items):]
        del self.pending_out[:len(capture.stdout)]
        del self.pending_err[:len(capture.stderr)]
        self.delivered_tasks.clear()
        self.consumed_signals.clear()
        self.events.clear()
        self.known_chunks = {h for m in capture.manifest["memories"] for h in m["chunks"]}
        self.last_checkpoint = time.monotonic()

    def close(self) -> None:
        self.wasi.close()
