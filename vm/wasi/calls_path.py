"""The ``path_*`` calls: every path goes through ``paths.Walk`` from a directory descriptor.

After a restore, the few operations that are not idempotent (create exclusively, remove, rename,
link) tolerate the error that re-executing them would produce if the crashed run had already
done them; ``vm.wasi.durable.Durability.replaying`` decides when that applies.
"""

from __future__ import annotations

import errno as host_errno
import os
import stat as stat_mod
from typing import TYPE_CHECKING

from . import abi
from .errno import EEXIST, EILSEQ, EINVAL, EISDIR, ENOTDIR, EPERM, ESCAPE, WasiError
from .fs import Descriptor, filestat_bytes, filetype_of, new_times
from .paths import Resolved, Walk

if TYPE_CHECKING:
    from .wasi import Wasi

_SYNC_FLAGS = ((abi.FDFLAG_DSYNC, getattr(os, "O_DSYNC", 0)),
               (abi.FDFLAG_RSYNC, getattr(os, "O_RSYNC", 0)),
               (abi.FDFLAG_SYNC, getattr(os, "O_SYNC", 0)))
_OPEN_RETRIES = 3


def _lstat(r: Resolved) -> os.stat_result | None:
    try:
        return os.stat(r.name, dir_fd=r.dirfd, follow_symlinks=False)
    except OSError:
        return None


def _check_trailing_slash(r: Resolved) -> None:
    """A path ending in '/' must name a directory (ENOTDIR otherwise, as POSIX)."""
    if r.must_be_dir and r.name != ".":
        st = _lstat(r)
        if st is not None and not stat_mod.S_ISDIR(st.st_mode):
            raise WasiError(ENOTDIR)


def _host_open_flags(base: int, oflags: int, fdflags: int) -> tuple[int, bool, bool]:
    """Host ``open`` flags and the (readable, writable) access that ``rights_base`` asks for."""
    readable = bool(base & (abi.RIGHT_FD_READ | abi.RIGHT_FD_READDIR))
    writable = bool(base & abi.RIGHT_FD_WRITE)
    if readable and writable:
        flags = os.O_RDWR
    elif writable:
        flags = os.O_WRONLY
    else:
        flags = os.O_RDONLY
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    if oflags & abi.O_CREAT:
        flags |= os.O_CREAT
    if oflags & abi.O_EXCL:
        flags |= os.O_EXCL
    if oflags & abi.O_TRUNC:
        flags |= os.O_TRUNC
    if oflags & abi.O_DIRECTORY:
        flags |= os.O_DIRECTORY
    for wasi_flag, host_flag in _SYNC_FLAGS:
        if fdflags & wasi_flag:
            flags |= host_flag
    return flags, readable, writable


class PathCalls:
    """Calls that name a file by a path relative to a directory descriptor."""

    def _walk(self: "Wasi", desc: Descriptor, path: str, follow: bool) -> Walk:
        return Walk(desc.host_fd, desc.rel, path, follow)

    def path_create_directory(self: "Wasi", fd: int, path: int, path_len: int) -> None:
        p = self.mem.string(path, path_len)
        d = self.table.directory(fd)
        d.require(abi.RIGHT_PATH_CREATE_DIRECTORY)
        with self._walk(d, p, False) as r:
            key = (d.preopen, r.rel)
            if r.name == ".":
                raise WasiError(EEXIST)
            try:
                os.mkdir(r.name, 0o777, dir_fd=r.dirfd)
            except FileExistsError:
                st = _lstat(r)
                if not (st and stat_mod.S_ISDIR(st.st_mode)
                        and self.durable.replaying(key, st.st_ctime_ns)):
                    raise
            self.durable.touch(key)

    def path_filestat_get(self: "Wasi", fd: int, flags: int, path: int, path_len: int,
                          result_ptr: int) -> None:
        self.mem.check(result_ptr, abi.FILESTAT[0], 8)
        p = self.mem.string(path, path_len)
        d = self.table.directory(fd)
        d.require(abi.RIGHT_PATH_FILESTAT_GET)
        with self._walk(d, p, bool(flags & abi.LOOKUP_SYMLINK_FOLLOW)) as r:
            st = os.stat(r.name, dir_fd=r.dirfd, follow_symlinks=False)
            if r.must_be_dir and not stat_mod.S_ISDIR(st.st_mode):
                raise WasiError(ENOTDIR)
        self.mem.write(result_ptr, filestat_bytes(st), 8)

    def path_filestat_set_times(self: "Wasi", fd: int, flags: int, path: int, path_len: int,
                                atim: int, mtim: int, fst_flags: int) -> None:
        p = self.mem.string(path, path_len)
        d = self.table.directory(fd)
        d.require(abi.RIGHT_PATH_FILESTAT_SET_TIMES)
        with self._walk(d, p, bool(flags & abi.LOOKUP_SYMLINK_FOLLOW)) as r:
            st = os.stat(r.name, dir_fd=r.dirfd, follow_symlinks=False)
            times = new_times(st, atim, mtim, fst_flags)
            os.utime(r.name, ns=times, dir_fd=r.dirfd, follow_symlinks=False)

    def path_link(self: "Wasi", old_fd: int, old_flags: int, old_path: int, old_len: int,
                  new_fd: int, new_path: int, new_len: int) -> None:
        src_path = self.mem.string(old_path, old_len)
        dst_path = self.mem.string(new_path, new_len)
        src_dir = self.table.directory(old_fd)
        dst_dir = self.table.directory(new_fd)
        src_dir.require(abi.RIGHT_PATH_LINK_SOURCE)
        dst_dir.require(abi.RIGHT_PATH_LINK_TARGET)
        follow = bool(old_flags & abi.LOOKUP_SYMLINK_FOLLOW)
        with self._walk(src_dir, src_path, follow) as a, \
                self._walk(dst_dir, dst_path, False) as b:
            if a.name == ".":
                raise WasiError(EPERM)  # hard links to directories
            key = (dst_dir.preopen, b.rel)
            try:
                os.link(a.name, b.name, src_dir_fd=a.dirfd, dst_dir_fd=b.dirfd,
                        follow_symlinks=False)
            except FileExistsError:
                sa, sb = _lstat(a), _lstat(b)
                same = sa and sb and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
                if not (same and self.durable.replaying(key, sb.st_ctime_ns)):
                    raise
            self.durable.touch(key)

    def path_open(self: "Wasi", fd: int, dirflags: int, path: int, path_len: int, oflags: int,
                  rights_base: int, rights_inheriting: int, fdflags: int,
                  result_ptr: int) -> None:
        if oflags & ~abi.OFLAGS_ALL or fdflags & ~abi.FDFLAGS_ALL:
            raise WasiError(EINVAL)
        self.mem.check(result_ptr, 4, 4)
        p = self.mem.string(path, path_len)
        d = self.table.directory(fd)
        d.require(abi.RIGHT_PATH_OPEN)
        if oflags & abi.O_CREAT:
            d.require(abi.RIGHT_PATH_CREATE_FILE)
        if oflags & abi.O_TRUNC:
            d.require(abi.RIGHT_PATH_FILESTAT_SET_SIZE)
        # New descriptors get at most what the directory lets them inherit.
        base = rights_base & d.rights_inheriting
        inheriting = rights_inheriting & d.rights_inheriting
        flags, readable, writable = _host_open_flags(base, oflags, fdflags)
        exclusive = bool(oflags & abi.O_CREAT and oflags & abi.O_EXCL)
        follow = bool(dirflags & abi.LOOKUP_SYMLINK_FOLLOW) and not exclusive
        for attempt in range(_OPEN_RETRIES):
            with self._walk(d, p, follow) as r:
                key = (d.preopen, r.rel)
                host_flags = flags | (os.O_DIRECTORY if r.must_be_dir else 0)
                try:
                    host_fd = os.open(r.name, host_flags, 0o666, dir_fd=r.dirfd)
                except OSError as exc:
                    if exc.errno == host_errno.ELOOP and follow and attempt + 1 < _OPEN_RETRIES:
                        continue  # became a symlink after the walk looked: resolve again
                    host_fd = self._reopen_created(exc, r, key, host_flags, exclusive)
                rel = r.rel
                break
        try:
            st = os.fstat(host_fd)
            if stat_mod.S_ISDIR(st.st_mode):
                desc = Descriptor("dir", base & abi.RIGHTS_DIR, inheriting, host_fd=host_fd,
                                  preopen=d.preopen, rel=rel, guest_path=p, readable=True,
                                  filetype=abi.FILETYPE_DIRECTORY, flags=fdflags)
            else:
                desc = Descriptor("file", base & abi.RIGHTS_FILE, inheriting, host_fd=host_fd,
                                  preopen=d.preopen, rel=rel, guest_path=p, readable=readable,
                                  writable=writable, filetype=filetype_of(st.st_mode),
                                  flags=fdflags)
        except BaseException:
            os.close(host_fd)
            raise
        if writable or oflags & (abi.O_CREAT | abi.O_TRUNC):
            self.durable.touch(key)
        if writable and desc.kind == "file":
            self.durable.note_written(key)
        self.mem.set_u32(result_ptr, self.table.add(desc))

    def _reopen_created(self: "Wasi", exc: OSError, r: Resolved, key: tuple[int, str],
                        host_flags: int, exclusive: bool) -> int:
        """After a restore, an exclusive create that finds a file the crashed run created is
        opened and truncated instead (its contents are about to be written again). A file the
        program had written before the checkpoint is never taken for such a file."""
        if exc.errno == host_errno.EEXIST and exclusive and key not in self.durable.written:
            st = _lstat(r)
            if st and stat_mod.S_ISREG(st.st_mode) and self.durable.replaying(key, st.st_ctime_ns):
                return os.open(r.name, (host_flags & ~(os.O_CREAT | os.O_EXCL)) | os.O_TRUNC,
                               dir_fd=r.dirfd)
        raise exc

    def path_readlink(self: "Wasi", fd: int, path: int, path_len: int, buf: int, buf_len: int,
                      result_ptr: int) -> None:
        self.mem.check(buf, buf_len)
        self.mem.check(result_ptr, 4, 4)
        p = self.mem.string(path, path_len)
        d = self.table.directory(fd)
        d.require(abi.RIGHT_PATH_READLINK)
        with self._walk(d, p, False) as r:
            target = os.fsencode(os.readlink(r.name, dir_fd=r.dirfd))[:buf_len]
        self.mem.write(buf, target)
        self.mem.set_u32(result_ptr, len(target))

    def path_remove_directory(self: "Wasi", fd: int, path: int, path_len: int) -> None:
        p = self.mem.string(path, path_len)
        d = self.table.directory(fd)
        d.require(abi.RIGHT_PATH_REMOVE_DIRECTORY)
        with self._walk(d, p, False) as r:
            key = (d.preopen, r.rel)
            try:
                os.rmdir(r.name, dir_fd=r.dirfd)
            except FileNotFoundError:
                if not self.durable.replaying(key, os.fstat(r.dirfd).st_mtime_ns):
                    raise
            self.durable.removed(key)

    def path_rename(self: "Wasi", fd: int, old_path: int, old_len: int, new_fd: int,
                    new_path: int, new_len: int) -> None:
        src_path = self.mem.string(old_path, old_len)
        dst_path = self.mem.string(new_path, new_len)
        src_dir = self.table.directory(fd)
        dst_dir = self.table.directory(new_fd)
        src_dir.require(abi.RIGHT_PATH_RENAME_SOURCE)
        dst_dir.require(abi.RIGHT_PATH_RENAME_TARGET)
        with self._walk(src_dir, src_path, False) as a, \
                self._walk(dst_dir, dst_path, False) as b:
            src_key, dst_key = (src_dir.preopen, a.rel), (dst_dir.preopen, b.rel)
            if a.must_be_dir or b.must_be_dir:
                _check_trailing_slash(Resolved(a.dirfd, a.name, a.parent_rel, True))
            try:
                os.rename(a.name, b.name, src_dir_fd=a.dirfd, dst_dir_fd=b.dirfd)
            except FileNotFoundError:
                sb = _lstat(b)
                if not (sb and not self.durable.is_touched(src_key)
                        and self.durable.replaying(dst_key, sb.st_ctime_ns)):
                    raise
        self.renamed(src_key, dst_key)

    def path_symlink(self: "Wasi", old_path: int, old_len: int, fd: int, new_path: int,
                     new_len: int) -> None:
        target = self.mem.string(old_path, old_len)
        p = self.mem.string(new_path, new_len)
        d = self.table.directory(fd)
        d.require(abi.RIGHT_PATH_SYMLINK)
        if target.startswith("/"):
            raise WasiError(ESCAPE)  # never followed inside the sandbox; wasmtime refuses too
        if "\0" in target:
            raise WasiError(EILSEQ)
        with self._walk(d, p, False) as r:
            key = (d.preopen, r.rel)
            try:
                os.symlink(target, r.name, dir_fd=r.dirfd)
            except FileExistsError:
                st = _lstat(r)
                if not (st and stat_mod.S_ISLNK(st.st_mode)
                        and os.readlink(r.name, dir_fd=r.dirfd) == target
                        and self.durable.replaying(key, st.st_ctime_ns)):
                    raise
            self.durable.touch(key)

    def path_unlink_file(self: "Wasi", fd: int, path: int, path_len: int) -> None:
        p = self.mem.string(path, path_len)
        d = self.table.directory(fd)
        d.require(abi.RIGHT_PATH_UNLINK_FILE)
        with self._walk(d, p, False) as r:
            key = (d.preopen, r.rel)
            if r.must_be_dir:
                st = _lstat(r)
                if st is not None:
                    raise WasiError(EISDIR if stat_mod.S_ISDIR(st.st_mode) else ENOTDIR)
            try:
                os.unlink(r.name, dir_fd=r.dirfd)
            except FileNotFoundError:
                if not self.durable.replaying(key, os.fstat(r.dirfd).st_mtime_ns):
                    raise
            self.durable.removed(key)
