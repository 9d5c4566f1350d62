"""Every node's local copy of the shard map, kept current by a watch on its etcd key.

The view reads the key, then watches it from the next revision. When the watch fails (etcd
restarted or unreachable) it watches again from the last revision it has seen, with a short
backoff; when that revision has been compacted away meanwhile, it re-reads the key and watches
from the read's revision (nothing is missed: the read is newer than any lost event). Meanwhile the last map stays in
force, so a node keeps serving with the map it has while etcd is down. A map is only ever
replaced by one with a higher version, so an old value delivered late cannot roll it back.

Listeners (:meth:`ShardMapView.add_listener`) are called with each new map; :meth:`wait_for`
waits for a condition on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .aio import cancel_and_wait
from .config import ClusterConfig
from .etcd import Etcd, EtcdError, KeyValue, WatchCompacted
from .shards import ShardMap, ShardMapError

log = logging.getLogger("dwasm.topology")


def shard_map_key(config: ClusterConfig) -> bytes:
    return (config.prefix + "shardmap").encode()


class ShardMapView:
    """The latest shard map this node has seen (see the module docstring)."""

    def __init__(self, etcd: Etcd, config: ClusterConfig) -> None:
        self._etcd = etcd
        self._config = config
        self.key = shard_map_key(config)
        self.map: ShardMap | None = None
        #: etcd mod revision of the key holding :attr:`map` (for compare-and-swap).
        self.mod_revision = 0
        #: False while the watch is down (etcd unreachable); the map is then possibly stale.
        self.connected = False
        #: How often the watch was restarted after a compaction (for tests and metrics).
        self.compactions = 0
        self._listeners: list[Callable[[ShardMap], None]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def version(self) -> int:
        return self.map.version if self.map is not None else 0

    def add_listener(self, listener: Callable[[ShardMap], None]) -> None:
        """``listener(new_map)`` after every change (called in the view's task; keep it quick)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dwasm-shardmap-view")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task, what="shard map view")

    async def wait_for(self, predicate: Callable[[ShardMap], bool],
                       timeout: float | None = None) -> ShardMap:
        """The first map (current or future) that satisfies ``predicate``; raises
        ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                event = self._changed
                if self.map is not None and predicate(self.map):
                    return self.map
                await event.wait()

    async def refresh(self) -> ShardMap | None:
        """Reads the key now (besides the watch); the current map afterwards."""
        kv, _ = await self._etcd.get(self.key)
        if kv is not None:
            self._apply(kv)
        return self.map

    def _apply(self, kv: KeyValue) -> None:
        try:
            new = ShardMap.loads(kv.value)
        except ShardMapError as exc:
            log.error("ignoring a malformed shard map at revision %d: %s", kv.mod_revision, exc)
            return
        if new.shards != self._config.shards:
            log.error("the shard map has %d shards but DWASM_SHARDS is %d; ignoring it",
                      new.shards, self._config.shards)
            return
        if self.map is not None and new.version <= self.map.version:
            return
        self.map, self.mod_revision = new, kv.mod_revision
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        for listener in list(self._listeners):
            try:
                listener(new)
            except Exception:  # a listener's bug must not stop the view
                log.exception("shard map listener failed")

    async def _run(self) -> None:
        backoff = 0.05
        revision: int | None = None  # everything up to this revision has been seen
        while True:
            try:
                if revision is None:
                    kv, revision = await self._etcd.get(self.key)
                    if kv is not None:
                        self._apply(kv)
                async for batch in self._etcd.watch(self.key, start_revision=revision + 1):
                    if not self.connected:
                        log.info("shard map watch restored at revision %d", revision)
                    self.connected = True
                    backoff = 0.05
                    for event in batch.events:
                        if event.kind == "put":
                            self._apply(event.kv)
                    if batch.events:
                        revision = max(e.kv.mod_revision for e in batch.events)
                    elif not batch.created:
                        revision = max(revision, batch.revision)
            except WatchCompacted as exc:
                self.compactions += 1
                revision = None
                log.info("shard map watch compacted (%s); re-reading", exc)
            except EtcdError as exc:
                if self.connected:
                    log.warning("shard map watch lost (%s); keeping version %d", exc,
                                self.version)
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except Exception:  # a bug must not stop the view for good
                log.exception("shard map watch failed; re-reading")
                revision = None
                await asyncio.sleep(1.0)
