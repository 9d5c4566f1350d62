"""The workers' API: lease (long-poll), heartbeat, complete, fail; retries with backoff, lease
expiry, idempotent and late reports, exactly-once delivery to the flow, and bad input. Real
PostgreSQL, the service on a real uvicorn server (in-process, so a test can shorten the retry
policy), httpx clients."""

from __future__ import annotations

import base64
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from app.flows.policies import QueuePolicy
from flowkit import (ONE_TASK_WAT, assert_problem, complete, lease, payload_of, start,
                     upload, wait_for, wat)


@pytest.fixture
def server(start_live_server: Any) -> Any:
    return start_live_server(max_payload=4096)


@pytest.fixture
def fast_policy(client: httpx.Client) -> QueuePolicy:
    """Short leases and backoff for queue "work", set through the API."""
    policy = QueuePolicy(max_attempts=3, backoff_initial=0.2, backoff_factor=2.0,
                         lease_timeout=0.5)
    r = client.put("/v1/queues/work/policy", json=policy.as_dict())
    assert r.status_code == 200 and r.json()["policy"] == policy.as_dict()
    return policy


def one_task_flow(client: httpx.Client, flow_id: str) -> None:
    start(client, upload(client, wat(ONE_TASK_WAT)), id=flow_id)
    wait_for(client, flow_id, ("waiting",))


def deliveries(client: httpx.Client, flow_id: str) -> int:
    events = client.get(f"/v1/flows/{flow_id}/events", params={"limit": 1000}).json()["items"]
    return sum(1 for e in events if e["type"] == "task_delivered")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_lease_complete_and_duplicates(client: httpx.Client) -> None:
    one_task_flow(client, "t")
    task = lease(client, "work")
    assert task is not None
    assert (task["id"], task["flow_id"], task["queue"], task["attempt"]) == ("t/0", "t", "work", 1)
    assert payload_of(task) == b"payload" and task["max_attempts"] == 3
    deadline = parse_time(task["lease_deadline"])
    assert timedelta(seconds=25) < deadline - datetime.now(timezone.utc) < timedelta(seconds=35)
    assert lease(client, "work", wait=0) is None  # nothing else to lease

    r = complete(client, task, "forty-two")
    assert r.status_code == 200 and r.json()["status"] == "completed"
    done = wait_for(client, "t")
    assert (done["stdout"], done["exit_code"]) == ("forty-two", 1)

    dup = complete(client, task, "forty-two")
    assert dup.status_code == 200 and dup.json() == r.json()
    assert_problem(complete(client, task, "other"), 409, "task-finished")
    assert_problem(client.post("/v1/tasks/t/0/complete", json={"lease_id": "bogus",
                                                               "result_text": "x"}),
                   409, "task-finished")
    assert_problem(client.post("/v1/tasks/t/0/fail", json={"lease_id": task["lease_id"],
                                                           "error": "late"}),
                   409, "task-finished")
    assert_problem(client.post("/v1/tasks/t/0/heartbeat", json={"lease_id": task["lease_id"]}),
                   409, "task-finished")
    assert client.get("/v1/tasks/t/0").json()["status"] == "completed"
    assert deliveries(client, "t") == 1
    assert client.get("/v1/flows/t").json()["stdout"] == "forty-two"


def test_unknown_tasks(client: httpx.Client) -> None:
    for tid in ("nope/0", "nope", "a/b/c"):
        body = {"lease_id": "x"}
        assert_problem(client.get(f"/v1/tasks/{tid}"), 404, "task-not-found")
        assert_problem(client.post(f"/v1/tasks/{tid}/complete", json=body), 404,
                       "task-not-found")
        assert_problem(client.post(f"/v1/tasks/{tid}/fail", json={**body, "error": "e"}), 404,
                       "task-not-found")
        assert_problem(client.post(f"/v1/tasks/{tid}/heartbeat", json=body), 404,
                       "task-not-found")


def test_heartbeat_extends_the_lease(client: httpx.Client) -> None:
    one_task_flow(client, "hb")
    task = lease(client, "work")
    assert task is not None
    r = client.post("/v1/tasks/hb/0/heartbeat", json={"lease_id": task["lease_id"],
                                                       "extend_seconds": 200})
    assert r.status_code == 200 and r.json()["status"] == "leased"
    assert parse_time(r.json()["lease_deadline"]) > parse_time(task["lease_deadline"]) \
        + timedelta(seconds=150)
    assert_problem(client.post("/v1/tasks/hb/0/heartbeat", json={"lease_id": "someone-else"}),
                   409, "lease-lost")
    assert_problem(client.post("/v1/tasks/hb/0/complete", json={"lease_id": "someone-else",
                                                                "result_text": "x"}),
                   409, "lease-lost")
    assert client.get("/v1/tasks/hb/0").json()["status"] == "leased"


def test_retry_with_backoff_then_success(client: httpx.Client,
                                         fast_policy: QueuePolicy) -> None:
    one_task_flow(client, "r")
    first = lease(client, "work")
    assert first is not None
    failed_at = datetime.now(timezone.utc)
    r = client.post("/v1/tasks/r/0/fail", json={"lease_id": first["lease_id"],
                                                "error": "flaky"})
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["attempt"], body["error"]) == ("pending", 1, "flaky")
    assert parse_time(body["visible_at"]) >= failed_at + timedelta(seconds=0.15)
    dup = client.post("/v1/tasks/r/0/fail", json={"lease_id": first["lease_id"],
                                                  "error": "flaky"})
    assert dup.status_code == 200 and dup.json() == body
    assert_problem(complete(client, first, "too late"), 409, "lease-lost")
    second = lease(client, "work", wait=5)
    assert second is not None and second["attempt"] == 2
    assert complete(client, second, "ok").status_code == 200
    done = wait_for(client, "r")
    assert (done["stdout"], done["exit_code"]) == ("ok", 1)
    kinds = [e["type"] for e in client.get("/v1/flows/r/events").json()["items"]]
    assert kinds.count("task_retry") == 1 and kinds.count("task_completed") == 1
    assert deliveries(client, "r") == 1


def test_attempts_run_out(client: httpx.Client, fast_policy: QueuePolicy) -> None:
    one_task_flow(client, "out")
    for attempt in (1, 2, 3):
        task = lease(client, "work", wait=5)
        assert task is not None and task["attempt"] == attempt
        r = client.post("/v1/tasks/out/0/fail", json={"lease_id": task["lease_id"],
                                                      "error": f"bad {attempt}"})
        assert r.status_code == 200
    assert r.json()["status"] == "failed"
    done = wait_for(client, "out")
    assert (done["stdout"], done["exit_code"]) == ("bad 3", 2)
    assert lease(client, "work", wait=0) is None


def test_non_retryable_failure(client: httpx.Client) -> None:
    one_task_flow(client, "nr")
    task = lease(client, "work")
    assert task is not None
    r = client.post("/v1/tasks/nr/0/fail", json={"lease_id": task["lease_id"],
                                                 "error": "invalid input", "retryable": False})
    assert r.status_code == 200 and r.json()["status"] == "failed"
    dup = client.post("/v1/tasks/nr/0/fail", json={"lease_id": task["lease_id"],
                                                   "error": "invalid input",
                                                   "retryable": False})
    assert dup.status_code == 200 and dup.json() == r.json()
    assert_problem(complete(client, task, "x"), 409, "task-finished")
    done = wait_for(client, "nr")
    assert (done["stdout"], done["exit_code"]) == ("invalid input", 2)
    assert deliveries(client, "nr") == 1


def test_expired_lease_returns_to_pending(client: httpx.Client,
                                         fast_policy: QueuePolicy) -> None:
    one_task_flow(client, "ex")
    a = lease(client, "work")
    assert a is not None
    time.sleep(1.7)  # lease 0.5 s, reaper every 1 s
    state = client.get("/v1/tasks/ex/0").json()
    assert (state["status"], state["error"]) == ("pending", "lease expired")
    b = lease(client, "work", wait=5)
    assert b is not None and b["attempt"] == 2 and b["lease_id"] != a["lease_id"]
    assert_problem(complete(client, a, "from a"), 409, "lease-lost")
    assert_problem(client.post("/v1/tasks/ex/0/heartbeat", json={"lease_id": a["lease_id"]}),
                   409, "lease-lost")
    assert complete(client, b, "from b").status_code == 200
    assert wait_for(client, "ex")["stdout"] == "from b"


def test_late_result_before_the_task_is_leased_again(client: httpx.Client,
                                                     fast_policy: QueuePolicy) -> None:
    one_task_flow(client, "late")
    a = lease(client, "work")
    assert a is not None
    time.sleep(1.7)
    assert client.get("/v1/tasks/late/0").json()["status"] == "pending"
    assert complete(client, a, "slow but fine").status_code == 200
    assert wait_for(client, "late")["stdout"] == "slow but fine"
    assert lease(client, "work", wait=0) is None


def test_expiry_on_the_last_attempt_fails_the_task(client: httpx.Client) -> None:
    assert client.put("/v1/queues/work/policy", json={"max_attempts": 1,
                                                     "lease_timeout": 0.3}).status_code == 200
    one_task_flow(client, "last")
    assert lease(client, "work") is not None
    done = wait_for(client, "last", timeout=10)
    assert done["exit_code"] == 2 and "lease expired" in done["stdout"]


def test_long_poll(server: Any, client: httpx.Client) -> None:
    began = time.monotonic()
    assert lease(client, "work", wait=1) is None
    assert 0.9 < time.monotonic() - began < 3
    got: list[Any] = []

    def poll() -> None:
        with server.client() as c:
            got.append(lease(c, "work", wait=20))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)
    began = time.monotonic()
    start(client, upload(client, wat(ONE_TASK_WAT)), id="lp")
    poller.join(25)
    assert got and got[0] is not None and got[0]["id"] == "lp/0"
    assert time.monotonic() - began < 3


def test_concurrent_leases_get_distinct_tasks(server: Any, client: httpx.Client) -> None:
    start(client, upload(client, "fanout"), id="many")
    wait_for(client, "many", ("waiting",))
    leased: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with server.client() as c:
            while (task := lease(c, "square", wait=0)) is not None:
                with lock:
                    leased.append(task["id"])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(leased) == sorted(f"many/{i}" for i in range(20))


def test_bad_input_changes_nothing(client: httpx.Client) -> None:
    one_task_flow(client, "bi")
    task = lease(client, "work")
    assert task is not None
    before = client.get("/v1/tasks/bi/0").json()
    url = "/v1/tasks/bi/0"
    lid = task["lease_id"]
    assert_problem(client.post("/v1/queues/bad queue!/lease"), 422, "invalid-queue")
    assert_problem(client.post("/v1/queues/work/lease", json={"wait": 31}), 422)
    assert_problem(client.post("/v1/queues/work/lease", json={"wait": -1}), 422)
    assert_problem(client.post("/v1/queues/work/lease", json={"bogus": 1}), 422)
    assert_problem(client.post(f"{url}/complete", json={"lease_id": lid, "result": "%%"}), 422,
                   "invalid-result")
    assert_problem(client.post(f"{url}/complete", json={"lease_id": lid, "result": "eA==",
                                                        "result_text": "x"}), 422,
                   "invalid-result")
    big = base64.b64encode(b"x" * 5000).decode()
    assert_problem(client.post(f"{url}/complete", json={"lease_id": lid, "result": big}), 413,
                   "payload-too-large")
    assert_problem(client.post(f"{url}/complete", json={"result_text": "x"}), 422)
    assert_problem(client.post(f"{url}/fail", json={"lease_id": lid}), 422)
    assert_problem(client.post(f"{url}/fail", json={"lease_id": lid, "error": 5}), 422)
    assert_problem(client.post(f"{url}/heartbeat", json={"lease_id": lid,
                                                         "extend_seconds": 0}), 422)
    assert_problem(client.post(f"{url}/complete", content=b"not json",
                               headers={"Content-Type": "application/json"}), 422)
    assert client.get(url).json() == before
    assert client.get("/v1/flows/bi").json()["status"] == "waiting"
    assert complete(client, task, "fine").status_code == 200
    assert wait_for(client, "bi")["stdout"] == "fine"


def test_batch_lease_and_reports(client: httpx.Client) -> None:
    for fid in ("b1", "b2", "b3"):
        one_task_flow(client, fid)
    first = client.post("/v1/queues/work/lease-batch", json={"max_tasks": 2})
    assert first.status_code == 200
    tasks = first.json()["tasks"]
    assert [t["id"] for t in tasks] == ["b1/0", "b2/0"]  # oldest first
    assert len({t["lease_id"] for t in tasks}) == 2 and all(t["attempt"] == 1 for t in tasks)
    rest = client.post("/v1/queues/work/lease-batch", json={"max_tasks": 10}).json()["tasks"]
    assert [t["id"] for t in rest] == ["b3/0"]
    t0 = time.monotonic()
    assert client.post("/v1/queues/work/lease-batch", json={"wait": 0.3}).json() == \
        {"tasks": []}
    assert time.monotonic() - t0 >= 0.25  # it long-polled
    b1, b2, b3 = tasks + rest

    def report(task: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return {"task_id": task["id"], "lease_id": task["lease_id"], **kw}

    r = client.post("/v1/task-reports", json={"reports": [
        report(b1, outcome="complete", result_text="one"),
        report(b2, outcome="complete", result=base64.b64encode(b"two").decode()),
        report(b2, outcome="complete", result=base64.b64encode(b"two").decode()),  # repeat
        report(b3, outcome="fail", error="broken", retryable=False),
        {"task_id": "nope/0", "lease_id": "x", "outcome": "complete", "result_text": "?"},
        report(b1, outcome="complete", error="a completion with an error"),
        report(b1, outcome="fail", error="late", retryable=False),
    ]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["task_id"] for x in results] == ["b1/0", "b2/0", "b2/0", "b3/0", "nope/0",
                                               "b1/0", "b1/0"]
    assert [x["status"] for x in results[:4]] == [200, 200, 200, 200]
    assert [x["task"]["status"] for x in results[:4]] == ["completed", "completed",
                                                          "completed", "failed"]
    assert results[1]["task"] == results[2]["task"]
    assert results[4]["status"] == 404 and results[4]["problem"]["type"].endswith(
        "task-not-found")
    assert results[5]["status"] == 422 and results[5]["problem"]["type"].endswith(
        "invalid-report")
    assert results[6]["status"] == 409 and results[6]["problem"]["type"].endswith(
        "task-finished")
    assert all(x["problem"] is None for x in results[:4])

    assert (wait_for(client, "b1")["stdout"], wait_for(client, "b2")["stdout"]) == ("one",
                                                                                   "two")
    failed = wait_for(client, "b3")
    assert (failed["stdout"], failed["exit_code"]) == ("broken", 2)
    assert [deliveries(client, f) for f in ("b1", "b2", "b3")] == [1, 1, 1]


def test_batch_bad_input(client: httpx.Client) -> None:
    one_task_flow(client, "bb")
    before = client.get("/v1/tasks/bb/0").json()
    assert_problem(client.post("/v1/queues/work/lease-batch", json={"max_tasks": 0}), 422)
    assert_problem(client.post("/v1/queues/work/lease-batch", json={"max_tasks": 100000}),
                   422)
    assert_problem(client.post("/v1/queues/bad queue!/lease-batch"), 422, "invalid-queue")
    assert_problem(client.post("/v1/task-reports", json={"reports": [{"task_id": "bb/0"}]}),
                   422)
    assert_problem(client.post("/v1/task-reports", json={"reports": [
        {"task_id": "bb/0", "lease_id": "x", "outcome": "explode"}]}), 422)
    too_many = [{"task_id": "bb/0", "lease_id": "x", "outcome": "complete"}] * 1000
    assert_problem(client.post("/v1/task-reports", json={"reports": too_many}), 422)
    big = base64.b64encode(b"x" * 5000).decode()
    r = client.post("/v1/task-reports", json={"reports": [
        {"task_id": "bb/0", "lease_id": "x", "outcome": "complete", "result": big}]})
    assert r.json()["results"][0]["status"] == 413
    assert client.get("/v1/tasks/bb/0").json() == before


def test_queue_policies_and_backlog(client: httpx.Client) -> None:
    assert client.get("/v1/queues").json() == {"items": []}
    fresh = client.get("/v1/queues/work").json()
    assert (fresh["pending"], fresh["leased"], fresh["overrides"]) == (0, 0, [])
    assert fresh["policy"] == QueuePolicy().as_dict()  # the service's defaults

    r = client.put("/v1/queues/work/policy", json={"max_attempts": 5, "lease_timeout": 90})
    assert r.status_code == 200
    assert r.json()["overrides"] == ["lease_timeout", "max_attempts"]
    assert r.json()["policy"] == {**QueuePolicy().as_dict(), "max_attempts": 5,
                                  "lease_timeout": 90.0}
    for fid in ("q1", "q2"):
        one_task_flow(client, fid)
    task = lease(client, "work")
    assert task is not None and task["max_attempts"] == 5
    deadline = parse_time(task["lease_deadline"]) - datetime.now(timezone.utc)
    assert timedelta(seconds=80) < deadline < timedelta(seconds=95)
    info = client.get("/v1/queues/work").json()
    assert (info["pending"], info["leased"]) == (1, 1) and info["oldest_pending_at"]
    assert [q["name"] for q in client.get("/v1/queues").json()["items"]] == ["work"]

    for bad in ({"max_attempts": 0}, {"lease_timeout": 0}, {"backoff_factor": 0.5},
                {"retries": 3}, {"max_attempts": "many"}):
        assert_problem(client.put("/v1/queues/work/policy", json=bad), 422)
    assert_problem(client.put("/v1/queues/bad queue!/policy", json={}), 422, "invalid-queue")
    assert client.get("/v1/queues/work").json()["policy"]["max_attempts"] == 5  # unchanged

    assert client.delete("/v1/queues/work/policy").status_code == 204
    assert_problem(client.delete("/v1/queues/work/policy"), 404, "policy-not-found")
    assert client.get("/v1/queues/work").json()["policy"] == QueuePolicy().as_dict()
    task2 = lease(client, "work")
    assert task2 is not None and task2["max_attempts"] == 5  # kept from when it was scheduled
    d2 = parse_time(task2["lease_deadline"]) - datetime.now(timezone.utc)
    assert d2 < timedelta(seconds=35)  # the default lease again
