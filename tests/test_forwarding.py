"""Forwarding between nodes: real node processes (uvicorn), a real etcd, a real PostgreSQL.

Each node is this file run as a program (``python tests/test_forwarding.py node ...``): a
small FastAPI app with the service's route shapes that echoes which node served it, wrapped in
:class:`forwarding.middleware.ForwardingMiddleware`, with a real :class:`topology.node.Cluster`
(short lease) whose shard releases take ``RELEASE_DELAY`` seconds, so that handoffs last long
enough to be seen. The tests talk to the nodes over HTTP only, and learn the shard map from
``GET /v1/cluster``.

The tests of this module share one cluster and run in order; the last ones change it (a node
joins, one is killed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 12
SECRET = "test-cluster-secret"
HANDOFF_WAIT = 1.0
RELEASE_DELAY = 3.0
DEADLINE = 10.0


# --------------------------------------------------------------------------------------------
# The node program


def node_app(node_id: str, etcd_endpoint: str, database_url: str, url: str,
             shards: int, secret: str | None, release_delay: float,
             settings: Any = None) -> Any:
    """The echo app of one node (also used by bench/forwarding_bench.py)."""
    import asyncio
    import contextlib

    import asyncpg

    from app.api.metrics import Registry
    from forwarding.cluster_api import router as cluster_router
    from forwarding.middleware import ForwardingMiddleware
    from forwarding.proxy import ForwardSettings
    from topology.config import ClusterConfig, parse_endpoints
    from topology.node import Cluster

    class SlowRelease:
        async def shard_acquired(self, shard: int, epoch: int) -> None:
            pass

        async def shard_releasing(self, shard: int, epoch: int) -> None:
            await asyncio.sleep(release_delay)

        async def shard_lost(self, shard: int) -> None:
            pass

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        config = ClusterConfig(etcd_endpoints=parse_endpoints(etcd_endpoint), node_id=node_id,
                               secret=secret, shards=shards, lease_ttl=2,
                               keepalive_interval=0.3, etcd_timeout=0.5, handoff_timeout=10,
                               coordinator_tick=0.2)
        cluster = Cluster(config, pool, SlowRelease(), url=url)
        await cluster.start(timeout=10)
        app.state.topology = cluster
        print("ready", url, flush=True)
        try:
            yield
        finally:
            app.state.topology = None
            await cluster.stop()
            await pool.close()

    app = FastAPI(lifespan=lifespan)
    app.state.topology = None
    app.state.metrics = Registry()
    app.include_router(cluster_router)

    async def echo(request: Request, status: int = 200, **extra: Any) -> JSONResponse:
        body = await request.body()
        hold = float(request.query_params.get("hold", 0))
        if hold and request.query_params.get("hold_on", node_id) == node_id:
            print("holding", request.url.path, flush=True)
            await asyncio.sleep(hold)
        return JSONResponse({"node": node_id, "method": request.method,
                             "path": request.url.path, "query": request.url.query,
                             "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                             "body": body.decode(errors="replace") if len(body) < 4096 else None,
                             "forwarded_by": request.scope.get("dwasm.forwarded_by"), **extra},
                            status_code=status)

    @app.post("/v1/flows", status_code=201)
    async def start(request: Request, data: dict[str, Any]) -> JSONResponse:
        return await echo(request, 201, id=data.get("id"))

    @app.get("/v1/flows")
    async def list_flows(request: Request) -> JSONResponse:
        return await echo(request)

    @app.get("/v1/flows/{flow_id}")
    async def get_flow(request: Request, flow_id: str) -> JSONResponse:
        return await echo(request)

    @app.get("/v1/flows/{flow_id}/events")
    async def events(request: Request, flow_id: str) -> JSONResponse:
        return await echo(request)

    @app.post("/v1/flows/{flow_id}/cancel")
    async def cancel(request: Request, flow_id: str) -> JSONResponse:
        return await echo(request)

    @app.post("/v1/flows/{flow_id}/signals/{name}")
    async def signal_(request: Request, flow_id: str, name: str) -> JSONResponse:
        return await echo(request, 202)

    @app.post("/v1/flows/{flow_id}/query/{export}")
    async def query(request: Request, flow_id: str, export: str) -> JSONResponse:
        return await echo(request)

    @app.post("/v1/task-reports")
    async def reports(data: dict[str, Any]) -> JSONResponse:
        items = data.get("reports")
        if not isinstance(items, list):
            return JSONResponse({"status": 422, "title": "Unprocessable Content"}, 422)
        return JSONResponse({"results": [
            {"task_id": r["task_id"], "status": 200, "problem": None,
             "task": {"id": r["task_id"], "node": node_id, "lease_id": r.get("lease_id")}}
            for r in items]})

    @app.get("/v1/tasks/{task_id:path}")
    async def get_task(request: Request, task_id: str) -> JSONResponse:
        return await echo(request)

    @app.post("/v1/tasks/{task_id:path}/{verb}")
    async def task_write(request: Request, task_id: str, verb: str) -> JSONResponse:
        return await echo(request)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(app.state.metrics.render())

    @app.post("/test/freeze")
    async def freeze() -> dict[str, str]:
        """Stops this node's shard map watch: its view goes stale (a delayed watch)."""
        await app.state.topology.view.stop()
        return {"frozen": node_id}

    @app.post("/test/thaw")
    async def thaw() -> dict[str, str]:
        await app.state.topology.view.start()
        return {"thawed": node_id}

    app.add_middleware(ForwardingMiddleware, settings=settings or ForwardSettings(
        deadline=DEADLINE, handoff_wait=HANDOFF_WAIT))
    return app


def serve_node(argv: list[str]) -> None:
    """``node NODE_ID ETCD DATABASE_URL [SHARDS]``: serves one node on a free port."""
    import asyncio

    import uvicorn
    from dbfixtures import bind_ephemeral

    node_id, etcd_endpoint, database_url = argv[:3]
    shards = int(argv[3]) if len(argv) > 3 else SHARDS
    sock = bind_ephemeral()
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    app = node_app(node_id, etcd_endpoint, database_url, url, shards,
                   os.environ.get("FORWARDING_SECRET"),
                   float(os.environ.get("RELEASE_DELAY", RELEASE_DELAY)))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    asyncio.run(server.serve(sockets=[sock]))


# --------------------------------------------------------------------------------------------
# Test harness


class Node:
    """One node process."""

    def __init__(self, name: str, etcd_endpoint: str, database_url: str, log: Path) -> None:
        self.name = name
        self.log_path = log
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                   FORWARDING_SECRET=SECRET, RELEASE_DELAY=str(RELEASE_DELAY))
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__)), "node", name, etcd_endpoint,
                 database_url], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env)
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> Node:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(r"ready (http://\S+)", self.log())
            if match:
                self.url = match.group(1)
                try:
                    self.cluster()
                    return self
                except OSError:
                    pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"node {self.name} did not start:\n{self.log()}")
            time.sleep(0.05)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        return httpx.request(method, self.url + path, timeout=kwargs.pop("timeout", 30),
                             **kwargs)

    def cluster(self) -> dict[str, Any]:
        response = self.request("GET", "/v1/cluster")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def metric(self, name: str) -> float:
        text = self.request("GET", "/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Cluster:
    def __init__(self, etcd_endpoint: str, database_url: str, tmp: Path) -> None:
        self.etcd_endpoint = etcd_endpoint
        self.database_url = database_url
        self.tmp = tmp
        self.nodes: dict[str, Node] = {}

    def add(self, *names: str) -> list[Node]:
        started = [Node(n, self.etcd_endpoint, self.database_url, self.tmp / f"{n}.log")
                   for n in names]
        for node in started:
            self.nodes[node.name] = node
        return [node.wait_ready() for node in started]

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.proc.poll() is None]

    def settled(self, names: set[str], timeout: float = 30) -> dict[str, Any]:
        """Waits until every live node routes with the same map, which gives every shard to
        ``names`` (balanced, no handoff), and every owner holds its shards."""
        deadline = time.monotonic() + timeout
        while True:
            views = {n.name: n.cluster() for n in self.live()}
            maps = [v["assignments"] for v in views.values()]
            first = next(iter(views.values()))
            owners = [a["owner"] for a in first["assignments"] or []]
            counts = [owners.count(n) for n in names]
            if (all(m == maps[0] for m in maps) and set(owners) == names
                    and not any(a.get("next_owner") for a in maps[0])
                    and max(counts) - min(counts) <= 1
                    and all(sorted(views[n]["held"]) == [s for s, o in enumerate(owners)
                                                         if o == n] for n in names)):
                return first
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster did not settle on {names}: {views}")
            time.sleep(0.1)

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


def shard(flow_id: str) -> int:
    from topology.shards import shard_of

    return shard_of(flow_id, SHARDS)


def owner(view: dict[str, Any], flow_id: str) -> str:
    return str(view["assignments"][shard(flow_id)]["owner"])


def flows_by_owner(view: dict[str, Any], names: list[str], per: int = 1) -> dict[str, list[str]]:
    """``per`` flow ids owned by each of ``names`` (in ``view``)."""
    found: dict[str, list[str]] = {n: [] for n in names}
    i = 0
    while any(len(v) < per for v in found.values()):
        flow = f"f-test-{i}~child"
        i += 1
        node = owner(view, flow)
        if node in found and len(found[node]) < per:
            found[node].append(flow)
    return found


def flow_in_shard(s: int) -> str:
    return next(f"f-shard-{i}" for i in range(100000) if shard(f"f-shard-{i}") == s)


@pytest.fixture(scope="module")
def cluster(module_database_url: str) -> Iterator[Cluster]:
    from etcdfixtures import EtcdServer

    root = Path(tempfile.mkdtemp(prefix="dwasm-test-forwarding-"))
    etcd = EtcdServer(root / "etcd")
    nodes = Cluster(etcd.endpoint, module_database_url, root)
    try:
        etcd.start()
        nodes.add("a", "b", "c")
        nodes.settled({"a", "b", "c"})
        yield nodes
    finally:
        nodes.close()
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)


def signed_headers(method: str, target: str, body: bytes, *, sender: str = "b",
                   version: int = 1, secret: str = SECRET, now: float | None = None
                   ) -> dict[str, str]:
    from forwarding import auth

    return auth.sign(secret, method, target, hashlib.sha256(body).hexdigest(), sender, version,
                     now)


# --------------------------------------------------------------------------------------------
# Tests


def test_get_cluster_shows_members_and_the_shard_map(cluster: Cluster) -> None:
    views = [n.cluster() for n in cluster.live()]
    assert {v["node_id"] for v in views} == {"a", "b", "c"}
    assert len({v["version"] for v in views}) == 1 and views[0]["version"] >= 1
    for view in views:
        assert set(view["members"]) == {"a", "b", "c"}
        assert all(m["url"] == cluster.nodes[n].url for n, m in view["members"].items())
        assert len(view["assignments"]) == SHARDS
    held = sorted(s for v in views for s in v["held"])
    assert held == list(range(SHARDS))


def test_every_flow_write_through_every_node_runs_on_the_owner(cluster: Cluster) -> None:
    view = cluster.nodes["a"].cluster()
    flows = flows_by_owner(view, ["a", "b", "c"])
    big = os.urandom(3 << 20)  # larger than the in-memory spool: goes through a temp file
    for expected, (flow,) in flows.items():
        writes: list[tuple[str, dict[str, Any], int]] = [
            (f"/v1/flows/{flow}/cancel", {}, 200),
            (f"/v1/flows/{flow}/signals/go%20now?x=1", {"content": b"payload"}, 202),
            (f"/v1/flows/{flow}/signals/big", {"content": big}, 202),
            (f"/v1/flows/{flow}/query/count", {"content": b""}, 200),
            (f"/v1/tasks/{flow}/7/heartbeat", {"json": {"lease_id": "l1"}}, 200),
            (f"/v1/tasks/{flow}/7/complete", {"json": {"lease_id": "l1"}}, 200),
            (f"/v1/tasks/{flow}/7/fail", {"json": {"lease_id": "l1", "error": "e"}}, 200),
            ("/v1/flows", {"json": {"module": "m", "id": flow}}, 201),
        ]
        for path, kwargs, status in writes:
            answers = []
            for node in cluster.live():
                response = node.request("POST", path, **kwargs)
                assert response.status_code == status, (node.name, path, response.text)
                assert response.headers["x-dwasm-served-by"] == expected, (node.name, path)
                answer = response.json()
                assert answer["node"] == expected
                assert answer["forwarded_by"] == (None if node.name == expected else node.name)
                answer.pop("forwarded_by")
                answers.append(answer)
            assert all(a == answers[0] for a in answers), answers
            sent = kwargs.get("content", json.dumps(kwargs.get("json", "")).encode())
            if "content" in kwargs:
                assert answers[0]["size"] == len(sent)
                assert answers[0]["sha256"] == hashlib.sha256(sent).hexdigest()
        assert answers[0]["path"] == "/v1/flows"
    assert answers[0]["id"] == flows["c"][0]
    # Signals went through the other nodes' middleware: their metrics show it.
    assert cluster.nodes["a"].metric("dwasm_forwarded_requests_total") >= 8
    assert cluster.nodes["a"].metric("dwasm_forward_duration_seconds_count") >= 8


def test_a_start_without_id_gets_a_local_id(cluster: Cluster) -> None:
    view = cluster.nodes["a"].cluster()
    for node in cluster.live():
        for _ in range(3):
            response = node.request("POST", "/v1/flows", json={"module": "m", "args": ["x"]})
            assert response.status_code == 201, response.text
            flow = response.json()["id"]
            assert re.fullmatch(r"f-[0-9a-f]{20}", flow)
            assert owner(view, flow) == node.name
            assert response.headers["x-dwasm-served-by"] == node.name
            assert json.loads(response.json()["body"]) == {"module": "m", "args": ["x"],
                                                           "id": flow}
        for bad in (b"{not json", b"[1, 2]"):
            response = node.request("POST", "/v1/flows", content=bad,
                                    headers={"content-type": "application/json"})
            assert response.status_code == 422
            assert response.headers["x-dwasm-served-by"] == node.name


def test_a_task_report_batch_is_split_by_owner_and_merged_in_order(cluster: Cluster) -> None:
    view = cluster.nodes["a"].cluster()
    flows = flows_by_owner(view, ["a", "b", "c"], per=2)
    order = [flows["b"][0], flows["a"][0], flows["c"][0], flows["b"][1], flows["c"][1],
             flows["a"][1], flows["c"][0]]
    reports = [{"task_id": f"{f}/{i}", "lease_id": f"l{i}", "outcome": "complete"}
               for i, f in enumerate(order)]
    reports.insert(3, {"task_id": "no-flow-part", "lease_id": "x", "outcome": "complete"})
    for node in cluster.live():
        before = node.metric('dwasm_forwarded_requests_total{outcome="200"}')
        response = node.request("POST", "/v1/task-reports", json={"reports": reports})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["task_id"] for r in results] == [r["task_id"] for r in reports]
        for report, result in zip(reports, results):
            flow = report["task_id"].rpartition("/")[0]
            assert result["status"] == 200
            assert result["task"]["node"] == (owner(view, flow) if flow else node.name)
            assert result["task"]["lease_id"] == report["lease_id"]
        # one sub-batch per other owner
        assert node.metric('dwasm_forwarded_requests_total{outcome="200"}') == before + 2
    # Only one owner: no split, the owner answers the whole batch.
    only_b = [{"task_id": f"{flows['b'][0]}/1", "lease_id": "l", "outcome": "fail"}]
    response = cluster.nodes["a"].request("POST", "/v1/task-reports", json={"reports": only_b})
    assert response.json()["results"][0]["task"]["node"] == "b"


def test_forwarding_headers_from_clients_are_refused(cluster: Cluster) -> None:
    view = cluster.nodes["a"].cluster()
    flows = flows_by_owner(view, ["a", "b", "c"])
    flow = flows["a"][0]
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    path = f"/v1/flows/{flow}/signals/s"
    body = b"hello"
    good = signed_headers("POST", path, body)
    spoofs = [
        {"X-Dwasm-Forwarded-By": "b"},
        {"X-Dwasm-Topology-Version": "99"},
        {"X-Dwasm-Forward-Anything": "1"},
        signed_headers("POST", path, body, secret="wrong-secret"),
        signed_headers("POST", path, body, now=time.time() - 120),
        signed_headers("POST", f"/v1/flows/{flows['b'][0]}/signals/s", body),  # other target
        {**good, "x-dwasm-forwarded-by": "c"},  # sender changed after signing
    ]
    for headers in spoofs:
        response = a.request("POST", path, content=body, headers=headers)
        assert response.status_code == 403, (headers, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:dwasm:problem:forbidden-forward"
    response = a.request("POST", path, content=b"hellO", headers=good)  # body changed
    assert response.status_code == 403
    # Correctly signed: the owner serves it, and sees who forwarded it.
    response = a.request("POST", path, content=body, headers=good)
    assert response.status_code == 202 and response.json()["forwarded_by"] == "b"
    # Correctly signed to a node that is not the owner: 421 with its view, never a second hop.
    response = b.request("POST", path, content=body, headers=good)
    assert response.status_code == 421, response.text
    problem = response.json()
    assert response.headers["x-dwasm-served-by"] == "b"
    assert (problem["owner"], problem["url"], problem["version"]) == (
        "a", a.url, view["version"])


def test_reads_are_served_locally_unless_strong(cluster: Cluster) -> None:
    view = cluster.nodes["a"].cluster()
    flow = flows_by_owner(view, ["a", "b", "c"])["c"][0]
    for node in cluster.live():
        for path in (f"/v1/flows/{flow}", f"/v1/flows/{flow}/events", f"/v1/tasks/{flow}/3"):
            for mode, where in ((None, node.name), ("eventual", node.name),
                                ("session", node.name), ("strong", "c"), ("STRONG", "c")):
                headers = {"X-Dwasm-Consistency": mode} if mode else {}
                response = node.request("GET", path, headers=headers)
                assert response.status_code == 200
                assert response.headers["x-dwasm-served-by"] == where, (node.name, path, mode)
                assert response.json()["node"] == where
        response = node.request("GET", f"/v1/flows/{flow}",
                                headers={"X-Dwasm-Consistency": "linearizable"})
        assert response.status_code == 400
        assert response.json()["type"] == "urn:dwasm:problem:invalid-consistency"
        response = node.request("GET", "/v1/flows", headers={"X-Dwasm-Consistency": "strong"})
        assert response.headers["x-dwasm-served-by"] == node.name


def test_handoff_waits_then_503_and_a_stale_sender_follows_the_421(cluster: Cluster) -> None:
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    stale = a
    assert stale.request("POST", "/test/freeze").status_code == 200
    try:
        before = stale.cluster()
        cluster.add("d")
        # A rebalancing handoff from b or c to d: it lasts RELEASE_DELAY seconds.
        deadline = time.monotonic() + 20
        moving = None
        while moving is None:
            view = b.cluster()
            moving = next((s for s, x in enumerate(view["assignments"])
                           if x.get("next_owner") == "d" and x["owner"] in ("b", "c")), None)
            assert time.monotonic() < deadline, "no handoff seen"
            time.sleep(0.02)
        flow = flow_in_shard(moving)
        old_owner = view["assignments"][moving]["owner"]
        asked = time.monotonic()
        response = cluster.nodes[old_owner].request("POST", f"/v1/flows/{flow}/cancel")
        took = time.monotonic() - asked
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["type"] == "urn:dwasm:problem:shard-in-handoff"
        assert HANDOFF_WAIT <= took < RELEASE_DELAY, took

        # Once d owns the shard, the stale node still routes to the old owner: it gets a 421,
        # refreshes, and reaches d.
        deadline = time.monotonic() + 20
        while b.cluster()["assignments"][moving]["owner"] != "d" or \
                moving not in cluster.nodes["d"].cluster()["held"]:
            assert time.monotonic() < deadline, "the handoff did not complete"
            time.sleep(0.05)
        assert owner(before, flow) == old_owner
        misdirected = stale.metric('dwasm_forward_misdirected_total{direction="received"}')
        response = stale.request("POST", f"/v1/flows/{flow}/cancel")
        assert response.status_code == 200, response.text
        assert response.headers["x-dwasm-served-by"] == "d"
        assert stale.metric('dwasm_forward_misdirected_total{direction="received"}') == \
            misdirected + 1
        assert cluster.nodes[old_owner].metric(
            'dwasm_forward_misdirected_total{direction="sent"}') >= 1
    finally:
        stale.request("POST", "/test/thaw")
    cluster.settled({"a", "b", "c", "d"})


def test_owner_death_mid_request_outcome_unknown_unless_idempotent(cluster: Cluster) -> None:
    view = cluster.nodes["a"].cluster()
    victim = next(n for n in ("b", "c", "d") if not cluster.nodes[n].cluster()["leader"])
    sender = cluster.nodes["a"] if victim != "a" else cluster.nodes["b"]
    flow = flows_by_owner(view, [victim])[victim][0]
    path = f"/v1/flows/{flow}/signals/s?hold=30&hold_on={victim}"

    def send(headers: dict[str, str]) -> Any:
        return sender.request("POST", path, content=b"x", headers=headers)

    with ThreadPoolExecutor(2) as pool:
        plain = pool.submit(send, {})
        keyed = pool.submit(send, {"Idempotency-Key": "k-1"})
        node = cluster.nodes[victim]
        deadline = time.monotonic() + 10
        while node.log().count("holding") < 2:
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.02)
        node.kill()
        killed = time.monotonic()
        response = plain.result(30)
        assert response.status_code == 502, response.text
        assert response.json()["type"] == "urn:dwasm:problem:outcome-unknown"
        assert response.headers["x-dwasm-served-by"] == sender.name
        response = keyed.result(30)
        took = time.monotonic() - killed
    assert response.status_code == 202, response.text
    new_owner = response.headers["x-dwasm-served-by"]
    assert new_owner != victim and response.json()["node"] == new_owner
    assert took < DEADLINE
    survivors = {n.name for n in cluster.live()}
    assert owner(cluster.settled(survivors), flow) == new_owner


def test_cluster_mode_without_a_secret_is_refused() -> None:
    from forwarding.middleware import ForwardingConfigError, check_config
    from topology.config import ClusterConfig, parse_endpoints

    endpoints = parse_endpoints("127.0.0.1:2379")
    with pytest.raises(ForwardingConfigError, match="DWASM_CLUSTER_SECRET"):
        check_config(ClusterConfig(etcd_endpoints=endpoints, node_id="n"))
    check_config(ClusterConfig(etcd_endpoints=endpoints, node_id="n", secret="s"))
    check_config(ClusterConfig(node_id="n"))  # single node: nothing is forwarded


if __name__ == "__main__" and sys.argv[1:2] == ["node"]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    serve_node(sys.argv[2:])
