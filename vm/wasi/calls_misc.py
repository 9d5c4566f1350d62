"""args, environ, clocks, random, proc, sched and sock calls.

Each method takes the wasm arguments (unsigned ints) and returns an errno (or None for success);
``vm.wasi.host`` wraps them into host functions. Results are written through ``self.mem``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errno import EINVAL, ENOTSOCK, ENOTSUP

if TYPE_CHECKING:
    from .wasi import Wasi


class ProcExit(Exception):
    """Raised by ``proc_exit``; it propagates out of the wasm call that made it.

    ``Wasi.run`` turns it into the exit code. Any embedder invoking exports itself must catch it.
    """

    def __init__(self, code: int) -> None:
        super().__init__(f"proc_exit({code})")
        self.code = code


def _write_strings(self: "Wasi", items: list[bytes], ptrs: int, buf: int) -> None:
    """Write NUL-terminated ``items`` at ``buf`` and their addresses at ``ptrs`` (argv/environ).

    Every address is checked before anything is written, so a bad pointer traps cleanly."""
    mem = self.mem
    total = sum(len(item) + 1 for item in items)
    mem.check(ptrs, 4 * len(items), 4)
    mem.check(buf, total)
    pos = buf
    for i, item in enumerate(items):
        mem.set_u32(ptrs + 4 * i, pos)
        mem.write(pos, item + b"\0")
        pos += len(item) + 1


class MiscCalls:
    """The calls that touch no descriptor (except sock_*, which only checks it)."""

    def args_get(self: "Wasi", argv: int, argv_buf: int) -> None:
        _write_strings(self, self.arg_bytes, argv, argv_buf)

    def args_sizes_get(self: "Wasi", count_ptr: int, size_ptr: int) -> None:
        self.mem.set_u32(count_ptr, len(self.arg_bytes))
        self.mem.set_u32(size_ptr, sum(len(a) + 1 for a in self.arg_bytes))

    def environ_get(self: "Wasi", environ: int, environ_buf: int) -> None:
        _write_strings(self, self.env_bytes, environ, environ_buf)

    def environ_sizes_get(self: "Wasi", count_ptr: int, size_ptr: int) -> None:
        self.mem.set_u32(count_ptr, len(self.env_bytes))
        self.mem.set_u32(size_ptr, sum(len(e) + 1 for e in self.env_bytes))

    def clock_res_get(self: "Wasi", clock_id: int, result_ptr: int) -> None:
        self.mem.set_u64(result_ptr, self.clocks.resolution(clock_id))

    def clock_time_get(self: "Wasi", clock_id: int, precision: int, result_ptr: int) -> None:
        self.mem.set_u64(result_ptr, self.clocks.now(clock_id))

    def random_get(self: "Wasi", buf: int, length: int) -> None:
        self.mem.check(buf, length)
        self.mem.write(buf, self.random.read(length))

    def proc_exit(self: "Wasi", code: int) -> None:
        raise ProcExit(code)

    def proc_raise(self: "Wasi", sig: int) -> int:
        # There are no signals in a wasm instance; wasmtime answers ENOTSUP too.
        return ENOTSUP

    def sched_yield(self: "Wasi") -> None:
        return None

    # There are no sockets: the guest cannot create one in preview1 and none is preopened, so
    # every valid descriptor is "not a socket" and any other number is EBADF.
    def sock_accept(self: "Wasi", fd: int, flags: int, result_ptr: int) -> int:
        self.table.get(fd)
        return ENOTSOCK

    def sock_recv(self: "Wasi", fd: int, ri_data: int, ri_data_len: int, ri_flags: int,
                  size_ptr: int, flags_ptr: int) -> int:
        self.table.get(fd)
        return ENOTSOCK

    def sock_send(self: "Wasi", fd: int, si_data: int, si_data_len: int, si_flags: int,
                  size_ptr: int) -> int:
        self.table.get(fd)
        return ENOTSOCK

    def sock_shutdown(self: "Wasi", fd: int, how: int) -> int:
        if how & ~0b11:
            return EINVAL
        self.table.get(fd)
        return ENOTSOCK
