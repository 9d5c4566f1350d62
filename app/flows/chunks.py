"""Snapshot memory chunks kept in Postgres, with an in-memory LRU in front.

``vm.snapshot.restore`` reads chunks through a synchronous ``ChunkSource`` and runs in a worker
thread, while the database is asynchronous. So a restore first calls :meth:`ChunkStore.prefetch`
(one query for every chunk the manifest names that the cache lacks), then restores from the
cache with :meth:`ChunkStore.source`. A chunk still missing then (evicted between the two
steps) is fetched from the worker thread through the event loop.

Chunks are immutable and content-addressed, so a cached chunk's bytes never go stale. Whether
it is still *stored* can change: the chunk GC (app/flows/retention.py) deletes chunks that no
manifest references and that no checkpoint touched (``chunks.touched_at``) for a grace period.
So the cache also remembers, per chunk, until when it may be taken as stored: ``ttl`` seconds
after the latest time its ``touched_at`` is known to be no older than (a checkpoint that sent
it, minus the refresh threshold; or a fetch, which reports the row's age). The engine passes
the cache as ``known`` to ``snapshot.capture``: a trusted chunk is not sent, an untrusted one
is sent again (and its touched_at refreshed), so a manifest never names a chunk the GC may be
deleting as long as the GC's grace is well above ``ttl`` (it is at least twice as long).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from typing import Any, Iterable

DEFAULT_CACHE_BYTES = 128 << 20  # compressed bytes; a 16 MiB memory of data is ~4-16 MiB
CHUNK_CACHE_TTL = 3600.0  # seconds a chunk is taken as stored after it was last known touched


def manifest_hashes(manifest: dict[str, Any] | None) -> set[str]:
    """Every chunk hash a snapshot manifest references."""
    if not manifest:
        return set()
    return {h for mem in manifest.get("memories", ()) for h in mem.get("chunks", ())}


class ChunkCache:
    """A byte-bounded LRU of compressed chunks, safe to use from several threads.

    ``digest in cache`` means "known to be stored": present and trusted until its deadline
    (``time.monotonic()``); :meth:`get` returns the bytes regardless of that."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            item = self._items.get(digest)
            if item is None:
                return None
            self._items.move_to_end(digest)
            return item[0]

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            item = self._items.get(digest)  # type: ignore[call-overload]
            return item is not None and item[1] > time.monotonic()

    def stored_until(self, digest: str) -> float | None:
        """The monotonic deadline until which ``digest`` is taken as stored (None: absent)."""
        with self._lock:
            item = self._items.get(digest)
            return None if item is None else item[1]

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        return self._size

    def put(self, digest: str, blob: bytes, stored_until: float = 0.0) -> None:
        """Cache ``blob``; it counts as stored until ``stored_until`` (monotonic; the later
        of this and what the cache knew already)."""
        with self._lock:
            old = self._items.pop(digest, None)
            if old is not None:
                self._size -= len(old[0])
                stored_until = max(stored_until, old[1])
            self._items[digest] = (blob, stored_until)
            self._size += len(blob)
            while self._size > self.max_bytes and len(self._items) > 1:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted[0])

    def put_all(self, items: Iterable[tuple[str, bytes]], stored_until: float = 0.0) -> None:
        for digest, blob in items:
            self.put(digest, blob, stored_until)

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests whose bytes are not cached."""
        with self._lock:
            return [d for d in set(digests) if d not in self._items]


class ChunkStore:
    """The chunks table seen through a :class:`ChunkCache`.

    ``db`` is the service's ``Database``; only ``db.pool`` (an asyncpg pool) is used. ``ttl``:
    see the module docstring; a checkpoint re-sending a stored chunk refreshes its touched_at
    when it is older than :attr:`refresh_after` (a quarter of ``ttl``).
    """

    def __init__(self, db: Any, cache: ChunkCache | None = None,
                 ttl: float = CHUNK_CACHE_TTL) -> None:
        self.db = db
        self.cache = cache if cache is not None else ChunkCache()
        self.ttl = ttl
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def refresh_after(self) -> float:
        return self.ttl / 4

    def committed(self, chunks: Iterable[tuple[str, bytes]], began: float) -> None:
        """A checkpoint whose statement was sent at ``began`` (monotonic) stored ``chunks``:
        their touched_at is now at least ``began - refresh_after``."""
        self.cache.put_all(chunks, began - self.refresh_after + self.ttl)

    async def fetch(self, digests: Iterable[str]) -> dict[str, bytes]:
        """Load the named chunks from the table into the cache; returns those found."""
        wanted = list(set(digests))
        if not wanted:
            return {}
        from .store import fetch_chunks

        began = time.monotonic()
        async with self.db.pool.acquire() as conn:
            found = await fetch_chunks(conn, wanted)
        out: dict[str, bytes] = {}
        for digest, (blob, age) in found.items():
            self.cache.put(digest, blob, began - age + self.ttl)
            out[digest] = blob
        return out

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
