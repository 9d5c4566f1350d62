"""Whole-program benchmark: C programs built for wasm32-wasi, run as processes by `dwasm run` and
by pywasm's command line (`python -m pywasm --wasi preview1 FILE`), side by side.

Each program prints a checksum, which must match the expected output (confirmed with wasmtime)
on every run of both engines. Times are per process, start-up included: wall-clock seconds and
the child's CPU seconds (user + system, from wait4), median of ``--runs`` runs for dwasm and of
``--pywasm-runs`` runs for pywasm; the engines take turns. dwasm runs once more untimed first,
which also fills its on-disk code cache (docs/vm.md), so the timed runs are those of a restart;
``--cold`` gives every dwasm run an empty cache instead.

Also measured: start-up of a 2 MB module (``big.wasm``: decode, validate, instantiate, run a
few functions), and the executed wasm instruction count of the integer loop, counted through
pywasm's per-instruction debug hook in one extra in-process run (``--no-count`` skips it).

    python bench/programs.py                  # ~10 minutes, almost all of it pywasm
    python bench/programs.py --only hashloop --pywasm-runs 1
    python bench/programs.py --engine dwasm   # dwasm alone

Progress goes to stderr, a Markdown table to stdout. Exit status 1 when the geometric mean of
the pywasm/dwasm CPU-time ratios is below ``--min-geomean`` (30) or any ratio is below
``--min-ratio`` (10), 2 when an engine fails or prints a wrong result.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROGRAMS_DIR = REPO / "bench" / "programs"


@dataclass(frozen=True)
class Program:
    name: str
    kind: str
    expected: str  # the program's whole stdout

    @property
    def path(self) -> Path:
        return PROGRAMS_DIR / f"{self.name}.wasm"


PROGRAMS = (
    Program("hashloop", "integer hash loop (FNV-1a, murmur-style mixing)",
            "hashloop 1240545509 2719926412\n"),
    Program("memkernel", "memory: malloc, merge sort, memcpy/memmove, prefix sums",
            "memkernel 605099963\n"),
    Program("calls", "recursion and indirect calls: tree build/walk, fib",
            "calls -8921544997782343387\n"),
    Program("nbody", "floating point: n-body", "-0.169075164\n-0.169012107\n"),
    Program("spectral", "floating point: spectral norm", "1.274206094\n"),
    Program("mandelbrot", "floating point: Mandelbrot bitmap", "mandelbrot 3931231527\n"),
    Program("strparse", "strings: snprintf, tokenizing, strtol, hash table",
            "strparse 7065754559753515882 13418\n"),
    Program("coremark", "mixed: lists, matrices, state machine, CRC (CoreMark-like)",
            "coremark-like crc 0xdbd0\n"),
)
BIG = Program("big", "start-up: a 2 MB module (4,200 functions), a few of them run",
              "big 753655917\n")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_built(program: Program) -> None:
    """The 2 MB module is generated (``bench/programs/gen_big.py``) and compiled by its Makefile
    target rather than kept in the repository; build it on first use (needs clang for
    wasm32-wasi, see the Makefile). RuntimeError when that is not possible."""
    if program.path.exists():
        return
    progress(f"{program.name}: building {program.path.relative_to(REPO)} (make) ...")
    done = subprocess.run(["make", str(program.path.relative_to(REPO))], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0 or not program.path.exists():
        raise RuntimeError(f"cannot build {program.path.name} (needs make and clang for "
                           f"wasm32-wasi; --no-startup skips it): {done.stderr.strip()[-500:]}")


@dataclass
class Run:
    wall: float
    cpu: float


def run_process(cmd: list[str], expected: str, env: dict[str, str] | None = None) -> Run:
    """Runs one process; its wall and CPU time. Raises on a wrong output or exit status."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.decode(errors="replace")
    if proc.returncode != 0 or text != expected:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}, output {text!r} "
                           f"(expected {expected!r}); stderr: {err.decode(errors='replace')[-500:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime)


def dwasm_cmd(program: Program) -> list[str]:
    return [sys.executable, "-m", "app.cli", "run", str(program.path)]


def pywasm_cmd(program: Program) -> list[str]:
    return [sys.executable, "-m", "pywasm", "--wasi", "preview1", str(program.path)]


def count_instructions(program: Program) -> int:
    """Wasm instructions one run executes, counted by pywasm in process (see vs_pywasm.py)."""
    import pywasm

    counter = [0]

    def hook(*args: object) -> None:
        if len(args) == 2 and args[0] == "    ":
            counter[0] += 1

    original = pywasm.log.debugln
    pywasm.log.debugln = hook
    saved = os.dup(1)  # pywasm's WASI writes to file descriptor 1 itself
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        runtime = pywasm.core.Runtime()
        wasi = pywasm.wasi.Preview1([str(program.path)], {}, {})
        wasi.bind(runtime)
        inst = runtime.instance_from_file(str(program.path))
        with redirect_stdout(io.StringIO()):
            wasi.main(runtime, inst)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        pywasm.log.debugln = original
    return counter[0]


def dwasm_in_process(program: Program, runs: int) -> float:
    """CPU seconds of the program's run alone on dwasm: in this process, the module decoded
    once and its code already compiled (by a first, untimed run); median of ``runs``."""
    sys.path.insert(0, str(REPO))
    import vm
    from vm.wasi import Wasi

    module = vm.load(program.path.read_bytes())
    times = []
    for i in range(runs + 1):
        out = io.BytesIO()
        wasi = Wasi(args=[program.name], stdout=out, autoflush=True)
        inst = vm.instantiate(vm.Store(), module, wasi.imports())
        wasi.bind(inst)
        start = time.process_time()
        try:
            inst.invoke("_start")
        except Exception as exc:  # WASI's proc_exit ends a command
            if type(exc).__name__ != "ProcExit":
                raise
        if i:
            times.append(time.process_time() - start)
        if out.getvalue().decode() != program.expected:
            raise RuntimeError(f"{program.name} in process: wrong output {out.getvalue()!r}")
    return statistics.median(times)


@dataclass
class Row:
    program: Program
    dwasm: list[Run]
    pywasm: list[Run]

    @staticmethod
    def median(runs: list[Run], attr: str) -> float | None:
        return statistics.median(getattr(r, attr) for r in runs) if runs else None

    def ratio(self, attr: str = "cpu") -> float | None:
        d, p = self.median(self.dwasm, attr), self.median(self.pywasm, attr)
        return None if d is None or p is None else p / d


def child_env() -> dict[str, str]:
    """The environment of both engines' processes: as this one's, but with Python's bytecode
    cache on (a development shell may turn it off, and then every start compiles every module
    from source, which would time the shell rather than the engines)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def measure(program: Program, args: argparse.Namespace) -> Row:
    row = Row(program, [], [])
    env = child_env()
    if "dwasm" in args.engines:
        progress(f"{program.name}: dwasm warm-up run")
        run_process(dwasm_cmd(program), program.expected, env)
    turns = max(args.runs if "dwasm" in args.engines else 0,
                args.pywasm_runs if "pywasm" in args.engines else 0)
    for turn in range(turns):
        if "pywasm" in args.engines and turn < args.pywasm_runs:
            row.pywasm.append(run_process(pywasm_cmd(program), program.expected, child_env()))
            progress(f"{program.name}: pywasm {row.pywasm[-1].cpu:.2f} s CPU")
        if "dwasm" in args.engines and turn < args.runs:
            if args.cold:
                with tempfile.TemporaryDirectory() as cache:
                    env["DWASM_CODE_CACHE"] = cache
                    row.dwasm.append(run_process(dwasm_cmd(program), program.expected, env))
            else:
                row.dwasm.append(run_process(dwasm_cmd(program), program.expected, env))
            progress(f"{program.name}: dwasm {row.dwasm[-1].cpu:.3f} s CPU")
    return row


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(rows: list[Row], big: Row | None, count: int | None, hash_row: Row | None,
           inproc: float | None) -> None:
    print("| program | what | pywasm s (CPU) | dwasm s (CPU) | pywasm/dwasm (CPU) "
          "| pywasm s (wall) | dwasm s (wall) | pywasm/dwasm (wall) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row.program.name} | {row.program.kind} | {fmt(Row.median(row.pywasm, 'cpu'))} "
              f"| {fmt(Row.median(row.dwasm, 'cpu'), 3)} | {fmt(row.ratio('cpu'), 1)}x "
              f"| {fmt(Row.median(row.pywasm, 'wall'))} | {fmt(Row.median(row.dwasm, 'wall'), 3)} "
              f"| {fmt(row.ratio('wall'), 1)}x |")
    ratios = [r.ratio("cpu") for r in rows if r.ratio("cpu")]
    if ratios:
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        print(f"\nGeometric mean pywasm/dwasm (CPU time): **{geo:.1f}x** over {len(ratios)} "
              f"programs; smallest {min(ratios):.1f}x, largest {max(ratios):.1f}x.")
    if big is not None:
        print(f"\nStart-up, 2 MB module ({BIG.path.stat().st_size:,} bytes): pywasm "
              f"{fmt(Row.median(big.pywasm, 'cpu'))} s CPU / {fmt(Row.median(big.pywasm, 'wall'))} s "
              f"wall, dwasm {fmt(Row.median(big.dwasm, 'cpu'))} s CPU / "
              f"{fmt(Row.median(big.dwasm, 'wall'))} s wall.")
    if count and hash_row is not None:
        d = Row.median(hash_row.dwasm, "cpu")
        p = Row.median(hash_row.pywasm, "cpu")
        print(f"\nInteger loop (hashloop): {count:,} wasm instructions; "
              + (f"dwasm {count / d / 1e6:.1f} M instr/s" if d else "")
              + (f", pywasm {count / p / 1e6:.2f} M instr/s" if p else "")
              + " (whole-process CPU time, start-up included)"
              + (f"; dwasm without process start-up and decoding (in process, code already "
                 f"compiled): {inproc:.3f} s, {count / inproc / 1e6:.1f} M instr/s"
                 if inproc else "") + ".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="dwasm runs per program (median)")
    parser.add_argument("--pywasm-runs", type=int, default=3, help="pywasm runs per program")
    parser.add_argument("--only", action="append", help="run only this program (repeatable)")
    parser.add_argument("--engine", choices=["both", "dwasm", "pywasm"], default="both")
    parser.add_argument("--cold", action="store_true", help="dwasm without its code cache")
    parser.add_argument("--no-count", action="store_true", help="skip the instruction count")
    parser.add_argument("--no-startup", action="store_true", help="skip the 2 MB module")
    parser.add_argument("--min-geomean", type=float, default=30.0)
    parser.add_argument("--min-ratio", type=float, default=10.0)
    args = parser.parse_args(argv)
    args.engines = ("dwasm", "pywasm") if args.engine == "both" else (args.engine,)
    chosen = [p for p in PROGRAMS if not args.only or p.name in args.only]
    rows = []
    try:
        for program in chosen:
            rows.append(measure(program, args))
        big = None
        if not args.no_startup and (not args.only or "big" in args.only):
            ensure_built(BIG)
            big = measure(BIG, args)
    except RuntimeError as exc:
        progress(f"FAILED: {exc}")
        return 2
    count = None
    inproc = None
    hash_row = next((r for r in rows if r.program.name == "hashloop"), None)
    if hash_row is not None and not args.no_count:
        progress("hashloop: counting instructions with pywasm")
        count = count_instructions(hash_row.program)
        if "dwasm" in args.engines:
            inproc = dwasm_in_process(hash_row.program, args.runs)
    report(rows, big, count, hash_row, inproc)
    ratios = [r.ratio("cpu") for r in rows if r.ratio("cpu")]
    if ratios and args.engine == "both":
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        if geo < args.min_geomean or min(ratios) < args.min_ratio:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
