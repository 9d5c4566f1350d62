"""The coordinator: one node, chosen by election, that writes the shard map.

Every node runs a :class:`Coordinator`; it campaigns with the node's member lease (so losing the
membership also ends the leadership). The leader re-reads the members and the map whenever a
member key changes (a watch) and at least every ``coordinator_tick`` seconds (handoff
timeouts, missed events), computes :func:`~topology.shards.plan`, and when the result differs
writes it with one transaction that requires both the map's mod revision as read
(compare-and-swap) and the leader's own election key (so a deposed leader cannot write). The
version therefore grows by exactly one per change, and only the leader ever writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from .aio import cancel_and_wait, wait_event
from .config import ClusterConfig
from .election import Election, Leadership, NotCandidate
from .etcd import Compare, Etcd, EtcdError, Put, WatchCompacted
from .membership import Membership, members_prefix
from .shards import Member, ShardMap, ShardMapError, plan
from .view import ShardMapView, shard_map_key

log = logging.getLogger("dwasm.topology")

EpochFloor = Callable[[], Awaitable[Mapping[int, int]]]


class LeadershipLost(EtcdError):
    """Our election key is gone; campaign again."""


def parse_members(kvs: list, prefix: bytes) -> dict[str, Member]:  # type: ignore[type-arg]
    """node id → member record of the keys under ``prefix`` (malformed ones are skipped)."""
    out = {}
    for kv in kvs:
        try:
            member = Member.from_json(json.loads(kv.value))
        except (ValueError, ShardMapError) as exc:
            log.error("ignoring malformed member key %r: %s", kv.key, exc)
            continue
        if kv.key != prefix + member.node_id.encode():
            log.error("ignoring member key %r naming node %r", kv.key, member.node_id)
            continue
        out[member.node_id] = member
    return out


class Coordinator:
    """Campaigns for leadership and, while leading, keeps the shard map current."""

    def __init__(self, etcd: Etcd, config: ClusterConfig, membership: Membership,
                 view: ShardMapView, *, epoch_floor: EpochFloor | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._etcd = etcd
        self._config = config
        self._membership = membership
        self._view = view
        self._epoch_floor = epoch_floor
        self._clock = clock
        self._members_prefix = members_prefix(config)
        self._map_key = shard_map_key(config)
        self._election_prefix = (config.prefix + "coordinator/").encode()
        self._task: asyncio.Task[None] | None = None
        self._election: Election | None = None
        self._leadership: Leadership | None = None
        #: Number of shard maps this node wrote (for tests and metrics).
        self.writes = 0

    @property
    def is_leader(self) -> bool:
        return self._leadership is not None and self._membership.alive

    async def leader(self) -> str | None:
        """``node/incarnation`` of the current leader according to etcd (None: no candidate)."""
        election = Election(self._etcd, self._election_prefix, lease=0, value=b"")
        value = await election.leader()
        return value.decode() if value is not None else None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dwasm-coordinator")

    async def stop(self) -> None:
        """Stops campaigning; resigns if leading, so another node takes over at once."""
        election, leading = self._election, self._leadership
        task, self._task = self._task, None
        await cancel_and_wait(task, what="coordinator")
        if election is not None and leading is not None:
            await election.resign()
        self._leadership = None

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._membership.alive:
                await asyncio.sleep(0.05)
                continue
            lease = self._membership.lease
            value = f"{self._config.node_id}/{self._membership.incarnation}".encode()
            self._election = Election(self._etcd, self._election_prefix, lease=lease,
                                      value=value)
            try:
                leadership = await self._campaign(self._election, lease)
                if leadership is None:
                    continue
                self._leadership = leadership
                log.info("%s leads the cluster (coordinator)", value.decode())
                backoff = 0.1
                await self._lead(leadership, lease)
            except (NotCandidate, LeadershipLost) as exc:
                log.info("coordinator: %s", exc)
                await asyncio.sleep(0.05)
            except EtcdError as exc:
                log.warning("coordinator: etcd error: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except Exception:  # a bug must not end the campaign for good
                log.exception("coordinator failed; campaigning again")
                await asyncio.sleep(1.0)
            finally:
                self._leadership = None

    async def _campaign(self, election: Election, lease: int) -> Leadership | None:
        """Campaigns until leading; None if our lease changes meanwhile (re-campaign with the
        new one)."""
        campaign = asyncio.ensure_future(election.campaign())
        try:
            while not campaign.done():
                await asyncio.wait({campaign}, timeout=0.2)
                if not campaign.done() and (self._membership.lease != lease
                                            or not self._membership.alive):
                    return None
            return campaign.result()
        finally:
            await cancel_and_wait(campaign, what="election campaign")

    async def _lead(self, leadership: Leadership, lease: int) -> None:
        dirty = asyncio.Event()
        dirty.set()
        watcher = asyncio.create_task(self._watch_members(dirty), name="dwasm-coord-watch")
        try:
            while self._membership.alive and self._membership.lease == lease:
                await wait_event(dirty, self._config.coordinator_tick)
                dirty.clear()
                if not await self.step(leadership):
                    dirty.set()
        finally:
            await cancel_and_wait(watcher, what="member watch")

    async def _watch_members(self, dirty: asyncio.Event) -> None:
        while True:
            try:
                async for batch in self._etcd.watch(self._members_prefix, prefix=True):
                    if batch.events:
                        dirty.set()
            except (WatchCompacted, EtcdError):
                dirty.set()
                await asyncio.sleep(0.2)

    async def step(self, leadership: Leadership) -> bool:
        """One round: read, plan, write if changed. False if the write lost a race (retry at
        once); raises :class:`LeadershipLost` when no longer the leader."""
        kvs, _ = await self._etcd.get_prefix(self._members_prefix)
        members = parse_members(kvs, self._members_prefix)
        kv, _ = await self._etcd.get(self._map_key)
        if kv is None:
            # Never roll the version back below what this node has seen (etcd lost its data).
            current = ShardMap.empty(self._config.shards)
            current = ShardMap(self._view.version, current.assignments, {})
        else:
            try:
                current = ShardMap.loads(kv.value)
            except ShardMapError as exc:
                log.error("the shard map in etcd is malformed (%s); not touching it", exc)
                return True
            if current.shards != self._config.shards:
                log.error("the shard map has %d shards but DWASM_SHARDS is %d; not touching it",
                          current.shards, self._config.shards)
                return True
        now = self._clock()
        options = {"now": now, "handoff_timeout": self._config.handoff_timeout,
                   "max_moves": self._config.max_moves}
        new = plan(current, members, **options)  # type: ignore[arg-type]
        if new is current:
            return True
        moved = any(a.epoch != b.epoch for a, b in zip(current.assignments, new.assignments))
        if moved and self._epoch_floor is not None:
            try:
                floor = await self._epoch_floor()
            except Exception as exc:  # noqa: BLE001  PostgreSQL down: no owner can claim anyway
                log.warning("coordinator: cannot read shard epochs (%s); retrying", exc)
                return True
            new = plan(current, members, epoch_floor=floor, **options)  # type: ignore[arg-type]
        guard = (Compare.mod_revision(self._map_key, kv.mod_revision) if kv is not None
                 else Compare.absent(self._map_key))
        result = await self._etcd.txn([guard, leadership.guard()],
                                      [Put(self._map_key, new.dumps())])
        if result.succeeded:
            self.writes += 1
            log.info("shard map version %d written (%d members)", new.version, len(members))
            return True
        mine, _ = await self._etcd.get(leadership.key)
        if mine is None or mine.create_revision != leadership.create_revision:
            raise LeadershipLost("the election key is gone")
        return False
