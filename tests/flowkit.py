"""Helpers for the flow and task API tests: the service with the flow engine on a live server,
module uploads, polling for a flow's status, a squaring worker, a short queue policy for an
in-process server, and small WAT flows."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import httpx

if TYPE_CHECKING:
    import pytest

    from app.flows.policies import QueuePolicy

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "examples" / "flows"
WASM = {"Content-Type": "application/wasm"}
TERMINAL = ("completed", "failed", "cancelled")

# A flow that counts "tick" signals: after each it adds 1 to a global; after three it prints
# "hi" and exits with the count. Exports count/add/spin/wait for queries.
COUNTER_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "dwasm" "signal_wait" (func $signal_wait (param i32 i32 i64) (result i32)))
  (memory (export "memory") 1)
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 16) "tick")
  (data (i32.const 32) "hi\\n")
  (func (export "count") (result i32) (global.get $count))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "neg") (result i64 f64) (i64.const -5) (f64.const 2.5))
  (func (export "spin") (loop $l (br $l)))
  (func (export "boom") unreachable)
  (func (export "wait") (drop (call $signal_wait (i32.const 16) (i32.const 4) (i64.const -1))))
  (func (export "bump") (global.set $count (i32.add (global.get $count) (i32.const 100))))
  (func (export "_start")
    (block $done
      (loop $l
        (drop (call $signal_wait (i32.const 16) (i32.const 4) (i64.const -1)))
        (global.set $count (i32.add (global.get $count) (i32.const 1)))
        (br_if $done (i32.ge_u (global.get $count) (i32.const 3)))
        (br $l)))
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (global.get $count))))
"""

# Traps at once, after writing to stderr.
TRAP_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "oops\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    unreachable))
"""

# Imports something a flow cannot have.
BAD_IMPORT_WAT = """
(module
  (import "env" "f" (func))
  (memory (export "memory") 1)
  (func (export "_start")))
"""


def wat(text: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(text))


def flow_app(settings: Any) -> Any:
    """The complete service app (what ``dwasm serve`` runs), for ``start_live_server``."""
    from app.serve import build_app

    return build_app(settings)


def upload(client: httpx.Client, module: str | bytes) -> str:
    """Upload an example flow (by name) or raw module bytes; returns the module id."""
    data = (FLOWS / f"{module}.wasm").read_bytes() if isinstance(module, str) else module
    r = client.post("/v1/modules", content=data, headers=WASM)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def start(client: httpx.Client, module_id: str, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/flows", json={"module": module_id, **body})
    assert r.status_code == 201, r.text
    return r.json()


def wait_for(client: httpx.Client, flow_id: str, statuses: tuple[str, ...] = TERMINAL,
             timeout: float = 60, pred: Callable[[dict[str, Any]], bool] | None = None
             ) -> dict[str, Any]:
    """Poll the flow until its status is one of ``statuses`` (and ``pred`` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/flows/{flow_id}")
        assert r.status_code == 200, r.text
        flow = r.json()
        if flow["status"] in statuses and (pred is None or pred(flow)):
            return flow
        if time.monotonic() > deadline:
            raise AssertionError(f"flow {flow_id} did not reach {statuses}: {flow}")
        time.sleep(0.02)


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["title"]
    if slug is not None:
        assert body["type"] == f"urn:dwasm:problem:{slug}", body
    return body


def lease(client: httpx.Client, queue: str = "square", wait: float = 5) -> dict[str, Any] | None:
    r = client.post(f"/v1/queues/{queue}/lease", json={"wait": wait})
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def fast_policy(monkeypatch: pytest.MonkeyPatch, **changes: Any) -> QueuePolicy:
    """Short backoff and leases for the in-process server: every queue gets this policy
    (``changes`` override its fields) for the rest of the test; returns it."""
    from app.flows.policies import PolicyBook, QueuePolicy

    settings = {"max_attempts": 3, "backoff_initial": 0.1, "backoff_factor": 2.0,
                "lease_timeout": 30.0, **changes}
    policy = QueuePolicy(**settings)
    monkeypatch.setattr(PolicyBook, "get", lambda self, queue: policy)
    return policy


def payload_of(task: dict[str, Any]) -> bytes:
    return base64.b64decode(task["payload"])


def complete(client: httpx.Client, task: dict[str, Any], text: str) -> httpx.Response:
    return client.post(f"/v1/tasks/{task['id']}/complete",
                       json={"lease_id": task["lease_id"], "result_text": text})


class SquareWorker:
    """A worker thread: leases "square" tasks and completes each with the square of its
    payload, until stopped. ``seen`` counts deliveries per task id."""

    def __init__(self, url: str, queue: str = "square") -> None:
        self.url = url
        self.queue = queue
        self.seen: dict[str, int] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "SquareWorker":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    task = lease(client, self.queue, wait=0.5)
                    if task is None:
                        continue
                    self.seen[task["id"]] = self.seen.get(task["id"], 0) + 1
                    n = int(payload_of(task))
                    r = complete(client, task, str(n * n))
                    if r.status_code != 200:
                        self.errors.append(r.text)
                except httpx.HTTPError as exc:  # a server restart in the crash test
                    self.errors.append(repr(exc))
                    time.sleep(0.1)

# Schedules one task on queue "work" (payload "payload"), awaits it, prints its result and exits
# with its status (1 succeeded, 2 failed).
ONE_TASK_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "dwasm" "task_schedule" (func $sched (param i32 i32 i32 i32) (result i32)))
  (import "dwasm" "await_any" (func $await (param i32 i32 i64) (result i32)))
  (import "dwasm" "handle_status" (func $status (param i32) (result i32)))
  (import "dwasm" "result_read" (func $read (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "work")
  (data (i32.const 32) "payload")
  (func (export "_start") (local $h i32) (local $n i32)
    (local.set $h (call $sched (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 7)))
    (i32.store (i32.const 0) (local.get $h))
    (drop (call $await (i32.const 0) (i32.const 1) (i64.const -1)))
    (local.set $n (call $read (local.get $h) (i32.const 1024) (i32.const 4096)))
    (i32.store (i32.const 8) (i32.const 1024))
    (i32.store (i32.const 12) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 100)))
    (call $proc_exit (call $status (local.get $h)))))
"""


class RetryingWorker(SquareWorker):
    """A worker that survives server restarts: it repeats a report until the server answers
    (a duplicate report is answered 200 and changes nothing). Each task takes ``work``
    seconds."""

    def __init__(self, url: str, queue: str = "square", work: float = 0.0) -> None:
        super().__init__(url, queue)
        self.work = work

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    task = lease(client, self.queue, wait=0.5)
                except (httpx.HTTPError, AssertionError) as exc:
                    self.errors.append(repr(exc))
                    time.sleep(0.05)
                    continue
                if task is None:
                    continue
                self.seen[task["id"]] = self.seen.get(task["id"], 0) + 1
                n = int(payload_of(task))
                time.sleep(self.work)
                while not self._stop.is_set():
                    try:
                        r = complete(client, task, str(n * n))
                    except httpx.HTTPError as exc:
                        self.errors.append(repr(exc))
                        time.sleep(0.05)
                        continue
                    if r.status_code != 200:
                        self.errors.append(r.text)
                    break
