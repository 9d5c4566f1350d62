"""WASI state as plain data, and what a restore does to make re-execution safe.

``capture(wasi)`` (``Wasi.state``) returns a JSON-serialisable dict; ``restore_into`` fills a
fresh ``Wasi`` from it (``Wasi.from_state``), in any process. Files are reopened by their
canonical path relative to their preopen and positioned at the recorded offsets (offsets live
in the descriptors, so nothing else is needed). The rest of this module is about the file system, which a snapshot does not contain:

* **Truncate back.** For every regular file the program has opened for writing, the state
  records its size (and inode) at checkpoint time. A restore truncates each such file that has
  grown since back to that size, so appends and extensions made after the checkpoint by a run
  that crashed are undone before they are made again.
* **Replay tolerance.** After a restore, the operations that are not idempotent — exclusive
  create, mkdir, unlink, rmdir, rename, link, symlink — may find their work already done by the
  crashed run. Such an operation succeeds instead of failing when this process has not touched
  that path since the restore and either it is the call the checkpoint stood at and would have
  succeeded then (effect boundaries, ``Wasi.perform``), or the object it finds (the parent
  directory, for removals) changed after the checkpoint (``Durability.replaying``).

docs/wasi.md spells out what is and is not guaranteed.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from typing import TYPE_CHECKING, Any

from . import abi
from .errno import WasiError
from .fs import STDIO_KINDS, Descriptor
from .paths import Walk, find_inode, open_beneath, stat_beneath

if TYPE_CHECKING:
    from .wasi import Wasi

FORMAT = "dwasm-wasi"
VERSION = 1

Key = tuple[int, str]  # (preopen index, canonical path relative to it)


class WasiRestoreError(ValueError):
    """A state cannot be restored: wrong format, missing preopen, or a file an open descriptor
    referred to is gone."""


class Durability:
    """Bookkeeping for restores: files written, and the replay window after a restore."""

    def __init__(self) -> None:
        self.written: set[Key] = set()  # regular files the program opened for writing
        self.since: int | None = None  # wall time of the checkpoint restored from
        self.touched: set[Key] = set()  # paths this process changed since the restore
        # ``fresh``: restored and no WASI call made yet. ``forced``: the call now running is the
        # one the checkpoint stood at (``Wasi.perform`` right after a restore): the crashed
        # run may have done exactly this, so its "already done" errors are tolerated without
        # looking at timestamps.
        self.fresh = False
        self.forced = False
        # From the checkpoint: whether the call it stood at would have succeeded then (its
        # target absent for a create, present for a removal). Only then can an "already done"
        # error of the repeated call be the crashed run's doing.
        self.pending_ok = False
        self.pending_effect: dict[str, Any] | None = None  # as restored, for re-capture

    def touch(self, key: Key) -> None:
        if self.since is not None:
            self.touched.add(key)

    def is_touched(self, key: Key) -> bool:
        return key in self.touched

    def replaying(self, key: Key, changed_ns: int) -> bool:
        """Whether an "already done" error on ``key`` is the crashed run's doing: we are
        restored, this process has not touched the path, and it changed after the checkpoint."""
        if self.since is None or key in self.touched:
            return False
        if self.forced:
            return True
        # Anything changed before the checkpoint has a timestamp below it, whether the file
        # system's clock is fine or coarse (a coarse clock lags, never leads). A change made by
        # the crashed run in the same clock tick as the checkpoint can look older and is then
        # not tolerated: the safe side, since tolerating wrongly could truncate a file.
        return changed_ns >= self.since

    def note_written(self, key: Key) -> None:
        self.written.add(key)

    def removed(self, key: Key) -> None:
        self.touch(key)
        self.written.discard(key)

    def renamed(self, src: Key, dst: Key) -> None:
        """Move the records of ``src`` (and everything below it) to ``dst``."""
        self.touch(src)
        self.touch(dst)
        self.written.discard(dst)
        for key in list(self.written):
            moved = moved_key(key, src, dst)
            if moved is not None:
                self.written.discard(key)
                self.written.add(moved)


def moved_key(key: Key, src: Key, dst: Key) -> Key | None:
    """Where ``key`` is after renaming ``src`` to ``dst`` (None if it is not below ``src``)."""
    if key[0] != src[0]:
        return None
    if key[1] == src[1]:
        return dst
    if src[1] == "" or key[1].startswith(src[1] + "/"):
        rest = key[1][len(src[1]):].lstrip("/")
        return (dst[0], f"{dst[1]}/{rest}" if dst[1] else rest)
    return None


# --- capture ---------------------------------------------------------------------------------

def _identity(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "dev": st.st_dev, "ino": st.st_ino}


def _locate(wasi: "Wasi", desc: Descriptor) -> bool:
    """Make sure ``desc.rel`` still names the descriptor's file; follow it if it moved.

    Returns False when the file has no name in the preopen any more (unlinked while open)."""
    st = os.fstat(desc.host_fd)
    root = wasi.preopens[desc.preopen].root_fd
    at = stat_beneath(root, desc.rel)
    if at is not None and (at.st_dev, at.st_ino) == (st.st_dev, st.st_ino):
        return True
    found = find_inode(root, st.st_dev, st.st_ino)
    if found is None:
        return False
    desc.rel = found
    return True


def _fd_entry(wasi: "Wasi", fd: int, desc: Descriptor) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "fd": fd, "kind": desc.kind, "flags": desc.flags,
        "rights_base": desc.rights_base, "rights_inheriting": desc.rights_inheriting,
    }
    if desc.kind in STDIO_KINDS:
        return entry
    located = _locate(wasi, desc)
    entry.update({"preopen": desc.preopen, "path": desc.rel, "guest_path": desc.guest_path,
                  "preopened": desc.preopened})
    if not located:
        entry["stale"] = True
    st = os.fstat(desc.host_fd)
    entry.update({"dev": st.st_dev, "ino": st.st_ino})
    if desc.kind == "file":
        entry.update({"offset": desc.offset, "read": desc.readable, "write": desc.writable,
                      "filetype": desc.filetype})
        if desc.writable:
            entry["size"] = st.st_size
    return entry


def _written_files(wasi: "Wasi") -> list[dict[str, Any]]:
    """Size and identity of every still-existing file the program has opened for writing."""
    out = []
    for (preopen, rel) in sorted(wasi.durable.written):
        st = stat_beneath(wasi.preopens[preopen].root_fd, rel)
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            wasi.durable.written.discard((preopen, rel))
            continue
        out.append({"preopen": preopen, "path": rel, **_identity(st)})
    return out


# Calls whose repetition can fail because the first attempt succeeded: argument positions of
# (directory fd, path pointer, path length) of the object created or removed.
_CREATES = {"path_create_directory": (0, 1, 2), "path_open": (0, 2, 3), "path_link": (4, 5, 6),
            "path_symlink": (2, 3, 4)}
_REMOVES = {"path_unlink_file": (0, 1, 2), "path_remove_directory": (0, 1, 2),
            "path_rename": (0, 1, 2)}


def _pending_effect(wasi: "Wasi") -> dict[str, Any] | None:
    """For a checkpoint taken at a suspended call: would the call succeed right now?"""
    if wasi.suspended is None:
        # Captured again after a restore, before the pending call ran: keep what was known.
        return wasi.durable.pending_effect if wasi.durable.fresh else None
    name, args = wasi.suspended
    where = _CREATES.get(name) or _REMOVES.get(name)
    if where is None or (name == "path_open" and
                         args[4] & (abi.O_CREAT | abi.O_EXCL) != abi.O_CREAT | abi.O_EXCL):
        return {"call": name, "would_succeed": False}
    fd, ptr, length = (args[i] for i in where)
    desc = wasi.table.fds.get(fd)
    exists = None
    if desc is not None and desc.kind == "dir":
        try:
            with Walk(desc.host_fd, desc.rel, wasi.mem.string(ptr, length), False) as r:
                exists = r.name == "." or _lexists(r.dirfd, r.name)
        except (OSError, WasiError):
            exists = None
    ok = exists is not None and (exists if name in _REMOVES else not exists)
    return {"call": name, "would_succeed": ok}


def _lexists(dirfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def capture(wasi: "Wasi") -> dict[str, Any]:
    """The complete WASI state of ``wasi`` as JSON-serialisable data (see docs/wasi.md)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "args": list(wasi.args),
        "env": [list(item) for item in wasi.env],
        "preopens": [{"guest": p.guest, "host": p.host} for p in wasi.preopens],
        "fds": [_fd_entry(wasi, fd, desc) for fd, desc in sorted(wasi.table.fds.items())],
        "stdin": wasi.stdin.state(),
        "stdout": wasi.streams["stdout"].state(),
        "stderr": wasi.streams["stderr"].state(),
        "clocks": wasi.clocks.state(),
        "random": wasi.random.state(),
        "written_files": _written_files(wasi),
        "checkpoint_ns": time.time_ns(),
        "pending_effect": _pending_effect(wasi),
    }


# --- restore ---------------------------------------------------------------------------------

def check_format(state: dict[str, Any]) -> None:
    if state.get("format") != FORMAT:
        raise WasiRestoreError(f"not a WASI state (format {state.get('format')!r})")
    if state.get("version") != VERSION:
        raise WasiRestoreError(f"unsupported WASI state version {state.get('version')!r}; "
                               f"this dwasm reads version {VERSION}")


def _truncate_back(host_fd: int, entry: dict[str, Any]) -> None:
    """Undo growth after the checkpoint of a file that is still the one recorded."""
    st = os.fstat(host_fd)
    same = entry.get("ino") is None or entry.get("dev") != st.st_dev or entry["ino"] == st.st_ino
    if same and st.st_size > int(entry["size"]):
        os.ftruncate(host_fd, int(entry["size"]))


def _open_recorded(wasi: "Wasi", entry: dict[str, Any], root: int, rel: str,
                   flags: int) -> tuple[int, str]:
    """Open the object a descriptor had open: at its recorded path if that is still the same
    inode, else wherever that inode is now (renamed after the checkpoint). A directory path that
    now holds another directory is accepted (the same place, recreated); a file is not. On
    another file system (the tree was copied) the path is trusted."""
    ino = entry.get("ino")
    where = f"fd {entry['fd']}: {rel!r} in preopen {wasi.preopens[entry['preopen']].guest!r}"
    try:
        host_fd = open_beneath(root, rel, flags)
    except OSError as exc:
        moved = find_inode(root, int(entry["dev"]), int(ino)) if ino is not None else None
        if moved is None:
            raise WasiRestoreError(f"{where} cannot be reopened: {exc.strerror}") from exc
        return open_beneath(root, moved, flags), moved
    st = os.fstat(host_fd)
    if ino is None or st.st_dev != entry["dev"] or st.st_ino == ino:
        return host_fd, rel
    os.close(host_fd)
    moved = find_inode(root, st.st_dev, int(ino))
    if moved is not None:
        return open_beneath(root, moved, flags), moved
    if entry["kind"] == "dir":
        return open_beneath(root, rel, flags), rel
    raise WasiRestoreError(f"{where} is another file now; the one open at the checkpoint "
                           "was removed")


def _reopen(wasi: "Wasi", entry: dict[str, Any]) -> Descriptor:
    kind = entry["kind"]
    preopen = int(entry["preopen"])
    if not 0 <= preopen < len(wasi.preopens):
        raise WasiRestoreError(f"fd {entry['fd']}: no preopen {preopen}")
    root = wasi.preopens[preopen].root_fd
    rel = entry["path"]
    if entry.get("stale"):
        raise WasiRestoreError(
            f"fd {entry['fd']} ({entry.get('guest_path')!r}) was open on a file that had been "
            "removed; it cannot be reopened")
    if kind == "dir":
        flags = os.O_RDONLY | os.O_DIRECTORY
    elif entry.get("read") and entry.get("write"):
        flags = os.O_RDWR
    elif entry.get("write"):
        flags = os.O_WRONLY
    else:
        flags = os.O_RDONLY
    host_fd, rel = _open_recorded(wasi, entry, root, rel, flags | os.O_NONBLOCK)
    desc = Descriptor(kind, int(entry["rights_base"]), int(entry["rights_inheriting"]),
                      flags=int(entry.get("flags", 0)), host_fd=host_fd, preopen=preopen,
                      rel=rel, guest_path=entry.get("guest_path", ""),
                      offset=int(entry.get("offset", 0)), readable=bool(entry.get("read", True)),
                      writable=bool(entry.get("write", False)),
                      filetype=int(entry.get("filetype", abi.FILETYPE_DIRECTORY)),
                      preopened=bool(entry.get("preopened", False)))
    if desc.writable and "size" in entry:
        _truncate_back(host_fd, entry)
    return desc


def restore_into(wasi: "Wasi", state: dict[str, Any]) -> None:
    """Fill a freshly constructed ``wasi`` (same preopens, no descriptors) from ``state``."""
    for fd_entry in state["fds"]:
        kind = fd_entry["kind"]
        if kind in STDIO_KINDS:
            desc = Descriptor(kind, int(fd_entry["rights_base"]),
                              int(fd_entry["rights_inheriting"]), flags=int(fd_entry["flags"]))
        else:
            desc = _reopen(wasi, fd_entry)
        wasi.table.fds[int(fd_entry["fd"])] = desc
    for item in state.get("written_files", []):
        key = (int(item["preopen"]), item["path"])
        wasi.durable.written.add(key)
        try:
            host_fd = open_beneath(wasi.preopens[key[0]].root_fd, key[1],
                                   os.O_WRONLY | os.O_NONBLOCK)
        except (OSError, IndexError):
            continue  # gone or replaced by something else: nothing to undo
        try:
            _truncate_back(host_fd, item)
        finally:
            os.close(host_fd)
    wasi.stdin.restore(state.get("stdin", {}))
    wasi.streams["stdout"].restore(state.get("stdout", {}))
    wasi.streams["stderr"].restore(state.get("stderr", {}))
    wasi.clocks.restore(state.get("clocks", {}))
    wasi.durable.since = int(state["checkpoint_ns"])
    wasi.durable.fresh = True
    wasi.durable.pending_effect = state.get("pending_effect")
    wasi.durable.pending_ok = bool((state.get("pending_effect") or {}).get("would_succeed"))
