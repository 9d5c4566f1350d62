"""One-file form of a snapshot: ``DWSNAP1\\n``, then the manifest as one JSON line, then each chunk
as ``<hash> <length>\\n<bytes>``. Self-describing and streamable; the CLI's state directories and
the golden test files use it."""

from __future__ import annotations

import json
from typing import Any

from .chunks import MemoryChunks
from .values import SnapshotError

MAGIC = b"DWSNAP1\n"
MAX_MANIFEST = 1 << 30


def dumps(manifest: dict[str, Any], chunks: MemoryChunks | dict[str, bytes]) -> bytes:
    """Pack ``manifest`` with the chunks it references (taken from ``chunks``)."""
    source = chunks.chunks if isinstance(chunks, MemoryChunks) else chunks
    parts = [MAGIC, json.dumps(manifest, separators=(",", ":")).encode(), b"\n"]
    seen: set[str] = set()
    for mem in manifest["memories"]:
        for digest in mem["chunks"]:
            if digest in seen:
                continue
            seen.add(digest)
            blob = source[digest]
            parts += [f"{digest} {len(blob)}\n".encode(), blob]
    return b"".join(parts)


def loads(data: bytes) -> tuple[dict[str, Any], MemoryChunks]:
    """Unpack bytes made by :func:`dumps`; raises SnapshotError on anything malformed."""
    if not data.startswith(MAGIC):
        raise SnapshotError("not a dwasm snapshot file (bad magic)")
    pos = len(MAGIC)
    end = data.find(b"\n", pos, pos + MAX_MANIFEST)
    if end < 0:
        raise SnapshotError("truncated snapshot: manifest line not terminated")
    try:
        manifest = json.loads(data[pos:end])
    except ValueError as exc:
        raise SnapshotError(f"malformed snapshot manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise SnapshotError("malformed snapshot manifest: not an object")
    pos = end + 1
    chunks: dict[str, bytes] = {}
    while pos < len(data):
        end = data.find(b"\n", pos, pos + 200)
        if end < 0:
            raise SnapshotError("truncated snapshot: chunk header")
        try:
            digest, length_text = data[pos:end].decode("ascii").split(" ")
            length = int(length_text)
        except ValueError as exc:
            raise SnapshotError("malformed chunk header in snapshot") from exc
        pos = end + 1
        if length < 0 or pos + length > len(data):
            raise SnapshotError("truncated snapshot: chunk data")
        chunks[digest] = data[pos:pos + length]
        pos += length
    return manifest, MemoryChunks(chunks)
