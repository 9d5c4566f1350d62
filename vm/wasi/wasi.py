"""The ``Wasi`` object: one guest's WASI context, its imports, and its durable state."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Callable

from ..errors import LinkError, Suspend, WasmError
from ..runtime.objects import Function, Memory
from . import abi
from .calls_fd import FdCalls
from .calls_misc import MiscCalls, ProcExit
from .calls_path import PathCalls
from .clocks import Clocks, Random
from .durable import Durability, Key, WasiRestoreError, capture, check_format, moved_key, \
    restore_into
from .fs import STDIO_KINDS, Descriptor, FdTable, Preopen
from .host import FS_EFFECTS, NO_RESULT, SIGNATURES, build_imports, call_errno
from .memory import GuestMemory
from .poll import PollCalls
from .stdio import InputStream, OutputStream


def _env_pairs(env: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if env is None:
        return []
    items = env.items() if isinstance(env, Mapping) else env
    pairs = [(str(k), str(v)) for k, v in items]
    for key, value in pairs:
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"invalid environment variable {key!r}")
    return pairs


class Wasi(MiscCalls, FdCalls, PathCalls, PollCalls):
    """A WASI preview1 context: arguments, environment, preopened directories and stdio.

    ``preopens`` is a list of ``(host_dir, guest_path)``; they become fds 3, 4, ... ``stdin`` is
    None (empty), ``bytes`` or a binary file-like object; ``stdout``/``stderr`` are None
    (discarded) or writable file-like objects, written only by :meth:`flush` unless
    ``autoflush``. ``seed`` fixes the ``random_get`` stream (default: ``os.urandom``).
    ``sleep`` is what ``poll_oneoff`` waits with (tests pass a function that does not wait).
    ``suspend_on`` names calls that raise ``vm.Suspend`` before any effect (see :meth:`perform`
    and ``FS_EFFECTS``).
    """

    FS_EFFECTS = FS_EFFECTS

    def __init__(self, args: Iterable[str] = (),
                 env: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                 preopens: Iterable[tuple[str, str]] = (), stdin: Any = None, stdout: Any = None,
                 stderr: Any = None, *, seed: bytes | None = None, autoflush: bool = False,
                 sleep: Callable[[float], None] = time.sleep,
                 suspend_on: Iterable[str] = ()) -> None:
        self.args = [str(a) for a in args]
        if any("\0" in a for a in self.args):
            raise ValueError("arguments cannot contain NUL")
        self.env = _env_pairs(env)
        self.arg_bytes = [a.encode() for a in self.args]
        self.env_bytes = [f"{k}={v}".encode() for k, v in self.env]
        self.stdin = InputStream(stdin)
        self.streams = {"stdout": OutputStream(stdout, autoflush),
                        "stderr": OutputStream(stderr, autoflush)}
        self.clocks = Clocks()
        self.random = Random(seed)
        self.durable = Durability()
        self.sleep = sleep
        self.suspend_on = frozenset(suspend_on)
        self.suspended: tuple[str, tuple[int, ...]] | None = None  # the call suspended at
        unknown = self.suspend_on - (set(SIGNATURES) - NO_RESULT)
        if unknown:
            raise ValueError(f"cannot suspend on {sorted(unknown)}")
        self.table = FdTable()
        self._memory: GuestMemory | None = None
        self.preopens: list[Preopen] = []
        try:
            for host, guest in preopens:
                preopen = Preopen(os.path.abspath(host), str(guest))
                preopen.open()
                self.preopens.append(preopen)
            self._initial_table()
        except BaseException:
            self.close()
            raise

    def _initial_table(self) -> None:
        self.table.add(Descriptor("stdin", abi.RIGHTS_STDIN, abi.RIGHTS_STDIN))
        self.table.add(Descriptor("stdout", abi.RIGHTS_STDOUT, abi.RIGHTS_STDOUT))
        self.table.add(Descriptor("stderr", abi.RIGHTS_STDOUT, abi.RIGHTS_STDOUT))
        for index, preopen in enumerate(self.preopens):
            self.table.add(Descriptor(
                "dir", abi.RIGHTS_DIR, abi.RIGHTS_ALL, host_fd=os.dup(preopen.root_fd),
                preopen=index, guest_path=preopen.guest, readable=True,
                filetype=abi.FILETYPE_DIRECTORY, preopened=True))

    # --- embedding ------------------------------------------------------------------------

    def imports(self) -> dict[str, dict[str, Any]]:
        """``{"wasi_snapshot_preview1": {name: vm.HostFunction}}`` for ``vm.instantiate``."""
        return build_imports(self)

    def bind(self, instance: Any, memory: Memory | None = None) -> None:
        """Use ``memory`` (default: the instance's export ``"memory"``) for all WASI calls."""
        memory = memory if memory is not None else instance.exports.get("memory")
        if not isinstance(memory, Memory):
            raise LinkError("a WASI module must export its memory as \"memory\"")
        self._memory = GuestMemory(memory)

    @property
    def mem(self) -> GuestMemory:
        if self._memory is None:
            raise WasmError("a WASI function was called before Wasi.bind(instance)")
        return self._memory

    def run(self, store: Any, instance: Any, flush: bool = True) -> int:
        """Call ``_start``; returns the exit code (0 when it returns, ProcExit's code otherwise).

        Traps propagate as ``TrapError``. With ``flush`` (the default) buffered output is written
        out at the end, also after a trap; durable drivers pass False and flush after their
        checkpoint. With ``suspend_on``, drive a ``vm.Execution`` instead (docs/wasi.md)."""
        if self.suspend_on:
            raise ValueError("run() cannot suspend; with suspend_on, drive a vm.Execution")
        if self._memory is None:
            self.bind(instance)
        start = instance.exports.get("_start")
        if not isinstance(start, Function):
            raise LinkError("a WASI command must export a function \"_start\"")
        try:
            store.invoke(start, [])
            return 0
        except ProcExit as exc:
            return exc.code
        finally:
            if flush:
                self.flush()

    # --- effect boundaries ----------------------------------------------------------------

    def has_effect(self, name: str, args: tuple[int, ...] | list[int]) -> bool:
        """Whether this call would change the file system (for ``suspend_on``): writes only to
        files (stdout and stderr have their own commit protocol), opens only when creating or
        truncating; any other listed call always."""
        if name in ("fd_write", "fd_pwrite"):
            desc = self.table.fds.get(args[0])
            return desc is not None and desc.kind == "file"
        if name == "path_open":
            return bool(args[4] & (abi.O_CREAT | abi.O_TRUNC))
        return True

    def perform(self, pending: Suspend) -> list[int]:
        """Run the WASI call a suspended execution stands at; returns its results for
        ``Execution.complete_host``. Right after a restore this is the call the crashed run may
        already have made: its "already done" errors then count as success (docs/wasi.md)."""
        func = pending.func
        name = getattr(func, "name", None)
        if name not in SIGNATURES or name in NO_RESULT or not isinstance(pending.reason, dict) \
                or pending.reason.get("wasi") != name:
            raise ValueError(f"{func!r} is not a suspended WASI call")
        durable = self.durable
        durable.forced = durable.fresh and durable.pending_ok
        durable.fresh = False
        self.suspended = None
        try:
            return [call_errno(getattr(self, name), pending.call_args)]
        finally:
            durable.forced = False

    # --- output commit --------------------------------------------------------------------

    def _stream(self, fd: int) -> OutputStream:
        if fd == 1:
            return self.streams["stdout"]
        if fd == 2:
            return self.streams["stderr"]
        raise ValueError(f"fd {fd} is not an output stream (1 or 2)")

    def flush(self) -> None:
        """Write buffered stdout and stderr output to their destinations."""
        for stream in self.streams.values():
            stream.flush()

    def output_pending(self) -> int:
        """Bytes of stdout and stderr held back, waiting for :meth:`flush` (drivers checkpoint
        early when much output waits)."""
        return sum(len(stream.pending) for stream in self.streams.values())

    def output_written(self, fd: int) -> int:
        """Bytes the guest has written to stream ``fd`` (1 or 2) in total, flushed or not."""
        return self._stream(fd).written

    def sync_output(self, fd: int, already_written: int) -> None:
        """After a restore: the destination of stream ``fd`` already holds the first
        ``already_written`` bytes of the stream; only the rest will be written. Raises
        ``OutputGapError`` if it holds less than was flushed before the checkpoint."""
        self._stream(fd).sync(already_written)

    # --- durable state --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """All WASI state as JSON-serialisable data (docs/wasi.md, "State")."""
        return capture(self)

    @classmethod
    def from_state(cls, state: dict[str, Any], preopens: Iterable[tuple[str, str]] | None = None,
                   stdin: Any = None, stdout: Any = None, stderr: Any = None, *,
                   autoflush: bool = False, sleep: Callable[[float], None] = time.sleep,
                   suspend_on: Iterable[str] = ()) -> "Wasi":
        """Rebuild a context from :meth:`state`, in this or another process.

        ``preopens`` may move the host directories but must list the same guest paths in the
        same order (default: the recorded host directories). Files are reopened and positioned,
        grown files truncated back, stdin repositioned, the output streams, clocks and random
        stream continued (docs/wasi.md). Raises ``WasiRestoreError``."""
        check_format(state)
        recorded = [p["guest"] for p in state["preopens"]]
        if preopens is None:
            pairs = [(p["host"], p["guest"]) for p in state["preopens"]]
        else:
            pairs = [(str(h), str(g)) for h, g in preopens]
            if [g for _, g in pairs] != recorded:
                raise WasiRestoreError(f"the preopens must have the guest paths {recorded}")
        try:
            wasi = cls(state["args"], [tuple(kv) for kv in state["env"]], pairs, stdin, stdout,
                       stderr, seed=bytes.fromhex(state["random"]["seed"]),
                       autoflush=autoflush, sleep=sleep, suspend_on=suspend_on)
        except OSError as exc:
            raise WasiRestoreError(f"cannot open a preopened directory: {exc}") from exc
        try:
            wasi.table.close_all()
            wasi.random = Random.from_state(state["random"])
            restore_into(wasi, state)
        except OSError as exc:
            wasi.close()
            raise WasiRestoreError(f"cannot restore the WASI state: {exc}") from exc
        except BaseException:
            wasi.close()
            raise
        return wasi

    def renamed(self, src: Key, dst: Key) -> None:
        """Keep open descriptors' recorded paths right after ``path_rename``."""
        for desc in self.table.fds.values():
            if desc.kind not in STDIO_KINDS:
                moved = moved_key((desc.preopen, desc.rel), src, dst)
                if moved is not None:
                    desc.preopen, desc.rel = moved
        self.durable.renamed(src, dst)

    def close(self) -> None:
        """Close every host file descriptor this context holds."""
        self.table.close_all()
        for preopen in self.preopens:
            preopen.close()

    def __enter__(self) -> "Wasi":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
