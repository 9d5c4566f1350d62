"""Which requests concern one flow, and which flow: the routing table of the forwarding layer.

Only the request line is looked at (method and decoded path), never the engine: the table
mirrors the routes of ``app/api/routers`` (flows.py, tasks.py). Task ids are
``<flow id>/<n>``; a flow id never contains ``/``, so the flow is everything before the last
``/`` of the task id.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Kind(enum.Enum):
    LOCAL = "local"              # served by whichever node is asked
    WRITE = "write"              # a write to one flow: served by its owner
    START = "start"              # POST /v1/flows: the flow id is in the JSON body (or assigned)
    TASK_REPORTS = "reports"     # POST /v1/task-reports: a batch over many flows
    READ = "read"                # a read of one flow: local, or at the owner when strong


@dataclass(frozen=True)
class Route:
    kind: Kind
    flow_id: str | None = None
    #: Safe to send again after it may have reached the owner (the service deduplicates it,
    #: or it changes nothing).
    idempotent: bool = False


LOCAL = Route(Kind.LOCAL)

_FLOW_WRITE = re.compile(r"^/v1/flows/([^/]+)/(cancel|signals/[^/]+|query/[^/]+)$")
_FLOW_READ = re.compile(r"^/v1/flows/([^/]+)(?:/events)?$")
_TASK_WRITE = re.compile(r"^/v1/tasks/(.+)/(heartbeat|complete|fail)$")
_TASK_READ = re.compile(r"^/v1/tasks/(.+)$")


def flow_of_task(task_id: str) -> str | None:
    """The flow id of ``<flow id>/<n>``; None when the task id has no flow part."""
    flow, sep, _ = task_id.rpartition("/")
    return flow if sep and flow and "/" not in flow else None


def classify(method: str, path: str) -> Route:
    """The route of a request (``path`` percent-decoded, without the query string)."""
    if method == "POST":
        if path == "/v1/flows":
            return Route(Kind.START, idempotent=True)  # the id makes it idempotent
        if path == "/v1/task-reports":
            return Route(Kind.TASK_REPORTS, idempotent=True)
        m = _FLOW_WRITE.match(path)
        if m:
            # A query runs an export on a copy of the latest snapshot: it changes nothing.
            return Route(Kind.WRITE, m.group(1), idempotent=m.group(2).startswith("query/"))
        m = _TASK_WRITE.match(path)
        if m:
            flow = flow_of_task(m.group(1))
            # Reports name their lease: the service answers a repeat without acting twice.
            return Route(Kind.WRITE, flow, idempotent=True) if flow else LOCAL
        return LOCAL
    if method in ("GET", "HEAD"):
        m = _FLOW_READ.match(path)
        if m:
            return Route(Kind.READ, m.group(1), idempotent=True)
        m = _TASK_READ.match(path)
        if m:
            flow = flow_of_task(m.group(1))
            return Route(Kind.READ, flow, idempotent=True) if flow else LOCAL
    return LOCAL
