"""What the flow engine adds to the service app: its routers, tags, engine factory and lifespan
hook, and :func:`build_app`, the complete service (core app + flows).

``app.serve.build_app`` should return ``build_app(settings, db)`` from here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from forwarding.middleware import ForwardingConfigError, check_config
from topology.config import ClusterConfig, ClusterConfigError
from topology.node import create_topology

from ..api.settings import SettingsError
from .engine import FlowEngine
from .policies import PolicyBook, QueuePolicy
from .retention import RetentionConfig

FLOW_TAGS: list[dict[str, str]] = [
    {"name": "flows", "description": "Durable flows: start, inspect, cancel, signal, query."},
    {"name": "tasks", "description": "Work for external workers: lease, heartbeat, complete, "
                                     "fail."},
    {"name": "queues", "description": "Queues' backlogs and retry policies."},
    {"name": "cluster", "description": "This node's view of the cluster: members, shard map."},
]


def flow_routers() -> list[Any]:
    from forwarding.cluster_api import router as cluster_router

    from ..api.routers import flows, queues, tasks
    from ..console import router as console_router

    # The console (/ui) calls these routers' endpoints, so it comes with them; its routes are
    # not in the OpenAPI document.
    return [flows.router, tasks.router, queues.router, cluster_router, console_router]


def engine_factory(db: Any, settings: Any) -> FlowEngine:
    """``create_app``'s engine factory: a FlowEngine with the service's limits and default
    retry policy, attached to this node's topology (``Cluster`` with ``DWASM_ETCD``, else
    ``SingleNode``; started by :func:`flows_lifespan` once the engine runs)."""
    default = QueuePolicy(max_attempts=settings.max_attempts,
                          backoff_initial=settings.retry_backoff,
                          backoff_max=settings.retry_backoff_max,
                          lease_timeout=settings.lease_timeout)
    engine = FlowEngine(db, max_payload=settings.max_payload, policies=PolicyBook(default),
                        retention=RetentionConfig(retention=settings.flow_retention))
    url = settings.advertise_url or f"http://{settings.host}:{settings.port}"
    try:
        config = ClusterConfig.from_env(port=settings.port, advertise_url=url)
        check_config(config)
    except (ClusterConfigError, ForwardingConfigError) as exc:
        raise SettingsError(f"bad cluster configuration: {exc}") from None
    engine.attach_topology(create_topology(config, db.pool, engine, url=url))
    return engine


@contextlib.asynccontextmanager
async def flows_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Registers the engine's readiness check and metrics with the app."""
    engine = getattr(app.state, "engine", None)
    topology = None
    if isinstance(engine, FlowEngine):
        app.state.ready_checks["engine"] = engine.ready_check
        engine.metrics = app.state.metrics
        engine._setup_metrics()
        topology = engine.topology
    if topology is not None:
        await topology.start()
        app.state.topology = topology

        async def topology_ready() -> str | None:
            return None if topology.ready else "not serving: draining or not in the cluster"

        app.state.ready_checks["topology"] = topology_ready
    try:
        yield
    finally:
        if topology is not None:
            app.state.topology = None
            await topology.stop()


def build_app(settings: Any, db: Any = None) -> FastAPI:
    """The complete dwasm service app."""
    from ..api.app import create_app

    return create_app(settings, db, routers=flow_routers(), engine_factory=engine_factory,
                      lifespan_hooks=[flows_lifespan], tags=FLOW_TAGS)
