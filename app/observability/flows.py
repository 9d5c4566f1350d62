"""The metrics of flows and tasks, registered in the app's registry by the engine.

Each node exports what it does, so that a sum over the nodes of a cluster is the cluster's
total: flow transitions are counted by the node that runs the flow (its shard's owner), task
schedules by the node whose checkpoint scheduled them, leases by the node that answered the
lease, reports by the node that recorded them (the flow's owner), and the active-flow gauge
covers the shards the node owns. docs/observability.md describes every metric.

Latencies come from the database's own clock where both ends are rows (the wait before a lease,
schedule to outcome), so that clock differences between nodes do not enter; the run time of a
lease (lease to report) is measured in this process, when it both leased the task and recorded
the report (always on one node).
"""

from __future__ import annotations

import collections
import threading
import time
from datetime import datetime
from typing import Any

#: Seconds to hours: tasks wait for workers and run for very different times.
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0, 900.0, 3600.0)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Seconds between two counts of the active flows (one query each, off the request path).
ACTIVE_INTERVAL = 5.0
#: Leases whose start is remembered for the run-time histogram (oldest forgotten first).
MAX_LEASES = 16384


class LeaseClock:
    """When this process handed out each lease still open (bounded; thread-safe)."""

    def __init__(self, limit: int = MAX_LEASES) -> None:
        self.limit = limit
        self._started: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def leased(self, lease_ids: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for lease_id in lease_ids:
                self._started[lease_id] = now
            while len(self._started) > self.limit:
                self._started.popitem(last=False)

    def ended(self, lease_id: str | None) -> float | None:
        """Seconds since ``lease_id`` was handed out here; None if it was not (or forgotten)."""
        if lease_id is None:
            return None
        with self._lock:
            began = self._started.pop(lease_id, None)
        return None if began is None else time.monotonic() - began

    def __len__(self) -> int:
        return len(self._started)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


class FlowMetrics:
    """Counters and histograms of flows and tasks in ``registry``
    (:class:`app.api.metrics.Registry`), and the hooks the engine and the task operations call
    where things happen."""

    def __init__(self, registry: Any) -> None:
        self.flows_started = registry.counter(
            "dwasm_flows_started_total",
            "Flows whose first run began on this node (the owner of their shard).")
        self.flows_finished = registry.counter(
            "dwasm_flows_finished_total",
            "Flows that ended on this node, by final status (completed: the program exited, "
            "whatever its exit code; failed: it trapped or could not run; cancelled).",
            ["status"])
        self.tasks_scheduled = registry.counter(
            "dwasm_tasks_scheduled_total", "Tasks created by checkpoints this node committed.",
            ["queue"])
        self.tasks_leased = registry.counter(
            "dwasm_tasks_leased_total", "Task leases handed out by this node (every attempt).",
            ["queue"])
        self.tasks_completed = registry.counter(
            "dwasm_tasks_completed_total", "Task completions recorded by this node.", ["queue"])
        self.tasks_retried = registry.counter(
            "dwasm_tasks_retried_total",
            "Failed attempts put back for another one (reason: error reported by a worker, or "
            "lease_expired).", ["queue", "reason"])
        self.tasks_failed = registry.counter(
            "dwasm_tasks_failed_total",
            "Tasks that failed for good (reason: error reported by a worker, not retryable or "
            "on the last attempt; or lease_expired on the last attempt).", ["queue", "reason"])
        self.queue_wait = registry.histogram(
            "dwasm_task_queue_wait_seconds",
            "From when a task became leasable (scheduled, or its retry backoff ended) to its "
            "lease.", ["queue"], buckets=TASK_BUCKETS)
        self.run_time = registry.histogram(
            "dwasm_task_run_seconds",
            "From a lease to the worker's report (complete or fail) of that attempt, when this "
            "node handed out the lease.", ["queue"], buckets=TASK_BUCKETS)
        self.turnaround = registry.histogram(
            "dwasm_task_turnaround_seconds",
            "From a task's creation to its final outcome, retries included.",
            ["queue", "status"], buckets=TASK_BUCKETS)
        self.commit_seconds = registry.histogram(
            "dwasm_checkpoint_commit_seconds",
            "Time to write one checkpoint to the database (one statement).",
            buckets=COMMIT_BUCKETS)
        self.active_interval = ACTIVE_INTERVAL
        self._active: list[tuple[dict[str, str], float]] = []
        registry.gauge_callback(
            "dwasm_flows_active",
            f"Flows running or waiting in the shards this node owns (counted every "
            f"{ACTIVE_INTERVAL:g} s).", ["status"], lambda: self._active)
        self.leases = LeaseClock()

    # --- flows --------------------------------------------------------------------------------

    def flow_started(self) -> None:
        self.flows_started.inc()

    def flow_finished(self, status: str) -> None:
        self.flows_finished.inc(status=status)

    async def count_active(self, conn: Any, shards: Any) -> None:
        """Refresh ``dwasm_flows_active`` (``shards``: a :class:`app.flows.store.Shards`)."""
        cond, args = shards.sql("shard", 1)
        rows = await conn.fetch(
            f"""SELECT status, count(*) AS n FROM flows
                WHERE status IN ('running', 'waiting') AND {cond} GROUP BY status""", *args)
        counts = {"running": 0, "waiting": 0}
        counts.update({r["status"]: r["n"] for r in rows})
        self._active = [({"status": s}, float(n)) for s, n in sorted(counts.items())]

    # --- tasks --------------------------------------------------------------------------------

    def tasks_created(self, queues: list[str]) -> None:
        for queue, n in collections.Counter(queues).items():
            self.tasks_scheduled.inc(n, queue=queue)

    def tasks_handed_out(self, queue: str, rows: list[dict[str, Any]]) -> None:
        """``rows``: leased tasks with ``lease_id`` and ``waited`` (seconds leasable before)."""
        if not rows:
            return
        self.tasks_leased.inc(len(rows), queue=queue)
        for row in rows:
            waited = row.get("waited")
            if waited is not None:
                self.queue_wait.observe(max(0.0, float(waited)), queue=queue)
        self.leases.leased([row["lease_id"] for row in rows])

    def _ran(self, queue: str, lease_id: str | None) -> None:
        seconds = self.leases.ended(lease_id)
        if seconds is not None:
            self.run_time.observe(seconds, queue=queue)

    def task_completed(self, task: dict[str, Any], lease_id: str) -> None:
        """``task``: the row as recorded (``queue``, ``created_at``, ``updated_at``)."""
        queue = task["queue"]
        self.tasks_completed.inc(queue=queue)
        self._ran(queue, lease_id)
        seconds = _seconds(task.get("created_at"), task.get("updated_at"))
        if seconds is not None:
            self.turnaround.observe(seconds, queue=queue, status="completed")

    def task_retried(self, queue: str, reason: str, lease_id: str | None) -> None:
        """A failed attempt goes back to the queue (``reason``: error, lease_expired)."""
        self.tasks_retried.inc(queue=queue, reason=reason)
        if reason == "error":
            self._ran(queue, lease_id)
        else:
            self.leases.ended(lease_id)

    def task_failed(self, task: dict[str, Any], reason: str, lease_id: str | None) -> None:
        """A task failed for good (``task``: the row as recorded)."""
        queue = task["queue"]
        self.tasks_failed.inc(queue=queue, reason=reason)
        if reason == "error":
            self._ran(queue, lease_id)
        else:
            self.leases.ended(lease_id)
        seconds = _seconds(task.get("created_at"), task.get("updated_at"))
        if seconds is not None:
            self.turnaround.observe(seconds, queue=queue, status="failed")


def flow_metrics_of(engine: Any) -> FlowMetrics | None:
    """The engine's :class:`FlowMetrics`, if it has a registry."""
    return getattr(engine, "flow_metrics", None)
