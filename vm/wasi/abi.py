"""The preview1 ABI: flag bits, enums and struct layouts from ``typenames.witx``.

Layouts are the C layouts the witx implies (natural alignment, little endian); each packer is
the only place that knows its struct's offsets. Sizes and alignments are exported so that the
memory helpers can check guest pointers before touching them.
"""

from __future__ import annotations

import struct

# --- clockid (u32) -------------------------------------------------------------------------
CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
CLOCK_PROCESS_CPUTIME = 2
CLOCK_THREAD_CPUTIME = 3

# --- rights (u64 flags) --------------------------------------------------------------------
RIGHT_FD_DATASYNC = 1 << 0
RIGHT_FD_READ = 1 << 1
RIGHT_FD_SEEK = 1 << 2
RIGHT_FD_FDSTAT_SET_FLAGS = 1 << 3
RIGHT_FD_SYNC = 1 << 4
RIGHT_FD_TELL = 1 << 5
RIGHT_FD_WRITE = 1 << 6
RIGHT_FD_ADVISE = 1 << 7
RIGHT_FD_ALLOCATE = 1 << 8
RIGHT_PATH_CREATE_DIRECTORY = 1 << 9
RIGHT_PATH_CREATE_FILE = 1 << 10
RIGHT_PATH_LINK_SOURCE = 1 << 11
RIGHT_PATH_LINK_TARGET = 1 << 12
RIGHT_PATH_OPEN = 1 << 13
RIGHT_FD_READDIR = 1 << 14
RIGHT_PATH_READLINK = 1 << 15
RIGHT_PATH_RENAME_SOURCE = 1 << 16
RIGHT_PATH_RENAME_TARGET = 1 << 17
RIGHT_PATH_FILESTAT_GET = 1 << 18
RIGHT_PATH_FILESTAT_SET_SIZE = 1 << 19
RIGHT_PATH_FILESTAT_SET_TIMES = 1 << 20
RIGHT_FD_FILESTAT_GET = 1 << 21
RIGHT_FD_FILESTAT_SET_SIZE = 1 << 22
RIGHT_FD_FILESTAT_SET_TIMES = 1 << 23
RIGHT_PATH_SYMLINK = 1 << 24
RIGHT_PATH_REMOVE_DIRECTORY = 1 << 25
RIGHT_PATH_UNLINK_FILE = 1 << 26
RIGHT_POLL_FD_READWRITE = 1 << 27
RIGHT_SOCK_SHUTDOWN = 1 << 28
RIGHT_SOCK_ACCEPT = 1 << 29
RIGHTS_ALL = (1 << 30) - 1

# Rights that mean something on a regular file, on a directory, and on the stdio streams. A
# descriptor never holds rights outside its kind's set, so fdstat reports what can be done.
RIGHTS_FILE = (RIGHT_FD_DATASYNC | RIGHT_FD_READ | RIGHT_FD_SEEK | RIGHT_FD_FDSTAT_SET_FLAGS
               | RIGHT_FD_SYNC | RIGHT_FD_TELL | RIGHT_FD_WRITE | RIGHT_FD_ADVISE
               | RIGHT_FD_ALLOCATE | RIGHT_FD_FILESTAT_GET | RIGHT_FD_FILESTAT_SET_SIZE
               | RIGHT_FD_FILESTAT_SET_TIMES | RIGHT_POLL_FD_READWRITE)
RIGHTS_DIR = (RIGHT_FD_FDSTAT_SET_FLAGS | RIGHT_FD_SYNC | RIGHT_FD_DATASYNC
              | RIGHT_PATH_CREATE_DIRECTORY | RIGHT_PATH_CREATE_FILE | RIGHT_PATH_LINK_SOURCE
              | RIGHT_PATH_LINK_TARGET | RIGHT_PATH_OPEN | RIGHT_FD_READDIR
              | RIGHT_PATH_READLINK | RIGHT_PATH_RENAME_SOURCE | RIGHT_PATH_RENAME_TARGET
              | RIGHT_PATH_FILESTAT_GET | RIGHT_PATH_FILESTAT_SET_SIZE
              | RIGHT_PATH_FILESTAT_SET_TIMES | RIGHT_FD_FILESTAT_GET
              | RIGHT_FD_FILESTAT_SET_TIMES | RIGHT_PATH_SYMLINK | RIGHT_PATH_REMOVE_DIRECTORY
              | RIGHT_PATH_UNLINK_FILE)
RIGHTS_STDIN = RIGHT_FD_READ | RIGHT_FD_FILESTAT_GET | RIGHT_POLL_FD_READWRITE | \
    RIGHT_FD_FDSTAT_SET_FLAGS
RIGHTS_STDOUT = RIGHT_FD_WRITE | RIGHT_FD_FILESTAT_GET | RIGHT_POLL_FD_READWRITE | \
    RIGHT_FD_FDSTAT_SET_FLAGS | RIGHT_FD_SYNC | RIGHT_FD_DATASYNC

# --- whence (u8) ---------------------------------------------------------------------------
WHENCE_SET = 0
WHENCE_CUR = 1
WHENCE_END = 2

# --- filetype (u8) -------------------------------------------------------------------------
FILETYPE_UNKNOWN = 0
FILETYPE_BLOCK_DEVICE = 1
FILETYPE_CHARACTER_DEVICE = 2
FILETYPE_DIRECTORY = 3
FILETYPE_REGULAR_FILE = 4
FILETYPE_SOCKET_DGRAM = 5
FILETYPE_SOCKET_STREAM = 6
FILETYPE_SYMBOLIC_LINK = 7

# --- advice (u8) ---------------------------------------------------------------------------
ADVICE_MAX = 5  # normal, sequential, random, willneed, dontneed, noreuse

# --- fdflags (u16) -------------------------------------------------------------------------
FDFLAG_APPEND = 1 << 0
FDFLAG_DSYNC = 1 << 1
FDFLAG_NONBLOCK = 1 << 2
FDFLAG_RSYNC = 1 << 3
FDFLAG_SYNC = 1 << 4
FDFLAGS_ALL = (1 << 5) - 1

# --- fstflags (u16) ------------------------------------------------------------------------
FST_ATIM = 1 << 0
FST_ATIM_NOW = 1 << 1
FST_MTIM = 1 << 2
FST_MTIM_NOW = 1 << 3
FST_ALL = (1 << 4) - 1

# --- lookupflags (u32) ---------------------------------------------------------------------
LOOKUP_SYMLINK_FOLLOW = 1 << 0

# --- oflags (u16) --------------------------------------------------------------------------
O_CREAT = 1 << 0
O_DIRECTORY = 1 << 1
O_EXCL = 1 << 2
O_TRUNC = 1 << 3
OFLAGS_ALL = (1 << 4) - 1

# --- eventtype (u8), eventrwflags (u16), subclockflags (u16) -------------------------------
EVENTTYPE_CLOCK = 0
EVENTTYPE_FD_READ = 1
EVENTTYPE_FD_WRITE = 2
EVENT_FD_READWRITE_HANGUP = 1 << 0
SUBSCRIPTION_CLOCK_ABSTIME = 1 << 0

# --- riflags, roflags, sdflags -------------------------------------------------------------
RIFLAGS_ALL = 0b11  # recv_peek, recv_waitall
SDFLAGS_ALL = 0b11  # rd, wr

# --- preopentype (u8) ----------------------------------------------------------------------
PREOPENTYPE_DIR = 0

# --- struct layouts ------------------------------------------------------------------------
# (size, alignment) of the structs guest pointers point at.
IOVEC = (8, 4)  # buf: u32 @0, buf_len: u32 @4
FDSTAT = (24, 8)  # filetype u8 @0, flags u16 @2, rights_base u64 @8, rights_inheriting u64 @16
# filestat: dev @0, ino @8, filetype u8 @16, nlink @24, size @32, atim @40, mtim @48, ctim @56
FILESTAT = (64, 8)
PRESTAT = (8, 4)  # tag u8 @0, pr_name_len u32 @4
# dirent: d_next u64 @0, d_ino u64 @8, d_namlen u32 @16, d_type u8 @20; unaligned in buffers
DIRENT_SIZE = 24
SUBSCRIPTION = (48, 8)  # userdata u64 @0, tag u8 @8, contents @16
EVENT = (32, 8)  # userdata u64 @0, error u16 @8, type u8 @10, nbytes u64 @16, flags u16 @24

_FDSTAT = struct.Struct("<BxHxxxxQQ")
_FILESTAT = struct.Struct("<QQBxxxxxxxQQQQQ")
_PRESTAT = struct.Struct("<BxxxI")
_DIRENT = struct.Struct("<QQIBxxx")
_EVENT = struct.Struct("<QHBxxxxxQHxxxxxx")
_SUB_HEAD = struct.Struct("<QB")
_SUB_CLOCK = struct.Struct("<IxxxxQQH")  # id @16, timeout @24, precision @32, flags @40
_SUB_FD = struct.Struct("<I")  # file_descriptor @16

assert _FDSTAT.size == FDSTAT[0] and _FILESTAT.size == FILESTAT[0]
assert _PRESTAT.size == PRESTAT[0] and _DIRENT.size == DIRENT_SIZE and _EVENT.size == EVENT[0]


def pack_fdstat(filetype: int, flags: int, rights_base: int, rights_inheriting: int) -> bytes:
    return _FDSTAT.pack(filetype, flags, rights_base, rights_inheriting)


def pack_filestat(dev: int, ino: int, filetype: int, nlink: int, size: int, atim: int,
                  mtim: int, ctim: int) -> bytes:
    m = 0xFFFFFFFFFFFFFFFF
    return _FILESTAT.pack(dev & m, ino & m, filetype, nlink & m, size & m, atim & m, mtim & m,
                          ctim & m)


def pack_prestat_dir(name_len: int) -> bytes:
    return _PRESTAT.pack(PREOPENTYPE_DIR, name_len)


def pack_dirent(d_next: int, d_ino: int, namlen: int, d_type: int) -> bytes:
    return _DIRENT.pack(d_next, d_ino & 0xFFFFFFFFFFFFFFFF, namlen, d_type)


def pack_event(userdata: int, error: int, type_: int, nbytes: int = 0, flags: int = 0) -> bytes:
    return _EVENT.pack(userdata, error, type_, nbytes, flags)


def unpack_subscription(raw: bytes) -> tuple[int, int, tuple[int, ...]]:
    """``(userdata, tag, fields)``: for a clock, ``(id, timeout, precision, flags)``; for fd
    events, ``(fd,)``; for an unknown tag, ``()``."""
    userdata, tag = _SUB_HEAD.unpack_from(raw, 0)
    if tag == EVENTTYPE_CLOCK:
        return userdata, tag, _SUB_CLOCK.unpack_from(raw, 16)
    if tag in (EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE):
        return userdata, tag, _SUB_FD.unpack_from(raw, 16)
    return userdata, tag, ()
