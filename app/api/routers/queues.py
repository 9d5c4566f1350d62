"""Queues: their backlog (what workers have not finished) and their retry policies.

A queue exists as soon as a flow schedules a task on it; there is nothing to create. Its policy
is the service's default (``DWASM_MAX_ATTEMPTS``, ``DWASM_LEASE_TIMEOUT``, ...) unless
``PUT /v1/queues/{queue}/policy`` overrides some fields (``app.flows.policies``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from ...flows.errors import FlowError
from ...flows.tasks import check_queue
from ..fields import JSON_INTEGER
from ..problems import problem_responses
from .flows import DB, EngineDep
from .tasks import Queue

router = APIRouter(tags=["queues"], responses=problem_responses(422))


class Policy(BaseModel):
    max_attempts: int = Field(description="attempts per task, the first included")
    backoff_initial: float = Field(description="seconds before the second attempt")
    backoff_factor: float = Field(description="each further backoff is this many times longer")
    backoff_max: float = Field(description="the longest backoff, seconds")
    lease_timeout: float = Field(description="seconds a lease lasts without a heartbeat")


class PolicyUpdate(BaseModel):
    """Fields left out (or null) take the service's default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_attempts: Annotated[int, Field(ge=1, le=1000), JSON_INTEGER] | None = None
    backoff_initial: float | None = Field(None, ge=0, le=86400)
    backoff_factor: float | None = Field(None, ge=1, le=100)
    backoff_max: float | None = Field(None, ge=0, le=86400 * 7)
    lease_timeout: float | None = Field(None, gt=0, le=86400)


class QueueInfo(BaseModel):
    name: str
    pending: int = Field(description="tasks waiting for a worker (including retries in backoff)")
    leased: int = Field(description="tasks a worker holds now")
    oldest_pending_at: datetime | None = Field(None, description="when the oldest pending "
                                                                 "task was scheduled")
    policy: Policy = Field(description="the policy in force")
    overrides: list[str] = Field(description="the policy fields this queue sets itself")


class QueueList(BaseModel):
    items: list[QueueInfo]


_BACKLOG = """
    SELECT queue, count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'leased') AS leased,
           min(created_at) FILTER (WHERE status = 'pending') AS oldest_pending_at
    FROM tasks WHERE status IN ('pending', 'leased') {where} GROUP BY queue"""


def _info(engine: Any, name: str, row: Any) -> QueueInfo:
    return QueueInfo(name=name, pending=row["pending"] if row else 0,
                     leased=row["leased"] if row else 0,
                     oldest_pending_at=row["oldest_pending_at"] if row else None,
                     policy=Policy(**engine.policies.get(name).as_dict()),
                     overrides=sorted(engine.policies.override(name)))


@router.get("/v1/queues", name="list", response_model=QueueList,
            summary="Queues with a backlog or a policy of their own",
            description="Every queue that has pending or leased tasks, or a policy override, "
                        "with its backlog; sorted by name.")
async def list_queues(db: DB, engine: EngineDep) -> QueueList:
    await engine.policies.refresh(db)
    rows = {r["queue"]: r for r in await db.pool.fetch(_BACKLOG.format(where=""))}
    names = sorted(set(rows) | set(engine.policies.overridden()))
    return QueueList(items=[_info(engine, n, rows.get(n)) for n in names])


@router.get("/v1/queues/{queue}", name="get", response_model=QueueInfo,
            summary="A queue's backlog and policy")
async def get_queue(queue: Queue, db: DB, engine: EngineDep) -> QueueInfo:
    check_queue(queue)
    await engine.policies.refresh(db)
    row = await db.pool.fetchrow(_BACKLOG.format(where="AND queue = $1"), queue)
    return _info(engine, queue, row)


@router.put("/v1/queues/{queue}/policy", name="set_policy", response_model=QueueInfo,
            summary="Set a queue's retry policy",
            description="Replaces the queue's overrides: the fields given apply to this queue, "
                        "the others take the service's default. Applies to attempts, backoffs "
                        "and leases from now on, on every node within a few seconds; a task "
                        "keeps the `max_attempts` it was scheduled with.")
async def set_policy(queue: Queue, body: PolicyUpdate, db: DB, engine: EngineDep) -> QueueInfo:
    check_queue(queue)
    changes = body.model_dump(exclude_none=True)
    if not changes:
        await engine.policies.delete(db, queue)
    else:
        await engine.policies.put(db, queue, changes)
    return await get_queue(queue, db, engine)


@router.delete("/v1/queues/{queue}/policy", name="reset_policy", status_code=204,
               summary="Return a queue to the default policy",
               responses=problem_responses(404))
async def reset_policy(queue: Queue, db: DB, engine: EngineDep) -> Response:
    check_queue(queue)
    if not await engine.policies.delete(db, queue):
        raise FlowError(404, "policy-not-found", f"queue {queue!r} has no policy of its own",
                        queue=queue)
    return Response(status_code=204)
