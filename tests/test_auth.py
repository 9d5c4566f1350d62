"""Bearer tokens with scopes (app/api/auth.py) on a real server: 401 without or with an unknown
token, 403 without the scope, the open paths, workers with a worker token, and the refusal to
listen beyond loopback without tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.auth import AuthConfigError, check_bind, parse_tokens, required_scope
from app.worker import TaskClient
from flowkit import ONE_TASK_WAT, assert_problem, wait_for, wat

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-token-0123456789"
CLIENT = "client-token-0123456789"
WORKER = "worker-token-0123456789"
TOKENS = f"{ADMIN},client:{CLIENT},worker:{WORKER}"


@pytest.fixture
def server(start_live_server: Any) -> Any:
    return start_live_server(api_tokens=TOKENS)


def as_(server: Any, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def test_tokens_and_scopes(server: Any) -> None:
    with as_(server, None) as anon, as_(server, "not-a-known-token-at-all") as bad, \
            as_(server, CLIENT) as client, as_(server, WORKER) as worker, \
            as_(server, ADMIN) as admin:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert anon.get(path).status_code == 200, path
        r = anon.get("/v1/flows")
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert_problem(bad.get("/v1/flows"), 401, "unauthorized")
        assert_problem(anon.post("/v1/queues/work/lease", json={}), 401, "unauthorized")

        assert admin.put("/v1/queues/work/policy", json={"max_attempts": 4}).status_code == 200
        module = client.post("/v1/modules", content=wat(ONE_TASK_WAT),
                             headers={"Content-Type": "application/wasm"}).json()["id"]
        assert client.post("/v1/flows", json={"module": module, "id": "a1"}).status_code == 201
        assert_problem(worker.post("/v1/flows", json={"module": module, "id": "a2"}), 403,
                       "forbidden")
        assert_problem(client.post("/v1/queues/work/lease", json={}), 403, "forbidden")
        assert_problem(client.put("/v1/queues/work/policy", json={}), 403, "forbidden")
        assert_problem(client.get("/v1/cluster"), 403, "forbidden")
        assert client.get("/v1/queues").status_code == 200
        assert admin.get("/v1/cluster").status_code == 200
        assert client.get("/v1/flows/nope").status_code == 404  # the scope passes, then 404

        wait_for(client, "a1", ("waiting",))
        with TaskClient(server.url, token=WORKER) as tasks:
            task = tasks.lease("work", wait=5)
            assert task is not None and task.max_attempts == 4
            tasks.complete(task, b"done")
        assert wait_for(client, "a1")["stdout"] == "done"
        with TaskClient(server.url, token=CLIENT) as wrong:
            with pytest.raises(Exception) as refused:
                wrong.lease("work")
            assert getattr(refused.value, "status", None) == 403


def test_token_parsing_and_scope_rules() -> None:
    tokens = parse_tokens(f" {ADMIN} , client+worker:{CLIENT} ,")
    assert [sorted(t.scopes) for t in tokens] == [["admin"], ["client", "worker"]]
    for bad in ("client:short", f"robot:{CLIENT}", f":{CLIENT}"):
        with pytest.raises(AuthConfigError):
            parse_tokens(bad)
    assert required_scope("POST", "/v1/queues/q/lease-batch") == "worker"
    assert required_scope("POST", "/v1/tasks/f/1/complete") == "worker"
    assert required_scope("POST", "/v1/task-reports") == "worker"
    assert required_scope("GET", "/v1/queues/q") == "client"
    assert required_scope("PUT", "/v1/queues/q/policy") == "admin"
    assert required_scope("POST", "/v1/flows/x/signals/go") == "client"
    assert required_scope("GET", "/healthz") is None
    assert required_scope("GET", "/v1/unknown") == "admin"
    assert check_bind("127.0.0.1", (), False) and check_bind("::1", (), False)
    with pytest.raises(AuthConfigError):
        check_bind("0.0.0.0", (), False)
    assert "open to anyone" in (check_bind("0.0.0.0", (), True) or "")
    assert check_bind("0.0.0.0", tokens, False) is None


def test_serve_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWASM_")}
    env.update(DWASM_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
               PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0",
                        "--port", "0"], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 7 and "without authentication" in r.stderr, r.stderr
