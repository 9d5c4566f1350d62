"""A durable run's state directory (``dwasm run --state DIR``).

Layout::

    DIR/lock              flock'ed by the process that runs the program
    DIR/module.wasm       the program
    DIR/config.json       how it was started (args, env, dirs, invoke, ...)
    DIR/checkpoint.json   the latest snapshot manifest (docs/snapshot-format.md)
    DIR/chunks/ab/abcd…   memory chunks, content-addressed, compressed

A checkpoint writes its new chunks first, then replaces ``checkpoint.json`` atomically (write to a
temporary file, fsync, rename, fsync the directory), so a crash at any moment leaves either the
old or the new checkpoint, both complete. Chunks no longer referenced are deleted afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from vm.snapshot import SnapshotError


class StateDirError(Exception):
    """The state directory is missing, locked by another process, or damaged."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.chunk_dir = self.path / "chunks"
        self._known: set[str] | None = None
        self._lock_fd: int | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def create(self, module_bytes: bytes, config: dict[str, Any]) -> None:
        """Start a new run's directory; refuses to overwrite one that holds a run."""
        if (self.path / "checkpoint.json").exists() or (self.path / "config.json").exists():
            raise StateDirError(f"{self.path} already holds a run; use `dwasm resume {self.path}`"
                                " or choose an empty directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.chunk_dir.mkdir(exist_ok=True)
        self.lock()
        _write_atomic(self.path / "module.wasm", module_bytes)
        _write_atomic(self.path / "config.json", json.dumps(config, indent=1).encode())

    def lock(self) -> None:
        """Take the directory's lock: two processes must never run the same program."""
        if self._lock_fd is not None:
            return
        if not self.path.is_dir():
            raise StateDirError(f"{self.path} is not a state directory")
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirError(f"{self.path} is in use by another dwasm process") from None
        self._lock_fd = fd

    def load(self) -> tuple[dict[str, Any], bytes, dict[str, Any] | None]:
        """(config, module bytes, latest manifest or None)."""
        try:
            config = json.loads((self.path / "config.json").read_bytes())
            module = (self.path / "module.wasm").read_bytes()
        except FileNotFoundError:
            raise StateDirError(f"{self.path} is not a dwasm state directory "
                                "(no config.json/module.wasm)") from None
        except ValueError as exc:
            raise StateDirError(f"{self.path}/config.json is damaged: {exc}") from None
        manifest = None
        cp = self.path / "checkpoint.json"
        if cp.exists():
            try:
                manifest = json.loads(cp.read_bytes())
            except ValueError as exc:
                raise StateDirError(f"{cp} is damaged: {exc}") from None
        return config, module, manifest

    # --- chunks -------------------------------------------------------------------------------

    def _chunk_path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise SnapshotError(f"bad chunk name {digest!r}")
        return self.chunk_dir / digest[:2] / digest

    def get(self, digest: str) -> bytes | None:
        try:
            return self._chunk_path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def known(self) -> set[str]:
        if self._known is None:
            self._known = {p.name for p in self.chunk_dir.glob("??/*") if len(p.name) == 64}
        return self._known

    # --- checkpoints --------------------------------------------------------------------------

    def save(self, manifest: dict[str, Any], new_chunks: dict[str, bytes]) -> int:
        """Commit a checkpoint; returns the bytes written."""
        known = self.known()
        written = 0
        dirs = set()
        for digest, blob in new_chunks.items():
            path = self._chunk_path(digest)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(digest + ".tmp")
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dirs.add(path.parent)
            known.add(digest)
            written += len(blob)
        for d in dirs:
            _fsync_dir(d)
        data = json.dumps(manifest, separators=(",", ":")).encode()
        _write_atomic(self.path / "checkpoint.json", data)
        written += len(data)
        self._collect(manifest)
        return written

    def _collect(self, manifest: dict[str, Any]) -> None:
        live = {d for mem in manifest["memories"] for d in mem["chunks"]}
        known = self.known()
        for digest in list(known - live):
            try:
                self._chunk_path(digest).unlink()
            except FileNotFoundError:
                pass
            known.discard(digest)
