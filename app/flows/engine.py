"""The flow engine: runs flows from their Postgres checkpoints, one node.

A flow is a ``vm.Execution`` of its module's ``_start`` with WASI and the ``dwasm`` imports
(``app.flows.run.FlowRun``). A flow whose row says ``running`` is *activated*: restored from its
latest checkpoint (or built from its start request) and run in short steps in a worker thread
pool, so the event loop keeps serving the API while flows compute. It runs until it waits for
something that has not arrived (a guest wait: await, sleep, signal) or exits; then its
checkpoint is committed in ONE statement (``store.commit_checkpoint``): the snapshot manifest
with the WASI and guest state, new memory chunks, the output it produced, the tasks and child
flows it scheduled (outbox), the marks of outcomes and signals it received, its events. After a
wait's checkpoint the flow leaves the engine (the last few stay cached in memory, as an
optimisation that changes nothing: a cached flow is exactly its committed checkpoint, a cancel
drops it, and a commit from a run whose row moved on is refused). Long CPU stretches are
checkpointed periodically.

Wake-ups: an arrival (task outcome, signal, finished child) is recorded in a transaction that
locks the flow row and then marks a waiting flow ``running`` if it is what the flow waits for
(``store.finish_task``, ``store.wake_if_ready``), after which the engine is told
(:meth:`FlowEngine.wake`). Timers are a loop over ``flows.wake_at``. At start-up, and every
few seconds as a safety net, every ``running`` flow not in memory is resumed and every waiting
flow whose condition is met is woken. Any failure while committing drops the in-memory flow: the
last committed checkpoint is the truth, and re-running from it repeats nothing visible (tasks
and children have ids derived from handles, outcomes and signals are marked with the checkpoint
that contains them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import hashlib
import json
import logging
import random
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable

import asyncpg

import vm
from topology.fencing import FencedError, check_epoch

from ..observability.flows import FlowMetrics
from ..observability.logs import FLOW_ID
from . import store
from .chunks import ChunkStore
from .errors import FlowError
from .guest import DEFAULT_MAX_PAYLOAD, ChildRequest, TaskRequest, wake_at_ms
from .policies import PolicyBook
from .retention import (MAX_BATCHES, Collected, Deleted, RetentionConfig, RetentionMetrics,
                        collect_chunks, delete_finished_batch, jittered)
from .run import Capture, FlowRun, FlowSetupError, Step
from .tasks import QueueWaiters, reap_expired_leases

log = logging.getLogger("dwasm.engine")

STEP_SECONDS = 0.05  # wall time of one step in a worker thread
INLINE_MEMORY = 1 << 20  # flows with at most this much memory take a first step inline
CHECKPOINT_INTERVAL = 2.0  # seconds of computing between checkpoints of a busy flow
REAPER_INTERVAL = 1.0
SWEEP_INTERVAL = 10.0
TIMER_MAX_SLEEP = 5.0
# Errors after which a commit is retried (from the last checkpoint): the database was
# unreachable or the transaction lost a race. Any other database error fails the flow.
_RETRYABLE = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
              asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
              asyncpg.TooManyConnectionsError, asyncpg.DeadlockDetectedError,
              asyncpg.SerializationError, asyncpg.AdminShutdownError)
WARM_FLOWS = 512  # waiting flows kept in memory (an optimisation; see the module docstring)
WARM_BYTES = 256 << 20  # ... holding at most this much linear memory
MAX_ACTIVE = 32  # flows in memory and running at once
ARRIVALS_MAX_FLOWS = 4096  # flows whose committed task outcomes are remembered (see wake-ups)


def request_hash(request: dict[str, Any]) -> str:
    """The identity of a start request, for idempotent starts with a client-chosen id."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def new_flow_id() -> str:
    return "f-" + secrets.token_hex(10)


def child_flow_id(parent_id: str, handle: int) -> str:
    """Child flow ids derive from the parent and the handle: a re-run cannot duplicate one.
    ``~`` never occurs in client-chosen ids."""
    return f"{parent_id}~{handle}"


def _utc_from_ms(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


class FlowEngine:
    """Runs the flows of one database. ``await start()`` after the pool is up (it resumes what
    a previous process left), ``await stop()`` before closing it."""

    def __init__(self, db: Any, *, max_payload: int = DEFAULT_MAX_PAYLOAD, workers: int = 2,
                 warm_flows: int | None = None, checkpoint_interval: float | None = None,
                 metrics: Any = None, policies: PolicyBook | None = None,
                 retention: RetentionConfig | None = None) -> None:
        self.db = db
        self.policies = policies or PolicyBook()
        self.max_payload = max_payload
        # Retention and chunk GC (app/flows/retention.py); the service passes its settings'.
        self.retention = retention if retention is not None else RetentionConfig()
        self.chunks = ChunkStore(db, ttl=self.retention.chunk_ttl)
        self.retention_metrics: RetentionMetrics | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.checkpoint_interval = (CHECKPOINT_INTERVAL if checkpoint_interval is None
                                    else checkpoint_interval)
        self.warm_limit = WARM_FLOWS if warm_flows is None else warm_flows
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="dwasm-flow")
        self._active: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._dropped: set[str] = set()  # cancelled while in memory: stop at the next step
        self._warm: collections.OrderedDict[str, FlowRun] = collections.OrderedDict()
        self._warm_bytes = 0
        # Task outcomes committed by this process's API, kept so that waking the flow needs no
        # query to find them (the database stays the truth: a flow without an entry here looks
        # there). flow id -> {handle: (task id, status, result)}.
        self._arrivals: collections.OrderedDict[str, dict[int, tuple[str, str, bytes]]] = \
            collections.OrderedDict()
        self._modules: collections.OrderedDict[str, vm.Module] = collections.OrderedDict()
        self.waiters = QueueWaiters()
        self._timer_kick: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._running = False
        # Shards: without a topology (tools, tests) the engine runs every flow and writes
        # unfenced; with one (attach_topology) it runs the flows of the shards it was given,
        # each written with the shard's epoch (docs/cluster.md).
        self.topology: Any = None
        self._owned: dict[int, int] = {}
        self._releasing: set[int] = set()
        self._resume_shards: set[int] = set()
        self._resume_task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self.stats: collections.Counter[str] = collections.Counter()
        self.metrics = metrics
        self.flow_metrics: FlowMetrics | None = None
        self._setup_metrics()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every flow a previous process left running or that became ready, and start
        the timer and lease-reaper loops."""
        self._running = True
        self.loop = asyncio.get_running_loop()
        self._timer_kick = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_ACTIVE)
        # Wasm runs in worker threads; a short switch interval lets the event loop take the
        # GIL back quickly, which keeps API latency low while flows compute.
        if sys.getswitchinterval() > 0.001:
            sys.setswitchinterval(0.001)
        await self.policies.refresh(self.db)
        ids: list[str] = []
        if self.topology is None:  # every flow is ours; with a topology, shard_acquired says
            async with self.db.transaction() as conn:
                await store.wake_all_ready(conn)
                ids = await store.runnable_flow_ids(conn)
            for flow_id in ids:
                self.wake(flow_id)
        self._loops = [asyncio.create_task(self._timer_loop(), name="dwasm-timers"),
                       asyncio.create_task(self._reaper_loop(), name="dwasm-reaper"),
                       asyncio.create_task(self._listen_loop(), name="dwasm-wake-listener"),
                       asyncio.create_task(self._retention_loop(), name="dwasm-retention")]
        self._start_active_count()
        log.info("flow engine started; resumed %d flows", len(ids))

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop running flows at their next step (their rows stay ``running``: the next start
        resumes them from their last checkpoint) and the loops."""
        self._running = False
        for task in self._loops:
            task.cancel()
        pending = list(self._active.values()) + self._loops
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in self._active.values():
            task.cancel()
        for run in self._warm.values():
            run.close()
        self._warm.clear()
        self._warm_bytes = 0
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def ready_check(self) -> str | None:
        """For /readyz: None when the engine runs."""
        return None if self._running else "flow engine not running"

    # --- shards (topology.node.ShardEvents) ---------------------------------------------------

    def attach_topology(self, topology: Any) -> None:
        """Run only the flows of the shards ``topology`` gives this node, fenced by epoch."""
        self.topology = topology

    def shards(self) -> store.Shards:
        """The flows this engine runs, as a condition for the store's queries."""
        if self.topology is None:
            return store.ALL_SHARDS
        return store.Shards(self.topology.config.shards,
                            [s for s in self._owned if s not in self._releasing])

    def fence_of(self, flow_id: str) -> tuple[int, int] | None | bool:
        """(shard, epoch) to write ``flow_id`` with; None without a topology (unfenced);
        False if this node does not own the flow's shard now."""
        if self.topology is None:
            return None
        shard = self.topology.shard_of(flow_id)
        epoch = self._owned.get(shard)
        if epoch is None:
            return False
        return shard, epoch

    def owns(self, flow_id: str) -> bool:
        return self.fence_of(flow_id) is not False

    def new_flow_id(self) -> str:
        """A fresh flow id, in a shard this node owns when it owns any (a start without a
        client id then runs where it was asked, without a hop)."""
        fid = new_flow_id()
        for _ in range(64):
            if self.owns(fid):
                break
            fid = new_flow_id()
        return fid

    async def check_fence(self, conn: Any, flow_id: str) -> None:
        """First thing in a transaction that changes ``flow_id``: refuse (503, nothing
        written) unless this node owns its shard at the epoch the database holds."""
        fence = self.fence_of(flow_id)
        if fence is None:
            return
        if fence is not False:
            try:
                await check_epoch(conn, *fence)
                return
            except FencedError as exc:
                asyncio.get_running_loop().create_task(self.fenced(exc.shard, exc.epoch))
        raise FlowError(503, "shard-moving", f"this node does not own flow {flow_id!r} now "
                        "(its shard is moving between nodes); retry shortly",
                        headers={"Retry-After": "1"}, flow_id=flow_id)

    async def fenced(self, shard: int, epoch: int) -> None:
        """A write with (shard, epoch) was refused: another node owns the shard now."""
        self.stats["fenced"] += 1
        if self._owned.get(shard) == epoch:
            await self.shard_lost(shard)
        if self.topology is not None:
            await self.topology.report_fenced(shard, epoch)

    async def shard_acquired(self, shard: int, epoch: int) -> None:
        self._owned[shard] = epoch
        self._releasing.discard(shard)
        self._resume_shards.add(shard)
        if self._resume_task is None or self._resume_task.done():
            self._resume_task = asyncio.create_task(self._resume(), name="dwasm-resume")

    async def _resume(self) -> None:
        """Run the runnable and ready flows of newly acquired shards (batched: a node that
        starts acquires all its shards at once)."""
        await asyncio.sleep(0)
        while self._resume_shards and self._running:
            shards = sorted(self._resume_shards)
            self._resume_shards.clear()
            assert self.topology is not None
            which = store.Shards(self.topology.config.shards, shards)
            try:
                async with self.db.transaction() as conn:
                    await store.wake_all_ready(conn, which)
                    ids = await store.runnable_flow_ids(conn, which)
            except Exception:
                log.exception("resuming the flows of %d shard(s)", len(shards))
                self._resume_shards.update(shards)
                await asyncio.sleep(1.0)
                continue
            for flow_id in ids:
                self.wake(flow_id)
            if self._timer_kick is not None:
                self._timer_kick.set()
            log.info("shards %s: resumed %d flows", _ranges(shards), len(ids))

    async def shard_releasing(self, shard: int, epoch: int) -> None:
        """Stop the shard's flows at a safe point (a running one commits a checkpoint first)
        and return when none runs any more."""
        self._releasing.add(shard)
        self._drop_warm(lambda fid: self.topology.shard_of(fid) == shard)
        while self._running and any(self.topology.shard_of(f) == shard for f in self._active):
            await asyncio.sleep(0.02)
        if self._owned.get(shard) == epoch:
            del self._owned[shard]
        self._releasing.discard(shard)

    async def shard_lost(self, shard: int) -> None:
        """Stop the shard's flows now, without writing."""
        self._owned.pop(shard, None)
        self._releasing.discard(shard)
        for flow_id in list(self._active):
            if self.topology.shard_of(flow_id) == shard:
                self._dropped.add(flow_id)
        self._drop_warm(lambda fid: self.topology.shard_of(fid) == shard)

    def _drop_warm(self, which: Callable[[str], bool]) -> None:
        for flow_id in [f for f in self._warm if which(f)]:
            run = self._warm.pop(flow_id)
            self._warm_bytes -= run.memory_size()
            run.close()
            self._arrivals.pop(flow_id, None)

    async def notify_wake(self, flow_id: str) -> None:
        """Wake ``flow_id`` wherever it runs: here, or through PostgreSQL on its owner."""
        if self.owns(flow_id):
            self.wake(flow_id)
            return
        try:
            await self.db.pool.execute("SELECT pg_notify('dwasm_wake', $1)", flow_id)
        except Exception as exc:  # its owner's sweep finds it anyway
            log.warning("cannot notify the owner of %s: %s", flow_id, exc)

    async def _listen_loop(self) -> None:
        """Wake-ups from other nodes (pg_notify 'dwasm_wake', flow id): children created by a
        parent elsewhere, parents whose child finished elsewhere. Reconnects after errors; the
        sweep covers anything missed meanwhile."""
        while self._running:
            conn = None
            try:
                conn = await asyncpg.connect(self.db.url)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda c, lost=lost: lost.set())
                await conn.add_listener("dwasm_wake", self._on_notify)
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wake-up listener: %s; reconnecting", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(1.0)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if self.owns(payload):
            self.wake(payload)

    # --- scheduling ---------------------------------------------------------------------------

    def wake(self, flow_id: str) -> None:
        """Run ``flow_id`` if its row says ``running`` (or soon will: a wake while the flow is
        in memory makes it look again when it stops)."""
        if not self._running or not self.owns(flow_id):
            return
        if flow_id in self._active:
            self._again.add(flow_id)
            return
        self._active[flow_id] = asyncio.create_task(self._drive(flow_id),
                                                    name=f"dwasm-flow-{flow_id}")

    def task_finished(self, flow_id: str, handle: int, task_id: str, status: str,
                      result: bytes, woken: bool) -> None:
        """A task outcome was committed: remember it for the flow's next delivery, and run the
        flow if the commit made it runnable."""
        arrivals = self._arrivals.get(flow_id)
        if arrivals is None:
            arrivals = self._arrivals[flow_id] = {}
            while len(self._arrivals) > ARRIVALS_MAX_FLOWS:
                self._arrivals.popitem(last=False)
        arrivals[handle] = (task_id, status, result)
        if woken:
            self.wake(flow_id)

    @property
    def active_count(self) -> int:
        return len(self._active)

    async def _drive(self, flow_id: str) -> None:
        assert self._slots is not None
        FLOW_ID.set(flow_id)  # this task's log lines (and its steps' threads) are the flow's
        try:
            while self._running:
                self._again.discard(flow_id)
                async with self._slots:
                    await self._activate(flow_id)
                if flow_id not in self._again:
                    break
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug or a lost database: the flow stays as committed
            log.exception("flow %s: run aborted", flow_id)
            self.stats["aborted"] += 1
        finally:
            self._active.pop(flow_id, None)
            self._dropped.discard(flow_id)
            if flow_id in self._again and self._running:  # woken while stopping a run
                self._again.discard(flow_id)
                self.wake(flow_id)

    def notify_queue(self, queue: str, n: int = 1) -> None:
        """``n`` tasks of ``queue`` became ready: wake that many long-polling leases."""
        self.waiters.notify(queue, n)

    def notify_queue_later(self, queue: str, delay: float) -> None:
        """A task of ``queue`` becomes ready in ``delay`` seconds (retry backoff)."""
        asyncio.get_running_loop().call_later(delay + 0.005, self.waiters.notify, queue, 1)

    def forget(self, flow_id: str) -> None:
        """Drop a flow from memory (it was cancelled)."""
        if self.flow_metrics is not None:
            self.flow_metrics.flow_finished("cancelled")
        if flow_id in self._active:
            self._dropped.add(flow_id)
        self._arrivals.pop(flow_id, None)
        run = self._warm.pop(flow_id, None)
        if run is not None:
            self._warm_bytes -= run.memory_size()
            run.close()

    # --- one activation -----------------------------------------------------------------------

    async def _thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pool, in a copy of the caller's context (its log context)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, contextvars.copy_context().run, fn, *args)

    async def module(self, module_id: str) -> vm.Module:
        """The decoded module ``module_id`` (cached); FlowSetupError if not stored."""
        module = self._modules.get(module_id)
        if module is not None:
            self._modules.move_to_end(module_id)
            return module
        data = await self.db.pool.fetchval("SELECT bytes FROM modules WHERE id = $1", module_id)
        if data is None:
            raise FlowSetupError(f"module {module_id} is not stored")
        try:
            module = await self._thread(vm.load, data)
        except vm.WasmError as exc:
            raise FlowSetupError(f"module {module_id} does not load: {exc}") from None
        self._modules[module_id] = module
        while len(self._modules) > 32:
            self._modules.popitem(last=False)
        return module

    def _releasing_flow(self, flow_id: str) -> bool:
        return bool(self._releasing) and self.topology is not None and \
            self.topology.shard_of(flow_id) in self._releasing

    async def _activate(self, flow_id: str) -> None:
        if not self.owns(flow_id) or self._releasing_flow(flow_id):
            return
        # A cached run is used as it is: if the row moved on (only a cancel can do that, and
        # it drops the cached run), its commit finds out and nothing is written.
        run = self._warm.pop(flow_id, None)
        if run is not None:
            self._warm_bytes -= run.memory_size()
            self.stats["warm_resumes"] += 1
        else:
            row = await store.get_flow(self.db.pool, flow_id, checkpoint=True)
            if row is None or row["status"] != "running":
                return
            if row["checkpoint"] is None and self.flow_metrics is not None:
                self.flow_metrics.flow_started()
            try:
                run = await self._load(row)
            except FlowSetupError as exc:
                await self._fail_unloadable(row, str(exc))
                return
            self.stats["restores" if row["checkpoint"] else "starts"] += 1
        keep = False
        try:
            keep = await self._run(run)
        finally:
            if keep and self._running and flow_id not in self._dropped:
                self._keep_warm(run)
            else:
                run.close()

    async def _load(self, row: dict[str, Any]) -> FlowRun:
        module = await self.module(row["module_id"])
        manifest = row["checkpoint"]
        if manifest is None:
            run = await self._thread(FlowRun.new, row["id"], module, row["request"],
                                     self.max_payload)
        else:
            await self.chunks.prefetch(manifest)
            run = await self._thread(FlowRun.restore, row["id"], module, row["request"],
                                     manifest, self.chunks.source(manifest),
                                     row["checkpoint_seq"], self.max_payload)
        run.seq = row["checkpoint_seq"]
        return run

    def _keep_warm(self, run: FlowRun) -> None:
        if self.warm_limit <= 0:
            run.close()
            return
        self._warm[run.flow_id] = run
        self._warm_bytes += run.memory_size()
        while self._warm and (len(self._warm) > self.warm_limit
                              or self._warm_bytes > WARM_BYTES):
            _, old = self._warm.popitem(last=False)
            self._warm_bytes -= old.memory_size()
            old.close()

    async def _run(self, run: FlowRun) -> bool:
        """Drive ``run`` until it waits (True: it may stay cached), finishes or must be
        dropped (False)."""
        flow_id = run.flow_id
        deliver = True  # look for arrivals: at activation and after a wait ended by one
        inline = True  # the next step may run on the event loop (see below)
        while True:
            if not self._running or flow_id in self._dropped:
                return False
            if deliver and run.waiting_reason is not None:
                await self._deliver(run)
            deliver = False
            try:
                # A step runs the flow and, when a checkpoint follows, captures it too. The
                # first step after a wake-up runs right here on the event loop when it is
                # bound to be short (one fuel slice, a small memory to snapshot): most flows
                # just take a result and schedule the next task, and a hop to a worker thread
                # would cost more than the step (and make the loop wait for the GIL on every
                # socket write). Anything longer goes on in the thread pool.
                if inline and run.memory_size() <= INLINE_MEMORY:
                    step, cap = run.step(0.0, self.chunks.cache, self.checkpoint_interval)
                else:
                    step, cap = await self._thread(run.step, STEP_SECONDS, self.chunks.cache,
                                                   self.checkpoint_interval)
                inline = False
            except Exception as exc:  # an engine bug surfacing in the guest API: fail the flow
                log.exception("flow %s: step failed", flow_id)
                run.finished = True
                step, cap = Step("trap", error=f"internal error: {type(exc).__name__}: "
                                               f"{exc}"), None
            if step.kind == "slice":
                if self._releasing_flow(flow_id):  # hand over: checkpoint now, then stop
                    if cap is None:
                        run.take_outbox()
                    await self._commit(run, "running", cap=cap)
                    return False
                if cap is not None and await self._commit(run, "running", cap=cap) is None:
                    return False
                continue
            if step.kind == "wait":
                assert step.reason is not None
                if await self._deliver(run):
                    if run.guest.resolve(step.reason) is not None:
                        inline = True
                        continue  # what it waits for had arrived: no checkpoint needed
                    # The capture predates what was just handed over, which its checkpoint
                    # will mark delivered: capture again.
                    cap = None
                status = await self._commit(run, "waiting", step.reason, cap=cap)
                if status is None:
                    return False
                if status == "waiting":
                    return True
                deliver = inline = True  # something arrived while it was being stored: go on
                continue
            # exit or trap
            final = "completed" if step.kind == "exit" else "failed"
            await self._commit(run, final, exit_code=step.exit_code, error=step.error, cap=cap)
            self._arrivals.pop(flow_id, None)
            return False

    # --- arrivals -----------------------------------------------------------------------------

    async def _deliver(self, run: FlowRun, conn: Any = None) -> bool:
        """Hand the in-memory flow what has arrived for its current wait; True if anything
        was handed over."""
        reason = run.waiting_reason
        if reason is None:
            return False
        conn = conn or self.db.pool
        guest = run.guest
        op = reason.get("op")
        handed = False
        if op == "await":
            uncommitted = {i.handle for i in guest.outbox} | {i.handle for i in run.pending_items}
            wanted = [h for h in guest.awaited(reason) if h not in uncommitted]
            if not wanted:
                return False
            outcomes: dict[int, tuple[str, bytes]] = {}
            children = [h for h in wanted if h in run.child_handles]
            arrivals = self._arrivals.get(run.flow_id, {})
            known = [h for h in wanted if h in arrivals]
            for h in known:
                task_id, status, result = arrivals.pop(h)
                outcomes[h] = (status, result)
                run.delivered_tasks.append(task_id)
                run.events.append(("task_delivered", {"task_id": task_id, "status": status}))
            if len(children) < len(wanted) and not known:  # some are tasks
                for t in await store.undelivered_outcomes(conn, run.flow_id,
                                                          run.delivered_tasks):
                    if t["seq"] < guest.next_handle and t["seq"] not in uncommitted:
                        result = t["result"] if t["status"] == "completed" else (
                            t["error"] or "").encode()
                        outcomes[t["seq"]] = (t["status"], result or b"")
                        arrivals.pop(t["seq"], None)
                        run.delivered_tasks.append(t["id"])
                        run.events.append(("task_delivered", {"task_id": t["id"],
                                                              "status": t["status"]}))
            for c in (await store.finished_children(conn, run.flow_id) if children else ()):
                handle = c["parent_handle"]
                if handle is not None and handle not in guest.outcomes and handle \
                        < guest.next_handle and handle not in uncommitted:
                    outcomes[handle] = child_outcome(c)
                    run.events.append(("child_delivered", {"child_id": c["id"],
                                                           "status": c["status"]}))
            if outcomes:
                handed = bool(guest.deliver_outcomes(outcomes)) or handed
        elif op == "signal" and guest.arrived_signal is None:
            sig = await store.next_signal(conn, run.flow_id, reason["name"],
                                          run.consumed_signals)
            if sig is not None:
                guest.deliver_signal(sig["payload"], sig["name"])
                run.consumed_signals.append(sig["id"])
                run.events.append(("signal_received", {"name": sig["name"],
                                                       "signal_id": sig["id"]}))
                handed = True
        return handed

    # --- checkpoints --------------------------------------------------------------------------


    async def _write(self, cp: store.Checkpoint, skip_signals: Any,
                     fence: tuple[int, int] | None) -> tuple[int, str] | None:
        """Commit ``cp`` (the one fenced SQL statement of every checkpoint), as this node."""
        return await store.commit_checkpoint(
            self.db.pool, cp, skip_signals, fence,
            self.topology.node_id if self.topology is not None else None,
            self.chunks.refresh_after)

    async def _commit(self, run: FlowRun, status: str, reason: dict[str, Any] | None = None, *,
                      exit_code: int | None = None, error: str | None = None,
                      cap: Capture | None = None) -> str | None:
        """Commit a checkpoint (captured now unless ``cap`` is given); returns the status
        written, or None if the flow's row moved on meanwhile (cancelled) or the commit
        failed — then the run is dropped."""
        flow_id = run.flow_id
        if cap is None:
            run.take_outbox()
            await self._fail_missing_children(run)
            try:
                cap = await self._thread(run.capture, self.chunks.cache)
            except Exception as exc:
                log.exception("flow %s: capture failed", flow_id)
                await self._commit_failure(run, f"cannot checkpoint: {type(exc).__name__}: "
                                                f"{exc}")
                return None
        assert cap is not None
        wake_ms = wake_at_ms(reason) if reason is not None else None
        events = list(run.events)
        if cap.error is not None:
            await self._commit_failure(run, cap.error)
            return None
        for item in cap.items:
            if isinstance(item, TaskRequest):
                events.append(("task_scheduled", {"handle": item.handle, "queue": item.queue,
                                                  "task_id": f"{flow_id}/{item.handle}",
                                                  "size": len(item.payload)}))
            else:
                events.append(("child_started", {"handle": item.handle, "module": item.module,
                                                 "child_id": child_flow_id(flow_id,
                                                                           item.handle)}))
        cp = store.Checkpoint(
            flow_id=flow_id, expected_seq=run.seq, status=status, manifest=cap.manifest,
            chunks=cap.chunks, stdout=cap.stdout, stderr=cap.stderr, exit_code=exit_code,
            error=error, task_seq=run.guest.next_handle,
            tasks=[store.NewTask(flow_id, i.handle, i.queue, i.payload,
                                 self.policies.get(i.queue).max_attempts)
                   for i in cap.items if isinstance(i, TaskRequest)],
            children=[self._child(flow_id, i) for i in cap.items
                      if isinstance(i, ChildRequest)],
            delivered_tasks=list(run.delivered_tasks),
            consumed_signals=list(run.consumed_signals))
        if status == "completed":
            events.append(("exit", {"code": exit_code}))
        elif status == "failed":
            events.append(("failed", {"error": error}))
        cp.events = events
        if status == "waiting":
            assert reason is not None
            if run.guest.resolve(reason) is not None:
                cp.status = "running"
            else:  # the database decides: it may hold an arrival this run has not seen
                cp.waiting = reason
                cp.wake_at = _utc_from_ms(wake_ms)
        fence = self.fence_of(flow_id)
        if fence is False:  # the shard went away meanwhile: the new owner takes over
            return None
        began = time.monotonic()
        try:
            written = await self._write(cp, run.consumed_signals, fence)
            if written is None:
                return None
            new_seq, cp.status = written
        except FencedError as exc:
            log.warning("flow %s: checkpoint fenced (%s); the shard's new owner continues",
                        flow_id, exc)
            await self.fenced(exc.shard, exc.epoch)
            return None
        except _RETRYABLE as exc:
            log.warning("flow %s: checkpoint not committed (%s); it continues from the last "
                        "one", flow_id, exc)
            if isinstance(exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)):
                self._again.add(flow_id)  # at once; otherwise the sweep picks it up
            return None
        except asyncpg.PostgresError as exc:
            log.error("flow %s: checkpoint refused by the database: %s", flow_id, exc)
            await self._commit_failure(run, f"cannot store the checkpoint: {exc}")
            return None
        run.committed(cap, new_seq)
        self.chunks.committed(cap.chunks.items(), began)
        self.stats["checkpoints"] += 1
        self._observe_checkpoint(cap, cp, time.monotonic() - began)
        self._after_commit(run, cp)
        return cp.status

    def _child(self, parent_id: str, item: ChildRequest) -> store.NewFlow:
        request = {"module": item.module, "args": list(item.args), "env": {}, "stdin": ""}
        return store.NewFlow(id=child_flow_id(parent_id, item.handle), module_id=item.module,
                             request=request, request_hash=request_hash(request),
                             parent_id=parent_id, parent_handle=item.handle)

    async def _fail_missing_children(self, run: FlowRun) -> None:
        """Children of modules that are not stored fail at once (docs/guest-abi.md): their
        failed outcome goes into the flow before the checkpoint that would have created them."""
        children = [i for i in run.pending_items if isinstance(i, ChildRequest)]
        if not children:
            return
        wanted = sorted({c.module for c in children})
        rows = await self.db.pool.fetch("SELECT id FROM modules WHERE id = ANY($1::text[])",
                                        wanted)
        present = {r["id"] for r in rows}
        missing = [c for c in children if c.module not in present]
        if not missing:
            return
        run.guest.deliver_outcomes({c.handle: ("failed", f"module {c.module} is not stored")
                                    for c in missing})
        run.pending_items = [i for i in run.pending_items if i not in missing]
        run.child_handles.difference_update(c.handle for c in missing)
        for c in missing:
            run.events.append(("child_failed", {"handle": c.handle, "module": c.module,
                                                "error": "module not stored"}))

    def _after_commit(self, run: FlowRun, cp: store.Checkpoint) -> None:
        for queue, n in collections.Counter(t.queue for t in cp.tasks).items():
            self.notify_queue(queue, n)
        for child in cp.children:
            self.wake(child.id)  # if it is ours; the others' owners heard pg_notify
        if cp.wake_at is not None and self._timer_kick is not None:
            self._timer_kick.set()
        if cp.status in ("completed", "failed"):
            asyncio.create_task(self.wake_parent(run.flow_id))

    async def wake_parent(self, child_id: str) -> None:
        """A finished child may end its parent's wait."""
        try:
            async with self.db.transaction() as conn:
                parent_id = await conn.fetchval("SELECT parent_id FROM flows WHERE id = $1",
                                                child_id)
                if parent_id is None:
                    return
                await store.lock_flow(conn, parent_id)
                woken = await store.wake_if_ready(conn, parent_id)
            if woken:
                await self.notify_wake(parent_id)
        except Exception:
            log.exception("waking the parent of %s", child_id)

    async def _commit_failure(self, run: FlowRun, error: str) -> str | None:
        """Fail the flow without a new snapshot (it cannot be captured)."""
        if not await self._fail_without_snapshot(run.flow_id, run.seq, error):
            return None
        asyncio.create_task(self.wake_parent(run.flow_id))
        return "failed"

    async def _fail_unloadable(self, row: dict[str, Any], error: str) -> None:
        log.warning("flow %s cannot be loaded: %s", row["id"], error)
        if await self._fail_without_snapshot(row["id"], row["checkpoint_seq"], error):
            await self.wake_parent(row["id"])

    async def _fail_without_snapshot(self, flow_id: str, seq: int, error: str) -> bool:
        """Mark the flow failed at checkpoint ``seq``, keeping its last snapshot; False if it
        moved on or is not this node's to write (the same one-statement, fenced write as every
        checkpoint)."""
        fence = self.fence_of(flow_id)
        if fence is False:
            return False
        cp = store.Checkpoint(flow_id=flow_id, expected_seq=seq, status="failed", manifest=None,
                              error=error, events=[("failed", {"error": error})])
        try:
            written = await self._write(cp, (), fence)
        except FencedError as exc:
            await self.fenced(exc.shard, exc.epoch)
            return False
        if written is not None:
            log.info("flow %s failed: %s", flow_id, error)
            if self.flow_metrics is not None:
                self.flow_metrics.flow_finished("failed")
        return written is not None

    # --- loops --------------------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        assert self._timer_kick is not None
        while self._running:
            try:
                self._timer_kick.clear()
                async with self.db.transaction() as conn:
                    due = await store.wake_due_timers(conn, self.shards())
                for flow_id in due:
                    self.wake(flow_id)
                nxt = await store.next_wake_at(self.db.pool, self.shards())
                delay = TIMER_MAX_SLEEP
                if nxt is not None:
                    delay = min(delay, max(0.0, (nxt - datetime.now(timezone.utc))
                                           .total_seconds()) + 0.002)
                try:
                    await asyncio.wait_for(self._timer_kick.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer loop")
                await asyncio.sleep(1.0)

    async def _reaper_loop(self) -> None:
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while self._running:
            try:
                await self.policies.refresh(self.db)
                await reap_expired_leases(self)
                if loop.time() - last_sweep >= SWEEP_INTERVAL:
                    last_sweep = loop.time()
                    await self.sweep()
                await asyncio.sleep(REAPER_INTERVAL)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease reaper")
                await asyncio.sleep(REAPER_INTERVAL)

    async def sweep(self) -> None:
        """Pick up flows nobody runs: runnable ones not in memory (a run dropped by a database
        error) and waiting ones whose condition is met (a wake-up lost the same way). On one
        node every such flow is this process's to run."""
        async with self.db.transaction() as conn:
            await store.wake_all_ready(conn, self.shards())
            ids = await store.runnable_flow_ids(conn, self.shards())
        for flow_id in ids:
            if flow_id not in self._active:
                self.wake(flow_id)

    # --- retention and chunk GC (app/flows/retention.py) --------------------------------------

    def configure_retention(self, config: RetentionConfig) -> None:
        """Use ``config`` from now on (the chunk cache's TTL included)."""
        self.retention = config
        self.chunks.ttl = config.chunk_ttl

    async def _retention_loop(self) -> None:
        """Every ~retention_interval a retention pass, every ~gc_interval a chunk GC pass
        (jittered, so that nodes do not run in step)."""
        loop = asyncio.get_running_loop()
        next_retention = loop.time() + jittered(self.retention.retention_interval,
                                                random.random())
        next_gc = loop.time() + jittered(self.retention.gc_interval, random.random())
        while self._running:
            await asyncio.sleep(max(0.0, min(next_retention, next_gc) - loop.time()))
            try:
                if loop.time() >= next_retention:
                    next_retention = loop.time() + jittered(self.retention.retention_interval,
                                                            random.random())
                    await self.retention_pass()
                if loop.time() >= next_gc:
                    next_gc = loop.time() + jittered(self.retention.gc_interval,
                                                     random.random())
                    await self.chunk_gc_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention / chunk GC pass")

    async def retention_pass(self) -> Deleted:
        """Delete this node's finished flows older than the retention, in batches, each
        fenced by the epochs of the shards it touches; a shard found fenced is dropped and
        the pass goes on without it."""
        total = Deleted()
        retention = self.retention.retention
        if retention <= 0:
            return total
        began = time.perf_counter()
        for _ in range(MAX_BATCHES):
            shards = self.shards()
            if shards.owned is not None and not shards.owned:
                break
            # shards.owned was taken from _owned just now: each has its epoch there
            epochs = (None if self.topology is None
                      else {s: self._owned[s] for s in shards.owned or ()})
            try:
                done = await delete_finished_batch(self.db.pool, retention,
                                                   self.retention.retention_batch, shards,
                                                   epochs)
            except FencedError as exc:
                log.warning("retention fenced (%s); the shard's new owner deletes there", exc)
                await self.fenced(exc.shard, exc.epoch)
                continue
            total.add(done)
            if done.flows == 0:
                break
        seconds = time.perf_counter() - began
        if total.flows:
            log.info("retention: deleted %d finished flows (%d events, %d signals, %d tasks) "
                     "in %.2f s", total.flows, total.events, total.signals, total.tasks,
                     seconds)
        if self.retention_metrics is not None:
            self.retention_metrics.flows.inc(total.flows)
            self.retention_metrics.seconds.observe(seconds, job="retention")
        return total

    async def chunk_gc_pass(self) -> Collected:
        """Delete unreferenced chunks untouched for the GC's grace (one node at a time)."""
        began = time.perf_counter()
        done = await collect_chunks(self.db.pool, self.retention.grace,
                                    self.retention.gc_batch)
        seconds = time.perf_counter() - began
        if done.chunks:
            log.info("chunk GC: deleted %d chunks (%d bytes) in %.2f s", done.chunks,
                     done.bytes, seconds)
        if self.retention_metrics is not None and done.ran:
            self.retention_metrics.chunks.inc(done.chunks)
            self.retention_metrics.chunk_bytes.inc(done.bytes)
            self.retention_metrics.seconds.observe(seconds, job="chunk_gc")
        return done

    # --- metrics ------------------------------------------------------------------------------

    def _setup_metrics(self) -> None:
        m = self.metrics
        if m is None:
            return
        try:
            self._m_checkpoints = m.counter("dwasm_checkpoints_total", "Checkpoints committed.")
            self._m_checkpoint_bytes = m.histogram(
                "dwasm_checkpoint_bytes", "Compressed chunk bytes written per checkpoint.",
                buckets=[1e3, 1e4, 1e5, 1e6, 1e7])
            self._m_checkpoint_seconds = m.histogram(
                "dwasm_checkpoint_capture_seconds", "Time to capture a snapshot.")
            m.gauge_callback("dwasm_flows_in_memory", "Flows loaded in this process.",
                             ["state"], lambda: [({"state": "running"}, float(len(self._active))),
                                                 ({"state": "cached"}, float(len(self._warm)))])
            self.flow_metrics = FlowMetrics(m)
            self.retention_metrics = RetentionMetrics(m)
        except Exception:  # a registry without these features: metrics are optional
            log.debug("flow metrics unavailable", exc_info=True)
            self.metrics = None
            self.flow_metrics = None
            self.retention_metrics = None
        self._start_active_count()

    def _start_active_count(self) -> None:
        """Count the active flows every few seconds while the engine runs with metrics."""
        if self._running and self.flow_metrics is not None and not any(
                t.get_name() == "dwasm-active-flows" and not t.done() for t in self._loops):
            self._loops.append(asyncio.create_task(self._active_loop(),
                                                   name="dwasm-active-flows"))

    async def _active_loop(self) -> None:
        while self._running and self.flow_metrics is not None:
            try:
                await self.flow_metrics.count_active(self.db.pool, self.shards())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the gauge keeps its last values
                log.debug("counting active flows: %r", exc)
            await asyncio.sleep(self.flow_metrics.active_interval)

    def _observe_checkpoint(self, cap: Capture, cp: store.Checkpoint, seconds: float) -> None:
        """A checkpoint was committed: its size and timings, the tasks it scheduled and the
        flow's end when it is a final one."""
        if cp.status == "failed":
            log.info("flow %s failed: %s", cp.flow_id, cp.error)
        elif cp.status == "completed":
            log.debug("flow %s completed with exit code %s", cp.flow_id, cp.exit_code)
        if self.metrics is None:
            return
        self._m_checkpoints.inc()
        self._m_checkpoint_bytes.observe(sum(len(c) for c in cap.chunks.values()))
        self._m_checkpoint_seconds.observe(cap.seconds)
        fm = self.flow_metrics
        if fm is not None:
            fm.commit_seconds.observe(seconds)
            if cp.tasks:
                fm.tasks_created([t.queue for t in cp.tasks])
            if cp.status in ("completed", "failed"):
                fm.flow_finished(cp.status)


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"`` (for logs)."""
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


def child_outcome(child: dict[str, Any]) -> tuple[str, bytes]:
    """A finished child flow as a handle outcome: succeeded with its stdout iff it exited 0,
    else failed with its stderr plus the host's reason (docs/guest-abi.md)."""
    if child["status"] == "completed" and child["exit_code"] == 0:
        return "succeeded", bytes(child["stdout"] or b"")
    extra = child["error"] or (f"exit code {child['exit_code']}"
                               if child["exit_code"] is not None else child["status"])
    stderr = bytes(child.get("stderr") or b"")
    sep = b"" if not stderr or stderr.endswith(b"\n") else b"\n"
    return "failed", stderr + sep + extra.encode()
