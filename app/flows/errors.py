"""Errors of flow, task and signal operations that a client caused (unknown id, wrong state).

They are API problems (RFC 9457) directly, so the routers need no translation layer: the
service's problem handlers render them as ``application/problem+json``.
"""

from __future__ import annotations

from typing import Any

from app.api.problems import ProblemError


class FlowError(ProblemError):
    """A refused flow/task/signal operation: ``status`` 404, 409, 422, ...; ``slug`` names
    the kind of problem (``flow-not-found``, ``task-finished``, ...)."""

    def __init__(self, status: int, slug: str, detail: str, *,
                 headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(status, slug, detail, headers=headers, **extensions)


def flow_not_found(flow_id: str) -> FlowError:
    return FlowError(404, "flow-not-found", f"no flow {flow_id!r}", flow_id=flow_id)


def task_not_found(task_id: str) -> FlowError:
    return FlowError(404, "task-not-found", f"no task {task_id!r}", task_id=task_id)
