"""What the flow engine adds to the service app: its routers, tags, engine factory and lifespan
hook, and :func:`build_app`, the complete service (core app + flows).

``app.serve.build_app`` should return ``build_app(settings, db)`` from here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from . import store
from .engine import FlowEngine

FLOW_TAGS: list[dict[str, str]] = [
    {"name": "flows", "description": "Durable flows: start, inspect, cancel, signal, query."},
    {"name": "tasks", "description": "Work for external workers: lease, heartbeat, complete, "
                                     "fail."},
]


def flow_routers() -> list[Any]:
    from ..api.routers import flows, tasks

    return [flows.router, tasks.router]


def engine_factory(db: Any, settings: Any) -> FlowEngine:
    """``create_app``'s engine factory: a FlowEngine with the service's payload limit.

    ``DWASM_LEASE_TIMEOUT`` (seconds) overrides the default task lease timeout (30 s)."""
    lease_timeout = os.environ.get("DWASM_LEASE_TIMEOUT")
    if lease_timeout:
        store.set_default_policy(lease_timeout=float(lease_timeout))
    return FlowEngine(db, max_payload=settings.max_payload)


@contextlib.asynccontextmanager
async def flows_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Registers the engine's readiness check and metrics with the app."""
    engine = getattr(app.state, "engine", None)
    if isinstance(engine, FlowEngine):
        app.state.ready_checks["engine"] = engine.ready_check
        engine.metrics = app.state.metrics
        engine._setup_metrics()
    yield


def build_app(settings: Any, db: Any = None) -> FastAPI:
    """The complete dwasm service app."""
    from ..api.app import create_app

    return create_app(settings, db, routers=flow_routers(), engine_factory=engine_factory,
                      lifespan_hooks=[flows_lifespan], tags=FLOW_TAGS)
