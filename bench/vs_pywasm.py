"""Speed benchmark: dwasm's engine (vm/) against pywasm, another pure-Python WebAssembly interpreter.

Both engines run the same exported functions of the modules in bench/c/ with the same arguments,
in one process, taking turns. Each engine gets a fresh instance per run and only the `invoke`
call is timed (process CPU time), so decoding, validation and instantiation are left out while
any lazy per-instance work (such as translating function bodies on first call) is counted. The
figure per engine is the median of --runs runs.

The executed wasm instruction count is taken from pywasm, which reports every instruction it
executes through its debug-log hook; one extra, untimed pywasm run per benchmark does the counting
(--no-count skips it). Instructions per second are that count over each engine's median time.

Exit status: 0 if every result is right and every ratio pywasm/dwasm is at least --min-ratio,
1 if a ratio is below it, 2 if an engine returned a wrong result.

    python bench/vs_pywasm.py                       # everything, both engines
    python bench/vs_pywasm.py --only fib --runs 5
    python bench/vs_pywasm.py --engine dwasm        # dwasm alone (no ratio check)
    python bench/vs_pywasm.py --only sieve --profile   # cProfile of one dwasm run
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
WASM_DIR = ROOT / "bench" / "c"

Invoke = Callable[[str, Sequence[int]], list]


@dataclass(frozen=True)
class Benchmark:
    """One exported function call and the checksum it must return.

    Sizes are chosen so that one pywasm run takes roughly one to three seconds on the
    reference machine (see bench/README.md).
    """

    name: str
    wasm: str
    export: str
    args: tuple[int, ...]
    expected: int | float
    kind: str

    @property
    def path(self) -> Path:
        return WASM_DIR / self.wasm


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("fib", "fib.wasm", "fib", (22,), 17711, "recursion: calls and returns"),
    Benchmark("fnv1a", "hash.wasm", "fnv1a", (16384, 3), 2972466278, "integer: byte loads, xor, mul"),
    Benchmark("mix32", "hash.wasm", "mix32", (16384, 10), 3400183605, "integer: word loads, rotl, mul"),
    Benchmark("sieve", "sieve.wasm", "sieve", (25000, 1), 2762, "memory: strided byte stores"),
    Benchmark("matmul", "matmul.wasm", "matmul", (36,), 651928173, "memory: i32 loads, mul, add"),
    Benchmark("mandelbrot", "mandelbrot.wasm", "mandelbrot", (40, 50), 19932, "float: f64 arithmetic"),
    Benchmark("nbody", "nbody.wasm", "nbody", (500,), -0.16902152766534373, "float: f64 loads/stores, sqrt"),
    Benchmark("simd", "simd_blend.wasm", "simd_blend", (4096, 12), 3001660786, "SIMD: i8x16/i32x4/f32x4 lanes, shuffle, v128 loads/stores"),
)


def normalize(value: object, expected: int | float) -> int | float | object:
    """Brings an engine's result into the expected's representation.

    pywasm returns i32 results as signed ints, dwasm as unsigned bit patterns; both compare
    equal once masked to 32 bits. Float results are compared bit-for-bit as Python floats.
    """
    if isinstance(expected, int) and isinstance(value, int):
        return value & 0xFFFFFFFF
    return value


class PywasmEngine:
    """Runs modules on pywasm 2.x (its `Runtime` / `invocate` API)."""

    name = "pywasm"

    def __init__(self) -> None:
        import pywasm

        self._pywasm = pywasm

    def instantiate(self, data: bytes) -> Invoke:
        core = self._pywasm.core
        runtime = core.Runtime()
        inst = runtime.instance(core.ModuleDesc.from_reader(io.BytesIO(data)))
        return lambda name, args: runtime.invocate(inst, name, list(args))

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[int]]:
        """Counts executed instructions while active, through pywasm's per-instruction debug hook.

        pywasm's machine loop calls ``pywasm.log.debugln('    ', instr)`` once per instruction
        it executes; replacing that hook costs about as much as the original call.
        """
        log = self._pywasm.log
        original = log.debugln
        counter = [0]

        def hook(*args: object) -> None:
            if len(args) == 2 and args[0] == "    ":
                counter[0] += 1

        log.debugln = hook
        try:
            yield counter
        finally:
            log.debugln = original


class DwasmEngine:
    """Runs modules on this project's engine through its embedding API (docs/vm.md)."""

    name = "dwasm"

    def __init__(self) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        import vm

        if not hasattr(vm, "instantiate"):
            raise SystemExit("vm has no embedding API yet (vm.instantiate); try --engine pywasm")
        self._vm = vm

    def instantiate(self, data: bytes) -> Invoke:
        vm = self._vm
        inst = vm.instantiate(vm.Store(), vm.load(data), {})
        return lambda name, args: inst.invoke(name, list(args))


Engine = PywasmEngine | DwasmEngine


@dataclass
class Measurement:
    """Median time and result of one benchmark on one engine."""

    seconds: float
    result: object
    ok: bool


# One table row: the benchmark, pywasm's and dwasm's measurements, the instruction count.
Row = tuple[Benchmark, Measurement | None, Measurement | None, int | None]


def call_text(bench: Benchmark) -> str:
    return f"{bench.export}({', '.join(map(str, bench.args))})"


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)


def run_once(engine: Engine, bench: Benchmark, data: bytes) -> tuple[float, object]:
    """CPU time of one invocation on a fresh instance, and its normalized result or the exception raised.

    CPU time rather than wall-clock time, so that other processes on a shared machine inflate
    the figures less; both engines are single-threaded, so on an idle machine the two agree.
    """
    try:
        invoke = engine.instantiate(data)
        start = time.process_time()
        results = invoke(bench.export, bench.args)
        return time.process_time() - start, normalize(results[0], bench.expected)
    except Exception as exc:  # an engine bug must not hide the other benchmarks' figures
        return float("nan"), exc


def measure(engines: Sequence[Engine], bench: Benchmark, runs: int) -> list[Measurement]:
    """Median of `runs` timed invocations per engine.

    The engines take turns run by run, so that a change in the machine's load during the
    benchmark affects both engines' figures alike instead of skewing the ratio.
    """
    data = bench.path.read_bytes()
    times: list[list[float]] = [[] for _ in engines]
    results: list[object] = [None for _ in engines]
    failed = [False for _ in engines]
    for i in range(runs):
        for e, engine in enumerate(engines):
            if failed[e]:
                continue
            elapsed, result = run_once(engine, bench, data)
            times[e].append(elapsed)
            results[e] = result
            failed[e] = isinstance(result, Exception) or result != bench.expected
            shown = f"{type(result).__name__}: {result}" if isinstance(result, Exception) else result
            progress(f"  {bench.name:<11} {engine.name:<6} run {i + 1}/{runs}: {elapsed:8.3f} s  -> {shown}")
    return [
        Measurement(statistics.median(t), r, not f) for t, r, f in zip(times, results, failed)
    ]


def count_instructions(engine: PywasmEngine, bench: Benchmark) -> int:
    """Executed wasm instructions of one call, counted on an untimed pywasm run."""
    invoke = engine.instantiate(bench.path.read_bytes())
    with engine.counting() as counter:
        invoke(bench.export, bench.args)
    progress(f"  {bench.name:<11} pywasm counted {counter[0]:,} instructions")
    return counter[0]


def profile_dwasm(bench: Benchmark, top: int) -> None:
    """Prints the heaviest functions of one dwasm run of `bench`, by own time."""
    engine = DwasmEngine()
    invoke = engine.instantiate(bench.path.read_bytes())
    profiler = cProfile.Profile()
    profiler.enable()
    results = invoke(bench.export, bench.args)
    profiler.disable()
    print(f"## {call_text(bench)}: result {normalize(results[0], bench.expected)}")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)


def rate(instructions: int | None, seconds: float | None) -> str:
    if not instructions or not seconds or not math.isfinite(seconds):
        return "-"
    return f"{instructions / seconds / 1e6:.2f}"


def seconds_cell(m: Measurement | None) -> str:
    if m is None:
        return "-"
    if isinstance(m.result, Exception):
        return f"ERROR {type(m.result).__name__}"
    return f"{m.seconds:.3f}" + ("" if m.ok else " WRONG")


def print_table(rows: list[Row]) -> None:
    """A Markdown table, so that it can be pasted into bench/README.md unchanged."""
    header = (
        "| benchmark | call | pywasm s | dwasm s | pywasm/dwasm | instructions "
        "| pywasm Minstr/s | dwasm Minstr/s |"
    )
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for bench, py, dw, count in rows:
        ratio = f"{py.seconds / dw.seconds:.1f}x" if py and dw and py.ok and dw.ok else "-"
        print(
            f"| {bench.name} | {call_text(bench)} | {seconds_cell(py)} | {seconds_cell(dw)} | {ratio} "
            f"| {f'{count:,}' if count else '-'} | {rate(count, py and py.seconds)} "
            f"| {rate(count, dw and dw.seconds)} |"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--runs", type=int, default=3, help="timed runs per engine and benchmark (median)")
    parser.add_argument("--only", action="append", choices=names, metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(names)}")
    parser.add_argument("--engine", choices=["both", "pywasm", "dwasm"], default="both")
    parser.add_argument("--min-ratio", type=float, default=10.0,
                        help="fail if pywasm/dwasm is below this on any benchmark (default 10)")
    parser.add_argument("--no-count", action="store_true", help="skip the instruction-counting pywasm run")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, print a cProfile of one dwasm run per benchmark")
    parser.add_argument("--profile-top", type=int, default=25, help="profile entries to print")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    if args.profile:
        for bench in selected:
            profile_dwasm(bench, args.profile_top)
        return 0

    pywasm_engine = PywasmEngine() if args.engine in ("both", "pywasm") else None
    dwasm_engine = DwasmEngine() if args.engine in ("both", "dwasm") else None
    rows: list[Row] = []
    for index, bench in enumerate(selected, 1):
        progress(f"[{index}/{len(selected)}] {bench.name}: {call_text(bench)} — {bench.kind}")
        count = None
        if pywasm_engine and not args.no_count:
            count = count_instructions(pywasm_engine, bench)
        engines = [e for e in (pywasm_engine, dwasm_engine) if e is not None]
        figures = iter(measure(engines, bench, args.runs))
        py = next(figures) if pywasm_engine else None
        dw = next(figures) if dwasm_engine else None
        rows.append((bench, py, dw, count))

    print_table(rows)
    measured = [m for _, py, dw, _ in rows for m in (py, dw) if m is not None]
    if not all(m.ok for m in measured):
        print("FAIL: an engine returned a wrong result or failed (see WRONG / ERROR above)")
        return 2
    slow = [b.name for b, py, dw, _ in rows if py and dw and py.seconds / dw.seconds < args.min_ratio]
    if slow:
        print(f"FAIL: pywasm/dwasm below {args.min_ratio:g} on: {', '.join(slow)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
