"""The console's static files, read once into memory with their content types and ETags.

Serving from a fixed in-memory table (rather than the file system per request) means a request
path can only ever name one of these files: no traversal, no directory listings. The
``version`` (a hash of every file) goes into the asset URLs that ``index.html`` uses, so those
URLs can be cached for good and still change with every release.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

#: The placeholder in ``index.html`` replaced by the versioned asset path (relative to /ui).
STATIC_PLACEHOLDER = "{{static}}"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class Assets:
    files: dict[str, Asset]
    version: str
    index: Asset

    def get(self, name: str) -> Asset | None:
        return self.files.get(name)


def _asset(name: str, body: bytes) -> Asset:
    suffix = name[name.rfind("."):] if "." in name else ""
    digest = hashlib.sha256(body).hexdigest()[:20]
    return Asset(name, body, CONTENT_TYPES.get(suffix, "application/octet-stream"),
                 f'"{digest}"')


def load_assets(package: str = "app.console", folder: str = "static") -> Assets:
    """Every file under ``package/folder`` (recursively), plus the rendered index page."""
    root = resources.files(package).joinpath(folder)
    files: dict[str, Asset] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name.startswith(".") or child.name == "__pycache__":
                continue
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif child.name[child.name.rfind("."):] in CONTENT_TYPES:
                files[name] = _asset(name, child.read_bytes())

    walk(root, "")
    if "index.html" not in files:
        raise RuntimeError(f"the console's index.html is missing from {package}/{folder}")
    overall = hashlib.sha256()
    for name in sorted(files):
        overall.update(name.encode() + b"\0" + files[name].body + b"\0")
    version = overall.hexdigest()[:12]
    page = files.pop("index.html").body.replace(STATIC_PLACEHOLDER.encode(),
                                                f"ui/static/{version}".encode())
    return Assets(files, version, _asset("index.html", page))
