"""``dwasm modules|flows|queues|cluster ...``: a command-line client of the dwasm REST API.

Each subcommand is one or a few synchronous HTTP requests (httpx) to the service named by
``--url`` / ``DWASM_URL``, with ``--token`` / ``DWASM_TOKEN`` as a bearer token. Output is for
people by default (aligned fields, tables, one line per event) and the API's JSON with
``--json``, so that scripts never have to parse the human form.

Failures are one ``error:`` line on stderr and an exit status of their class: 2 usage, 3 a file
that cannot be read, 7 the service (a problem+json answer, or no answer at all), 130 Ctrl-C.
``flows start --wait`` ends with the flow's own exit code, or :data:`EXIT_FLOW_FAILED`,
:data:`EXIT_FLOW_CANCELLED` or :data:`EXIT_WAIT_TIMEOUT`. httpx is imported only when a
command runs, so ``dwasm run`` does not need it.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

DEFAULT_URL = "http://127.0.0.1:8080"

EXIT_USAGE = 2
EXIT_FILE = 3
EXIT_SERVICE = 7
EXIT_FLOW_FAILED = 9
EXIT_FLOW_CANCELLED = 10
EXIT_WAIT_TIMEOUT = 11
EXIT_INTERRUPTED = 130

WAIT_EXIT_HELP = (
    "exit status of `flows start --wait`: the flow's exit code when it completed; "
    f"{EXIT_FLOW_FAILED} when it failed (trapped, unloadable), {EXIT_FLOW_CANCELLED} when it was "
    f"cancelled, {EXIT_WAIT_TIMEOUT} when --timeout passed first (the flow keeps running); "
    "a flow may itself exit with these numbers, so check --json's status when that matters.\n"
    f"other exit status: {EXIT_USAGE} usage, {EXIT_FILE} unreadable file, {EXIT_SERVICE} the "
    f"service answered an error or cannot be reached, {EXIT_INTERRUPTED} interrupted (Ctrl-C)")

TERMINAL = ("completed", "failed", "cancelled")


class ClientError(Exception):
    """A failure to report as ``error: <message>`` (plus detail lines) and an exit status."""

    def __init__(self, message: str, exit_code: int, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = list(details)


# --------------------------------------------------------------------------------------------
# HTTP


class Api:
    """A thin synchronous client: turns problem answers and transport failures into
    :class:`ClientError` with exit status 7."""

    def __init__(self, url: str, token: str | None, timeout: float = 60) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Sends one request; returns the decoded JSON body of a 2xx answer (None if empty)."""
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ClientError(f"cannot connect to the dwasm service at {self.url} ({exc}); is "
                              "the server running there? (set --url or DWASM_URL)",
                              EXIT_SERVICE) from None
        except httpx.TimeoutException:
            raise ClientError(f"the dwasm service at {self.url} did not answer in time",
                              EXIT_SERVICE) from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.url} failed: {exc}", EXIT_SERVICE) from None
        if response.status_code >= 400:
            raise _problem_error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"{method} {path}: the service answered {response.status_code} "
                              "with a body that is not JSON", EXIT_SERVICE) from None


def _problem_error(response: Any) -> ClientError:
    """The ``error:`` line of an error answer: the problem's detail (or title), and the
    field errors of a validation problem as detail lines (but not the one error that the
    detail already states)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:200]
        return ClientError(f"HTTP {response.status_code} {response.reason_phrase}"
                           + (f": {text}" if text else ""), EXIT_SERVICE)
    message = body.get("detail") or body.get("title") or f"HTTP {response.status_code}"
    details = []
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            loc = ".".join(str(p) for p in err.get("loc", []))
            line = f"{loc}: {err.get('msg', '')}"
            if line != message:
                details.append(f"  {line}")
    return ClientError(str(message), EXIT_SERVICE, details)


# --------------------------------------------------------------------------------------------
# Output helpers


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _when(text: str | None) -> str:
    """An API timestamp as ``YYYY-MM-DD HH:MM:SS.mmm`` (in the timezone the API gave)."""
    if not text:
        return "-"
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except ValueError:
        return text


def _short_module(module_id: str) -> str:
    return module_id[:19] if module_id.startswith("sha256:") else module_id


def _waiting_text(waiting: dict[str, Any] | None) -> str:
    """What a waiting flow waits for, in a few words."""
    if not waiting:
        return ""
    op = waiting.get("op")
    if op == "signal":
        text = f"signal {waiting.get('signal')!r}"
    elif op == "sleep":
        text = "timer"
    elif op == "await":
        tasks = waiting.get("tasks") or []
        count = len(waiting.get("handles") or tasks)
        text = f"{count} task(s)/child(ren)" if count != 1 else (
            f"task {tasks[0]}" if tasks else "1 task/child")
    else:
        text = str(op)
    if waiting.get("until"):
        text += f" until {_when(waiting['until'])}"
    return text


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)


def _fields(pairs: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}", file=out)


def _output_bytes(flow: dict[str, Any], stream: str) -> bytes:
    """A flow's stdout or stderr, exactly (the base64 form when it is not UTF-8)."""
    raw = flow.get(f"{stream}_base64")
    if raw:
        return base64.b64decode(raw)
    return (flow.get(stream) or "").encode("utf-8", "surrogatepass")


def _block(title: str, data: bytes, out: TextIO) -> None:
    if not data:
        print(f"{title}: (empty)", file=out)
        return
    print(f"{title}:", file=out)
    text = data.decode("utf-8", "replace")
    for line in text.rstrip("\n").split("\n"):
        print(f"  {line}", file=out)


# --------------------------------------------------------------------------------------------
# Reading input


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ClientError(f"cannot read {what} {path}: {exc.strerror or exc}", EXIT_FILE) from None


def _parse_env(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for text in items:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ClientError(f"bad --env {text!r}: expected NAME=VALUE", EXIT_USAGE)
        env[name] = value
    return env


# --------------------------------------------------------------------------------------------
# dwasm modules


def _upload(api: Api, path: str) -> dict[str, Any]:
    data = _read_file(path, "module")
    return api.request("POST", "/v1/modules", content=data,
                       headers={"Content-Type": "application/wasm"})


def _cmd_modules_upload(api: Api, ns: argparse.Namespace) -> int:
    info = _upload(api, ns.file)
    if ns.json:
        _print_json(info)
    else:
        print(info["id"])
    return 0


def _module_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for m in items:
        funcs = [e["name"] for e in m.get("exports", []) if e.get("kind") == "func"]
        rows.append([m["id"], str(m["size"]), _when(m.get("created_at")),
                     ", ".join(funcs) or "-"])
    return rows


def _cmd_modules_list(api: Api, ns: argparse.Namespace) -> int:
    page = api.request("GET", "/v1/modules", params={"limit": ns.limit})
    if ns.json:
        _print_json(page)
        return 0
    if not page["items"]:
        print("no modules")
        return 0
    _table(["ID", "SIZE", "CREATED", "EXPORTED FUNCTIONS"], _module_rows(page["items"]),
           sys.stdout)
    if page.get("next_cursor"):
        print(f"(more modules: raise --limit above {ns.limit})")
    return 0


def _cmd_modules_get(api: Api, ns: argparse.Namespace) -> int:
    info = api.request("GET", f"/v1/modules/{ns.id}")
    if ns.json:
        _print_json(info)
        return 0
    imports = [f"{i['module']}.{i['name']} ({i['kind']})" for i in info.get("imports", [])]
    exports = [f"{e['name']} ({e['kind']})" for e in info.get("exports", [])]
    _fields([("id", info["id"]), ("size", f"{info['size']} bytes"),
             ("created", _when(info.get("created_at"))),
             ("imports", ", ".join(imports) or "-"), ("exports", ", ".join(exports) or "-")],
            sys.stdout)
    return 0


# --------------------------------------------------------------------------------------------
# dwasm flows


def _path(prefix: str, name: str, suffix: str = "") -> str:
    """``prefix/name/suffix`` with ``name`` escaped as one path segment (the server judges it)."""
    from urllib.parse import quote

    return f"{prefix}/{quote(name, safe='')}{suffix}"


def _flow_path(flow_id: str, suffix: str = "") -> str:
    return _path("/v1/flows", flow_id, suffix)


def _print_flow(flow: dict[str, Any]) -> None:
    exit_code = flow.get("exit_code")
    _fields([("id", flow["id"]), ("module", flow["module"]), ("status", flow["status"]),
             ("exit code", "-" if exit_code is None else str(exit_code)),
             ("error", flow.get("error") or "-"),
             ("waiting for", _waiting_text(flow.get("waiting")) or "-"),
             ("parent", flow.get("parent_id") or "-"),
             ("checkpoints", str(flow.get("checkpoint_seq", 0))),
             ("created", _when(flow.get("created_at"))),
             ("updated", _when(flow.get("updated_at"))),
             ("finished", _when(flow.get("finished_at"))),
             ("args", " ".join(flow.get("args", [])) or "-"),
             ("env", " ".join(f"{k}={v}" for k, v in (flow.get("env") or {}).items()) or "-")],
            sys.stdout)
    _block("stdout", _output_bytes(flow, "stdout"), sys.stdout)
    _block("stderr", _output_bytes(flow, "stderr"), sys.stdout)


def _module_id(api: Api, module: str) -> str:
    """MODULE as given: an uploaded module's id, or a .wasm file to upload first."""
    if module.startswith("sha256:"):
        return module
    return _upload(api, module)["id"]


def _cmd_flows_start(api: Api, ns: argparse.Namespace) -> int:
    if ns.stdin is not None and ns.stdin_file is not None:
        raise ClientError("give --stdin or --stdin-file, not both", EXIT_USAGE)
    if ns.timeout is not None and not ns.wait:
        raise ClientError("--timeout needs --wait", EXIT_USAGE)
    if ns.timeout is not None and ns.timeout <= 0:
        raise ClientError("--timeout must be positive", EXIT_USAGE)
    body: dict[str, Any] = {"args": list(ns.args), "env": _parse_env(ns.env)}
    if ns.stdin_file is not None:
        data = _read_file(ns.stdin_file, "stdin file")
        try:
            body["stdin"] = data.decode("utf-8")
        except UnicodeDecodeError:
            body["stdin_base64"] = base64.b64encode(data).decode("ascii")
    elif ns.stdin is not None:
        body["stdin"] = ns.stdin
    if ns.id is not None:
        body["id"] = ns.id
    body["module"] = _module_id(api, ns.module)
    flow = api.request("POST", "/v1/flows", json=body)
    if not ns.wait:
        if ns.json:
            _print_json(flow)
        else:
            print(flow["id"])
        return 0
    try:
        flow = _wait(api, flow, ns.timeout, sys.stderr)
    except KeyboardInterrupt:
        raise ClientError(f"interrupted; flow {flow['id']} keeps running (dwasm flows get "
                          f"{flow['id']})", EXIT_INTERRUPTED) from None
    return _finish(flow, ns)


def _status_text(flow: dict[str, Any], elapsed: float) -> str:
    waiting = _waiting_text(flow.get("waiting"))
    what = f"{flow['status']}" + (f", waiting for {waiting}" if waiting else "")
    return f"flow {flow['id']}: {what} ({elapsed:.1f}s)"


def _wait(api: Api, flow: dict[str, Any], timeout: float | None, err: TextIO) -> dict[str, Any]:
    """Polls the flow until it ends (or ``timeout`` passes), showing its progress on ``err``:
    one line rewritten in place on a terminal, a line per change otherwise."""
    live = err.isatty()
    started = time.monotonic()
    delay = 0.05
    last_key: tuple[Any, ...] | None = None
    width = 0
    try:
        while True:
            elapsed = time.monotonic() - started
            key = (flow["status"], json.dumps(flow.get("waiting"), sort_keys=True))
            if live:
                text = _status_text(flow, elapsed)
                err.write("\r" + text.ljust(width))
                err.flush()
                width = len(text)
            elif key != last_key:
                print(_status_text(flow, elapsed), file=err, flush=True)
            last_key = key
            if flow["status"] in TERMINAL:
                return flow
            if timeout is not None and elapsed >= timeout:
                raise ClientError(f"flow {flow['id']} is still {flow['status']} after "
                                  f"{timeout:g} s; it keeps running (dwasm flows get "
                                  f"{flow['id']})", EXIT_WAIT_TIMEOUT)
            pause = delay if timeout is None else min(delay, max(timeout - elapsed, 0.01))
            time.sleep(pause)
            delay = min(delay * 1.5, 1.0)
            flow = api.request("GET", _flow_path(flow["id"]))
    finally:
        if live and width:
            err.write("\r" + " " * width + "\r")
            err.flush()


def _finish(flow: dict[str, Any], ns: argparse.Namespace) -> int:
    """Prints a finished flow (its output, or its JSON) and returns the exit status."""
    if ns.json:
        _print_json(flow)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(_output_bytes(flow, "stdout"))
        sys.stdout.buffer.flush()
        sys.stderr.flush()
        sys.stderr.buffer.write(_output_bytes(flow, "stderr"))
        sys.stderr.buffer.flush()
    if flow["status"] == "completed":
        return int(flow.get("exit_code") or 0)
    if flow["status"] == "failed":
        raise ClientError(f"flow {flow['id']} failed: {flow.get('error') or 'no reason given'}",
                          EXIT_FLOW_FAILED)
    raise ClientError(f"flow {flow['id']} was cancelled", EXIT_FLOW_CANCELLED)


def _cmd_flows_get(api: Api, ns: argparse.Namespace) -> int:
    flow = api.request("GET", _flow_path(ns.id))
    if ns.json:
        _print_json(flow)
    else:
        _print_flow(flow)
    return 0


def _cmd_flows_list(api: Api, ns: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": ns.limit}
    if ns.status:
        params["status"] = ns.status
    if ns.module:
        params["module"] = ns.module
    page = api.request("GET", "/v1/flows", params=params)
    if ns.json:
        _print_json(page)
        return 0
    if not page["items"]:
        print("no flows")
        return 0
    rows = [[f["id"], f["status"], "-" if f.get("exit_code") is None else str(f["exit_code"]),
             _short_module(f["module"]), _when(f.get("created_at")),
             _waiting_text(f.get("waiting")) or f.get("error") or ""]
            for f in page["items"]]
    _table(["ID", "STATUS", "EXIT", "MODULE", "CREATED", "WAITING FOR / ERROR"], rows,
           sys.stdout)
    if page.get("next_cursor"):
        print(f"(more flows: raise --limit above {ns.limit})")
    return 0


def _cmd_flows_cancel(api: Api, ns: argparse.Namespace) -> int:
    flow = api.request("POST", _flow_path(ns.id, "/cancel"))
    if ns.json:
        _print_json(flow)
    else:
        print(f"flow {flow['id']}: {flow['status']}")
    return 0


def _cmd_flows_signal(api: Api, ns: argparse.Namespace) -> int:
    if ns.payload is not None and ns.payload_file is not None:
        raise ClientError("give --payload or --payload-file, not both", EXIT_USAGE)
    payload = b""
    if ns.payload_file is not None:
        payload = _read_file(ns.payload_file, "payload file")
    elif ns.payload is not None:
        payload = ns.payload.encode("utf-8", "surrogateescape")
    from urllib.parse import quote

    sent = api.request("POST", _flow_path(ns.id, f"/signals/{quote(ns.name, safe='')}"),
                       content=payload, headers={"Content-Type": "application/octet-stream"})
    if ns.json:
        _print_json(sent)
    else:
        print(f"signal {sent['name']!r} ({sent['size']} bytes) sent to flow {sent['flow_id']}")
    return 0


def _compact(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"),
                                                               ensure_ascii=False)
        if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
            text = json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _cmd_flows_events(api: Api, ns: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:  # every page: a flow's history is read whole
        page = api.request("GET", _flow_path(ns.id, "/events"), params=params)
        items.extend(page["items"])
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    if ns.json:
        _print_json({"items": items, "next_cursor": None})
        return 0
    width = max([len(e["type"]) for e in items] or [0])
    for event in items:
        print(f"{_when(event['at'])}  {event['type'].ljust(width)}  "
              f"{_compact(event.get('data') or {})}".rstrip())
    return 0


def _cmd_flows_query(api: Api, ns: argparse.Namespace) -> int:
    from urllib.parse import quote

    body: dict[str, Any] = {"args": list(ns.args)}
    if ns.fuel is not None:
        body["fuel"] = ns.fuel
    result = api.request("POST", _flow_path(ns.id, f"/query/{quote(ns.export, safe='')}"),
                         json=body)
    if ns.json:
        _print_json(result)
        return 0
    sys.stderr.write(result.get("stderr", ""))
    sys.stdout.write(result.get("stdout", ""))
    for value in result.get("results", []):
        print(value)
    return 0


# --------------------------------------------------------------------------------------------
# dwasm queues

#: The policy fields of ``PUT /v1/queues/{queue}/policy`` and the options that set them.
POLICY_OPTIONS = (("max_attempts", "--max-attempts"), ("backoff_initial", "--backoff"),
                  ("backoff_factor", "--backoff-factor"), ("backoff_max", "--backoff-max"),
                  ("lease_timeout", "--lease-timeout"))


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _age(text: str | None, now: datetime) -> str:
    """How long ago an API timestamp was, coarsely (``42s``, ``3m05s``, ``2h10m``, ``4d03h``);
    ``-`` for none. A clock ahead of this machine's counts as 0."""
    if not text:
        return "-"
    try:
        then = datetime.fromisoformat(text)
    except ValueError:
        return text
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    secs = max(0, int((now - then).total_seconds()))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def _mark(queue: dict[str, Any], field: str, text: str) -> str:
    """``text``, starred when the queue overrides ``field`` (not the service's default)."""
    return text + ("*" if field in (queue.get("overrides") or []) else "")


def _backoff_text(queue: dict[str, Any]) -> str:
    policy = queue["policy"]
    return (_mark(queue, "backoff_initial", _seconds(policy["backoff_initial"]))
            + " x" + _mark(queue, "backoff_factor", f"{policy['backoff_factor']:g}")
            + " max " + _mark(queue, "backoff_max", _seconds(policy["backoff_max"])))


def _queue_row(queue: dict[str, Any], now: datetime) -> list[str]:
    policy = queue["policy"]
    return [queue["name"], str(queue["pending"]), str(queue["leased"]),
            _age(queue.get("oldest_pending_at"), now),
            _mark(queue, "max_attempts", str(policy["max_attempts"])), _backoff_text(queue),
            _mark(queue, "lease_timeout", _seconds(policy["lease_timeout"]))]


def _cmd_queues_list(api: Api, ns: argparse.Namespace) -> int:
    page = api.request("GET", "/v1/queues")
    if ns.json:
        _print_json(page)
        return 0
    if not page["items"]:
        print("no queues (none has pending or leased tasks or a policy of its own)")
        return 0
    now = datetime.now(UTC)
    _table(["QUEUE", "PENDING", "LEASED", "OLDEST PENDING", "MAX ATTEMPTS", "BACKOFF",
            "LEASE TIMEOUT"], [_queue_row(q, now) for q in page["items"]], sys.stdout)
    if any(q.get("overrides") for q in page["items"]):
        print("* set for this queue; the rest is the service's default")
    return 0


def _print_queue(queue: dict[str, Any]) -> None:
    policy = queue["policy"]
    overrides = queue.get("overrides") or []
    oldest = queue.get("oldest_pending_at")
    age = _age(oldest, datetime.now(UTC))

    def value(field: str, text: str) -> str:
        return text + (" (this queue)" if field in overrides else " (default)")

    _fields([("queue", queue["name"]), ("pending", str(queue["pending"])),
             ("leased", str(queue["leased"])),
             ("oldest pending", f"{_when(oldest)} ({age} ago)" if oldest else "-"),
             ("max attempts", value("max_attempts", str(policy["max_attempts"]))),
             ("backoff", value("backoff_initial", _seconds(policy["backoff_initial"]))),
             ("backoff factor", value("backoff_factor", f"{policy['backoff_factor']:g}")),
             ("backoff max", value("backoff_max", _seconds(policy["backoff_max"]))),
             ("lease timeout", value("lease_timeout", _seconds(policy["lease_timeout"])))],
            sys.stdout)


def _queue_path(queue: str, suffix: str = "") -> str:
    return _path("/v1/queues", queue, suffix)


def _show_queue(ns: argparse.Namespace, queue: dict[str, Any]) -> int:
    if ns.json:
        _print_json(queue)
    else:
        _print_queue(queue)
    return 0


def _cmd_queues_get(api: Api, ns: argparse.Namespace) -> int:
    return _show_queue(ns, api.request("GET", _queue_path(ns.queue)))


def _cmd_queues_set_policy(api: Api, ns: argparse.Namespace) -> int:
    body = {field: getattr(ns, field) for field, _ in POLICY_OPTIONS
            if getattr(ns, field) is not None}
    if not body:
        raise ClientError("give at least one of " + ", ".join(o for _, o in POLICY_OPTIONS)
                          + f" (`dwasm queues reset-policy {ns.queue}` returns the queue to "
                          "the default policy)", EXIT_USAGE)
    return _show_queue(ns, api.request("PUT", _queue_path(ns.queue, "/policy"), json=body))


def _cmd_queues_reset_policy(api: Api, ns: argparse.Namespace) -> int:
    api.request("DELETE", _queue_path(ns.queue, "/policy"))
    return _show_queue(ns, api.request("GET", _queue_path(ns.queue)))


def _finite(text: str) -> float:
    """An argparse type: a float that JSON can carry (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# dwasm cluster


def _ranges(numbers: Sequence[int]) -> str:
    """``0-3, 8, 10-11`` for [0, 1, 2, 3, 8, 10, 11]."""
    parts: list[str] = []
    run: list[int] = []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [n]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _owner_counts(assignments: list[dict[str, Any]]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for a in assignments:
        counts[a.get("owner")] = counts.get(a.get("owner"), 0) + 1
    return counts


def _shard_map_lines(view: dict[str, Any]) -> list[str]:
    """The shard map in a few lines: shards per owner, and the shards in handoff."""
    assignments = view.get("assignments")
    if assignments is None:
        return ["shard map: none yet (no coordinator has written one)"]
    counts = _owner_counts(assignments)
    owners = ", ".join(f"{owner} {n}" for owner, n in sorted(
        ((o, n) for o, n in counts.items() if o is not None), key=lambda item: item[0]))
    unassigned = counts.get(None, 0)
    text = f"shard map: {len(assignments)} shards, version {view.get('version', 0)}: "
    text += (owners or "no owner")
    if unassigned:
        text += f"; {unassigned} unassigned"
    lines = [text]
    moving = [(s, a) for s, a in enumerate(assignments) if a.get("next_owner")]
    if not moving:
        lines.append("in handoff: none")
        return lines
    lines.append(f"in handoff: {len(moving)}")
    for shard, a in moving[:20]:
        lines.append(f"  shard {shard}: {a.get('owner') or '-'} -> {a['next_owner']}")
    if len(moving) > 20:
        lines.append(f"  ... and {len(moving) - 20} more (--json has them all)")
    return lines


def _print_cluster(view: dict[str, Any]) -> None:
    shards = view["shards"]
    held = view.get("held")
    held_list = held if isinstance(held, list) else None
    held_count = len(held_list) if held_list is not None else int(held or 0)
    ready = _yes(view.get("ready")) + (" (draining)" if view.get("draining") else "")
    node = view["node_id"] + (f" (incarnation {view['incarnation']})"
                              if view.get("incarnation") else "")
    held_text = f"{held_count} of {shards}"
    if held_list:
        held_text += f": {_ranges(held_list)}"
    pairs = [("mode", view["mode"]), ("node", node), ("ready", ready)]
    if view["mode"] != "single":
        pairs += [("leader", _yes(view.get("leader"))),
                  ("etcd connected", _yes(view.get("etcd_connected"))),
                  ("topology version", str(view.get("version", 0)))]
    pairs.append(("shards held", held_text))
    _fields(pairs, sys.stdout)
    if view["mode"] == "single":
        print(f"single node: {view['node_id']} owns all {shards} shards (no etcd, no shard map)")
        return
    members = view.get("members") or {}
    counts = _owner_counts(view.get("assignments") or [])
    print()
    if members:
        rows = [[node_id + (" (this node)" if node_id == view["node_id"] else ""),
                 m.get("url") or "-", m.get("state") or "-", str(counts.get(node_id, 0)),
                 m.get("incarnation") or "-"] for node_id, m in sorted(members.items())]
        _table(["NODE", "URL", "STATE", "SHARDS", "INCARNATION"], rows, sys.stdout)
    else:
        print("no members in the shard map")
    print()
    for line in _shard_map_lines(view):
        print(line)


def _cmd_cluster(api: Api, ns: argparse.Namespace) -> int:
    view = api.request("GET", "/v1/cluster")
    if ns.json:
        _print_json(view)
    else:
        _print_cluster(view)
    return 0


# --------------------------------------------------------------------------------------------
# Registration


def _run(handler: Callable[[Api, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wraps a handler: builds the client, reports :class:`ClientError` and Ctrl-C."""

    def run(ns: argparse.Namespace) -> int:
        api = None
        try:
            url = ns.url or os.environ.get("DWASM_URL") or DEFAULT_URL
            token = ns.token if ns.token is not None else os.environ.get("DWASM_TOKEN")
            api = Api(url, token)
            return handler(api, ns)
        except ClientError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            for line in exc.details:
                print(line, file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            if api is not None:
                api.close()

    return run


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(ns: argparse.Namespace) -> int:
        parser.print_usage(sys.stderr)
        print(f"error: a subcommand is required ({parser.prog} --help lists them)",
              file=sys.stderr)
        return EXIT_USAGE

    return show


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", metavar="URL",
                        help=f"the service (default: DWASM_URL or {DEFAULT_URL})")
    common.add_argument("--token", metavar="TOKEN",
                        help="bearer token for the service (default: DWASM_TOKEN)")
    common.add_argument("--json", action="store_true",
                        help="print the API's JSON answer instead of the human form")
    return common


def add_client_commands(commands: Any) -> None:
    """Adds ``modules``, ``flows``, ``queues`` and ``cluster`` to the ``dwasm`` subcommands
    (an argparse subparsers object)."""
    common = [_common()]
    fmt = argparse.RawDescriptionHelpFormatter
    epilog = f"environment: DWASM_URL, DWASM_TOKEN\n{WAIT_EXIT_HELP}"

    modules = commands.add_parser("modules", help="upload and inspect modules on a service",
                                  description="Upload WebAssembly modules to a dwasm service "
                                              "and describe them. See docs/cli.md.",
                                  epilog=epilog, formatter_class=fmt)
    modules.set_defaults(handler=_usage(modules))
    msub = modules.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    p = msub.add_parser("upload", parents=common, help="upload a .wasm file; prints its id")
    p.add_argument("file", metavar="FILE.wasm")
    p.set_defaults(handler=_run(_cmd_modules_upload))
    p = msub.add_parser("list", parents=common, help="list modules, newest first")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (1-1000)")
    p.set_defaults(handler=_run(_cmd_modules_list))
    p = msub.add_parser("get", parents=common, help="describe one module")
    p.add_argument("id", metavar="ID", help="sha256:<hex>")
    p.set_defaults(handler=_run(_cmd_modules_get))

    flows = commands.add_parser("flows", help="start, watch and control flows on a service",
                                description="Start flows on a dwasm service, follow them, "
                                            "signal, cancel and query them. See docs/cli.md.",
                                epilog=epilog, formatter_class=fmt)
    flows.set_defaults(handler=_usage(flows))
    fsub = flows.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    p = fsub.add_parser(
        "start", parents=common, help="start a flow (uploading a .wasm file first if given)",
        description="Start a flow of MODULE (an uploaded module's sha256:... id, or a .wasm "
                    "file, uploaded first) with ARGS as argv[1:]; put `--` before ARGS that "
                    "start with '-'. Prints the flow id; with --wait follows the flow and "
                    "ends as it does.", epilog=WAIT_EXIT_HELP, formatter_class=fmt)
    p.add_argument("module", metavar="MODULE", help="sha256:<hex> module id or a .wasm file")
    p.add_argument("args", nargs="*", metavar="ARGS", help="the flow's arguments")
    p.add_argument("--id", metavar="ID", help="choose the flow's id (makes the start "
                                              "idempotent)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment variable of the flow (repeatable)")
    p.add_argument("--stdin", metavar="TEXT", help="the flow's stdin")
    p.add_argument("--stdin-file", metavar="FILE", help="read the flow's stdin from FILE")
    p.add_argument("--wait", action="store_true",
                   help="follow the flow (status on stderr) until it ends; then print its "
                        "stdout and stderr and exit with its exit code")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help=f"with --wait: give up after SECONDS (exit {EXIT_WAIT_TIMEOUT})")
    p.set_defaults(handler=_run(_cmd_flows_start))
    p = fsub.add_parser("get", parents=common, help="a flow's status and output")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=_run(_cmd_flows_get))
    p = fsub.add_parser("list", parents=common, help="list flows, newest first (a table)")
    p.add_argument("--status", choices=["running", "waiting", "completed", "failed",
                                        "cancelled"])
    p.add_argument("--module", metavar="MODULE_ID", help="only flows of this module")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (1-1000)")
    p.set_defaults(handler=_run(_cmd_flows_list))
    p = fsub.add_parser("cancel", parents=common,
                        help="cancel a flow, its pending tasks and its children")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=_run(_cmd_flows_cancel))
    p = fsub.add_parser("signal", parents=common, help="send a signal to a flow")
    p.add_argument("id", metavar="ID")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--payload", metavar="TEXT", help="the payload (default: empty)")
    p.add_argument("--payload-file", metavar="FILE", help="read the payload from FILE")
    p.set_defaults(handler=_run(_cmd_flows_signal))
    p = fsub.add_parser("events", parents=common,
                        help="a flow's history, oldest first, one line per event")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=_run(_cmd_flows_events))
    p = fsub.add_parser(
        "query", parents=common,
        help="call an export on a copy of the flow's latest checkpoint",
        description="Call EXPORT with ARGS (numbers) on a throw-away copy of the flow's latest "
                    "checkpoint; prints its results one per line. The flow is not changed.")
    p.add_argument("id", metavar="ID")
    p.add_argument("export", metavar="EXPORT")
    p.add_argument("args", nargs="*", metavar="ARGS", help="the export's arguments")
    p.add_argument("--fuel", type=int, metavar="N", help="fuel limit (default 10 000 000)")
    p.set_defaults(handler=_run(_cmd_flows_query))

    queues = commands.add_parser("queues", help="queues' backlog and retry policies",
                                 description="Show the task queues of a dwasm service (backlog "
                                             "and the retry policy in force) and set their "
                                             "policies. See docs/cli.md.",
                                 epilog=epilog, formatter_class=fmt)
    queues.set_defaults(handler=_usage(queues))
    qsub = queues.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    p = qsub.add_parser("list", parents=common,
                        help="queues with a backlog or a policy of their own (a table)")
    p.set_defaults(handler=_run(_cmd_queues_list))
    p = qsub.add_parser("get", parents=common, help="one queue's backlog and policy")
    p.add_argument("queue", metavar="QUEUE")
    p.set_defaults(handler=_run(_cmd_queues_get))
    p = qsub.add_parser(
        "set-policy", parents=common, help="set a queue's retry policy",
        description="Replace QUEUE's policy overrides: the options given apply to QUEUE, every "
                    "other field takes the service's default (DWASM_MAX_ATTEMPTS, ...). "
                    "Applies from now on, on every node within a few seconds; a task keeps "
                    "the max attempts it was scheduled with. Prints the queue.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--max-attempts", dest="max_attempts", type=int, metavar="N",
                   help="attempts per task, the first included (1-1000)")
    p.add_argument("--backoff", dest="backoff_initial", type=_finite, metavar="S",
                   help="seconds before the second attempt (0-86400)")
    p.add_argument("--backoff-factor", dest="backoff_factor", type=_finite, metavar="F",
                   help="each further backoff is F times longer (1-100)")
    p.add_argument("--backoff-max", dest="backoff_max", type=_finite, metavar="S",
                   help="the longest backoff, seconds (0-604800)")
    p.add_argument("--lease-timeout", dest="lease_timeout", type=_finite, metavar="S",
                   help="seconds a lease lasts without a heartbeat (above 0, up to 86400)")
    p.set_defaults(handler=_run(_cmd_queues_set_policy))
    p = qsub.add_parser("reset-policy", parents=common,
                        help="return a queue to the service's default policy",
                        description="Drop QUEUE's policy overrides (an error if it has none); "
                                    "prints the queue.")
    p.add_argument("queue", metavar="QUEUE")
    p.set_defaults(handler=_run(_cmd_queues_reset_policy))

    p = commands.add_parser(
        "cluster", parents=common, help="the cluster as a node sees it",
        description="This node (mode, id, readiness, shard map version, shards it holds), the "
                    "members (url, state, shards owned) and a summary of the shard map "
                    "(shards per owner, shards in handoff). See docs/cluster.md.",
        epilog=epilog, formatter_class=fmt)
    p.set_defaults(handler=_run(_cmd_cluster))
