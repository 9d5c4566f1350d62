"""Snapshots: an instance and its resumable execution as data (docs/snapshot-format.md).

``capture`` gives a JSON-serialisable manifest plus compressed, content-addressed memory chunks;
``restore`` rebuilds both in a fresh store, in this process or another, with this dwasm or a later
one. ``dumps``/``loads`` pack a manifest and its chunks into one self-contained byte string.
"""

from .chunks import CHUNK_SIZE, MemoryChunks
from .container import dumps, loads
from .state import FORMAT, VERSION, capture, restore
from .values import SnapshotError

__all__ = ["CHUNK_SIZE", "FORMAT", "MemoryChunks", "SnapshotError", "VERSION", "capture",
           "dumps", "loads", "restore"]
