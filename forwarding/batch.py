"""``POST /v1/task-reports`` across owners: split the batch by the owner of each report's flow,
send each owner its part (this node's part goes straight to the app), merge the ``results``
back in request order.

Reports are idempotent in the service (each names its lease), so a part whose delivery failed
or was misdirected is routed again, within the deadline. A part that cannot be delivered in
time gets, per report, the status and problem of the failure (503 and a problem naming the
reason), and a part its owner refused as a whole (say, 422 for a malformed report) gets that
answer per report: the batch as a whole still succeeds.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx

from .asgi import call_captured, problem, send_json, target_of, with_body_length
from .body import Body
from .proxy import Hint, Local, Problem, Target
from .routes import flow_of_task

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .middleware import ForwardingMiddleware


def _is_local(topology: Any, flow_id: str | None) -> bool:
    if flow_id is None:
        return True
    own = topology.owner_of(flow_id)
    return own.mine and not own.handoff


async def handle_reports(mw: ForwardingMiddleware, scope: Scope, receive: Receive, send: Send,
                         topology: Any, body: Body, started: float) -> None:
    try:
        data = json.loads(body.bytes())
    except ValueError:
        data = None
    reports = data.get("reports") if isinstance(data, dict) else None
    if not isinstance(reports, list) or not all(
            isinstance(r, dict) and isinstance(r.get("task_id"), str) for r in reports):
        # Malformed: the app answers (422) as it would without forwarding.
        await mw.app(with_body_length(scope, body.size), body.replay(receive), send)
        return
    flows = [flow_of_task(r["task_id"]) for r in reports]
    if all(_is_local(topology, f) for f in flows):
        await mw.app(with_body_length(scope, body.size), body.replay(receive), send)
        return
    splitter = _Splitter(mw, scope, receive, topology, data, reports, flows, started)
    await splitter.deliver(list(range(len(reports))))
    await send_json(send, 200, {"results": splitter.results})


class _Splitter:
    def __init__(self, mw: ForwardingMiddleware, scope: Scope, receive: Receive,
                 topology: Any, data: dict[str, Any], reports: list[dict[str, Any]],
                 flows: list[str | None], started: float) -> None:
        self.mw, self.scope, self.receive, self.topology = mw, scope, receive, topology
        self.forwarder = mw.forwarder
        self.data, self.reports, self.flows = data, reports, flows
        self.deadline = started + self.forwarder.settings.deadline
        self.results: list[Any] = [None] * len(reports)
        self.hints: dict[str, Hint] = {}
        self.secret = mw.secret(topology) or ""
        self.metrics = mw.metrics(scope)

    def _part(self, indices: list[int]) -> bytes:
        part = {**self.data, "reports": [self.reports[i] for i in indices]}
        return json.dumps(part, separators=(",", ":")).encode()

    def _fail(self, indices: list[int], status: int, body: dict[str, Any]) -> None:
        for i in indices:
            self.results[i] = {"task_id": self.reports[i]["task_id"], "status": status,
                               "task": None, "problem": body}

    def _fill(self, indices: list[int], status: int, raw: bytes) -> None:
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        results = answer.get("results") if isinstance(answer, dict) else None
        if status == 200 and isinstance(results, list) and len(results) == len(indices):
            for i, result in zip(indices, results):
                self.results[i] = result
            return
        if not isinstance(answer, dict) or "status" not in answer:
            answer = problem(status if status >= 400 else 502, "bad-report-answer",
                             f"the answer to this part of the batch was a {status} without "
                             "one result per report")
        self._fail(indices, status if status >= 400 else 502, answer)

    async def deliver(self, indices: list[int]) -> None:
        """Routes the reports ``indices`` and fills their results."""
        distinct = sorted({f for f in (self.flows[i] for i in indices) if f is not None})
        wheres = await asyncio.gather(*(
            self.forwarder.resolve(self.topology, f, self.deadline, self.hints.get(f))
            for f in distinct))
        where_of = dict(zip(distinct, wheres))
        groups: dict[Any, list[int]] = {}
        for i in indices:
            flow = self.flows[i]
            where = Local() if flow is None else where_of[flow]
            if isinstance(where, Problem):
                self._fail([i], where.status, problem(where.status, where.slug, where.detail,
                                                      **where.extensions))
                continue
            key = "local" if isinstance(where, Local) else (where.node_id, where.url,
                                                            where.version)
            groups.setdefault(key, []).append(i)
        jobs = []
        for key, part in groups.items():
            if key == "local":
                jobs.append(self._local(part))
            else:
                jobs.append(self._remote(Target(*key), part))
        await asyncio.gather(*jobs)

    async def _local(self, indices: list[int]) -> None:
        data = self._part(indices)
        body = Body.from_bytes(data)
        try:
            status, _, raw = await call_captured(
                self.mw.app, with_body_length(self.scope, len(data)), body.replay(self.receive))
        finally:
            body.close()
        self._fill(indices, status, raw)

    async def _remote(self, target: Target, indices: list[int]) -> None:
        body = Body.from_bytes(self._part(indices))
        try:
            outcome, result = await self.forwarder._attempt(
                target, "POST", target_of(self.scope), self.scope["headers"], body,
                self.secret, self.topology.node_id, self.deadline)
        finally:
            body.close()
        if self.metrics is not None:
            self.metrics.forwarded.inc(outcome=str(result.status_code)
                                       if isinstance(result, httpx.Response) else outcome)
        if isinstance(result, httpx.Response):
            try:
                raw = await result.aread()
            except httpx.TransportError as exc:
                outcome, result = "unknown", repr(exc)
            else:
                self._fill(indices, result.status_code, raw)
                return
            finally:
                await result.aclose()
        if outcome == "misdirected":
            assert isinstance(result, Hint)
            if self.metrics is not None:
                self.metrics.misdirected.inc(direction="received")
            if result.flow_id:
                self.hints[result.flow_id] = result
        await self.forwarder._refresh(self.topology)
        flow = next((self.flows[i] for i in indices if self.flows[i] is not None), None)
        if outcome != "misdirected" and flow is not None:
            settings = self.forwarder.settings
            await self.forwarder._view_changed(
                self.topology, flow, target,
                min(self.deadline, time.monotonic() + settings.handoff_wait))
        await asyncio.sleep(self.forwarder.settings.poll)
        if time.monotonic() >= self.deadline:
            self._fail(indices, 503, problem(503, "forward-deadline",
                                             f"this part of the batch could not be delivered to "
                                             f"{target.node_id} in time ({result})"))
            return
        await self.deliver(indices)
