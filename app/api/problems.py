"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

Handlers raise :class:`ProblemError` (a Starlette ``HTTPException``, so FastAPI passes it
through untouched) with a status, a short ``type`` slug and a ``detail`` sentence for the
client; extra keyword arguments become extension members::

    raise ProblemError(409, "flow-exists", "a different flow already has this id", flow_id=fid)

:func:`install_problem_handlers` turns everything else into problems too: plain
``HTTPException`` (unknown routes → 404, wrong method → 405), request validation errors
(→ 422 with an ``errors`` list of ``{loc, msg, type}``) and unexpected exceptions (→ 500,
logged with their traceback; the client sees no internals). Call it after adding the other
middleware, so that its catch-all is the outermost.

``type`` URIs are ``urn:dwasm:problem:<slug>``: stable identifiers for clients to compare,
not web pages. Problems without a specific meaning use ``about:blank`` as RFC 9457 says, with
the HTTP status phrase as ``title``.
"""

from __future__ import annotations

import http
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:dwasm:problem:"
_log = logging.getLogger("dwasm.api")


class Problem(BaseModel):
    """An RFC 9457 problem; extension members may follow the standard ones."""

    model_config = ConfigDict(extra="allow",
                              json_schema_extra={"additionalProperties": True})

    type: str = Field("about:blank", description="identifies the kind of problem")
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str | None = Field(None, description="what went wrong with this request")
    instance: str | None = Field(None, description="the request path")


class ValidationIssue(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int] = Field(description="where: ['body', 'args', 0], ['query', 'limit'], ...")
    msg: str
    type: str


class ValidationProblem(Problem):
    """A 422 for a request that does not match the operation's schema."""

    errors: list[ValidationIssue] = Field(default_factory=list)


def problem_type(slug: str) -> str:
    """The ``type`` URI of a dwasm-specific problem."""
    return slug if ":" in slug else TYPE_PREFIX + slug


class ProblemError(StarletteHTTPException):
    """An error response with problem details. ``slug`` names the kind (``'invalid-module'``)."""

    def __init__(self, status: int, slug: str | None = None, detail: str | None = None, *,
                 title: str | None = None, headers: dict[str, str] | None = None,
                 **extensions: Any) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.problem_type = problem_type(slug) if slug else "about:blank"
        self.title = title or _phrase(status)
        self.extensions = extensions

    def as_dict(self, instance: str | None = None) -> dict[str, Any]:
        """The problem details as a JSON object (for answers that carry several, such as a
        batch of task reports)."""
        body: dict[str, Any] = {"type": self.problem_type, "title": self.title,
                                "status": self.status_code}
        if self.detail is not None:
            body["detail"] = self.detail
        if instance is not None:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class PayloadTooLarge(ProblemError):
    """A request body or payload over its limit (413)."""

    def __init__(self, limit: int, what: str = "request body") -> None:
        super().__init__(413, "payload-too-large", f"the {what} exceeds the limit of "
                         f"{limit} bytes", limit=limit)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(status: int, *, type: str = "about:blank", title: str | None = None,
                     detail: str | None = None, instance: str | None = None,
                     headers: dict[str, str] | None = None, **extensions: Any) -> JSONResponse:
    """A ``application/problem+json`` response."""
    body: dict[str, Any] = {"type": type, "title": title or _phrase(status), "status": status}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_bytes(status: int, detail: str | None = None, *, slug: str | None = None,
                  **extensions: Any) -> bytes:
    """The body of a problem, for code that answers below FastAPI (ASGI middleware)."""
    response = problem_response(status, type=problem_type(slug) if slug else "about:blank",
                                detail=detail, **extensions)
    return bytes(response.body)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    if isinstance(exc, ProblemError):
        return problem_response(exc.status_code, type=exc.problem_type, title=exc.title,
                                detail=exc.detail, instance=request.url.path, headers=headers,
                                **exc.extensions)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if detail == _phrase(exc.status_code):
        detail = None
    if exc.status_code == 404 and detail is None:
        detail = f"no resource at {request.url.path}"
    elif exc.status_code == 405:
        if detail is None:
            detail = f"{request.method} is not allowed on {request.url.path}"
        allowed = allowed_methods(request)
        if allowed:
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return problem_response(exc.status_code, detail=detail, instance=request.url.path,
                            headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods the app serves at the request's path, for a 405's ``Allow``.

    Starlette puts only the methods of the first route that matched the path into ``Allow``; a
    path served by several routes (``GET`` and ``POST`` of one collection) needs all of them,
    as RFC 9110 asks. Each method is tried against the routes on a fresh scope.
    """
    allowed: list[str] = []
    for method in _METHODS:
        scope = {"type": "http", "method": method, "path": request.scope.get("path", ""),
                 "root_path": request.scope.get("root_path", ""), "headers": [],
                 "query_string": b"", "app": request.app}
        if any(route.matches(dict(scope))[0] is Match.FULL
               for route in getattr(request.app, "routes", ())):
            allowed.append(method)
    return allowed


def _json_loc(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": _json_loc(err.get("loc", ())), "msg": str(err.get("msg", "")),
               "type": str(err.get("type", ""))} for err in exc.errors()]
    where = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
    detail = f"the request is invalid at {where}" if where else "the request is invalid"
    if len(errors) == 1:
        detail = f"{'.'.join(str(p) for p in errors[0]['loc'])}: {errors[0]['msg']}"
    return problem_response(422, type=problem_type("validation"),
                            title="Request validation failed", detail=detail,
                            instance=request.url.path, errors=errors)


class UnexpectedErrorMiddleware:
    """Pure ASGI middleware: an exception that escaped every handler becomes a 500 problem.

    Used instead of an ``Exception`` handler because Starlette re-raises after calling that one,
    and uvicorn then drops the connection, sometimes before the client has read the answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            _log.error("unhandled error in %s %s", scope.get("method"), scope.get("path"),
                       exc_info=exc)
            if started:  # too late for a problem: the client sees a cut-off response
                raise
            response = problem_response(500, detail="an unexpected error occurred; it has "
                                        "been logged", instance=scope.get("path"))
            await response(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    """Makes every error response of ``app`` a problem."""
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(UnexpectedErrorMiddleware)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, for a route or router.

    The media type becomes ``application/problem+json`` when the document is generated
    (:func:`app.api.app.create_app` rewrites it).
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = ValidationProblem if status == 422 else Problem
        out[status] = {"model": model, "description": _phrase(status)}
    return out
