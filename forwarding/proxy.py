"""The sender's side: finds a flow's owner and sends it the request, retrying within a deadline.

One attempt goes to the owner in this node's view, signed (:mod:`forwarding.auth`) and carrying
the view's version. What happens next:

- the owner answers: its response is relayed (:class:`Relayed`);
- it answers 421 (it is not the owner in its own view): wait up to ``refresh_wait`` for this
  node's view to reach the version the owner reported, else route by the owner's answer, and
  try again;
- the connection fails before the request went out: wait for the view to change (the owner
  died: its shards move once its lease expires) and try again;
- the request may have reached the owner (the connection broke after sending, or no answer in
  time): try again only when the request is idempotent, otherwise 502 ``outcome-unknown``.

A shard in handoff is waited for up to ``handoff_wait``, then 503 with ``Retry-After``; so is a
shard without a reachable owner, until the deadline. Every retry stays within ``deadline``
seconds of the request's arrival, and a request is never forwarded by the node it was
forwarded to (that node answers 421 instead).

The client's headers go along (:func:`outbound_headers`), ``X-Request-Id`` included: the
service's request middleware (:mod:`app.observability.requests`) has put the id this node logs
under into the request's headers, so the owner logs under the same one. It is not signed: it
names a request for the logs and gives the owner nothing to trust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import auth
from .asgi import HOP_BY_HOP
from .body import Body

log = logging.getLogger("dwasm.forwarding")


@dataclass(frozen=True)
class ForwardSettings:
    """Timing of forwarding (seconds)."""

    #: Overall bound for routing and retries of one request, until the owner's response starts.
    deadline: float = 10.0
    #: How long a write waits for a shard in handoff before answering 503.
    handoff_wait: float = 2.0
    #: After a 421, how long to wait for this node's view to catch up before using the
    #: owner's answer instead.
    refresh_wait: float = 0.5
    #: Polling period while waiting for the view to change.
    poll: float = 0.025
    connect_timeout: float = 1.0
    #: Connections kept to each peer.
    pool_size: int = 64
    #: ``Retry-After`` of 503 answers.
    retry_after: float = 1.0


@dataclass(frozen=True)
class Target:
    node_id: str
    url: str
    version: int


@dataclass
class Problem:
    status: int
    slug: str
    detail: str
    retry_after: float | None = None
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass
class Relayed:
    """The owner's response (headers read, body still streaming)."""

    response: httpx.Response
    node_id: str


class Local:
    """This node owns the flow: serve the request here."""


LOCAL = Local()
Outcome = Relayed | Problem | Local


@dataclass(frozen=True)
class Hint:
    """An owner's 421 answer: who it thinks owns the flow."""

    node_id: str | None
    url: str | None
    version: int
    handoff: bool
    flow_id: str | None = None


class ForwardMetrics:
    """The forwarding counters and histogram, registered in the app's metric registry (any
    object with ``counter`` and ``histogram`` like :class:`app.api.metrics.Registry`)."""

    def __init__(self, registry: Any) -> None:
        self.forwarded = registry.counter(
            "dwasm_forwarded_requests_total",
            "Requests sent to the owner node, by outcome (HTTP status or error kind).",
            ["outcome"])
        self.misdirected = registry.counter(
            "dwasm_forward_misdirected_total",
            "421 answers: received from peers (direction=received) or sent to them (sent).",
            ["direction"])
        self.latency = registry.histogram(
            "dwasm_forward_duration_seconds",
            "Time from a request's arrival until the owner's response started (forwarded "
            "requests only, retries included).")


def _hint(response_body: bytes) -> Hint | None:
    import json

    try:
        data = json.loads(response_body)
        return Hint(data.get("owner"), data.get("url"), int(data.get("version", 0)),
                    bool(data.get("handoff", False)), data.get("flow_id"))
    except (ValueError, TypeError, AttributeError):
        return None


def outbound_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers to pass on: no hop-by-hop ones, no Host or Content-Length (set
    anew) and no forwarding headers (signed anew)."""
    return [(k, v) for k, v in auth.strip(headers)
            if k.lower() not in HOP_BY_HOP and k.lower() not in (b"host", b"content-length")]


class Forwarder:
    """Sends requests to owners over one pooled ``httpx.AsyncClient`` (created on first use in
    the serving event loop; :meth:`aclose` at shutdown)."""

    def __init__(self, settings: ForwardSettings | None = None) -> None:
        self.settings = settings or ForwardSettings()
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            s = self.settings
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(s.deadline, connect=s.connect_timeout),
                limits=httpx.Limits(max_connections=None,
                                    max_keepalive_connections=s.pool_size),
                trust_env=False, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- routing ----------------------------------------------------------------------------

    async def resolve(self, topology: Any, flow_id: str, deadline: float,
                      hint: Hint | None = None) -> Target | Local | Problem:
        """Where the request for ``flow_id`` goes now, waiting (bounded) through handoffs and
        shards without an owner."""
        s = self.settings
        handoff_since: float | None = None
        unowned_since: float | None = None
        while True:
            now = time.monotonic()
            own = topology.owner_of(flow_id)
            node, url, version, handoff = own.node_id, own.url, own.version, own.handoff
            if hint is not None and hint.version > version:
                node, url, version, handoff = hint.node_id, hint.url, hint.version, hint.handoff
            if handoff:
                handoff_since = handoff_since or now
                if now - handoff_since >= s.handoff_wait or now >= deadline:
                    return Problem(503, "shard-in-handoff",
                                   f"shard {own.shard} is moving to another node; try again",
                                   s.retry_after, {"shard": own.shard})
            elif own.mine and (hint is None or hint.version <= own.version):
                return LOCAL
            elif node is not None and url is not None and node != topology.node_id:
                return Target(node, url, version)
            else:  # no owner yet, or assigned to this node but not claimed yet
                unowned_since = unowned_since or now
                if now - unowned_since >= s.handoff_wait or now >= deadline:
                    return Problem(503, "no-owner",
                                   f"shard {own.shard} has no owner ready yet; try again",
                                   s.retry_after, {"shard": own.shard})
            await asyncio.sleep(s.poll)
            if hint is not None and topology.owner_of(flow_id).version >= hint.version:
                hint = None

    async def _view_changed(self, topology: Any, flow_id: str, target: Target,
                            until: float) -> bool:
        """Waits until the view routes ``flow_id`` differently from ``target`` (or has a newer
        version); False at ``until``."""
        while time.monotonic() < until:
            own = topology.owner_of(flow_id)
            if own.version > target.version or own.node_id != target.node_id or own.mine:
                return True
            await asyncio.sleep(self.settings.poll)
        return False

    async def _refresh(self, topology: Any) -> None:
        """Asks the topology to re-read the shard map when it can (best effort)."""
        refresh = getattr(topology, "refresh", None) or getattr(
            getattr(topology, "view", None), "refresh", None)
        if refresh is None:
            return
        try:
            await asyncio.wait_for(refresh(), self.settings.refresh_wait)
        except Exception as exc:  # noqa: BLE001  etcd away: the watch catches up later
            log.debug("shard map refresh failed: %r", exc)

    # -- sending ----------------------------------------------------------------------------

    async def forward(self, topology: Any, flow_id: str, *, method: str, target: str,
                      headers: Sequence[tuple[bytes, bytes]], body: Body, idempotent: bool,
                      secret: str, started: float,
                      metrics: ForwardMetrics | None = None) -> Outcome:
        """Routes one request for ``flow_id`` (see the module docstring)."""
        s = self.settings
        deadline = started + s.deadline
        hint: Hint | None = None
        while True:
            where = await self.resolve(topology, flow_id, deadline, hint)
            if not isinstance(where, Target):
                return where
            hint = None
            outcome, result = await self._attempt(where, method, target, headers, body,
                                                  secret, topology.node_id, deadline)
            if metrics is not None:
                metrics.forwarded.inc(outcome=str(result.status_code)
                                      if isinstance(result, httpx.Response) else outcome)
            if outcome == "answered":
                assert isinstance(result, httpx.Response)
                if metrics is not None:
                    metrics.latency.observe(time.monotonic() - started)
                return Relayed(result, where.node_id)
            if outcome == "misdirected":
                if metrics is not None:
                    metrics.misdirected.inc(direction="received")
                assert isinstance(result, Hint)
                hint = result
                await self._refresh(topology)
                until = min(deadline, time.monotonic() + s.refresh_wait)
                while time.monotonic() < until and topology.owner_of(flow_id).version < \
                        hint.version:
                    await asyncio.sleep(s.poll)
                if topology.owner_of(flow_id).version >= hint.version:
                    hint = None
                if hint is not None and hint.node_id == where.node_id and not hint.handoff:
                    await asyncio.sleep(s.poll)  # the owner has not claimed the shard yet
            elif outcome == "not-sent":
                await self._refresh(topology)
                if not await self._view_changed(topology, flow_id, where, deadline):
                    return Problem(503, "owner-unreachable",
                                   f"the owner of flow {flow_id!r} ({where.node_id}) cannot be "
                                   f"reached: {result}", s.retry_after,
                                   {"owner": where.node_id})
            else:  # "unknown": the owner may have acted on the request
                if not idempotent:
                    return Problem(502, "outcome-unknown",
                                   f"the connection to the owner of flow {flow_id!r} "
                                   f"({where.node_id}) broke after the request was sent: it may "
                                   f"or may not have been carried out ({result}); send it again "
                                   "with an Idempotency-Key to make retries safe",
                                   None, {"owner": where.node_id})
                if time.monotonic() >= deadline:
                    return Problem(504, "forward-timeout",
                                   f"no answer from the owner of flow {flow_id!r} "
                                   f"({where.node_id}) within {s.deadline:g} s", None,
                                   {"owner": where.node_id})
                await self._refresh(topology)
                await self._view_changed(topology, flow_id, where,
                                         min(deadline, time.monotonic() + s.handoff_wait))
            if time.monotonic() >= deadline:
                return Problem(503, "forward-deadline",
                               f"could not reach the owner of flow {flow_id!r} within "
                               f"{s.deadline:g} s", s.retry_after)

    async def _attempt(self, where: Target, method: str, target: str,
                       headers: Sequence[tuple[bytes, bytes]], body: Body, secret: str,
                       sender: str, deadline: float) -> tuple[str, httpx.Response | Hint | str]:
        """One send. ("answered", response) | ("misdirected", hint) | ("not-sent", why) |
        ("unknown", why)."""
        signed = auth.sign(secret, method, target, body.sha256, sender, where.version)
        out = outbound_headers(headers)
        out += [(k.encode(), v.encode()) for k, v in signed.items()]
        out.append((b"content-length", str(body.size).encode()))
        request = self.client.build_request(
            method, where.url.rstrip("/") + target, headers=out,
            content=body.chunks() if body.size else b"")
        remaining = max(0.001, deadline - time.monotonic())
        try:
            response = await asyncio.wait_for(self.client.send(request, stream=True),
                                               remaining)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return "not-sent", f"{type(exc).__name__}: {exc}"
        except (TimeoutError, httpx.TransportError) as exc:
            return "unknown", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if response.status_code == 421 and response.headers.get(auth.MISDIRECTED) == "1":
            try:
                data = await response.aread()
            except httpx.TransportError:
                data = b""
            finally:
                await response.aclose()
            hint = _hint(data)
            return ("misdirected", hint) if hint is not None else ("not-sent", "bad 421")
        return "answered", response


def relay_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The owner's response headers to pass on (no hop-by-hop ones)."""
    return [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]

