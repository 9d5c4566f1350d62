"""A small typed HTTP client for the workers' endpoints of the dwasm API.

It speaks exactly four operations — lease (long-poll), heartbeat, complete, fail — plus a read
of a task's state, and hides the wire format (base64 payloads, RFC 9457 problems) behind
dataclasses and exceptions::

    with TaskClient("http://127.0.0.1:8080") as client:
        task = client.lease("square", wait=10)          # None if no task came
        if task is not None:
            client.complete(task, str(int(task.payload) ** 2).encode())

Transient trouble is retried here, so that callers only see outcomes: connection errors,
timeouts and the statuses in :data:`RETRY_STATUSES` are retried with exponential backoff (with
jitter), waiting at least as long as a ``Retry-After`` header asks. Retrying a report is safe
because the service answers a duplicate ``complete``/``fail``/``heartbeat`` like the original;
retrying a lease whose answer was lost at worst leaves one task leased to nobody until its
lease expires (delivery is at least once). A caller can cut the retrying short with a
``threading.Event`` (``cancel=``), which is how a stopping worker leaves promptly.

Answers that retrying cannot fix raise :class:`ApiError`; the ones a worker must tell apart have
subclasses (:class:`LeaseLost`, :class:`TaskFinished`, :class:`TaskCancelled`,
:class:`TaskNotFound`, :class:`PayloadTooLarge`).
"""

from __future__ import annotations

import base64
import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

PROBLEM_PREFIX = "urn:dwasm:problem:"
#: Answers worth another try: the service is overloaded, restarting or not ready yet.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The service caps long-polls at this many seconds (``app.flows.tasks.MAX_LEASE_WAIT``).
MAX_LEASE_WAIT = 30.0

log = logging.getLogger("dwasm.worker.client")


# --------------------------------------------------------------------------------------------
# Errors


class ServiceError(Exception):
    """A request to the dwasm service did not succeed."""


class Cancelled(ServiceError):
    """The caller's cancel event was set while the request was being retried."""


class Unavailable(ServiceError):
    """The service could not be reached (or kept failing) for the whole retry budget."""

    def __init__(self, message: str, last: BaseException | None = None) -> None:
        super().__init__(message)
        self.last = last


class ApiError(ServiceError):
    """The service refused a request with a problem answer that retrying would not change.

    ``slug`` is the end of the problem's ``type`` (``"lease-lost"``), or ``""`` for
    ``about:blank``; ``problem`` is the whole problem object.
    """

    def __init__(self, status: int, slug: str, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {slug or 'error'}: {detail}")
        self.status = status
        self.slug = slug
        self.detail = detail
        self.problem = problem


class TaskNotFound(ApiError):
    """404: no such task (a wrong id, or a task of a deleted flow)."""


class LeaseLost(ApiError):
    """409: the lease expired and someone else leased the task; this worker's report is void."""


class TaskFinished(ApiError):
    """409: the task already completed or failed with a different report."""


class TaskCancelled(ApiError):
    """409: the task's flow was cancelled or ended; nobody needs the result any more."""


class PayloadTooLarge(ApiError):
    """413: a result (or error text) over the service's payload limit."""


_BY_SLUG: dict[str, type[ApiError]] = {
    "task-not-found": TaskNotFound, "lease-lost": LeaseLost, "task-finished": TaskFinished,
    "task-cancelled": TaskCancelled, "payload-too-large": PayloadTooLarge,
}


def api_error(response: httpx.Response) -> ApiError:
    """The exception for an error answer, parsed from its problem body when it has one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    return problem_error(response.status_code, problem,
                         response.text[:500] or response.reason_phrase)


def problem_error(status: int, problem: dict[str, Any], fallback: str = "") -> ApiError:
    """The exception for a problem object (an error answer's body, or one result of a batch)."""
    kind = str(problem.get("type", ""))
    slug = kind[len(PROBLEM_PREFIX):] if kind.startswith(PROBLEM_PREFIX) else ""
    detail = str(problem.get("detail") or problem.get("title") or fallback)
    cls = _BY_SLUG.get(slug)
    if cls is None:
        cls = PayloadTooLarge if status == 413 else ApiError
    return cls(status, slug, detail, problem)


# --------------------------------------------------------------------------------------------
# Data


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class LeasedTask:
    """A task this worker holds until ``lease_deadline`` (extend it with a heartbeat).

    ``received_at`` is this machine's ``time.monotonic()`` when the lease arrived; with
    ``lease_deadline`` it gives the lease's length without trusting the two clocks to agree
    to the millisecond (see :meth:`lease_seconds`).
    """

    id: str
    flow_id: str
    queue: str
    payload: bytes
    attempt: int
    max_attempts: int
    lease_id: str
    lease_deadline: datetime
    received_at: float = field(default_factory=time.monotonic, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> LeasedTask:
        deadline = _parse_time(body["lease_deadline"])
        assert deadline is not None
        return cls(id=body["id"], flow_id=body["flow_id"], queue=body["queue"],
                   payload=base64.b64decode(body["payload"]), attempt=body["attempt"],
                   max_attempts=body["max_attempts"], lease_id=body["lease_id"],
                   lease_deadline=deadline)

    def lease_seconds(self, default: float = 30.0) -> float:
        """How long the lease lasted when it arrived, by this machine's clock; ``default``
        when the clocks disagree so much that the figure is meaningless."""
        seconds = (self.lease_deadline - datetime.now(timezone.utc)).total_seconds()
        seconds += time.monotonic() - self.received_at
        return seconds if 0.05 <= seconds <= 86400 else default

    def remaining_seconds(self) -> float:
        """Seconds until the lease runs out, by this machine's clock (negative: it has)."""
        return (self.lease_deadline - datetime.now(timezone.utc)).total_seconds()


@dataclass(frozen=True)
class TaskState:
    """A task as the service reports it (the answer to heartbeat, complete, fail and get)."""

    id: str
    flow_id: str
    queue: str
    status: str  # pending, leased, completed, failed or cancelled
    attempt: int
    max_attempts: int
    visible_at: datetime | None
    lease_deadline: datetime | None
    error: str | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TaskState:
        return cls(id=body["id"], flow_id=body["flow_id"], queue=body["queue"],
                   status=body["status"], attempt=body["attempt"],
                   max_attempts=body["max_attempts"],
                   visible_at=_parse_time(body.get("visible_at")),
                   lease_deadline=_parse_time(body.get("lease_deadline")),
                   error=body.get("error"), created_at=_parse_time(body.get("created_at")),
                   updated_at=_parse_time(body.get("updated_at")))


@dataclass(frozen=True)
class Report:
    """One outcome for :meth:`TaskClient.report_batch`: ``complete`` with ``result``, or
    ``fail`` with ``error`` (retried by the service while ``retryable``)."""

    task: LeasedTask
    outcome: str  # "complete" or "fail"
    result: bytes = b""
    error: str | None = None
    retryable: bool = True

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"task_id": self.task.id, "lease_id": self.task.lease_id,
                                "outcome": self.outcome}
        if self.outcome == "complete":
            body["result"] = base64.b64encode(self.result).decode("ascii")
        else:
            body["error"] = self.error or ""
            body["retryable"] = self.retryable
        return body


@dataclass(frozen=True)
class ReportResult:
    """The service's answer to one report of a batch: ``state`` when accepted (also for a
    duplicate), else ``error``, the exception the single request would have raised."""

    task_id: str
    status: int
    state: TaskState | None = None
    error: ApiError | None = None


# --------------------------------------------------------------------------------------------
# Retries


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient failures: ``initial`` seconds, times ``factor`` per try, at most
    ``max_delay``, each delay jittered down by up to ``jitter`` (a fraction) so that many
    workers do not hammer a restarting service in step. ``max_elapsed`` bounds the whole
    retrying (None: until it works or the caller cancels)."""

    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.2
    max_elapsed: float | None = 60.0

    def delay(self, tries: int) -> float:
        """Seconds to wait after the ``tries``-th failed try (1-based)."""
        base = min(self.max_delay, self.initial * self.factor ** max(0, tries - 1))
        return base * (1 - self.jitter * random.random())


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delay-seconds or an HTTP date; None if
    absent or unreadable. Fractions are accepted (not standard, but harmless)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


# --------------------------------------------------------------------------------------------
# The client


class TaskClient:
    """Typed calls to the task endpoints over one thread-safe ``httpx.Client``.

    ``token`` is sent as ``Authorization: Bearer <token>``. ``max_connections`` should cover
    the threads that long-poll at the same time (each holds a connection while it waits).
    """

    def __init__(self, url: str, token: str | None = None, *,
                 retry: RetryPolicy | None = None, timeout: float = 30.0,
                 max_connections: int = 20, http: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        headers = {"User-Agent": "dwasm-worker/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._own_http = http is None
        self.http = http or httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections))

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- operations -------------------------------------------------------------------------

    def lease(self, queue: str, wait: float = 0.0, *, cancel: threading.Event | None = None,
              retry: RetryPolicy | None = None) -> LeasedTask | None:
        """The next task of ``queue``, waiting up to ``wait`` seconds (at most 30) for one to
        become ready; None if none did."""
        wait = min(max(wait, 0.0), MAX_LEASE_WAIT)
        response = self._request("POST", f"/v1/queues/{queue}/lease", {"wait": wait},
                                 timeout=wait + self.timeout, cancel=cancel, retry=retry)
        if response.status_code == 204:
            return None
        return LeasedTask.from_json(response.json())

    def lease_batch(self, queue: str, max_tasks: int = 16, wait: float = 0.0, *,
                    cancel: threading.Event | None = None,
                    retry: RetryPolicy | None = None) -> list[LeasedTask]:
        """Up to ``max_tasks`` ready tasks of ``queue`` in one request, waiting up to ``wait``
        seconds for the first; an empty list if none became ready."""
        wait = min(max(wait, 0.0), MAX_LEASE_WAIT)
        response = self._request("POST", f"/v1/queues/{queue}/lease-batch",
                                 {"wait": wait, "max_tasks": max_tasks},
                                 timeout=wait + self.timeout, cancel=cancel, retry=retry)
        return [LeasedTask.from_json(t) for t in response.json()["tasks"]]

    def report_batch(self, reports: list[Report], *, cancel: threading.Event | None = None,
                     retry: RetryPolicy | None = None) -> list[ReportResult]:
        """Several completions and failures in one request; one result per report, in order.
        Safe to retry as a whole: the service answers a repeated report like the first."""
        if not reports:
            return []
        response = self._request("POST", "/v1/task-reports",
                                 {"reports": [r.to_json() for r in reports]}, cancel=cancel,
                                 retry=retry)
        out = []
        for item in response.json()["results"]:
            if item["status"] < 300 and item.get("task") is not None:
                out.append(ReportResult(item["task_id"], item["status"],
                                        state=TaskState.from_json(item["task"])))
            else:
                out.append(ReportResult(item["task_id"], item["status"],
                                        error=problem_error(item["status"],
                                                            item.get("problem") or {})))
        return out

    def heartbeat(self, task: LeasedTask, extend_seconds: float | None = None, *,
                  cancel: threading.Event | None = None,
                  retry: RetryPolicy | None = None) -> TaskState:
        """Extends the lease (by the queue's lease timeout unless ``extend_seconds``)."""
        body: dict[str, Any] = {"lease_id": task.lease_id}
        if extend_seconds is not None:
            body["extend_seconds"] = extend_seconds
        return self._task_call(task.id, "heartbeat", body, cancel, retry)

    def complete(self, task: LeasedTask, result: bytes, *,
                 cancel: threading.Event | None = None,
                 retry: RetryPolicy | None = None) -> TaskState:
        """Reports the task's result. A repeat of an accepted completion is answered alike."""
        body = {"lease_id": task.lease_id, "result": base64.b64encode(result).decode("ascii")}
        return self._task_call(task.id, "complete", body, cancel, retry)

    def fail(self, task: LeasedTask, error: str, retryable: bool = True, *,
             cancel: threading.Event | None = None,
             retry: RetryPolicy | None = None) -> TaskState:
        """Reports a failed attempt: retried by the service (with backoff) while ``retryable``
        and attempts remain; otherwise the flow receives ``error`` as the task's outcome."""
        body = {"lease_id": task.lease_id, "error": error, "retryable": retryable}
        return self._task_call(task.id, "fail", body, cancel, retry)

    def get(self, task_id: str, *, cancel: threading.Event | None = None) -> TaskState:
        """The task's current state."""
        response = self._request("GET", f"/v1/tasks/{task_id}", None, cancel=cancel)
        return TaskState.from_json(response.json())

    # --- plumbing ---------------------------------------------------------------------------

    def _task_call(self, task_id: str, op: str, body: dict[str, Any],
                   cancel: threading.Event | None, retry: RetryPolicy | None) -> TaskState:
        response = self._request("POST", f"/v1/tasks/{task_id}/{op}", body, cancel=cancel,
                                 retry=retry)
        return TaskState.from_json(response.json())

    def _request(self, method: str, path: str, body: dict[str, Any] | None, *,
                 timeout: float | None = None, cancel: threading.Event | None = None,
                 retry: RetryPolicy | None = None) -> httpx.Response:
        """Sends the request, retrying transient failures; a 2xx answer or an exception."""
        policy = retry or self.retry
        began = time.monotonic()
        tries = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{method} {path}: cancelled")
            tries += 1
            wait_at_least = 0.0
            try:
                response = self.http.request(method, path, json=body,
                                             timeout=timeout or self.timeout)
            except httpx.TransportError as exc:  # connect/read errors, timeouts, resets
                failure: BaseException | str = exc
                what = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES:
                    raise api_error(response)
                failure = str(api_error(response))
                what = failure
                wait_at_least = parse_retry_after(response.headers.get("Retry-After")) or 0.0
            delay = max(policy.delay(tries), wait_at_least)
            elapsed = time.monotonic() - began
            if policy.max_elapsed is not None and elapsed + delay > policy.max_elapsed:
                raise Unavailable(f"{method} {path}: gave up after {tries} tries in "
                                  f"{elapsed:.1f} s; last: {what}",
                                  failure if isinstance(failure, BaseException) else None)
            log.warning("%s %s failed (%s); retrying in %.2f s", method, path, what, delay,
                        extra={"event": "http_retry", "method": method, "path": path,
                               "try": tries, "delay": round(delay, 3)})
            if cancel is not None:
                if cancel.wait(delay):
                    raise Cancelled(f"{method} {path}: cancelled")
            else:
                time.sleep(delay)
