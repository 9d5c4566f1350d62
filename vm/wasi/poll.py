"""``poll_oneoff``: clock subscriptions (sleeps, timeouts) and fd readiness.

Regular files and the buffered output streams are always ready, as the witx says for regular
files. stdin is ready when it is in memory or at end; a real pipe or terminal is waited on with
``select``. Clock deadlines are computed on the guest's monotonic clock (realtime deadlines are
converted), and the wait uses the Wasi object's ``sleep`` function, which tests replace.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from . import abi
from .errno import EBADF, EINVAL, ENOTCAPABLE, SUCCESS, WasiError
from .fs import STDIO_KINDS

if TYPE_CHECKING:
    from .wasi import Wasi

_NS = 1_000_000_000
# More subscriptions than this in one call are refused (EINVAL): each costs host memory.
MAX_SUBSCRIPTIONS = 1 << 16
# time.sleep cannot take the ~584 years a u64 of nanoseconds can ask for.
MAX_SLEEP_S = float(1 << 31)


class PollCalls:
    """``poll_oneoff`` and its helpers."""

    def poll_oneoff(self: "Wasi", in_ptr: int, out_ptr: int, nsubscriptions: int,
                    result_ptr: int) -> None:
        if nsubscriptions == 0 or nsubscriptions > MAX_SUBSCRIPTIONS:
            raise WasiError(EINVAL)  # zero would block forever; wasmtime refuses it too
        sub_size, align = abi.SUBSCRIPTION
        self.mem.check(in_ptr, sub_size * nsubscriptions, align)
        self.mem.check(out_ptr, abi.EVENT[0] * nsubscriptions, abi.EVENT[1])
        self.mem.check(result_ptr, 4, 4)
        subs = [abi.unpack_subscription(self.mem.read(in_ptr + sub_size * i, sub_size))
                for i in range(nsubscriptions)]
        now = self.clocks.monotonic()
        ready: list[bytes] = []  # fd events (and failed subscriptions), reported at once
        timers: list[tuple[int, int]] = []  # (deadline on the guest monotonic clock, userdata)
        wait_stdin: list[int] = []  # userdata of fd_read subscriptions on a blocking stdin
        for userdata, tag, fields in subs:
            if tag == abi.EVENTTYPE_CLOCK:
                deadline = self._deadline(fields, now)
                if deadline is None:
                    ready.append(abi.pack_event(userdata, EINVAL, tag))
                else:
                    timers.append((deadline, userdata))
            elif tag in (abi.EVENTTYPE_FD_READ, abi.EVENTTYPE_FD_WRITE):
                event = self._fd_event(userdata, tag, fields[0])
                if event is None:
                    wait_stdin.append(userdata)
                else:
                    ready.append(event)
            else:
                ready.append(abi.pack_event(userdata, EINVAL, tag))
        if not ready:
            ready = self._wait(timers, wait_stdin)
        else:
            now = self.clocks.monotonic()
            ready += [abi.pack_event(u, SUCCESS, abi.EVENTTYPE_CLOCK)
                      for deadline, u in timers if deadline <= now]
        for i, event in enumerate(ready):
            self.mem.write(out_ptr + abi.EVENT[0] * i, event, abi.EVENT[1])
        self.mem.set_u32(result_ptr, len(ready))

    def _deadline(self: "Wasi", fields: tuple[int, ...], now: int) -> int | None:
        clock_id, timeout, _precision, flags = fields
        absolute = bool(flags & abi.SUBSCRIPTION_CLOCK_ABSTIME)
        if clock_id == abi.CLOCK_MONOTONIC:
            return timeout if absolute else now + timeout
        if clock_id == abi.CLOCK_REALTIME:
            return now + (timeout - time.time_ns()) if absolute else now + timeout
        return None  # CPU-time clocks cannot be waited on

    def _fd_event(self: "Wasi", userdata: int, tag: int, fd: int) -> bytes | None:
        """The event for an fd subscription if it is ready now; None for a blocking stdin."""
        desc = self.table.fds.get(fd)
        if desc is None or desc.kind == "dir":
            return abi.pack_event(userdata, EBADF, tag)
        if not desc.rights_base & abi.RIGHT_POLL_FD_READWRITE:
            return abi.pack_event(userdata, ENOTCAPABLE, tag)
        reading = tag == abi.EVENTTYPE_FD_READ
        if desc.kind in STDIO_KINDS:
            if reading != (desc.kind == "stdin"):
                return abi.pack_event(userdata, EBADF, tag)
            if not reading:
                return abi.pack_event(userdata, SUCCESS, tag)
            available = self.stdin.available()
            if available is None:
                return None
            flags = 0 if available else abi.EVENT_FD_READWRITE_HANGUP
            return abi.pack_event(userdata, SUCCESS, tag, available, flags)
        if reading:
            nbytes = max(0, os.fstat(desc.host_fd).st_size - desc.offset)
            return abi.pack_event(userdata, SUCCESS, tag, nbytes)
        return abi.pack_event(userdata, SUCCESS, tag)

    def _wait(self: "Wasi", timers: list[tuple[int, int]], wait_stdin: list[int]) -> list[bytes]:
        """Block until the first timer expires or stdin becomes readable."""
        first = min((d for d, _ in timers), default=None)
        now = self.clocks.monotonic()
        timeout = None if first is None else max(0, first - now) / _NS
        if wait_stdin and self.stdin.wait(timeout):
            return [abi.pack_event(u, SUCCESS, abi.EVENTTYPE_FD_READ, 1) for u in wait_stdin]
        if not wait_stdin and timeout:
            self.sleep(min(timeout, MAX_SLEEP_S))
        if first is not None:
            self.clocks.advance_to(first)
        now = self.clocks.monotonic()
        return [abi.pack_event(u, SUCCESS, abi.EVENTTYPE_CLOCK) for d, u in timers if d <= now]
