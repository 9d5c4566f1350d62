"""``dwasm queues list|get|set-policy|reset-policy``: the task queues' backlog and the retry
policy in force, with the fields a queue overrides marked."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from .api import Api, resource_path
from .errors import EXIT_USAGE, ClientError
from .output import fields, print_json, table, when

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


def cmd_list(api: Api, ns: argparse.Namespace) -> int:
    page = api.request("GET", "/v1/queues")
    if ns.json:
        print_json(page)
        return 0
    if not page["items"]:
        print("no queues (none has pending or leased tasks or a policy of its own)")
        return 0
    now = datetime.now(UTC)
    table(["QUEUE", "PENDING", "LEASED", "OLDEST PENDING", "MAX ATTEMPTS", "BACKOFF",
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

    fields([("queue", queue["name"]), ("pending", str(queue["pending"])),
            ("leased", str(queue["leased"])),
            ("oldest pending", f"{when(oldest)} ({age} ago)" if oldest else "-"),
            ("max attempts", value("max_attempts", str(policy["max_attempts"]))),
            ("backoff", value("backoff_initial", _seconds(policy["backoff_initial"]))),
            ("backoff factor", value("backoff_factor", f"{policy['backoff_factor']:g}")),
            ("backoff max", value("backoff_max", _seconds(policy["backoff_max"]))),
            ("lease timeout", value("lease_timeout", _seconds(policy["lease_timeout"])))],
           sys.stdout)


def _queue_path(queue: str, suffix: str = "") -> str:
    return resource_path("/v1/queues", queue, suffix)


def _show_queue(ns: argparse.Namespace, queue: dict[str, Any]) -> int:
    if ns.json:
        print_json(queue)
    else:
        _print_queue(queue)
    return 0


def cmd_get(api: Api, ns: argparse.Namespace) -> int:
    return _show_queue(ns, api.request("GET", _queue_path(ns.queue)))


def cmd_set_policy(api: Api, ns: argparse.Namespace) -> int:
    body = {field: getattr(ns, field) for field, _ in POLICY_OPTIONS
            if getattr(ns, field) is not None}
    if not body:
        raise ClientError("give at least one of " + ", ".join(o for _, o in POLICY_OPTIONS)
                          + f" (`dwasm queues reset-policy {ns.queue}` returns the queue to "
                          "the default policy)", EXIT_USAGE)
    return _show_queue(ns, api.request("PUT", _queue_path(ns.queue, "/policy"), json=body))


def cmd_reset_policy(api: Api, ns: argparse.Namespace) -> int:
    api.request("DELETE", _queue_path(ns.queue, "/policy"))
    return _show_queue(ns, api.request("GET", _queue_path(ns.queue)))
