"""The one object the service starts: :class:`Cluster` (etcd) or :class:`SingleNode`.

Both implement :class:`Topology`. The service tells them what to do with shards through
:class:`ShardEvents` and asks them, per flow, who owns it (:meth:`Topology.owner_of`) and which
epoch to write with (:meth:`Topology.epoch_for`, to pass to
:func:`topology.fencing.check_epoch` in every flow transaction).

A :class:`Cluster` reconciles, in one task, the shard map with what this node runs:

- a shard assigned to this incarnation (not in handoff) that it does not hold yet is claimed in
  PostgreSQL at the map's epoch, then ``shard_acquired(shard, epoch)``;
- a held shard in handoff: ``shard_releasing(shard, epoch)`` (stop its flows at a safe point and
  checkpoint them), then the release is acknowledged in the member record;
- a held shard the map gives to someone else, or every shard when the membership is lost:
  ``shard_lost(shard)`` (stop at once; the new owner's claim fences any late write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .aio import cancel_and_wait, wait_event
from .config import ClusterConfig
from .coordinator import Coordinator
from .etcd import Etcd, EtcdError, connect
from .fencing import ClaimRefused, claim_next, claim_shards, current_epochs
from .membership import Membership
from .shards import ShardMap, shard_of
from .view import ShardMapView

log = logging.getLogger("dwasm.topology")


class ShardEvents(Protocol):
    """What the service does when this node gains or gives up shards."""

    async def shard_acquired(self, shard: int, epoch: int) -> None:
        """The shard is ours at ``epoch`` (already claimed): resume its flows."""

    async def shard_releasing(self, shard: int, epoch: int) -> None:
        """Hand the shard over: stop its flows at a safe point, checkpoint them (still writing
        with ``epoch``), and return once none of them runs."""

    async def shard_lost(self, shard: int) -> None:
        """The shard is gone: stop its flows now, without writing (writes would be fenced)."""


class NoEvents:
    """:class:`ShardEvents` that does nothing (tests, tools)."""

    async def shard_acquired(self, shard: int, epoch: int) -> None:
        pass

    async def shard_releasing(self, shard: int, epoch: int) -> None:
        pass

    async def shard_lost(self, shard: int) -> None:
        pass


@dataclass(frozen=True)
class Ownership:
    """Who owns a flow's shard, as this node knows it."""

    shard: int
    node_id: str | None     # None: not assigned (yet)
    url: str | None         # where to forward to
    epoch: int
    mine: bool              # this node may write the shard's flows now, with ``epoch``
    handoff: bool           # moving to another node: writes should wait briefly
    version: int            # shard map version this answer comes from


class Topology(Protocol):
    """The interface the service uses (see the module docstring)."""

    config: ClusterConfig

    @property
    def node_id(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def drain(self, timeout: float) -> bool: ...

    async def stop(self) -> None: ...

    def shard_of(self, flow_id: str) -> int: ...

    def owner_of(self, flow_id: str) -> Ownership: ...

    def epoch_for(self, shard: int) -> int | None: ...

    def is_mine(self, shard: int) -> bool: ...

    async def report_fenced(self, shard: int, epoch: int) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...


async def _gather_logged(what: str, calls: list[Any]) -> None:
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            log.error("%s failed: %r", what, result)


class SingleNode:
    """No etcd: this node owns every shard. Its start claims all of them at one more than
    their stored epoch, which fences any process that wrote before."""

    def __init__(self, config: ClusterConfig, pool: Any, events: ShardEvents | None = None, *,
                 url: str | None = None) -> None:
        self.config = config
        self._pool = pool
        self._events = events or NoEvents()
        self._url = url or config.advertise_url
        self.incarnation = secrets.token_hex(6)
        self._held: dict[int, int] = {}
        self._ready = False

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            self._held = await claim_next(conn, range(self.config.shards), self.node_id,
                                          self.incarnation)
        await _gather_logged("shard_acquired", [self._events.shard_acquired(s, e)
                                                for s, e in sorted(self._held.items())])
        self._ready = True

    async def drain(self, timeout: float) -> bool:
        self._ready = False
        held, self._held = self._held, {}
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_gather_logged("shard_releasing", [
                self._events.shard_releasing(s, e) for s, e in sorted(held.items())]), timeout)
            return True
        return False

    async def stop(self) -> None:
        self._ready = False
        self._held = {}

    def shard_of(self, flow_id: str) -> int:
        return shard_of(flow_id, self.config.shards)

    def epoch_for(self, shard: int) -> int | None:
        return self._held.get(shard)

    def is_mine(self, shard: int) -> bool:
        return shard in self._held

    async def report_fenced(self, shard: int, epoch: int) -> None:
        """A write was fenced: another process claimed the shard; stop holding it."""
        if self._held.get(shard) == epoch:
            del self._held[shard]
            await _gather_logged("shard_lost", [self._events.shard_lost(shard)])

    def owner_of(self, flow_id: str) -> Ownership:
        shard = self.shard_of(flow_id)
        epoch = self._held.get(shard)
        return Ownership(shard, self.node_id, self._url, epoch or 0, epoch is not None, False, 0)

    def snapshot(self) -> dict[str, Any]:
        return {"mode": "single", "node_id": self.node_id, "incarnation": self.incarnation,
                "ready": self._ready, "shards": self.config.shards,
                "held": len(self._held)}


class Cluster:
    """Cluster mode: membership, shard map view, coordinator campaign, and the reconciler."""

    def __init__(self, config: ClusterConfig, pool: Any, events: ShardEvents | None = None, *,
                 url: str | None = None, etcd: Etcd | None = None) -> None:
        if not config.cluster_mode and etcd is None:
            raise ValueError("cluster mode needs DWASM_ETCD")
        self.config = config
        self._pool = pool
        self._events = events or NoEvents()
        self.etcd = etcd or connect(config.etcd_endpoints, timeout=config.etcd_timeout)
        self._own_etcd = etcd is None
        self._wake = asyncio.Event()
        self.membership = Membership(self.etcd, config, url=url,
                                     on_lost=lambda why: self._wake.set(),
                                     on_joined=lambda inc: self._wake.set())
        self.view = ShardMapView(self.etcd, config)
        self.view.add_listener(lambda m: self._wake.set())
        self.coordinator = Coordinator(self.etcd, config, self.membership, self.view,
                                       epoch_floor=self._epoch_floor if pool else None)
        #: shard → (epoch, incarnation it was claimed under)
        self._held: dict[int, tuple[int, str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self._draining = False

    # -- queries ----------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def incarnation(self) -> str:
        return self.membership.incarnation

    @property
    def ready(self) -> bool:
        """Accepting work: started, not draining, and holding a shard map (a node cut off from
        etcd stays ready: it serves and forwards with the map it has)."""
        return self._ready and self.view.map is not None

    @property
    def held(self) -> Mapping[int, int]:
        """shard → epoch of the shards this node runs now."""
        return {s: e for s, (e, _) in self._held.items()}

    def shard_of(self, flow_id: str) -> int:
        return shard_of(flow_id, self.config.shards)

    def epoch_for(self, shard: int) -> int | None:
        """The epoch to write ``shard``'s flows with, or None if this node must not."""
        held = self._held.get(shard)
        shard_map = self.view.map
        if held is None or shard_map is None:
            return None
        a = shard_map.assignments[shard]
        if (a.owner, a.incarnation, a.epoch) != (self.node_id, held[1], held[0]):
            return None
        return held[0]

    async def report_fenced(self, shard: int, epoch: int) -> None:
        """The service calls this when a write of ``shard`` failed with
        :class:`~topology.fencing.FencedError`: this node stops holding it (``shard_lost``)
        until the shard map gives it back."""
        held = self._held.get(shard)
        if held is not None and held[0] == epoch:
            del self._held[shard]
            log.warning("shard %d fenced at epoch %d: stopping it", shard, epoch)
            await _gather_logged("shard_lost", [self._events.shard_lost(shard)])
            self._wake.set()

    def is_mine(self, shard: int) -> bool:
        return self.epoch_for(shard) is not None

    def owner_of(self, flow_id: str) -> Ownership:
        shard = self.shard_of(flow_id)
        shard_map = self.view.map
        if shard_map is None:
            return Ownership(shard, None, None, 0, False, False, 0)
        a = shard_map.assignments[shard]
        epoch = self.epoch_for(shard)
        return Ownership(shard, a.owner, shard_map.owner_url(shard), a.epoch,
                         epoch is not None, a.in_handoff, shard_map.version)

    def snapshot(self) -> dict[str, Any]:
        """Everything ``GET /v1/cluster`` shows."""
        shard_map = self.view.map
        return {"mode": "cluster", "node_id": self.node_id, "incarnation": self.incarnation,
                "member": self.membership.alive, "ready": self.ready,
                "draining": self._draining, "leader": self.coordinator.is_leader,
                "etcd_connected": self.view.connected, "shards": self.config.shards,
                "held": sorted(self._held),
                "version": shard_map.version if shard_map else 0,
                "map": shard_map.to_json() if shard_map else None}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        """Joins (waiting up to ``timeout`` for etcd), then runs the view, the coordinator
        campaign and the reconciler in the background."""
        await self.membership.start(timeout)
        await self.view.start()
        await self.coordinator.start()
        self._task = asyncio.create_task(self._reconcile_loop(), name="dwasm-reconcile")
        self._ready = True

    async def drain(self, timeout: float) -> bool:
        """Turns unready, asks for this node's shards to be moved, and waits (up to
        ``timeout``) until none is left. True if all were handed over; otherwise the rest is
        released locally (flows stopped at a safe point) and False is returned."""
        self._ready = False
        self._draining = True
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self.membership.set_state("draining"), timeout)
            await self.view.wait_for(
                lambda m: not m.owned_by(self.node_id, self.incarnation),
                max(0.0, deadline - time.monotonic()))
            while self._held and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        except (TimeoutError, EtcdError) as exc:
            log.warning("drain did not complete (%r); releasing shards locally", exc)
        if not self._held:
            return True
        held, self._held = dict(self._held), {}
        await _gather_logged("shard_releasing", [self._events.shard_releasing(s, e)
                                                 for s, (e, _) in sorted(held.items())])
        return False

    async def stop(self) -> None:
        """Leaves the cluster: stops the tasks and revokes the lease (shards not handed over
        are reassigned at once, to new epochs)."""
        self._ready = False
        task, self._task = self._task, None
        await cancel_and_wait(task, what="shard reconciler")
        await self.coordinator.stop()
        await self.view.stop()
        await self.membership.stop(revoke=True)
        self._held = {}
        if self._own_etcd:
            await self.etcd.close()

    # -- reconciliation ---------------------------------------------------------------------

    async def _epoch_floor(self) -> Mapping[int, int]:
        async with self._pool.acquire() as conn:
            return await current_epochs(conn)

    async def _reconcile_loop(self) -> None:
        while True:
            self._wake.clear()
            retry = False
            try:
                retry = await self.reconcile()
            except Exception:
                log.exception("shard reconciliation failed; retrying")
                retry = True
            if retry:
                await wait_event(self._wake, 0.5)
            else:
                await self._wake.wait()

    async def reconcile(self) -> bool:
        """One pass (see the module docstring); True if something must be retried."""
        shard_map = self.view.map
        if shard_map is None:
            return False
        me, alive, inc = self.node_id, self.membership.alive, self.incarnation
        assignments = shard_map.assignments
        # A held shard is kept while the map still gives it to the incarnation that claimed it
        # at the same epoch, even while this node is cut off from etcd (nobody else can be
        # given it then without a new map; fencing covers the rest).
        lost = [s for s, (e, i) in self._held.items()
                if (assignments[s].owner, assignments[s].incarnation, assignments[s].epoch)
                != (me, i, e)]
        for s in lost:
            del self._held[s]
        if lost:
            log.info("lost %d shard(s)", len(lost))
            await _gather_logged("shard_lost", [self._events.shard_lost(s) for s in lost])
        if not alive:
            return False
        active = {s: a.epoch for s, a in enumerate(assignments)
                  if a.owner == me and a.incarnation == inc and not a.in_handoff}
        handoff = {s: a.epoch for s, a in enumerate(assignments)
                   if a.owner == me and a.incarnation == inc and a.in_handoff}
        releasing = {s: e for s, e in handoff.items() if s in self._held}
        if releasing:
            await _gather_logged("shard_releasing", [self._events.shard_releasing(s, e)
                                                     for s, e in sorted(releasing.items())])
            for s in releasing:
                self._held.pop(s, None)
        retry = False
        try:
            for s, e in sorted(handoff.items()):
                await self.membership.mark_released(s, e)
            await self.membership.forget_released(set(self.membership.released) - set(handoff))
        except EtcdError as exc:
            log.warning("cannot publish shard releases yet: %s", exc)
            retry = True
        wanted = {s: e for s, e in active.items() if s not in self._held}
        if wanted:
            claimed = await self._claim(wanted, inc)
            retry = retry or len(claimed) < len(wanted)
            self._held.update({s: (e, inc) for s, e in claimed.items()})
            await _gather_logged("shard_acquired", [self._events.shard_acquired(s, e)
                                                    for s, e in sorted(claimed.items())])
        return retry

    async def _claim(self, wanted: dict[int, int], inc: str) -> dict[int, int]:
        """Claims in PostgreSQL; the shards (→ epoch) actually claimed."""
        pending = dict(wanted)
        while pending:
            try:
                async with self._pool.acquire() as conn:
                    await claim_shards(conn, pending, self.node_id, inc)
                return pending
            except ClaimRefused as exc:
                log.error("%s: PostgreSQL is ahead of the shard map", exc)
                for s in exc.refused:
                    pending.pop(s, None)
            except Exception as exc:  # noqa: BLE001  database down, lock timeout: retry
                log.warning("cannot claim %d shard(s) yet: %r", len(pending), exc)
                return {}
        return {}


def create_topology(config: ClusterConfig, pool: Any, events: ShardEvents | None = None, *,
                    url: str | None = None) -> Cluster | SingleNode:
    """:class:`Cluster` when ``DWASM_ETCD`` is set, else :class:`SingleNode`."""
    if config.cluster_mode:
        return Cluster(config, pool, events, url=url)
    return SingleNode(config, pool, events, url=url)


__all__ = ["Cluster", "NoEvents", "Ownership", "ShardEvents", "ShardMap", "SingleNode",
           "Topology", "create_topology"]
