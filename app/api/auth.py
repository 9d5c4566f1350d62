"""Bearer tokens with scopes: who may call what.

``DWASM_API_TOKENS`` holds comma-separated entries ``SCOPES:TOKEN``, where SCOPES is one or more
of ``client``, ``worker``, ``admin`` joined by ``+`` (``client+worker:s3cr3t``); a bare ``TOKEN``
is an admin token. A request names its token as ``Authorization: Bearer TOKEN``.

* ``worker``: the workers' endpoints (leases, heartbeats, reports, reading tasks);
* ``client``: modules and flows (start, read, cancel, signal, query) and reading queues;
* ``admin``: all of the above, plus queue policies and the cluster view.

``/healthz``, ``/readyz``, ``/metrics`` and the API documentation (``/docs``, ``/openapi.json``)
need no token: probes and scrapers reach them from inside the deployment. Neither do the web
console's files (``/ui``, ``/ui/static/...``): they hold no data, and the console asks for a
token when its API calls are answered 401. Missing or unknown tokens are answered 401 with
``WWW-Authenticate: Bearer``, a known token without the scope 403, both as problem details.
Tokens are compared in constant time.

With no tokens configured every request is allowed: ``dwasm serve`` then listens on loopback
only, and says so, unless started with ``--allow-no-auth`` (``DWASM_ALLOW_NO_AUTH=1``)
(:func:`check_bind`).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from .problems import problem_response, problem_type

SCOPES = ("client", "worker", "admin")
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json",
              "/ui", "/ui/")
OPEN_PREFIXES = ("/docs/", "/ui/static/")

# (method or "*", path pattern, scope) — first match wins; admin may do everything.
_RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/v1/queues/[^/]+/lease(-batch)?$"), "worker"),
    ("*", re.compile(r"^/v1/tasks/"), "worker"),
    ("POST", re.compile(r"^/v1/task-reports$"), "worker"),
    ("GET", re.compile(r"^/v1/queues(/[^/]+)?$"), "client"),
    ("*", re.compile(r"^/v1/queues/"), "admin"),
    ("*", re.compile(r"^/v1/cluster"), "admin"),
    ("*", re.compile(r"^/v1/(modules|flows)"), "client"),
]


class AuthConfigError(ValueError):
    """``DWASM_API_TOKENS`` (or the bind address) cannot be used; the message says why."""


@dataclass(frozen=True)
class Token:
    value: str
    scopes: frozenset[str]


def parse_tokens(text: str | None) -> tuple[Token, ...]:
    """``"client:abc,worker+client:def,ghi"`` → tokens; raises :class:`AuthConfigError`."""
    tokens: list[Token] = []
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        scopes_text, sep, value = entry.rpartition(":")
        if not sep:
            scopes = frozenset({"admin"})
        else:
            scopes = frozenset(s.strip() for s in scopes_text.split("+"))
            unknown = scopes - set(SCOPES)
            if unknown or not scopes:
                raise AuthConfigError(f"DWASM_API_TOKENS: unknown scope(s) {sorted(unknown)} in "
                                      f"an entry; scopes are {', '.join(SCOPES)}")
        if len(value) < 16:
            raise AuthConfigError("DWASM_API_TOKENS: a token must be at least 16 characters")
        tokens.append(Token(value, scopes))
    return tuple(tokens)


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs; None for the open paths."""
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    for rule_method, pattern, scope in _RULES:
        if rule_method in ("*", method) and pattern.match(path):
            return scope
    return "admin"


def check_bind(host: str, tokens: tuple[Token, ...], allow_no_auth: bool) -> str | None:
    """Refuses (AuthConfigError) to listen beyond loopback without tokens unless allowed;
    returns a notice to print when the node runs without authentication."""
    if tokens:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_no_auth:
        raise AuthConfigError(
            f"refusing to listen on {host} without authentication: set DWASM_API_TOKENS "
            "(scopes and format: docs/flows.md, Configuration), or pass --allow-no-auth "
            "(DWASM_ALLOW_NO_AUTH=1) to accept requests from anyone who can reach it")
    where = "loopback only" if loopback else f"{host}, open to anyone who can reach it"
    return f"no API tokens configured (DWASM_API_TOKENS): every request is allowed ({where})"


class AuthMiddleware:
    """Pure ASGI: answers 401/403 before the request reaches forwarding or a handler."""

    def __init__(self, app: ASGIApp, tokens: tuple[Token, ...]) -> None:
        self.app = app
        self.tokens = tokens

    def _scopes(self, scope: Scope) -> frozenset[str] | None:
        header = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
                break
        kind, _, given = header.decode("latin-1").partition(" ")
        if kind.lower() != "bearer" or not given:
            return None
        found: frozenset[str] | None = None
        for token in self.tokens:  # every token is compared: no early exit on a match
            if hmac.compare_digest(token.value.encode(), given.strip().encode()):
                found = token.scopes
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens:
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope.get("method", "GET"), scope.get("path", ""))
        if needed is None:
            await self.app(scope, receive, send)
            return
        granted = self._scopes(scope)
        if granted is None:
            response = problem_response(
                401, type=problem_type("unauthorized"), detail="a valid bearer token is "
                "required (Authorization: Bearer <token>)", instance=scope.get("path"),
                headers={"WWW-Authenticate": 'Bearer realm="dwasm"'})
        elif needed in granted or "admin" in granted:
            await self.app(scope, receive, send)
            return
        else:
            response = problem_response(
                403, type=problem_type("forbidden"), detail=f"this token lacks the "
                f"{needed!r} scope", instance=scope.get("path"), required_scope=needed)
        await response(scope, receive, send)
