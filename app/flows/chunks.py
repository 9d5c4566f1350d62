"""Snapshot memory chunks kept in Postgres, with an in-memory LRU in front.

``vm.snapshot.restore`` reads chunks through a synchronous ``ChunkSource`` and runs in a worker
thread, while the database is asynchronous. So a restore first calls :meth:`ChunkStore.prefetch`
(one query for every chunk the manifest names that the cache lacks), then restores from the
cache with :meth:`ChunkStore.source`. A chunk still missing then (evicted between the two
steps) is fetched from the worker thread through the event loop.

Chunks are immutable and content-addressed, so a cached chunk never goes stale, and a hash in
the cache is known to be stored: the engine passes those hashes as ``known`` to
``snapshot.capture`` so that checkpoints write only chunks that are new.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Any, Iterable

DEFAULT_CACHE_BYTES = 128 << 20  # compressed bytes; a 16 MiB memory of data is ~4-16 MiB


def manifest_hashes(manifest: dict[str, Any] | None) -> set[str]:
    """Every chunk hash a snapshot manifest references."""
    if not manifest:
        return set()
    return {h for mem in manifest.get("memories", ()) for h in mem.get("chunks", ())}


class ChunkCache:
    """A byte-bounded LRU of compressed chunks, safe to use from several threads."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            blob = self._items.get(digest)
            if blob is not None:
                self._items.move_to_end(digest)
            return blob

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        return self._size

    def put(self, digest: str, blob: bytes) -> None:
        with self._lock:
            old = self._items.pop(digest, None)
            if old is not None:
                self._size -= len(old)
            self._items[digest] = blob
            self._size += len(blob)
            while self._size > self.max_bytes and len(self._items) > 1:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)

    def put_all(self, items: Iterable[tuple[str, bytes]]) -> None:
        for digest, blob in items:
            self.put(digest, blob)

    def missing(self, digests: Iterable[str]) -> list[str]:
        with self._lock:
            return [d for d in set(digests) if d not in self._items]


class ChunkStore:
    """The chunks table seen through a :class:`ChunkCache`.

    ``db`` is the service's ``Database``; only ``db.pool`` (an asyncpg pool) is used.
    """

    def __init__(self, db: Any, cache: ChunkCache | None = None) -> None:
        self.db = db
        self.cache = cache if cache is not None else ChunkCache()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def fetch(self, digests: Iterable[str]) -> dict[str, bytes]:
        """Load the named chunks from the table into the cache; returns those found."""
        wanted = list(set(digests))
        if not wanted:
            return {}
        from .store import fetch_chunks

        async with self.db.pool.acquire() as conn:
            found = await fetch_chunks(conn, wanted)
        self.cache.put_all(found.items())
        return found

    async def prefetch(self, manifest: dict[str, Any] | None) -> None:
        """Make every chunk of ``manifest`` available to :meth:`source` (best effort: a chunk
        absent from the table surfaces later as the snapshot's own "chunk missing" error)."""
        self.loop = asyncio.get_running_loop()
        missing = self.cache.missing(manifest_hashes(manifest))
        if missing:
            await self.fetch(missing)

    def source(self, manifest: dict[str, Any] | None = None) -> "PinnedSource":
        """A synchronous ``vm.snapshot`` ChunkSource; chunks of ``manifest`` present in the
        cache now are pinned in it, so eviction by other restores cannot take them away."""
        pinned: dict[str, bytes] = {}
        for digest in manifest_hashes(manifest):
            blob = self.cache.get(digest)
            if blob is not None:
                pinned[digest] = blob
        return PinnedSource(self, pinned)

    def get_blocking(self, digest: str) -> bytes | None:
        """Fetch one chunk from a worker thread (never call it on the event loop)."""
        blob = self.cache.get(digest)
        if blob is not None or self.loop is None:
            return blob
        future = asyncio.run_coroutine_threadsafe(self.fetch([digest]), self.loop)
        return future.result(timeout=60).get(digest)


class PinnedSource:
    """What ``snapshot.restore`` reads: pinned chunks first, then the store."""

    def __init__(self, store: ChunkStore, pinned: dict[str, bytes]) -> None:
        self.store = store
        self.pinned = pinned

    def get(self, digest: str) -> bytes | None:
        blob = self.pinned.get(digest)
        if blob is None:
            blob = self.store.get_blocking(digest)
        return blob
