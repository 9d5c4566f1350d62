"""All SQL for flows, tasks, signals, events and chunks (schema: migrations/0001_init.sql).

Every function takes an asyncpg connection; the caller decides the transaction. JSON columns are
written as text cast to jsonb and read back cast to text, so the functions work whether or not the
pool has a jsonb codec installed.

Locking discipline (what keeps wake-ups from being lost and makes deadlocks impossible): a
transaction that changes a flow's state or the outcome of one of its tasks locks the flow row
first (:func:`lock_flow`), then touches that flow's tasks and signals. A flow's checkpoint that
decides to wait checks, under that lock, for arrivals it has not seen; an arrival (task result,
signal) is recorded under the same lock and then makes a waiting flow runnable if it is what the
flow waits for (:func:`wake_if_ready`). Whichever of the two commits first, the other sees it.
Leasing and the lease reaper lock only task rows, with SKIP LOCKED, so they never wait.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

import asyncpg

from topology.fencing import FencedError
from topology.shards import flow_hash

TERMINAL = ("completed", "failed", "cancelled")
ACTIVE = ("running", "waiting")
TASK_DONE = ("completed", "failed", "cancelled")


# --- helpers -----------------------------------------------------------------------------------

def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


# --- modules -----------------------------------------------------------------------------------

async def get_module_info(conn: Any, module_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT id, imports::text AS imports, exports::text AS exports "
                              "FROM modules WHERE id = $1", module_id)
    if row is None:
        return None
    return {"id": row["id"], "imports": _load(row["imports"]), "exports": _load(row["exports"])}


# --- flows -------------------------------------------------------------------------------------

SUMMARY_COLUMNS = """id, module_id, status, parent_id, parent_handle, exit_code, error,
    waiting::text AS waiting, wake_at, checkpoint_seq, task_seq, created_at, updated_at,
    finished_at"""
FLOW_COLUMNS = SUMMARY_COLUMNS + ", request::text AS request, request_hash"


def shard_of(flow_id: str) -> int:
    """A stable hash of a flow id (``flows.shard``); its shard in a cluster of N shards is
    ``flows.shard % N`` (``topology.shards``)."""
    return flow_hash(flow_id)


class Shards:
    """Which flows a node runs: ``flows.shard % count = ANY(owned)``; ``owned`` None: all."""

    def __init__(self, count: int = 1, owned: Sequence[int] | None = None) -> None:
        self.count = count
        self.owned = None if owned is None else sorted(owned)

    def sql(self, column: str, first_param: int) -> tuple[str, list[Any]]:
        """A condition on ``column`` (a flows.shard) and its parameters, numbered from
        ``first_param``."""
        if self.owned is None:
            return "true", []
        return (f"({column} % ${first_param} = ANY(${first_param + 1}::int[]))",
                [self.count, self.owned])


ALL_SHARDS = Shards()


def _flow(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in ("request", "waiting", "checkpoint"):
        if key in out:
            out[key] = _load(out[key])
    return out


@dataclass
class NewFlow:
    id: str
    module_id: str
    request: dict[str, Any]
    request_hash: str
    parent_id: str | None = None
    parent_handle: int | None = None

    @property
    def shard(self) -> int:
        return shard_of(self.id)


async def insert_flow(conn: Any, flow: NewFlow) -> bool:
    """Insert a flow in status running; False if the id is taken (nothing changes then)."""
    status = await conn.execute(
        """INSERT INTO flows (id, module_id, status, request, request_hash, parent_id,
                              parent_handle, shard)
           VALUES ($1, $2, 'running', $3::text::jsonb, $4, $5, $6, $7)
           ON CONFLICT (id) DO NOTHING""",
        flow.id, flow.module_id, _dump(flow.request), flow.request_hash, flow.parent_id,
        flow.parent_handle, flow.shard)
    return status.endswith(" 1")


async def get_flow(conn: Any, flow_id: str, *, output: bool = False,
                   checkpoint: bool = False) -> dict[str, Any] | None:
    cols = FLOW_COLUMNS
    if output:
        cols += ", stdout, stderr"
    if checkpoint:
        cols += ", checkpoint::text AS checkpoint"
    return _flow(await conn.fetchrow(f"SELECT {cols} FROM flows WHERE id = $1", flow_id))


async def get_checkpoint(conn: Any, flow_id: str) -> tuple[str, dict[str, Any] | None] | None:
    """(module id, latest manifest) of a flow, or None if there is no such flow."""
    row = await conn.fetchrow("SELECT module_id, checkpoint::text AS checkpoint FROM flows "
                              "WHERE id = $1", flow_id)
    return None if row is None else (row["module_id"], _load(row["checkpoint"]))


async def lock_flow(conn: Any, flow_id: str) -> dict[str, Any] | None:
    """Lock the flow row for the rest of the transaction (see the module docstring)."""
    return _flow(await conn.fetchrow(
        """SELECT id, status, checkpoint_seq, waiting::text AS waiting, wake_at, parent_id,
                  parent_handle
           FROM flows WHERE id = $1 FOR UPDATE""", flow_id))


async def list_flows(conn: Any, *, status: str | None, module_id: str | None,
                     parent_id: str | None, before: tuple[datetime, str] | None,
                     limit: int) -> list[dict[str, Any]]:
    """Newest first; ``before`` is the (created_at, id) of the last row of the previous page."""
    where, args = [], []
    for col, val in (("status", status), ("module_id", module_id), ("parent_id", parent_id)):
        if val is not None:
            args.append(val)
            where.append(f"{col} = ${len(args)}")
    if before is not None:
        args += list(before)
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (f"SELECT {SUMMARY_COLUMNS} FROM flows "
           f"{'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}")
    return [_flow(r) for r in await conn.fetch(sql, *args)]


async def runnable_flow_ids(conn: Any, shards: Shards = ALL_SHARDS) -> list[str]:
    cond, args = shards.sql("shard", 1)
    return [r["id"] for r in await conn.fetch(
        f"SELECT id FROM flows WHERE status = 'running' AND {cond} ORDER BY updated_at", *args)]


# A waiting flow is ready when what it waits for has happened: its timer (or wait deadline) is
# due, a task or child it awaits has an outcome it has not seen, or a signal it waits for is
# queued. ``waiting`` is the guest's wait reason (app/flows/guest.py): {"op": "await",
# "handles": [...]}, {"op": "signal", "name": ...} or {"op": "sleep", ...}.
_READY = """(
    (f.wake_at IS NOT NULL AND f.wake_at <= now())
    OR (f.waiting ->> 'op' = 'await' AND (
        EXISTS (SELECT 1 FROM tasks t
                WHERE t.flow_id = f.id AND t.status IN ('completed', 'failed') AND NOT t.delivered
                  AND t.seq IN (SELECT jsonb_array_elements_text(f.waiting -> 'handles')::int))
        OR EXISTS (SELECT 1 FROM flows c
                   WHERE c.parent_id = f.id AND c.status IN ('completed', 'failed', 'cancelled')
                     AND c.parent_handle IN (SELECT jsonb_array_elements_text(
                                                 f.waiting -> 'handles')::int))))
    OR (f.waiting ->> 'op' = 'signal' AND EXISTS (
        SELECT 1 FROM signals s
        WHERE s.flow_id = f.id AND NOT s.consumed AND s.name = f.waiting ->> 'name'))
)"""


async def wake_if_ready(conn: Any, flow_id: str) -> bool:
    """Make a waiting flow runnable if its condition is met; the caller holds its lock."""
    row = await conn.fetchrow(
        f"""UPDATE flows f SET status = 'running', updated_at = now()
            WHERE f.id = $1 AND f.status = 'waiting' AND {_READY} RETURNING id""", flow_id)
    return row is not None


async def wake_all_ready(conn: Any, shards: Shards = ALL_SHARDS) -> list[str]:
    """Start-up and timers: every waiting flow whose condition is met becomes runnable."""
    cond, args = shards.sql("f.shard", 1)
    rows = await conn.fetch(
        f"""UPDATE flows f SET status = 'running', updated_at = now()
            WHERE f.id IN (SELECT f.id FROM flows f WHERE f.status = 'waiting' AND {cond}
                           AND {_READY} FOR UPDATE SKIP LOCKED)
            RETURNING id""", *args)
    return [r["id"] for r in rows]


async def wake_due_timers(conn: Any, shards: Shards = ALL_SHARDS) -> list[str]:
    cond, args = shards.sql("shard", 1)
    rows = await conn.fetch(
        f"""UPDATE flows SET status = 'running', updated_at = now()
            WHERE id IN (SELECT id FROM flows WHERE status = 'waiting' AND wake_at <= now()
                         AND {cond} FOR UPDATE SKIP LOCKED)
            RETURNING id""", *args)
    return [r["id"] for r in rows]


async def next_wake_at(conn: Any, shards: Shards = ALL_SHARDS) -> datetime | None:
    cond, args = shards.sql("shard", 1)
    return await conn.fetchval(
        f"SELECT min(wake_at) FROM flows WHERE status = 'waiting' AND wake_at IS NOT NULL "
        f"AND {cond}", *args)


@dataclass
class NewTask:
    flow_id: str
    seq: int
    queue: str
    payload: bytes
    max_attempts: int = 3

    @property
    def id(self) -> str:
        return f"{self.flow_id}/{self.seq}"


@dataclass
class Checkpoint:
    """Everything one checkpoint writes, in one statement (see :func:`commit_checkpoint`)."""

    flow_id: str
    expected_seq: int
    status: str  # running, waiting, completed, failed
    manifest: dict[str, Any] | None
    chunks: dict[str, bytes] = field(default_factory=dict)
    stdout: bytes = b""
    stderr: bytes = b""
    waiting: dict[str, Any] | None = None
    wake_at: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    task_seq: int = 0
    tasks: list[NewTask] = field(default_factory=list)
    children: list[NewFlow] = field(default_factory=list)
    delivered_tasks: list[str] = field(default_factory=list)
    consumed_signals: list[int] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


async def commit_checkpoint(conn: Any, cp: Checkpoint, skip_signals: Sequence[int],
                            fence: tuple[int, int] | None, node: str | None,
                            chunk_refresh: float) -> tuple[int, str] | None:
    """Commit ``cp`` in one round trip (``dwasm_checkpoint``, migrations/0003_fast_paths.sql,
    in its version of 0006_retention_gc.sql):
    lock the flow, check it is still at ``cp.expected_seq``, decide whether a ``waiting``
    checkpoint must stay ``running`` (what it waits for is in the database already; signals in
    ``skip_signals`` were handed over and do not count), write everything, add the
    ``checkpoint`` event. Returns (new checkpoint_seq, status written), or None if the flow
    moved on (nothing written). ``node`` names the writer in the ``checkpoint`` event.
    ``fence``: (shard, epoch) this writer holds; a moved epoch
    raises :class:`~topology.fencing.FencedError` (nothing written). A chunk of ``cp`` stored
    already gets its ``touched_at`` refreshed when older than ``chunk_refresh`` seconds
    (app/flows/chunks.py). Runs as its own transaction: pass the pool."""
    for task in cp.tasks:
        assert task.flow_id == cp.flow_id
    shard, epoch = fence if fence is not None else (None, None)
    row = await _fenced(conn.fetchrow(
        """SELECT new_seq, status FROM dwasm_checkpoint(
               $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
               $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33,
               $34)""",
        cp.flow_id, cp.expected_seq, cp.status, _dump(cp.manifest), cp.stdout, cp.stderr,
        _dump(cp.waiting), cp.wake_at, cp.exit_code, cp.error, cp.task_seq,
        list(cp.chunks), list(cp.chunks.values()),
        [t.seq for t in cp.tasks], [t.queue for t in cp.tasks], [t.payload for t in cp.tasks],
        [t.max_attempts for t in cp.tasks],
        cp.delivered_tasks, cp.consumed_signals, list(skip_signals),
        [kind for kind, _ in cp.events], [_dump(data) for _, data in cp.events],
        len(cp.chunks), sum(len(c) for c in cp.chunks.values()),
        [c.id for c in cp.children], [c.module_id for c in cp.children],
        [_dump(c.request) for c in cp.children], [c.request_hash for c in cp.children],
        [c.parent_handle for c in cp.children], [c.shard for c in cp.children], shard, epoch,
        node, chunk_refresh),
        shard, epoch)
    return None if row is None else (row["new_seq"], row["status"])


FENCED_SQLSTATE = "DW001"  # raised by the SQL functions of migrations/0003_fast_paths.sql


async def _fenced(query: Any, shard: int | None, epoch: int | None) -> Any:
    """Await ``query``; its fencing error becomes :class:`FencedError`."""
    try:
        return await query
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == FENCED_SQLSTATE and shard is not None:
            raise FencedError(shard, epoch or 0, None, detail=str(exc)) from None
        raise


async def cancel_flow(conn: Any, flow_id: str, reason: str = "cancelled") -> list[str]:
    """Cancel a flow, its open tasks and (recursively) its active children; returns the ids of
    every flow cancelled. The caller holds the flow's lock and checked it is active."""
    cancelled: list[str] = []
    todo = [flow_id]
    while todo:
        fid = todo.pop()
        done = await conn.fetchval(
            """UPDATE flows SET status = 'cancelled', waiting = NULL, wake_at = NULL,
                      error = $2, updated_at = now(), finished_at = now(),
                      checkpoint_seq = checkpoint_seq + 1
               WHERE id = $1 AND status IN ('running', 'waiting') RETURNING id""", fid, reason)
        if done is None:
            continue
        cancelled.append(fid)
        n = await cancel_open_tasks(conn, fid)
        await add_events(conn, fid, [("cancelled", {"reason": reason, "tasks_cancelled": n})])
        todo += [r["id"] for r in await conn.fetch(
            "SELECT id FROM flows WHERE parent_id = $1 AND status IN ('running', 'waiting')",
            fid)]
    return cancelled


async def cancel_open_tasks(conn: Any, flow_id: str) -> int:
    status = await conn.execute(
        """UPDATE tasks SET status = 'cancelled', lease_until = NULL, updated_at = now(),
                  delivered = true
           WHERE flow_id = $1 AND status IN ('pending', 'leased')""", flow_id)
    return int(status.split()[-1])


# --- events ------------------------------------------------------------------------------------

async def add_events(conn: Any, flow_id: str,
                     events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    if events:
        await conn.execute(
            """INSERT INTO events (flow_id, type, data)
               SELECT $1, t, d::jsonb FROM unnest($2::text[], $3::text[]) WITH ORDINALITY
                   AS x(t, d, n) ORDER BY n""",
            flow_id, [kind for kind, _ in events], [_dump(data) for _, data in events])


async def list_events(conn: Any, flow_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id, type, data::text AS data, at FROM events
           WHERE flow_id = $1 AND id > $2 ORDER BY id LIMIT $3""", flow_id, after, limit)
    return [{"id": r["id"], "type": r["type"], "data": _load(r["data"]), "at": r["at"]}
            for r in rows]


# --- chunks ------------------------------------------------------------------------------------

async def fetch_chunks(conn: Any, hashes: Sequence[str]) -> dict[str, tuple[bytes, float]]:
    """hash → (compressed bytes, seconds since its touched_at) of the chunks found."""
    rows = await conn.fetch(
        """SELECT hash, data, greatest(extract(epoch FROM now() - touched_at), 0)::float8
                  AS age
           FROM chunks WHERE hash = ANY($1::text[])""", list(hashes))
    return {r["hash"]: (r["data"], r["age"]) for r in rows}


# --- tasks -------------------------------------------------------------------------------------

TASK_COLUMNS = """id, flow_id, seq, queue, status, attempt, max_attempts, visible_at, lease_id,
    lease_until, error, delivered, created_at, updated_at"""


_TASK_COLUMNS_T = ", ".join("t." + c.strip() for c in TASK_COLUMNS.split(","))


async def lease_tasks(conn: Any, queue: str, lease_timeout: float,
                      limit: int) -> list[dict[str, Any]]:
    """Lease up to ``limit`` of the oldest visible pending tasks of ``queue`` (each with its
    own lease id), oldest first. ``waited``: seconds each was leasable before (for metrics)."""
    rows = await conn.fetch(
        """UPDATE tasks t SET status = 'leased', attempt = t.attempt + 1,
                  lease_id = replace(gen_random_uuid()::text, '-', ''),
                  lease_until = now() + make_interval(secs => $2), updated_at = now()
           FROM (SELECT id FROM tasks
                 WHERE queue = $1 AND status = 'pending' AND visible_at <= now()
                 ORDER BY visible_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) AS pick
           WHERE t.id = pick.id
           RETURNING t.id, t.flow_id, t.queue, t.payload, t.attempt, t.max_attempts,
                     t.lease_id, t.lease_until, t.visible_at,
                     extract(epoch FROM now() - t.visible_at)::float8 AS waited""",
        queue, lease_timeout, limit)
    return sorted((dict(r) for r in rows), key=lambda r: (r.pop("visible_at"), r["id"]))


async def get_task(conn: Any, task_id: str, *, lock: bool = False,
                   payload: bool = False) -> dict[str, Any] | None:
    cols = TASK_COLUMNS + (", payload, result" if payload else "")
    row = await conn.fetchrow(
        f"SELECT {cols} FROM tasks WHERE id = $1{' FOR UPDATE' if lock else ''}", task_id)
    return None if row is None else dict(row)


async def lock_task_and_flow(conn: Any, task_id: str) -> dict[str, Any] | None:
    """Lock the flow of ``task_id``, then the task (locking discipline: flow first), and return
    the task with its payload and result — one round trip instead of two. The CTE's lock is
    taken before the task row is locked, and a task row changed while waiting is re-read."""
    row = await conn.fetchrow(
        f"""WITH f AS MATERIALIZED (SELECT id FROM flows
                                    WHERE id = (SELECT flow_id FROM tasks WHERE id = $1)
                                    FOR UPDATE)
            SELECT {_TASK_COLUMNS_T}, t.payload, t.result
            FROM tasks t JOIN f ON f.id = t.flow_id WHERE t.id = $1 FOR UPDATE OF t""",
        task_id)
    return None if row is None else dict(row)


async def extend_lease(conn: Any, task_id: str, lease_id: str,
                       seconds: float) -> datetime | None:
    return await conn.fetchval(
        """UPDATE tasks SET lease_until = now() + make_interval(secs => $3), updated_at = now()
           WHERE id = $1 AND status = 'leased' AND lease_id = $2 RETURNING lease_until""",
        task_id, lease_id, seconds)


async def finish_task(conn: Any, task_id: str, status: str, result: bytes | None,
                      error: str | None, event: tuple[str, dict[str, Any]]
                      ) -> tuple[dict[str, Any], bool]:
    """Record a task's final outcome (completed or failed) with its event, and make its flow
    runnable if it awaits this task — one statement. The caller holds the flow's lock and
    checked the lease. Returns (the task, whether the flow was woken)."""
    row = await conn.fetchrow(
        f"""WITH u AS (
                UPDATE tasks SET status = $2, result = $3, error = $4, lease_until = NULL,
                       updated_at = now()
                WHERE id = $1 RETURNING {TASK_COLUMNS}
            ), e AS (
                INSERT INTO events (flow_id, type, data)
                SELECT flow_id, $5, $6::text::jsonb FROM u
            ), w AS (
                UPDATE flows f SET status = 'running', updated_at = now()
                FROM u
                WHERE f.id = u.flow_id AND f.status = 'waiting'
                  AND f.waiting ->> 'op' = 'await' AND f.waiting -> 'handles' @> to_jsonb(u.seq)
                RETURNING f.id
            )
            SELECT u.*, EXISTS (SELECT 1 FROM w) AS woken FROM u""",
        task_id, status, result, error, event[0], _dump(event[1]))
    out = dict(row)
    return out, bool(out.pop("woken"))


async def report_outcome(conn: Any, task_id: str, lease_id: str, status: str,
                         result: bytes | None, error: str | None,
                         event: tuple[str, dict[str, Any]],
                         fence: tuple[int, int] | None = None
                         ) -> tuple[str, dict[str, Any] | None, bool]:
    """Record a task's final outcome reported with ``lease_id``, in one round trip
    (``dwasm_finish_task``, migrations/0003_fast_paths.sql: flow lock, task lock, the lease and
    duplicate checks, the update, its event, the flow's wake-up). Returns (outcome, the task,
    whether its flow became runnable); outcome is ``ok``, ``duplicate``, ``conflict`` (the task
    is returned unchanged) or ``missing`` (task None). Its own transaction: pass the pool."""
    shard, epoch = fence if fence is not None else (None, None)
    row = await _fenced(conn.fetchrow(
        "SELECT * FROM dwasm_finish_task($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        task_id, lease_id, status, result, error, event[0], _dump(event[1]), shard, epoch),
        shard, epoch)
    out = dict(row)
    outcome = out.pop("outcome")
    woken = bool(out.pop("woken"))
    return outcome, (None if outcome == "missing" else out), woken


async def retry_task(conn: Any, task_id: str, error: str, delay: float,
                     lease_id: str | None) -> dict[str, Any]:
    """Back to pending, leasable after ``delay`` seconds; ``lease_id`` is what the row keeps
    (see ``app.flows.tasks``: it decides which late reports are still accepted)."""
    row = await conn.fetchrow(
        f"""UPDATE tasks SET status = 'pending', error = $2, lease_until = NULL,
                   visible_at = now() + make_interval(secs => $3), lease_id = $4,
                   updated_at = now()
            WHERE id = $1 RETURNING {TASK_COLUMNS}""", task_id, error, delay, lease_id)
    return dict(row)


async def lock_expired_lease(conn: Any, task_id: str) -> dict[str, Any] | None:
    """Lock ``task_id`` if its lease has expired (else None)."""
    row = await conn.fetchrow(
        """SELECT id, flow_id, queue, attempt, max_attempts, lease_id FROM tasks
           WHERE id = $1 AND status = 'leased' AND lease_until < now() FOR UPDATE""", task_id)
    return None if row is None else dict(row)


async def expired_leases(conn: Any, limit: int = 100,
                         shards: Shards = ALL_SHARDS) -> list[dict[str, Any]]:
    cond, args = shards.sql("f.shard", 2)
    rows = await conn.fetch(
        f"""SELECT t.id, t.flow_id, t.queue, t.attempt, t.max_attempts FROM tasks t
            JOIN flows f ON f.id = t.flow_id
            WHERE t.status = 'leased' AND t.lease_until < now() AND {cond}
            ORDER BY t.lease_until LIMIT $1""", limit, *args)
    return [dict(r) for r in rows]


async def undelivered_outcomes(conn: Any, flow_id: str,
                               exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Task outcomes the flow has not seen yet (its checkpoints did not mark them delivered)."""
    rows = await conn.fetch(
        """SELECT id, seq, queue, status, attempt, result, error FROM tasks
           WHERE flow_id = $1 AND status IN ('completed', 'failed') AND NOT delivered
             AND NOT (id = ANY($2::text[]))
           ORDER BY seq""", flow_id, list(exclude))
    return [dict(r) for r in rows]


async def finished_children(conn: Any, flow_id: str,
                            exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id, parent_handle, status, exit_code, error, stdout, stderr FROM flows
           WHERE parent_id = $1 AND status IN ('completed', 'failed', 'cancelled')
             AND NOT (id = ANY($2::text[]))
           ORDER BY parent_handle""", flow_id, list(exclude))
    return [dict(r) for r in rows]


# --- signals -----------------------------------------------------------------------------------

async def insert_signal(conn: Any, flow_id: str, name: str, payload: bytes,
                        idempotency_key: str | None = None) -> int:
    return await conn.fetchval(
        "INSERT INTO signals (flow_id, name, payload, idempotency_key) VALUES ($1, $2, $3, $4) "
        "RETURNING id", flow_id, name, payload, idempotency_key)


async def next_signal(conn: Any, flow_id: str, name: str,
                      skip: Sequence[int] = ()) -> dict[str, Any] | None:
    """The oldest queued signal ``name`` of the flow, except those in ``skip``."""
    row = await conn.fetchrow(
        """SELECT id, name, payload FROM signals
           WHERE flow_id = $1 AND name = $2 AND NOT consumed AND NOT (id = ANY($3::bigint[]))
           ORDER BY id LIMIT 1""", flow_id, name, list(skip))
    return None if row is None else dict(row)
