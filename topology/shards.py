"""Shards and the shard map: which node owns which flows, and how ownership moves.

A flow belongs to shard ``shard_of(flow_id, shards)``. The hash is CRC-32 of the id's UTF-8
bytes (the value ``flows.shard`` already stores; :func:`flow_hash`) modulo the shard count: stable
across processes and versions, unlike Python's ``hash()``, and computable in SQL from the stored
column (``flows.shard % shards``).

The shard map (:class:`ShardMap`) is one JSON document in etcd: a ``version`` that grows by one
on every change, the live ``members`` it was computed from, and per shard an
:class:`Assignment`: owner node and incarnation, the fencing ``epoch``, and optionally a handoff
target. :func:`plan` computes the next map from the current one and the live members; it is pure
(time is an argument) so it can be property-tested. See docs/cluster.md for the protocol.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

MEMBER_STATES = ("ready", "draining")


def flow_hash(flow_id: str) -> int:
    """A stable 31-bit hash of a flow id: CRC-32 of its UTF-8 bytes (``flows.shard``)."""
    return zlib.crc32(flow_id.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF


def shard_of(flow_id: str, shards: int) -> int:
    """The shard (0..shards-1) a flow belongs to."""
    if shards < 1:
        raise ValueError(f"shard count must be positive, not {shards}")
    return flow_hash(flow_id) % shards


class ShardMapError(ValueError):
    """A shard map document is malformed."""


@dataclass(frozen=True)
class Member:
    """A live member as the coordinator sees it (its key under ``<prefix>members/``)."""

    node_id: str
    incarnation: str
    url: str | None = None
    state: str = "ready"
    started_at: float = 0.0
    #: shard → epoch: shards in handoff that this member has stopped (its acknowledgements).
    released: Mapping[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "incarnation": self.incarnation, "url": self.url,
                "state": self.state, "started_at": self.started_at,
                "released": {str(k): v for k, v in sorted(self.released.items())}}

    @classmethod
    def from_json(cls, data: Any) -> Member:
        try:
            state = str(data.get("state", "ready"))
            if state not in MEMBER_STATES:
                raise ShardMapError(f"unknown member state {state!r}")
            return cls(node_id=str(data["node_id"]), incarnation=str(data["incarnation"]),
                       url=data.get("url"), state=state,
                       started_at=float(data.get("started_at", 0.0)),
                       released={int(k): int(v)
                                 for k, v in (data.get("released") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ShardMapError(f"malformed member record: {exc}") from None


@dataclass(frozen=True)
class Assignment:
    """One shard's owner and epoch.

    ``owner`` is None for a shard never assigned. While ``next_owner`` is set the shard is in
    *handoff*: the owner still holds it (and writes with ``epoch``) but must stop its flows and
    acknowledge; then (or after the handoff timeout, or when the owner dies) the next owner gets
    it with ``epoch + 1``.
    """

    owner: str | None = None
    incarnation: str | None = None
    epoch: int = 0
    next_owner: str | None = None
    next_incarnation: str | None = None
    since: float | None = None  # when the handoff began (coordinator's wall clock)

    @property
    def in_handoff(self) -> bool:
        return self.next_owner is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"owner": self.owner, "incarnation": self.incarnation,
                               "epoch": self.epoch}
        if self.next_owner is not None:
            out.update(next_owner=self.next_owner, next_incarnation=self.next_incarnation,
                       since=self.since)
        return out

    @classmethod
    def from_json(cls, data: Any) -> Assignment:
        try:
            return cls(owner=data.get("owner"), incarnation=data.get("incarnation"),
                       epoch=int(data.get("epoch", 0)), next_owner=data.get("next_owner"),
                       next_incarnation=data.get("next_incarnation"),
                       since=None if data.get("since") is None else float(data["since"]))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ShardMapError(f"malformed shard assignment: {exc}") from None


@dataclass(frozen=True)
class ShardMap:
    """The whole cluster's assignment at one version."""

    version: int
    assignments: tuple[Assignment, ...]
    #: node id → the member record (released acks dropped) of the members live at this version.
    members: Mapping[str, Member] = field(default_factory=dict)

    @classmethod
    def empty(cls, shards: int) -> ShardMap:
        """Version 0: nothing assigned."""
        return cls(0, tuple(Assignment() for _ in range(shards)), {})

    @property
    def shards(self) -> int:
        return len(self.assignments)

    def owner_url(self, shard: int) -> str | None:
        owner = self.assignments[shard].owner
        member = self.members.get(owner) if owner is not None else None
        return member.url if member is not None else None

    def owned_by(self, node_id: str, incarnation: str) -> list[int]:
        """Shards whose owner is that incarnation (in handoff or not)."""
        return [s for s, a in enumerate(self.assignments)
                if a.owner == node_id and a.incarnation == incarnation]

    def same_content(self, other: ShardMap) -> bool:
        """Equal but for the version."""
        return self.assignments == other.assignments and dict(self.members) == dict(other.members)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "shards": self.shards,
                "members": {k: _summary(m).to_json() for k, m in sorted(self.members.items())},
                "assignments": [a.to_json() for a in self.assignments]}

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes | str) -> ShardMap:
        """Parses :meth:`dumps` output; raises :class:`ShardMapError`."""
        try:
            doc = json.loads(data)
            version = int(doc["version"])
            assignments = tuple(Assignment.from_json(a) for a in doc["assignments"])
            members = {str(k): Member.from_json(v) for k, v in doc.get("members", {}).items()}
            if int(doc.get("shards", len(assignments))) != len(assignments) or not assignments:
                raise ShardMapError("shard count does not match the assignments")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ShardMapError):
                raise
            raise ShardMapError(f"malformed shard map: {exc}") from None
        if version < 0:
            raise ShardMapError("negative version")
        return cls(version, assignments, members)


def _summary(member: Member) -> Member:
    return replace(member, released={})


def plan(current: ShardMap, members: Mapping[str, Member], *, now: float,
         handoff_timeout: float, max_moves: int,
         epoch_floor: Mapping[int, int] | None = None) -> ShardMap:
    """The next shard map; ``current`` itself when nothing needs to change.

    ``members`` are the live members (node id → record). In order:

    1. A shard whose owner is not live (never assigned, lease expired, or the node restarted as
       a new incarnation) is *orphaned*: it goes straight to a ready member, preferring the same
       node id (a restarted node gets its shards back) and otherwise the least loaded one.
    2. A shard in handoff completes (owner := target, epoch + 1) once the owner acknowledged
       the release at this epoch, or after ``handoff_timeout``. A target that is no longer a
       ready member is replaced.
    3. Shards of draining members start a handoff to the least loaded ready members (all at
       once: a draining node is leaving).
    4. While the most and least loaded ready members differ by more than one shard, shards of
       the most loaded start a handoff to the least loaded, with at most ``max_moves`` such
       rebalancing handoffs in flight.

    Load counts a shard for its handoff target. An epoch only grows: a new owner gets
    ``max(epoch, epoch_floor[shard]) + 1`` (``epoch_floor``: the epochs already claimed in
    PostgreSQL, so that a map rebuilt from nothing still fences older owners).
    """
    floor = epoch_floor or {}
    ready = {n: m for n, m in members.items() if m.state == "ready"}

    def live(node: str | None, incarnation: str | None) -> bool:
        member = members.get(node) if node is not None else None
        return member is not None and member.incarnation == incarnation

    def is_ready(node: str | None, incarnation: str | None) -> bool:
        member = ready.get(node) if node is not None else None
        return member is not None and member.incarnation == incarnation

    def take(shard: int, node: str, a: Assignment) -> Assignment:
        return Assignment(node, ready[node].incarnation,
                          max(a.epoch, floor.get(shard, 0)) + 1)

    out = list(current.assignments)
    load = {n: 0 for n in ready}
    orphans: list[int] = []
    retarget: list[int] = []
    for shard, a in enumerate(out):
        if not live(a.owner, a.incarnation):
            orphans.append(shard)
            continue
        if a.in_handoff:
            target_ok = is_ready(a.next_owner, a.next_incarnation)
            released = members[a.owner].released.get(shard) == a.epoch  # type: ignore[index]
            expired = a.since is not None and now - a.since >= handoff_timeout
            if target_ok and (released or expired):
                out[shard] = take(shard, a.next_owner, a)  # type: ignore[arg-type]
                load[a.next_owner] += 1  # type: ignore[index]
            elif target_ok:
                load[a.next_owner] += 1  # type: ignore[index]
            elif released:
                orphans.append(shard)
            else:
                retarget.append(shard)
            continue
        if a.owner in load:
            load[a.owner] += 1

    def least_loaded() -> str:
        return min(load, key=lambda n: (load[n], n))

    if ready:
        quota = -(-len(out) // len(ready))
        for shard in orphans:
            a = out[shard]
            preferred = a.owner if a.owner in ready and load[a.owner] < quota else None
            node = preferred or least_loaded()
            out[shard] = take(shard, node, a)
            load[node] += 1
        for shard in retarget:
            node = least_loaded()
            a = out[shard]
            out[shard] = replace(a, next_owner=node, next_incarnation=ready[node].incarnation)
            load[node] += 1
        for shard, a in enumerate(out):  # draining (live, not ready) owners
            if not a.in_handoff and a.owner not in ready and live(a.owner, a.incarnation):
                node = least_loaded()
                out[shard] = replace(a, next_owner=node,
                                     next_incarnation=ready[node].incarnation, since=now)
                load[node] += 1
        in_flight = sum(1 for a in out if a.in_handoff and a.owner in ready)
        while in_flight < max_moves and len(load) > 1:
            high = max(load, key=lambda n: (load[n], n))
            low = least_loaded()
            if load[high] - load[low] <= 1:
                break
            movable = [s for s, a in enumerate(out) if a.owner == high and not a.in_handoff]
            if not movable:
                break
            shard = movable[-1]
            out[shard] = replace(out[shard], next_owner=low,
                                 next_incarnation=ready[low].incarnation, since=now)
            load[high] -= 1
            load[low] += 1
            in_flight += 1
    else:
        for shard in retarget:  # nowhere to go: the owner keeps it
            out[shard] = replace(out[shard], next_owner=None, next_incarnation=None, since=None)

    candidate = ShardMap(current.version + 1, tuple(out),
                         {n: _summary(m) for n, m in members.items()})
    return current if candidate.same_content(current) else candidate
