"""``dwasm modules|flows|queues|cluster ...``: the real CLI (``python -m app.cli``) against a
real service process (``spawn_server``: uvicorn + PostgreSQL; two of them and a real etcd for
``cluster`` on a cluster)."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusterkit import start_two_nodes
from flowkit import COUNTER_WAT, FLOWS, ROOT, TRAP_WAT, lease, wat

HELLO = str(FLOWS / "hello.wasm")


def _env(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWASM_")}
    env["PYTHONPATH"] = str(ROOT)
    if url is not None:
        env["DWASM_URL"] = url
    return env


def cli(url: str | None, *args: str, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``dwasm ARGS`` with DWASM_URL=url (and ``env``); returns the finished process (text
    output)."""
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT,
                          env={**_env(url), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def popen(url: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=_env(url),
                            stdout=subprocess.PIPE, stderr=kwargs.pop("stderr", subprocess.PIPE),
                            text=True, **kwargs)


def api_get(url: str, path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(url + path, headers=headers, timeout=30)
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


# --------------------------------------------------------------------------------------------
# dwasm queues, dwasm cluster


def _row(stdout: str, first: str) -> list[str]:
    """The table row whose first column is ``first``, split on runs of two or more spaces."""
    for line in stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{stdout}")


def _field(stdout: str, name: str) -> str:
    """The value of a ``name  value`` line of the fields form."""
    for line in stdout.splitlines():
        key, _, value = line.partition("  ")
        if key == name:
            return value.strip()
    raise AssertionError(f"no field {name!r} in:\n{stdout}")


def test_queues_backlog_and_policies(server: Any) -> None:
    url = server.url
    empty = cli(url, "queues", "list")
    assert (empty.returncode, empty.stdout.startswith("no queues")) == (0, True), empty.stderr
    # fanout schedules 20 tasks on "square" and waits for them; a worker holds one
    started = cli(url, "flows", "start", "--id", "fan", str(FLOWS / "fanout.wasm"))
    assert started.returncode == 0, started.stderr
    wait_status(url, "fan", ("waiting",))
    with httpx.Client(base_url=url, timeout=30) as client:
        held = lease(client, "square")
    assert held is not None
    api = api_get(url, "/v1/queues/square")
    assert (api["pending"], api["leased"]) == (19, 1) and api["overrides"] == []
    default = api["policy"]

    listed = cli(url, "queues", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.split(r"\s{2,}", listed.stdout.splitlines()[0]) == [
        "QUEUE", "PENDING", "LEASED", "OLDEST PENDING", "MAX ATTEMPTS", "BACKOFF",
        "LEASE TIMEOUT"]
    row = _row(listed.stdout, "square")
    assert row[1:3] == ["19", "1"] and re.fullmatch(r"\d+s", row[3]), row
    backoff = (f"{default['backoff_initial']:g}s x{default['backoff_factor']:g} "
               f"max {default['backoff_max']:g}s")
    assert row[4:] == [str(default["max_attempts"]), backoff, f"{default['lease_timeout']:g}s"]
    assert "*" not in listed.stdout  # nothing is overridden yet
    assert json.loads(cli(url, "queues", "list", "--json").stdout) == api_get(url, "/v1/queues")

    got = cli(url, "queues", "get", "square")
    assert _field(got.stdout, "pending") == "19" and _field(got.stdout, "leased") == "1"
    assert _field(got.stdout, "max attempts") == f"{default['max_attempts']} (default)"
    assert _field(got.stdout, "oldest pending").endswith(" ago)")
    assert json.loads(cli(url, "queues", "get", "--json", "square").stdout) == api

    # set-policy: the options given apply to the queue, the rest stays the default
    attempts = default["max_attempts"] + 2
    set_out = cli(url, "queues", "set-policy", "square", "--max-attempts", str(attempts),
                  "--backoff", "0.25", "--backoff-max", "9", "--lease-timeout", "45")
    assert set_out.returncode == 0, set_out.stderr
    assert _field(set_out.stdout, "max attempts") == f"{attempts} (this queue)"
    assert _field(set_out.stdout, "backoff") == "0.25s (this queue)"
    assert _field(set_out.stdout, "backoff factor") == \
        f"{default['backoff_factor']:g} (default)"
    api = api_get(url, "/v1/queues/square")
    assert api["overrides"] == ["backoff_initial", "backoff_max", "lease_timeout",
                                "max_attempts"]
    assert api["policy"] == {**default, "max_attempts": attempts, "backoff_initial": 0.25,
                             "backoff_max": 9.0, "lease_timeout": 45.0}
    assert _field(cli(url, "queues", "get", "square").stdout, "lease timeout") == \
        "45s (this queue)"
    row = _row(cli(url, "queues", "list").stdout, "square")
    assert row[4:] == [f"{attempts}*", f"0.25s* x{default['backoff_factor']:g} max 9s*", "45s*"]
    # PUT replaces the overrides; --json prints the API's answer
    replaced = json.loads(cli(url, "queues", "set-policy", "--json", "square",
                              "--lease-timeout", "60", "--backoff-factor", "3").stdout)
    assert replaced == api_get(url, "/v1/queues/square")
    assert replaced["overrides"] == ["backoff_factor", "lease_timeout"]
    assert replaced["policy"]["max_attempts"] == default["max_attempts"]

    # bad values: the server's message and 7; the policy is unchanged
    negative = cli(url, "queues", "set-policy", "square", "--backoff", "-1")
    assert negative.returncode == 7, negative.stderr
    assert negative.stderr == ("error: body.backoff_initial: Input should be greater than or "
                               "equal to 0\n")
    too_many = cli(url, "queues", "set-policy", "square", "--max-attempts", "5000")
    assert too_many.returncode == 7 and "max_attempts" in too_many.stderr
    assert api_get(url, "/v1/queues/square") == replaced
    assert cli(url, "queues", "set-policy", "square").returncode == 2  # nothing to set
    not_finite = cli(url, "queues", "set-policy", "square", "--backoff", "nan")
    assert not_finite.returncode == 2 and "not a finite number" in not_finite.stderr
    bad_name = cli(url, "queues", "get", "no spaces")
    assert bad_name.returncode == 7
    assert bad_name.stderr.startswith("error: a queue name is 1 to 200 characters")

    # reset-policy: back to the defaults (and prints the queue); a second time is a 404
    reset = cli(url, "queues", "reset-policy", "square")
    assert reset.returncode == 0, reset.stderr
    assert _field(reset.stdout, "lease timeout") == f"{default['lease_timeout']:g}s (default)"
    assert api_get(url, "/v1/queues/square")["overrides"] == []
    again = cli(url, "queues", "reset-policy", "square")
    assert (again.returncode, again.stderr) == (
        7, "error: queue 'square' has no policy of its own\n")
    # a queue with only a policy (no tasks) is listed too
    assert cli(url, "queues", "set-policy", "idle", "--max-attempts", "1").returncode == 0
    assert _row(cli(url, "queues", "list").stdout, "idle")[1:5] == ["0", "0", "-", "1*"]
    reset_json = json.loads(cli(url, "queues", "reset-policy", "--json", "idle").stdout)
    assert reset_json == api_get(url, "/v1/queues/idle") and reset_json["overrides"] == []
    assert cli(url, "queues").returncode == 2


CLIENT_TOKEN = "client:cli-client-token-1234"
ADMIN_TOKEN = "admin:cli-admin-token-12345"


def test_cluster_on_a_single_node_and_tokens(spawn_server: Any) -> None:
    node = spawn_server(env={"DWASM_API_TOKENS": f"{CLIENT_TOKEN},{ADMIN_TOKEN}"})
    url = node.url
    admin = ADMIN_TOKEN.split(":")[1]
    client = CLIENT_TOKEN.split(":")[1]
    view = api_get(url, "/v1/cluster", admin)
    assert view["mode"] == "single"
    out = cli(url, "cluster", env={"DWASM_TOKEN": admin})
    assert out.returncode == 0, out.stderr
    assert _field(out.stdout, "mode") == "single"
    assert _field(out.stdout, "node").startswith(view["node_id"] + " (incarnation ")
    assert _field(out.stdout, "shards held") == f"{view['shards']} of {view['shards']}"
    assert out.stdout.splitlines()[-1] == (f"single node: {view['node_id']} owns all "
                                           f"{view['shards']} shards (no etcd, no shard map)")
    as_json = cli(url, "cluster", "--json", "--token", admin)
    assert json.loads(as_json.stdout) == view
    # the cluster and policies need an admin token, the backlog a client token
    forbidden = cli(url, "cluster", "--token", client)
    assert forbidden.returncode == 7 and forbidden.stderr.startswith("error: ")
    assert cli(url, "cluster").returncode == 7  # no token at all
    assert cli(url, "queues", "list", env={"DWASM_TOKEN": client}).returncode == 0
    refused = cli(url, "queues", "set-policy", "q", "--backoff", "1", "--token", client)
    assert refused.returncode == 7
    token_wins = cli(url, "queues", "set-policy", "q", "--backoff", "1", "--token", client,
                  env={"DWASM_TOKEN": admin})  # --token wins over DWASM_TOKEN
    assert token_wins.returncode == 7
    assert cli(url, "queues", "set-policy", "q", "--backoff", "1",
               env={"DWASM_TOKEN": admin}).returncode == 0


CLUSTER_SHARDS = 8


def test_cluster_of_two_nodes(etcd_server: Any, database_url: str, spawn_server: Any) -> None:
    urls, views = start_two_nodes(spawn_server, etcd_server.endpoint, database_url,
                                  shards=CLUSTER_SHARDS)
    owned = {n: sum(1 for a in views[0]["assignments"] if a["owner"] == n) for n in ("n0", "n1")}
    assert sum(owned.values()) == CLUSTER_SHARDS

    for i, (url, view) in enumerate(zip(urls, views)):
        out = cli(None, "cluster", "--url", url)
        assert out.returncode == 0, out.stderr
        assert _field(out.stdout, "mode") == "cluster"
        assert _field(out.stdout, "node") == f"n{i} (incarnation {view['incarnation']})"
        assert _field(out.stdout, "ready") == "yes"
        assert _field(out.stdout, "topology version") == str(view["version"])
        assert _field(out.stdout, "shards held").startswith(
            f"{len(view['held'])} of {CLUSTER_SHARDS}: ")
        for j in range(2):
            member = view["members"][f"n{j}"]
            name = f"n{j} (this node)" if i == j else f"n{j}"
            assert _row(out.stdout, name) == [name, urls[j], "ready", str(owned[f"n{j}"]),
                                              member["incarnation"]]
        assert (f"shard map: {CLUSTER_SHARDS} shards, version {view['version']}: "
                f"n0 {owned['n0']}, n1 {owned['n1']}") in out.stdout.splitlines()
        assert "in handoff: none" in out.stdout.splitlines()
        assert json.loads(cli(url, "cluster", "--json").stdout) == \
            api_get(url, "/v1/cluster")


def test_shard_map_summary_with_handoff_and_unassigned_shards() -> None:
    """The summary's rarer lines, which a settled test cluster does not show: shards moving
    between owners and shards nobody owns (a real map's JSON shape, as GET /v1/cluster has
    it)."""
    from datetime import UTC, datetime

    from app.client.cluster import _ranges, _shard_map_lines
    from app.client.queues import _age

    assignments = [{"owner": "n0", "incarnation": "a", "epoch": 3},
                   {"owner": "n0", "incarnation": "a", "epoch": 2, "next_owner": "n1",
                    "next_incarnation": "b", "since": 1.0},
                   {"owner": None, "incarnation": None, "epoch": 0},
                   {"owner": "n1", "incarnation": "b", "epoch": 1}]
    assert _shard_map_lines({"version": 7, "assignments": assignments}) == [
        "shard map: 4 shards, version 7: n0 2, n1 1; 1 unassigned",
        "in handoff: 1", "  shard 1: n0 -> n1"]
    assert _shard_map_lines({"version": 0, "assignments": None}) == [
        "shard map: none yet (no coordinator has written one)"]
    assert _ranges([11, 0, 1, 2, 3, 8, 10]) == "0-3, 8, 10-11"
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert [_age(t, now) for t in ("2030-01-02T03:04:01Z", "2030-01-02T03:01:00+00:00",
                                   "2030-01-02T00:00:05Z", "2029-12-29T00:00:00Z",
                                   "2030-01-02T03:05:00Z", None)] == \
        ["4s", "3m05s", "3h04m", "4d03h", "0s", "-"]
