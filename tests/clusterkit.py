"""Clients of a cluster as its users see it: requests to any node (a load balancer), workers
that lease and report through whichever node answers, retrying as docs/cluster.md says; and a
settled two-node cluster of ``dwasm serve`` processes for tests that need one."""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from app.worker import ApiError, Report, ServiceError, TaskClient
from app.worker.client import RetryPolicy


def call(urls: list[str], method: str, path: str, *, deadline: float = 60,
         ok: tuple[int, ...] = (200, 201, 202, 204), **kw: Any) -> httpx.Response:
    """``method path`` on a random node, retrying other nodes on connection errors and on 5xx
    answers until ``deadline`` seconds passed (every write the tests send is idempotent: starts
    carry ids, signals carry an Idempotency-Key)."""
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        url = random.choice(urls)
        try:
            with httpx.Client(base_url=url, timeout=10) as c:
                r = c.request(method, path, **kw)
            if r.status_code in ok or (400 <= r.status_code < 500 and r.status_code != 421):
                return r
            last = f"{r.status_code} {r.text[:300]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        if time.monotonic() > end:
            raise AssertionError(f"{method} {path}: no answer within {deadline} s; last {last}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_two_nodes(spawn_server: Callable[..., Any], etcd_endpoint: str, database_url: str, *,
                    shards: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Two ``dwasm serve`` processes (n0, n1) sharing one etcd and one database (``spawn_server``
    stops them after the test); their URLs and their ``GET /v1/cluster`` views once settled
    (see :func:`settled_views`)."""
    ports = [_free_port() for _ in range(2)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    for i, port in enumerate(ports):
        spawn_server(database_url, port=port, env={
            "DWASM_ETCD": etcd_endpoint, "DWASM_NODE_ID": f"n{i}",
            "DWASM_ADVERTISE_URL": urls[i], "DWASM_CLUSTER_SECRET": "two-node-test-secret",
            "DWASM_SHARDS": str(shards), "DWASM_LEASE_TTL": "2",
            "DWASM_SHUTDOWN_GRACE": "1"})  # the test stops them: no need to hand over
    return urls, settled_views(urls)


def settled_views(urls: list[str], deadline: float = 60) -> list[dict[str, Any]]:
    """The nodes' views (nodes ``n0``, ``n1``, ... at ``urls``) once every shard has one of them
    as owner, no shard is in handoff, all route with the same map version, all are ready and
    each holds (has claimed) exactly the shards the map gives it."""
    nodes = {f"n{i}" for i in range(len(urls))}
    end = time.monotonic() + deadline
    while True:
        views = [httpx.get(f"{u}/v1/cluster", timeout=10).json() for u in urls]
        owners = [{a.get("owner") for a in v.get("assignments") or [{}]} for v in views]
        if all(o == nodes for o in owners) and len({v["version"] for v in views}) == 1 \
                and not any(a.get("next_owner") for v in views for a in v["assignments"]) \
                and all(v["ready"] for v in views) \
                and all(sorted(v.get("held") or []) == [
                    s for s, a in enumerate(v["assignments"]) if a.get("owner") == v["node_id"]]
                        for v in views):
            return views
        assert time.monotonic() < end, f"the cluster did not settle: {views}"
        time.sleep(0.1)


@dataclass
class Workers:
    """Threads that lease batches from random nodes and report them through random nodes."""

    urls: list[str]
    queue: str
    answer: Callable[[bytes], bytes]
    threads: int = 3
    stop: threading.Event = field(default_factory=threading.Event)
    done: dict[str, int] = field(default_factory=dict)  # task id -> accepted reports
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        quick = RetryPolicy(initial=0.05, max_delay=0.5, max_elapsed=2.0)
        clients = {u: TaskClient(u, retry=quick, timeout=10) for u in self.urls}
        try:
            while not self.stop.is_set():
                client = clients[random.choice(self.urls)]
                try:
                    tasks = client.lease_batch(self.queue, 8, wait=0.5, cancel=self.stop)
                except ServiceError:
                    time.sleep(0.1)
                    continue
                reports = [Report(t, "complete", self.answer(t.payload)) for t in tasks]
                while reports and not self.stop.is_set():
                    client = clients[random.choice(self.urls)]
                    try:
                        results = client.report_batch(reports)
                    except ServiceError:
                        time.sleep(0.1)
                        continue
                    retry = []
                    for report, result in zip(reports, results):
                        if result.error is None:
                            with self._lock:
                                self.done[report.task.id] = self.done.get(report.task.id, 0) + 1
                        elif result.status >= 500 or result.status == 421:
                            retry.append(report)  # its owner was away: again
                        elif isinstance(result.error, ApiError):
                            with self._lock:  # lease lost (it expired while a node was down)
                                self.errors.append(f"{report.task.id}: {result.error}")
                    reports = retry
                    if reports:
                        time.sleep(0.1)
        finally:
            for c in clients.values():
                c.close()

    def __enter__(self) -> Workers:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=15)
