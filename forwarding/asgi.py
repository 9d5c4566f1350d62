"""Small ASGI helpers for answering below FastAPI: problem responses, header edits, and
capturing a downstream app's whole response."""

from __future__ import annotations

import http
import json
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:dwasm:problem:"

#: Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy sets itself.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate",
                        b"proxy-authorization", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade"})


def phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(status: int, slug: str, detail: str, **extensions: Any) -> dict[str, Any]:
    """An RFC 9457 problem object."""
    return {"type": TYPE_PREFIX + slug, "title": phrase(status), "status": status,
            "detail": detail, **extensions}


async def send_json(send: Send, status: int, body: Any, *,
                    media_type: str = "application/json",
                    headers: Iterable[tuple[str, str]] = ()) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


async def send_problem(send: Send, status: int, slug: str, detail: str, *,
                       instance: str | None = None, retry_after: float | None = None,
                       extra_headers: Iterable[tuple[str, str]] = (),
                       **extensions: Any) -> None:
    """Answers with a problem (``Retry-After`` in whole seconds when given)."""
    headers = [("retry-after", str(max(1, round(retry_after))))] if retry_after else []
    headers += list(extra_headers)
    if instance is not None:
        extensions["instance"] = instance
    await send_json(send, status, problem(status, slug, detail, **extensions),
                    media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def header_map(scope: Scope) -> dict[str, str]:
    """Request headers as lower-case name → value (the last one wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def with_body_length(scope: Scope, length: int) -> Scope:
    """A copy of ``scope`` whose headers announce a body of ``length`` bytes."""
    headers = [(k, v) for k, v in scope["headers"]
               if k.lower() not in (b"content-length", b"transfer-encoding")]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


def target_of(scope: Scope) -> str:
    """The request target as sent: raw path and query string."""
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return (path + (b"?" + query if query else b"")).decode("latin-1")


async def call_captured(app: ASGIApp, scope: Scope, receive: Receive
                        ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Runs ``app`` and returns its whole response (status, headers, body)."""
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    return status, headers, b"".join(chunks)
