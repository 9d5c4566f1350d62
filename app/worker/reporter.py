"""Reports: a few threads that send the outcomes of finished handlers, many per request.

Handlers hand their outcome to :meth:`Reporter.submit` and go on to the next task at once; a
reporting thread sends what has gathered as one ``POST /v1/task-reports``. It may wait a little
(``delay``) for more outcomes while other leased tasks are still running; outcomes that finish
while requests are in flight go in the next one, so batches grow with the load by themselves.
More than one thread (``threads``) so that a report does not wait for a whole request that
went out just before it: under load that wait is most of a task's round trip.

Each report of a batch is judged alone by the service. What it answers per report is handled
exactly like the answer to a single ``complete``/``fail`` (see :class:`Worker`); a report the
service could not apply for a passing reason (a 5xx of its own: a flow moving between nodes,
an owner node out of reach) is sent again after a backoff, until its ``report_timeout`` is
spent. A whole request that fails transiently is retried by :class:`TaskClient`. A request the
service refuses as a whole (say, one report it cannot parse) is split into single reports so
that one bad report does not sink the others; a server without the batch endpoint (404) makes
the worker fall back to the single-task endpoints.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .client import (RETRY_STATUSES, ApiError, Cancelled, Report, ServiceError,
                     TaskNotFound, Unavailable)
from .task import TaskContext

if TYPE_CHECKING:
    from .worker import Worker

#: Reports per request (the service takes up to 256).
MAX_REPORTS = 64
#: Result and error bytes per request; a larger outcome goes alone. Base64 makes it 4/3 of this
#: on the wire, well under the service's request limit (which fits one maximal result).
MAX_REPORT_BYTES = 512 * 1024


@dataclass(eq=False)
class Outcome:
    """How one handler run ended, waiting to be reported."""

    context: TaskContext
    op: str                      # "complete" or "fail"
    duration_ms: float
    result: bytes = b""
    error: str = ""
    retryable: bool = True
    exc: BaseException | None = None   # what the handler raised (for the log)
    deadline: float = field(default=0.0)  # monotonic: give up retrying after this
    not_before: float = 0.0      # monotonic: a retried report waits for its backoff
    queued_at: float = 0.0
    tries: int = 0

    def report(self) -> Report:
        if self.op == "complete":
            return Report(self.context.task, "complete", self.result)
        return Report(self.context.task, "fail", error=self.error, retryable=self.retryable)

    @property
    def size(self) -> int:
        return len(self.result) + len(self.error)


def batch_unsupported(exc: ApiError) -> bool:
    """True when ``exc`` says the service has no such endpoint (an older server)."""
    return exc.status in (404, 405) and not isinstance(exc, TaskNotFound)


class Reporter:
    """The thread that delivers :class:`Outcome` s in batches (see the module doc)."""

    def __init__(self, worker: Worker, *, delay: float = 0.0, threads: int = 1,
                 max_reports: int = MAX_REPORTS, max_bytes: int = MAX_REPORT_BYTES) -> None:
        self.worker = worker
        self.delay = delay
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._pending: deque[Outcome] = deque()
        self._running = 0      # leased tasks whose outcome has not been submitted yet
        self._closed = False   # no more submissions will come
        self.threads = [threading.Thread(target=self._loop, name=f"dwasm-reports-{n}",
                                         daemon=True) for n in range(max(1, threads))]

    def expect(self, count: int) -> None:
        """``count`` tasks were leased: their outcomes will come (worth waiting for)."""
        with self._cond:
            self._running += count

    def forget(self, count: int = 1) -> None:
        """Tasks that were expected but will not be reported (abandoned before they ran)."""
        with self._cond:
            self._running -= count
            self._cond.notify()

    def submit(self, outcome: Outcome, *, again: bool = False) -> None:
        """Queues ``outcome`` for reporting; ``again`` for one already counted (a retry)."""
        outcome.queued_at = time.monotonic()
        if not again:
            outcome.deadline = outcome.queued_at + self.worker.report_timeout
        with self._cond:
            if not again:
                self._running -= 1
            self._pending.append(outcome)
            self._cond.notify()

    def close(self) -> None:
        """No more outcomes will be submitted: deliver what is pending, then end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- the thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._send(batch)
            except Exception:  # a bug must not end reporting for every other task
                self.worker._log_error("report thread error")
                for outcome in batch:
                    self.worker._refused(outcome, ServiceError("internal error"))

    def _take(self) -> list[Outcome] | None:
        """The next batch to send, once it is worth sending; None when done."""
        abandon = self.worker._abandon
        with self._cond:
            while True:
                if abandon.is_set():
                    return None  # what is left is counted as abandoned by Worker.join
                if not self._pending:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                now = time.monotonic()
                ready = [o for o in self._pending if o.not_before <= now]
                if not ready:
                    self._cond.wait(min(o.not_before for o in self._pending) - now)
                    continue
                linger_until = min(max(o.queued_at, o.not_before) for o in ready) + self.delay
                if (len(ready) < self.max_reports and self._running > 0 and not self._closed
                        and now < linger_until):
                    self._cond.wait(linger_until - now)
                    continue
                batch: list[Outcome] = []
                size = 0
                for outcome in ready:
                    if batch and (len(batch) >= self.max_reports
                                  or size + outcome.size > self.max_bytes):
                        break
                    batch.append(outcome)
                    size += outcome.size
                for outcome in batch:
                    self._pending.remove(outcome)
                return batch

    def _send(self, batch: list[Outcome]) -> None:
        worker = self.worker
        if worker.single_reports:
            for outcome in batch:
                worker._deliver_single(outcome)
            return
        deadline = min(o.deadline for o in batch)
        try:
            results = worker.client.report_batch([o.report() for o in batch],
                                                 cancel=worker._abandon,
                                                 retry=worker._report_retry(deadline))
        except ApiError as exc:
            if batch_unsupported(exc):
                worker._batch_unsupported("report", exc)
                for outcome in batch:
                    worker._deliver_single(outcome)
            elif len(batch) > 1:
                for outcome in batch:  # judged alone, one bad report sinks no other
                    self._send([outcome])
            else:
                worker._refused(batch[0], exc)
            return
        except ServiceError as exc:  # Unavailable (retries spent) or Cancelled (abandoned)
            for outcome in batch:
                worker._refused(outcome, exc)
            return
        if len(results) != len(batch):
            error = ServiceError(f"the service answered {len(results)} results to "
                                 f"{len(batch)} reports")
            for outcome in batch:
                worker._refused(outcome, error)
            return
        for outcome, result in zip(batch, results):
            if result.state is not None:
                worker._accepted(outcome, result.state)
            elif result.status in RETRY_STATUSES:
                assert result.error is not None
                self._retry_later(outcome, result.error)
            else:
                assert result.error is not None
                worker._refused(outcome, result.error)

    def _retry_later(self, outcome: Outcome, error: ApiError) -> None:
        """One report the service could not apply for now: again after a backoff."""
        outcome.tries += 1
        delay = self.worker.retry.delay(outcome.tries)
        now = time.monotonic()
        if self.worker._abandon.is_set():
            self.worker._refused(outcome, Cancelled(f"report of {outcome.context.id}: "
                                                    "cancelled"))
            return
        if now + delay > outcome.deadline:
            self.worker._refused(outcome, Unavailable(
                f"report of {outcome.context.id}: gave up after {outcome.tries} tries; "
                f"last: {error}"))
            return
        self.worker._log_retry(outcome, error, delay)
        outcome.not_before = now + delay
        self.submit(outcome, again=True)
