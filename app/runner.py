"""Running a program from the command line: plainly, or durably with a state directory.

A durable run (``dwasm run --state DIR``) executes in fuel slices and checkpoints into DIR
(``app.statedir``): right after start, every ``interval`` seconds, before every file-system
effect (WASI calls in ``vm.wasi.FS_EFFECTS`` suspend the execution first), and at exit. Output to
stdout and stderr is held back and written only after the checkpoint that covers it, so that
``dwasm resume DIR`` after a crash (even SIGKILL) neither loses nor repeats any of it: the
checkpoint records how much output the program produced, the resumer sees how much of it the
destination already holds (for regular files) and writes only the rest.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import vm
from vm import snapshot
from vm import structure as S
from vm.errors import ExhaustionError, LinkError, TrapError
from vm.wasi import ProcExit, Wasi, WasiRestoreError

from .statedir import StateDir

SLICE = 200_000  # fuel units between looks at the clock; ~10-50 ms of wasm
FLUSH_BYTES = 1 << 16  # checkpoint early when this much output waits


class RunError(Exception):
    """A failure of the run itself (not of the program): message and exit status."""

    def __init__(self, message: str, exit_code: int, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details or []


@dataclass
class RunConfig:
    """How a program was started: all a resume needs besides the checkpoint."""

    module_path: str
    args: list[str] = field(default_factory=list)  # argv[1:] for WASI; function args for invoke
    env: list[list[str]] = field(default_factory=list)
    dirs: list[list[str]] = field(default_factory=list)  # [host, guest]
    invoke: str | None = None
    fuel: int | None = None
    interval: float = 1.0
    max_snapshot_bytes: int | None = None
    stdout_base: int | None = None  # size of stdout (a regular file) when the run started
    stderr_base: int | None = None


def _regular_size(fd: int) -> int | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class Program:
    """One program run: module, WASI context, instance and execution."""

    def __init__(self, module: S.Module, config: RunConfig, wasi: Wasi,
                 format_results: Callable[[list[Any], S.FuncType], list[str]]) -> None:
        self.module = module
        self.config = config
        self.wasi = wasi
        self.format_results = format_results
        self.store = vm.Store()
        self.instance: vm.Instance | None = None
        self.execution: vm.Execution | None = None
        self.fuel_used = 0
        self.state_dir: StateDir | None = None
        self.last_checkpoint = 0.0
        self.stop_requested = False

    # --- setting up ---------------------------------------------------------------------------

    def imports(self) -> dict[str, Any]:
        wasi_imports = self.wasi.imports()
        for imp in self.module.imports:
            if imp.module != "wasi_snapshot_preview1":
                raise RunError(f"the module imports {imp.module}.{imp.name}; dwasm provides only "
                               "wasi_snapshot_preview1", 5)
        return wasi_imports

    def start(self, invoke_values: list[Any]) -> None:
        try:
            self.instance = vm.instantiate(self.store, self.module, self.imports())
        except LinkError as exc:
            raise RunError(f"cannot link the module: {exc}", 5) from None
        if "memory" in self.instance.exports and isinstance(self.instance.exports["memory"],
                                                            vm.Memory):
            self.wasi.bind(self.instance)
        name = self.config.invoke or "_start"
        func = self.instance.exports.get(name)
        if not isinstance(func, vm.Function):
            hint = "" if self.config.invoke else " (not a WASI command; use --invoke FUNC)"
            raise RunError(f"the module exports no function {name!r}{hint}", 2)
        self.execution = self.store.start(func, invoke_values)

    # --- checkpoints --------------------------------------------------------------------------

    def checkpoint(self, exit_record: dict[str, Any] | None = None) -> None:
        if self.state_dir is None:
            return
        assert self.instance is not None
        host = {"wasi": self.wasi.state(), "fuel_used": self.fuel_used, "exit": exit_record}
        execution = None if exit_record is not None else self.execution
        try:
            manifest, chunks = snapshot.capture(self.instance, execution, host=host,
                                                known=self.state_dir.known(),
                                                max_bytes=self.config.max_snapshot_bytes)
        except snapshot.SnapshotError as exc:
            raise RunError(f"cannot checkpoint: {exc}", 8) from None
        self.state_dir.save(manifest, chunks)
        self.last_checkpoint = time.monotonic()

    def _commit_output(self) -> None:
        self.checkpoint()
        flush(self.wasi)

    # --- running ------------------------------------------------------------------------------

    def drive(self) -> int:
        """Run to the end; returns the exit status (after the final checkpoint and flush)."""
        ex = self.execution
        assert ex is not None
        budget = self.config.fuel
        durable = self.state_dir is not None
        try:
            while True:
                if ex.status == "host":
                    if durable:
                        self.checkpoint()  # before the effect: a crash re-runs it from here
                    ex.complete_host(self.wasi.perform(ex.pending))
                    continue
                slice_ = SLICE if budget is None else min(SLICE, budget - self.fuel_used)
                if slice_ <= 0:
                    raise ExhaustionError("all fuel consumed")
                status = ex.run(fuel=slice_)
                self.fuel_used += slice_ - (ex.fuel_left or 0)
                if status == "done":
                    return self._finish(0, ex.results or [])
                if status == "suspended" and durable:
                    since = time.monotonic() - self.last_checkpoint
                    if (self.stop_requested or since >= self.config.interval
                            or self.wasi.output_pending() >= FLUSH_BYTES):
                        self._commit_output()
                    if self.stop_requested:
                        raise RunError(f"stopped; continue with `dwasm resume "
                                       f"{self.state_dir.path}`", 130)
        except ProcExit as exc:
            return self._finish(exc.code, None)
        except TrapError as exc:
            from .cli import format_backtrace

            record = {"trap": exc.message, "backtrace": exc.backtrace,
                      "exhaustion": isinstance(exc, ExhaustionError)}
            self.checkpoint(record)
            flush(self.wasi)
            raise RunError(f"trap: {exc.message}", 6, format_backtrace(exc, self.module)) from None

    def _finish(self, code: int, results: list[Any] | None) -> int:
        if results is not None and self.config.invoke is not None:
            assert self.execution is not None
            functype = self.execution.func.type
            text = "".join(line + "\n" for line in self.format_results(results, functype))
            self.wasi.streams["stdout"].write(text.encode())
        self.checkpoint({"code": code})
        flush(self.wasi)
        return code

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM during a durable run: checkpoint at the next slice, then exit."""
        def request_stop(signum: int, frame: Any) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)


def flush(wasi: Wasi) -> None:
    """Write the program's held-back output; a reader that went away (``| head``) is not an
    error of the run, as with any Unix tool: the rest of the output is dropped."""
    try:
        wasi.flush()
    except BrokenPipeError:
        for stream in wasi.streams.values():
            stream.pending.clear()
        # Keep Python from complaining about the closed pipe again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def new_wasi(config: RunConfig, autoflush: bool) -> Wasi:
    argv0 = os.path.basename(config.module_path)
    return Wasi(args=[argv0, *config.args] if config.invoke is None else [argv0],
                env=[tuple(kv) for kv in config.env],
                preopens=[tuple(d) for d in config.dirs],
                stdin=sys.stdin.buffer, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer,
                autoflush=autoflush, suspend_on=Wasi.FS_EFFECTS if not autoflush else ())


def run(module: S.Module, module_bytes: bytes, config: RunConfig, invoke_values: list[Any],
        format_results: Callable[[list[Any], S.FuncType], list[str]],
        state: str | None = None) -> int:
    """``dwasm run``: plain, or durable when ``state`` names a directory."""
    durable = state is not None
    try:
        wasi = new_wasi(config, autoflush=not durable)
    except OSError as exc:
        raise RunError(f"cannot open a --dir: {exc}", 3) from None
    with wasi:
        program = Program(module, config, wasi, format_results)
        if durable:
            config.stdout_base = _regular_size(1)
            config.stderr_base = _regular_size(2)
            program.state_dir = StateDir(state)
            program.state_dir.create(module_bytes, asdict(config))
            program.install_signal_handlers()
        program.start(invoke_values)
        program.checkpoint()
        return program.drive()


def resume(state: str, format_results: Callable[[list[Any], S.FuncType], list[str]]) -> int:
    """``dwasm resume DIR``: continue a durable run from its latest checkpoint."""
    state_dir = StateDir(state)
    state_dir.lock()
    saved, module_bytes, manifest = state_dir.load()
    config = RunConfig(**saved)
    if manifest is None:
        raise RunError(f"{state} has no checkpoint yet; start the run again", 3)
    module = vm.load(module_bytes)
    host = manifest.get("host") or {}
    try:
        wasi = Wasi.from_state(host["wasi"], stdin=sys.stdin.buffer, stdout=sys.stdout.buffer,
                               stderr=sys.stderr.buffer, suspend_on=Wasi.FS_EFFECTS)
    except (WasiRestoreError, KeyError) as exc:
        raise RunError(f"cannot restore the program's WASI state: {exc}", 3) from None
    with wasi:
        for fd, base in ((1, config.stdout_base), (2, config.stderr_base)):
            size = _regular_size(fd)
            if base is not None and size is not None:
                wasi.sync_output(fd, size - base)
        program = Program(module, config, wasi, format_results)
        program.state_dir = state_dir
        program.fuel_used = host.get("fuel_used", 0)
        exit_record = host.get("exit")
        if exit_record is not None:  # it had finished: deliver what the crash may have cut off
            flush(wasi)
            if "trap" in exit_record:
                raise RunError(f"trap: {exit_record['trap']}", 6)
            return int(exit_record["code"])
        try:
            program.instance, program.execution = snapshot.restore(
                manifest, state_dir, module, program.imports(), program.store)
        except snapshot.SnapshotError as exc:
            raise RunError(f"cannot restore {state}: {exc}", 3) from None
        if "memory" in program.instance.exports:
            wasi.bind(program.instance)
        program.install_signal_handlers()
        program.last_checkpoint = time.monotonic()
        return program.drive()
