"""``dwasm flows start|get|list|cancel|signal|events|query``, with ``start --wait``: following a
flow until it ends (status on stderr) and ending with its exit code."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any, TextIO

from .api import Api, resource_path
from .errors import (
    EXIT_FLOW_CANCELLED,
    EXIT_FLOW_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
    ClientError,
)
from .inputs import parse_env, read_file
from .modules import resolve_module
from .output import fields, print_json, table, when

TERMINAL = ("completed", "failed", "cancelled")


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
        text += f" until {when(waiting['until'])}"
    return text


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


def _flow_path(flow_id: str, suffix: str = "") -> str:
    return resource_path("/v1/flows", flow_id, suffix)


def _print_flow(flow: dict[str, Any]) -> None:
    exit_code = flow.get("exit_code")
    fields([("id", flow["id"]), ("module", flow["module"]), ("status", flow["status"]),
            ("exit code", "-" if exit_code is None else str(exit_code)),
            ("error", flow.get("error") or "-"),
            ("waiting for", _waiting_text(flow.get("waiting")) or "-"),
            ("parent", flow.get("parent_id") or "-"),
            ("checkpoints", str(flow.get("checkpoint_seq", 0))),
            ("created", when(flow.get("created_at"))),
            ("updated", when(flow.get("updated_at"))),
            ("finished", when(flow.get("finished_at"))),
            ("args", " ".join(flow.get("args", [])) or "-"),
            ("env", " ".join(f"{k}={v}" for k, v in (flow.get("env") or {}).items()) or "-")],
           sys.stdout)
    _block("stdout", _output_bytes(flow, "stdout"), sys.stdout)
    _block("stderr", _output_bytes(flow, "stderr"), sys.stdout)


def cmd_start(api: Api, ns: argparse.Namespace) -> int:
    if ns.stdin is not None and ns.stdin_file is not None:
        raise ClientError("give --stdin or --stdin-file, not both", EXIT_USAGE)
    if ns.timeout is not None and not ns.wait:
        raise ClientError("--timeout needs --wait", EXIT_USAGE)
    if ns.timeout is not None and ns.timeout <= 0:
        raise ClientError("--timeout must be positive", EXIT_USAGE)
    body: dict[str, Any] = {"args": list(ns.args), "env": parse_env(ns.env)}
    if ns.stdin_file is not None:
        data = read_file(ns.stdin_file, "stdin file")
        try:
            body["stdin"] = data.decode("utf-8")
        except UnicodeDecodeError:
            body["stdin_base64"] = base64.b64encode(data).decode("ascii")
    elif ns.stdin is not None:
        body["stdin"] = ns.stdin
    if ns.id is not None:
        body["id"] = ns.id
    body["module"] = resolve_module(api, ns.module)
    flow = api.request("POST", "/v1/flows", json=body)
    if not ns.wait:
        if ns.json:
            print_json(flow)
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
        print_json(flow)
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


def cmd_get(api: Api, ns: argparse.Namespace) -> int:
    flow = api.request("GET", _flow_path(ns.id))
    if ns.json:
        print_json(flow)
    else:
        _print_flow(flow)
    return 0


def cmd_list(api: Api, ns: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": ns.limit}
    if ns.status:
        params["status"] = ns.status
    if ns.module:
        params["module"] = ns.module
    page = api.request("GET", "/v1/flows", params=params)
    if ns.json:
        print_json(page)
        return 0
    if not page["items"]:
        print("no flows")
        return 0
    rows = [[f["id"], f["status"], "-" if f.get("exit_code") is None else str(f["exit_code"]),
             _short_module(f["module"]), when(f.get("created_at")),
             _waiting_text(f.get("waiting")) or f.get("error") or ""]
            for f in page["items"]]
    table(["ID", "STATUS", "EXIT", "MODULE", "CREATED", "WAITING FOR / ERROR"], rows,
          sys.stdout)
    if page.get("next_cursor"):
        print(f"(more flows: raise --limit above {ns.limit})")
    return 0


def cmd_cancel(api: Api, ns: argparse.Namespace) -> int:
    flow = api.request("POST", _flow_path(ns.id, "/cancel"))
    if ns.json:
        print_json(flow)
    else:
        print(f"flow {flow['id']}: {flow['status']}")
    return 0


def cmd_signal(api: Api, ns: argparse.Namespace) -> int:
    if ns.payload is not None and ns.payload_file is not None:
        raise ClientError("give --payload or --payload-file, not both", EXIT_USAGE)
    payload = b""
    if ns.payload_file is not None:
        payload = read_file(ns.payload_file, "payload file")
    elif ns.payload is not None:
        payload = ns.payload.encode("utf-8", "surrogateescape")
    sent = api.request("POST", _flow_path(ns.id, resource_path("/signals", ns.name)),
                       content=payload, headers={"Content-Type": "application/octet-stream"})
    if ns.json:
        print_json(sent)
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


def cmd_events(api: Api, ns: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:  # every page: a flow's history is read whole
        page = api.request("GET", _flow_path(ns.id, "/events"), params=params)
        items.extend(page["items"])
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    if ns.json:
        print_json({"items": items, "next_cursor": None})
        return 0
    width = max([len(e["type"]) for e in items] or [0])
    for event in items:
        print(f"{when(event['at'])}  {event['type'].ljust(width)}  "
              f"{_compact(event.get('data') or {})}".rstrip())
    return 0


def cmd_query(api: Api, ns: argparse.Namespace) -> int:
    body: dict[str, Any] = {"args": list(ns.args)}
    if ns.fuel is not None:
        body["fuel"] = ns.fuel
    result = api.request("POST", _flow_path(ns.id, resource_path("/query", ns.export)),
                         json=body)
    if ns.json:
        print_json(result)
        return 0
    sys.stderr.write(result.get("stderr", ""))
    sys.stdout.write(result.get("stdout", ""))
    for value in result.get("results", []):
        print(value)
    return 0
