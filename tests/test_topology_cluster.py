"""Whole clusters on a real etcd and a real PostgreSQL.

Three node processes (tests/topology_node.py: a real Cluster whose "flows" write a row every
20 ms through check_epoch) are SIGKILLed, SIGSTOPped past their lease and drained; their shards
move, epochs rise in PostgreSQL, and no write of a deposed owner ever lands after its
successor's claim. In-process clusters show the map surviving an etcd restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from topology.config import ClusterConfig, parse_endpoints
from topology.etcd import AetcdClient
from topology.node import Cluster
from topology.shards import ShardMap

if TYPE_CHECKING:
    from etcdfixtures import EtcdServer

# One event loop for every test of the module: gRPC's asyncio layer (under aetcd) binds its
# completion poller to the loops it has seen, and a later test on a fresh loop can then wait
# forever for a call (grpc/grpc#23377 and related reports).
pytestmark = pytest.mark.asyncio(loop_scope="session")
ROOT = Path(__file__).resolve().parent.parent
SHARDS = 12


class NodeProcess:
    def __init__(self, etcd: EtcdServer, url: str, node: str, log: Path) -> None:
        self.node = node
        self.log_path = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "topology_node.py"), etcd.endpoint, url,
                 node, str(SHARDS)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while "ready" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"node {self.node} did not start:\n{self.log()}")
            await asyncio.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self) -> None:
        self.signal(signal.SIGCONT)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.close()


async def _map(etcd: AetcdClient) -> ShardMap | None:
    kv, _ = await etcd.get(b"/dwasm/shardmap")
    return ShardMap.loads(kv.value) if kv is not None else None


async def _settled(etcd: AetcdClient, conn: asyncpg.Connection, owners: set[str],
                   timeout: float = 20) -> ShardMap:
    """Waits until the map gives every shard to ``owners`` (balanced, no handoff) and every
    owner has claimed its shards at the map's epoch in PostgreSQL."""
    deadline = time.monotonic() + timeout
    while True:
        m = await _map(etcd)
        if m is not None and not any(a.in_handoff for a in m.assignments):
            counts = {o: sum(1 for a in m.assignments if a.owner == o) for o in owners}
            rows = {r["shard"]: (r["owner"], r["incarnation"], r["epoch"])
                    for r in await conn.fetch("SELECT * FROM shard_epochs")}
            claimed = all(rows.get(s) == (a.owner, a.incarnation, a.epoch)
                          for s, a in enumerate(m.assignments))
            if ({a.owner for a in m.assignments} == owners and claimed
                    and max(counts.values()) - min(counts.values()) <= 1):
                return m
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster did not settle on {owners}: {m and m.to_json()}")
        await asyncio.sleep(0.1)


async def _assert_no_stale_write(conn: asyncpg.Connection) -> dict[int, int]:
    """Per shard, in commit order (ids come from a sequence taken under the epoch lock), the
    epochs never go down: no write of a deposed owner landed after its successor's claim."""
    rows = await conn.fetch("SELECT shard, epoch, node, id FROM writes ORDER BY shard, id")
    last: dict[int, tuple[int, str]] = {}
    epochs: dict[int, set[int]] = {}
    for r in rows:
        prev = last.get(r["shard"])
        assert prev is None or r["epoch"] >= prev[0], (
            f"stale write: shard {r['shard']} epoch {r['epoch']} by {r['node']} after epoch "
            f"{prev[0]} by {prev[1]}")
        last[r["shard"]] = (r["epoch"], r["node"])
        epochs.setdefault(r["shard"], set()).add(r["epoch"])
    return {s: len(e) for s, e in epochs.items()}


async def _wait_writes_by(conn: asyncpg.Connection, owners: dict[int, tuple[str, int]],
                          timeout: float = 10) -> None:
    """Waits until each shard has a write by its owner at its epoch."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await conn.fetch("SELECT DISTINCT shard, node, epoch FROM writes")
        have = {(r["shard"], r["node"], r["epoch"]) for r in rows}
        if all((s, o, e) in have for s, (o, e) in owners.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError("owners are not writing")
        await asyncio.sleep(0.1)


def _owners(m: ShardMap) -> dict[int, tuple[str, int]]:
    return {s: (a.owner, a.epoch) for s, a in enumerate(m.assignments)}  # type: ignore[misc]


async def test_sigkill_sigstop_and_drain_with_three_node_processes(
        etcd_server: EtcdServer, database_url: str, nodes: list[NodeProcess],
        tmp_path: Path) -> None:
    conn = await asyncpg.connect(database_url)
    etcd = AetcdClient(parse_endpoints(etcd_server.endpoint))
    try:
        await conn.execute("CREATE TABLE writes (id bigserial PRIMARY KEY, shard int, "
                           "epoch bigint, node text, seq int)")
        for name in ("a", "b", "c"):
            nodes.append(NodeProcess(etcd_server, database_url, name, tmp_path / f"{name}.log"))
        for node in nodes:
            await node.wait_ready()
        a, b, c = nodes
        first = await _settled(etcd, conn, {"a", "b", "c"})
        await _wait_writes_by(conn, _owners(first))

        # SIGKILL: c's shards move once its lease (2 s) expires, at higher epochs.
        c.signal(signal.SIGKILL)
        killed = time.monotonic()
        second = await _settled(etcd, conn, {"a", "b"})
        took = time.monotonic() - killed
        assert 1.0 < took < 12, took
        assert second.version > first.version
        for s, (old, new) in enumerate(zip(first.assignments, second.assignments)):
            if old.owner == "c":
                assert new.owner in ("a", "b") and new.epoch > old.epoch
        await _wait_writes_by(conn, _owners(second))

        # SIGSTOP b past its lease: a takes everything; b, resumed, must not land a write.
        b.signal(signal.SIGSTOP)
        third = await _settled(etcd, conn, {"a"})
        await _wait_writes_by(conn, _owners(third))
        await asyncio.sleep(0.3)
        b.signal(signal.SIGCONT)
        fourth = await _settled(etcd, conn, {"a", "b"})
        assert {m.incarnation for n, m in fourth.members.items() if n == "b"} != {
            m.incarnation for n, m in second.members.items() if n == "b"}  # a new incarnation
        await _wait_writes_by(conn, _owners(fourth))

        # SIGTERM a: it drains, its shards are handed over (released, not timed out).
        a.signal(signal.SIGTERM)
        a.proc.wait(20)
        assert "drained True" in a.log(), a.log()
        fifth = await _settled(etcd, conn, {"b"})
        await _wait_writes_by(conn, _owners(fifth))

        epochs_per_shard = await _assert_no_stale_write(conn)
        assert len(epochs_per_shard) == SHARDS and max(epochs_per_shard.values()) >= 3
    finally:
        await etcd.close()
        await conn.close()


class Recorder:
    def __init__(self) -> None:
        self.held: dict[int, int] = {}
        self.log: list[tuple[str, int]] = []

    async def shard_acquired(self, shard: int, epoch: int) -> None:
        self.held[shard] = epoch
        self.log.append(("acquired", shard))

    async def shard_releasing(self, shard: int, epoch: int) -> None:
        self.held.pop(shard, None)
        self.log.append(("releasing", shard))

    async def shard_lost(self, shard: int) -> None:
        self.held.pop(shard, None)
        self.log.append(("lost", shard))


def _config(etcd: EtcdServer, node: str) -> ClusterConfig:
    return ClusterConfig(etcd_endpoints=parse_endpoints(etcd.endpoint), node_id=node,
                         shards=SHARDS, lease_ttl=2, keepalive_interval=0.3, etcd_timeout=0.5,
                         handoff_timeout=5, coordinator_tick=0.2)


async def test_nodes_keep_their_map_through_an_etcd_restart_and_assignment_resumes(
        etcd_server: EtcdServer, database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    conn = await asyncpg.connect(database_url)
    observer = AetcdClient(parse_endpoints(etcd_server.endpoint))
    clusters: list[Cluster] = []
    recorders: list[Recorder] = []

    async def add(name: str) -> Cluster:
        recorder = Recorder()
        cluster = Cluster(_config(etcd_server, name), pool, recorder, url=f"http://{name}")
        await cluster.start(timeout=10)
        clusters.append(cluster)
        recorders.append(recorder)
        return cluster

    try:
        x, y = await add("x"), await add("y")
        settled = await _settled(observer, conn, {"x", "y"})
        await _until(lambda: all(len(c.held) == SHARDS // 2 for c in clusters))
        assert recorders[0].held == x.held and recorders[1].held == y.held
        flow = next(f"f-{i}" for i in range(100) if x.owner_of(f"f-{i}").mine)
        seen_from_y = y.owner_of(flow)
        assert (seen_from_y.node_id, seen_from_y.url, seen_from_y.mine) == ("x", "http://x", False)
        assert y.snapshot()["version"] == settled.version

        etcd_server.stop()
        await asyncio.sleep(3.0)  # longer than the lease TTL
        for cluster, recorder in zip(clusters, recorders):
            assert cluster.view.version == settled.version and cluster.ready
            assert not cluster.membership.alive
            assert len(cluster.held) == SHARDS // 2 and recorder.held == cluster.held
            assert not any(what == "lost" for what, _ in recorder.log)
        assert x.owner_of(flow).mine and y.owner_of(flow).node_id == "x"

        etcd_server.start()
        await _until(lambda: all(c.membership.alive for c in clusters), 15)
        await add("z")
        final = await _settled(observer, conn, {"x", "y", "z"}, timeout=30)
        await _until(lambda: all(len(c.held) == SHARDS // 3 for c in clusters), 10)
        assert final.version > settled.version
        assert sorted(s for c in clusters for s in c.held) == list(range(SHARDS))
    finally:
        for cluster in clusters:
            await cluster.stop()
        await observer.close()
        await conn.close()
        await asyncio.wait_for(pool.close(), 10)


async def _until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)
