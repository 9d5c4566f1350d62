"""FastAPI dependencies shared by all routers, and opaque pagination cursors.

Routers get the app's objects through these instead of importing globals, so that several apps
(tests) can live in one process::

    @router.get("/{id}", name="get")
    async def get_flow(id: str, db: DB, settings: SettingsDep) -> Flow: ...

``app.state`` holds: ``settings`` (:class:`~app.api.settings.Settings`), ``db``
(:class:`~app.db.Database`, set once the lifespan has connected), ``metrics``
(:class:`~app.api.metrics.Registry`), ``engine`` (whatever ``engine_factory`` returned, or
None), ``ready_checks`` (name → async check, see :mod:`app.api.routers.health`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from ..db import Database
from .fields import storable_text
from .metrics import Registry
from .problems import ProblemError
from .settings import Settings


def get_db(request: Request) -> Database:
    db = getattr(request.app.state, "db", None)
    if db is None:
        raise ProblemError(503, "not-ready", "the service is starting; the database is not "
                           "connected yet")
    return db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Registry:
    return request.app.state.metrics


def get_engine(request: Request) -> Any:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise ProblemError(503, "not-ready", "the flow engine is not running")
    return engine


DB = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Registry, Depends(get_metrics)]
EngineDep = Annotated[Any, Depends(get_engine)]


#: The OpenAPI ``format`` of pagination cursors: opaque strings that a ``next_cursor`` of the
#: same listing gives (base64url of the last item's sort key); anything else is a 422.
CURSOR_FORMAT = "dwasm-cursor"


def _cursor_schema(schema: dict[str, Any]) -> None:
    """A query parameter is a string or absent, never null: no ``anyOf`` with ``null``."""
    schema.pop("anyOf", None)
    schema.update(type="string", format=CURSOR_FORMAT)


Cursor = Annotated[str | None, Query(description="next_cursor of the previous page (opaque)",
                                     json_schema_extra=_cursor_schema)]


def encode_cursor(*values: Any) -> str:
    """An opaque cursor for keyset pagination: the sort key of the last item returned.

    Values must be JSON-serialisable (turn datetimes into ISO strings first).
    """
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _storable(value: Any) -> bool:
    """A value the database can take: text without NUL or unpaired surrogates, or a 64-bit
    integer. A cursor of ours holds nothing else; a forged one must not reach the database."""
    if isinstance(value, str):
        return storable_text(value)
    return isinstance(value, int) and not isinstance(value, bool) \
        and -(1 << 63) <= value < (1 << 63)


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The values :func:`encode_cursor` packed; a 422 problem if the cursor is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != arity \
            or not all(_storable(value) for value in values):
        # Its own kind, not ``validation``: the string is well-formed, this API did not make it.
        raise ProblemError(422, "invalid-cursor", "cursor: not a cursor returned by this "
                           "listing", title="Request validation failed",
                           errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor",
                                    "type": "value_error"}])
    return values
