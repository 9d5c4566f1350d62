"""The service's one-statement writes (migrations/0003_fast_paths.sql) are fenced like every
other flow write (docs/cluster.md): a writer holding a shard's fencing lock holds a new owner's
claim off until it commits, and a writer whose epoch was claimed past writes nothing. Real
PostgreSQL, real interleavings on two connections."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from topology.fencing import claim_shards

pytestmark = pytest.mark.asyncio

FINISH = "SELECT outcome FROM dwasm_finish_task('f-x/0', 'l', 'completed', NULL, NULL, " \
         "'task_completed', '{}', $1, $2)"


async def test_a_claimed_epoch_fences_the_sql_writes(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await claim_shards(conn, {3: 1}, "a", "inc-a")
        assert await conn.fetchval(FINISH, 3, 1) == "missing"  # allowed: it got to the lookup
        assert await conn.fetchval(FINISH, 3, None) == "missing"  # unfenced (no topology)
        await claim_shards(conn, {3: 2}, "b", "inc-b")
        with pytest.raises(asyncpg.PostgresError) as fenced:
            await conn.fetchval(FINISH, 3, 1)
        assert fenced.value.sqlstate == "DW001" and "fenced" in str(fenced.value)
        with pytest.raises(asyncpg.PostgresError) as never:
            await conn.fetchval(FINISH, 9, 1)  # a shard nobody claimed
        assert never.value.sqlstate == "DW001"
        assert await conn.fetchval(FINISH, 3, 2) == "missing"
    finally:
        await conn.close()


async def test_a_claim_waits_for_a_writer_in_progress_then_fences_the_next(
        database_url: str) -> None:
    writer = await asyncpg.connect(database_url)
    claimer = await asyncpg.connect(database_url)
    try:
        await claim_shards(claimer, {5: 1}, "a", "inc-a")
        tx = writer.transaction()
        await tx.start()
        await writer.execute("SELECT dwasm_check_epoch(5, 1)")  # holds the lock till commit
        claim = asyncio.create_task(claim_shards(claimer, {5: 2}, "b", "inc-b"))
        await asyncio.sleep(0.5)
        assert not claim.done()  # the claim waits for the write in progress
        await tx.commit()
        await asyncio.wait_for(claim, 5)
        with pytest.raises(asyncpg.PostgresError) as fenced:
            await writer.execute("SELECT dwasm_check_epoch(5, 1)")
        assert fenced.value.sqlstate == "DW001"
        await writer.execute("SELECT dwasm_check_epoch(5, 2)")
    finally:
        await writer.close()
        await claimer.close()
