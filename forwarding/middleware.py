"""``ForwardingMiddleware``: any node accepts any request; writes to a flow run on its owner.

A pure ASGI middleware in front of the service; it knows routes (:mod:`forwarding.routes`) and
the topology (``owner_of``), nothing of the engine. Per request:

- **Forwarded by a peer** (any ``X-Dwasm-Forward*`` or ``X-Dwasm-Topology-Version`` header):
  verified (:mod:`forwarding.auth`, 403 if it fails), then served here if this node owns every
  flow it names, else answered 421 with this node's view. Never forwarded again: one hop.
- **A flow write** (start, cancel, signal, query, task heartbeat/complete/fail): served here
  when this node owns the flow, else sent to the owner (:class:`forwarding.proxy.Forwarder`).
  A start without an id gets one here first, preferably of a shard this node owns.
- **A batch of task reports**: split by owner, each part sent to its owner (the local part to
  the app), the answers merged in request order (:mod:`forwarding.batch`).
- **A read of one flow**: served here from PostgreSQL, or at the owner with
  ``X-Dwasm-Consistency: strong``.
- Everything else is served here.

Every response carries ``X-Dwasm-Served-By: <node id>`` (the owner's, when forwarded).
The topology is ``app.state.topology`` (None until the service started it: then everything is
served locally) unless one is given to the constructor.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import auth
from .asgi import header_map, send_problem, target_of, with_body_length
from .batch import handle_reports
from .body import Body, BodyTooLarge, ClientGone
from .proxy import (
    LOCAL,
    Forwarder,
    ForwardMetrics,
    ForwardSettings,
    Problem,
    Relayed,
    relay_headers,
)
from .routes import Kind, Route, classify

log = logging.getLogger("dwasm.forwarding")

SERVED_BY = b"x-dwasm-served-by"
CONSISTENCY = "x-dwasm-consistency"
CONSISTENCY_MODES = ("eventual", "session", "strong")
#: Reads are served from PostgreSQL on the node asked unless the client asks for ``strong``.
DEFAULT_CONSISTENCY = "session"
DEFAULT_MAX_BODY = 64 << 20
#: Random ids tried for a start without an id before settling for a remote one.
LOCAL_ID_TRIES = 64


class ForwardingConfigError(RuntimeError):
    """Forwarding cannot work with this configuration (the message says why)."""


def check_config(config: Any) -> None:
    """Raises :class:`ForwardingConfigError` when cluster mode has no cluster secret: nodes
    could neither sign nor accept forwarded requests. The service calls it at start-up."""
    if getattr(config, "cluster_mode", False) and not getattr(config, "secret", None):
        raise ForwardingConfigError(
            "cluster mode (DWASM_ETCD) needs DWASM_CLUSTER_SECRET, the same on every node: "
            "it authenticates the requests nodes forward to each other")


def new_flow_id() -> str:
    return "f-" + secrets.token_hex(10)


def assign_flow_id(topology: Any, tries: int = LOCAL_ID_TRIES) -> str:
    """A fresh flow id, of a shard this node owns when one of ``tries`` random ids is."""
    flow_id = new_flow_id()
    for _ in range(tries):
        own = topology.owner_of(flow_id)
        if own.mine and not own.handoff:
            return flow_id
        flow_id = new_flow_id()
    return flow_id


class ForwardingMiddleware:
    """See the module docstring. ``topology``: a topology or a function returning one (default:
    ``app.state.topology``); ``max_body``: bound on bodies read here (default:
    ``app.state.settings.max_request_body``)."""

    def __init__(self, app: ASGIApp, *, topology: Any = None,
                 settings: ForwardSettings | None = None, max_body: int | None = None,
                 default_consistency: str = DEFAULT_CONSISTENCY) -> None:
        if default_consistency not in CONSISTENCY_MODES:
            raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}")
        self.app = app
        self._topology = topology
        self.forwarder = Forwarder(settings)
        self._max_body = max_body
        self.default_consistency = default_consistency
        self._metrics: tuple[Any, ForwardMetrics] | None = None
        self._warned_secret = False

    # -- context ----------------------------------------------------------------------------

    def topology(self, scope: Scope) -> Any:
        if self._topology is not None:
            return self._topology() if callable(self._topology) and not hasattr(
                self._topology, "owner_of") else self._topology
        state = getattr(scope.get("app"), "state", None)
        return getattr(state, "topology", None)

    def max_body(self, scope: Scope) -> int:
        if self._max_body is not None:
            return self._max_body
        settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
        return int(getattr(settings, "max_request_body", DEFAULT_MAX_BODY))

    def metrics(self, scope: Scope) -> ForwardMetrics | None:
        registry = getattr(getattr(scope.get("app"), "state", None), "metrics", None)
        if registry is None or not hasattr(registry, "histogram"):
            return None
        if self._metrics is None or self._metrics[0] is not registry:
            self._metrics = (registry, ForwardMetrics(registry))
        return self._metrics[1]

    def secret(self, topology: Any) -> str | None:
        return getattr(getattr(topology, "config", None), "secret", None) or None

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._on_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        topology = self.topology(scope)
        if topology is not None:
            send = _served_by(send, topology.node_id)
        headers = header_map(scope)
        route = classify(scope["method"], scope["path"])
        if any(auth.is_forwarding_header(h) for h in headers):
            await self._receive_forwarded(scope, receive, send, topology, headers, route)
            return
        consistency = headers.get(CONSISTENCY, self.default_consistency).strip().lower()
        if consistency not in CONSISTENCY_MODES:
            await send_problem(send, 400, "invalid-consistency",
                               f"{CONSISTENCY}: {consistency!r} is not one of "
                               f"{', '.join(CONSISTENCY_MODES)}", instance=scope["path"])
            return
        if topology is None or route.kind is Kind.LOCAL or (
                route.kind is Kind.READ and consistency != "strong"):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        if route.kind is Kind.TASK_REPORTS:
            body = await self._read_body(scope, receive, send)
            if body is not None:
                try:
                    await handle_reports(self, scope, receive, send, topology, body, started)
                finally:
                    body.close()
            return
        if route.kind is Kind.START:
            await self._start(scope, receive, send, topology, started)
            return
        assert route.flow_id is not None
        own = topology.owner_of(route.flow_id)
        if own.mine and not own.handoff:  # the common case: no body read, no copy
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        try:
            await self._route(scope, receive, send, topology, route, route.flow_id, body,
                              started, headers)
        finally:
            body.close()

    def _on_shutdown(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.forwarder.aclose()
            await send(message)
        return wrapped

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> Body | None:
        limit = self.max_body(scope)
        try:
            return await Body.read(receive, limit)
        except BodyTooLarge:
            await send_problem(send, 413, "payload-too-large", f"the request body exceeds the "
                               f"limit of {limit} bytes", instance=scope["path"], limit=limit)
        except ClientGone:
            pass
        return None

    # -- client requests --------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Receive, send: Send, topology: Any,
                     route: Route, flow_id: str, body: Body, started: float,
                     headers: dict[str, str]) -> None:
        """Serves a request for ``flow_id`` here or at its owner (``body`` already read)."""
        secret = self.secret(topology)
        if not secret and getattr(topology.config, "cluster_mode", False):
            own = topology.owner_of(flow_id)
            if not (own.mine and not own.handoff):
                self._no_secret()
                await send_problem(send, 503, "cluster-secret-missing",
                                   "this node cannot forward: DWASM_CLUSTER_SECRET is not set",
                                   instance=scope["path"])
                return
        idempotent = route.idempotent or bool(headers.get("idempotency-key"))
        outcome = await self.forwarder.forward(
            topology, flow_id, method=scope["method"], target=target_of(scope),
            headers=scope["headers"], body=body, idempotent=idempotent, secret=secret or "",
            started=started, metrics=self.metrics(scope))
        if outcome is LOCAL:
            await self.app(with_body_length(scope, body.size), body.replay(receive), send)
        elif isinstance(outcome, Relayed):
            await _relay(outcome, send)
        else:
            assert isinstance(outcome, Problem)
            await send_problem(send, outcome.status, outcome.slug, outcome.detail,
                               instance=scope["path"], retry_after=outcome.retry_after,
                               flow_id=flow_id, **outcome.extensions)

    async def _start(self, scope: Scope, receive: Receive, send: Send, topology: Any,
                     started: float) -> None:
        """``POST /v1/flows``: routes by the body's ``id``, assigning one when it has none."""
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        try:
            try:
                data = json.loads(body.bytes())
            except ValueError:
                data = None
            flow_id = data.get("id") if isinstance(data, dict) else None
            if isinstance(data, dict) and data.get("id") is None:
                flow_id = assign_flow_id(topology)
                data["id"] = flow_id
                body.close()
                body = Body.from_bytes(json.dumps(data, separators=(",", ":")).encode())
            if not isinstance(flow_id, str):  # malformed: the app answers 422
                await self.app(with_body_length(scope, body.size), body.replay(receive), send)
                return
            await self._route(scope, receive, send, topology, classify("POST", "/v1/flows"),
                              flow_id, body, started, header_map(scope))
        finally:
            body.close()

    def _no_secret(self) -> None:
        if not self._warned_secret:
            self._warned_secret = True
            log.error("cluster mode without DWASM_CLUSTER_SECRET: requests for flows owned by "
                      "other nodes are refused (503) instead of forwarded")

    # -- forwarded requests -----------------------------------------------------------------

    async def _receive_forwarded(self, scope: Scope, receive: Receive, send: Send,
                                 topology: Any, headers: dict[str, str], route: Route) -> None:
        instance = scope["path"]
        try:
            forwarded = auth.verify(self.secret(topology), scope["method"], target_of(scope),
                                    headers)
        except auth.ForwardAuthError as exc:
            await send_problem(send, 403, "forbidden-forward", str(exc), instance=instance)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        try:
            if body.sha256 != forwarded.body_sha256:
                await send_problem(send, 403, "forbidden-forward",
                                   "the body does not match the forwarding signature",
                                   instance=instance)
                return
            scope = with_body_length(scope, body.size)
            scope["dwasm.forwarded_by"] = forwarded.sender
            if topology is None:
                await send_problem(send, 503, "not-ready", "this node has not joined the "
                                   "cluster yet", instance=instance, retry_after=1)
                return
            for flow_id in _flows_named(route, body):
                own = topology.owner_of(flow_id)
                if not own.mine or own.handoff:
                    metrics = self.metrics(scope)
                    if metrics is not None:
                        metrics.misdirected.inc(direction="sent")
                    await send_problem(
                        send, 421, "misdirected",
                        f"{topology.node_id} does not own flow {flow_id!r}", instance=instance,
                        flow_id=flow_id, shard=own.shard, owner=own.node_id, url=own.url,
                        version=own.version, handoff=own.handoff,
                        sender_version=forwarded.version,
                        extra_headers=[(auth.MISDIRECTED, "1")])
                    return
            await self.app(scope, body.replay(receive), _strip_marker(send))
        finally:
            body.close()


def _flows_named(route: Route, body: Body) -> list[str]:
    """The flows a forwarded request acts on (the owner must own them all)."""
    if route.kind in (Kind.WRITE, Kind.READ) and route.flow_id:
        return [route.flow_id]
    if route.kind in (Kind.START, Kind.TASK_REPORTS):
        from .routes import flow_of_task

        try:
            data = json.loads(body.bytes())
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        if route.kind is Kind.START:
            return [data["id"]] if isinstance(data.get("id"), str) else []
        reports = data.get("reports")
        if not isinstance(reports, list):
            return []
        flows = {flow_of_task(r["task_id"]) for r in reports
                 if isinstance(r, dict) and isinstance(r.get("task_id"), str)}
        return sorted(f for f in flows if f)
    return []


def _served_by(send: Send, node_id: str) -> Send:
    value = node_id.encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(k.lower() == SERVED_BY for k, _ in headers):
                headers.append((SERVED_BY, value))
                message = {**message, "headers": headers}
        await send(message)
    return wrapped


def _strip_marker(send: Send) -> Send:
    """Responses of the app to forwarded requests never carry the 421 marker (an app's own 421
    must not be taken for the forwarding layer's)."""
    marker = auth.MISDIRECTED.encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != marker]
            message = {**message, "headers": headers}
        await send(message)
    return wrapped


async def _relay(outcome: Relayed, send: Send) -> None:
    """Streams the owner's response to the client."""
    response = outcome.response
    try:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": relay_headers(response)})
        async for chunk in response.aiter_raw():
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await response.aclose()

