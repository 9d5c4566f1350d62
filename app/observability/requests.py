"""``RequestContextMiddleware``: a request id for every HTTP request, the log context of its
handling, and one access log line when it is answered.

The id is the client's ``X-Request-Id`` when that is valid (:func:`.logs.valid_request_id`),
else a new one; the response carries it back in ``X-Request-Id``. The request's own headers
are made to carry that id (the client's value replaced or the header added), so that what is
inside sees it too: a request forwarded to the flow's owner carries it there with the client's
other headers (:mod:`forwarding.proxy`), and the lines of both nodes share it.

The access line (logger ``dwasm.access``, level INFO) has ``method``, ``path``, ``route`` (the
path template, when the app routed the request here), ``status`` (null when the client left
before an answer), ``duration_ms`` and, when they apply, ``served_by`` (the node that answered,
if another) and ``forwarded_by`` (the peer the request's forwarding headers name; the answer is
a 403 when they do not verify, so a client posing as a peer shows up too).

It is the outermost middleware: it sees the final status of every response (500s included) and
its context covers everything inside, the forwarding layer and the error handler too.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forwarding.routes import classify

from .logs import FLOW_ID, NODE, REQUEST_ID, request_id_or_new

HEADER = b"x-request-id"
_SERVED_BY = b"x-dwasm-served-by"
_FORWARDED_BY = b"x-dwasm-forwarded-by"
access_log = logging.getLogger("dwasm.access")
#: Scope key of a dict shared by every copy of a request's scope (copies are shallow).
SHARED = "dwasm.request"


def route_template(scope: Scope) -> str | None:
    """The path template of the route that served the request (``/v1/flows/{flow_id}``), or
    None when no route matched it.

    The router records its route in the scope it was given. Middleware that passes a copy on
    (the forwarding layer does, for a body it read) leaves the outer scope without it; then
    :class:`RouteRecorder`, innermost, has put it into the dict all copies share."""
    route = scope.get("route")
    if route is None:
        route = scope.get(SHARED, {}).get("route")
    return getattr(route, "path", None)


class RouteRecorder:
    """Innermost middleware: hands the route the router matched to the outer middleware (see
    :func:`route_template`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            shared = scope.get(SHARED)
            if shared is not None and "route" in scope:
                shared["route"] = scope["route"]


def request_id_of(headers: list[tuple[bytes, bytes]]) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The request id to use for a request with these (ASGI) headers, and the headers that
    carry exactly it (``headers`` itself when they already do)."""
    given = [value for key, value in headers if key.lower() == HEADER]
    if len(given) == 1:
        request_id = request_id_or_new(given[0].decode("latin-1"))
        if request_id.encode("latin-1") == given[0]:
            return request_id, headers
    else:
        request_id = request_id_or_new(None)
    return request_id, [*((k, v) for k, v in headers if k.lower() != HEADER),
                        (HEADER, request_id.encode("latin-1"))]


class RequestContextMiddleware:
    """See the module docstring. The node id comes from ``app.state.node_id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        request_id, scope["headers"] = request_id_of(scope["headers"])
        encoded = request_id.encode("latin-1")
        state = getattr(scope.get("app"), "state", None)
        scope[SHARED] = {}
        tokens = [(REQUEST_ID, REQUEST_ID.set(request_id)),
                  (FLOW_ID, FLOW_ID.set(classify(scope["method"], scope["path"]).flow_id)),
                  (NODE, NODE.set(getattr(state, "node_id", None)))]
        status: int | None = None
        served_by: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, served_by
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = []
                for key, value in message.get("headers", []):
                    lower = key.lower()
                    if lower == HEADER:
                        continue  # a relayed owner's answer has it already: once is enough
                    if lower == _SERVED_BY:
                        served_by = value.decode("latin-1")
                    headers.append((key, value))
                headers.append((HEADER, encoded))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if status is None:
                status = 500  # what the server answers for an exception
            raise
        finally:
            if access_log.isEnabledFor(logging.INFO):
                self._log(scope, status, time.perf_counter() - began, served_by, state)
            for var, token in reversed(tokens):
                var.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int | None, seconds: float, served_by: str | None,
             state: Any) -> None:
        method, path = scope["method"], scope["path"]
        millis = round(seconds * 1000, 2)
        fields: dict[str, Any] = {"method": method, "path": path,
                                  "route": route_template(scope),
                                  "status": status, "duration_ms": millis}
        if served_by is not None and served_by != getattr(state, "node_id", None):
            fields["served_by"] = served_by
        for key, value in scope["headers"]:
            if key.lower() == _FORWARDED_BY:
                fields["forwarded_by"] = value.decode("latin-1")
        access_log.info("%s %s %s %.1f ms", method, path, "-" if status is None else status,
                        millis, extra=fields)
