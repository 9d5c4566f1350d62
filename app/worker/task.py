"""What a handler deals with: the exceptions that choose how a task fails, the running task's
context (:func:`current_task`), the module-level :func:`handler` marker, and the conversion of
return values and exceptions into what the service is told."""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Union

from .client import LeasedTask

QUEUE_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
#: The service refuses error texts over 64 KiB; longer ones are cut to this many bytes.
MAX_ERROR_BYTES = 60_000

HandlerResult = Union[bytes, bytearray, memoryview, str, None]
Handler = Callable[[bytes], Union[HandlerResult, Awaitable[HandlerResult]]]

# --------------------------------------------------------------------------------------------
# What handlers raise and see


class TaskError(Exception):
    """Base of the exceptions a handler raises to choose how its task fails."""


class RetryableError(TaskError):
    """This attempt failed, another may succeed (a timeout, a busy dependency): the service
    retries the task with backoff while attempts remain."""


class PermanentError(TaskError):
    """The task cannot succeed (bad input): it fails at once, and its flow gets the message."""


@dataclass
class TaskContext:
    """The task a handler is running, from :func:`current_task`.

    ``lost`` is set when the worker learns (from a refused heartbeat) that the task is no
    longer its own — the lease went to another worker or the task was cancelled; a long
    handler may check it and give up early, since its result will be refused anyway.
    """

    task: LeasedTask
    lost: threading.Event = field(default_factory=threading.Event)
    lost_reason: str = ""
    heartbeats: int = 0

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def flow_id(self) -> str:
        return self.task.flow_id

    @property
    def attempt(self) -> int:
        return self.task.attempt


current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "dwasm_current_task", default=None)


def current_task() -> TaskContext:
    """The task the calling handler runs for (its id, flow, attempt, ``lost`` event).

    Raises RuntimeError outside a handler.
    """
    context = current.get()
    if context is None:
        raise RuntimeError("current_task() is only available inside a task handler")
    return context


def handler(queue: str, *, concurrency: int | None = None) -> Callable[[Handler], Handler]:
    """Marks a module-level function as the handler of ``queue`` without creating a Worker:
    ``dwasm worker MODULE`` collects such functions into one (see :func:`collect_handlers`)."""
    check_queue(queue)

    def mark(fn: Handler) -> Handler:
        fn.__dwasm_queue__ = queue  # type: ignore[attr-defined]
        fn.__dwasm_concurrency__ = concurrency  # type: ignore[attr-defined]
        return fn

    return mark


def check_queue(queue: str) -> None:
    if not isinstance(queue, str) or not QUEUE_RE.match(queue):
        raise ValueError(f"bad queue name {queue!r}: 1 to 200 characters of [A-Za-z0-9._-]")


def to_result(value: Any) -> bytes:
    """A handler's return value as the task's result bytes."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"a handler must return bytes, str or None, not {type(value).__name__}")


def error_text(exc: BaseException) -> str:
    """What the flow sees of a failure: the message of a :class:`TaskError`, else
    ``"Type: message"``; cut to :data:`MAX_ERROR_BYTES` of UTF-8."""
    text = str(exc) if isinstance(exc, TaskError) else f"{type(exc).__name__}: {exc}"
    text = text or type(exc).__name__
    # The service refuses NUL characters and lone surrogates in an error text: escape them.
    raw = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8")
    if len(raw) > MAX_ERROR_BYTES:
        text = raw[:MAX_ERROR_BYTES].decode("utf-8", "ignore") + " ... (cut)"
    return text


def collect_handlers(namespace: dict[str, Any]) -> list[tuple[str, Handler, int | None]]:
    """The functions of a module marked with :func:`handler`: (queue, function, concurrency)."""
    found = []
    for value in namespace.values():
        queue = getattr(value, "__dwasm_queue__", None)
        if isinstance(queue, str) and callable(value):
            found.append((queue, value, getattr(value, "__dwasm_concurrency__", None)))
    return found
