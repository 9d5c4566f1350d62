"""Workers' endpoints: lease tasks from a queue (long-poll), heartbeat, complete, fail.

Payloads and results are bytes, carried as base64 in JSON (``payload``, ``result``; a text
result may be given as ``result_text`` instead). Every report names the lease it was given:
duplicates are answered 200 and change nothing; a report whose lease no longer holds the task,
or on a finished or cancelled task, is a 409 (see ``app.flows.tasks``). Task ids are
``<flow id>/<n>``; the ``/`` needs no escaping in these paths.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from ...flows import store
from ...flows import tasks as ops
from ...flows.errors import FlowError, task_not_found
from ..fields import JSON_INTEGER, NO_NUL_PATTERN, Base64, Text
from ..problems import Problem, problem_responses
from .flows import DB, NAME_PATTERN, EngineDep

router = APIRouter(tags=["tasks"], responses=problem_responses(422))

_ACTIONS = ("heartbeat", "complete", "fail")


class TaskIdConvertor(Convertor[str]):
    """A task id in a path: like ``:path`` (task ids are ``<flow id>/<n>``), except that it
    never ends in ``/heartbeat``, ``/complete`` or ``/fail``. ``/v1/tasks/f/1/complete`` is
    then only the action on task ``f/1``, never a read of a task ``f/1/complete``, and a 405's
    ``Allow`` names exactly the methods of the resource asked for."""

    regex = rf"(?:(?!/(?:{'|'.join(_ACTIONS)})$).)+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("task_id", TaskIdConvertor())

TaskId = Annotated[str, Path(description="'<flow id>/<n>'", max_length=4096,
                             pattern=NO_NUL_PATTERN)]
Queue = Annotated[str, Path(description="1-200 characters of [A-Za-z0-9._-]", max_length=200,
                            json_schema_extra={"pattern": NAME_PATTERN})]


class LeaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    wait: float = Field(0.0, ge=0, le=ops.MAX_LEASE_WAIT,
                        description="seconds to wait for a task when none is ready (long-poll)")


class LeasedTask(BaseModel):
    id: str
    flow_id: str
    queue: str
    payload: Base64 = Field(description="base64")
    attempt: int = Field(description="1 for the first delivery")
    max_attempts: int
    lease_id: str = Field(description="name it in heartbeat, complete and fail")
    lease_deadline: datetime = Field(description="heartbeat before this or the task is "
                                                 "leased again")


class LeaseBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    wait: float = Field(0.0, ge=0, le=ops.MAX_LEASE_WAIT,
                        description="seconds to wait for the first task when none is ready")
    max_tasks: Annotated[int, Field(ge=1, le=ops.MAX_BATCH), JSON_INTEGER] = Field(
        16, description="lease at most this many ready tasks")


class LeaseBatch(BaseModel):
    tasks: list[LeasedTask] = Field(description="oldest first; empty if none became ready "
                                                "within `wait`")


class TaskReport(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    task_id: Text = Field(max_length=4096)
    lease_id: Text = Field(max_length=200)
    outcome: Literal["complete", "fail"]
    # Not Base64: a report that does not decode is refused on its own, in its result.
    result: str | None = Field(None, description="complete: the result, base64")
    result_text: str | None = Field(None, description="complete: or the result as text")
    error: Text | None = Field(None, description="fail: what went wrong")
    retryable: bool = Field(True, description="fail: retry while attempts remain")


class TaskReportBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reports: list[TaskReport] = Field(max_length=ops.MAX_BATCH)


class HeartbeatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: Text = Field(max_length=200)
    extend_seconds: float | None = Field(None, gt=0, le=3600,
                                         description="default: the queue's lease timeout")


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: Text = Field(max_length=200)
    result: Base64 | None = Field(None, description="the result, base64")
    result_text: str | None = Field(None, description="or the result as text (UTF-8)")


class FailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: Text = Field(max_length=200)
    error: Text = Field(description="what went wrong; a flow sees it as the failed outcome")
    retryable: bool = Field(True, description="retry (with backoff) while attempts remain")


class Task(BaseModel):
    id: str
    flow_id: str
    queue: str
    status: str = Field(description="pending, leased, completed, failed or cancelled")
    attempt: int
    max_attempts: int
    visible_at: datetime = Field(description="not leased before (retry backoff)")
    lease_deadline: datetime | None = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime


def task_model(row: dict[str, Any]) -> Task:
    return Task(id=row["id"], flow_id=row["flow_id"], queue=row["queue"], status=row["status"],
                attempt=row["attempt"], max_attempts=row["max_attempts"],
                visible_at=row["visible_at"], lease_deadline=row.get("lease_until"),
                error=row.get("error"), created_at=row["created_at"],
                updated_at=row["updated_at"])


@router.post("/v1/queues/{queue}/lease", name="lease", response_model=LeasedTask,
             summary="Lease the next task of a queue",
             description="Returns a ready task of the queue, leased to the caller until "
                         "`lease_deadline`; waits up to `wait` seconds for one, then answers "
                         "204 with no body.",
             responses={204: {"description": "no task became ready within `wait`"}})
async def lease(queue: Queue, engine: EngineDep, response: Response,
                body: LeaseRequest | None = None) -> LeasedTask | Response:
    body = body or LeaseRequest()
    row = await ops.lease(engine, queue, body.wait)
    if row is None:
        return Response(status_code=204)
    return _leased(row)


class TaskReportResult(BaseModel):
    task_id: str
    status: int = Field(description="what the single report would have been answered: 200, "
                                    "or the problem's status (404, 409, 413, 422)")
    task: Task | None = Field(None, description="the task, when status is 200")
    problem: Problem | None = Field(None, description="why the report was refused")


class TaskReportResults(BaseModel):
    results: list[TaskReportResult] = Field(description="one per report, in request order")


def _leased(row: dict[str, Any]) -> LeasedTask:
    return LeasedTask(id=row["id"], flow_id=row["flow_id"], queue=row["queue"],
                      payload=base64.b64encode(row["payload"]).decode("ascii"),
                      attempt=row["attempt"], max_attempts=row["max_attempts"],
                      lease_id=row["lease_id"], lease_deadline=row["lease_until"])


def _result_bytes(result: str | None, result_text: str | None, limit: int) -> bytes:
    if result is not None and result_text is not None:
        raise FlowError(422, "invalid-result", "give result or result_text, not both")
    if result_text is not None:
        data = result_text.encode("utf-8", "surrogatepass")
    else:
        try:
            data = base64.b64decode(result or "", validate=True)
        except (binascii.Error, ValueError):
            raise FlowError(422, "invalid-result", "result is not valid base64") from None
    if len(data) > limit:
        raise FlowError(413, "payload-too-large", f"the result exceeds the limit of "
                        f"{limit} bytes", limit=limit)
    return data


@router.post("/v1/queues/{queue}/lease-batch", name="lease_batch", response_model=LeaseBatch,
             summary="Lease several tasks of a queue at once",
             description="Like `lease`, for up to `max_tasks` ready tasks, each with its own "
                         "lease. Waits up to `wait` seconds for the first one; answers 200 with "
                         "an empty list if none became ready. One request and one database "
                         "query for the whole batch: what a busy worker should use.")
async def lease_batch(queue: Queue, engine: EngineDep,
                      body: LeaseBatchRequest | None = None) -> LeaseBatch:
    body = body or LeaseBatchRequest()
    rows = await ops.lease_many(engine, queue, body.wait, body.max_tasks)
    return LeaseBatch(tasks=[_leased(r) for r in rows])


@router.post("/v1/task-reports", name="report_batch", response_model=TaskReportResults,
             summary="Complete or fail several tasks at once",
             description="Each report is applied as if sent alone to `complete` or `fail` (its "
                         "own transaction, idempotent the same way) and gets its own answer in "
                         "`results`: `status` 200 with the task, or the problem that single "
                         "request would have got. The request as a whole succeeds (200) unless "
                         "it is malformed.",
             responses=problem_responses(413))
async def report_batch(body: TaskReportBatch, engine: EngineDep) -> TaskReportResults:
    results: list[TaskReportResult | None] = [None] * len(body.reports)
    todo: list[tuple[int, dict[str, Any]]] = []
    for i, r in enumerate(body.reports):
        try:
            if r.outcome == "complete":
                if r.error is not None:
                    raise FlowError(422, "invalid-report", "a completion carries no error")
                item = {"result": _result_bytes(r.result, r.result_text, engine.max_payload)}
            else:
                if r.error is None or r.result is not None or r.result_text is not None:
                    raise FlowError(422, "invalid-report",
                                    "a failure carries an error and no result")
                item = {"error": r.error, "retryable": r.retryable}
        except FlowError as exc:
            results[i] = TaskReportResult(task_id=r.task_id, status=exc.status_code,
                                          problem=Problem(**exc.as_dict()))
            continue
        todo.append((i, {"task_id": r.task_id, "lease_id": r.lease_id, "kind": r.outcome,
                         **item}))
    done = await ops.report_many(engine, [item for _, item in todo])
    for (i, _), out in zip(todo, done):
        results[i] = TaskReportResult(
            task_id=out["task_id"], status=out["status"],
            task=task_model(out["task"]) if "task" in out else None,
            problem=Problem(**out["problem"]) if "problem" in out else None)
    return TaskReportResults(results=[r for r in results if r is not None])


@router.get("/v1/tasks/{task_id:task_id}", name="get", response_model=Task,
            summary="A task's state", responses=problem_responses(404))
async def get_task(task_id: TaskId, db: DB) -> Task:
    row = await store.get_task(db.pool, task_id)
    if row is None:
        raise task_not_found(task_id)
    return task_model(row)


@router.post("/v1/tasks/{task_id:task_id}/heartbeat", name="heartbeat", response_model=Task,
             summary="Extend a lease", responses=problem_responses(404, 409))
async def heartbeat(task_id: TaskId, body: HeartbeatRequest, engine: EngineDep) -> Task:
    return task_model(await ops.heartbeat(engine, task_id, body.lease_id, body.extend_seconds))


@router.post("/v1/tasks/{task_id:task_id}/complete", name="complete", response_model=Task,
             summary="Complete a task with its result",
             responses=problem_responses(404, 409, 413))
async def complete(task_id: TaskId, body: CompleteRequest, engine: EngineDep) -> Task:
    result = _result_bytes(body.result, body.result_text, engine.max_payload)
    return task_model(await ops.complete(engine, task_id, body.lease_id, result))


@router.post("/v1/tasks/{task_id:task_id}/fail", name="fail", response_model=Task,
             summary="Report a failed attempt",
             description="With `retryable` (the default) the task is retried with exponential "
                         "backoff while attempts remain; otherwise, or on the last attempt, it "
                         "fails and its flow receives the error.",
             responses=problem_responses(404, 409, 413))
async def fail(task_id: TaskId, body: FailRequest, engine: EngineDep) -> Task:
    return task_model(await ops.fail(engine, task_id, body.lease_id, body.error,
                                     body.retryable))
