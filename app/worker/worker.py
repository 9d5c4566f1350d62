"""The worker: runs Python handlers for the tasks that flows schedule on named queues.

::

    w = Worker("http://127.0.0.1:8080")

    @w.handler("square")
    def square(payload: bytes) -> bytes:
        return str(int(payload) ** 2).encode()

    w.run()   # until SIGINT/SIGTERM

Model. Each queue gets ``concurrency`` handler threads (default 1) and one leasing thread
that leases as many tasks as there are free handler threads in one request, long-polling
while none is ready (:mod:`app.worker.runner`). A handler thread runs the handler on the
payload and hands the outcome to the reporting threads, which send outcomes that finish close
together in one request (:mod:`app.worker.reporter`); a single heartbeat thread extends the
lease of any task whose handler runs longer than ``heartbeat_fraction`` of its lease, so a
slow handler keeps its task. Threads rather than asyncio because handlers are ordinary
(blocking, often CPU-bound or library-calling) functions; an ``async def`` handler is run to
completion on its thread's own event loop. A service without the batch endpoints (404) is
served through the single-task ones, after one warning.

Outcomes. What the handler returns (bytes; ``str`` is UTF-8 encoded; None is empty) completes
the task. An exception fails the attempt with the exception's text: :class:`PermanentError`
fails the task for good (the flow sees the error at once); :class:`RetryableError` and any
other exception let the service retry it with backoff while attempts remain (the service's
queue policy decides how many). Reports are retried across connection errors and 5xx answers
for ``report_timeout`` seconds; the service answers a duplicate report like the first, so a
retried completion is never applied twice. A report the service refuses because the task
moved on (lease lost to another worker, task cancelled or already finished) is logged and
dropped — the task's fate is no longer this worker's.

Stopping. :meth:`Worker.stop` (or SIGINT/SIGTERM while :meth:`Worker.run` runs in the main
thread) stops leasing: the leasing threads finish the long-poll they are in (at most
``poll_wait`` seconds; tasks it brings are handled, not dropped), in-flight handlers run to
completion, tasks leased but not yet started are handled too, and all results are reported.
:meth:`Worker.run` returns True once all that is done. After ``stop_timeout`` seconds, or at
a second signal, the worker *abandons* what is still running (or leased and not started):
``run`` returns False at once, reports stop being retried, and the abandoned tasks' leases
expire so that the service hands them to another worker. Nothing is lost either way;
abandoning only delays those tasks by their lease timeout.

Logging goes to the ``dwasm.worker`` logger; every record about a task carries ``extra``
fields (``event``, ``task_id``, ``flow_id``, ``queue``, ``attempt``, ``duration_ms``, ...) for a
structured formatter such as :class:`app.worker.logs.JsonFormatter`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from . import task as task_module
from .client import (ApiError, Cancelled, LeasedTask, LeaseLost, PayloadTooLarge,
                     RetryPolicy, ServiceError, TaskCancelled, TaskClient, TaskFinished,
                     TaskNotFound, TaskState, Unavailable)
from .heartbeats import Heartbeats
from .reporter import Outcome, Reporter, batch_unsupported
from .runner import QueueRunner
from .task import (Handler, PermanentError, TaskContext, TaskError, check_queue, error_text,
                   to_result)

log = logging.getLogger("dwasm.worker")

DEFAULT_URL = "http://127.0.0.1:8080"
#: The service leases at most this many tasks per request.
MAX_LEASE_BATCH = 256


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass
class WorkerStats:
    """Counters since the worker started (updated under the worker's lock)."""

    leased: int = 0
    completed: int = 0
    failed: int = 0          # attempts reported as failed (retryable or not)
    dropped: int = 0         # reports the service refused: lease lost, cancelled, finished
    heartbeats: int = 0
    abandoned: int = 0       # in flight when the worker gave up waiting for them
    report_errors: int = 0   # reports that could not be delivered at all

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------
# The worker


@dataclass
class _Registration:
    queue: str
    fn: Handler
    concurrency: int


class Worker:
    """Runs registered handlers for tasks leased from a dwasm service. See the module doc.

    ``url`` defaults to ``$DWASM_URL`` or ``http://127.0.0.1:8080``, ``token`` to
    ``$DWASM_TOKEN``. ``concurrency``: handler threads per queue (a handler may override it).
    ``poll_wait``: seconds one long-poll waits for a task (bounds how long a stop takes while
    idle). ``heartbeat_fraction``: heartbeat when a handler has run this fraction of its lease
    (0 disables heartbeats); ``heartbeat_interval`` fixes the period instead.
    ``stop_timeout``: how long a stop waits for in-flight handlers before abandoning them.
    ``report_timeout``: how long a completion or failure report is retried while the service
    is unreachable. ``retry``: backoff for the HTTP retries. ``report_delay``: how long an
    outcome may wait for others (of tasks still running) to share its report request.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 concurrency: int = 1, poll_wait: float = 2.0,
                 heartbeat_fraction: float = 1 / 3, heartbeat_interval: float | None = None,
                 stop_timeout: float = 30.0, report_timeout: float = 300.0,
                 retry: RetryPolicy | None = None, name: str | None = None,
                 report_delay: float = 0.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= heartbeat_fraction < 1:
            raise ValueError("heartbeat_fraction must be in [0, 1)")
        if report_delay < 0:
            raise ValueError("report_delay must not be negative")
        self.url = url or os.environ.get("DWASM_URL") or DEFAULT_URL
        self.token = token if token is not None else (os.environ.get("DWASM_TOKEN") or None)
        self.concurrency = concurrency
        self.poll_wait = poll_wait
        self.heartbeat_fraction = heartbeat_fraction
        self.heartbeat_interval = heartbeat_interval
        self.stop_timeout = stop_timeout
        self.report_timeout = report_timeout
        self.report_delay = report_delay
        self.retry = retry or RetryPolicy()
        self.name = name or f"worker-{os.getpid()}"
        self.stats = WorkerStats()
        self._handlers: dict[str, _Registration] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight: dict[str, TaskContext] = {}  # by lease id: a task may come back
        self._heartbeats: Heartbeats | None = None
        self._reporter: Reporter | None = None
        self._runners: list[QueueRunner] = []
        self._handler_threads = 0
        self._client: TaskClient | None = None
        self._signals = 0
        # Set when the service turned out to lack the batch endpoints (an older server).
        self.single_leases = False
        self.single_reports = False

    # --- registration -----------------------------------------------------------------------

    def handler(self, queue: str, *, concurrency: int | None = None
                ) -> Callable[[Handler], Handler]:
        """Decorator: ``fn(payload: bytes) -> bytes | str | None`` handles ``queue``'s tasks."""
        def register(fn: Handler) -> Handler:
            self.add_handler(queue, fn, concurrency=concurrency)
            return fn

        return register

    def add_handler(self, queue: str, fn: Handler, *, concurrency: int | None = None) -> None:
        """Registers ``fn`` for ``queue`` (one handler per queue)."""
        check_queue(queue)
        if not callable(fn):
            raise TypeError(f"the handler of {queue!r} is not callable")
        if queue in self._handlers:
            raise ValueError(f"queue {queue!r} already has a handler")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self._threads:
            raise RuntimeError("handlers must be registered before the worker starts")
        self._handlers[queue] = _Registration(queue, fn, concurrency or self.concurrency)

    @property
    def queues(self) -> list[str]:
        return list(self._handlers)

    def configure(self, *, url: str | None = None, token: str | None = None,
                  concurrency: int | None = None) -> None:
        """Overrides settings before the worker starts (``dwasm worker --url ...``); None
        keeps the current value. ``concurrency`` applies to every queue."""
        if self._threads:
            raise RuntimeError("configure() must be called before the worker starts")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.url = url or self.url
        self.token = token if token is not None else self.token
        if concurrency is not None:
            self.concurrency = concurrency
            for registration in self._handlers.values():
                registration.concurrency = concurrency

    # --- life cycle -------------------------------------------------------------------------

    @property
    def client(self) -> TaskClient:
        if self._client is None:
            raise RuntimeError("the worker has not started")
        return self._client

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        """Starts the handler threads and returns; :meth:`stop` and :meth:`join` end them."""
        if not self._handlers:
            raise RuntimeError("no handlers registered")
        if self._threads:
            raise RuntimeError("the worker has already started")
        total = sum(r.concurrency for r in self._handlers.values())
        self._client = TaskClient(self.url, self.token, retry=self.retry,
                                  max_connections=2 * total + 4)
        self._heartbeats = Heartbeats(self)
        self._heartbeats.start()
        self._reporter = Reporter(self, delay=self.report_delay,
                                  threads=min(4, max(1, total // 4)))
        self._runners = [QueueRunner(self, r) for r in self._handlers.values()]
        self._handler_threads = sum(r.handler_threads for r in self._runners)
        for runner in self._runners:
            self._threads.extend(runner.threads)
        self._threads.extend(self._reporter.threads)  # last: they end after the handlers
        log.info("worker %s serving %s on %s", self.name, ", ".join(
            f"{r.queue} (x{r.concurrency})" for r in self._handlers.values()), self.url,
            extra={"event": "worker_started", "worker": self.name, "url": self.url,
                   "queues": self.queues})
        for thread in self._threads:
            thread.start()

    def _wake(self) -> None:
        for runner in self._runners:
            runner.wake()
        if self._reporter is not None:
            self._reporter.wake()

    def stop(self) -> None:
        """Stops leasing; in-flight tasks finish. Returns at once (see :meth:`join`)."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: %d task(s) in flight", self.name,
                     len(self._in_flight), extra={"event": "worker_stopping",
                                                  "worker": self.name,
                                                  "in_flight": len(self._in_flight)})
        self._stopping.set()
        self._wake()

    def abandon(self) -> None:
        """Stops at once: in-flight tasks are left to their leases' expiry (redelivered
        elsewhere), pending reports are given up."""
        self._stopping.set()
        self._abandon.set()
        self._wake()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the threads to end (after :meth:`stop`); True if they all did. On
        False the worker abandons what is still running. Closes the connections."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            # Short joins, so that abandon() (a second signal) cuts the wait short.
            while thread.is_alive() and not self._abandon.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                thread.join(0.1 if left is None else min(0.1, left))
        clean = not any(t.is_alive() for t in self._threads)
        if not clean:
            self.abandon()
            with self._lock:
                self.stats.abandoned += len(self._in_flight)
                abandoned = list(self._in_flight.values())
            for context in abandoned:
                self._log(logging.WARNING, "abandoned: the lease will expire and the task be "
                          "delivered again", context.task, event="task_abandoned")
        if self._heartbeats is not None:
            self._heartbeats.close()
            if clean:
                self._heartbeats.join(5)
        if clean and self._client is not None:
            self._client.close()
        log.info("worker %s stopped%s", self.name, "" if clean else " (tasks abandoned)",
                 extra={"event": "worker_stopped", "worker": self.name, "clean": clean,
                        **self.stats.snapshot()})
        return clean

    def run(self, *, install_signals: bool | None = None) -> bool:
        """Serves until stopped; True if the stop was clean (nothing abandoned).

        In the main thread (or with ``install_signals=True``) SIGINT and SIGTERM stop the
        worker gracefully, and a second one abandons in-flight tasks.
        """
        if install_signals is None:
            install_signals = threading.current_thread() is threading.main_thread()
        with self._signal_handlers(install_signals):
            self.start()
            while not self._stopping.wait(0.5):
                pass
            return self.join(self.stop_timeout)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(self.stop_timeout)

    @contextmanager
    def _signal_handlers(self, install: bool) -> Iterator[None]:
        if not install:
            yield
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            name = signal.Signals(signum).name
            if self._signals == 1:
                log.info("%s: stopping after in-flight tasks (again to abandon them)", name,
                         extra={"event": "signal", "signal": name})
                self.stop()
            else:
                log.warning("%s again: abandoning in-flight tasks", name,
                            extra={"event": "signal", "signal": name})
                self.abandon()

        previous = {sig: signal.signal(sig, on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # --- leasing ----------------------------------------------------------------------------

    def _lease(self, queue: str, count: int, policy: RetryPolicy) -> list[LeasedTask]:
        """Up to ``count`` tasks of ``queue``, long-polling ``poll_wait`` seconds for the first."""
        if not self.single_leases:
            try:
                return self.client.lease_batch(queue, min(count, MAX_LEASE_BATCH),
                                               self.poll_wait,
                                               cancel=self._stopping, retry=policy)
            except ApiError as exc:
                if not batch_unsupported(exc):
                    raise
                self._batch_unsupported("lease", exc)
        task = self.client.lease(queue, self.poll_wait, cancel=self._stopping, retry=policy)
        return [] if task is None else [task]

    def _batch_unsupported(self, what: str, exc: ApiError) -> None:
        with self._lock:
            first = not (self.single_leases or self.single_reports)
            if what == "lease":
                self.single_leases = True
            else:
                self.single_reports = True
        if first:
            log.warning("the service at %s has no batch endpoints (%s); using one request per "
                        "task", self.url, exc, extra={"event": "batch_unsupported",
                                                      "worker": self.name})

    def _leased(self, tasks: list[LeasedTask]) -> list[TaskContext]:
        """Takes charge of freshly leased tasks: counted, in flight, heartbeating."""
        contexts = [TaskContext(task) for task in tasks]
        assert self._heartbeats is not None and self._reporter is not None
        self._reporter.expect(len(contexts))
        with self._lock:
            self.stats.leased += len(contexts)
            for context in contexts:
                self._in_flight[context.task.lease_id] = context
        for context in contexts:
            self._heartbeats.add(context)
            self._log(logging.DEBUG, "task leased", context.task, event="task_leased")
        return contexts

    def _handler_thread_ended(self) -> None:
        with self._lock:
            self._handler_threads -= 1
            last = self._handler_threads == 0
        if last and self._reporter is not None:
            self._reporter.close()

    # --- running a handler ----------------------------------------------------------------------

    def _handle(self, registration: _Registration, context: TaskContext,
                loop: asyncio.AbstractEventLoop | None) -> None:
        """Runs the handler for one leased task and hands the outcome on for reporting."""
        task = context.task
        began = time.monotonic()
        result: bytes | None = None
        failure: BaseException | None = None
        token = task_module.current.set(context)
        assert self._heartbeats is not None
        try:
            value = registration.fn(task.payload)
            if inspect.isawaitable(value):
                if loop is None:
                    loop = asyncio.new_event_loop()  # an ordinary function returned a coroutine
                    try:
                        value = loop.run_until_complete(value)
                    finally:
                        loop.close()
                else:
                    value = loop.run_until_complete(value)
            result = to_result(value)
        except BaseException as exc:  # SystemExit or KeyboardInterrupt in a handler too
            failure = exc
        finally:
            task_module.current.reset(token)
            self._heartbeats.remove(context)
        duration = (time.monotonic() - began) * 1000
        if failure is None:
            assert result is not None
            outcome = Outcome(context, "complete", duration, result=result)
        else:
            outcome = self._failure(context, failure, duration)
        assert self._reporter is not None
        if self.single_reports:  # as before the batch endpoints: each thread reports its own
            self._reporter.forget()
            self._deliver_single(outcome)
        else:
            self._reporter.submit(outcome)

    @staticmethod
    def _failure(context: TaskContext, exc: BaseException, duration_ms: float) -> Outcome:
        return Outcome(context, "fail", duration_ms, error=error_text(exc),
                       retryable=not isinstance(exc, PermanentError), exc=exc)

    def _report_retry(self, deadline: float) -> RetryPolicy:
        """The worker's retry policy, bounded to end by ``deadline`` (a monotonic time)."""
        return dataclasses.replace(self.retry, max_elapsed=max(0.0, deadline - time.monotonic()))

    # --- reporting --------------------------------------------------------------------------

    def _deliver_single(self, outcome: Outcome) -> None:
        """Reports one outcome with its own request (a service without batch endpoints)."""
        if not outcome.deadline:
            outcome.deadline = time.monotonic() + self.report_timeout
        task = outcome.context.task
        try:
            if outcome.op == "complete":
                state = self.client.complete(task, outcome.result, cancel=self._abandon,
                                             retry=self._report_retry(outcome.deadline))
            else:
                state = self.client.fail(task, outcome.error, outcome.retryable,
                                         cancel=self._abandon, retry=self._report_retry(outcome.deadline))
        except ServiceError as exc:
            self._refused(outcome, exc)
        else:
            self._accepted(outcome, state)

    def _accepted(self, outcome: Outcome, state: TaskState) -> None:
        """The service took the report."""
        task = outcome.context.task
        with self._lock:
            if outcome.op == "complete":
                self.stats.completed += 1
            else:
                self.stats.failed += 1
            self._in_flight.pop(task.lease_id, None)
        if outcome.op == "complete":
            self._log(logging.INFO, "task completed", task, event="task_completed",
                      duration_ms=round(outcome.duration_ms, 2),
                      result_bytes=len(outcome.result))
            return
        exc = outcome.exc
        level = logging.ERROR if state.status == "failed" else logging.WARNING
        self._log(level, f"task attempt failed: {outcome.error}", task, event="task_failed",
                  duration_ms=round(outcome.duration_ms, 2), retryable=outcome.retryable,
                  task_status=state.status,
                  error_type=type(exc).__name__ if exc is not None else None,
                  exc_info=(exc if exc is not None and not isinstance(exc, TaskError)
                            else None))

    def _refused(self, outcome: Outcome, exc: ServiceError) -> None:
        """The report was not taken: a result over the limit becomes a permanent failure,
        anything else is dropped (the task moved on) or could not be delivered."""
        context = outcome.context
        if isinstance(exc, PayloadTooLarge) and outcome.op == "complete":
            # Nothing another attempt would change: the flow learns why.
            failure = self._failure(context, PermanentError(
                f"the result ({len(outcome.result)} bytes) is over the service's limit: "
                f"{exc.detail}"), outcome.duration_ms)
            failure.deadline = outcome.deadline
            if self.single_reports or self._reporter is None:
                self._deliver_single(failure)
            else:
                self._reporter.submit(failure, again=True)
            return
        try:
            self._report_failed(context, outcome.op, exc)
        finally:
            with self._lock:
                self._in_flight.pop(context.task.lease_id, None)

    def _log_retry(self, outcome: Outcome, error: ApiError, delay: float) -> None:
        self._log(logging.WARNING, f"{outcome.op} not applied ({error}); retrying in "
                  f"{delay:.2f} s", outcome.context.task, event="report_retry", op=outcome.op,
                  reason=error.slug)

    def _log_error(self, what: str) -> None:
        log.exception(what, extra={"event": "thread_error", "worker": self.name})

    def _report_failed(self, context: TaskContext, op: str, exc: ServiceError) -> None:
        task = context.task
        if isinstance(exc, (LeaseLost, TaskCancelled, TaskFinished, TaskNotFound)):
            with self._lock:
                self.stats.dropped += 1
            self._log(logging.WARNING, f"{op} refused, result dropped: {exc.detail}", task,
                      event="report_refused", op=op, reason=exc.slug)
            return
        with self._lock:
            self.stats.report_errors += 1
        why = ("abandoned" if isinstance(exc, Cancelled) else
               "service unavailable" if isinstance(exc, Unavailable) else "refused")
        self._log(logging.ERROR, f"{op} not delivered ({why}): {exc}; the lease will expire "
                  "and the task be delivered again", task, event="report_error", op=op)

    def _log(self, level: int, message: str, task: LeasedTask, *,
             exc_info: BaseException | None = None, **fields: Any) -> None:
        if not log.isEnabledFor(level):
            return
        extra = {"task_id": task.id, "flow_id": task.flow_id, "queue": task.queue,
                 "attempt": task.attempt, "worker": self.name, **fields}
        log.log(level, "%s [%s attempt %d]", message, task.id, task.attempt, extra=extra,
                exc_info=exc_info)
