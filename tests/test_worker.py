"""The Python worker library (app.worker) and ``dwasm worker``, against the real service: real
PostgreSQL, the service with the flow engine on a real uvicorn server (in-process, so that a
test can shorten the queue policy; a server process for the restart test), real HTTP.

Covers the fanout flow end to end, retryable and permanent failures, heartbeats that keep a
long task leased (and what happens without them), clean and abandoning stops, the command
line under SIGTERM with JSON logs, and the client's retries (connection errors across a server
restart, 503 with Retry-After) and idempotent reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.worker import (LeaseLost, PermanentError, RetryableError, RetryPolicy, TaskClient,
                        TaskFinished, TaskNotFound, Unavailable, Worker, current_task)
from app.worker.client import parse_retry_after
from dbfixtures import LiveServer
from flowkit import ONE_TASK_WAT, ROOT, fast_policy, flow_app, start, upload, wait_for, wat


@pytest.fixture
def server(start_live_server: Any) -> Any:
    return start_live_server(app_factory=flow_app)


class Running:
    """A Worker's ``run()`` in a background thread; ``result`` is what it returned."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.result: bool | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = self.worker.run()

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def stop(self, timeout: float = 15) -> bool | None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        return self.result

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop()


def square_worker(url: str, **options: Any) -> Worker:
    w = Worker(url, poll_wait=0.5, **options)

    @w.handler("square")
    def square(payload: bytes) -> bytes:
        return str(int(payload) ** 2).encode()

    return w


def events(client: httpx.Client, flow_id: str) -> list[str]:
    r = client.get(f"/v1/flows/{flow_id}/events", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return [e["type"] for e in r.json()["items"]]


def task(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    return r.json()


def one_task_flow(client: httpx.Client, flow_id: str) -> None:
    """A flow with one task on queue "work" (payload "payload"); it prints the outcome and
    exits 1 if the task succeeded, 2 if it failed."""
    start(client, upload(client, wat(ONE_TASK_WAT)), id=flow_id)
    wait_for(client, flow_id, ("waiting",))


# --- end to end --------------------------------------------------------------------------------

def test_fanout_flow_with_a_worker(server: Any, client: httpx.Client) -> None:
    fanout = upload(client, "fanout")
    start(client, fanout, id="fan")
    worker = square_worker(server.url, concurrency=3)
    with Running(worker) as running:
        waiting = wait_for(client, "fan", ("waiting",),
                           pred=lambda f: f["waiting"]["op"] == "signal")
        assert waiting["waiting"]["signal"] == "go"
        r = client.post("/v1/flows/fan/signals/go", content=b"5")
        assert r.status_code == 202, r.text
        done = wait_for(client, "fan")
        assert running.stop() is True
    assert (done["status"], done["stdout"], done["exit_code"]) == ("completed", "2475\n",
                                                                    2475 % 256)
    stats = worker.stats.snapshot()
    assert stats["leased"] == stats["completed"] == 20
    assert stats["failed"] == stats["dropped"] == stats["report_errors"] == 0
    for i in range(20):
        assert (task(client, f"fan/{i}")["status"], task(client, f"fan/{i}")["attempt"]) == (
            "completed", 1)
    kinds = events(client, "fan")
    assert kinds.count("task_completed") == kinds.count("task_delivered") == 20


def test_retryable_error_then_success(client: httpx.Client, server: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fast_policy(monkeypatch)
    one_task_flow(client, "retry")
    attempts: list[tuple[str, int, bytes]] = []
    worker = Worker(server.url, poll_wait=0.5)

    @worker.handler("work")
    def work(payload: bytes) -> str:
        context = current_task()
        attempts.append((context.id, context.attempt, payload))
        if context.attempt == 1:
            raise RetryableError("the backend is busy")
        return "worked"

    with Running(worker):
        done = wait_for(client, "retry")
    assert attempts == [("retry/0", 1, b"payload"), ("retry/0", 2, b"payload")]
    assert (done["stdout"], done["exit_code"]) == ("worked", 1)
    assert worker.stats.failed == 1 and worker.stats.completed == 1
    kinds = events(client, "retry")
    assert kinds.count("task_retry") == 1 and kinds.count("task_delivered") == 1


def test_other_exceptions_are_retried_until_attempts_run_out(
        client: httpx.Client, server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fast_policy(monkeypatch, max_attempts=2)
    one_task_flow(client, "flaky")
    worker = Worker(server.url, poll_wait=0.5)
    calls = []

    @worker.handler("work")
    async def work(payload: bytes) -> bytes:  # async handlers work too
        calls.append(current_task().attempt)
        raise ValueError("cannot parse " + payload.decode())

    with Running(worker):
        done = wait_for(client, "flaky")
    assert calls == [1, 2]
    assert (done["stdout"], done["exit_code"]) == ("ValueError: cannot parse payload", 2)
    assert task(client, "flaky/0")["status"] == "failed"


def test_permanent_failure_reaches_the_flow(server: Any, client: httpx.Client) -> None:
    start(client, upload(client, "fanout"), id="perm")
    worker = Worker(server.url, poll_wait=0.5, concurrency=4)

    @worker.handler("square")
    def square(payload: bytes) -> bytes:
        if payload == b"7":
            raise PermanentError("seven is not squared here")
        return str(int(payload) ** 2).encode()

    with Running(worker):
        done = wait_for(client, "perm")
    assert done["status"] == "completed" and done["exit_code"] == 1
    assert "task 7 failed: seven is not squared here" in done["stderr"]
    failed = task(client, "perm/7")
    assert (failed["status"], failed["attempt"]) == ("failed", 1)  # not retried


def test_result_over_the_limit_fails_the_task(start_live_server: Any) -> None:
    server = start_live_server(app_factory=flow_app, max_payload=1024)
    with server.client() as client:
        one_task_flow(client, "big")
        worker = Worker(server.url, poll_wait=0.5)
        worker.add_handler("work", lambda payload: b"x" * 2048)
        with Running(worker):
            done = wait_for(client, "big")
    assert done["exit_code"] == 2 and "2048 bytes" in done["stdout"]


# --- heartbeats ---------------------------------------------------------------------------------

def test_heartbeats_keep_a_long_task_leased(client: httpx.Client, server: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fast_policy(monkeypatch, lease_timeout=1.0)
    one_task_flow(client, "long")
    beats: list[int] = []
    worker = Worker(server.url, poll_wait=0.5, concurrency=2)  # a second thread could steal it

    @worker.handler("work")
    def work(payload: bytes) -> bytes:
        time.sleep(2.5)  # more than two leases
        beats.append(current_task().heartbeats)
        return b"slow but steady"

    with Running(worker):
        done = wait_for(client, "long")
    assert (done["stdout"], done["exit_code"]) == ("slow but steady", 1)
    assert len(beats) == 1 and beats[0] >= 3, beats
    assert task(client, "long/0")["attempt"] == 1
    assert worker.stats.dropped == 0 and "task_retry" not in events(client, "long")


def test_without_heartbeats_a_long_task_is_leased_again(client: httpx.Client, server: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fast_policy(monkeypatch, lease_timeout=0.5)
    one_task_flow(client, "nobeat")
    worker = Worker(server.url, poll_wait=0.5, concurrency=2, heartbeat_fraction=0)

    @worker.handler("work")
    def work(payload: bytes) -> bytes:
        attempt = current_task().attempt
        if attempt == 1:
            time.sleep(2.5)  # the lease expires and the reaper hands the task out again
        return f"attempt {attempt}".encode()

    with Running(worker):
        done = wait_for(client, "nobeat")
        deadline = time.monotonic() + 10
        while worker.stats.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert (done["stdout"], done["exit_code"]) == ("attempt 2", 1)
    assert worker.stats.dropped == 1  # attempt 1's late result was refused: lease lost


def test_a_cancelled_flow_tells_its_long_handler(client: httpx.Client, server: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fast_policy(monkeypatch, lease_timeout=1.0)
    one_task_flow(client, "cancel")
    reasons: list[str] = []
    entered = threading.Event()
    worker = Worker(server.url, poll_wait=0.5)

    @worker.handler("work")
    def work(payload: bytes) -> bytes:
        context = current_task()
        entered.set()
        assert context.lost.wait(10)  # set by the next refused heartbeat
        reasons.append(context.lost_reason)
        return b"nobody wants this"

    with Running(worker):
        assert entered.wait(10)
        assert client.post("/v1/flows/cancel/cancel").status_code in (200, 202)
        deadline = time.monotonic() + 10
        while worker.stats.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert reasons == ["task-cancelled"] and worker.stats.dropped == 1
    assert task(client, "cancel/0")["status"] == "cancelled"


# --- stopping -----------------------------------------------------------------------------------

def test_stop_finishes_in_flight_tasks_and_leases_no_more(server: Any,
                                                          client: httpx.Client) -> None:
    start(client, upload(client, "fanout"), id="stop")
    entered = threading.Event()
    release = threading.Event()
    worker = Worker(server.url, poll_wait=0.5)

    @worker.handler("square")
    def square(payload: bytes) -> bytes:
        entered.set()
        assert release.wait(10)
        return str(int(payload) ** 2).encode()

    running = Running(worker).__enter__()
    assert entered.wait(10)
    worker.stop()
    time.sleep(0.3)
    assert running.thread.is_alive()  # waits for the handler
    release.set()
    began = time.monotonic()
    assert running.stop() is True
    assert time.monotonic() - began < 5
    assert worker.stats.leased == worker.stats.completed == 1
    statuses = [task(client, f"stop/{i}")["status"] for i in range(20)]
    assert statuses.count("completed") == 1 and statuses.count("pending") == 19


def test_stop_while_idle_is_quick(server: Any) -> None:
    worker = square_worker(server.url)
    running = Running(worker).__enter__()
    time.sleep(0.3)
    began = time.monotonic()
    assert running.stop() is True
    assert time.monotonic() - began < 3  # about one poll_wait (0.5 s)


def test_stop_timeout_abandons_a_stuck_handler(server: Any, client: httpx.Client) -> None:
    one_task_flow(client, "stuck")
    entered = threading.Event()
    release = threading.Event()
    worker = Worker(server.url, poll_wait=0.5, stop_timeout=0.5)

    @worker.handler("work")
    def work(payload: bytes) -> bytes:
        entered.set()
        release.wait(10)
        return b"too late"

    running = Running(worker).__enter__()
    assert entered.wait(10)
    assert running.stop() is False  # abandoned
    assert worker.stats.abandoned == 1
    assert task(client, "stuck/0")["status"] == "leased"  # until the lease expires
    release.set()


WORKER_MODULE = """
    import time
    from app.worker import handler

    @handler("work")
    def work(payload: bytes) -> bytes:
        time.sleep(1.0)
        return b"from the command line"
"""


def test_cli_worker_stops_cleanly_on_sigterm(server: Any, client: httpx.Client,
                                             tmp_path: Path) -> None:
    module = tmp_path / "cliworker.py"
    module.write_text(textwrap.dedent(WORKER_MODULE))
    one_task_flow(client, "cli")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DWASM_URL": server.url}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", str(module),
                             "--log-format", "json"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while task(client, "cli/0")["status"] != "leased":
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never leased the task"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # while the handler runs
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    records = [json.loads(line) for line in err.decode().splitlines()]
    completed = [r for r in records if r.get("event") == "task_completed"]
    assert len(completed) == 1 and completed[0]["task_id"] == "cli/0"
    assert completed[0]["queue"] == "work" and completed[0]["duration_ms"] >= 900
    assert records[-1]["event"] == "worker_stopped" and records[-1]["clean"] is True
    done = wait_for(client, "cli")
    assert (done["stdout"], done["exit_code"]) == ("from the command line", 1)


def test_cli_worker_reports_unloadable_targets(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for target, message in [("no_such_module", "no module named 'no_such_module'"),
                            ("empty", "defines no Worker and no @handler functions"),
                            ("empty:nope", "has no attribute 'nope'"),
                            ("empty:x", "is not a Worker")]:
        proc = subprocess.run([sys.executable, "-m", "app.cli", "worker", target], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, (target, proc.stderr)


# --- the client: retries and idempotent reports -------------------------------------------------

def test_reports_are_idempotent(server: Any, client: httpx.Client) -> None:
    one_task_flow(client, "idem")
    with TaskClient(server.url) as tc:
        leased = tc.lease("work", wait=5)
        assert leased is not None and leased.payload == b"payload" and leased.attempt == 1
        assert 20 < leased.lease_seconds() < 40
        first = tc.complete(leased, b"done")
        assert tc.complete(leased, b"done") == first  # a retried completion is harmless
        with pytest.raises(TaskFinished):
            tc.complete(leased, b"something else")
        with pytest.raises(TaskNotFound):
            tc.get("idem/99")
        assert tc.get("idem/0").status == "completed"
    assert wait_for(client, "idem")["stdout"] == "done"


def test_lease_lost_is_reported(server: Any, client: httpx.Client,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    fast_policy(monkeypatch, lease_timeout=0.3, backoff_initial=0.05)
    one_task_flow(client, "lost")
    with TaskClient(server.url) as tc:
        first = tc.lease("work", wait=5)
        assert first is not None
        second = tc.lease("work", wait=10)  # after the reaper gave it back
        assert second is not None and second.attempt == 2
        with pytest.raises(LeaseLost):
            tc.heartbeat(first)
        with pytest.raises(LeaseLost):
            tc.complete(first, b"stale")
        tc.complete(second, b"fresh")
    assert wait_for(client, "lost")["stdout"] == "fresh"


def _flaky_app(failures: int, retry_after: str) -> Any:
    """An ASGI app that answers 503 (with Retry-After) ``failures`` times, then 204."""
    seen: list[float] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("startup", "startup.complete").replace(
                    "shutdown", "shutdown.complete")
                await send({"type": kind})
                if message["type"] == "lifespan.shutdown":
                    return
        seen.append(time.monotonic())
        if len(seen) <= failures:
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/problem+json"),
                (b"retry-after", retry_after.encode())]})
            await send({"type": "http.response.body",
                        "body": b'{"type":"urn:dwasm:problem:not-ready","title":"Service '
                                b'Unavailable","status":503,"detail":"starting"}'})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    app.seen = seen  # type: ignore[attr-defined]
    return app


def test_503_is_retried_after_retry_after() -> None:
    app = _flaky_app(1, "1")
    flaky = LiveServer(app, None).start()
    try:
        with TaskClient(flaky.url, retry=RetryPolicy(initial=0.01)) as tc:
            assert tc.lease("q", wait=0) is None
        assert len(app.seen) == 2 and app.seen[1] - app.seen[0] >= 0.95
        always = _flaky_app(10**6, "0")
        down = LiveServer(always, None).start()
        try:
            with TaskClient(down.url, retry=RetryPolicy(initial=0.02, max_elapsed=0.5)) as tc:
                with pytest.raises(Unavailable, match="503"):
                    tc.lease("q")
            assert len(always.seen) >= 3
        finally:
            down.stop()
    finally:
        flaky.stop()


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT",
                             now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


@pytest.mark.slow
def test_worker_survives_server_restarts(spawn_server: Any,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="dwasm.worker")
    proc = spawn_server()
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        start(client, upload(client, "fanout"), id="restart")
        seen: list[str] = []
        worker = Worker(proc.url, poll_wait=0.5,
                        retry=RetryPolicy(initial=0.05, max_delay=0.5))

        @worker.handler("square")
        def square(payload: bytes) -> bytes:
            seen.append(current_task().id)
            time.sleep(0.05)
            return str(int(payload) ** 2).encode()

        with Running(worker):
            deadline = time.monotonic() + 30
            while len(seen) < 5:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            proc.restart(kill=True)  # SIGKILL mid-stream; connections die, the port is reused
            client.post("/v1/flows/restart/signals/go", content=b"0")
            done = wait_for(client, "restart", timeout=60)
    assert (done["stdout"], done["exit_code"]) == ("2470\n", 2470 % 256)
    assert worker.stats.completed + worker.stats.dropped >= 20
    retried = [r for r in caplog.records if getattr(r, "event", None) == "http_retry"]
    assert retried, "the restart went unnoticed: no request was retried"
