"""Task operations for workers: lease (long-poll), heartbeat, complete, fail, and the reaper of
expired leases.

Delivery to workers is at least once; outcomes are recorded at most once and enter the flow
exactly once (the flow's checkpoint marks them delivered). Reports are idempotent and judged by
the lease they name:

* a task leased with lease L accepts ``complete``/``fail`` with L — also after L expired, as
  long as nobody else leased the task meanwhile (a slow worker's result is still good);
* a duplicate of an accepted report (same lease, same result or error) is answered 200 and
  changes nothing;
* anything else — a report with an older lease after the task was leased again, a report on a
  finished or cancelled task that is not such a duplicate — is a 409 conflict.

An explicit retryable failure puts the task back with the lease id marked ``L:failed``, so that
a duplicate of that ``fail`` is recognised while a later ``complete`` with L is refused.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from topology.fencing import FencedError

from ..observability.flows import flow_metrics_of
from . import store
from .errors import FlowError, task_not_found
from .guest import valid_name

MAX_LEASE_WAIT = 30.0
POLL_INTERVAL = 1.0
MAX_ERROR_BYTES = 64 << 10
REPORT_CONCURRENCY = 4  # reports of one batch in flight at once (each holds a connection)


def check_queue(queue: str) -> None:
    if not valid_name(queue):
        raise FlowError(422, "invalid-queue", "a queue name is 1 to 200 characters of "
                        "[A-Za-z0-9._-]", queue=queue)


class QueueWaiters:
    """Long-polling leases waiting per queue. :meth:`notify` wakes as many of them as tasks
    became ready (not all of them: each woken lease costs a query)."""

    def __init__(self) -> None:
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}

    def register(self, queue: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(queue, collections.deque()).append(future)
        return future

    def unregister(self, queue: str, future: asyncio.Future[None], pass_on: bool) -> None:
        """Stop waiting. ``pass_on``: the waiter leaves without a task, so a notification it
        received goes to another waiter."""
        notified = future.done() and not future.cancelled()
        waiting = self._waiting.get(queue)
        if not notified:
            future.cancel()
            if waiting is not None:
                try:
                    waiting.remove(future)
                except ValueError:
                    pass
        if waiting is not None and not waiting:
            self._waiting.pop(queue, None)
        if notified and pass_on:
            self.notify(queue, 1)

    def notify(self, queue: str, n: int = 1) -> None:
        waiting = self._waiting.get(queue)
        while waiting and n > 0:
            future = waiting.popleft()
            if not future.done():
                future.set_result(None)
                n -= 1
        if waiting is not None and not waiting:
            self._waiting.pop(queue, None)


MAX_BATCH = 256  # tasks per batch lease, reports per batch report


async def lease(engine: Any, queue: str, wait: float) -> dict[str, Any] | None:
    """Lease the next task of ``queue``, waiting up to ``wait`` seconds for one; None if none
    came."""
    tasks = await lease_many(engine, queue, wait, 1)
    return tasks[0] if tasks else None


async def lease_many(engine: Any, queue: str, wait: float,
                     max_tasks: int) -> list[dict[str, Any]]:
    """Lease up to ``max_tasks`` ready tasks of ``queue``, waiting up to ``wait`` seconds for
    the first; an empty list if none came. One query however many are leased, which is what
    lets a busy worker take a queue's backlog at a fraction of the cost per task."""
    check_queue(queue)
    max_tasks = max(1, min(max_tasks, MAX_BATCH))
    policy = engine.policies.get(queue)
    deadline = time.monotonic() + min(max(wait, 0.0), MAX_LEASE_WAIT)
    waiters: QueueWaiters = engine.waiters
    pool = engine.db.pool
    while True:
        # Registered before looking, so that a task committed meanwhile is not missed.
        future = waiters.register(queue)
        tasks: list[dict[str, Any]] = []
        leave = True
        try:
            tasks = await store.lease_tasks(pool, queue, policy.lease_timeout, max_tasks)
            remaining = deadline - time.monotonic()
            if not tasks and remaining > 0:
                try:
                    # Tasks also become ready without a notification (a retry's backoff
                    # ending, tasks left by a previous process): look every second anyway.
                    await asyncio.wait_for(asyncio.shield(future),
                                           min(remaining, POLL_INTERVAL))
                except asyncio.TimeoutError:
                    pass
                leave = False  # look again
        finally:
            # A notification received but not used (leaving without a task) goes on.
            waiters.unregister(queue, future, pass_on=leave and not tasks)
        if leave:
            metrics = flow_metrics_of(engine)
            if metrics is not None:
                metrics.tasks_handed_out(queue, tasks)
            return tasks


async def heartbeat(engine: Any, task_id: str, lease_id: str,
                    extend: float | None = None) -> dict[str, Any]:
    """Extend a live lease; returns the task with its new ``lease_until``."""
    async with engine.db.transaction() as conn:
        task = await store.get_task(conn, task_id, lock=True)
        if task is None:
            raise task_not_found(task_id)
        policy = engine.policies.get(task["queue"])
        seconds = policy.lease_timeout if extend is None else min(extend, 10 * policy.lease_timeout)
        until = await store.extend_lease(conn, task_id, lease_id, seconds)
        if until is None:
            raise _conflict(task, lease_id, "heartbeat")
        task["lease_until"] = until
        return task


async def complete(engine: Any, task_id: str, lease_id: str, result: bytes) -> dict[str, Any]:
    """Record a task's result; returns the task."""
    return await _complete(engine, task_id, lease_id, result)


async def fail(engine: Any, task_id: str, lease_id: str, error: str,
               retryable: bool) -> dict[str, Any]:
    """Record a failed attempt: retried with backoff while attempts remain and ``retryable``,
    otherwise the task fails and the flow gets the error as its outcome."""
    if len(error.encode()) > MAX_ERROR_BYTES:
        raise FlowError(413, "payload-too-large", f"the error message exceeds "
                        f"{MAX_ERROR_BYTES} bytes", limit=MAX_ERROR_BYTES)
    return await _fail(engine, task_id, lease_id, error, retryable)


def _flow_of(task_id: str) -> str:
    return task_id.rsplit("/", 1)[0]


async def _complete(engine: Any, task_id: str, lease_id: str, result: bytes) -> dict[str, Any]:
    """The hot path of a task round trip: one round trip to the database."""
    fence = engine.fence_of(_flow_of(task_id))
    if fence is False:
        async with engine.db.transaction() as conn:
            await engine.check_fence(conn, _flow_of(task_id))  # raises: not ours
    try:
        outcome, task, woken = await store.report_outcome(
            engine.db.pool, task_id, lease_id, "completed", result, None,
            ("task_completed", {"task_id": task_id, "size": len(result)}), fence or None)
    except FencedError as exc:
        await engine.fenced(exc.shard, exc.epoch)
        raise FlowError(503, "shard-moving", f"task {task_id}'s flow moved to another node; "
                        "retry shortly", headers={"Retry-After": "1"}) from None
    if task is None:
        raise task_not_found(task_id)
    if outcome == "conflict":
        raise _conflict(task, lease_id, "complete")
    if outcome == "ok":
        engine.task_finished(task["flow_id"], task["seq"], task_id, "completed", result, woken)
        metrics = flow_metrics_of(engine)
        if metrics is not None:
            metrics.task_completed(task, lease_id)
    return task


async def _fail(engine: Any, task_id: str, lease_id: str, error: str,
                retryable: bool) -> dict[str, Any]:
    woken = False
    delay: float | None = None
    async with engine.db.transaction() as conn:
        await engine.check_fence(conn, _flow_of(task_id))
        task = await store.lock_task_and_flow(conn, task_id)  # the flow first: see store
        if task is None:
            raise task_not_found(task_id)
        flow_id = task["flow_id"]
        if _is_duplicate_failure(task, lease_id, error):
            return _public(task)
        if task["status"] not in ("leased", "pending") or task["lease_id"] != lease_id:
            raise _conflict(task, lease_id, "fail")
        policy = engine.policies.get(task["queue"])
        if retryable and task["attempt"] < task["max_attempts"]:
            delay = policy.backoff(task["attempt"])
            updated = await store.retry_task(conn, task_id, error or "", delay,
                                             f"{lease_id}:failed")
            await store.add_events(conn, flow_id, [("task_retry", {
                "task_id": task_id, "attempt": task["attempt"], "error": error,
                "delay": delay})])
        else:
            why = "not retryable" if not retryable else "no attempts left"
            updated, woken = await store.finish_task(
                conn, task_id, "failed", None, error,
                ("task_failed", {"task_id": task_id, "attempt": task["attempt"],
                                 "error": error, "why": why}))
    if updated["status"] in ("completed", "failed"):
        engine.task_finished(flow_id, updated["seq"], task_id, updated["status"],
                             error.encode(), woken)
    metrics = flow_metrics_of(engine)
    if metrics is not None:
        if delay is not None:
            metrics.task_retried(task["queue"], "error", lease_id)
        else:
            metrics.task_failed(updated, "error", lease_id)
    if delay is not None:
        engine.notify_queue_later(task["queue"], delay)
    return _public(updated)


async def report_many(engine: Any, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply several reports (``{"task_id", "lease_id", "kind": "complete"|"fail", "result" |
    "error", "retryable"}``), each as if sent alone — its own transaction, its own answer:
    ``{"task_id", "status": <HTTP status>, "task": ... | "problem": ...}``. A few run at once
    (the database does the waiting), in the order given per flow is not promised."""
    limit = asyncio.Semaphore(REPORT_CONCURRENCY)

    async def one(report: dict[str, Any]) -> dict[str, Any]:
        task_id = report["task_id"]
        async with limit:
            try:
                if report["kind"] == "complete":
                    task = await complete(engine, task_id, report["lease_id"], report["result"])
                else:
                    task = await fail(engine, task_id, report["lease_id"], report["error"],
                                      report.get("retryable", True))
            except FlowError as exc:
                return {"task_id": task_id, "status": exc.status_code,
                        "problem": exc.as_dict()}
        return {"task_id": task_id, "status": 200, "task": task}

    return list(await asyncio.gather(*(one(r) for r in reports)))


def _is_duplicate_failure(task: dict[str, Any], lease_id: str, error: str) -> bool:
    """A repeat of an accepted ``fail`` (a completion's duplicates are judged in SQL,
    ``dwasm_finish_task``)."""
    if task["status"] == "failed":
        return task["lease_id"] == lease_id and task["error"] == error
    return (task["status"] == "pending" and task["lease_id"] == f"{lease_id}:failed"
            and task["error"] == error)


def _conflict(task: dict[str, Any], lease_id: str, kind: str) -> FlowError:
    status = task["status"]
    tid = task["id"]
    if status in ("completed", "failed"):
        return FlowError(409, "task-finished", f"task {tid} has already {status}; this "
                         f"{kind} changes nothing", task_id=tid, task_status=status)
    if status == "cancelled":
        return FlowError(409, "task-cancelled", f"task {tid} was cancelled (its flow ended)",
                         task_id=tid, task_status=status)
    return FlowError(409, "lease-lost", f"lease {lease_id!r} no longer holds task {tid} (it "
                     "expired and the task was leased again, or was never this task's)",
                     task_id=tid, task_status=status)


def _public(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k not in ("payload", "result")}


async def reap_expired_leases(engine: Any, limit: int = 100) -> int:
    """Leases that ran out: the task goes back to pending (with backoff) while attempts remain,
    else it fails and the flow is told. Returns how many were handled."""
    expired = await store.expired_leases(engine.db.pool, limit, engine.shards())
    handled = 0
    metrics = flow_metrics_of(engine)
    for item in expired:
        woken = False
        delay: float | None = None
        failed: dict[str, Any] | None = None
        async with engine.db.transaction() as conn:
            try:
                await engine.check_fence(conn, item["flow_id"])
            except FlowError:
                continue  # its shard moved: the new owner reaps it
            await store.lock_flow(conn, item["flow_id"])
            task = await store.lock_expired_lease(conn, item["id"])
            if task is None:  # reported or extended meanwhile
                continue
            policy = engine.policies.get(task["queue"])
            if task["attempt"] < task["max_attempts"]:
                delay = policy.backoff(task["attempt"])
                await store.retry_task(conn, task["id"], "lease expired", delay,
                                       task["lease_id"])
                await store.add_events(conn, task["flow_id"], [("task_retry", {
                    "task_id": task["id"], "attempt": task["attempt"],
                    "error": "lease expired", "delay": delay})])
            else:
                error = f"lease expired on the last of {task['max_attempts']} attempts"
                failed, woken = await store.finish_task(
                    conn, task["id"], "failed", None, error,
                    ("task_failed", {"task_id": task["id"], "attempt": task["attempt"],
                                     "error": error, "why": "lease expired"}))
        handled += 1
        if metrics is not None:
            if failed is not None:
                metrics.task_failed(failed, "lease_expired", task["lease_id"])
            else:
                metrics.task_retried(task["queue"], "lease_expired", task["lease_id"])
        if woken:
            engine.wake(task["flow_id"])
        if delay is not None:
            engine.notify_queue_later(task["queue"], delay)
    return handled
