"""Retention of finished flows and garbage collection of memory chunks.

Two background jobs keep a long-running database from growing forever (docs/flows.md,
"Retention and garbage collection"):

* **Retention** (:func:`delete_finished_batch`, batches driven by
  ``FlowEngine.retention_pass``) deletes finished flows whose ``finished_at`` is older than the
  retention, with their events, signals and tasks. Each node deletes
  only in the shards it holds, fenced like every flow write: the batch's transaction checks
  the shards' epochs (``dwasm_fenced_shards``) before it deletes, so a node that lost a shard
  deletes nothing there. A parent is deleted only once its children are gone, and a child only
  once its parent has finished (the parent reads its children's outcomes from their rows).
* **Chunk GC** (:func:`collect_chunks`) deletes chunks that no flow's latest manifest references
  and that no checkpoint inserted or re-sent for ``grace`` seconds (``chunks.touched_at``). That
  second condition closes the race with the engines' chunk caches: a checkpoint skips sending
  a chunk only while its cache trusts it, for less than ``chunk_ttl`` after the chunk was last
  known touched (app/flows/chunks.py), and ``grace`` is at least twice that. It runs on one node
  at a time (a PostgreSQL advisory lock), not at all while a node of the previous version may
  still be checkpointing (``gc_state``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from topology.fencing import FencedError

from .chunks import CHUNK_CACHE_TTL

log = logging.getLogger("dwasm.retention")

DEFAULT_RETENTION = 30 * 86400.0
RETENTION_INTERVAL = 60.0  # seconds between retention passes (jittered ±20 %)
RETENTION_BATCH = 500  # flows per transaction
GC_INTERVAL = 600.0  # seconds between chunk GC passes (jittered ±20 %)
GC_BATCH = 5000  # chunks per statement
MAX_BATCHES = 100  # per pass; the next pass goes on
#: Key of the session advisory lock that lets one node at a time collect chunks ("dwGC", 1).
GC_LOCK = (0x64774743, 1)


@dataclass(frozen=True)
class RetentionConfig:
    """How long finished flows stay, and the jobs' timings. ``retention`` 0: forever."""

    retention: float = DEFAULT_RETENTION
    retention_interval: float = RETENTION_INTERVAL
    retention_batch: int = RETENTION_BATCH
    gc_interval: float = GC_INTERVAL
    gc_batch: int = GC_BATCH
    chunk_ttl: float = CHUNK_CACHE_TTL
    #: seconds a chunk must stay untouched before the GC may delete it; None: 3 × chunk_ttl
    gc_grace: float | None = None

    def __post_init__(self) -> None:
        if self.retention < 0 or self.chunk_ttl <= 0:
            raise ValueError("retention must be >= 0 and chunk_ttl > 0")
        if self.gc_grace is not None and self.gc_grace < 2 * self.chunk_ttl:
            raise ValueError(f"gc_grace ({self.gc_grace} s) must be at least twice the chunk "
                             f"cache TTL ({self.chunk_ttl} s)")

    @property
    def grace(self) -> float:
        return 3 * self.chunk_ttl if self.gc_grace is None else self.gc_grace


# --- retention ---------------------------------------------------------------------------------

_PICK = """
SELECT f.id, f.shard FROM flows f
 WHERE f.finished_at < now() - make_interval(secs => $1)
   AND f.status IN ('completed', 'failed', 'cancelled') AND {cond}
   AND NOT EXISTS (SELECT 1 FROM flows c WHERE c.parent_id = f.id)
   AND (f.parent_id IS NULL
        OR EXISTS (SELECT 1 FROM flows p WHERE p.id = f.parent_id
                      AND p.status IN ('completed', 'failed', 'cancelled')))
 ORDER BY f.finished_at LIMIT $2
 FOR UPDATE OF f SKIP LOCKED"""

_DELETE = """
WITH v AS (SELECT unnest($1::text[]) AS id),
     e AS (DELETE FROM events WHERE flow_id IN (SELECT id FROM v) RETURNING 1),
     s AS (DELETE FROM signals WHERE flow_id IN (SELECT id FROM v) RETURNING 1),
     t AS (DELETE FROM tasks WHERE flow_id IN (SELECT id FROM v) RETURNING 1),
     f AS (DELETE FROM flows WHERE id IN (SELECT id FROM v) RETURNING 1)
SELECT (SELECT count(*) FROM f) AS flows, (SELECT count(*) FROM e) AS events,
       (SELECT count(*) FROM s) AS signals, (SELECT count(*) FROM t) AS tasks"""


@dataclass
class Deleted:
    flows: int = 0
    events: int = 0
    signals: int = 0
    tasks: int = 0

    def add(self, other: Deleted) -> None:
        self.flows += other.flows
        self.events += other.events
        self.signals += other.signals
        self.tasks += other.tasks


async def delete_finished_batch(pool: Any, retention: float, limit: int, shards: Any,
                                epochs: dict[int, int] | None) -> Deleted:
    """Delete up to ``limit`` finished flows older than ``retention`` seconds in ``shards``
    (an ``app.flows.store.Shards``), with their events, signals and tasks, in one
    transaction. ``epochs``: shard → epoch this node holds (None: unfenced, no topology);
    raises :class:`FencedError` (nothing deleted) if one of the batch's shards moved on."""
    cond, args = shards.sql("f.shard", 3)
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_PICK.format(cond=cond), retention, limit, *args)
        if not rows:
            return Deleted()
        if epochs is not None:
            held = sorted({r["shard"] % shards.count for r in rows})
            fenced = await conn.fetch("SELECT s FROM dwasm_fenced_shards($1::int[], "
                                      "$2::bigint[]) AS s",
                                      held, [epochs.get(s, 0) for s in held])
            if fenced:
                shard = fenced[0]["s"]
                raise FencedError(shard, epochs.get(shard, 0), None,
                                  detail="retention: the shard moved")
        out = await conn.fetchrow(_DELETE, [r["id"] for r in rows])
        return Deleted(out["flows"], out["events"], out["signals"], out["tasks"])


# --- chunk GC ----------------------------------------------------------------------------------

# Referenced: named in a flow's latest manifest (memories[].chunks[], docs/snapshot-format.md).
# The mark is computed in the same statement (the same snapshot) as the delete; the delete
# re-checks touched_at on the locked row, so a chunk a checkpoint touched meanwhile stays.
_COLLECT = """
WITH refs AS MATERIALIZED (
        SELECT DISTINCT jsonb_array_elements_text(m -> 'chunks') AS hash
          FROM flows f, jsonb_array_elements(f.checkpoint -> 'memories') AS m
         WHERE f.checkpoint IS NOT NULL),
     victims AS (
        SELECT c.hash FROM chunks c
         WHERE c.touched_at < now() - make_interval(secs => $1)
           AND (c.touched_at, c.hash) > ($2::timestamptz, $3::text)
           AND NOT EXISTS (SELECT 1 FROM refs r WHERE r.hash = c.hash)
         ORDER BY c.touched_at, c.hash LIMIT $4
         FOR UPDATE OF c SKIP LOCKED)
DELETE FROM chunks c USING victims v
 WHERE c.hash = v.hash AND c.touched_at < now() - make_interval(secs => $1)
RETURNING c.hash, c.touched_at, length(c.data) AS size"""


@dataclass
class Collected:
    chunks: int = 0
    bytes: int = 0
    ran: bool = False  # False: another node holds the GC lock, or old nodes still checkpoint


async def collect_chunks(pool: Any, grace: float, batch: int,
                         max_batches: int = MAX_BATCHES) -> Collected:
    """Delete unreferenced chunks untouched for ``grace`` seconds, ``batch`` per statement,
    while holding the GC lock (skipped if another node holds it)."""
    from datetime import datetime

    out = Collected()
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *GC_LOCK):
            return out
        try:
            legacy = await conn.fetchval(
                "SELECT legacy_checkpoint_at > now() - make_interval(secs => $1) "
                "FROM gc_state", grace)
            if legacy:
                log.info("chunk GC waits: a node of the previous version checkpointed less "
                         "than %.0f s ago", grace)
                return out
            out.ran = True
            if not await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM chunks "
                    "WHERE touched_at < now() - make_interval(secs => $1))", grace):
                return out
            after: tuple[datetime, str] = (datetime(1970, 1, 1, tzinfo=UTC), "")
            for _ in range(max_batches):
                rows = await conn.fetch(_COLLECT, grace, *after, batch)
                out.chunks += len(rows)
                out.bytes += sum(r["size"] for r in rows)
                if len(rows) < batch:
                    break
                last = max(rows, key=lambda r: (r["touched_at"], r["hash"]))
                after = (last["touched_at"], last["hash"])
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", *GC_LOCK)
    return out


class RetentionMetrics:
    """``dwasm_retention_flows_deleted_total``, ``dwasm_chunks_deleted_total``,
    ``dwasm_chunk_bytes_deleted_total`` and the passes' durations (``dwasm_gc_seconds``)."""

    def __init__(self, registry: Any) -> None:
        self.flows = registry.counter("dwasm_retention_flows_deleted_total",
                                      "Finished flows deleted by retention.")
        self.chunks = registry.counter("dwasm_chunks_deleted_total",
                                       "Unreferenced memory chunks deleted by the chunk GC.")
        self.chunk_bytes = registry.counter("dwasm_chunk_bytes_deleted_total",
                                            "Compressed bytes of the chunks deleted.")
        self.seconds = registry.histogram("dwasm_gc_seconds",
                                          "Duration of retention and chunk GC passes.",
                                          ["job"], buckets=[0.01, 0.1, 1, 10, 60, 600])


def jittered(interval: float, rnd: float) -> float:
    """``interval`` ± 20 % (``rnd`` in [0, 1)), so that nodes do not run in step."""
    return interval * (0.8 + 0.4 * rnd)
