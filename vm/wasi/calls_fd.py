"""The ``fd_*`` calls.

Kind errors come first and use the POSIX/wasmtime errno (a directory where a file is needed is
EBADF, a stdio stream in the seek family ESPIPE, a non-directory where a directory is needed
ENOTDIR); reading or writing a descriptor not opened for it is EBADF, as in POSIX; any other
missing right is ENOTCAPABLE. Result pointers are checked before the side effect happens, so a
bad pointer traps without half-done work.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import abi
from .errno import (EBADF, EFBIG, EINVAL, ENAMETOOLONG, ENOTCAPABLE, ENOTDIR, EOVERFLOW, ESPIPE,
                    WasiError)
from .fs import STDIO_KINDS, Descriptor, filestat_bytes, filetype_of, new_times

if TYPE_CHECKING:
    from .wasi import Wasi

# One call moves at most this many bytes: iovecs may overlap, so their total is not bounded by
# the memory size. Reads and writes may be short in POSIX; libc loops.
MAX_IO = 1 << 24
MAX_OFFSET = (1 << 63) - 1

_ADVICE = [getattr(os, name, None) for name in (
    "POSIX_FADV_NORMAL", "POSIX_FADV_SEQUENTIAL", "POSIX_FADV_RANDOM", "POSIX_FADV_WILLNEED",
    "POSIX_FADV_DONTNEED", "POSIX_FADV_NOREUSE")]


def _clip(vecs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The prefix of ``vecs`` that moves at most MAX_IO bytes."""
    out = []
    room = MAX_IO
    for buf, length in vecs:
        if room <= 0:
            break
        out.append((buf, min(length, room)))
        room -= length
    return out


def _filetype(self: "Wasi", desc: Descriptor) -> int:
    if desc.kind == "dir":
        return abi.FILETYPE_DIRECTORY
    if desc.kind in STDIO_KINDS:
        stream = self.stdin if desc.kind == "stdin" else self.streams[desc.kind]
        return abi.FILETYPE_CHARACTER_DEVICE if stream.tty else abi.FILETYPE_UNKNOWN
    return desc.filetype


def write_file(desc: Descriptor, data: bytes, offset: int | None) -> int:
    """Write ``data`` to a file at ``offset`` (None: the descriptor's offset, which advances).

    In append mode the data goes to the end whatever the offset (Linux ``pwrite`` semantics,
    as wasmtime), and a current-offset write leaves the offset at the new end."""
    if desc.flags & abi.FDFLAG_APPEND:
        end = os.fstat(desc.host_fd).st_size
        n = os.pwrite(desc.host_fd, data, end)
        if offset is None:
            desc.offset = end + n
        return n
    at = desc.offset if offset is None else offset
    if at + len(data) > MAX_OFFSET:
        raise WasiError(EFBIG)
    n = os.pwrite(desc.host_fd, data, at)
    if offset is None:
        desc.offset = at + n
    return n


class FdCalls:
    """Calls on an open descriptor."""

    def fd_advise(self: "Wasi", fd: int, offset: int, length: int, advice: int) -> None:
        if advice > abi.ADVICE_MAX:
            raise WasiError(EINVAL)
        desc = self.table.file(fd)
        desc.require(abi.RIGHT_FD_ADVISE)
        if offset > MAX_OFFSET or length > MAX_OFFSET:
            raise WasiError(EINVAL)
        host_advice = _ADVICE[advice]
        if host_advice is not None and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(desc.host_fd, offset, length, host_advice)

    def fd_allocate(self: "Wasi", fd: int, offset: int, length: int) -> None:
        desc = self.table.file(fd)
        desc.require(abi.RIGHT_FD_ALLOCATE)
        if not desc.writable:
            raise WasiError(EBADF)
        end = offset + length
        if end > MAX_OFFSET:
            raise WasiError(EFBIG)
        if os.fstat(desc.host_fd).st_size < end:
            os.ftruncate(desc.host_fd, end)

    def fd_close(self: "Wasi", fd: int) -> None:
        self.table.remove(fd).close()

    def fd_datasync(self: "Wasi", fd: int) -> None:
        desc = self._syncable(fd, abi.RIGHT_FD_DATASYNC)
        os.fdatasync(desc.host_fd)

    def fd_sync(self: "Wasi", fd: int) -> None:
        desc = self._syncable(fd, abi.RIGHT_FD_SYNC)
        os.fsync(desc.host_fd)

    def _syncable(self: "Wasi", fd: int, right: int) -> Descriptor:
        desc = self.table.get(fd)
        if desc.kind in STDIO_KINDS:
            raise WasiError(EBADF)
        desc.require(right)
        return desc

    def fd_fdstat_get(self: "Wasi", fd: int, result_ptr: int) -> None:
        desc = self.table.get(fd)
        self.mem.write(result_ptr, abi.pack_fdstat(_filetype(self, desc), desc.flags,
                                                   desc.rights_base, desc.rights_inheriting), 8)

    def fd_fdstat_set_flags(self: "Wasi", fd: int, flags: int) -> None:
        if flags & ~abi.FDFLAGS_ALL:
            raise WasiError(EINVAL)
        desc = self.table.get(fd)
        desc.require(abi.RIGHT_FD_FDSTAT_SET_FLAGS)
        sync = abi.FDFLAG_DSYNC | abi.FDFLAG_RSYNC | abi.FDFLAG_SYNC
        if (flags ^ desc.flags) & sync:
            raise WasiError(EINVAL)  # the sync modes are fixed at open, as in wasmtime
        desc.flags = flags

    def fd_fdstat_set_rights(self: "Wasi", fd: int, base: int, inheriting: int) -> None:
        desc = self.table.get(fd)
        if base & ~desc.rights_base or inheriting & ~desc.rights_inheriting:
            raise WasiError(ENOTCAPABLE)  # rights can only be dropped
        desc.rights_base = base
        desc.rights_inheriting = inheriting

    def fd_filestat_get(self: "Wasi", fd: int, result_ptr: int) -> None:
        desc = self.table.get(fd)
        desc.require(abi.RIGHT_FD_FILESTAT_GET)
        if desc.kind in STDIO_KINDS:
            raw = abi.pack_filestat(0, 0, _filetype(self, desc), 0, 0, 0, 0, 0)
        else:
            raw = filestat_bytes(os.fstat(desc.host_fd))
        self.mem.write(result_ptr, raw, 8)

    def fd_filestat_set_size(self: "Wasi", fd: int, size: int) -> None:
        desc = self.table.file(fd)
        desc.require(abi.RIGHT_FD_FILESTAT_SET_SIZE)
        if size > MAX_OFFSET:
            raise WasiError(EFBIG)
        os.ftruncate(desc.host_fd, size)

    def fd_filestat_set_times(self: "Wasi", fd: int, atim: int, mtim: int, fst_flags: int) -> None:
        desc = self.table.get(fd)
        if desc.kind in STDIO_KINDS:
            raise WasiError(EBADF)
        desc.require(abi.RIGHT_FD_FILESTAT_SET_TIMES)
        os.utime(desc.host_fd, ns=new_times(os.fstat(desc.host_fd), atim, mtim, fst_flags))

    def fd_pread(self: "Wasi", fd: int, iovs: int, iovs_len: int, offset: int,
                 result_ptr: int) -> None:
        vecs = _clip(self.mem.iovecs(iovs, iovs_len))
        self.mem.check(result_ptr, 4, 4)
        desc = self.table.file(fd, ESPIPE)
        if not desc.readable:
            raise WasiError(EBADF)
        desc.require(abi.RIGHT_FD_READ | abi.RIGHT_FD_SEEK)
        if offset > MAX_OFFSET:
            raise WasiError(EINVAL)
        data = os.pread(desc.host_fd, sum(n for _, n in vecs), offset)
        self.mem.scatter(vecs, data)
        self.mem.set_u32(result_ptr, len(data))

    def fd_read(self: "Wasi", fd: int, iovs: int, iovs_len: int, result_ptr: int) -> None:
        vecs = _clip(self.mem.iovecs(iovs, iovs_len))
        self.mem.check(result_ptr, 4, 4)
        desc = self.table.get(fd)
        size = sum(n for _, n in vecs)
        if desc.kind == "stdin":
            desc.require(abi.RIGHT_FD_READ)
            data = self.stdin.read(size)
        elif desc.kind == "file" and desc.readable:
            desc.require(abi.RIGHT_FD_READ)
            data = os.pread(desc.host_fd, size, desc.offset)
            desc.offset += len(data)
        else:
            raise WasiError(EBADF)
        self.mem.scatter(vecs, data)
        self.mem.set_u32(result_ptr, len(data))

    def fd_pwrite(self: "Wasi", fd: int, iovs: int, iovs_len: int, offset: int,
                  result_ptr: int) -> None:
        vecs = _clip(self.mem.iovecs(iovs, iovs_len))
        self.mem.check(result_ptr, 4, 4)
        desc = self.table.file(fd, ESPIPE)
        if not desc.writable:
            raise WasiError(EBADF)
        desc.require(abi.RIGHT_FD_WRITE | abi.RIGHT_FD_SEEK)
        if offset > MAX_OFFSET:
            raise WasiError(EINVAL)
        n = write_file(desc, self.mem.gather(vecs), offset)
        self.mem.set_u32(result_ptr, n)

    def fd_write(self: "Wasi", fd: int, iovs: int, iovs_len: int, result_ptr: int) -> None:
        vecs = _clip(self.mem.iovecs(iovs, iovs_len))
        self.mem.check(result_ptr, 4, 4)
        desc = self.table.get(fd)
        if desc.kind in ("stdout", "stderr"):
            desc.require(abi.RIGHT_FD_WRITE)
            data = self.mem.gather(vecs)
            self.streams[desc.kind].write(data)
            n = len(data)
        elif desc.kind == "file" and desc.writable:
            desc.require(abi.RIGHT_FD_WRITE)
            n = write_file(desc, self.mem.gather(vecs), None)
        else:
            raise WasiError(EBADF)
        self.mem.set_u32(result_ptr, n)

    def fd_prestat_get(self: "Wasi", fd: int, result_ptr: int) -> None:
        desc = self.table.get(fd)
        if not desc.preopened:
            raise WasiError(EBADF)
        name = self.preopens[desc.preopen].guest.encode()
        self.mem.write(result_ptr, abi.pack_prestat_dir(len(name)), 4)

    def fd_prestat_dir_name(self: "Wasi", fd: int, path: int, path_len: int) -> None:
        desc = self.table.get(fd)
        if not desc.preopened:
            raise WasiError(ENOTDIR)
        name = self.preopens[desc.preopen].guest.encode()
        if len(name) > path_len:
            raise WasiError(ENAMETOOLONG)
        self.mem.write(path, name)

    def fd_readdir(self: "Wasi", fd: int, buf: int, buf_len: int, cookie: int,
                   result_ptr: int) -> None:
        self.mem.check(buf, buf_len)
        self.mem.check(result_ptr, 4, 4)
        desc = self.table.directory(fd)
        desc.require(abi.RIGHT_FD_READDIR)
        if cookie == 0 or desc.listing is None:
            desc.listing = _listing(desc.host_fd)
        out = bytearray()
        listing = desc.listing
        index = cookie
        while index < len(listing) and len(out) < buf_len:
            name, d_type, ino = listing[index]
            index += 1
            out += abi.pack_dirent(index, ino, len(name), d_type)
            out += name
        del out[buf_len:]
        self.mem.write(buf, bytes(out))
        self.mem.set_u32(result_ptr, len(out))

    def fd_renumber(self: "Wasi", fd: int, to: int) -> None:
        self.table.renumber(fd, to)

    def fd_seek(self: "Wasi", fd: int, offset: int, whence: int, result_ptr: int) -> None:
        if whence > abi.WHENCE_END:
            raise WasiError(EINVAL)
        self.mem.check(result_ptr, 8, 8)
        desc = self.table.file(fd, ESPIPE)
        if offset >= 1 << 63:
            offset -= 1 << 64  # filedelta is s64
        if whence == abi.WHENCE_CUR and offset == 0:
            if not desc.rights_base & (abi.RIGHT_FD_TELL | abi.RIGHT_FD_SEEK):
                raise WasiError(ENOTCAPABLE)
        else:
            desc.require(abi.RIGHT_FD_SEEK)
        if whence == abi.WHENCE_SET:
            base = 0
        elif whence == abi.WHENCE_CUR:
            base = desc.offset
        else:
            base = os.fstat(desc.host_fd).st_size
        new = base + offset
        if new < 0:
            raise WasiError(EINVAL)
        if new > MAX_OFFSET:
            raise WasiError(EOVERFLOW)
        desc.offset = new
        self.mem.set_u64(result_ptr, new)

    def fd_tell(self: "Wasi", fd: int, result_ptr: int) -> None:
        desc = self.table.file(fd, ESPIPE)
        if not desc.rights_base & (abi.RIGHT_FD_TELL | abi.RIGHT_FD_SEEK):
            raise WasiError(ENOTCAPABLE)
        self.mem.set_u64(result_ptr, desc.offset)


def _listing(host_fd: int) -> list[tuple[bytes, int, int]]:
    """``(name, filetype, inode)`` of a directory's entries: ``.`` and ``..`` first, then the
    entries sorted by name, so cookies (indices) mean the same on every call and run."""
    own = os.fstat(host_fd).st_ino
    entries = []
    with os.scandir(host_fd) as it:
        for entry in it:
            try:
                if entry.is_symlink():
                    d_type = abi.FILETYPE_SYMBOLIC_LINK
                elif entry.is_dir(follow_symlinks=False):
                    d_type = abi.FILETYPE_DIRECTORY
                elif entry.is_file(follow_symlinks=False):
                    d_type = abi.FILETYPE_REGULAR_FILE
                else:
                    d_type = filetype_of(entry.stat(follow_symlinks=False).st_mode)
                ino = entry.inode()
            except OSError:
                continue  # removed while listing
            entries.append((os.fsencode(entry.name), d_type, ino))
    entries.sort()
    return [(b".", abi.FILETYPE_DIRECTORY, own), (b"..", abi.FILETYPE_DIRECTORY, own)] + entries
