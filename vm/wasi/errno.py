"""WASI preview1 error numbers (``errno`` in the witx) and the mapping from host errors.

The numbers are the witx enum's positions, which is what crosses the ABI; they differ from the
host's ``errno`` values, so every ``OSError`` a system call raises goes through
:func:`from_oserror` before the guest sees it.
"""

from __future__ import annotations

import errno as _host

SUCCESS = 0
E2BIG = 1
EACCES = 2
EADDRINUSE = 3
EADDRNOTAVAIL = 4
EAFNOSUPPORT = 5
EAGAIN = 6
EALREADY = 7
EBADF = 8
EBADMSG = 9
EBUSY = 10
ECANCELED = 11
ECHILD = 12
ECONNABORTED = 13
ECONNREFUSED = 14
ECONNRESET = 15
EDEADLK = 16
EDESTADDRREQ = 17
EDOM = 18
EDQUOT = 19
EEXIST = 20
EFAULT = 21
EFBIG = 22
EHOSTUNREACH = 23
EIDRM = 24
EILSEQ = 25
EINPROGRESS = 26
EINTR = 27
EINVAL = 28
EIO = 29
EISCONN = 30
EISDIR = 31
ELOOP = 32
EMFILE = 33
EMLINK = 34
EMSGSIZE = 35
EMULTIHOP = 36
ENAMETOOLONG = 37
ENETDOWN = 38
ENETRESET = 39
ENETUNREACH = 40
ENFILE = 41
ENOBUFS = 42
ENODEV = 43
ENOENT = 44
ENOEXEC = 45
ENOLCK = 46
ENOLINK = 47
ENOMEM = 48
ENOMSG = 49
ENOPROTOOPT = 50
ENOSPC = 51
ENOSYS = 52
ENOTCONN = 53
ENOTDIR = 54
ENOTEMPTY = 55
ENOTRECOVERABLE = 56
ENOTSOCK = 57
ENOTSUP = 58
ENOTTY = 59
ENXIO = 60
EOVERFLOW = 61
EOWNERDEAD = 62
EPERM = 63
EPIPE = 64
EPROTO = 65
EPROTONOSUPPORT = 66
EPROTOTYPE = 67
ERANGE = 68
EROFS = 69
ESPIPE = 70
ESRCH = 71
ESTALE = 72
ETIMEDOUT = 73
ETXTBSY = 74
EXDEV = 75
ENOTCAPABLE = 76

# A path that would leave the sandbox (``..`` above the directory, an absolute path, a symlink
# pointing out). wasmtime answers EPERM here; ENOTCAPABLE is kept for missing rights.
ESCAPE = EPERM

NAMES: dict[int, str] = {v: k for k, v in globals().items()
                         if k.startswith("E") and isinstance(v, int) and k != "ESCAPE"}
NAMES[SUCCESS] = "SUCCESS"


def _host_table() -> dict[int, int]:
    """Host errno → WASI errno for every name both sides know (the host table is per platform)."""
    table: dict[int, int] = {}
    for wasi, name in NAMES.items():
        host = getattr(_host, name, None)
        if isinstance(host, int):
            table[host] = wasi
    # Aliases and host-only names with a natural WASI equivalent.
    for name, wasi in (("EWOULDBLOCK", EAGAIN), ("EOPNOTSUPP", ENOTSUP), ("ENOTBLK", ENOTDIR),
                       ("EDEADLOCK", EDEADLK), ("ESHUTDOWN", EPIPE)):
        host = getattr(_host, name, None)
        if isinstance(host, int):
            table.setdefault(host, wasi)
    return table


_FROM_HOST = _host_table()


class WasiError(Exception):
    """Raised inside the implementation to return ``errno`` to the guest; never leaves a host
    function (the import wrapper turns it into the function's result)."""

    def __init__(self, errno: int) -> None:
        super().__init__(NAMES.get(errno, str(errno)))
        self.errno = errno


def from_host(host_errno: int | None) -> int:
    """The WASI errno for a host errno number; EIO when the host's error has no counterpart."""
    if host_errno is None:
        return EIO
    return _FROM_HOST.get(host_errno, EIO)


def from_oserror(exc: OSError) -> int:
    """The WASI errno for an ``OSError`` raised by a host system call."""
    return from_host(exc.errno)


def name(errno: int) -> str:
    """The witx name of ``errno`` in upper case (``ENOENT``), for messages and docs."""
    return NAMES.get(errno, f"errno {errno}")
