"""Observability: JSON logs with request and flow context, request ids across nodes, and the
flow, task and event-loop metrics — against the real service (PostgreSQL, uvicorn, `dwasm serve`
processes, etcd for the two-node case) and, for the formatter and the id rules, directly."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from flowkit import COUNTER_WAT, ONE_TASK_WAT, TRAP_WAT, upload, wait_for, wat

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


# --- helpers --------------------------------------------------------------------------------

def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format → {(name, labels): value}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        out[(match.group(1), labels)] = float(match.group(3))
    return out


class Scrape:
    """One ``GET /metrics``; ``value(name, **labels)`` is 0 for a series that is absent."""

    def __init__(self, client: httpx.Client) -> None:
        response = client.get("/metrics")
        assert response.status_code == 200, response.text
        self.samples = parse_metrics(response.text)

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a server's output; every line that looks like JSON must be."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def wait_for_line(server: Any, pred: Callable[[dict[str, Any]], bool],
                  timeout: float = 10) -> dict[str, Any]:
    """The first JSON line of ``server``'s log matching ``pred`` (logs are written after the
    response went out: poll)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in json_lines(server.log()):
            if pred(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no such log line in:\n{server.log()[-4000:]}")
        time.sleep(0.05)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put it back afterwards."""
    from app.observability import logs

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
               for n in ("uvicorn", "uvicorn.error", "uvicorn.asgi")}
    chatty = {n: logging.getLogger(n).level for n in ("httpx", "httpcore")}
    node = logs._process_node
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (old, propagate) in uvicorn.items():
            logging.getLogger(name).handlers[:] = old
            logging.getLogger(name).propagate = propagate
        for name, old_level in chatty.items():
            logging.getLogger(name).setLevel(old_level)
        logs.set_process_node(node)


# --- request ids and formatting (no server) ---------------------------------------------------

@pytest.mark.parametrize("value,valid", [
    ("abc", True), ("3f2a-9c/x:1=y", True), ("x" * 128, True), ("x" * 129, False),
    ("", False), (None, False), ("has space", False), ("tab\there", False),
    ("new\nline", False), ("caf\u00e9", False), ("del\x7f", False),
])
def test_request_id_validation(value: str | None, valid: bool) -> None:
    from app.observability.logs import request_id_or_new, valid_request_id

    assert valid_request_id(value) is valid
    kept = request_id_or_new(value)
    if valid:
        assert kept == value
    else:
        assert HEX32.match(kept) and kept != request_id_or_new(value)


def test_request_headers_carry_exactly_one_valid_id() -> None:
    from app.observability.requests import request_id_of

    headers = [(b"accept", b"*/*"), (b"x-request-id", b"client-1")]
    assert request_id_of(headers) == ("client-1", headers)  # kept as it is, no copy
    rid, out = request_id_of([(b"accept", b"*/*")])
    assert HEX32.match(rid) and out == [(b"accept", b"*/*"), (b"x-request-id", rid.encode())]
    rid, out = request_id_of([(b"X-Request-Id", b"bad id"), (b"accept", b"*/*")])
    assert HEX32.match(rid) and out == [(b"accept", b"*/*"), (b"x-request-id", rid.encode())]
    rid, out = request_id_of([(b"x-request-id", b"a"), (b"x-request-id", b"b")])
    assert rid not in ("a", "b") and [v for k, v in out if k == b"x-request-id"] == [
        rid.encode()]


def test_json_formatter_fields_context_and_exceptions() -> None:
    from app.observability.logs import (
        FLOW_ID,
        NODE,
        REQUEST_ID,
        JsonFormatter,
        flow_context,
    )

    formatter = JsonFormatter()
    logger = logging.getLogger("dwasm.test")

    def emitted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        handler = Keep()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        old_level, logger.level = logger.level, logging.DEBUG
        try:
            logger.log(*args, **kwargs)
        finally:
            logger.removeHandler(handler)
            logger.level = old_level
        (record,) = records
        text = formatter.format(record)
        assert "\n" not in text  # one line per record, whatever the message holds
        return json.loads(text)

    plain = emitted(logging.WARNING, "two\nlines %s", "here", extra={"queue": "q1", "n": 3})
    assert plain["message"] == "two\nlines here" and plain["level"] == "warning"
    assert plain["logger"] == "dwasm.test" and RFC3339_UTC.match(plain["ts"])
    assert (plain["queue"], plain["n"]) == ("q1", 3)
    assert "request_id" not in plain and "flow_id" not in plain and "exc_info" not in plain

    tokens = [NODE.set("n7"), REQUEST_ID.set("r-1")]
    try:
        with flow_context("f-9"):
            try:
                raise ValueError("boom")
            except ValueError:
                line = emitted(logging.ERROR, "failed", exc_info=True)
        after = emitted(logging.INFO, "after", extra={"ratio": float("nan")})
    finally:
        REQUEST_ID.reset(tokens[1])
        NODE.reset(tokens[0])
    assert (line["node"], line["request_id"], line["flow_id"]) == ("n7", "r-1", "f-9")
    assert "Traceback" in line["exc_info"] and "ValueError: boom" in line["exc_info"]
    assert "flow_id" not in after and after["request_id"] == "r-1"  # the flow context ended
    assert after["ratio"] == "nan"  # still valid JSON
    assert FLOW_ID.get() is None


def test_configure_logging_routes_every_logger_through_one_handler(
        restore_logging: None) -> None:
    from app.observability.logs import REQUEST_ID, configure_logging

    stream = io.StringIO()
    configure_logging("info", "json", node="node-a", stream=stream)
    configure_logging("info", "json", node="node-a", stream=stream)  # replaces, not doubles
    logging.getLogger("uvicorn.error").info("Started server process [1]")
    logging.getLogger("dwasm.engine").debug("hidden at info")
    logging.getLogger("httpx").info("HTTP Request: GET http://peer/ 200")  # quiet below debug
    token = REQUEST_ID.set("r-2")
    try:
        logging.getLogger("dwasm.access").info("GET / 200", extra={"status": 200})
    finally:
        REQUEST_ID.reset(token)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(l["logger"], l["message"]) for l in lines] == [
        ("uvicorn.error", "Started server process [1]"), ("dwasm.access", "GET / 200")]
    assert all(l["node"] == "node-a" for l in lines)
    assert lines[1]["request_id"] == "r-2" and lines[1]["status"] == 200

    text = io.StringIO()
    configure_logging("warning", "text", stream=text)
    logging.getLogger("dwasm.access").info("not at warning")
    logging.getLogger("dwasm.engine").warning("flow %s moved", "f-1")
    (line,) = text.getvalue().splitlines()
    assert re.match(r"^\S+Z warning dwasm\.engine: flow f-1 moved \[node=node-a\]$", line), line
    with pytest.raises(ValueError, match="json, text"):
        configure_logging("info", "xml", stream=text)


def test_log_format_setting() -> None:
    from app.api.settings import Settings, SettingsError
    from app.observability.logs import default_format

    assert Settings.from_env({"DWASM_LOG_FORMAT": "Text"}).log_format == "text"
    assert Settings.from_env({}).log_format is None
    with pytest.raises(SettingsError, match="DWASM_LOG_FORMAT"):
        Settings.from_env({"DWASM_LOG_FORMAT": "xml"})
    assert default_format(io.StringIO()) == "json"  # not a terminal

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert default_format(Terminal()) == "text"


def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    from app.api.metrics import Registry
    from app.observability.loop_lag import loop_lag_monitor

    registry = Registry()

    async def main() -> None:
        async with loop_lag_monitor(registry) as monitor:
            await asyncio.sleep(0.35)  # a few samples of an idle loop
            time.sleep(0.3)  # noqa: ASYNC251  the loop is held: the sampler wakes up late
            await asyncio.sleep(0.25)
            assert monitor._task is not None and not monitor._task.done()
        assert monitor._task is None

    asyncio.run(main())
    samples = parse_metrics(registry.render())
    count = samples[("dwasm_event_loop_lag_seconds_count", frozenset())]
    assert count >= 4
    below = samples[("dwasm_event_loop_lag_seconds_bucket", frozenset({("le", "0.1")}))]
    assert below <= count - 1  # the stall landed above 0.1 s
    assert samples[("dwasm_event_loop_lag_seconds_sum", frozenset())] >= 0.15
    assert samples[("dwasm_event_loop_lag_max_seconds", frozenset())] >= 0.15


def test_lease_clock_is_bounded() -> None:
    from app.observability.flows import LeaseClock

    clock = LeaseClock(limit=3)
    clock.leased(["a", "b", "c", "d"])
    assert len(clock) == 3 and clock.ended("a") is None  # the oldest was forgotten
    seconds = clock.ended("d")
    assert seconds is not None and 0 <= seconds < 5 and clock.ended("d") is None
    assert clock.ended(None) is None


def test_engine_threads_run_in_the_callers_log_context() -> None:
    from app.flows.engine import FlowEngine
    from app.observability.logs import FLOW_ID, REQUEST_ID, flow_context

    engine = FlowEngine(None)

    async def main() -> tuple[Any, Any, str]:
        token = REQUEST_ID.set("r-3")
        try:
            with flow_context("f-thread"):
                seen = await engine._thread(lambda: (FLOW_ID.get(), REQUEST_ID.get(),
                                                     threading.current_thread().name))
        finally:
            REQUEST_ID.reset(token)
        return seen

    try:
        flow_id, request_id, thread = asyncio.run(main())
    finally:
        engine.executor.shutdown(wait=True)
    assert (flow_id, request_id) == ("f-thread", "r-3")
    assert thread.startswith("dwasm-flow")


def test_unexpected_error_is_logged_with_its_request_and_flow(
        start_live_server: Any, restore_logging: None) -> None:
    """A handler that raises: a 500 problem carrying the request id, and two JSON lines — the
    error with its traceback, the access line — in the request's and the flow's context."""
    from fastapi import APIRouter

    from app.api.app import create_app
    from app.observability.logs import configure_logging

    router = APIRouter()

    @router.post("/v1/flows/{flow_id}/query/{export}")
    async def explode(flow_id: str, export: str) -> None:
        raise RuntimeError(f"{export} went wrong")

    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    server = start_live_server(app_factory=lambda settings: create_app(settings,
                                                                       routers=[router]))
    with server.client() as client:
        r = client.post("/v1/flows/f-boom/query/sum", headers={"X-Request-Id": "req-boom"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "req-boom"
    assert r.headers["content-type"].startswith("application/problem+json")
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        mine = [line for line in lines if line.get("request_id") == "req-boom"]
        if len(mine) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    error, access = mine
    assert (error["logger"], error["level"], error["flow_id"]) == ("dwasm.api", "error", "f-boom")
    assert "RuntimeError: sum went wrong" in error["exc_info"]
    assert (access["logger"], access["status"], access["flow_id"], access["route"]) == (
        "dwasm.access", 500, "f-boom", "/v1/flows/{flow_id}/query/{export}")
    assert error["node"] == access["node"] == server.app.state.node_id


# --- metrics of a real service ----------------------------------------------------------------

def test_flow_and_task_metrics_move_by_what_happened(start_live_server: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from app.observability import flows as flow_metrics
    from app.worker import PermanentError, RetryableError, Worker, current_task

    monkeypatch.setattr(flow_metrics, "ACTIVE_INTERVAL", 0.1)
    server = start_live_server(retry_backoff=0.05)
    with server.client() as client:
        first = Scrape(client)
        assert first.value("dwasm_flows_started_total") == 0
        build = first.series("dwasm_build_info")
        assert list(build.values()) == [1.0]
        assert dict(next(iter(build)))["node"] == server.app.state.node_id

        fanout = upload(client, "fanout")
        one_task = upload(client, wat(ONE_TASK_WAT))
        trap = upload(client, wat(TRAP_WAT))
        counter = upload(client, wat(COUNTER_WAT))

        # A flow that waits for signals: the active-flow gauge sees it.
        assert client.post("/v1/flows", json={"module": counter, "id": "cnt"}).status_code == 201
        wait_for(client, "cnt", ("waiting",))
        deadline = time.monotonic() + 10
        while Scrape(client).value("dwasm_flows_active", status="waiting") != 1:
            assert time.monotonic() < deadline, "dwasm_flows_active never counted the flow"
            time.sleep(0.05)

        for fid in ("fan-a", "fan-b"):
            r = client.post("/v1/flows", json={"module": fanout, "id": fid})
            assert r.status_code == 201, r.text
            assert client.post(f"/v1/flows/{fid}/signals/go", content=b"0").status_code == 202
        assert client.post("/v1/flows", json={"module": one_task, "id": "one"}).status_code == 201
        assert client.post("/v1/flows", json={"module": trap, "id": "trap"}).status_code == 201

        worker = Worker(server.url, poll_wait=0.5)

        @worker.handler("square")
        def square(payload: bytes) -> bytes:
            task = current_task()
            if task.id == "fan-a/7" and task.attempt == 1:
                raise RetryableError("flaky, try again")
            return str(int(payload) ** 2).encode()

        @worker.handler("work")
        def work(payload: bytes) -> bytes:
            raise PermanentError("not today")

        worker.start()
        try:
            done = {fid: wait_for(client, fid) for fid in ("fan-a", "fan-b", "one", "trap")}
        finally:
            worker.stop()
            worker.join(15)
        assert [done[f]["status"] for f in ("fan-a", "fan-b", "one", "trap")] == [
            "completed", "completed", "completed", "failed"]
        assert (done["fan-a"]["stdout"], done["one"]["exit_code"]) == ("2470\n", 2)
        assert client.post("/v1/flows/cnt/cancel").json()["status"] == "cancelled"

        m = Scrape(client)
        assert m.value("dwasm_flows_started_total") == 5
        assert m.series("dwasm_flows_finished_total") == {
            frozenset({("status", "completed")}): 3, frozenset({("status", "failed")}): 1,
            frozenset({("status", "cancelled")}): 1}
        assert m.value("dwasm_tasks_scheduled_total", queue="square") == 40
        assert m.value("dwasm_tasks_scheduled_total", queue="work") == 1
        assert m.value("dwasm_tasks_leased_total", queue="square") == 41
        assert m.value("dwasm_tasks_leased_total", queue="work") == 1
        assert m.series("dwasm_tasks_completed_total") == {frozenset({("queue", "square")}): 40}
        assert m.series("dwasm_tasks_retried_total") == {
            frozenset({("queue", "square"), ("reason", "error")}): 1}
        assert m.series("dwasm_tasks_failed_total") == {
            frozenset({("queue", "work"), ("reason", "error")}): 1}
        assert m.value("dwasm_task_queue_wait_seconds_count", queue="square") == 41
        assert m.value("dwasm_task_run_seconds_count", queue="square") == 41
        assert m.value("dwasm_task_run_seconds_count", queue="work") == 1
        assert m.value("dwasm_task_turnaround_seconds_count", queue="square",
                       status="completed") == 40
        assert m.value("dwasm_task_turnaround_seconds_count", queue="work",
                       status="failed") == 1
        # the retried task waited out its backoff: its turnaround holds two runs and a wait
        assert m.value("dwasm_task_turnaround_seconds_sum", queue="square",
                       status="completed") >= 0.05
        for name in ("dwasm_task_queue_wait_seconds", "dwasm_task_run_seconds"):
            assert m.value(f"{name}_bucket", queue="square", le="+Inf") == 41
            assert m.value(f"{name}_sum", queue="square") >= 0
        checkpoints = m.value("dwasm_checkpoints_total")
        assert checkpoints >= 5
        assert m.value("dwasm_checkpoint_commit_seconds_count") == checkpoints
        assert m.value("dwasm_checkpoint_bytes_count") == checkpoints
        assert m.value("dwasm_event_loop_lag_seconds_count") > 0
        assert m.has("dwasm_event_loop_lag_max_seconds")
        assert m.value("dwasm_http_requests_total", method="POST", route="/v1/flows",
                       status="201") == 5

        deadline = time.monotonic() + 10
        while True:
            active = Scrape(client)
            if (active.value("dwasm_flows_active", status="waiting"),
                    active.value("dwasm_flows_active", status="running")) == (0, 0):
                break
            assert time.monotonic() < deadline, active.series("dwasm_flows_active")
            time.sleep(0.05)


def test_lease_expiry_counts_as_a_retry_then_a_failure(start_live_server: Any) -> None:
    """Leases that run out (a worker died): retried while attempts remain, then failed; the
    expired attempts have no run time (no report came)."""
    server = start_live_server()
    with server.client() as client:
        r = client.put("/v1/queues/work/policy", json={"lease_timeout": 0.2, "max_attempts": 2,
                                                       "backoff_initial": 0.01,
                                                       "backoff_max": 0.01})
        assert r.status_code == 200, r.text
        module = upload(client, wat(ONE_TASK_WAT))
        assert client.post("/v1/flows", json={"module": module, "id": "lost"}).status_code == 201
        for _ in range(2):  # lease and never report, twice
            deadline = time.monotonic() + 10
            while True:
                r = client.post("/v1/queues/work/lease", json={"wait": 1})
                if r.status_code == 200:
                    break
                assert time.monotonic() < deadline, "no lease"
        done = wait_for(client, "lost", timeout=30)
        assert (done["status"], done["exit_code"]) == ("completed", 2)
        m = Scrape(client)
    assert m.value("dwasm_tasks_leased_total", queue="work") == 2
    assert m.value("dwasm_tasks_retried_total", queue="work", reason="lease_expired") == 1
    assert m.value("dwasm_tasks_failed_total", queue="work", reason="lease_expired") == 1
    assert m.value("dwasm_task_run_seconds_count", queue="work") == 0
    assert m.value("dwasm_task_turnaround_seconds_count", queue="work", status="failed") == 1
    assert len(server.app.state.engine.flow_metrics.leases) == 0


# --- JSON logs of `dwasm serve` ---------------------------------------------------------------

def test_dwasm_serve_json_logs_carry_request_and_flow_context(spawn_server: Any) -> None:
    server = spawn_server(env={"DWASM_LOG_FORMAT": "json", "DWASM_LOG_LEVEL": "info",
                               "DWASM_NODE_ID": "obs-node-1"})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.get("/healthz", headers={"X-Request-Id": "req-abc-123"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-abc-123"
        access = wait_for_line(server, lambda l: l.get("request_id") == "req-abc-123")
        assert access["logger"] == "dwasm.access" and access["level"] == "info"
        assert (access["node"], access["method"], access["path"], access["route"],
                access["status"]) == ("obs-node-1", "GET", "/healthz", "/healthz", 200)
        assert isinstance(access["duration_ms"], (int, float)) and access["duration_ms"] >= 0
        assert RFC3339_UTC.match(access["ts"])

        # An unusable id is replaced; the answer says by what.
        r = client.get("/healthz", headers={"X-Request-Id": "no spaces please"})
        new_id = r.headers["x-request-id"]
        assert HEX32.match(new_id)
        wait_for_line(server, lambda l: l.get("request_id") == new_id and l["status"] == 200)

        # A flow that fails: the engine's line names the flow, and the request that started it.
        module = upload(client, wat(TRAP_WAT))
        r = client.post("/v1/flows", json={"module": module, "id": "trap-1"},
                        headers={"X-Request-Id": "req-trap-1"})
        assert r.status_code == 201, r.text
        assert wait_for(client, "trap-1")["status"] == "failed"
        failed = wait_for_line(server, lambda l: l["logger"] == "dwasm.engine"
                               and l.get("flow_id") == "trap-1")
        assert failed["request_id"] == "req-trap-1" and failed["node"] == "obs-node-1"
        assert "unreachable" in failed["message"] and failed["level"] == "info"

        # A refused request about a flow: its access line names the flow.
        r = client.post("/v1/flows/trap-1/cancel", headers={"X-Request-Id": "req-cancel-1"})
        assert r.status_code == 409, r.text
        refused = wait_for_line(server, lambda l: l.get("request_id") == "req-cancel-1")
        assert (refused["flow_id"], refused["status"], refused["route"]) == (
            "trap-1", 409, "/v1/flows/{flow_id}/cancel")
        r = client.get("/v1/tasks/trap-1/0", headers={"X-Request-Id": "req-task-1"})
        assert r.status_code == 404
        missing = wait_for_line(server, lambda l: l.get("request_id") == "req-task-1")
        assert (missing["flow_id"], missing["status"]) == ("trap-1", 404)
    assert server.stop() == 0
    log = server.log()
    lines = json_lines(log)
    assert any(l["logger"] == "uvicorn.error" and l["node"] == "obs-node-1" for l in lines)
    # uvicorn's own text access lines are gone; the progress lines are still plain text
    assert '" 200' not in log and "HTTP/1.1" not in log
    assert "listening on http://127.0.0.1:" in log and "server stopped" in log
    plain = [line for line in log.splitlines() if line and not line.startswith("{")]
    assert not any(line.startswith(("INFO", "WARNING", "ERROR")) for line in plain), plain


# --- request ids across nodes -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_forwarded_request_is_logged_under_the_same_id_on_both_nodes(
        spawn_server: Any, etcd_server: Any, database_url: str) -> None:
    from topology.shards import shard_of

    shards = 8
    ports = [_free_port(), _free_port()]
    nodes = []
    for i, port in enumerate(ports):
        # No DWASM_LOG_FORMAT: stderr is a file, so the default is JSON.
        nodes.append(spawn_server(database_url, port=port, env={
            "DWASM_ETCD": etcd_server.endpoint, "DWASM_NODE_ID": f"obs{i}",
            "DWASM_ADVERTISE_URL": f"http://127.0.0.1:{port}",
            "DWASM_CLUSTER_SECRET": "obs-secret", "DWASM_SHARDS": str(shards),
            "DWASM_LEASE_TTL": "2", "DWASM_LOG_LEVEL": "info"}))
    urls = [f"http://127.0.0.1:{p}" for p in ports]

    def views_agree() -> dict[str, Any] | None:
        views = [httpx.get(f"{u}/v1/cluster", timeout=10).json() for u in urls]
        owners = [a["owner"] if a else None for a in (views[0]["assignments"] or [])]
        if (len(owners) == shards and set(owners) == {"obs0", "obs1"}
                and views[0]["version"] == views[1]["version"]
                and views[0]["assignments"] == views[1]["assignments"]
                and all(a.get("next_owner") is None for a in views[0]["assignments"])):
            return views[0]
        return None

    deadline = time.monotonic() + 60
    while (view := views_agree()) is None:
        assert time.monotonic() < deadline, "the shards never settled on both nodes"
        time.sleep(0.2)
    flow_id = next(f for f in (f"obs-flow-{i}" for i in range(1000))
                   if view["assignments"][shard_of(f, shards)]["owner"] == "obs1")

    for attempt in range(20):  # a shard may still be changing hands: then try again
        request_id = f"req-fwd-{attempt}"
        r = httpx.get(f"{urls[0]}/v1/flows/{flow_id}", timeout=30,
                      headers={"X-Request-Id": request_id, "X-Dwasm-Consistency": "strong"})
        if r.status_code == 404 and r.headers.get("x-dwasm-served-by") == "obs1":
            break
        time.sleep(0.25)
    else:
        raise AssertionError(f"never forwarded to obs1: {r.status_code} {r.headers} {r.text}")
    assert r.headers.get_list("x-request-id") == [request_id]
    owner = wait_for_line(nodes[1], lambda l: l.get("request_id") == request_id)
    assert (owner["node"], owner["forwarded_by"], owner["status"], owner["flow_id"]) == (
        "obs1", "obs0", 404, flow_id)
    sender = wait_for_line(nodes[0], lambda l: l.get("request_id") == request_id)
    assert (sender["node"], sender["served_by"], sender["status"]) == ("obs0", "obs1", 404)
    assert "forwarded_by" not in sender

    # A client cannot pose as a peer by sending forwarding headers: 403, logged as such.
    r = httpx.get(f"{urls[1]}/v1/flows/{flow_id}", timeout=30,
                  headers={"X-Request-Id": "req-spoof", "X-Dwasm-Forwarded-By": "obs0"})
    assert r.status_code == 403 and r.headers["x-request-id"] == "req-spoof"
    spoof = wait_for_line(nodes[1], lambda l: l.get("request_id") == "req-spoof")
    assert (spoof["status"], spoof["forwarded_by"]) == (403, "obs0")
