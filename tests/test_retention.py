"""Retention of finished flows and the chunk GC (app/flows/retention.py) on the real service:
a real PostgreSQL, the engine of a live server, its real chunk cache. Passes are run on the
server's event loop with short retention, TTL and grace, instead of waiting for the loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from flowkit import COUNTER_WAT, TRAP_WAT, start, upload, wait_for, wat

from app.api.settings import Settings, SettingsError, parse_duration
from app.flows.retention import RetentionConfig, collect_chunks
from topology.fencing import claim_shards


def on_loop(server: Any, coro: Any, timeout: float = 60) -> Any:
    """Run ``coro`` on the live server's event loop (where its engine and pool live)."""
    return asyncio.run_coroutine_threadsafe(coro, server.app.state.engine.loop).result(timeout)


def sql(server: Any, query: str, *args: Any) -> list[Any]:
    return on_loop(server, server.app.state.engine.db.pool.fetch(query, *args))


def age(server: Any, ids: list[str], seconds: float = 2 * 86400) -> None:
    sql(server, "UPDATE flows SET finished_at = finished_at - make_interval(secs => $2) "
                "WHERE id = ANY($1::text[])", ids, seconds)


def rows_of(server: Any, flow_id: str) -> dict[str, int]:
    out = {}
    for table, col in (("flows", "id"), ("events", "flow_id"), ("signals", "flow_id"),
                       ("tasks", "flow_id")):
        out[table] = sql(server, f"SELECT count(*) AS n FROM {table} WHERE {col} = $1",
                         flow_id)[0]["n"]
    return out


def tick(client: httpx.Client, flow_id: str, n: int = 3) -> None:
    for _ in range(n):
        assert client.post(f"/v1/flows/{flow_id}/signals/tick", content=b"").status_code == 202


def referenced(server: Any) -> set[str]:
    return {r["h"] for r in sql(server, """
        SELECT DISTINCT jsonb_array_elements_text(m -> 'chunks') AS h
          FROM flows, jsonb_array_elements(checkpoint -> 'memories') AS m
         WHERE checkpoint IS NOT NULL""")}


def chunks_of(server: Any, flow_id: str) -> set[str]:
    return {r["h"] for r in sql(server, """
        SELECT jsonb_array_elements_text(m -> 'chunks') AS h
          FROM flows, jsonb_array_elements(checkpoint -> 'memories') AS m WHERE id = $1""",
                                flow_id)}


def stored(server: Any) -> set[str]:
    return {r["hash"] for r in sql(server, "SELECT hash FROM chunks")}


# --- settings ------------------------------------------------------------------------------------

def test_retention_setting_parses_durations() -> None:
    assert parse_duration("30d") == 30 * 86400 and parse_duration("12h") == 43200
    assert parse_duration("3600") == 3600 and parse_duration("90m") == 5400
    assert parse_duration("0") == 0 and parse_duration("forever") == 0
    assert Settings.from_env({}).flow_retention == 30 * 86400
    assert Settings.from_env({"DWASM_FLOW_RETENTION": "12h"}).flow_retention == 43200
    with pytest.raises(SettingsError, match="DWASM_FLOW_RETENTION"):
        Settings.from_env({"DWASM_FLOW_RETENTION": "soon"})
    assert Settings.from_env({"DWASM_FLOW_RETENTION": "forever"}).flow_retention == 0
    with pytest.raises(ValueError, match="twice"):
        RetentionConfig(chunk_ttl=10, gc_grace=15)


# --- retention -----------------------------------------------------------------------------------

def test_old_finished_flows_go_with_their_rows_and_the_rest_stays(server: Any,
                                                                  client: httpx.Client) -> None:
    engine = server.app.state.engine
    counter = upload(client, wat(COUNTER_WAT))
    done = start(client, counter)["id"]
    wait_for(client, done, ("waiting",))
    tick(client, done)
    assert wait_for(client, done)["status"] == "completed"
    fanout = upload(client, "fanout")
    cancelled = start(client, fanout)["id"]
    wait_for(client, cancelled, ("waiting",))
    assert client.post(f"/v1/flows/{cancelled}/cancel").status_code == 200
    waiting = start(client, counter)["id"]
    wait_for(client, waiting, ("waiting",))
    young = start(client, upload(client, wat(TRAP_WAT)))["id"]
    assert wait_for(client, young)["status"] == "failed"
    before = {f: rows_of(server, f) for f in (done, cancelled, waiting, young)}
    assert before[done]["signals"] == 3 and before[cancelled]["tasks"] > 0
    age(server, [done, cancelled])

    engine.configure_retention(RetentionConfig(retention=86400))
    deleted = on_loop(server, engine.retention_pass())
    assert (deleted.flows, deleted.signals) == (2, 3)
    assert deleted.tasks == before[cancelled]["tasks"]
    assert deleted.events == before[done]["events"] + before[cancelled]["events"]
    for gone in (done, cancelled):
        assert rows_of(server, gone) == {"flows": 0, "events": 0, "signals": 0, "tasks": 0}
        assert client.get(f"/v1/flows/{gone}").status_code == 404
    for kept in (waiting, young):
        assert rows_of(server, kept) == before[kept]
    assert on_loop(server, engine.retention_pass()).flows == 0  # nothing more is due
    engine.configure_retention(RetentionConfig(retention=0))  # forever
    age(server, [young])
    assert on_loop(server, engine.retention_pass()).flows == 0
    assert rows_of(server, young)["flows"] == 1
    tick(client, waiting)  # the waiting flow still runs
    assert wait_for(client, waiting)["exit_code"] == 3
    metrics = client.get("/metrics").text
    assert "dwasm_retention_flows_deleted_total 2" in metrics
    assert 'dwasm_gc_seconds_count{job="retention"}' in metrics


def test_a_node_that_lost_the_shard_deletes_nothing_there(server: Any,
                                                          client: httpx.Client) -> None:
    engine = server.app.state.engine
    topology = engine.topology
    hello = upload(client, "hello")
    ids: dict[int, str] = {}
    while len(ids) < 2:  # two finished flows in different shards
        fid = start(client, hello, args=["x"])["id"]
        ids.setdefault(topology.shard_of(fid), fid)
    (lost, lost_id), (kept, kept_id) = sorted(ids.items())
    for fid in (lost_id, kept_id):
        wait_for(client, fid)
    age(server, [lost_id, kept_id])

    async def claim() -> None:
        async with engine.db.pool.acquire() as conn:
            await claim_shards(conn, {lost: engine._owned[lost] + 1}, "other", "inc-other")

    on_loop(server, claim())  # another node took the shard; this one has not heard yet
    assert lost in engine._owned
    engine.configure_retention(RetentionConfig(retention=86400))
    deleted = on_loop(server, engine.retention_pass())
    assert deleted.flows == 1
    assert rows_of(server, lost_id)["flows"] == 1 and rows_of(server, kept_id)["flows"] == 0
    assert lost not in engine._owned  # the fenced batch made it drop the shard
    assert on_loop(server, engine.retention_pass()).flows == 0
    assert rows_of(server, lost_id)["flows"] == 1


def parent_wat(child_module: str) -> bytes:
    """Starts a child of ``child_module`` without awaiting it, then waits for signal "go"."""
    return wat(f"""
(module
  (import "dwasm" "child_start" (func $child (param i32 i32 i32 i32) (result i32)))
  (import "dwasm" "signal_wait" (func $wait (param i32 i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "go")
  (data (i32.const 64) "{child_module}")
  (func (export "_start")
    (drop (call $child (i32.const 64) (i32.const {len(child_module)}) (i32.const 0)
                       (i32.const 0)))
    (drop (call $wait (i32.const 16) (i32.const 2) (i64.const -1)))))
""")


def test_children_outlive_an_active_parent_and_parents_their_children(
        server: Any, client: httpx.Client) -> None:
    engine = server.app.state.engine
    hello = upload(client, "hello")
    parent = start(client, upload(client, parent_wat(hello)), id="pa")["id"]
    wait_for(client, parent, ("waiting",))
    child = f"{parent}~0"
    assert wait_for(client, child)["status"] == "completed"
    age(server, [child])
    engine.configure_retention(RetentionConfig(retention=86400))
    # The child finished long ago but its parent runs on (it may still read the outcome).
    assert on_loop(server, engine.retention_pass()).flows == 0
    assert rows_of(server, child)["flows"] == 1
    assert client.post(f"/v1/flows/{parent}/signals/go", content=b"").status_code == 202
    assert wait_for(client, parent)["status"] == "completed"
    age(server, [parent])
    # Child first, then (next batch of the same pass) the parent it no longer blocks.
    deleted = on_loop(server, engine.retention_pass())
    assert deleted.flows == 2
    assert rows_of(server, parent)["flows"] == 0 and rows_of(server, child)["flows"] == 0


# --- chunk GC ------------------------------------------------------------------------------------

SHORT = dict(retention=0.2, chunk_ttl=0.5, gc_grace=1.0)


def test_chunk_gc_keeps_what_manifests_reference_and_old_flows_resume(
        start_live_server: Any) -> None:
    server = start_live_server()
    url = server.settings.database_url
    engine = server.app.state.engine
    engine.configure_retention(RetentionConfig(**SHORT))
    with server.client() as client:
        counter = upload(client, wat(COUNTER_WAT))
        finished = start(client, counter)["id"]
        wait_for(client, finished, ("waiting",))
        tick(client, finished)
        wait_for(client, finished)
        waiting = start(client, counter)["id"]
        wait_for(client, waiting, ("waiting",))
        only_finished = chunks_of(server, finished) - chunks_of(server, waiting)
        assert only_finished and chunks_of(server, waiting)
        time.sleep(1.2)  # every chunk is now older than the grace
        assert on_loop(server, engine.retention_pass()).flows == 1
        collected = on_loop(server, engine.chunk_gc_pass())
        assert collected.ran and collected.chunks == len(only_finished)
        assert stored(server) == referenced(server) == chunks_of(server, waiting)
        assert on_loop(server, engine.chunk_gc_pass()).chunks == 0
        assert "dwasm_chunks_deleted_total " + str(len(only_finished)) in \
            client.get("/metrics").text
    server.stop()
    # A new process (empty caches) restores the waiting flow from its old, kept chunks.
    second = start_live_server(url)
    with second.client() as client:
        r = client.post(f"/v1/flows/{waiting}/query/count", json={"args": []})
        assert r.status_code == 200, r.text
        tick(client, waiting)
        done = wait_for(client, waiting)
        assert done["status"] == "completed" and done["stdout"] == "hi\n"
        assert second.app.state.engine.stats["restores"] >= 1


def run_race(server: Any, client: httpx.Client, counter: str) -> tuple[str, str]:
    """A flow finishes (its last chunk cached as stored), is deleted, its chunk collected; then
    another flow ends in the same memory, so its last manifest names that chunk again.
    Returns (chunk, the second flow)."""
    engine = server.app.state.engine
    first = start(client, counter)["id"]
    wait_for(client, first, ("waiting",))
    tick(client, first)
    wait_for(client, first)
    (chunk,) = chunks_of(server, first)
    assert engine.chunks.cache.stored_until(chunk) is not None  # the engine's cache has it
    time.sleep(1.2)  # older than the grace
    assert on_loop(server, engine.retention_pass()).flows == 1
    assert on_loop(server, engine.chunk_gc_pass()).chunks >= 1
    assert chunk not in stored(server)
    second = start(client, counter)["id"]
    wait_for(client, second, ("waiting",))
    tick(client, second)
    wait_for(client, second)
    assert chunks_of(server, second) == {chunk}
    return chunk, second


def test_a_chunk_cached_as_stored_is_sent_again_after_the_gc(server: Any,
                                                            client: httpx.Client) -> None:
    engine = server.app.state.engine
    engine.configure_retention(RetentionConfig(**SHORT))
    chunk, second = run_race(server, client, upload(client, wat(COUNTER_WAT)))
    assert chunk in stored(server)  # the cache's trust had expired: the checkpoint re-sent it
    r = client.get(f"/v1/flows/{second}/events")
    assert any(e["type"] == "checkpoint" and e["data"]["new_chunks"] >= 1
               and e["data"]["status"] == "completed" for e in r.json()["items"])


def test_the_race_is_real_when_the_cache_outlives_the_grace(server: Any,
                                                           client: httpx.Client) -> None:
    """The control for the test above: a cache trusting entries for longer than the GC's
    grace (a misconfiguration the config refuses) leaves a manifest naming a deleted chunk."""
    engine = server.app.state.engine
    engine.configure_retention(RetentionConfig(**SHORT))
    engine.chunks.ttl = 3600.0
    chunk, _ = run_race(server, client, upload(client, wat(COUNTER_WAT)))
    assert chunk not in stored(server) and chunk in referenced(server)


def test_gc_waits_while_a_previous_version_node_checkpoints(server: Any) -> None:
    engine = server.app.state.engine
    # A node of the previous version calls the old signature (here for a flow that does not
    # exist: nothing is written but the mark).
    rows = sql(server, "SELECT * FROM dwasm_checkpoint('nope', 0, 'running', NULL, '', '', "
                       "NULL, NULL, NULL, NULL, 0, '{}', '{}', '{}', '{}', '{}', '{}', '{}', "
                       "'{}', '{}', '{}', '{}', 0, 0, '{}', '{}', '{}', '{}', '{}', '{}', "
                       "NULL, NULL, NULL)")
    assert rows == []
    sql(server, "UPDATE gc_state SET legacy_checkpoint_at = now() - interval '2 hours'")
    sql(server, "SELECT * FROM dwasm_checkpoint('nope', 0, 'running', NULL, '', '', "
                "NULL, NULL, NULL, NULL, 0, '{}', '{}', '{}', '{}', '{}', '{}', '{}', "
                "'{}', '{}', '{}', '{}', 0, 0, '{}', '{}', '{}', '{}', '{}', '{}', "
                "NULL, NULL, NULL)")
    assert not on_loop(server, collect_chunks(engine.db.pool, 3600, 100)).ran
    sql(server, "UPDATE gc_state SET legacy_checkpoint_at = now() - interval '2 hours'")
    assert on_loop(server, collect_chunks(engine.db.pool, 3600, 100)).ran
