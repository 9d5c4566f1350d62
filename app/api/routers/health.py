"""Operations endpoints: liveness, readiness, Prometheus metrics.

``/readyz`` checks the database and the migrations, then each async callable in
``app.state.ready_checks`` (others append to it, e.g. the flow engine): a check returns None
when fine or a short reason string when not; an exception counts as not ready.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from ...db import DatabaseUnavailable, MigrationError, pending_migrations
from ..metrics import CONTENT_TYPE
from ..problems import ProblemError, problem_responses

router = APIRouter(tags=["ops"])

ReadyCheck = Callable[[], Awaitable[str | None]]


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/healthz", name="healthz", response_model=Health,
            summary="Liveness: the process is up and serving")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", name="readyz", response_model=Readiness,
            responses=problem_responses(503),
            summary="Readiness: the database answers and the schema is up to date")
async def readyz(request: Request) -> Readiness:
    state = request.app.state
    checks: dict[str, str] = {}
    db = getattr(state, "db", None)
    if db is None:
        checks["database"] = "not connected"
    else:
        try:
            await db.ping()
            checks["database"] = "ok"
        except DatabaseUnavailable as exc:
            checks["database"] = str(exc)
        if checks["database"] == "ok":
            try:
                pending = await pending_migrations(db)
                checks["migrations"] = ("ok" if not pending else
                                        "pending: " + ", ".join(m.name for m in pending))
            except (MigrationError, DatabaseUnavailable, OSError) as exc:
                checks["migrations"] = str(exc)
            except Exception as exc:  # e.g. the connection dropped mid-query
                checks["migrations"] = f"{type(exc).__name__}: {exc}"
    for name, check in list(getattr(state, "ready_checks", {}).items()):
        try:
            checks[name] = (await check()) or "ok"
        except Exception as exc:
            checks[name] = f"{type(exc).__name__}: {exc}"
    if any(value != "ok" for value in checks.values()):
        raise ProblemError(503, "not-ready", "; ".join(f"{k}: {v}" for k, v in checks.items()
                                                       if v != "ok"), checks=checks)
    return Readiness(status="ready", checks=checks)


@router.get("/metrics", name="metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text format 0.0.4"}},
            summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
