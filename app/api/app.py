"""The FastAPI application: :func:`create_app` assembles routers, errors, limits and metrics.

Extension points (for the flow engine and its routers)::

    app = create_app(settings, db,
                     routers=[flows.router, tasks.router],      # included after the core ones
                     engine_factory=make_engine,                # (db, settings) -> engine
                     lifespan_hooks=[timer_loop])               # (app) -> async context manager

Start-up order (the lifespan): connect the database (unless ``db`` was given: then the caller
owns it and closes it), apply pending migrations (``settings.migrate_on_start``), set
``app.state.db``, start the event-loop lag monitor (:mod:`app.observability.loop_lag`), build
the engine with ``engine_factory(db, settings)`` into ``app.state.engine``, take this node's id
(``app.state.node_id``: the engine's topology's, for the logs and ``dwasm_build_info``) and
await the engine's ``start()`` if it has one, then enter each lifespan hook in order.
Shut-down runs the same in reverse: hooks exit, ``await engine.stop()``, the monitor stops,
the pool closes. A hook may register readiness checks in ``app.state.ready_checks[name]`` and
metrics in ``app.state.metrics``; routers reach all of these through :mod:`app.api.deps`.

Conventions every router follows: ``tags=[<resource>]`` on the router and ``name=<verb>`` on
each route, giving operationIds ``<tag>_<verb>`` (:func:`operation_id`); errors are raised as
:class:`~app.api.problems.ProblemError` and declared with
:func:`~app.api.problems.problem_responses` so the OpenAPI document lists them as
``application/problem+json``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forwarding.middleware import ForwardingMiddleware

from ..db import Database, migrate
from ..observability.logs import NODE, node_id_for
from ..observability.loop_lag import loop_lag_monitor
from ..observability.requests import RequestContextMiddleware, RouteRecorder, route_template
from .auth import AuthConfigError, AuthMiddleware, parse_tokens
from .limits import BodyLimitMiddleware
from .metrics import Registry
from .problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from .routers import CORE_ROUTERS
from .settings import Settings, SettingsError

EngineFactory = Callable[[Database, Settings], Any]
LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[Any]]

API_VERSION = "0.1.0"
CORE_TAGS: list[dict[str, str]] = [
    {"name": "ops", "description": "Liveness, readiness and Prometheus metrics."},
    {"name": "modules", "description": "WebAssembly modules, content-addressed by SHA-256."},
]


def operation_id(route: APIRoute) -> str:
    """``<first tag>_<route name>``: stable names for generated clients (``modules_upload``)."""
    name = re.sub(r"\W+", "_", route.name).strip("_")
    if not route.tags:
        return name
    tag = re.sub(r"\W+", "_", str(getattr(route.tags[0], "value", route.tags[0]))).strip("_")
    return name if name.startswith(f"{tag}_") else f"{tag}_{name}"


class MetricsMiddleware:
    """Counts requests and their latency by method, route template and status."""

    def __init__(self, app: ASGIApp, registry: Registry) -> None:
        self.app = app
        self.requests = registry.counter(
            "dwasm_http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
        self.latency = registry.histogram(
            "dwasm_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["method", "route"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = route_template(scope) or "unmatched"
            method = scope.get("method", "")
            self.requests.inc(method=method, route=template, status=str(status))
            self.latency.observe(time.perf_counter() - began, method=method, route=template)


def _identify_node(app: FastAPI, engine: Any) -> None:
    """This node's id (the engine's topology's, when it has one) for the log lines of the app
    and of the work started from its lifespan, and ``dwasm_build_info``."""
    node = getattr(getattr(engine, "topology", None), "node_id", None) or app.state.node_id
    app.state.node_id = node
    NODE.set(node)  # the lifespan's task: the engine's loops started from here inherit it
    app.state.metrics.gauge(
        "dwasm_build_info", "Always 1: the version of dwasm this node runs, and its id.",
        ["version", "node"]).set(1, version=dwasm_version(), node=node)


def dwasm_version() -> str:
    """The installed package's version (the API's when dwasm is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dwasm")
    except PackageNotFoundError:
        return API_VERSION


def _problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses (4xx/5xx) are ``application/problem+json``, not ``application/json``."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if str(status)[:1] in "45" and content and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return schema


def create_app(settings: Settings, db: Database | None = None, *,
               routers: Sequence[APIRouter] = (),
               engine_factory: EngineFactory | None = None,
               lifespan_hooks: Sequence[LifespanHook] = (),
               tags: Sequence[dict[str, str]] = ()) -> FastAPI:
    """The dwasm API app. See the module docstring for the extension points and start-up order.

    Without ``db``, the lifespan connects to ``settings.database_url`` (which must be set).
    ``tags``: OpenAPI tag descriptions for the extra routers' tags.
    """
    if db is None and not settings.database_url:
        raise ValueError("create_app needs a Database or settings.database_url")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = db
        if database is None:
            assert settings.database_url is not None
            database = await Database.connect(settings.database_url, settings.db_pool_min,
                                              settings.db_pool_max,
                                              timeout=settings.db_connect_timeout)
        try:
            if settings.migrate_on_start:
                await migrate(database)
            app.state.db = database
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(loop_lag_monitor(app.state.metrics))
                engine = engine_factory(database, settings) if engine_factory else None
                app.state.engine = engine
                _identify_node(app, engine)
                if engine is not None:
                    if callable(getattr(engine, "start", None)):
                        await engine.start()
                    if callable(getattr(engine, "stop", None)):
                        stack.push_async_callback(engine.stop)
                for hook in lifespan_hooks:
                    await stack.enter_async_context(hook(app))
                yield
        finally:
            app.state.db = None
            app.state.engine = None
            if db is None:
                await database.close()

    app = FastAPI(
        title="dwasm", version=API_VERSION, lifespan=lifespan,
        description="Durable WebAssembly flows. Errors are RFC 9457 problem details "
                    "(application/problem+json).",
        openapi_tags=[*CORE_TAGS, *tags], generate_unique_id_function=operation_id)
    app.state.settings = settings
    app.state.metrics = Registry()
    app.state.node_id = node_id_for(settings)  # the topology's, once the engine has one
    app.state.db = None
    app.state.engine = None
    app.state.ready_checks = {}
    for router in (*CORE_ROUTERS, *routers):
        app.include_router(router)
    # Each middleware added wraps the previous ones: metrics see every response, 413s from the
    # limit included, and the problem handlers' catch-all for unexpected errors is outside them.
    # Innermost, the route the router matched is recorded for the outer ones to read.
    app.add_middleware(RouteRecorder)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_body)
    # Writes for flows of other nodes go to their owners (forwarding/, docs/cluster.md); with
    # no topology (tools, tests) or on a single node everything is served here.
    app.add_middleware(ForwardingMiddleware)
    # Tokens are checked before anything is forwarded or handled (every node holds them all).
    try:
        tokens = parse_tokens(settings.api_tokens)
    except AuthConfigError as exc:
        raise SettingsError(str(exc)) from None
    app.add_middleware(AuthMiddleware, tokens=tokens)
    app.add_middleware(MetricsMiddleware, registry=app.state.metrics)
    install_problem_handlers(app)
    # Outermost: the request id and log context cover everything above, and the access line
    # has the final status of every answer (app.observability.requests).
    app.add_middleware(RequestContextMiddleware)

    def pool_samples() -> list[tuple[dict[str, str], float]]:
        database = app.state.db
        if database is None:
            return []
        stats = database.stats()
        return [({"state": "idle"}, stats["idle"]),
                ({"state": "busy"}, stats["size"] - stats["idle"]),
                ({"state": "max"}, stats["max"])]

    app.state.metrics.gauge_callback("dwasm_db_pool_connections",
                                     "Database pool connections.", ["state"], pool_samples)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with problem media types, the answers of the middleware and
        the bearer security scheme (:mod:`app.api.document`)."""
        from .document import complete_document

        if app.openapi_schema is None:
            app.openapi_schema = complete_document(_problem_media_types(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes, tags=app.openapi_tags)))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
