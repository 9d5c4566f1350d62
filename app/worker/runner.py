"""One queue's threads: a leaser that takes tasks in batches, and ``concurrency`` handler threads.

The leaser asks the service for as many tasks as there are free handler slots — never more,
since a leased task's lease clock is running while it waits — in one ``lease-batch`` request,
long-polling for ``poll_wait`` seconds when none is ready. A slot is taken when a task is
leased for it and freed when its handler returns (the outcome goes to the reporter; the handler
thread does not wait for the report). Handler threads take the leased tasks in order.

Stopping: the leaser finishes the request it is in and ends; the handler threads handle every
task already leased (started or not) and then end. Abandoning: handler threads start nothing
more; tasks leased but not started are left to their leases' expiry like the running ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING

from .client import ApiError, Cancelled
from .task import TaskContext

if TYPE_CHECKING:
    from .worker import Worker, _Registration

log = logging.getLogger("dwasm.worker")


class QueueRunner:
    """The leaser and handler threads of one queue (see the module doc)."""

    def __init__(self, worker: Worker, registration: _Registration) -> None:
        self.worker = worker
        self.registration = registration
        self.queue = registration.queue
        lock = threading.Lock()
        self._slot_free = threading.Condition(lock)   # the leaser waits on it
        self._task_ready = threading.Condition(lock)  # handler threads wait on it
        self._ready: deque[TaskContext] = deque()
        self._free = registration.concurrency
        self._leasing = True
        self.threads = [threading.Thread(target=self._lease_loop, name=f"dwasm-{self.queue}-lease",
                                         daemon=True)]
        self.threads += [threading.Thread(target=self._handler_loop,
                                          name=f"dwasm-{self.queue}-{n}", daemon=True)
                         for n in range(registration.concurrency)]
        self.handler_threads = registration.concurrency

    def wake(self) -> None:
        """Stopping or abandoning: let waiting threads look again."""
        with self._slot_free:
            self._slot_free.notify_all()
            self._task_ready.notify_all()

    # --- the leaser ---------------------------------------------------------------------------

    def _lease_loop(self) -> None:
        worker = self.worker
        # leasing outlives service restarts
        policy = dataclasses.replace(worker.retry, max_elapsed=None)
        try:
            while not worker._stopping.is_set():
                with self._slot_free:
                    while self._free == 0 and not worker._stopping.is_set():
                        self._slot_free.wait()
                    if worker._stopping.is_set():
                        break
                    free = self._free
                try:
                    tasks = worker._lease(self.queue, free, policy)
                except Cancelled:
                    break
                except ApiError as exc:  # a refusal retrying cannot fix: a bug, or bad config
                    log.error("lease on %s refused: %s", self.queue, exc,
                              extra={"event": "lease_error", "queue": self.queue})
                    if worker._stopping.wait(5.0):
                        break
                    continue
                if not tasks:
                    continue
                contexts = worker._leased(tasks)
                with self._slot_free:
                    self._free -= len(contexts)
                    self._ready.extend(contexts)
                    self._task_ready.notify(len(contexts))
        except Exception:  # never let a thread die silently
            log.exception("lease thread for %s failed", self.queue,
                          extra={"event": "thread_error", "queue": self.queue})
        finally:
            with self._slot_free:
                self._leasing = False
                self._task_ready.notify_all()

    # --- the handler threads ------------------------------------------------------------------

    def _next(self) -> TaskContext | None:
        abandon = self.worker._abandon
        with self._task_ready:
            while not self._ready and self._leasing and not abandon.is_set():
                self._task_ready.wait()
            if abandon.is_set() or not self._ready:
                return None
            return self._ready.popleft()

    def _handler_loop(self) -> None:
        loop: asyncio.AbstractEventLoop | None = None
        try:
            while True:
                context = self._next()
                if context is None:
                    break
                try:
                    if loop is None and inspect.iscoroutinefunction(self.registration.fn):
                        loop = asyncio.new_event_loop()
                    self.worker._handle(self.registration, context, loop)
                finally:
                    with self._slot_free:
                        self._free += 1
                        self._slot_free.notify()
        except Exception:  # never let a thread die silently
            log.exception("worker thread for %s failed", self.queue,
                          extra={"event": "thread_error", "queue": self.queue})
        finally:
            if loop is not None:
                loop.close()
            self.worker._handler_thread_ended()
