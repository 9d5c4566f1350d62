"""The Worker's batching: tasks leased and reported many per request, against the real service
(real PostgreSQL, the service on a real uvicorn server, real HTTP).

Covers the request counts the service sees (its own ``/metrics``), heartbeats for tasks
leased in one batch, a stop that finds tasks leased after it was asked, per-report refusals
inside a batch, and — through a real HTTP proxy in front of the service that answers some
requests itself — a batch answered 503 as a whole or per report, and a service without the
batch endpoints (the worker falls back to one request per task)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from app.worker import PermanentError, RetryPolicy, Worker, current_task
from dbfixtures import LiveServer
from flowkit import ONE_TASK_WAT, fast_policy, flow_app, start, upload, wait_for, wat

LEASE_BATCH = "/v1/queues/{queue}/lease-batch"
REPORTS = "/v1/task-reports"
LEASE = "/v1/queues/{queue}/lease"


@pytest.fixture
def server(start_live_server: Any) -> Any:
    return start_live_server(app_factory=flow_app)


def requests_by_route(client: httpx.Client) -> Counter[str]:
    """POST requests the service answered, by route template, from its /metrics."""
    text = client.get("/metrics").text
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        m = re.match(r'dwasm_http_requests_total\{(.*)\} (\S+)$', line)
        if m is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("method") == "POST":
            counts[labels["route"]] += int(float(m.group(2)))
    return counts


def square_worker(url: str, **options: Any) -> Worker:
    w = Worker(url, poll_wait=0.5, **options)

    @w.handler("square")
    def square(payload: bytes) -> bytes:
        time.sleep(0.01)
        return str(int(payload) ** 2).encode()

    return w


def wait_until(predicate: Any, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def fanouts(client: httpx.Client, count: int, prefix: str) -> list[str]:
    """``count`` fanout flows (20 tasks each on "square"), all tasks scheduled."""
    module = upload(client, "fanout")
    ids = [f"{prefix}{i}" for i in range(count)]
    for flow_id in ids:
        start(client, module, id=flow_id)
    for flow_id in ids:
        wait_for(client, flow_id, ("waiting",))
    return ids


def finish_fanouts(client: httpx.Client, ids: list[str]) -> None:
    for flow_id in ids:
        wait_for(client, flow_id, ("waiting",), pred=lambda f: (f.get("waiting") or {}).get(
            "op") == "signal")
        assert client.post(f"/v1/flows/{flow_id}/signals/go", content=b"5").status_code == 202
    for flow_id in ids:
        done = wait_for(client, flow_id)
        assert (done["status"], done["stdout"]) == ("completed", "2475\n"), done


# --- request counts --------------------------------------------------------------------------

def test_batches_cost_far_fewer_requests_than_tasks(server: Any, client: httpx.Client) -> None:
    ids = fanouts(client, 2, "many")  # 40 tasks ready before the worker starts
    before = requests_by_route(client)
    worker = square_worker(server.url, concurrency=8)
    with worker:
        wait_until(lambda: worker.stats.completed == 40, what="40 completions")
    after = requests_by_route(client)
    used = {route: after[route] - before[route] for route in after}
    stats = worker.stats.snapshot()
    assert stats["leased"] == stats["completed"] == 40
    assert stats["failed"] == stats["dropped"] == stats["report_errors"] == 0
    # One request per task each way is what the single-task endpoints cost.
    assert used.get(LEASE, 0) == 0 and not any(r.endswith("/complete") for r in used
                                               if used[r])
    assert 5 <= used[LEASE_BATCH] <= 20, used   # at least 40 / 8; one per task would be 40
    assert 1 <= used[REPORTS] <= 20, used
    finish_fanouts(client, ids)


# --- heartbeats ------------------------------------------------------------------------------

def test_tasks_leased_together_keep_their_leases_through_heartbeats(
        server: Any, client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    fast_policy(monkeypatch, lease_timeout=1.0)
    ids = fanouts(client, 1, "slow")
    beats: list[int] = []
    worker = Worker(server.url, poll_wait=0.5, concurrency=4)

    @worker.handler("square")
    def square(payload: bytes) -> bytes:
        if current_task().attempt == 1 and len(beats) < 4:
            time.sleep(2.5)  # more than two leases
            beats.append(current_task().heartbeats)
        return str(int(payload) ** 2).encode()

    with worker:
        wait_until(lambda: worker.stats.completed == 20, timeout=60, what="20 completions")
    assert len(beats) == 4 and min(beats) >= 3, beats
    assert worker.stats.dropped == 0 and worker.stats.leased == 20
    for i in range(20):
        assert client.get(f"/v1/tasks/slow0/{i}").json()["attempt"] == 1
    finish_fanouts(client, ids)


# --- stopping --------------------------------------------------------------------------------

def test_tasks_leased_after_stop_are_handled(server: Any, client: httpx.Client) -> None:
    worker = Worker(server.url, poll_wait=5.0, concurrency=4)
    handled: list[str] = []

    @worker.handler("square")
    def square(payload: bytes) -> bytes:
        handled.append(current_task().id)
        time.sleep(0.05)
        return str(int(payload) ** 2).encode()

    worker.start()
    try:
        time.sleep(0.5)  # the leaser is in its long-poll
        worker.stop()
        module = upload(client, "fanout")
        start(client, module, id="late")  # its tasks arrive during that long-poll
        assert worker.join(15) is True
    finally:
        worker.abandon()
    stats = worker.stats.snapshot()
    assert 1 <= stats["leased"] <= 4, stats
    assert stats["completed"] == stats["leased"] == len(handled)
    statuses = Counter(client.get(f"/v1/tasks/late/{i}").json()["status"] for i in range(20))
    assert statuses == {"completed": stats["leased"], "pending": 20 - stats["leased"]}


# --- refusals inside a batch -----------------------------------------------------------------

def test_a_refused_report_is_dropped_and_the_rest_of_its_batch_applied(
        server: Any, client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dwasm.worker")
    module = upload(client, wat(ONE_TASK_WAT))
    for flow_id in ("keep", "drop"):
        start(client, module, id=flow_id)
        wait_for(client, flow_id, ("waiting",))
    both = threading.Barrier(2, timeout=10)
    release = threading.Event()
    # No heartbeats: the cancellation must be learnt from the report itself.
    worker = Worker(server.url, poll_wait=0.5, concurrency=2, heartbeat_fraction=0,
                    report_delay=0.5)

    @worker.handler("work")
    def work(payload: bytes) -> bytes:
        both.wait()
        assert release.wait(10)
        return f"done by {current_task().flow_id}".encode()

    before = requests_by_route(client)
    with worker:
        wait_until(lambda: worker.stats.leased == 2, what="both tasks leased")
        assert client.post("/v1/flows/drop/cancel").status_code in (200, 202)
        wait_for(client, "drop", ("cancelled",))
        release.set()
        wait_until(lambda: worker.stats.completed + worker.stats.dropped == 2,
                   what="both reports answered")
    used = requests_by_route(client)[REPORTS] - before[REPORTS]
    assert used == 1  # both outcomes in one request (report_delay waits for the other)
    stats = worker.stats.snapshot()
    assert (stats["completed"], stats["dropped"], stats["report_errors"]) == (1, 1, 0)
    refused = [r for r in caplog.records if getattr(r, "event", None) == "report_refused"]
    assert [(r.task_id, r.reason) for r in refused] == [("drop/0", "task-cancelled")]
    done = wait_for(client, "keep")
    assert (done["stdout"], done["exit_code"]) == ("done by keep", 1)


# --- a proxy that answers some requests itself -----------------------------------------------

class FaultProxy:
    """ASGI app passing requests on to ``upstream``; ``faults[path_suffix]`` is a list of what
    to do with the next requests to such a path (``"503"``, ``"404"``, ``"422"``: answer so
    itself; ``"item-503"``: pass it on and turn every per-report result into a 503);
    ``always_404`` are suffixes answered 404 every time. ``seen`` lists the paths asked."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: dict[str, list[str]] = {}
        self.always_404: tuple[str, ...] = ()
        self.seen: list[str] = []

    def _fault(self, path: str) -> str | None:
        if path.endswith(self.always_404):
            return "404"
        for suffix, todo in self.faults.items():
            if path.endswith(suffix) and todo:
                return todo.pop(0)
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("startup", "startup.complete").replace(
                    "shutdown", "shutdown.complete")
                await send({"type": kind})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        self.seen.append(path)
        fault = self._fault(path)
        if fault in ("503", "404", "422"):
            status = int(fault)
            problem = {"type": "urn:dwasm:problem:" + {503: "not-ready", 404: "not-found",
                                                       422: "invalid-request"}[status],
                       "status": status, "detail": "from the proxy"}
            await self._answer(send, status, json.dumps(problem).encode(),
                               [(b"content-type", b"application/problem+json"),
                                (b"retry-after", b"0")])
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]
                   if k.lower() in (b"content-type", b"authorization")}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=60) as http:
            response = await http.request(scope["method"], path, content=body, headers=headers)
        content = response.content
        if fault == "item-503" and response.status_code == 200:
            answer = response.json()
            for item in answer["results"]:
                item.update(status=503, task=None, problem={
                    "type": "urn:dwasm:problem:forward-deadline", "status": 503,
                    "title": "Service Unavailable", "detail": "owner out of reach"})
            content = json.dumps(answer).encode()
        await self._answer(send, response.status_code, content,
                           [(b"content-type", response.headers.get(
                               "content-type", "application/json").encode())])

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes,
                      headers: list[tuple[bytes, bytes]]) -> None:
        if status == 204:
            body = b""
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def proxy(server: Any) -> Any:
    app = FaultProxy(server.url)
    live = LiveServer(app, None).start()
    live.fault = app  # type: ignore[attr-defined]
    yield live
    live.stop()


def one_task(client: httpx.Client, flow_id: str) -> None:
    start(client, upload(client, wat(ONE_TASK_WAT)), id=flow_id)
    wait_for(client, flow_id, ("waiting",))


@pytest.mark.parametrize("fault", ["503", "item-503"])
def test_a_batch_report_answered_503_is_sent_again(server: Any, client: httpx.Client,
                                                   proxy: Any, fault: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dwasm.worker")
    proxy.fault.faults[REPORTS] = [fault, fault]
    one_task(client, "flaky")
    worker = Worker(proxy.url, poll_wait=0.5, retry=RetryPolicy(initial=0.05, max_delay=0.2))
    worker.add_handler("work", lambda payload: b"eventually")
    with worker:
        done = wait_for(client, "flaky")
    assert (done["stdout"], done["exit_code"]) == ("eventually", 1)
    assert proxy.fault.seen.count(REPORTS) == 3  # twice refused, then applied
    assert (worker.stats.completed, worker.stats.dropped, worker.stats.report_errors) == (1, 0, 0)
    retries = [r for r in caplog.records if getattr(r, "event", None) in ("http_retry",
                                                                         "report_retry")]
    assert len(retries) == 2, [r.getMessage() for r in retries]


def test_a_report_answered_503_until_report_timeout_is_given_up(
        server: Any, client: httpx.Client, proxy: Any) -> None:
    proxy.fault.faults[REPORTS] = ["item-503"] * 1000
    one_task(client, "gone")
    worker = Worker(proxy.url, poll_wait=0.5, report_timeout=0.6,
                    retry=RetryPolicy(initial=0.05, max_delay=0.1))
    worker.add_handler("work", lambda payload: b"lost")
    with worker:
        wait_until(lambda: worker.stats.report_errors == 1, what="the report given up")
    assert worker.stats.completed == 0 and proxy.fault.seen.count(REPORTS) >= 3
    assert client.get("/v1/tasks/gone/0").json()["status"] == "completed"  # item-503 lied


def test_without_batch_endpoints_the_worker_uses_single_requests(
        server: Any, client: httpx.Client, proxy: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dwasm.worker")
    proxy.fault.always_404 = ("/lease-batch", REPORTS)
    ids = fanouts(client, 1, "old")
    worker = square_worker(proxy.url, concurrency=4)
    with worker:
        wait_until(lambda: worker.stats.completed == 20, what="20 completions")
    finish_fanouts(client, ids)
    assert worker.single_leases and worker.single_reports
    seen = Counter("lease" if p.endswith("/lease") else "complete" if p.endswith("/complete")
                   else p for p in proxy.fault.seen)
    assert seen["complete"] == 20 and seen["lease"] >= 20
    assert seen[REPORTS] <= 1 and seen["/v1/queues/square/lease-batch"] == 1
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "batch_unsupported"]
    assert len(warnings) == 1


def test_error_texts_the_service_would_refuse_are_escaped(server: Any,
                                                          client: httpx.Client) -> None:
    one_task(client, "nul")
    worker = Worker(server.url, poll_wait=0.5)

    @worker.handler("work")
    def work(payload: bytes) -> bytes:
        raise PermanentError("bad\x00byte and a lone \ud800 surrogate")

    with worker:
        done = wait_for(client, "nul")
    assert (done["stdout"], done["exit_code"]) == (
        "bad\\x00byte and a lone \\ud800 surrogate", 2)
    assert (worker.stats.failed, worker.stats.report_errors) == (1, 0)


def test_a_batch_refused_as_a_whole_is_sent_report_by_report(server: Any, client: httpx.Client,
                                                             proxy: Any) -> None:
    module = upload(client, wat(ONE_TASK_WAT))
    for flow_id in ("split-a", "split-b"):
        start(client, module, id=flow_id)
        wait_for(client, flow_id, ("waiting",))
    proxy.fault.faults[REPORTS] = ["422"]
    both = threading.Barrier(2, timeout=10)
    worker = Worker(proxy.url, poll_wait=0.5, concurrency=2, report_delay=0.5)

    @worker.handler("work")
    def work(payload: bytes) -> bytes:
        both.wait()  # the two outcomes go in one request
        return current_task().flow_id.encode()

    with worker:
        for flow_id in ("split-a", "split-b"):
            done = wait_for(client, flow_id)
            assert (done["stdout"], done["exit_code"]) == (flow_id, 1)
    assert proxy.fault.seen.count(REPORTS) == 3  # the pair refused, then each alone
    assert (worker.stats.completed, worker.stats.report_errors) == (2, 0)
