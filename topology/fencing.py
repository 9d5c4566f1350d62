"""Fencing in PostgreSQL: shard epochs that only grow, and the check every flow write makes.

etcd leases are not locks: a node can believe it owns a shard after its lease expired (a GC
pause, SIGSTOP, a partition). So ownership is enforced where the data is. A new owner *claims*
a shard by raising its epoch in ``shard_epochs`` (:func:`claim_shards`); every transaction that
checkpoints or changes a flow calls :func:`check_epoch` first. That is a locking read
(``FOR SHARE``) of the shard's row, held until the transaction ends, and it conflicts with the
claim's row update:

- the claim committed first → the check sees the new epoch → :class:`FencedError`;
- the check came first → the claim waits until the writer's transaction ends, so the write
  lands *before* the new owner starts (and the new owner reads it);
- under REPEATABLE READ a claim committed after the writer's snapshot makes the locking read fail
  with a serialization error, reported as :class:`FencedError` as well.

A writer paused inside its transaction would block the claim for as long as it holds the lock;
:func:`check_epoch` therefore sets ``idle_in_transaction_session_timeout`` for the transaction,
so PostgreSQL ends such a session (and its locks) after ``idle_timeout`` seconds. Claims use
``lock_timeout`` so that they fail (and are retried) instead of hanging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg


class FencedError(Exception):
    """The writer no longer owns the shard at its epoch: abort, stop the shard's flows."""

    def __init__(self, shard: int, epoch: int, current: int | None,
                 owner: str | None = None, *, detail: str | None = None) -> None:
        now = detail or ("never claimed" if current is None
                         else f"now epoch {current} of {owner}")
        super().__init__(f"shard {shard}: epoch {epoch} is fenced ({now})")
        self.shard = shard
        self.epoch = epoch
        self.current = current
        self.owner = owner


class ClaimRefused(Exception):
    """The shard's stored epoch is already at least the claimed one (a newer owner claimed)."""

    def __init__(self, refused: Mapping[int, tuple[int, str]]) -> None:
        shown = ", ".join(f"{s} (epoch {e} of {o})" for s, (e, o) in sorted(refused.items())[:8])
        super().__init__(f"claim refused for {len(refused)} shard(s): {shown}")
        #: shard → (stored epoch, owner)
        self.refused = dict(refused)


_CLAIM = """
INSERT INTO shard_epochs AS se (shard, epoch, owner, incarnation)
SELECT c.shard, c.epoch, $3, $4
FROM unnest($1::int[], $2::bigint[]) AS c (shard, epoch)
ORDER BY c.shard
ON CONFLICT (shard) DO UPDATE
   SET epoch = EXCLUDED.epoch, owner = EXCLUDED.owner, incarnation = EXCLUDED.incarnation,
       claimed_at = now()
 WHERE se.epoch < EXCLUDED.epoch
    OR (se.epoch = EXCLUDED.epoch AND se.owner = EXCLUDED.owner
        AND se.incarnation = EXCLUDED.incarnation)
RETURNING shard"""

_BUMP = """
INSERT INTO shard_epochs AS se (shard, epoch, owner, incarnation)
SELECT s, 1, $2, $3 FROM unnest($1::int[]) AS s ORDER BY s
ON CONFLICT (shard) DO UPDATE
   SET epoch = se.epoch + 1, owner = EXCLUDED.owner, incarnation = EXCLUDED.incarnation,
       claimed_at = now()
RETURNING shard, epoch"""

_CHECK = """
SELECT set_config('idle_in_transaction_session_timeout', $2, true) AS _, epoch, owner
FROM shard_epochs WHERE shard = $1 FOR SHARE"""


#: Key space of the shards' fencing locks (advisory, (FENCE_LOCK, shard)): the service's
#: one-statement writes (migrations/0003_fast_paths.sql) hold it shared while they check and
#: write; a claim takes it exclusively, so it waits for them, and they see its new epoch.
FENCE_LOCK = 1685545331

_LOCK_FOR_CLAIM = """
SELECT pg_advisory_xact_lock($1, s) FROM (SELECT s FROM unnest($2::int[]) AS s ORDER BY s) AS q"""


async def claim_shards(conn: Any, claims: Mapping[int, int], owner: str, incarnation: str, *,
                       lock_timeout: float = 5.0) -> None:
    """Raises each shard's epoch to the claimed one, in one transaction: all or none.

    Idempotent for the same owner and incarnation at the same epoch. Raises
    :class:`ClaimRefused` when a shard's stored epoch is already higher (or equal, for another
    claimer); ``asyncpg.LockNotAvailableError`` when a writer holds a shard's row for longer
    than ``lock_timeout`` seconds (retry later).
    """
    if not claims:
        return
    shards = sorted(claims)
    epochs = [claims[s] for s in shards]
    if min(epochs) < 1:
        raise ValueError("epochs start at 1")
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout * 1000)}")
        await conn.execute(_LOCK_FOR_CLAIM, FENCE_LOCK, shards)
        done = {r["shard"] for r in await conn.fetch(_CLAIM, shards, epochs, owner, incarnation)}
        if len(done) != len(shards):
            rows = await conn.fetch("SELECT shard, epoch, owner FROM shard_epochs "
                                    "WHERE shard = ANY($1::int[])",
                                    [s for s in shards if s not in done])
            raise ClaimRefused({r["shard"]: (r["epoch"], r["owner"]) for r in rows})


async def claim_shard(conn: Any, shard: int, owner: str, incarnation: str, epoch: int) -> None:
    """:func:`claim_shards` for one shard."""
    await claim_shards(conn, {shard: epoch}, owner, incarnation)


async def claim_next(conn: Any, shards: Iterable[int], owner: str, incarnation: str, *,
                     lock_timeout: float = 5.0) -> dict[int, int]:
    """Claims the shards at one more than their stored epoch (1 for new ones); shard → epoch.

    For a single node, which owns every shard without a shard map: each start fences whatever
    process wrote before it.
    """
    ordered = sorted(set(shards))
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout * 1000)}")
        await conn.execute(_LOCK_FOR_CLAIM, FENCE_LOCK, ordered)
        rows = await conn.fetch(_BUMP, ordered, owner, incarnation)
    return {r["shard"]: r["epoch"] for r in rows}


async def check_epoch(conn: Any, shard: int, epoch: int, *,
                      idle_timeout: float | None = 10.0) -> None:
    """Inside the writer's transaction, before its writes: raises :class:`FencedError` unless
    ``shard`` is still at ``epoch``, and keeps a claim from passing until the transaction ends.

    ``idle_timeout`` (seconds; None: leave the setting alone) bounds how long this transaction
    may sit idle before PostgreSQL terminates its session: a paused writer cannot hold off the
    new owner's claim for longer than that.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("check_epoch must run inside the writer's transaction")
    timeout = "" if idle_timeout is None else f"{max(1, int(idle_timeout * 1000))}"
    try:
        if timeout:
            row = await conn.fetchrow(_CHECK, shard, timeout)
        else:
            row = await conn.fetchrow("SELECT epoch, owner FROM shard_epochs WHERE shard = $1 "
                                      "FOR SHARE", shard)
    except asyncpg.SerializationError:
        raise FencedError(shard, epoch, None,
                          detail="claimed by another owner during this transaction") from None
    if row is None:
        raise FencedError(shard, epoch, None)
    if row["epoch"] != epoch:
        raise FencedError(shard, epoch, row["epoch"], row["owner"])


async def check_epochs(conn: Any, epochs: Mapping[int, int], *,
                       idle_timeout: float | None = 10.0) -> None:
    """:func:`check_epoch` for several shards (a write touching flows of several shards)."""
    for shard in sorted(epochs):
        await check_epoch(conn, shard, epochs[shard], idle_timeout=idle_timeout)


async def current_epochs(conn: Any) -> dict[int, int]:
    """shard → stored epoch, for every claimed shard."""
    rows = await conn.fetch("SELECT shard, epoch FROM shard_epochs")
    return {r["shard"]: r["epoch"] for r in rows}
