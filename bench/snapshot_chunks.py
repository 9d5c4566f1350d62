"""Chunk size and compression level of snapshot memory (docs/snapshot-format.md), measured.

A snapshot stores linear memory as content-addressed chunks, each compressed with zlib, and a
manifest listing every chunk's sha256. A checkpoint writes the chunks that are new plus the whole
manifest, so the chunk size trades the bytes written per small change (smaller is better) against
the manifest's size and per-chunk overhead (larger is better). This script measures, for a 16 MiB
memory, each chunk size and zlib level:

* bytes written by an incremental checkpoint (new compressed chunks + manifest) after one change:
  one 64 KiB wasm page rewritten, one byte changed, or 16 small writes spread over the heap;
* time to capture the memory with nothing stored yet (hash + compress every chunk) and
  incrementally (hash every chunk, compress the new ones);
* time to restore it (decompress every referenced chunk);
* the manifest's size.

Two memory contents: ``random`` (incompressible: encrypted or compressed data) and ``typical`` (a
C or Rust program's heap: text, small integers, pointers, doubles, a little random data, and
untouched zero pages; see ``typical_memory``). Times are process CPU seconds, median of --runs.

    python bench/snapshot_chunks.py            # the table for bench/README.md
    python bench/snapshot_chunks.py --runs 1   # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAGE = 65536
MEMORY_SIZE = 16 * 1024 * 1024
CHUNK_SIZES = (4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024)
LEVELS = (1, 6)
CHANGES = ("page", "byte", "scattered")


# --------------------------------------------------------------------------------------------
# Memory contents


def random_memory(seed: int = 1) -> bytearray:
    return bytearray(random.Random(seed).randbytes(MEMORY_SIZE))


def _text(size: int) -> bytes:
    """The repository's own source and docs: stands for strings, JSON and source in memory."""
    files = sorted(ROOT.glob("vm/**/*.py")) + sorted(ROOT.glob("docs/*.md"))
    text = b"".join(p.read_bytes() for p in files) or b"lorem ipsum dolor sit amet "
    return (text * (size // len(text) + 1))[:size]


def _records(rng: random.Random, size: int, base: int) -> bytes:
    """Structs of a heap: a pointer into the heap, a small count, a flag word, a double."""
    out = bytearray()
    while len(out) < size:
        out += struct.pack("<IIId", base + rng.randrange(0, 1 << 20) * 8, rng.randrange(100),
                           rng.choice((0, 1, 0x80000000)), rng.random() * 1000.0)
    return bytes(out[:size])


def _doubles(rng: random.Random, size: int) -> bytes:
    """A smooth array of doubles, as a simulation or matrix holds."""
    x = rng.random()
    return b"".join(struct.pack("<d", x + i * 1e-3) for i in range(size // 8))


def typical_memory(seed: int = 1) -> bytearray:
    """16 MiB laid out like a program's memory: 1 MiB of static data (text), 6 MiB of heap
    records, 2 MiB of double arrays, 1 MiB of random bytes (hash tables, buffers of compressed
    data), a 1 MiB stack with 64 KiB used, and 5 MiB never touched (zero)."""
    rng = random.Random(seed)
    mib = 1024 * 1024
    parts = [
        _text(mib),
        _records(rng, 6 * mib, 0x100000),
        _doubles(rng, 2 * mib),
        rng.randbytes(mib),
        bytes(mib - PAGE) + _records(rng, PAGE, 0x100000),
        bytes(5 * mib),
    ]
    memory = bytearray(b"".join(parts))
    assert len(memory) == MEMORY_SIZE
    return memory


def change(memory: bytearray, kind: str, flavour: str, seed: int = 2) -> bytearray:
    """A copy of ``memory`` after one step of a program."""
    rng = random.Random(seed)
    out = bytearray(memory)
    if kind == "page":  # one wasm page of the heap rewritten with fresh data of the same kind
        start = 3 * 1024 * 1024
        fresh = rng.randbytes(PAGE) if flavour == "random" else _records(rng, PAGE, 0x100000)
        out[start:start + PAGE] = fresh
    elif kind == "byte":
        out[5 * 1024 * 1024 + 12345] ^= 0x5A
    elif kind == "scattered":  # 16 eight-byte stores: a few heap objects and the stack
        for _ in range(16):
            at = rng.randrange(1024 * 1024, 11 * 1024 * 1024) & ~7
            out[at:at + 8] = struct.pack("<Q", rng.getrandbits(64))
    else:
        raise ValueError(kind)
    return out


# --------------------------------------------------------------------------------------------
# The snapshot memory path, with the chunk size and level as parameters


def hashes(data: bytes | bytearray, size: int) -> list[str]:
    view = memoryview(data)
    try:
        return [hashlib.sha256(view[i:i + size]).hexdigest() for i in range(0, len(data), size)]
    finally:
        view.release()


def capture(data: bytes | bytearray, size: int, level: int,
            known: set[str] | dict[str, bytes]) -> tuple[list[str], dict[str, bytes]]:
    """As vm.snapshot.capture does for one memory: chunk hashes, and the new chunks compressed."""
    digests = hashes(data, size)
    new: dict[str, bytes] = {}
    for i, digest in enumerate(digests):
        if digest not in known and digest not in new:
            new[digest] = zlib.compress(bytes(data[i * size:(i + 1) * size]), level)
    return digests, new


def manifest_bytes(digests: list[str], size: int) -> int:
    """Size of a manifest holding this memory (and a small call stack, as a real one does)."""
    manifest = {
        "format": "dwasm-snapshot", "version": 1, "module": "0" * 64, "chunk_size": size,
        "compression": "zlib",
        "memories": [{"pages": MEMORY_SIZE // PAGE, "chunks": digests}],
        "tables": [[]], "globals": [["i", 1 << 20]] * 4, "dropped_elems": [], "dropped_datas": [],
        "execution": {"status": "suspended", "entry": 3, "results": None, "pending": None,
                      "frames": [{"func": 3, "offset": 120, "in_call": False,
                                  "locals": [["i", 7]] * 6, "stack": [["i", 1]]}] * 8},
        "host": None,
    }
    return len(json.dumps(manifest, separators=(",", ":")))


def restore(digests: list[str], chunks: dict[str, bytes]) -> bytearray:
    out = bytearray()
    for digest in digests:
        out += zlib.decompress(chunks[digest])
    return out


def cpu_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Row:
    flavour: str
    size: int
    level: int
    full_bytes: int  # all chunks of the memory, compressed (first checkpoint)
    manifest: int
    new_bytes: dict[str, int]  # per change kind: compressed bytes of the new chunks
    capture_full: float
    capture_incremental: float
    restore: float

    def checkpoint(self, kind: str) -> int:
        return self.new_bytes[kind] + self.manifest


def measure(flavour: str, memory: bytearray, size: int, level: int, runs: int) -> Row:
    digests, chunks = capture(memory, size, level, set())
    new_bytes = {}
    for kind in CHANGES:
        _, new = capture(change(memory, kind, flavour), size, level, chunks)
        new_bytes[kind] = sum(len(b) for b in new.values())
    changed = change(memory, "page", flavour)
    return Row(
        flavour, size, level, sum(len(b) for b in chunks.values()),
        manifest_bytes(digests, size), new_bytes,
        cpu_seconds(lambda: capture(memory, size, level, set()), runs),
        cpu_seconds(lambda: capture(changed, size, level, chunks), runs),
        cpu_seconds(lambda: restore(digests, chunks), runs),
    )


def check_against_engine(memory: bytearray, row: Row) -> None:
    """The figures for the engine's own setting must be what vm.snapshot.capture produces."""
    import vm
    from vm import snapshot
    from vm.snapshot import chunks as engine_chunks

    if row.size != snapshot.CHUNK_SIZE or row.level != engine_chunks._LEVEL:
        return
    # (module (memory 256)): a memory section with one memory of 256 pages, no maximum.
    module = vm.load(b"\0asm\1\0\0\0" + bytes([5, 4, 1, 0, 0x80, 0x02]))
    inst = vm.instantiate(vm.Store(), module)
    inst.mems[0].data[:] = memory
    manifest, new = snapshot.capture(inst)
    assert sum(len(b) for b in new.values()) == row.full_bytes, "engine capture differs"
    assert manifest["memories"][0]["chunks"] == hashes(memory, row.size)


def kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def ms(s: float) -> str:
    return f"{s * 1000:,.0f}"


def print_table(rows: Sequence[Row]) -> None:
    """Markdown, to paste into bench/README.md."""
    print("| memory | chunk | zlib | first checkpoint KiB | manifest KiB "
          "| page changed KiB | byte changed KiB | 16 writes KiB "
          "| capture ms | incremental ms | restore ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.flavour} | {r.size // 1024} KiB | {r.level} "
              f"| {kib(r.full_bytes + r.manifest)} | {kib(r.manifest)} "
              f"| {kib(r.checkpoint('page'))} | {kib(r.checkpoint('byte'))} "
              f"| {kib(r.checkpoint('scattered'))} | {ms(r.capture_full)} "
              f"| {ms(r.capture_incremental)} | {ms(r.restore)} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure (median)")
    args = parser.parse_args(argv)
    rows = []
    for flavour, make in (("typical", typical_memory), ("random", random_memory)):
        memory = make()
        for size in CHUNK_SIZES:
            for level in LEVELS:
                row = measure(flavour, memory, size, level, args.runs)
                check_against_engine(memory, row)
                rows.append(row)
                print(f"  {flavour} {size // 1024} KiB level {level} done", file=sys.stderr)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
