"""Request body limits, enforced on the raw byte stream so that a huge body is never buffered.

Two layers:

* :class:`BodyLimitMiddleware` caps every request body (``Settings.max_request_body``) before
  any handler runs.
* :func:`read_body` reads one handler's raw body with its own, usually smaller, limit (a module
  upload: ``max_module_size``).

Both answer 413 (problem ``payload-too-large``) as soon as the body is known to be too large:
from ``Content-Length`` before reading anything, or, for a chunked body, at the chunk that
crosses the limit. What remains of the body is then read and thrown away, up to a bound, and
only then is the answer sent: a server that answers and closes while the client is still
sending makes the client's TCP stack discard the answer (connection reset), so the client
would never see the 413. A body announced or streaming beyond the bound is not drained: the
answer goes out at once and the connection is closed.

Handlers that take JSON with a base64 payload check the decoded size against
``Settings.max_payload`` themselves (:func:`check_payload_size`).
"""

from __future__ import annotations

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import PROBLEM_MEDIA_TYPE, PayloadTooLarge, ProblemError, problem_bytes

MiB = 1 << 20


def drain_budget(limit: int) -> int:
    """How many bytes of an oversized body are read and discarded before answering 413."""
    return 2 * limit + 8 * MiB


def _expects_continue(headers: list[tuple[bytes, bytes]]) -> bool:
    """The client waits for ``100 Continue`` before sending the body: nothing to drain."""
    return any(name.lower() == b"expect" and value.lower() == b"100-continue"
               for name, value in headers)


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, or None when absent or not a number."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def drain(receive: Receive, already: int, budget: int) -> bool:
    """Reads and discards the rest of a request body; False if it goes past ``budget``
    bytes in total (then the caller should answer and close)."""
    total = already
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False  # the client went away
        total += len(message.get("body", b""))
        if total > budget:
            return False
        if not message.get("more_body", False):
            return True


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 for any request body over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, scope: Scope, send: Send, detail: str) -> None:
        body = problem_bytes(413, detail, slug="payload-too-large", limit=self.limit,
                             instance=scope.get("path"))
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        headers = scope.get("headers", [])
        length = declared_length(headers)
        if length is not None and length > limit:
            if length <= drain_budget(limit) and not _expects_continue(headers):
                await drain(receive, 0, drain_budget(limit))
            await self._refuse(scope, send, f"the request body ({length} bytes) exceeds the "
                                            f"limit of {limit} bytes")
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await drain(receive, received, drain_budget(limit))
                    raise PayloadTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The whole raw body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    headers = request.scope.get("headers", [])
    length = declared_length(headers)
    if length is not None and length > limit:
        if length <= drain_budget(limit) and not _expects_continue(headers):
            await drain(request.receive, 0, drain_budget(limit))
        raise ProblemError(413, "payload-too-large", f"the {what} ({length} bytes) exceeds the "
                           f"limit of {limit} bytes", limit=limit, headers={"Connection": "close"})
    chunks: list[bytes] = []
    size = 0
    while True:  # receive() rather than request.stream(): the drain needs ``more_body``
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            if more:
                await drain(request.receive, size, drain_budget(limit))
            raise PayloadTooLarge(limit, what)
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


def check_payload_size(data: bytes, limit: int, what: str = "payload") -> bytes:
    """Returns ``data`` if it fits in ``limit`` bytes, else raises the 413 problem."""
    if len(data) > limit:
        raise PayloadTooLarge(limit, what)
    return data
