"""``dwasm modules upload|list|get``, and the upload that ``flows start FILE.wasm`` does first."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .api import Api, resource_path
from .inputs import read_file
from .output import fields, print_json, table, when


def upload(api: Api, path: str) -> dict[str, Any]:
    data = read_file(path, "module")
    return api.request("POST", "/v1/modules", content=data,
                       headers={"Content-Type": "application/wasm"})


def cmd_upload(api: Api, ns: argparse.Namespace) -> int:
    info = upload(api, ns.file)
    if ns.json:
        print_json(info)
    else:
        print(info["id"])
    return 0


def _module_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for m in items:
        funcs = [e["name"] for e in m.get("exports", []) if e.get("kind") == "func"]
        rows.append([m["id"], str(m["size"]), when(m.get("created_at")),
                     ", ".join(funcs) or "-"])
    return rows


def cmd_list(api: Api, ns: argparse.Namespace) -> int:
    page = api.request("GET", "/v1/modules", params={"limit": ns.limit})
    if ns.json:
        print_json(page)
        return 0
    if not page["items"]:
        print("no modules")
        return 0
    table(["ID", "SIZE", "CREATED", "EXPORTED FUNCTIONS"], _module_rows(page["items"]),
          sys.stdout)
    if page.get("next_cursor"):
        print(f"(more modules: raise --limit above {ns.limit})")
    return 0


def cmd_get(api: Api, ns: argparse.Namespace) -> int:
    info = api.request("GET", resource_path("/v1/modules", ns.id))
    if ns.json:
        print_json(info)
        return 0
    imports = [f"{i['module']}.{i['name']} ({i['kind']})" for i in info.get("imports", [])]
    exports = [f"{e['name']} ({e['kind']})" for e in info.get("exports", [])]
    fields([("id", info["id"]), ("size", f"{info['size']} bytes"),
            ("created", when(info.get("created_at"))),
            ("imports", ", ".join(imports) or "-"), ("exports", ", ".join(exports) or "-")],
           sys.stdout)
    return 0


def resolve_module(api: Api, module: str) -> str:
    """MODULE as given: an uploaded module's id, or a .wasm file to upload first."""
    if module.startswith("sha256:"):
        return module
    return upload(api, module)["id"]
