"""A stand-in node process for tests/test_topology_cluster.py: a real :class:`Cluster` whose
"flows" are one writer per held shard, appending a row to ``writes`` in a loop, each in a
transaction fenced by :func:`check_epoch` that lasts 0.1 s (as the flow engine's checkpoints are).

Usage: python tests/topology_node.py ETCD_ENDPOINT DATABASE_URL NODE_ID SHARDS
Prints ``ready`` once started; on SIGTERM drains (``drained True|False``) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from topology.config import ClusterConfig, parse_endpoints
from topology.fencing import FencedError, check_epoch
from topology.node import Cluster


class Writers:
    """ShardEvents: one writer task per held shard."""

    def __init__(self, pool: asyncpg.Pool, node: str) -> None:
        self.pool = pool
        self.node = node
        self.cluster: Cluster | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def _write(self, shard: int, epoch: int) -> None:
        seq = 0
        while True:
            seq += 1
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await check_epoch(conn, shard, epoch, idle_timeout=1.0)
                    # Work inside the transaction (a checkpoint being written): a SIGSTOP most
                    # likely lands here, with the epoch row locked.
                    await asyncio.sleep(0.1)
                    await conn.execute("INSERT INTO writes (shard, epoch, node, seq) "
                                       "VALUES ($1, $2, $3, $4)", shard, epoch, self.node, seq)
            except FencedError:
                print("fenced", shard, epoch, flush=True)
                assert self.cluster is not None
                self.tasks.pop(shard, None)
                await self.cluster.report_fenced(shard, epoch)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                print("write failed", shard, epoch, type(exc).__name__, flush=True)
            await asyncio.sleep(0.005)

    async def _stop(self, shard: int) -> None:
        task = self.tasks.pop(shard, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def shard_acquired(self, shard: int, epoch: int) -> None:
        await self._stop(shard)
        self.tasks[shard] = asyncio.create_task(self._write(shard, epoch))

    async def shard_releasing(self, shard: int, epoch: int) -> None:
        await self._stop(shard)

    async def shard_lost(self, shard: int) -> None:
        await self._stop(shard)


async def main(endpoint: str, url: str, node: str, shards: int) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    config = ClusterConfig(etcd_endpoints=parse_endpoints(endpoint), node_id=node, shards=shards,
                           lease_ttl=2, keepalive_interval=0.3, etcd_timeout=0.5,
                           handoff_timeout=5, coordinator_tick=0.2)
    writers = Writers(pool, node)
    cluster = Cluster(config, pool, writers, url=f"http://{node}.invalid")
    writers.cluster = cluster
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await cluster.start(timeout=10)
    print("ready", flush=True)
    await stop.wait()
    print("drained", await cluster.drain(10), flush=True)
    await cluster.stop()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
