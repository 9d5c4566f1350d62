"""Heartbeats: one thread that extends the leases of tasks whose handlers run long.

A task's first heartbeat is due ``heartbeat_fraction`` of its lease after it was leased, and
then every ``heartbeat_fraction`` of the extended lease; quick handlers never cause one, and
adding a task does not even wake the thread unless its heartbeat is due before the thread's
next planned wake-up. A refused heartbeat (lease lost, task cancelled) sets the task's
``lost`` event so that a long handler can give up early.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING

from .client import (Cancelled, LeasedTask, LeaseLost, RetryPolicy, ServiceError,
                     TaskCancelled, TaskFinished, TaskNotFound)
from .task import TaskContext

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("dwasm.worker")


class Heartbeats:
    """One thread that extends the leases of tasks whose handlers run long.

    A task's first heartbeat is due ``fraction`` of its lease after it was leased, and every
    ``fraction`` of the (extended) lease after that; quick handlers never cause one.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._due: dict[str, tuple[float, TaskContext]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._wake_at = float("inf")  # when the thread wakes next, unless notified
        self._thread = threading.Thread(target=self._loop, name="dwasm-heartbeats",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _interval(self, task: LeasedTask) -> float:
        fixed = self.worker.heartbeat_interval
        if fixed is not None:
            return fixed
        return max(0.02, task.lease_seconds() * self.worker.heartbeat_fraction)

    def add(self, context: TaskContext) -> None:
        if self.worker.heartbeat_fraction <= 0 and self.worker.heartbeat_interval is None:
            return  # heartbeats disabled
        with self._cond:
            due = context.task.received_at + self._interval(context.task)
            self._due[context.task.id] = (due, context)
            if due < self._wake_at:  # else the thread wakes in time anyway: no thread switch
                self._cond.notify_all()

    def remove(self, context: TaskContext) -> None:
        with self._cond:
            entry = self._due.get(context.task.id)
            if entry is not None and entry[1] is context:
                del self._due[context.task.id]

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    ready = [c for due, c in self._due.values() if due <= now]
                    if ready:
                        break
                    nearest = min((due for due, _ in self._due.values()), default=None)
                    self._wake_at = float("inf") if nearest is None else nearest
                    self._cond.wait(None if nearest is None else nearest - now)
                    self._wake_at = 0.0  # awake: adds need not notify
                if self._closed:
                    return
            for context in ready:
                try:
                    self._beat(context)
                except Exception:  # a bug must not end heartbeats for every other task
                    log.exception("heartbeat of %s failed", context.task.id,
                                  extra={"event": "heartbeat_error", "task_id": context.task.id})
                    with self._cond:
                        entry = self._due.get(context.task.id)
                        if entry is not None and entry[1] is context:
                            self._due[context.task.id] = (
                                time.monotonic() + self._interval(context.task), context)

    def _beat(self, context: TaskContext) -> None:
        task = context.task
        worker = self.worker
        sent = time.monotonic()
        # A heartbeat is worth retrying only while the lease may still hold.
        budget = max(0.5, task.remaining_seconds())
        policy = RetryPolicy(initial=0.05, max_delay=1.0, max_elapsed=budget)
        try:
            state = worker.client.heartbeat(task, cancel=worker._abandon, retry=policy)
        except (LeaseLost, TaskCancelled, TaskFinished, TaskNotFound) as exc:
            with self._cond:
                current = self._due.get(task.id)
                if current is None or current[1] is not context:
                    return  # the handler finished meanwhile: nothing was lost
                del self._due[task.id]
            context.lost_reason = exc.slug or str(exc)
            context.lost.set()
            worker._log(logging.WARNING, "heartbeat refused: the task is no longer ours",
                        task, event="lease_lost", reason=context.lost_reason)
            return
        except Cancelled:
            self.remove(context)
            return
        except ServiceError as exc:
            # Keep trying on the next round: the lease may still hold when the service is back.
            worker._log(logging.WARNING, f"heartbeat failed: {exc}", task,
                        event="heartbeat_error")
            next_due = time.monotonic() + self._interval(task)
        else:
            context.heartbeats += 1
            with worker._lock:
                worker.stats.heartbeats += 1
            if state.lease_deadline is not None:
                context.task = dataclasses.replace(task, lease_deadline=state.lease_deadline,
                                                   received_at=sent)
            interval = self._interval(context.task)
            next_due = sent + interval
            worker._log(logging.DEBUG, "heartbeat", task, event="heartbeat",
                        lease_deadline=str(state.lease_deadline))
        with self._cond:
            entry = self._due.get(task.id)
            if entry is not None and entry[1] is context:
                self._due[task.id] = (next_due, context)
