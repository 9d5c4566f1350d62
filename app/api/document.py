"""What the served OpenAPI document adds to FastAPI's: the answers that come from below the
routes, and the bearer-token security scheme.

FastAPI documents what a route declares. Middleware answers too, for every route it covers, and
those answers belong in the document as much as the handlers' own:

* :class:`~app.api.auth.AuthMiddleware`: 401 (with ``WWW-Authenticate``) and 403 on every
  operation that needs a token — those carry ``security: [{bearerAuth: []}]`` and
  ``x-dwasm-scopes``, the token scopes that may call them (:func:`app.api.auth.required_scope`;
  ``admin`` may call everything). The open paths (probes, metrics, docs) carry no security.
* the request body: 413 from :class:`~app.api.limits.BodyLimitMiddleware` for any operation
  that takes one, and 400 from FastAPI for a JSON body it cannot parse (bytes that are not
  UTF-8 text; text that is not JSON is a 422).
* readiness: 503 ``not-ready`` while the database or the flow engine is not up, for every
  ``/v1`` operation.
* forwarding (:mod:`forwarding.middleware`, docs/cluster.md): operations on one flow that a node
  may forward to the flow's owner can also answer 502 ``outcome-unknown``, 504
  ``forward-timeout``, 503 (shard in handoff, owner unreachable; ``Retry-After``) and, to a node
  that forwarded to the wrong owner, 421 ``misdirected`` (a batch of task reports: only 421; its
  parts' delivery problems are in its results). Reads of one flow take the
  ``X-Dwasm-Consistency`` header (400 for an unknown mode).
"""

from __future__ import annotations

import copy
from typing import Any

from forwarding.middleware import CONSISTENCY, CONSISTENCY_MODES, DEFAULT_CONSISTENCY
from forwarding.routes import Kind, classify

from .auth import SCOPES, required_scope
from .problems import PROBLEM_MEDIA_TYPE

SECURITY_SCHEME = "bearerAuth"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Sample values for path parameters, so that a path template can be classified like a request.
_SAMPLE_PARAMS = {"flow_id": "f", "task_id": "f/1"}

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "integer", "minimum": 0}}}

_UNKNOWN_CONSISTENCY = "An unknown `X-Dwasm-Consistency` mode"
_COMMON: dict[int, str] = {
    400: "The JSON body cannot be parsed: it is not UTF-8 text",
    401: "No token, or an unknown one (`Authorization: Bearer <token>`)",
    403: "The token lacks the scope this operation needs (`x-dwasm-scopes`)",
    413: "The request body exceeds its limit (the larger of `DWASM_MAX_MODULE_SIZE` and "
         "4/3 of `DWASM_MAX_PAYLOAD` plus 1 MiB for any request; an operation's own limit "
         "for its payload)",
    421: "Sent only to another dwasm node: a request it forwarded here concerns a flow this "
         "node does not own (docs/cluster.md)",
    502: "Forwarded to the flow's owner, which failed before answering: the outcome is "
         "unknown (send it again with an `Idempotency-Key` where one is taken)",
    503: "Not ready: the database or the flow engine is not up yet, or (in a cluster) the "
         "flow's shard is moving or its owner cannot be reached",
    504: "Forwarded to the flow's owner, which did not answer in time",
}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    if headers:
        response["headers"] = copy.deepcopy(headers)
    return response


def _add(operation: dict[str, Any], status: int, headers: dict[str, Any] | None = None,
         description: str | None = None) -> None:
    """Declares ``status`` (with ``description``, default the common one); a status the route
    or an earlier call declared keeps its description, extended by ``description``."""
    responses = operation.setdefault("responses", {})
    text = description or _COMMON[status]
    existing = responses.get(str(status))
    if existing is None:
        responses[str(status)] = _problem(text, headers)
        return
    if description and description not in existing.get("description", ""):
        existing["description"] = f"{existing.get('description', '')}; or: {description}"
    if headers:
        existing.setdefault("headers", {}).update(copy.deepcopy(headers))


def _sample_path(template: str) -> str:
    path = template
    for name, value in _SAMPLE_PARAMS.items():
        path = path.replace(f"{{{name}}}", value)
    while "{" in path:
        start = path.index("{")
        path = path[:start] + "x" + path[path.index("}", start) + 1:]
    return path


def _takes_body(operation: dict[str, Any]) -> tuple[bool, bool]:
    """(takes a body, takes a JSON body)."""
    content = operation.get("requestBody", {}).get("content", {})
    return bool(content), any(media == "application/json" or media.endswith("+json")
                              for media in content)


def _secure(operation: dict[str, Any], scope: str) -> None:
    scopes = [scope] if scope == "admin" else [scope, "admin"]
    operation["security"] = [{SECURITY_SCHEME: []}]
    operation["x-dwasm-scopes"] = scopes
    note = (f"Needs a bearer token with the `{scope}` scope"
            + ("" if scope == "admin" else " (or `admin`)") + ".")
    description = operation.get("description")
    operation["description"] = f"{description}\n\n{note}" if description else note
    _add(operation, 401, {"WWW-Authenticate": {
        "description": "`Bearer realm=\"dwasm\"`", "required": True,
        "schema": {"type": "string"}}})
    _add(operation, 403)


def _consistency_header(operation: dict[str, Any]) -> None:
    parameters = operation.setdefault("parameters", [])
    if any(p.get("in") == "header" and p.get("name", "").lower() == CONSISTENCY
           for p in parameters):
        return
    parameters.append({
        "name": "X-Dwasm-Consistency", "in": "header", "required": False,
        "description": "In a cluster: `strong` reads the flow at its owner; `session` and "
                       "`eventual` read it from the database on the node asked (the default "
                       f"is `{DEFAULT_CONSISTENCY}`).",
        "schema": {"type": "string", "enum": list(CONSISTENCY_MODES)}})
    _add(operation, 400, description=_UNKNOWN_CONSISTENCY)


def complete_document(schema: dict[str, Any]) -> dict[str, Any]:
    """Adds the middleware answers and the security scheme to FastAPI's ``schema`` (in place;
    returns it). See the module docstring."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[SECURITY_SCHEME] = {
        "type": "http", "scheme": "bearer",
        "description": "A token from `DWASM_API_TOKENS`, with the scopes "
                       f"{', '.join(f'`{s}`' for s in SCOPES)} (`admin` may call everything). "
                       "A node started without tokens (loopback only, or `--allow-no-auth`) "
                       "accepts every request."}
    for template, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            path = _sample_path(template)
            scope = required_scope(method.upper(), path)
            if scope is not None:
                _secure(operation, scope)
            takes_body, takes_json = _takes_body(operation)
            if takes_body:
                _add(operation, 413)
            if takes_json:
                _add(operation, 400)
            if not template.startswith("/v1/"):
                continue
            _add(operation, 503, _RETRY_AFTER)
            route = classify(method.upper(), path)
            if route.kind is Kind.READ:
                _consistency_header(operation)
            if route.kind is Kind.TASK_REPORTS:
                _add(operation, 421)  # each part's delivery problems are in its results
            elif route.kind is not Kind.LOCAL:
                for status in (421, 502, 504):
                    _add(operation, status)
    return schema
