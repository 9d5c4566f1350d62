"""Clocks and randomness whose state survives a snapshot.

* ``realtime`` is the host's wall clock: it is the one clock that has to agree with the world.
* ``monotonic`` (and the CPU-time clocks) are the host clock plus an offset. A restore sets the
  offset so that the guest clock continues from the value it had at the checkpoint plus the wall
  time that passed since (never negative), and every reading is clamped to the last one: the
  guest never sees it go backwards, in one process or across a resume in another.
* ``random_get`` is a counter-mode SHA-256 stream, ``sha256(seed || block number)``, with the
  seed and the stream position in the state: a resumed program continues the same stream, and a
  re-executed part after a crash sees the same bytes again. The seed comes from ``os.urandom``
  unless the embedder gives one.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from . import abi
from .errno import EINVAL, WasiError

_BLOCK = 32  # bytes of one sha256 block of the random stream


class Clocks:
    """The four preview1 clocks (realtime, monotonic, process and thread CPU time)."""

    def __init__(self) -> None:
        self.mono_offset = 0
        self.mono_last = 0
        self.cpu_offset = 0
        self.cpu_last = 0

    def now(self, clock_id: int) -> int:
        """Nanoseconds on ``clock_id``; EINVAL for an unknown clock."""
        if clock_id == abi.CLOCK_REALTIME:
            return time.time_ns()
        if clock_id == abi.CLOCK_MONOTONIC:
            return self.monotonic()
        if clock_id in (abi.CLOCK_PROCESS_CPUTIME, abi.CLOCK_THREAD_CPUTIME):
            value = max(time.process_time_ns() + self.cpu_offset, self.cpu_last)
            self.cpu_last = value
            return value
        raise WasiError(EINVAL)

    def monotonic(self) -> int:
        value = max(time.monotonic_ns() + self.mono_offset, self.mono_last)
        self.mono_last = value
        return value

    def advance_to(self, deadline: int) -> None:
        """Make the monotonic clock read at least ``deadline`` (after a sleep that ended a bit
        early, or a substituted sleep function that does not wait at all)."""
        lag = deadline - self.monotonic()
        if lag > 0:
            self.mono_offset += lag
            self.mono_last = deadline

    @staticmethod
    def resolution(clock_id: int) -> int:
        names = {abi.CLOCK_REALTIME: "time", abi.CLOCK_MONOTONIC: "monotonic",
                 abi.CLOCK_PROCESS_CPUTIME: "process_time",
                 abi.CLOCK_THREAD_CPUTIME: "process_time"}
        name = names.get(clock_id)
        if name is None:
            raise WasiError(EINVAL)
        return max(1, round(time.get_clock_info(name).resolution * 1e9))

    def state(self) -> dict[str, Any]:
        # The CPU-time clock is saved as the guest last read it, not read now: reading the
        # process CPU time is a system call that adds up the time of every thread, which in a
        # busy many-threaded server costs more than the rest of a small checkpoint. The clock
        # stays monotonic; it just does not count the time between that reading and the
        # checkpoint.
        return {"monotonic": self.monotonic(), "cputime": self.cpu_last,
                "realtime": time.time_ns()}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the guest clocks from a checkpoint's values (see the module docstring)."""
        elapsed = max(0, time.time_ns() - int(state.get("realtime", time.time_ns())))
        mono = int(state.get("monotonic", 0)) + elapsed
        self.mono_offset = mono - time.monotonic_ns()
        self.mono_last = mono
        cpu = int(state.get("cputime", 0))
        self.cpu_offset = cpu - time.process_time_ns()
        self.cpu_last = cpu


class Random:
    """The deterministic random stream behind ``random_get``."""

    def __init__(self, seed: bytes | None = None, position: int = 0) -> None:
        self.seed = bytes(seed) if seed is not None else os.urandom(32)
        self.position = position

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes of the stream."""
        start = self.position
        first, skip = divmod(start, _BLOCK)
        last = (start + size + _BLOCK - 1) // _BLOCK
        seed = self.seed
        out = b"".join(hashlib.sha256(seed + n.to_bytes(8, "little")).digest()
                       for n in range(first, last))
        self.position = start + size
        return out[skip:skip + size]

    def state(self) -> dict[str, Any]:
        return {"seed": self.seed.hex(), "position": self.position}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Random":
        return cls(bytes.fromhex(state["seed"]), int(state.get("position", 0)))
