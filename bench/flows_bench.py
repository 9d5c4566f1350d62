"""Flows on one node: task round trips, round-trip latency, checkpoint bytes, API latency.

Measures the figures issue 4 asks of the service, against a real ``dwasm serve`` with its
embedded PostgreSQL (started here in a temporary ``DWASM_DATA_DIR`` on a free loopback port, and
stopped at the end) or against a running node given with ``--url``:

* **round trips/s**: ``--flows`` flows each run ``--tasks`` round trips one after the other
  (schedule a task, await it); ``--workers`` worker threads lease and complete the tasks. A
  round trip is schedule -> checkpoint -> lease -> complete -> flow resumed. With
  ``--worker-class`` the load is driven by the library's ``Worker`` (``concurrency =
  --workers``, what ``dwasm worker`` runs) instead of the hand-written loops.
* **fan-out tasks/s**: ``--flows`` runs of ``examples/flows/fanout.wasm`` (20 tasks each, awaited
  together), the same workers.
* **round-trip latency**: one flow, one worker; the time between two consecutive leases is one
  full round trip (complete, flow resumed, next task scheduled and checkpointed, leased).
* **checkpoint bytes**: ``examples/flows/bigmem.wasm`` holds 16 MiB of pseudo-random memory and
  changes one 64 KiB page per signal; the bytes of the new chunks come from the flow's
  ``checkpoint`` events, the size of the stored manifest from the database (own server only).
* **API under CPU load**: ``GET /v1/flows/{id}`` in a loop for ``--duration`` seconds while one
  CPU-bound ``examples/flows/cpu.wasm`` flow per core runs.

Progress goes to stderr, a Markdown table to stdout. Exit status 0 when every flow produced the
right result (the targets are reported, not enforced), 1 otherwise. The round-trip flow is written
in WAT and needs ``wasmtime`` (the ``test`` extra) to assemble it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.worker import Report, TaskClient, Worker  # noqa: E402

FLOWS = ROOT / "examples" / "flows"
TERMINAL = ("completed", "failed", "cancelled")
QUEUE = "bench-rt"

# Schedules ITER tasks on queue "bench-rt", one at a time, awaiting each before the next.
LOOP_WAT = """
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "dwasm" "task_schedule" (func $sched (param i32 i32 i32 i32) (result i32)))
  (import "dwasm" "await_any" (func $await (param i32 i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "bench-rt")
  (func (export "_start") (local $i i32)
    (loop $l
      (i32.store (i32.const 0) (call $sched (i32.const 16) (i32.const 8) (i32.const 16) (i32.const 8)))
      (drop (call $await (i32.const 0) (i32.const 1) (i64.const -1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const ITER))))
    (call $proc_exit (i32.const 0))))
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``; why not statistics.quantiles: it
    interpolates, and a p99 should be a latency that was actually observed."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


# --- the node ------------------------------------------------------------------------------


@dataclass
class Node:
    url: str
    data_dir: Path | None = None  # set when this script started the node
    pid: int | None = None  # the dwasm serve process, when this script started it

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by the node's process and by its PostgreSQL
        server's processes, and by this script (the workers): with the number of round trips,
        the cost of one in CPU, which other load on the machine does not distort the way it
        distorts throughput. Empty for a node this script did not start."""
        if self.pid is None or self.data_dir is None:
            return {}
        out = {"dwasm": _proc_cpu(self.pid), "client": time.process_time()}
        postmaster = None
        for pid_file in self.data_dir.rglob("postmaster.pid"):
            postmaster = int(pid_file.read_text().split()[0])
        if postmaster is not None:
            total = _proc_cpu(postmaster)
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == postmaster:
                    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            out["postgres"] = total
        return out

    def database_url(self) -> str | None:
        """URL of the embedded server's ``postgres`` database, from its postmaster.pid (the
        socket directory and port), so that the manifest size can be read."""
        if self.data_dir is None:
            return None
        for pid_file in self.data_dir.rglob("postmaster.pid"):
            lines = pid_file.read_text().splitlines()
            if len(lines) >= 5:
                return f"postgresql://postgres@/postgres?host={lines[4]}&port={lines[3]}"
        return None


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def own_node(keep: bool) -> Iterator[Node]:
    """``dwasm serve`` with a fresh embedded PostgreSQL in a temporary data directory."""
    tmp = Path(tempfile.mkdtemp(prefix="dwasm-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWASM_")}
    env.update(DWASM_DATA_DIR=str(tmp / "data"), DWASM_LOG_LEVEL="warning",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    port = free_port()
    log_path = tmp / "serve.log"
    say(f"starting dwasm serve on 127.0.0.1:{port} (data in {tmp / 'data'}) ...")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            m = re.search(r"listening on (http://\S+)", log_path.read_text(errors="replace"))
            if m:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("dwasm serve did not start:\n" + log_path.read_text())
            time.sleep(0.05)
        yield Node(m.group(1), tmp / "data", proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        say("stopped dwasm serve")
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"kept {tmp}")


# --- helpers -------------------------------------------------------------------------------


def upload(c: httpx.Client, data: bytes) -> str:
    r = c.post("/v1/modules", content=data, headers={"Content-Type": "application/wasm"})
    r.raise_for_status()
    return r.json()["id"]


def start(c: httpx.Client, module: str, args: list[str] | None = None) -> str:
    r = c.post("/v1/flows", json={"module": module, "args": args or []})
    r.raise_for_status()
    return r.json()["id"]


def wait_for(c: httpx.Client, flow_id: str, statuses: tuple[str, ...] = TERMINAL,
             timeout: float = 300, pred: Callable[[dict[str, Any]], bool] | None = None,
             poll: float = 0.05) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        flow = c.get(f"/v1/flows/{flow_id}").json()
        if flow["status"] in statuses and (pred is None or pred(flow)):
            return flow
        if flow["status"] in TERMINAL and flow["status"] not in statuses:
            raise RuntimeError(f"flow {flow_id} ended as {flow['status']}: {flow.get('error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"flow {flow_id} did not reach {statuses}: {flow['status']}")
        time.sleep(poll)


def loop_module(iterations: int) -> bytes:
    try:
        import wasmtime
    except ImportError:
        raise SystemExit("the round-trip flow needs wasmtime to assemble its WAT: "
                         "pip install -e '.[test]'") from None
    return bytes(wasmtime.wat2wasm(LOOP_WAT.replace("ITER", str(iterations))))


@dataclass
class Workers:
    """Worker threads that lease tasks of some queues and complete them with ``answer``."""
    url: str
    count: int
    queues: list[str]
    answer: Callable[[bytes], bytes]
    done: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    batch: int = 1  # > 1: lease and report through the batch endpoints

    urls: list[str] | None = None  # several nodes: thread i talks to urls[i % len]

    def _run(self, queue: str, url: str) -> None:
        with TaskClient(url, max_connections=2) as client:
            while not self.stop.is_set():
                if self.batch > 1:
                    tasks = client.lease_batch(queue, self.batch, wait=0.5, cancel=self.stop)
                    results = client.report_batch(
                        [Report(t, "complete", self.answer(t.payload)) for t in tasks])
                    bad = [r for r in results if r.error is not None]
                    if bad:
                        raise RuntimeError(f"report refused: {bad[0].error}")
                    self.done.extend([1] * len(tasks))
                    continue
                task = client.lease(queue, wait=0.5, cancel=self.stop)
                if task is None:
                    continue
                client.complete(task, self.answer(task.payload))
                self.done.append(1)

    def __enter__(self) -> Workers:
        urls = self.urls or [self.url]
        for i in range(self.count):
            t = threading.Thread(target=self._run, args=(self.queues[i % len(self.queues)],
                                                         urls[i % len(urls)]), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


class WorkerClass:
    """The load driven by ``app.worker.Worker`` itself: ``count`` handler threads on the
    queues, each task answered with ``answer``; ``done`` counts completions (like
    :class:`Workers`, whose place it takes)."""

    def __init__(self, url: str, count: int, queues: list[str],
                 answer: Callable[[bytes], bytes]) -> None:
        self.worker = Worker(url, concurrency=count, poll_wait=0.5, name="bench")
        for queue in queues:
            self.worker.add_handler(queue, answer)

    @property
    def done(self) -> list[int]:
        return [1] * self.worker.stats.completed

    def __enter__(self) -> WorkerClass:
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.worker.join(30)


# --- the measurements ----------------------------------------------------------------------


def round_trips(url: str, flows: int, tasks: int, workers: int,
                batch: int = 1, urls: list[str] | None = None,
                worker_class: bool = False) -> dict[str, float]:
    """``urls``: the nodes of a cluster; flows start and workers talk round-robin over them.
    ``worker_class``: the library's Worker drives the load (``batch`` and ``urls`` unused)."""
    with httpx.Client(base_url=url, timeout=60) as c:
        mid = upload(c, loop_module(tasks))
        load: Workers | WorkerClass = (
            WorkerClass(url, workers, [QUEUE], lambda p: b"ok") if worker_class else
            Workers(url, workers, [QUEUE], lambda p: b"ok", batch=batch, urls=urls))
        with load as w:
            t0 = time.perf_counter()
            ids = []
            for i in range(flows):
                if urls:
                    with httpx.Client(base_url=urls[i % len(urls)], timeout=60) as node:
                        ids.append(start(node, mid))
                else:
                    ids.append(start(c, mid))
            bad = [f for f in ids if wait_for(c, f, timeout=600, poll=0.1)["exit_code"] != 0]
            elapsed = time.perf_counter() - t0
        n = flows * tasks
        if len(w.done) < n or bad:
            raise RuntimeError(f"round trips: {len(w.done)} of {n} tasks done, {len(bad)} "
                               "flows failed")
        return {"n": n, "seconds": elapsed, "per_s": n / elapsed}


def fanout(url: str, flows: int, workers: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=60) as c:
        mid = upload(c, (FLOWS / "fanout.wasm").read_bytes())
        with Workers(url, workers, ["square"], lambda p: str(int(p) ** 2).encode()):
            t0 = time.perf_counter()
            ids = [start(c, mid) for _ in range(flows)]
            for f in ids:  # all 20 tasks done and the 100 ms sleep over: waits for "go"
                wait_for(c, f, ("waiting",), timeout=600, poll=0.1,
                         pred=lambda fl: bool((fl.get("waiting") or {}).get("signal")))
            elapsed = time.perf_counter() - t0
        for f in ids:
            c.post(f"/v1/flows/{f}/signals/go", content=b"0").raise_for_status()
        for f in ids:
            flow = wait_for(c, f, timeout=120)
            if flow["exit_code"] != 166 or flow["stdout"].strip() != "2470":
                raise RuntimeError(f"fanout flow {f}: exit {flow['exit_code']}, "
                                   f"stdout {flow['stdout']!r}")
        n = flows * 20
        return {"n": n, "seconds": elapsed, "per_s": n / elapsed}


def latency(url: str, tasks: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=60) as c, TaskClient(url) as w:
        fid = start(c, upload(c, loop_module(tasks)))
        stamps = []
        for _ in range(tasks):
            task = w.lease(QUEUE, wait=10)
            if task is None:
                raise RuntimeError("latency: no task within 10 s")
            stamps.append(time.perf_counter())
            w.complete(task, b"ok")
        if wait_for(c, fid)["exit_code"] != 0:
            raise RuntimeError("latency flow failed")
    gaps = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]
    return {"n": len(gaps), "p50": pct(gaps, 0.50), "p99": pct(gaps, 0.99), "max": max(gaps)}


def api_under_load(url: str, duration: float, busy_count: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=60) as c:
        cpu = upload(c, (FLOWS / "cpu.wasm").read_bytes())
        target = start(c, cpu, ["1000"])
        wait_for(c, target)
        busy = [start(c, cpu, ["100000000000"]) for _ in range(busy_count)]
        for b in busy:
            wait_for(c, b, ("running",), timeout=30)
        time.sleep(1.0)
        lat = []
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            r = c.get(f"/v1/flows/{target}")
            lat.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
        still = [c.get(f"/v1/flows/{b}").json()["status"] for b in busy]
        for b in busy:
            c.post(f"/v1/flows/{b}/cancel")
        if any(s != "running" for s in still):
            raise RuntimeError(f"the CPU-bound flows stopped early: {still}")
    return {"n": len(lat), "p50": pct(lat, 0.50), "p99": pct(lat, 0.99), "max": max(lat),
            "busy": busy_count}


async def _manifest_bytes(db_url: str, flow_id: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval(
            "SELECT octet_length(checkpoint::text) FROM flows WHERE id = $1", flow_id)
    finally:
        await conn.close()


def checkpoint_bytes(node: Node, ticks: int = 3) -> dict[str, Any]:
    """Bytes of the checkpoints of bigmem: the first (all 16 MiB) and those after one page
    changed. Each later checkpoint's manifest is the same size (one digest replaced)."""
    with httpx.Client(base_url=node.url, timeout=60) as c:
        fid = start(c, upload(c, (FLOWS / "bigmem.wasm").read_bytes()), [str(ticks)])
        seq = wait_for(c, fid, ("waiting",), timeout=600, poll=0.2)["checkpoint_seq"]
        manifest = None
        db_url = node.database_url()
        for _ in range(ticks - 1):
            c.post(f"/v1/flows/{fid}/signals/tick", content=b"").raise_for_status()
            seq = wait_for(c, fid, ("waiting",), timeout=120,
                           pred=lambda f, s=seq: f["checkpoint_seq"] > s)["checkpoint_seq"]
        if db_url:
            manifest = asyncio.run(_manifest_bytes(db_url, fid))
        c.post(f"/v1/flows/{fid}/signals/tick", content=b"").raise_for_status()
        flow = wait_for(c, fid, timeout=120)
        if flow["exit_code"] != 0 or not flow["stdout"].startswith(f"bigmem {ticks} "):
            raise RuntimeError(f"bigmem: exit {flow['exit_code']}, stdout {flow['stdout']!r}")
        events = c.get(f"/v1/flows/{fid}/events", params={"limit": 1000}).json()["items"]
    cps = [e["data"] for e in events if e["type"] == "checkpoint"]
    i = next(k for k, cp in enumerate(cps) if cp.get("status") == "waiting")
    # The fill runs in fuel slices that are checkpointed too: the initial state is all of
    # the checkpoints up to the first wait.
    first = {"checkpoints": i + 1, "new_chunks": sum(cp["new_chunks"] for cp in cps[:i + 1]),
             "chunk_bytes": sum(cp["chunk_bytes"] for cp in cps[:i + 1])}
    later = [cp for cp in cps[i + 1:] if cp.get("status") == "waiting"]
    return {"first": first, "later": later, "manifest": manifest}


# --- report --------------------------------------------------------------------------------


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=16, help="concurrent flows (round trips, fanout)")
    ap.add_argument("--workers", type=int, default=8, help="worker threads")
    ap.add_argument("--batch", type=int, default=16,
                    help="tasks per lease-batch request in the second round-trip run "
                         "(1: only the single-task endpoints)")
    ap.add_argument("--tasks", type=int, default=50,
                    help="sequential round trips per flow")
    ap.add_argument("--samples", type=int, default=200,
                    help="round trips timed one by one for the latency percentiles")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds of GET /v1/flows/{id} under CPU load")
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 2,
                    help="CPU-bound flows during the API measurement (default: one per core)")
    ap.add_argument("--worker-class", action="store_true",
                    help="round trips: drive the load with app.worker.Worker (concurrency = "
                         "--workers) instead of the hand-written loops")
    ap.add_argument("--url", help="use this running node instead of starting one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    ap.add_argument("--only", action="append",
                    choices=["latency", "roundtrips", "fanout", "checkpoint", "api"],
                    help="run only these measurements (repeatable)")
    ns = ap.parse_args(argv)
    what = ns.only or ["latency", "roundtrips", "fanout", "checkpoint", "api"]

    rows: list[tuple[str, str, str]] = []
    ok = True
    with (nullcontext(Node(ns.url.rstrip("/"))) if ns.url else own_node(ns.keep)) as node:
        def step(name: str, fn: Callable[[], None]) -> None:
            nonlocal ok
            say(f"{name} ...")
            t0 = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # report and go on with the other figures
                ok = False
                say(f"{name}: FAILED: {exc}")
                rows.append((name, "failed", str(exc)[:80]))
            say(f"{name}: {time.perf_counter() - t0:.1f} s")

        def do_latency() -> None:
            r = latency(node.url, ns.samples + 1)
            rows.append(("round-trip latency p50", f"{r['p50']:.1f} ms", "<= 10 ms"))
            rows.append(("round-trip latency p99", f"{r['p99']:.1f} ms (max {r['max']:.1f}, "
                         f"n={r['n']})", ""))

        def do_roundtrips() -> None:
            for batch in [0] if ns.worker_class else sorted({1, ns.batch}):
                before = node.cpu_seconds()
                r = round_trips(node.url, ns.flows, ns.tasks, ns.workers, batch,
                                worker_class=ns.worker_class)
                after = node.cpu_seconds()
                how = ("app.worker.Worker" if ns.worker_class else
                       "lease + complete per task" if batch == 1 else
                       f"lease-batch/task-reports, up to {batch} per request")
                rows.append((f"round trips/s ({how})",
                             f"{r['per_s']:.0f} ({r['n']} in {r['seconds']:.1f} s, "
                             f"{ns.flows} flows, {ns.workers} workers)", ">= 500"))
                if after:
                    cost = ", ".join(f"{k} {(after[k] - before[k]) * 1000 / r['n']:.2f}"
                                     for k in after)
                    rows.append((f"  CPU ms per round trip ({how})", cost, ""))

        def do_fanout() -> None:
            r = fanout(node.url, ns.flows, ns.workers)
            rows.append(("fan-out tasks/s (fanout.wasm, 20 per flow)",
                         f"{r['per_s']:.0f} ({r['n']} in {r['seconds']:.1f} s)", ""))

        def do_checkpoint() -> None:
            r = checkpoint_bytes(node)
            first, later, manifest = r["first"], r["later"], r["manifest"]
            rows.append(("initial state, 16 MiB memory",
                         f"{first['new_chunks']} chunks, {kib(first['chunk_bytes'])} in "
                         f"{first['checkpoints']} checkpoints", ""))
            for cp in later:
                total = cp["chunk_bytes"] + (manifest or 0)
                detail = (f"{kib(total)} = {cp['new_chunks']} new chunks {kib(cp['chunk_bytes'])}"
                          f" + manifest {kib(manifest)}" if manifest is not None else
                          f"{kib(cp['chunk_bytes'])} in {cp['new_chunks']} new chunks (+ manifest, "
                          "not measured with --url)")
                rows.append((f"checkpoint {cp['seq']}, one page changed", detail, "<= 100 KiB"))

        def do_api() -> None:
            r = api_under_load(node.url, ns.duration, ns.busy)
            rows.append((f"GET /v1/flows/{{id}} p99, {r['busy']} CPU-bound flows",
                         f"{r['p99']:.1f} ms (p50 {r['p50']:.1f}, max {r['max']:.1f}, "
                         f"n={r['n']})", "< 100 ms"))

        steps = {"latency": do_latency, "roundtrips": do_roundtrips, "fanout": do_fanout,
                 "checkpoint": do_checkpoint, "api": do_api}
        for name in what:
            step(name, steps[name])

    print("| measure | value | target |")
    print("|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
