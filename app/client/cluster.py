"""``dwasm cluster``: the cluster as one node sees it (this node, the members, a summary of the
shard map), or a single node's mode."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .api import Api
from .output import fields, print_json, table


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
    fields(pairs, sys.stdout)
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
        table(["NODE", "URL", "STATE", "SHARDS", "INCARNATION"], rows, sys.stdout)
    else:
        print("no members in the shard map")
    print()
    for line in _shard_map_lines(view):
        print(line)


def cmd_show(api: Api, ns: argparse.Namespace) -> int:
    view = api.request("GET", "/v1/cluster")
    if ns.json:
        print_json(view)
    else:
        _print_cluster(view)
    return 0
