"""``/v1/flows``: start flows, read their status and output, cancel them, send them signals,
list their events, and query a copy of their latest snapshot.

Bytes in JSON (stdin, output) are text when they are UTF-8 and base64 otherwise: ``stdout`` is
always present (decoded with replacement characters if need be) and ``stdout_base64`` carries the
exact bytes when they are not valid UTF-8. Signal payloads are the raw request body.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ...db import Database
from ...flows import operations as ops
from ...flows import store
from ...flows.engine import FlowEngine
from ...flows.errors import FlowError
from ..deps import Cursor, decode_cursor, encode_cursor, get_db, get_engine
from ..fields import JSON_INTEGER, NO_NUL_PATTERN, Base64, Unicode
from ..limits import read_body
from ..problems import problem_responses
from .modules import MODULE_ID_PATTERN

router = APIRouter(prefix="/v1/flows", tags=["flows"], responses=problem_responses(422))


# Coroutine dependencies: FastAPI runs plain functions in a thread pool, a costly detour for
# the hottest endpoints (workers' leases and reports).
async def _db(request: Request) -> Database:
    return get_db(request)


async def _engine(request: Request) -> FlowEngine:
    return get_engine(request)


DB = Annotated[Database, Depends(_db)]
EngineDep = Annotated[FlowEngine, Depends(_engine)]

FlowId = Annotated[str, Path(description="the flow's id", max_length=4096,
                             pattern=NO_NUL_PATTERN)]
#: Queue and signal names (``app.flows.guest.valid_name``). Declared in the document only: the
#: handlers check names themselves and answer ``invalid-queue`` / ``invalid-signal-name``.
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"


class FlowStatus(str, Enum):
    running = "running"
    waiting = "waiting"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class StartFlow(BaseModel):
    """A flow start request. ``args`` follow ``argv[0]`` (dwasm supplies it)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    module: str = Field(pattern=MODULE_ID_PATTERN, description="id of an uploaded module")
    args: list[Unicode] = Field(default_factory=list, description="argv[1:]")
    env: dict[Unicode, Unicode] = Field(default_factory=dict)
    stdin: str | None = Field(None, description="stdin as text (UTF-8)")
    stdin_base64: Base64 | None = Field(None, description="stdin as base64, for bytes")
    id: str | None = Field(None, pattern=ops.FLOW_ID_PATTERN,
                           description="a client-chosen id makes the start idempotent")


class Waiting(BaseModel):
    """What a waiting flow waits for."""

    op: Literal["await", "sleep", "signal"]
    handles: list[int] | None = Field(None, description="await: the task/child handles")
    tasks: list[str] | None = Field(None, description="await: ids of the awaited tasks")
    signal: str | None = Field(None, description="signal: its name")
    until: datetime | None = Field(None, description="when the wait ends by itself")


class FlowSummary(BaseModel):
    id: str
    module: str
    status: FlowStatus
    exit_code: int | None = None
    error: str | None = None
    waiting: Waiting | None = None
    parent_id: str | None = None
    checkpoint_seq: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


class Flow(FlowSummary):
    """A flow with its output so far (what its committed checkpoints cover)."""

    args: list[str]
    env: dict[str, str]
    stdout: str
    stdout_base64: Base64 | None = Field(None, description="the exact bytes, when not UTF-8")
    stderr: str
    stderr_base64: Base64 | None = None


class FlowList(BaseModel):
    items: list[FlowSummary]
    next_cursor: str | None = None


class Event(BaseModel):
    id: int
    type: str = Field(description="started, task_scheduled, task_completed, task_failed, "
                                  "task_retry, timer, signal, checkpoint, exit, cancelled, ...")
    data: dict[str, Any]
    at: datetime


class EventList(BaseModel):
    items: list[Event]
    next_cursor: str | None = None


class SignalAccepted(BaseModel):
    id: int
    flow_id: str
    name: str
    size: int


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    args: list[int | float | str] = Field(default_factory=list,
                                          description="the export's arguments")
    fuel: Annotated[int, Field(ge=1, le=ops.QUERY_FUEL_MAX), JSON_INTEGER] | None = Field(
        None, description=f"default {ops.QUERY_FUEL_DEFAULT}")


class QueryResult(BaseModel):
    results: list[Any] = Field(description="integers signed; floats as numbers, or "
                                           "'NaN'/'inf'/'-inf'")
    types: list[str]
    fuel_used: int
    stdout: str
    stderr: str


def _text(data: bytes) -> tuple[str, str | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), base64.b64encode(data).decode("ascii")


def _waiting(row: dict[str, Any]) -> Waiting | None:
    reason = row.get("waiting")
    if row["status"] != "waiting" or not isinstance(reason, dict):
        return None
    op = reason.get("op")
    handles = reason.get("handles") if op == "await" else None
    return Waiting(op=op, handles=handles,
                   tasks=[f"{row['id']}/{h}" for h in handles] if handles is not None else None,
                   signal=reason.get("name") if op == "signal" else None,
                   until=row.get("wake_at"))


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return dict(id=row["id"], module=row["module_id"], status=row["status"],
                exit_code=row["exit_code"], error=row["error"], waiting=_waiting(row),
                parent_id=row["parent_id"], checkpoint_seq=row["checkpoint_seq"],
                created_at=row["created_at"], updated_at=row["updated_at"],
                finished_at=row["finished_at"])


def flow_model(row: dict[str, Any]) -> Flow:
    stdout, stdout_b64 = _text(bytes(row["stdout"]))
    stderr, stderr_b64 = _text(bytes(row["stderr"]))
    request = row["request"] or {}
    return Flow(**_summary(row), args=request.get("args", []), env=request.get("env", {}),
                stdout=stdout, stdout_base64=stdout_b64, stderr=stderr, stderr_base64=stderr_b64)


def _stdin(body: StartFlow) -> bytes:
    if body.stdin is not None and body.stdin_base64 is not None:
        raise FlowError(422, "invalid-stdin", "give stdin or stdin_base64, not both")
    if body.stdin_base64 is not None:
        try:
            return base64.b64decode(body.stdin_base64, validate=True)
        except (binascii.Error, ValueError):
            raise FlowError(422, "invalid-stdin", "stdin_base64 is not valid base64") from None
    return (body.stdin or "").encode("utf-8", "surrogatepass")


@router.post("", name="start", status_code=201, response_model=Flow,
             summary="Start a flow",
             description="Starts a flow of an uploaded module. With a client-chosen `id` the "
                         "start is idempotent: the same request again returns the flow (200); "
                         "a different request with that id is a 409.",
             responses={200: {"model": Flow, "description": "the same start request was made "
                                                            "before"},
                        **problem_responses(409, 413)})
async def start(body: StartFlow, response: Response, engine: EngineDep) -> Flow:
    row, created = await ops.start_flow(engine, module_id=body.module, args=body.args,
                                        env=body.env, stdin=_stdin(body), flow_id=body.id)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/flows/{row['id']}"
    return flow_model(row)


@router.get("", name="list", response_model=FlowList, summary="List flows, newest first")
async def list_flows(db: DB,
                     status: Annotated[FlowStatus | None, Query()] = None,
                     module: Annotated[str | None, Query(pattern=MODULE_ID_PATTERN)] = None,
                     parent: Annotated[str | None, Query(max_length=4096,
                                                         pattern=NO_NUL_PATTERN)] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     cursor: Cursor = None) -> FlowList:
    before = None
    if cursor is not None:
        at, last_id = decode_cursor(cursor, 2)
        try:
            before = (datetime.fromisoformat(str(at)), str(last_id))
        except ValueError:
            decode_cursor("", 2)  # raises the invalid-cursor problem
    rows = await store.list_flows(db.pool, status=status.value if status else None,
                                  module_id=module, parent_id=parent, before=before,
                                  limit=limit + 1)
    items = [FlowSummary(**_summary(r)) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last["created_at"].isoformat(), last["id"])
    return FlowList(items=items, next_cursor=next_cursor)


@router.get("/{flow_id}", name="get", response_model=Flow, summary="A flow and its output",
            responses=problem_responses(404))
async def get_flow(flow_id: FlowId, engine: EngineDep) -> Flow:
    return flow_model(await ops.get_flow(engine, flow_id))


@router.post("/{flow_id}/cancel", name="cancel", response_model=Flow,
             summary="Cancel a flow, its pending tasks and its children",
             description="Cancelling a cancelled flow changes nothing; a completed or failed "
                         "flow cannot be cancelled (409).",
             responses=problem_responses(404, 409))
async def cancel(flow_id: FlowId, engine: EngineDep) -> Flow:
    return flow_model(await ops.cancel_flow(engine, flow_id))


@router.get("/{flow_id}/events", name="events", response_model=EventList,
            summary="The flow's history, oldest first", responses=problem_responses(404))
async def events(flow_id: FlowId, db: DB,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 cursor: Cursor = None) -> EventList:
    after = 0
    if cursor is not None:
        (value,) = decode_cursor(cursor, 1)
        if not isinstance(value, int) or isinstance(value, bool):
            decode_cursor("", 1)
        after = value
    if await db.pool.fetchval("SELECT 1 FROM flows WHERE id = $1", flow_id) is None:
        raise FlowError(404, "flow-not-found", f"no flow {flow_id!r}", flow_id=flow_id)
    rows = await store.list_events(db.pool, flow_id, after, limit + 1)
    items = [Event(**r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return EventList(items=items, next_cursor=next_cursor)


@router.post("/{flow_id}/signals/{name}", name="signal", status_code=202,
             response_model=SignalAccepted, summary="Send a signal to a flow",
             description="The request body (any content type) is the signal's payload. The flow "
                         "receives it when it waits for a signal of this name; signals of a "
                         "name are received in the order they were sent, each once.",
             responses=problem_responses(404, 409, 413),
             openapi_extra={"requestBody": {"required": False, "content": {
                 "application/octet-stream": {"schema": {"type": "string",
                                                         "format": "binary"}}}}})
async def signal(flow_id: FlowId, name: Annotated[str, Path(
                     max_length=4096, description="1-200 characters of [A-Za-z0-9._-]",
                     json_schema_extra={"pattern": NAME_PATTERN})],
                 request: Request, engine: EngineDep,
                 idempotency_key: Annotated[str | None, Header(
                     description="makes a retry safe: a repeat with the same key and signal "
                                 "changes nothing; 1-200 characters", pattern=NO_NUL_PATTERN,
                     json_schema_extra={"minLength": 1, "maxLength": 200})] = None
                 ) -> SignalAccepted:
    payload = await read_body(request, engine.max_payload, "signal payload")
    return SignalAccepted(**await ops.send_signal(engine, flow_id, name, payload,
                                                  idempotency_key))


@router.post("/{flow_id}/query/{export}", name="query", response_model=QueryResult,
             summary="Call an export on a copy of the flow's latest snapshot",
             description="Restores the flow's latest checkpoint into a throw-away instance and "
                         "calls the exported function with `args`, under a fuel limit. The flow "
                         "itself is untouched. The query cannot wait (422) and its output is "
                         "returned, not added to the flow's.",
             responses=problem_responses(404, 409))
async def query(flow_id: FlowId, export: Annotated[str, Path(max_length=4096)],
                engine: EngineDep, body: QueryRequest | None = None) -> QueryResult:
    body = body or QueryRequest()
    return QueryResult(**await ops.query_flow(engine, flow_id, export, list(body.args),
                                              body.fuel))
