"""``dwasm modules|flows ...``: the real CLI (``python -m app.cli``) against a real service
process (``spawn_server``: uvicorn + PostgreSQL)."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from flowkit import COUNTER_WAT, FLOWS, ROOT, TRAP_WAT, wat

HELLO = str(FLOWS / "hello.wasm")


def _env(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWASM_")}
    env["PYTHONPATH"] = str(ROOT)
    if url is not None:
        env["DWASM_URL"] = url
    return env


def cli(url: str | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs ``dwasm ARGS`` with DWASM_URL=url; returns the finished process (text output)."""
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=_env(url),
                          capture_output=True, text=True, timeout=timeout, check=False)


def popen(url: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=_env(url),
                            stdout=subprocess.PIPE, stderr=kwargs.pop("stderr", subprocess.PIPE),
                            text=True, **kwargs)


def api_get(url: str, path: str) -> Any:
    r = httpx.get(url + path, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(url: str, flow_id: str, statuses: tuple[str, ...], timeout: float = 60) -> dict:
    """Polls the flow (started by a CLI process: at first it may not exist yet)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{url}/v1/flows/{flow_id}", timeout=30)
        assert r.status_code in (200, 404), r.text
        flow = r.json()
        if r.status_code == 200 and flow["status"] in statuses:
            return flow
        assert time.monotonic() < deadline, flow
        time.sleep(0.05)


@pytest.fixture
def server(spawn_server: Any) -> Any:
    return spawn_server()


@pytest.fixture
def counter(tmp_path: Path) -> str:
    path = tmp_path / "counter.wasm"
    path.write_bytes(wat(COUNTER_WAT))
    return str(path)


def test_upload_start_wait_get_list_events(server: Any) -> None:
    url = server.url
    up = cli(url, "modules", "upload", HELLO)
    assert up.returncode == 0, up.stderr
    module_id = up.stdout.strip()
    assert module_id.startswith("sha256:") and len(module_id) == 71
    up_json = cli(url, "modules", "upload", "--json", HELLO)
    assert json.loads(up_json.stdout) == api_get(url, f"/v1/modules/{module_id}")
    listed = cli(url, "modules", "list")
    assert listed.stdout.splitlines()[0].split()[:2] == ["ID", "SIZE"]
    assert module_id in listed.stdout and "_start" in listed.stdout
    got = cli(url, "modules", "get", module_id)
    assert f"size     {os.path.getsize(HELLO)} bytes" in got.stdout
    assert "wasi_snapshot_preview1.fd_write (func)" in got.stdout

    # start --wait with a .wasm path: uploads, starts, follows, prints output, exits with 0
    run = cli(url, "flows", "start", "--id", "greet", "--stdin", "Ada", "--wait", HELLO)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "Hello, Ada!\n"
    assert "flow greet: completed" in run.stderr  # plain progress lines: stderr is not a TTY
    # by module id, with an argument (hello uses argv[1] when stdin is empty)
    run2 = cli(url, "flows", "start", "--wait", module_id, "Bob")
    assert (run2.returncode, run2.stdout) == (0, "Hello, Bob!\n"), run2.stderr
    started = cli(url, "flows", "start", "--stdin-file", HELLO, module_id)
    assert started.returncode == 0 and started.stdout.strip(), started.stderr

    human = cli(url, "flows", "get", "greet")
    lines = human.stdout.splitlines()
    assert "status       completed" in lines and "exit code    0" in lines
    assert lines[-3:] == ["stdout:", "  Hello, Ada!", "stderr: (empty)"]
    assert json.loads(cli(url, "flows", "get", "--json", "greet").stdout) == \
        api_get(url, "/v1/flows/greet")

    table = cli(url, "flows", "list", "--status", "completed", "--module", module_id)
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["ID", "STATUS", "EXIT"]
    assert any(r.split()[:3] == ["greet", "completed", "0"] for r in rows[1:])
    as_json = json.loads(cli(url, "flows", "list", "--json", "--limit", "2").stdout)
    assert as_json == api_get(url, "/v1/flows?limit=2")
    assert len(as_json["items"]) == 2 and as_json["next_cursor"]

    events = cli(url, "flows", "events", "greet")
    api_events = api_get(url, "/v1/flows/greet/events")["items"]
    ev_lines = events.stdout.splitlines()
    assert len(ev_lines) == len(api_events) >= 2
    for line, event in zip(ev_lines, api_events):
        assert line.split()[2] == event["type"]
    assert json.loads(cli(url, "flows", "events", "--json", "greet").stdout)["items"] == \
        api_events


def test_signal_query_and_live_wait(server: Any, counter: str) -> None:
    url = server.url
    waiter = popen(url, "flows", "start", "--id", "c1", "--wait", counter)
    try:
        flow = wait_status(url, "c1", ("waiting",))
        assert flow["waiting"]["signal"] == "tick"
        got = cli(url, "flows", "get", "c1")
        assert "waiting for  signal 'tick'" in got.stdout
        assert cli(url, "flows", "query", "c1", "count").stdout == "0\n"
        assert cli(url, "flows", "query", "c1", "add", "2", "-5").stdout == "-3\n"
        q = json.loads(cli(url, "flows", "query", "--json", "--fuel", "1000", "c1",
                           "neg").stdout)
        assert q["results"] == [-5, 2.5] and q["types"] == ["i64", "f64"]
        spin = cli(url, "flows", "query", "--fuel", "1000", "c1", "spin")
        assert spin.returncode == 7 and "fuel" in spin.stderr
        sent = cli(url, "flows", "signal", "c1", "tick", "--payload", "x")
        assert sent.stdout == "signal 'tick' (1 bytes) sent to flow c1\n", sent.stderr
        sent_json = json.loads(cli(url, "flows", "signal", "--json", "c1", "tick").stdout)
        assert sent_json["flow_id"] == "c1" and sent_json["size"] == 0
        assert cli(url, "flows", "signal", "c1", "tick").returncode == 0
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 3, err
    assert out == "hi\n"
    assert "flow c1: waiting, waiting for signal 'tick'" in err
    assert "flow c1: completed" in err
    # the events show the three signals, and the finished flow cannot be signalled
    events = cli(url, "flows", "events", "c1").stdout
    assert sum(1 for line in events.splitlines() if line.split()[2] == "signal") == 3
    late = cli(url, "flows", "signal", "c1", "tick")
    assert late.returncode == 7 and late.stderr.startswith("error: ")


def test_cancel_and_wait_exit_statuses(server: Any, counter: str, tmp_path: Path) -> None:
    url = server.url
    # cancelled while someone waits on it: a distinct status and a clear message
    waiter = popen(url, "flows", "start", "--id", "c2", "--wait", counter)
    try:
        wait_status(url, "c2", ("waiting",))
        cancelled = cli(url, "flows", "cancel", "c2")
        assert cancelled.stdout == "flow c2: cancelled\n", cancelled.stderr
        _, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 10 and "error: flow c2 was cancelled" in err
    again = json.loads(cli(url, "flows", "cancel", "--json", "c2").stdout)
    assert again["status"] == "cancelled"

    trap = tmp_path / "trap.wasm"
    trap.write_bytes(wat(TRAP_WAT))
    failed = cli(url, "flows", "start", "--id", "t1", "--wait", str(trap))
    assert failed.returncode == 9
    assert "oops\n" in failed.stderr and "error: flow t1 failed: " in failed.stderr
    finished = cli(url, "flows", "cancel", "t1")
    assert finished.returncode == 7 and finished.stderr.startswith("error: ")

    timed = cli(url, "flows", "start", "--wait", "--timeout", "0.5", "--json", counter)
    assert timed.returncode == 11 and "keeps running" in timed.stderr

    interrupted = popen(url, "flows", "start", "--id", "c4", "--wait", counter)
    try:
        wait_status(url, "c4", ("waiting",))
        interrupted.send_signal(signal.SIGINT)
        _, err = interrupted.communicate(timeout=30)
    finally:
        if interrupted.poll() is None:
            interrupted.kill()
            interrupted.wait()
    assert interrupted.returncode == 130 and "flow c4 keeps running" in err
    assert api_get(url, "/v1/flows/c4")["status"] == "waiting"


def test_live_status_line_on_a_tty(server: Any, counter: str) -> None:
    url = server.url
    master, slave = pty.openpty()
    try:
        proc = popen(url, "flows", "start", "--id", "c3", "--wait", "--timeout", "1.5",
                     counter, stderr=slave)
        os.close(slave)
        _ = proc.communicate(timeout=60)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other end is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    screen = b"".join(chunks).decode()
    assert proc.returncode == 11
    assert screen.count("\rflow c3: waiting, waiting for signal 'tick' (") >= 2
    assert "\n" not in screen.split("error:")[0]  # updated in place, never a new line


def test_errors(server: Any, tmp_path: Path) -> None:
    url = server.url
    missing = cli(url, "flows", "get", "nope")
    assert missing.returncode == 7 and missing.stderr == "error: no flow 'nope'\n"
    assert cli(url, "flows", "events", "nope").returncode == 7
    assert cli(url, "modules", "upload", str(tmp_path / "absent.wasm")).returncode == 3
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"not wasm")
    malformed = cli(url, "modules", "upload", str(bad))
    assert malformed.returncode == 7 and "malformed module" in malformed.stderr
    assert cli(url, "flows", "start", str(tmp_path / "absent.wasm")).returncode == 3
    assert cli(url, "flows", "start", "--env", "NOEQUALS", HELLO).returncode == 2
    listed = cli(url, "flows", "list", "--limit", "0")
    assert listed.returncode == 7 and "limit" in listed.stderr
    assert cli(url, "flows").returncode == 2
    # --url beats DWASM_URL; with the server gone: a clear message and 7
    other = cli("http://127.0.0.1:1", "flows", "list", "--url", url)
    assert other.returncode == 0, other.stderr
    server.stop()
    down = cli(url, "flows", "list")
    assert down.returncode == 7
    assert f"cannot connect to the dwasm service at {url}" in down.stderr
    assert "is the server running" in down.stderr
