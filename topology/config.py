"""Cluster settings, read from ``DWASM_*`` environment variables.

``DWASM_ETCD`` turns cluster mode on; without it the node owns every shard (single-node mode).

- ``DWASM_ETCD``: comma-separated etcd endpoints, each ``host:port``, ``http://host:port`` or
  ``[v6addr]:port``. ``https://`` is refused (TLS is not supported yet), as are empty entries,
  paths and ports outside 1..65535.
- ``DWASM_NODE_ID`` (``<hostname>-<port>`` when the service knows its port, else the hostname):
  this node's name in the cluster, stable across restarts (a restart is a new *incarnation*).
  Letters, digits and ``._-``, at most 64 characters.
- ``DWASM_ADVERTISE_URL``: how peers reach this node (``http://host:port``); the service fills
  in its listening URL when unset.
- ``DWASM_CLUSTER_SECRET``: shared secret that forwarded requests carry between nodes.
- ``DWASM_SHARDS`` (256): the fixed number of shards. Every node must use the same value; a
  node whose value differs from the shard map in etcd refuses to join.
- ``DWASM_LEASE_TTL`` (10 s, integer ≥ 2): the member lease; a node that stops renewing it
  leaves the cluster this long after its last successful renewal.
- ``DWASM_KEEPALIVE_INTERVAL`` (TTL/3): how often the lease is renewed.
- ``DWASM_ETCD_TIMEOUT`` (2 s): deadline of one etcd request.
- ``DWASM_ETCD_PREFIX`` (``/dwasm/``): where all keys live (several clusters can share an etcd).
- ``DWASM_MAX_MOVES`` (16): at most this many shards in handoff at once for rebalancing.
- ``DWASM_HANDOFF_TIMEOUT`` (30 s): an owner that has not released a shard in handoff by then
  loses it anyway (the new owner fences it in PostgreSQL).
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ClusterConfigError(ValueError):
    """A cluster variable has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Endpoint:
    """One etcd endpoint."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """``"h1:2379,http://h2:2379"`` → endpoints; raises :class:`ClusterConfigError`."""
    endpoints = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ClusterConfigError(f"DWASM_ETCD: empty endpoint in {text!r}")
        if "://" in item:
            parts = urlsplit(item)
            if parts.scheme != "http":
                raise ClusterConfigError(
                    f"DWASM_ETCD: {item!r}: only http:// endpoints are supported")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ClusterConfigError(f"DWASM_ETCD: {item!r}: an endpoint has no path")
            netloc = parts.netloc
        else:
            netloc = item
        try:
            parts = urlsplit("//" + netloc)
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ClusterConfigError(f"DWASM_ETCD: {item!r}: port is not a number in 1..65535"
                                     ) from None
        if not host or parts.username or parts.password:
            raise ClusterConfigError(f"DWASM_ETCD: {item!r} is not host:port")
        if port is None or not 0 < port < 65536:
            raise ClusterConfigError(f"DWASM_ETCD: {item!r}: needs a port in 1..65535 "
                                     "(etcd's client port is usually 2379)")
        endpoints.append(Endpoint(host, port))
    return tuple(endpoints)


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float,
            integer: bool = False) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ClusterConfigError(f"{name}: {text!r} is not {kind}") from None
    if not math.isfinite(value) or value < minimum:
        raise ClusterConfigError(f"{name}: must be at least {minimum:g}, not {text!r}")
    return value


def default_node_id(port: int | None = None) -> str:
    """``<hostname>[-<port>]``, cleaned to the allowed characters."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "node"
    name = f"{host}-{port}" if port else host
    return name[:64].strip("-._") or "node"


@dataclass(frozen=True)
class ClusterConfig:
    """Everything topology/ is configured with. Build it with :meth:`from_env`."""

    etcd_endpoints: tuple[Endpoint, ...] = ()
    node_id: str = field(default_factory=default_node_id)
    advertise_url: str | None = None
    secret: str | None = None
    shards: int = 256
    lease_ttl: int = 10
    keepalive_interval: float = 0.0  # 0: lease_ttl / 3
    etcd_timeout: float = 2.0
    prefix: str = "/dwasm/"
    max_moves: int = 16
    handoff_timeout: float = 30.0
    #: How often the coordinator re-reads everything even without a watch event.
    coordinator_tick: float = 1.0

    def __post_init__(self) -> None:
        if not _NODE_ID_RE.match(self.node_id):
            raise ClusterConfigError(f"DWASM_NODE_ID: {self.node_id!r}: letters, digits and "
                                     "'._-' only, at most 64 characters")
        if self.shards < 1 or self.shards > 65536:
            raise ClusterConfigError(f"DWASM_SHARDS: {self.shards} is not in 1..65536")
        if self.lease_ttl < 2:
            raise ClusterConfigError("DWASM_LEASE_TTL: must be at least 2 seconds")
        if self.keepalive_interval < 0 or self.keepalive_interval >= self.lease_ttl:
            raise ClusterConfigError("DWASM_KEEPALIVE_INTERVAL: must be below DWASM_LEASE_TTL")
        if self.advertise_url is not None:
            parts = urlsplit(self.advertise_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ClusterConfigError(f"DWASM_ADVERTISE_URL: {self.advertise_url!r} is not "
                                         "an http(s)://host:port URL")
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ClusterConfigError(f"DWASM_ETCD_PREFIX: {self.prefix!r} must start and end "
                                     "with '/'")

    @property
    def cluster_mode(self) -> bool:
        """True when etcd endpoints are configured."""
        return bool(self.etcd_endpoints)

    @property
    def keepalive_every(self) -> float:
        """The lease renewal period actually used."""
        return self.keepalive_interval or self.lease_ttl / 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 port: int | None = None, advertise_url: str | None = None) -> ClusterConfig:
        """Settings from ``DWASM_*`` variables (default ``os.environ``). ``port`` and
        ``advertise_url`` are what the service knows about itself, used when the variables
        leave the node id or the advertised URL unset."""
        env = os.environ if environ is None else environ
        etcd = env.get("DWASM_ETCD", "").strip()
        return cls(
            etcd_endpoints=parse_endpoints(etcd) if etcd else (),
            node_id=env.get("DWASM_NODE_ID", "").strip() or default_node_id(port),
            advertise_url=env.get("DWASM_ADVERTISE_URL", "").strip() or advertise_url,
            secret=env.get("DWASM_CLUSTER_SECRET") or None,
            shards=int(_number(env, "DWASM_SHARDS", 256, minimum=1, integer=True)),
            lease_ttl=int(_number(env, "DWASM_LEASE_TTL", 10, minimum=2, integer=True)),
            keepalive_interval=_number(env, "DWASM_KEEPALIVE_INTERVAL", 0.0, minimum=0.01),
            etcd_timeout=_number(env, "DWASM_ETCD_TIMEOUT", 2.0, minimum=0.05),
            prefix=env.get("DWASM_ETCD_PREFIX", "").strip() or "/dwasm/",
            max_moves=int(_number(env, "DWASM_MAX_MOVES", 16, minimum=1, integer=True)),
            handoff_timeout=_number(env, "DWASM_HANDOFF_TIMEOUT", 30.0, minimum=0.1),
        )
