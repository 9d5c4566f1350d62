"""``/ui``: the console page and ``/ui/static/...``: its assets. Not in the OpenAPI document.

``/ui`` is one page; the console routes in the URL fragment (``/ui#/flows/f-1``), so the
server needs no route per view. The page names its assets relative to itself
(``ui/static/<version>/app.js``) and calls the API relative to itself too (``v1/flows``),
which keeps the console working behind a path prefix and through any node.

Caching: the page is ``no-cache`` (revalidated with its ETag every time) so that a new
release is picked up at once; assets under the current version are immutable for a year.
Assets under another (older) version or no version are still served, ``no-cache``: a page
loaded from a node of the previous release keeps working during a rolling upgrade.
"""

from __future__ import annotations

import re
from functools import lru_cache

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from ..api.problems import ProblemError
from .assets import Asset, Assets, load_assets

router = APIRouter(include_in_schema=False)

_VERSION_SEGMENT = re.compile(r"^[0-9a-f]{12}$")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
#: Only this origin's scripts, styles and API: the console fetches nothing from elsewhere.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@lru_cache(maxsize=1)
def assets() -> Assets:
    """Read on first use and kept: the files ship with the package and do not change."""
    return load_assets()


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return etag in tags


def _serve(request: Request, asset: Asset, cache_control: str,
           extra: dict[str, str] | None = None) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": cache_control,
               "X-Content-Type-Options": "nosniff", **(extra or {})}
    if _matches(request.headers.get("if-none-match"), asset.etag):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    response = Response(body, media_type=asset.content_type, headers=headers)
    if request.method == "HEAD":
        response.headers["content-length"] = str(len(asset.body))
    return response


@router.api_route("/ui", methods=["GET", "HEAD"])
async def console_page(request: Request) -> Response:
    return _serve(request, assets().index, REVALIDATE,
                  {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"})


@router.api_route("/ui/", methods=["GET", "HEAD"])
async def console_page_slash() -> Response:
    # Relative, so that it also works behind a path prefix; the fragment survives redirects.
    return RedirectResponse("../ui", status_code=308)


@router.api_route("/ui/static/{path:path}", methods=["GET", "HEAD"])
async def console_asset(request: Request, path: str) -> Response:
    bundle = assets()
    first, sep, rest = path.partition("/")
    cache_control = REVALIDATE
    if sep and _VERSION_SEGMENT.match(first):
        path = rest
        if first == bundle.version:
            cache_control = IMMUTABLE
    asset = bundle.get(path)
    if asset is None:
        raise ProblemError(404, "not-found", f"the console has no file {path!r}")
    return _serve(request, asset, cache_control)
