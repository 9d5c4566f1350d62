"""This node's membership: a key under ``<prefix>members/<node id>`` attached to a lease.

The record (:class:`~topology.shards.Member` as JSON) names the node, its *incarnation* (a fresh
random id per join, so a restarted node is a new member even under the same node id), the URL
peers use, its state (``ready`` or ``draining``) and the shards in handoff it has released.

A keepalive task renews the lease every ``keepalive_every`` seconds. A lease renewed by a
request sent at time t is alive at least until t + TTL, so that is this node's *deadline*; a
watchdog task declares the membership lost as soon as the deadline passes without a successful
renewal (etcd unreachable, or this process was paused), and so does a renewal that finds the
lease gone. :attr:`alive` reads the clock itself, so a process resumed from SIGSTOP sees
itself as not a member before any task has run. After a loss, the node joins again as a new
incarnation (new lease, new id) as soon as etcd answers; ``on_lost`` and ``on_joined`` report
both transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping

from .aio import cancel_and_wait
from .config import ClusterConfig
from .etcd import Etcd, EtcdError, LeaseNotFound
from .shards import Member

log = logging.getLogger("dwasm.topology")


def members_prefix(config: ClusterConfig) -> bytes:
    return (config.prefix + "members/").encode()


class Membership:
    """Registers this node and keeps it registered (see the module docstring)."""

    def __init__(self, etcd: Etcd, config: ClusterConfig, *, url: str | None = None,
                 on_lost: Callable[[str], None] | None = None,
                 on_joined: Callable[[str], None] | None = None) -> None:
        self._etcd = etcd
        self._config = config
        self.url = url or config.advertise_url
        self.key = members_prefix(config) + config.node_id.encode()
        self._on_lost = on_lost
        self._on_joined = on_joined
        self.incarnation = ""
        self.lease = 0
        self.ttl = config.lease_ttl
        self.state = "ready"
        self.started_at = 0.0
        self._released: dict[int, int] = {}
        self._deadline = 0.0
        self._joined = False
        self._write_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- state ------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """A member now: joined, and the lease certainly not expired."""
        return self._joined and time.monotonic() < self._deadline

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` value until which the lease is certainly alive."""
        return self._deadline

    @property
    def released(self) -> Mapping[int, int]:
        return dict(self._released)

    def record(self) -> Member:
        return Member(self._config.node_id, self.incarnation, self.url, self.state,
                      self.started_at, dict(self._released))

    async def wait_changed(self) -> None:
        """Returns at the next join or loss."""
        self._changed.clear()
        await self._changed.wait()

    # -- lifecycle --------------------------------------------------------------------------

    async def join(self) -> str:
        """Registers a new incarnation (new lease); its id. Raises
        :class:`~topology.etcd.EtcdError` if etcd cannot be reached."""
        incarnation = secrets.token_hex(6)
        sent = time.monotonic()
        lease, ttl = await self._etcd.grant(self._config.lease_ttl)
        self.incarnation, self.lease, self.ttl = incarnation, lease, ttl
        self.started_at = time.time()
        self._released = {}
        try:
            await self._write()
        except EtcdError:
            with contextlib.suppress(EtcdError):
                await self._etcd.revoke(lease)
            raise
        self._deadline = sent + ttl
        self._joined = True
        self._changed.set()
        log.info("joined the cluster as %s incarnation %s (lease %x, ttl %d s)",
                 self._config.node_id, incarnation, lease, ttl)
        if self._on_joined is not None:
            self._on_joined(incarnation)
        return incarnation

    async def start(self, timeout: float | None = None) -> None:
        """Joins (retrying while etcd is unreachable, up to ``timeout``), then keeps the
        membership alive in background tasks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                await self.join()
                break
            except EtcdError as exc:
                if deadline is not None and time.monotonic() > deadline:
                    raise
                log.warning("cannot join the cluster yet: %s", exc)
                await asyncio.sleep(min(1.0, self._config.keepalive_every))
        self._tasks = [asyncio.create_task(self._keepalive(), name="dwasm-keepalive"),
                       asyncio.create_task(self._watchdog(), name="dwasm-lease-watchdog")]

    async def stop(self, *, revoke: bool = True) -> None:
        """Stops renewing; with ``revoke`` also deletes the membership at once (a clean
        leave) instead of letting the lease expire."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task, what=task.get_name())
        if revoke and self.lease:
            with contextlib.suppress(EtcdError):
                await self._etcd.revoke(self.lease)
        self._joined = False

    async def set_state(self, state: str) -> None:
        """``ready`` or ``draining``, published in the member record."""
        if state not in ("ready", "draining"):
            raise ValueError(f"unknown member state {state!r}")
        self.state = state
        await self._write()

    async def mark_released(self, shard: int, epoch: int) -> None:
        """Acknowledges that this node stopped ``shard`` at ``epoch`` (a handoff)."""
        if self._released.get(shard) == epoch:
            return
        self._released[shard] = epoch
        await self._write()

    async def forget_released(self, shards: set[int]) -> None:
        """Drops acknowledgements that are no longer needed."""
        if not shards & self._released.keys():
            return
        for shard in shards:
            self._released.pop(shard, None)
        await self._write()

    # -- internals --------------------------------------------------------------------------

    async def _write(self) -> None:
        async with self._write_lock:
            value = json.dumps(self.record().to_json(), separators=(",", ":")).encode()
            try:
                await self._etcd.put(self.key, value, self.lease)
            except LeaseNotFound:
                self._lose("lease not found while writing the member record")
                raise

    def _lose(self, why: str) -> None:
        if not self._joined:
            return
        self._joined = False
        self._changed.set()
        log.warning("no longer a cluster member (%s incarnation %s): %s",
                    self._config.node_id, self.incarnation, why)
        if self._on_lost is not None:
            self._on_lost(why)

    async def _keepalive(self) -> None:
        backoff = min(1.0, self._config.keepalive_every)
        while not self._stopping:
            if not self._joined:
                try:
                    await self.join()
                except Exception as exc:  # noqa: BLE001  etcd down (or a callback failed)
                    log.debug("rejoin failed: %r", exc)
                    await asyncio.sleep(backoff)
                    continue
            sent = time.monotonic()
            try:
                ttl = await self._etcd.keepalive(self.lease)
            except EtcdError as exc:
                log.debug("lease renewal failed: %s", exc)
            else:
                if ttl <= 0:
                    self._lose("the lease expired")
                    continue
                if self._joined:
                    self._deadline = max(self._deadline, sent + ttl)
            await asyncio.sleep(max(0.0, sent + self._config.keepalive_every - time.monotonic()))

    async def _watchdog(self) -> None:
        while not self._stopping:
            if self._joined:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    self._lose(f"lease not renewed for {self.ttl} s")
                    continue
                await asyncio.sleep(remaining + 0.001)
            else:
                await asyncio.sleep(0.05)
