"""Leader election on etcd, built from a lease and transactions (aetcd has none).

Each candidate creates ``<prefix><lease id>`` attached to its lease, only if absent. Candidates
are ordered by the key's create revision; the lowest is the leader. A follower watches the key
just before its own and re-checks when it disappears (lease expired, resigned), so there is no
thundering herd. Leadership is held as long as the key exists: writes that must come from the
leader carry :meth:`Leadership.guard` in their transaction, so a deposed leader whose lease
expired while it was paused cannot write, even before it notices.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .etcd import Compare, Etcd, EtcdError, Put, WatchCompacted


class NotCandidate(EtcdError):
    """Our election key vanished (the lease expired): campaign again with a new lease."""


@dataclass(frozen=True)
class Leadership:
    """Proof of leadership: our key and the revision that created it."""

    key: bytes
    create_revision: int
    value: bytes

    def guard(self) -> Compare:
        """Holds in a transaction only while this leadership lasts."""
        return Compare.created_at(self.key, self.create_revision)


class Election:
    """One candidate in the election under ``prefix`` (e.g. ``/dwasm/coordinator/``)."""

    def __init__(self, etcd: Etcd, prefix: bytes, *, lease: int, value: bytes) -> None:
        self._etcd = etcd
        self._prefix = prefix
        self._lease = lease
        self._value = value
        self.key = prefix + f"{lease:016x}".encode()

    async def campaign(self) -> Leadership:
        """Returns once this candidate leads. Raises :class:`NotCandidate` if its key vanishes,
        :class:`~topology.etcd.EtcdUnavailable` if etcd cannot be reached."""
        await self._etcd.txn([Compare.absent(self.key)], [Put(self.key, self._value, self._lease)])
        while True:
            candidates, revision = await self._etcd.get_prefix(self._prefix)
            mine = next((c for c in candidates if c.key == self.key), None)
            if mine is None or mine.lease != self._lease:
                raise NotCandidate(f"election key {self.key.decode()} is gone")
            ahead = [c for c in candidates if c.create_revision < mine.create_revision]
            if not ahead:
                return Leadership(self.key, mine.create_revision, self._value)
            predecessor = max(ahead, key=lambda c: c.create_revision)
            await self._wait_deleted(predecessor.key, revision + 1)

    async def _wait_deleted(self, key: bytes, start_revision: int) -> None:
        try:
            async for batch in self._etcd.watch(key, start_revision=start_revision):
                if any(e.kind == "delete" for e in batch.events):
                    return
        except WatchCompacted:
            return  # re-read the candidates

    async def leader(self) -> bytes | None:
        """The current leader's value (None when there is no candidate)."""
        candidates, _ = await self._etcd.get_prefix(self._prefix)
        if not candidates:
            return None
        return min(candidates, key=lambda c: c.create_revision).value

    async def resign(self) -> None:
        """Deletes our key (the next candidate takes over at once)."""
        with contextlib.suppress(EtcdError):
            await self._etcd.delete(self.key)
