"""``/v1/modules``: upload WebAssembly modules, content-addressed by the SHA-256 of their bytes.

An upload is decoded and validated by vm/ before it is stored, so every stored module is one a
flow can be started from. The same bytes always give the same id: uploading them again answers
200 with the stored description instead of 201.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

import vm
from vm import structure as S
from vm.errors import InvalidError, MalformedError

from ..deps import DB, Cursor, SettingsDep, decode_cursor, encode_cursor
from ..limits import read_body
from ..problems import ProblemError, problem_responses

WASM_MEDIA_TYPE = "application/wasm"
MODULE_ID_PATTERN = r"^sha256:[0-9a-f]{64}$"

router = APIRouter(prefix="/v1/modules", tags=["modules"],
                   responses=problem_responses(422))

ModuleId = Annotated[str, Path(pattern=MODULE_ID_PATTERN, description="sha256:<64 hex digits>",
                               examples=["sha256:" + "0" * 64])]


class ModuleImport(BaseModel):
    module: str
    name: str
    kind: str = Field(description="func, table, memory or global")


class ModuleExport(BaseModel):
    name: str
    kind: str = Field(description="func, table, memory or global")


class ModuleInfo(BaseModel):
    """A stored module (its bytes are not included)."""

    id: str = Field(description="sha256:<hex> of the module's bytes", pattern=MODULE_ID_PATTERN)
    size: int = Field(description="bytes")
    imports: list[ModuleImport]
    exports: list[ModuleExport]
    created_at: datetime


class ModuleList(BaseModel):
    items: list[ModuleInfo]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; "
                                                      "null on the last page")


def describe(module: S.Module) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The imports and exports of a decoded module, as stored and returned."""
    imports = [{"module": imp.module, "name": imp.name, "kind": S.KIND_NAMES[imp.kind]}
               for imp in module.imports]
    exports = [{"name": exp.name, "kind": S.KIND_NAMES[exp.kind]} for exp in module.exports]
    return imports, exports


def _info(row: Any) -> ModuleInfo:
    return ModuleInfo(id=row["id"], size=row["size"], imports=row["imports"],
                      exports=row["exports"], created_at=row["created_at"])


_INVALID = "Invalid WebAssembly module"
_SELECT = "SELECT id, size, imports, exports, created_at FROM modules"


def _check_content_type(request: Request) -> None:
    raw = request.headers.get("content-type")
    media = (raw or "").split(";", 1)[0].strip().lower()
    if media != WASM_MEDIA_TYPE:
        got = f"got {raw!r}" if raw else "got none"
        raise ProblemError(415, "unsupported-media-type",
                           f"upload the module's raw bytes with Content-Type: "
                           f"{WASM_MEDIA_TYPE} ({got})")


@router.post(
    "", name="upload", status_code=201, response_model=ModuleInfo,
    summary="Upload a WebAssembly module",
    description="The body is the module's binary. It is decoded and validated; an invalid "
                "module gets a 422 problem with the reason. Returns 201 for a new module and "
                "200 when the same bytes were uploaded before.",
    responses={200: {"model": ModuleInfo, "description": "already stored"},
               **problem_responses(413, 415, 422)},
    openapi_extra={"requestBody": {"required": True, "content": {
        WASM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
async def upload(request: Request, response: Response, db: DB,
                 settings: SettingsDep) -> ModuleInfo:
    _check_content_type(request)
    data = await read_body(request, settings.max_module_size, "module")
    if not data:
        raise ProblemError(422, "invalid-module", "the body is empty; send the module's bytes",
                           title=_INVALID, reason="malformed")
    module_id = "sha256:" + hashlib.sha256(data).hexdigest()
    response.headers["Location"] = f"/v1/modules/{module_id}"
    row = await db.pool.fetchrow(f"{_SELECT} WHERE id = $1", module_id)
    if row is not None:
        response.status_code = 200
        return _info(row)
    try:
        module = await asyncio.to_thread(vm.load, data)
    except MalformedError as exc:
        raise ProblemError(422, "invalid-module", f"malformed module: {exc}", title=_INVALID,
                           reason="malformed") from None
    except InvalidError as exc:
        raise ProblemError(422, "invalid-module", f"invalid module: {exc}", title=_INVALID,
                           reason="invalid") from None
    imports, exports = describe(module)
    row = await db.pool.fetchrow(
        "INSERT INTO modules (id, bytes, size, imports, exports) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (id) DO NOTHING RETURNING id, size, imports, exports, created_at",
        module_id, data, len(data), imports, exports)
    if row is None:  # a concurrent upload of the same bytes won
        response.status_code = 200
        row = await db.pool.fetchrow(f"{_SELECT} WHERE id = $1", module_id)
    return _info(row)


@router.get("", name="list", response_model=ModuleList, summary="List modules, newest first")
async def list_modules(db: DB,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       cursor: Cursor = None
                       ) -> ModuleList:
    if cursor is None:
        rows = await db.pool.fetch(f"{_SELECT} ORDER BY created_at DESC, id DESC LIMIT $1",
                                   limit + 1)
    else:
        at, last_id = decode_cursor(cursor, 2)
        try:
            after = datetime.fromisoformat(at)
        except (TypeError, ValueError):
            decode_cursor("", 2)  # raises the invalid-cursor problem
            raise
        rows = await db.pool.fetch(
            f"{_SELECT} WHERE (created_at, id) < ($1, $2) ORDER BY created_at DESC, id DESC "
            "LIMIT $3", after, str(last_id), limit + 1)
    items = [_info(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.created_at.isoformat(), last.id)
    return ModuleList(items=items, next_cursor=next_cursor)


@router.get("/{id}", name="get", response_model=ModuleInfo, summary="Describe one module",
            responses=problem_responses(404))
async def get_module(id: ModuleId, db: DB) -> ModuleInfo:
    row = await db.pool.fetchrow(f"{_SELECT} WHERE id = $1", id)
    if row is None:
        raise ProblemError(404, "module-not-found", f"no module {id}")
    return _info(row)
