"""The descriptor table: stdio streams, preopened directories, opened files and directories.

A descriptor is plain data plus, for files and directories, one host file descriptor. Everything
the guest can observe (kind, rights, flags, offset, where it lives in the sandbox) is in the
plain fields, so ``vm.wasi.durable`` can write it out and reopen it elsewhere. File offsets are
kept here, not in the kernel: reads and writes are positional (``pread``/``pwrite``), which
makes the recorded offset exact and lets a restored descriptor continue where it stood.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from dataclasses import dataclass

from . import abi
from .errno import EBADF, EINVAL, ENOTCAPABLE, ENOTDIR, WasiError

STDIO_KINDS = ("stdin", "stdout", "stderr")


@dataclass
class Preopen:
    """A host directory the guest sees as ``guest``. ``root_fd`` stays open for the Wasi
    object's lifetime (restores and bookkeeping resolve paths from it); the guest's descriptor
    for the preopen is a duplicate it may close."""

    host: str
    guest: str
    root_fd: int = -1

    def open(self) -> None:
        self.root_fd = os.open(self.host, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1


class Descriptor:
    """One guest file descriptor.

    ``kind`` is ``stdin``/``stdout``/``stderr``, ``dir`` or ``file``. Files and directories have
    ``host_fd``, ``preopen`` (index) and ``rel`` (canonical path relative to the preopen root,
    '' for the root itself); ``preopened`` marks the directories the guest finds at startup.
    """

    __slots__ = ("kind", "rights_base", "rights_inheriting", "flags", "host_fd", "preopen", "rel",
                 "guest_path", "offset", "readable", "writable", "filetype", "preopened",
                 "listing")

    def __init__(self, kind: str, rights_base: int, rights_inheriting: int = 0, *, flags: int = 0,
                 host_fd: int = -1, preopen: int = -1, rel: str = "", guest_path: str = "",
                 offset: int = 0, readable: bool = False, writable: bool = False,
                 filetype: int = abi.FILETYPE_UNKNOWN, preopened: bool = False) -> None:
        self.kind = kind
        self.rights_base = rights_base
        self.rights_inheriting = rights_inheriting
        self.flags = flags
        self.host_fd = host_fd
        self.preopen = preopen
        self.rel = rel
        self.guest_path = guest_path
        self.offset = offset
        self.readable = readable
        self.writable = writable
        self.filetype = filetype
        self.preopened = preopened
        self.listing: list[tuple[str, int, int]] | None = None  # fd_readdir cache

    def require(self, rights: int) -> None:
        """ENOTCAPABLE unless the descriptor holds every right in ``rights``."""
        if rights & ~self.rights_base:
            raise WasiError(ENOTCAPABLE)

    def close(self) -> None:
        if self.host_fd >= 0:
            fd, self.host_fd = self.host_fd, -1
            os.close(fd)


def filetype_of(mode: int) -> int:
    """The witx filetype of a host ``st_mode``."""
    if stat_mod.S_ISREG(mode):
        return abi.FILETYPE_REGULAR_FILE
    if stat_mod.S_ISDIR(mode):
        return abi.FILETYPE_DIRECTORY
    if stat_mod.S_ISLNK(mode):
        return abi.FILETYPE_SYMBOLIC_LINK
    if stat_mod.S_ISCHR(mode):
        return abi.FILETYPE_CHARACTER_DEVICE
    if stat_mod.S_ISBLK(mode):
        return abi.FILETYPE_BLOCK_DEVICE
    if stat_mod.S_ISSOCK(mode):
        return abi.FILETYPE_SOCKET_STREAM
    return abi.FILETYPE_UNKNOWN


class FdTable:
    """Guest fd numbers → descriptors. New descriptors take the lowest free number, as POSIX
    does, so a program's fd numbers are the same on every run and after a restore."""

    def __init__(self) -> None:
        self.fds: dict[int, Descriptor] = {}

    def add(self, desc: Descriptor) -> int:
        fd = 0
        while fd in self.fds:
            fd += 1
        self.fds[fd] = desc
        return fd

    def get(self, fd: int) -> Descriptor:
        desc = self.fds.get(fd)
        if desc is None:
            raise WasiError(EBADF)
        return desc

    def file(self, fd: int, stdio_errno: int = EBADF) -> Descriptor:
        """An opened (non-directory) file. Other descriptors are EBADF, as in wasmtime, except
        that the seek family passes ESPIPE for the stdio streams."""
        desc = self.get(fd)
        if desc.kind == "file":
            return desc
        raise WasiError(stdio_errno if desc.kind in STDIO_KINDS else EBADF)

    def directory(self, fd: int) -> Descriptor:
        """A directory for a path operation; any other descriptor is ENOTDIR, as for ``*at``."""
        desc = self.get(fd)
        if desc.kind != "dir":
            raise WasiError(ENOTDIR)
        return desc

    def remove(self, fd: int) -> Descriptor:
        desc = self.get(fd)
        del self.fds[fd]
        return desc

    def renumber(self, src: int, dst: int) -> None:
        """Move ``src`` to ``dst``, closing what ``dst`` held (``dst`` need not be open)."""
        desc = self.get(src)
        if src == dst:
            return
        old = self.fds.pop(dst, None)
        if old is not None:
            old.close()
        del self.fds[src]
        self.fds[dst] = desc

    def close_all(self) -> None:
        for desc in self.fds.values():
            desc.close()
        self.fds.clear()


def filestat_bytes(st: os.stat_result) -> bytes:
    """The witx ``filestat`` of a host stat result (times before 1970 read as 0)."""
    return abi.pack_filestat(st.st_dev, st.st_ino, filetype_of(st.st_mode), st.st_nlink,
                             st.st_size, max(0, st.st_atime_ns), max(0, st.st_mtime_ns),
                             max(0, st.st_ctime_ns))


def new_times(current: os.stat_result, atim: int, mtim: int, fst_flags: int) -> tuple[int, int]:
    """The ``(atime, mtime)`` in ns to set for ``fstflags``: a given value, now, or unchanged.

    Setting a time both to a value and to now is EINVAL (witx, wasmtime)."""
    if fst_flags & ~abi.FST_ALL:
        raise WasiError(EINVAL)
    if (fst_flags & abi.FST_ATIM and fst_flags & abi.FST_ATIM_NOW) or (
            fst_flags & abi.FST_MTIM and fst_flags & abi.FST_MTIM_NOW):
        raise WasiError(EINVAL)
    now = time.time_ns()
    if fst_flags & abi.FST_ATIM_NOW:
        atime = now
    elif fst_flags & abi.FST_ATIM:
        atime = atim
    else:
        atime = current.st_atime_ns
    if fst_flags & abi.FST_MTIM_NOW:
        mtime = now
    elif fst_flags & abi.FST_MTIM:
        mtime = mtim
    else:
        mtime = current.st_mtime_ns
    return atime, mtime
