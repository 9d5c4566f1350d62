"""Sandboxed path resolution: guest paths → (host directory fd, final name), never escaping.

Every guest path is resolved component by component from an open directory fd. Each directory
step is ``os.open(name, O_DIRECTORY | O_NOFOLLOW, dir_fd=current)``, so the kernel never follows
a symlink or a ``..`` for us: ``..`` pops our own stack of opened directories (popping past the
starting directory is an escape), and a symlink is read with ``readlink`` and its target spliced
into the remaining components (an absolute target is an escape; more than ``MAX_SYMLINKS``
expansions is ELOOP). The final component is returned as a name to be used with ``dir_fd`` and
no-follow flags, so a component swapped for a symlink between our check and the operation makes
the operation fail (ELOOP) instead of following it. No string joining or ``realpath`` is involved,
which is what keeps ``..``, absolute paths, symlinks out and symlink loops inside the sandbox.
"""

from __future__ import annotations

import errno as host_errno
import os
import stat
from collections import deque

from .errno import EILSEQ, ELOOP, ENOENT, ESCAPE, WasiError

MAX_SYMLINKS = 40
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(path: str) -> tuple[list[str], bool]:
    """Components of a relative path without empty and ``.`` parts, and whether it must name a
    directory (it ends in ``/`` or ``/.``). ``..`` components are kept: they are resolved
    physically, after any symlink before them."""
    parts = path.split("/")
    must_be_dir = False
    while parts and parts[-1] in ("", "."):
        parts.pop()
        must_be_dir = True
    return [p for p in parts if p not in ("", ".")], must_be_dir


def join_rel(base: str, name: str) -> str:
    """Join a canonical preopen-relative path and one component ('' is the preopen root)."""
    if name in ("", "."):
        return base
    return f"{base}/{name}" if base else name


class Resolved:
    """The outcome of resolving a path: operate on ``name`` relative to ``dirfd``.

    ``name`` is ``"."`` when the path names the directory ``dirfd`` itself (``"."``, ``"a/.."``).
    ``rel`` is the canonical path of the result relative to the preopen root, with symlinks
    expanded; ``parent_rel`` that of ``dirfd``.
    """

    __slots__ = ("dirfd", "name", "parent_rel", "must_be_dir")

    def __init__(self, dirfd: int, name: str, parent_rel: str, must_be_dir: bool) -> None:
        self.dirfd = dirfd
        self.name = name
        self.parent_rel = parent_rel
        self.must_be_dir = must_be_dir

    @property
    def rel(self) -> str:
        return join_rel(self.parent_rel, self.name)


def _readlink(dirfd: int, name: str) -> str | None:
    """The target of ``name`` if it is a symlink, else None (missing names are not symlinks)."""
    try:
        return os.readlink(name, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (host_errno.EINVAL, host_errno.ENOENT, host_errno.ENOTDIR):
            return None
        raise


class Walk:
    """Context manager resolving ``path`` from ``(base_fd, base_rel)``; yields a ``Resolved``
    and closes every directory it opened on exit (``base_fd`` belongs to the caller).

    ``follow`` makes a symlink in the final position be followed (``lookupflags.symlink_follow``);
    symlinks in directory positions are always followed, within the sandbox.
    """

    def __init__(self, base_fd: int, base_rel: str, path: str, follow: bool) -> None:
        self.base_fd = base_fd
        self.base_rel = base_rel
        self.path = path
        self.follow = follow
        self.opened: list[int] = []

    def __enter__(self) -> Resolved:
        try:
            return self._resolve()
        except BaseException:
            self._close()
            raise

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        while self.opened:
            os.close(self.opened.pop())

    def _resolve(self) -> Resolved:
        path = self.path
        if not path:
            raise WasiError(ENOENT)
        if "\0" in path:
            raise WasiError(EILSEQ)
        if path.startswith("/"):
            raise WasiError(ESCAPE)
        parts_list, must_be_dir = split_path(path)
        parts = deque(parts_list)
        names: list[str] = []  # names of the directories in self.opened, from the base
        links = 0
        while True:
            top = self.opened[-1] if self.opened else self.base_fd
            if not parts:
                return Resolved(top, ".", self._rel(names), True)
            if len(parts) == 1 and parts[0] != "..":
                name = parts[0]
                if self.follow or must_be_dir:
                    target = _readlink(top, name)
                    if target is not None:
                        links = self._count(links)
                        parts, trailing = self._splice(target, deque())
                        must_be_dir = must_be_dir or trailing
                        continue
                return Resolved(top, name, self._rel(names), must_be_dir)
            comp = parts.popleft()
            if comp == "..":
                if not self.opened:
                    raise WasiError(ESCAPE)
                os.close(self.opened.pop())
                names.pop()
                continue
            try:
                fd = os.open(comp, DIR_FLAGS, dir_fd=top)
            except OSError as exc:
                if exc.errno not in (host_errno.ELOOP, host_errno.ENOTDIR):
                    raise
                target = _readlink(top, comp)
                if target is None:
                    raise
                links = self._count(links)
                parts, _ = self._splice(target, parts)
                continue
            self.opened.append(fd)
            names.append(comp)

    @staticmethod
    def _count(links: int) -> int:
        if links >= MAX_SYMLINKS:
            raise WasiError(ELOOP)
        return links + 1

    @staticmethod
    def _splice(target: str, rest: deque[str]) -> tuple[deque[str], bool]:
        """Replace a symlink by its target's components in front of the remaining ones."""
        if not target:
            raise WasiError(ENOENT)
        if target.startswith("/"):
            raise WasiError(ESCAPE)
        parts, trailing = split_path(target)
        # A trailing '/' on the target only matters when nothing follows it.
        combined = deque(parts)
        combined.extend(rest)
        return combined, trailing and not rest

    def _rel(self, names: list[str]) -> str:
        rel = self.base_rel
        for name in names:
            rel = join_rel(rel, name)
        return rel


def open_beneath(root_fd: int, rel: str, flags: int, mode: int = 0o666) -> int:
    """Open the canonical preopen-relative path ``rel`` without following any symlink.

    Used to reopen descriptors when a state is restored: the recorded paths are already
    canonical, so any symlink met on the way means the tree changed and the open fails (ELOOP).
    """
    parts = [p for p in rel.split("/") if p] if rel else []
    if any(p in (".", "..") for p in parts):
        raise WasiError(ESCAPE)
    opened: list[int] = []
    try:
        top = root_fd
        for comp in parts[:-1]:
            top = os.open(comp, DIR_FLAGS, dir_fd=top)
            opened.append(top)
        name = parts[-1] if parts else "."
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=top)
    finally:
        for fd in opened:
            os.close(fd)


def stat_beneath(root_fd: int, rel: str) -> os.stat_result | None:
    """``lstat`` of a canonical preopen-relative path, or None when it cannot be reached."""
    parts = [p for p in rel.split("/") if p] if rel else []
    if any(p in (".", "..") for p in parts):
        return None
    opened: list[int] = []
    try:
        top = root_fd
        for comp in parts[:-1]:
            top = os.open(comp, DIR_FLAGS, dir_fd=top)
            opened.append(top)
        name = parts[-1] if parts else "."
        return os.stat(name, dir_fd=top, follow_symlinks=False)
    except OSError:
        return None
    finally:
        for fd in opened:
            os.close(fd)


def find_inode(root_fd: int, dev: int, ino: int, limit: int = 100_000) -> str | None:
    """The preopen-relative path of the file ``(dev, ino)``, searched breadth first without
    following symlinks; None if absent or not found within ``limit`` entries.

    Restores use it when a file a descriptor had open was renamed after the checkpoint.
    """
    queue: deque[str] = deque([""])
    seen = 0
    while queue:
        rel = queue.popleft()
        try:
            fd = open_beneath(root_fd, rel, os.O_RDONLY | os.O_DIRECTORY)
        except (OSError, WasiError):
            continue
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    seen += 1
                    if seen > limit:
                        return None
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    child = join_rel(rel, entry.name)
                    if st.st_ino == ino and st.st_dev == dev:
                        return child
                    if stat.S_ISDIR(st.st_mode):
                        queue.append(child)
        finally:
            os.close(fd)
    return None
