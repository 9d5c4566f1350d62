"""topology/fencing.py on a real PostgreSQL: claims only move forward, and a deposed owner's
write either commits before the new owner's claim or fails, in every interleaving (including a
writer process frozen with SIGSTOP inside its transaction)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest

from topology.fencing import (
    ClaimRefused,
    FencedError,
    check_epoch,
    check_epochs,
    claim_next,
    claim_shard,
    claim_shards,
    current_epochs,
)

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parent.parent


async def _conns(url: str, n: int) -> list[asyncpg.Connection]:
    conns = [await asyncpg.connect(url) for _ in range(n)]
    await conns[0].execute("CREATE TABLE IF NOT EXISTS writes (shard int, epoch bigint, "
                           "what text)")
    return conns


async def _write(conn: asyncpg.Connection, shard: int, epoch: int, what: str) -> None:
    async with conn.transaction():
        await check_epoch(conn, shard, epoch)
        await conn.execute("INSERT INTO writes VALUES ($1, $2, $3)", shard, epoch, what)


async def _writes(conn: asyncpg.Connection) -> list[str]:
    return [r["what"] for r in await conn.fetch("SELECT what FROM writes ORDER BY what")]


async def test_claims_only_move_forward(database_url: str) -> None:
    conn, = await _conns(database_url, 1)
    try:
        await claim_shard(conn, 3, "a", "a1", 1)
        await claim_shard(conn, 3, "a", "a1", 1)  # idempotent for the same claimer
        with pytest.raises(ClaimRefused) as refused:
            await claim_shard(conn, 3, "b", "b1", 1)  # same epoch, other claimer
        assert refused.value.refused == {3: (1, "a")}
        await claim_shards(conn, {3: 5, 4: 2}, "b", "b1")
        with pytest.raises(ClaimRefused):
            await claim_shards(conn, {3: 4, 5: 1}, "a", "a2")  # all or nothing
        assert await current_epochs(conn) == {3: 5, 4: 2}
        assert await claim_next(conn, [4, 6], "c", "c1") == {4: 3, 6: 1}
        row = await conn.fetchrow("SELECT owner, incarnation FROM shard_epochs WHERE shard=4")
        assert tuple(row) == ("c", "c1")
        with pytest.raises(ValueError):
            await claim_shards(conn, {1: 0}, "a", "a1")
    finally:
        await conn.close()


async def test_write_after_claim_is_fenced_and_lands_nowhere(database_url: str) -> None:
    old, new = await _conns(database_url, 2)
    try:
        await claim_shard(old, 7, "a", "a1", 1)
        await _write(old, 7, 1, "a-before")
        await claim_shard(new, 7, "b", "b1", 2)
        with pytest.raises(FencedError) as fenced:
            await _write(old, 7, 1, "a-after")
        assert fenced.value.current == 2 and fenced.value.owner == "b"
        await _write(new, 7, 2, "b-first")
        with pytest.raises(FencedError):
            await _write(old, 8, 1, "never-claimed")
        with pytest.raises(FencedError):
            await _in_txn(old, {7: 2, 8: 1})
        assert await _writes(old) == ["a-before", "b-first"]
        with pytest.raises(RuntimeError, match="inside"):
            await check_epoch(old, 7, 2)
    finally:
        await old.close()
        await new.close()


async def _in_txn(conn: asyncpg.Connection, epochs: dict[int, int]) -> None:
    async with conn.transaction():
        await check_epochs(conn, epochs)


async def test_claim_waits_for_a_writer_that_checked_first(database_url: str) -> None:
    old, new = await _conns(database_url, 2)
    try:
        await claim_shard(old, 1, "a", "a1", 1)
        txn = old.transaction()
        await txn.start()
        await check_epoch(old, 1, 1)
        claim = asyncio.create_task(claim_shard(new, 1, "b", "b1", 2))
        await asyncio.sleep(0.3)
        assert not claim.done(), "the claim must wait for the writer's transaction"
        await old.execute("INSERT INTO writes VALUES (1, 1, 'a-in-flight')")
        await txn.commit()
        await asyncio.wait_for(claim, 5)
        with pytest.raises(FencedError):
            await _write(old, 1, 1, "a-late")
        assert await _writes(new) == ["a-in-flight"]
    finally:
        await old.close()
        await new.close()


async def test_writer_blocked_behind_an_uncommitted_claim_fails_after_it(
        database_url: str) -> None:
    old, new = await _conns(database_url, 2)
    try:
        await claim_shard(old, 2, "a", "a1", 1)
        claim_txn = new.transaction()
        await claim_txn.start()
        await new.execute("UPDATE shard_epochs SET epoch = 2, owner = 'b' WHERE shard = 2")
        write = asyncio.create_task(_write(old, 2, 1, "a-racing"))
        await asyncio.sleep(0.3)
        assert not write.done(), "the locking read must wait for the claim"
        await claim_txn.commit()
        with pytest.raises(FencedError):
            await asyncio.wait_for(write, 5)
        assert await _writes(new) == []
    finally:
        await old.close()
        await new.close()


async def test_repeatable_read_writer_is_fenced_by_a_claim_after_its_snapshot(
        database_url: str) -> None:
    old, new = await _conns(database_url, 2)
    try:
        await claim_shard(old, 3, "a", "a1", 1)
        with pytest.raises(FencedError, match="during this transaction"):
            async with old.transaction(isolation="repeatable_read"):
                await old.fetchval("SELECT count(*) FROM writes")  # takes the snapshot
                await claim_shard(new, 3, "b", "b1", 2)
                await check_epoch(old, 3, 1)
                await old.execute("INSERT INTO writes VALUES (3, 1, 'a-stale-snapshot')")
        assert await _writes(new) == []
    finally:
        await old.close()
        await new.close()


WRITER = textwrap.dedent("""
    import asyncio, sys
    import asyncpg
    from topology.fencing import check_epoch

    async def main(url):
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await check_epoch(conn, 5, 1, idle_timeout=1.0)
                print("checked", flush=True)
                sys.stdin.readline()   # the test SIGSTOPs us here, then SIGCONTs and writes a line
                await conn.execute("INSERT INTO writes VALUES (5, 1, 'frozen-writer')")
            print("committed", flush=True)
        except Exception as exc:
            print("failed", type(exc).__name__, flush=True)

    asyncio.run(main(sys.argv[1]))
""")


async def test_a_writer_frozen_inside_its_transaction_cannot_land_its_write(
        database_url: str) -> None:
    conn, = await _conns(database_url, 1)
    await claim_shard(conn, 5, "a", "a1", 1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, database_url],  # noqa: ASYNC220
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert line.strip() == "checked"
        proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        # The frozen session holds the row FOR SHARE; PostgreSQL ends it after its idle
        # timeout (1 s), then the claim goes through.
        await claim_shards(conn, {5: 2}, "b", "b1", lock_timeout=10)
        waited = time.monotonic() - started
        assert 0.5 < waited < 8, waited
        proc.send_signal(signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert out.startswith("failed"), out
        assert await _writes(conn) == []
        assert (await current_epochs(conn))[5] == 2
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        await conn.close()
