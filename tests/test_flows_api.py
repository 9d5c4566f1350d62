"""The flows API end to end: a real PostgreSQL, the service (with the flow engine) on a real
uvicorn server, httpx clients. Plain WASI flows, the fanout scenario with a worker, idempotent
starts, cancel, events, signals, queries, child flows, and bad input everywhere (4xx problems
that change nothing)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from flowkit import (BAD_IMPORT_WAT, COUNTER_WAT, TRAP_WAT, ROOT, SquareWorker, assert_problem,
                     lease, start, upload, wait_for, wat)


# --- plain WASI flows ---------------------------------------------------------------------------

def test_plain_wasi_flow_completes_with_stdout_and_exit_code(client: httpx.Client) -> None:
    hello = upload(client, "hello")
    flow = start(client, hello, stdin="Bob\n")
    assert flow["status"] in ("running", "completed") and flow["module"] == hello
    done = wait_for(client, flow["id"])
    assert done["status"] == "completed" and done["exit_code"] == 0
    assert done["stdout"] == "Hello, Bob!\n" and done["stderr"] == ""
    assert done["stdout_base64"] is None and done["finished_at"] is not None
    by_args = wait_for(client, start(client, hello, args=["Ann"])["id"])
    assert by_args["stdout"] == "Hello, Ann!\n" and by_args["args"] == ["Ann"]
    by_b64 = wait_for(client, start(client, hello, stdin_base64="WmVk")["id"])
    assert by_b64["stdout"] == "Hello, Zed!\n"


def test_exit_code_and_trap(client: httpx.Client) -> None:
    counter = upload(client, wat(COUNTER_WAT))
    flow = start(client, counter)
    wait_for(client, flow["id"], ("waiting",))
    for _ in range(3):
        assert client.post(f"/v1/flows/{flow['id']}/signals/tick").status_code == 202
    done = wait_for(client, flow["id"])
    assert (done["status"], done["exit_code"], done["stdout"]) == ("completed", 3, "hi\n")

    trap = wait_for(client, start(client, upload(client, wat(TRAP_WAT)))["id"])
    assert trap["status"] == "failed" and trap["exit_code"] is None
    assert "unreachable" in trap["error"] and trap["stderr"] == "oops\n"


def test_non_utf8_output_has_a_base64_variant(client: httpx.Client) -> None:
    hello = upload(client, "hello")
    done = wait_for(client, start(client, hello, stdin_base64="/w==")["id"])  # b"\xff"
    assert done["stdout_base64"] == "SGVsbG8sIP8hCg=="  # "Hello, \xff!\n"
    assert done["stdout"] == "Hello, \ufffd!\n"


# --- the fanout scenario ------------------------------------------------------------------------

def test_fanout_end_to_end(server: Any, client: httpx.Client) -> None:
    fanout = upload(client, "fanout")
    flow = start(client, fanout, id="fan-1")
    with SquareWorker(server.url) as worker:
        waiting = wait_for(client, "fan-1", ("waiting",),
                           pred=lambda f: f["waiting"]["op"] == "signal")
    assert waiting["waiting"]["signal"] == "go" and not worker.errors
    assert sorted(worker.seen) == sorted(f"fan-1/{i}" for i in range(20))
    assert set(worker.seen.values()) == {1}
    r = client.post("/v1/flows/fan-1/signals/go", content=b"7")
    assert r.status_code == 202 and r.json()["name"] == "go"
    done = wait_for(client, flow["id"])
    assert (done["status"], done["stdout"], done["exit_code"]) == ("completed", "2477\n",
                                                                    2477 % 256)
    events = client.get("/v1/flows/fan-1/events", params={"limit": 1000}).json()["items"]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-2:] == ["exit", "checkpoint"]
    assert kinds.count("task_scheduled") == 20 and kinds.count("task_completed") == 20
    assert kinds.count("task_delivered") == 20 and "timer" in kinds and "signal" in kinds
    # every task was leased once, completed once and delivered once
    for i in range(20):
        task = client.get(f"/v1/tasks/fan-1/{i}").json()
        assert (task["status"], task["attempt"]) == ("completed", 1)


def test_fanout_restored_from_the_database_at_every_wake_up(
        start_live_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.flows import engine

    monkeypatch.setattr(engine, "WARM_FLOWS", 0)  # no waiting flow stays in memory
    server = start_live_server()
    with server.client() as client:
        fanout = upload(client, "fanout")
        start(client, fanout, id="cold")
        client.post("/v1/flows/cold/signals/go", content=b"3")
        with SquareWorker(server.url):
            done = wait_for(client, "cold")
        assert (done["stdout"], done["exit_code"]) == ("2473\n", 2473 % 256)
        assert server.app.state.engine.stats["warm_resumes"] == 0
        assert server.app.state.engine.stats["restores"] >= 3


def test_outcome_arriving_while_the_flow_runs_is_not_lost(
        start_live_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outcome handed to the flow after its step was captured must not be marked delivered
    by that (older) capture: restored from the checkpoint, the flow would never see it."""
    from app.flows import engine, run

    monkeypatch.setattr(engine, "WARM_FLOWS", 0)
    original = run.FlowRun.step

    def slow_step(self: Any, *args: Any) -> Any:
        time.sleep(0.3)  # room for an outcome to arrive while the flow runs
        return original(self, *args)

    monkeypatch.setattr(run.FlowRun, "step", slow_step)
    server = start_live_server()
    with server.client() as client:
        start(client, upload(client, "fanout"), id="race")
        client.post("/v1/flows/race/signals/go", content=b"0")
        tasks = {}
        while len(tasks) < 20:
            task = lease(client)
            assert task is not None
            tasks[task["id"]] = task
        wait_for(client, "race", ("waiting",))

        def done(i: int) -> None:
            task = tasks[f"race/{i}"]
            r = client.post(f"/v1/tasks/race/{i}/complete",
                            json={"lease_id": task["lease_id"], "result_text": str(i * i)})
            assert r.status_code == 200

        done(0)  # wakes the flow; it runs (slowly) on to await handle 1
        time.sleep(0.1)
        done(2)  # arrives while that step runs
        wait_for(client, "race", ("waiting",), pred=lambda f: f["waiting"]["handles"] == [1])
        for i in [1] + list(range(3, 20)):
            done(i)
        final = wait_for(client, "race", timeout=30)
        assert (final["stdout"], final["exit_code"]) == ("2470\n", 2470 % 256)


def test_signal_sent_before_the_flow_waits_is_kept(server: Any, client: httpx.Client) -> None:
    fanout = upload(client, "fanout")
    start(client, fanout, id="early")
    assert client.post("/v1/flows/early/signals/go", content=b"1").status_code == 202
    with SquareWorker(server.url):
        done = wait_for(client, "early")
    assert done["stdout"] == "2471\n"


def test_failed_task_fails_the_flow(server: Any, client: httpx.Client) -> None:
    fanout = upload(client, "fanout")
    start(client, fanout, id="bad")
    task = lease(client)
    assert task is not None and task["id"] == "bad/0"
    r = client.post("/v1/tasks/bad/0/fail", json={"lease_id": task["lease_id"],
                                                  "error": "no squares today",
                                                  "retryable": False})
    assert r.status_code == 200 and r.json()["status"] == "failed"
    with SquareWorker(server.url) as worker:
        done = wait_for(client, "bad")
    assert len(worker.seen) == 19 and not worker.errors
    assert done["exit_code"] == 1 and "task 0 failed: no squares today" in done["stderr"]


# --- starts ----------------------------------------------------------------------------------------

def test_idempotent_start_with_client_id(client: httpx.Client) -> None:
    hello = upload(client, "hello")
    body = {"module": hello, "args": ["x"], "env": {"A": "1"}, "stdin": "Al", "id": "same"}
    first = client.post("/v1/flows", json=body)
    assert first.status_code == 201 and first.headers["location"] == "/v1/flows/same"
    again = client.post("/v1/flows", json=body)
    assert again.status_code == 200 and again.json()["id"] == "same"
    assert again.json()["created_at"] == first.json()["created_at"]
    other = client.post("/v1/flows", json={**body, "stdin": "Bo"})
    assert_problem(other, 409, "flow-exists")
    done = wait_for(client, "same")
    assert done["stdout"] == "Hello, Al!\n" and done["env"] == {"A": "1"}
    assert client.post("/v1/flows", json=body).status_code == 200  # also once finished
    listed = client.get("/v1/flows", params={"module": hello}).json()["items"]
    assert [f["id"] for f in listed] == ["same"]


def test_list_filters_and_pagination(client: httpx.Client) -> None:
    hello = upload(client, "hello")
    counter = upload(client, wat(COUNTER_WAT))
    ids = [start(client, hello, id=f"h{i}")["id"] for i in range(5)]
    start(client, counter, id="c0")
    for fid in ids:
        wait_for(client, fid)
    wait_for(client, "c0", ("waiting",))
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "module": hello}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/flows", params=params).json()
        seen += [f["id"] for f in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    waiting = client.get("/v1/flows", params={"status": "waiting"}).json()["items"]
    assert [f["id"] for f in waiting] == ["c0"] and waiting[0]["waiting"]["signal"] == "tick"
    assert client.get("/v1/flows", params={"status": "completed", "limit": 1000}).json()[
        "items"].__len__() == 5


# --- cancel ----------------------------------------------------------------------------------------

def test_cancel_stops_the_flow_and_its_tasks(client: httpx.Client) -> None:
    fanout = upload(client, "fanout")
    start(client, fanout, id="doomed")
    wait_for(client, "doomed", ("waiting",))
    leased = lease(client)
    assert leased is not None
    r = client.post("/v1/flows/doomed/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    statuses = {client.get(f"/v1/tasks/doomed/{i}").json()["status"] for i in range(20)}
    assert statuses == {"cancelled"}
    assert lease(client, wait=0) is None
    late = client.post(f"/v1/tasks/{leased['id']}/complete",
                       json={"lease_id": leased["lease_id"], "result_text": "0"})
    assert_problem(late, 409, "task-cancelled")
    again = client.post("/v1/flows/doomed/cancel")
    assert again.status_code == 200 and again.json()["updated_at"] == r.json()["updated_at"]
    assert_problem(client.post("/v1/flows/doomed/signals/go", content=b"1"), 409,
                   "flow-finished")
    kinds = [e["type"] for e in client.get("/v1/flows/doomed/events").json()["items"]]
    assert kinds.count("cancelled") == 1
    time.sleep(0.2)
    assert client.get("/v1/flows/doomed").json()["status"] == "cancelled"


def test_cancel_a_finished_flow_is_a_conflict(client: httpx.Client) -> None:
    hello = upload(client, "hello")
    done = wait_for(client, start(client, hello)["id"])
    assert_problem(client.post(f"/v1/flows/{done['id']}/cancel"), 409, "flow-finished")
    assert client.get(f"/v1/flows/{done['id']}").json()["status"] == "completed"


def test_cancel_a_computing_flow(client: httpx.Client) -> None:
    cpu = upload(client, "cpu")
    flow = start(client, cpu, args=["100000000"])
    time.sleep(0.3)
    r = client.post(f"/v1/flows/{flow['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    time.sleep(0.5)
    after = client.get(f"/v1/flows/{flow['id']}").json()
    assert after["status"] == "cancelled" and after["stdout"] == ""


def cpu_checksum(rounds: int) -> str:
    """What examples/flows/cpu.c prints (xorshift64* mixed into a sum)."""
    mask = (1 << 64) - 1
    x, acc = 0x9E3779B97F4A7C15, 0
    for _ in range(rounds):
        x ^= x >> 12
        x ^= (x << 25) & mask
        x ^= x >> 27
        acc = (acc + x * 0x2545F4914F6CDD1D) & mask
    return f"checksum {rounds} {acc:016x}\n"


def test_a_computing_flow_checkpoints_and_resumes_after_a_restart(
        start_live_server: Any, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.flows import engine

    monkeypatch.setattr(engine, "CHECKPOINT_INTERVAL", 0.2)
    rounds = 5_000_000  # about 1.5 s in the compiled tier: the restart comes mid-computation
    first = start_live_server(database_url)
    with first.client() as client:
        flow = start(client, upload(client, "cpu"), args=[str(rounds)])
        wait_for(client, flow["id"], ("running",), pred=lambda f: f["checkpoint_seq"] >= 1)
    first.stop()  # mid-computation: the row stays running, at its last checkpoint
    second = start_live_server(database_url)
    with second.client() as client:
        mid = client.get(f"/v1/flows/{flow['id']}").json()
        assert mid["checkpoint_seq"] >= 1 and mid["status"] == "running", mid
        done = wait_for(client, flow["id"])
        assert (done["status"], done["exit_code"]) == ("completed", 0)
        assert done["stdout"] == cpu_checksum(rounds)
        events = client.get(f"/v1/flows/{flow['id']}/events", params={"limit": 1000}).json()
        running = [e for e in events["items"] if e["type"] == "checkpoint"
                   and e["data"]["status"] == "running"]
        assert len(running) >= 2  # before and after the restart
        assert second.app.state.engine.stats["restores"] == 1


# --- child flows ----------------------------------------------------------------------------------

def test_child_flow(client: httpx.Client) -> None:
    parent = upload(client, "parent")
    hello = upload(client, "hello")
    done = wait_for(client, start(client, parent, args=[hello, "Kid"], id="p1")["id"])
    assert done["stdout"] == "child succeeded: Hello, Kid!\n" and done["exit_code"] == 0
    child = client.get("/v1/flows/p1~0").json()
    assert child["parent_id"] == "p1" and child["status"] == "completed"
    kids = client.get("/v1/flows", params={"parent": "p1"}).json()["items"]
    assert [k["id"] for k in kids] == ["p1~0"]
    missing = "sha256:" + "ab" * 32
    failed = wait_for(client, start(client, parent, args=[missing])["id"])
    assert failed["exit_code"] == 1 and "is not stored" in failed["stdout"]


def test_cancel_cancels_children(client: httpx.Client) -> None:
    parent = upload(client, "parent")
    counter = upload(client, wat(COUNTER_WAT))
    start(client, parent, args=[counter], id="p2")
    wait_for(client, "p2", ("waiting",))
    wait_for(client, "p2~0", ("waiting",))
    assert client.post("/v1/flows/p2/cancel").status_code == 200
    assert client.get("/v1/flows/p2~0").json()["status"] == "cancelled"


def test_cancelled_child_fails_its_parent_await(client: httpx.Client) -> None:
    parent = upload(client, "parent")
    counter = upload(client, wat(COUNTER_WAT))
    start(client, parent, args=[counter], id="p3")
    wait_for(client, "p3", ("waiting",))
    wait_for(client, "p3~0", ("waiting",))
    assert client.post("/v1/flows/p3~0/cancel").status_code == 200
    done = wait_for(client, "p3")
    assert done["exit_code"] == 1 and done["stdout"].startswith("child failed: ")
    assert "cancelled" in done["stdout"]


# --- queries --------------------------------------------------------------------------------------

def test_query_runs_on_a_copy_of_the_latest_snapshot(client: httpx.Client) -> None:
    counter = upload(client, wat(COUNTER_WAT))
    flow = start(client, counter, id="q")
    wait_for(client, "q", ("waiting",))
    assert client.post("/v1/flows/q/signals/tick").status_code == 202
    wait_for(client, "q", ("waiting",), pred=lambda f: f["checkpoint_seq"] >= 2)
    r = client.post("/v1/flows/q/query/count")
    assert r.status_code == 200 and r.json()["results"] == [1] and r.json()["types"] == ["i32"]
    assert client.post("/v1/flows/q/query/add", json={"args": [2, "-3"]}).json()[
        "results"] == [-1]
    assert client.post("/v1/flows/q/query/neg").json()["results"] == [-5, 2.5]
    # a query that changes state changes only its copy
    assert client.post("/v1/flows/q/query/bump").status_code == 200
    assert client.post("/v1/flows/q/query/count").json()["results"] == [1]
    before = client.get("/v1/flows/q").json()
    assert_problem(client.post("/v1/flows/q/query/spin", json={"fuel": 1000}), 422,
                   "fuel-exhausted")
    assert_problem(client.post("/v1/flows/q/query/wait"), 422, "query-would-wait")
    assert_problem(client.post("/v1/flows/q/query/boom"), 422, "query-trapped")
    assert_problem(client.post("/v1/flows/q/query/nothing"), 404, "export-not-found")
    assert_problem(client.post("/v1/flows/q/query/add", json={"args": [1]}), 422,
                   "invalid-args")
    assert_problem(client.post("/v1/flows/q/query/add", json={"args": [1, "x"]}), 422,
                   "invalid-args")
    assert_problem(client.post("/v1/flows/q/query/count", json={"fuel": 0}), 422)
    assert_problem(client.post("/v1/flows/nope/query/count"), 404, "flow-not-found")
    after = client.get("/v1/flows/q").json()
    assert after["checkpoint_seq"] == before["checkpoint_seq"]
    assert after["updated_at"] == before["updated_at"]
    # finished flows keep their final memory for queries
    for _ in range(2):
        client.post("/v1/flows/q/signals/tick")
    wait_for(client, flow["id"])
    assert client.post("/v1/flows/q/query/count").json()["results"] == [3]


# --- bad input -----------------------------------------------------------------------------------

def test_bad_input_is_refused_and_changes_nothing(start_live_server: Any) -> None:
    server = start_live_server(max_payload=1024)
    with server.client() as client:
        hello = upload(client, "hello")
        counter = upload(client, wat(COUNTER_WAT))
        fib = upload(client, (ROOT / "examples" / "fib.wasm").read_bytes())
        bad_import = upload(client, wat(BAD_IMPORT_WAT))
        start(client, counter, id="c")
        wait_for(client, "c", ("waiting",))
        before = client.get("/v1/flows/c").json()
        events_before = client.get("/v1/flows/c/events").json()["items"]

        assert client.get("/v1/flows/x%2Fy").status_code == 404
        for fid in ("nope", "c~9"):
            assert_problem(client.get(f"/v1/flows/{fid}"), 404, "flow-not-found")
            assert_problem(client.post(f"/v1/flows/{fid}/cancel"), 404, "flow-not-found")
            assert_problem(client.get(f"/v1/flows/{fid}/events"), 404, "flow-not-found")
            assert_problem(client.post(f"/v1/flows/{fid}/signals/tick"), 404,
                           "flow-not-found")
        post = client.post
        assert_problem(post("/v1/flows", json={"module": "sha256:12"}), 422, "validation")
        assert_problem(post("/v1/flows", json={"module": "sha256:" + "0" * 64}), 422,
                       "module-not-found")
        assert_problem(post("/v1/flows", json={"module": fib}), 422, "not-a-flow")
        assert_problem(post("/v1/flows", json={"module": bad_import}), 422, "not-a-flow")
        assert_problem(post("/v1/flows", json={"module": hello, "args": "x"}), 422)
        assert_problem(post("/v1/flows", json={"module": hello, "bogus": 1}), 422)
        assert_problem(post("/v1/flows", json={"module": hello, "stdin": "a",
                                               "stdin_base64": "YQ=="}), 422, "invalid-stdin")
        assert_problem(post("/v1/flows", json={"module": hello, "stdin_base64": "@@"}), 422,
                       "invalid-stdin")
        assert_problem(post("/v1/flows", json={"module": hello, "id": "a/b"}), 422)
        assert_problem(post("/v1/flows", json={"module": hello, "id": "c~1"}), 422)
        assert_problem(post("/v1/flows", json={"module": hello, "args": ["a\u0000"]}), 422,
                       "invalid-args")
        assert_problem(post("/v1/flows", json={"module": hello, "env": {"A=B": "1"}}), 422,
                       "invalid-env")
        assert_problem(post("/v1/flows", content=b"{not json",
                            headers={"Content-Type": "application/json"}), 422)
        assert_problem(post("/v1/flows", json={"module": hello, "stdin": "x" * 2000}), 413,
                       "payload-too-large")
        assert_problem(post("/v1/flows/c/signals/tick", content=b"x" * 2000), 413)
        assert_problem(post("/v1/flows/c/signals/bad name!"), 422, "invalid-signal-name")
        assert_problem(post("/v1/flows/c/signals/" + "n" * 201), 422, "invalid-signal-name")
        assert_problem(client.get("/v1/flows", params={"status": "sleeping"}), 422)
        assert_problem(client.get("/v1/flows", params={"cursor": "garbage"}), 422)
        assert_problem(client.get("/v1/flows", params={"limit": 0}), 422)
        assert_problem(client.get("/v1/flows/c/events", params={"cursor": "x"}), 422)

        after = client.get("/v1/flows/c").json()
        assert after == before
        assert client.get("/v1/flows/c/events").json()["items"] == events_before
        all_flows = client.get("/v1/flows", params={"limit": 1000}).json()["items"]
        assert [f["id"] for f in all_flows] == ["c"]


def test_events_pagination(client: httpx.Client) -> None:
    counter = upload(client, wat(COUNTER_WAT))
    start(client, counter, id="ev")
    for _ in range(3):
        wait_for(client, "ev", ("waiting", "completed"))
        client.post("/v1/flows/ev/signals/tick", content=b"p")
    wait_for(client, "ev")
    everything = client.get("/v1/flows/ev/events", params={"limit": 1000}).json()
    assert everything["next_cursor"] is None
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/flows/ev/events", params=params).json()
        pages += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == everything["items"]
    kinds = [e["type"] for e in pages]
    assert kinds.count("signal") == 3 and kinds.count("signal_received") == 3
    assert kinds[0] == "started" and "exit" in kinds
    assert all(e["data"]["seq"] == i + 1 for i, e in
               enumerate(e for e in pages if e["type"] == "checkpoint"))


# --- crashes ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fanout_survives_sigkill_restarts(spawn_server: Any) -> None:
    """The server process is SIGKILLed and restarted at random moments while three fanout
    flows run with a worker: every flow finishes with the right output, each task result enters
    its flow exactly once, nothing is stuck."""
    import random

    from flowkit import RetryingWorker

    import os

    rng = random.Random(int(os.environ.get("DWASM_CRASH_SEED", "1234")))
    # A lease lost in a crash (the response never reached the worker) comes back after 2 s.
    server = spawn_server(env={"DWASM_LEASE_TIMEOUT": "2"})
    flows = {f"crash-{i}": i for i in range(3)}

    def call(method: str, url: str, **kw: Any) -> httpx.Response:
        for _ in range(400):
            try:
                with httpx.Client(base_url=server.url, timeout=10) as c:
                    return c.request(method, url, **kw)
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"{method} {url}: server unreachable")

    with httpx.Client(base_url=server.url, timeout=10) as c:
        fanout = upload(c, "fanout")
    for fid, k in flows.items():
        assert call("POST", "/v1/flows", json={"module": fanout, "id": fid}).status_code == 201
        assert call("POST", f"/v1/flows/{fid}/signals/go", content=str(k).encode()
                    ).status_code == 202
    kills = 0
    with RetryingWorker(server.url, work=0.04):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            statuses = {call("GET", f"/v1/flows/{fid}").json()["status"] for fid in flows}
            if statuses == {"completed"}:
                break
            assert statuses <= {"running", "waiting", "completed"}, statuses
            if kills < 5:
                time.sleep(rng.uniform(0.05, 0.6))
                server.restart(kill=True)
                kills += 1
            else:
                time.sleep(0.2)
    assert kills >= 3
    for fid, k in flows.items():
        flow = call("GET", f"/v1/flows/{fid}").json()
        assert (flow["status"], flow["stdout"], flow["exit_code"], flow["stderr"]) == (
            "completed", f"{2470 + k}\n", (2470 + k) % 256, ""), flow
        events = call("GET", f"/v1/flows/{fid}/events", params={"limit": 1000}).json()["items"]
        delivered = [e["data"]["task_id"] for e in events if e["type"] == "task_delivered"]
        assert sorted(delivered) == sorted(f"{fid}/{i}" for i in range(20)), delivered
        scheduled = [e["data"]["task_id"] for e in events if e["type"] == "task_scheduled"]
        assert sorted(scheduled) == sorted(f"{fid}/{i}" for i in range(20))
        assert [e["type"] for e in events].count("exit") == 1
        for i in range(20):
            assert call("GET", f"/v1/tasks/{fid}/{i}").json()["status"] == "completed"
