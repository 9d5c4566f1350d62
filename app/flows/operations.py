"""Flow operations behind the API: start (idempotent with a client id), cancel, signal, query.

Each validates its input, changes the database in one transaction that locks the flow row (see
``app.flows.store``), and then tells the engine what to run. A refused operation raises
:class:`~app.flows.errors.FlowError` and has changed nothing.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import vm
import vm.wasi
from vm import snapshot
from vm import structure as S
from vm.errors import TrapError

from . import store
from .engine import FlowEngine, request_hash
from .errors import FlowError, flow_not_found
from .guest import GuestApi, is_guest_wait, valid_name
from .run import Sink, check_flow_exports, check_flow_imports

FLOW_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_FLOW_ID = re.compile(FLOW_ID_PATTERN)
QUERY_FUEL_DEFAULT = 10_000_000
QUERY_FUEL_MAX = 1_000_000_000
QUERY_OUTPUT_MAX = 1 << 20


def check_flow_id(flow_id: str) -> None:
    """Client-chosen ids: 1-128 characters of [A-Za-z0-9._:-], starting alphanumeric (no ``/``,
    used in task ids; no ``~``, used in child flow ids)."""
    if not _FLOW_ID.match(flow_id):
        raise FlowError(422, "invalid-flow-id", "a flow id is 1 to 128 characters of "
                        "[A-Za-z0-9._:-] starting with a letter or digit", flow_id=flow_id)


async def start_flow(engine: FlowEngine, *, module_id: str, args: list[str],
                     env: dict[str, str], stdin: bytes,
                     flow_id: str | None = None) -> tuple[dict[str, Any], bool]:
    """Create a flow and schedule its first run; returns (flow row, created). With a client id
    an identical request returns the existing flow (created False); a different one is 409."""
    if flow_id is not None:
        check_flow_id(flow_id)
    if len(stdin) > engine.max_payload:
        raise FlowError(413, "payload-too-large", f"stdin exceeds the limit of "
                        f"{engine.max_payload} bytes", limit=engine.max_payload)
    for arg in args:
        if "\0" in arg:
            raise FlowError(422, "invalid-args", "arguments cannot contain NUL")
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise FlowError(422, "invalid-env", f"bad environment variable name or value: "
                            f"{name!r} (names are non-empty, without '=' or NUL)")
    info = await store.get_module_info(engine.db.pool, module_id)
    if info is None:
        raise FlowError(422, "module-not-found", f"no module {module_id}; upload it with "
                        "POST /v1/modules first", module=module_id)
    why = check_flow_imports(info["imports"]) or check_flow_exports(info["exports"])
    if why is not None:
        raise FlowError(422, "not-a-flow", f"module {module_id} cannot run as a flow: {why}",
                        module=module_id)
    request = {"module": module_id, "args": list(args), "env": dict(env),
               "stdin": base64.b64encode(stdin).decode("ascii")}
    digest = request_hash(request)
    fid = flow_id or engine.new_flow_id()
    async with engine.db.transaction() as conn:
        await engine.check_fence(conn, fid)
        created = await store.insert_flow(conn, store.NewFlow(
            id=fid, module_id=module_id, request=request, request_hash=digest))
        if created:
            await store.add_events(conn, fid, [("started", {"module": module_id,
                                                            "args": len(args)})])
        row = await store.get_flow(conn, fid, output=True)
    assert row is not None
    if not created and row["request_hash"] != digest:
        raise FlowError(409, "flow-exists", f"a flow with id {fid!r} exists with a different "
                        "start request", flow_id=fid)
    if created:
        engine.wake(fid)
    return row, created


async def get_flow(engine: FlowEngine, flow_id: str) -> dict[str, Any]:
    row = await store.get_flow(engine.db.pool, flow_id, output=True)
    if row is None:
        raise flow_not_found(flow_id)
    return row


async def cancel_flow(engine: FlowEngine, flow_id: str) -> dict[str, Any]:
    """Cancel an active flow, its open tasks and its children. Cancelling a cancelled flow
    changes nothing; a finished one is 409."""
    async with engine.db.transaction() as conn:
        await engine.check_fence(conn, flow_id)
        row = await store.lock_flow(conn, flow_id)
        if row is None:
            raise flow_not_found(flow_id)
        if row["status"] in ("completed", "failed"):
            raise FlowError(409, "flow-finished", f"flow {flow_id} has already "
                            f"{row['status']}", flow_id=flow_id, flow_status=row["status"])
        cancelled = await store.cancel_flow(conn, flow_id) if row["status"] != "cancelled" \
            else []
    for fid in cancelled:
        engine.forget(fid)
    if cancelled and row["parent_id"] is not None:
        await engine.wake_parent(flow_id)
    return await get_flow(engine, flow_id)


async def send_signal(engine: FlowEngine, flow_id: str, name: str, payload: bytes,
                      idempotency_key: str | None = None) -> dict[str, Any]:
    """Queue signal ``name`` for the flow; wakes it if it waits for that signal. With
    ``idempotency_key``, a repeat of the same signal changes nothing and gets the same answer;
    the key with a different signal is 409."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise FlowError(422, "invalid-idempotency-key", "an Idempotency-Key is 1 to 200 "
                        "characters")
    if not valid_name(name):
        raise FlowError(422, "invalid-signal-name", "a signal name is 1 to 200 characters of "
                        "[A-Za-z0-9._-]", name=name)
    if len(payload) > engine.max_payload:
        raise FlowError(413, "payload-too-large", f"the signal payload exceeds the limit of "
                        f"{engine.max_payload} bytes", limit=engine.max_payload)
    async with engine.db.transaction() as conn:
        await engine.check_fence(conn, flow_id)
        row = await store.lock_flow(conn, flow_id)
        if row is None:
            raise flow_not_found(flow_id)
        if row["status"] not in store.ACTIVE:
            raise FlowError(409, "flow-finished", f"flow {flow_id} is {row['status']}; it "
                            "receives no more signals", flow_id=flow_id,
                            flow_status=row["status"])
        if idempotency_key is not None:
            seen = await conn.fetchrow(
                "SELECT id, name, payload FROM signals WHERE flow_id = $1 "
                "AND idempotency_key = $2", flow_id, idempotency_key)
            if seen is not None:
                if (seen["name"], bytes(seen["payload"])) != (name, payload):
                    raise FlowError(409, "idempotency-key-reused", "this Idempotency-Key was "
                                    "used for a different signal", flow_id=flow_id)
                return {"id": seen["id"], "flow_id": flow_id, "name": name,
                        "size": len(payload)}
        signal_id = await store.insert_signal(conn, flow_id, name, payload, idempotency_key)
        await store.add_events(conn, flow_id, [("signal", {"name": name, "signal_id": signal_id,
                                                           "size": len(payload)})])
        woken = await store.wake_if_ready(conn, flow_id)
    if woken:
        engine.wake(flow_id)
    return {"id": signal_id, "flow_id": flow_id, "name": name, "size": len(payload)}


# --- queries -----------------------------------------------------------------------------------

async def query_flow(engine: FlowEngine, flow_id: str, export: str, args: list[Any],
                     fuel: int | None) -> dict[str, Any]:
    """Call ``export`` on a copy of the flow restored from its latest checkpoint."""
    found = await store.get_checkpoint(engine.db.pool, flow_id)
    if found is None:
        raise flow_not_found(flow_id)
    module_id, manifest = found
    if manifest is None:
        raise FlowError(409, "no-checkpoint", f"flow {flow_id} has no checkpoint yet; query it "
                        "once it has run", flow_id=flow_id)
    fuel = QUERY_FUEL_DEFAULT if fuel is None else fuel
    if not 1 <= fuel <= QUERY_FUEL_MAX:
        raise FlowError(422, "invalid-fuel", f"fuel must be 1 to {QUERY_FUEL_MAX}")
    try:
        module = await engine.module(module_id)
    except Exception as exc:
        raise FlowError(409, "module-unavailable", str(exc)) from None
    manifest = {**manifest, "execution": None}
    await engine.chunks.prefetch(manifest)
    source = engine.chunks.source(manifest)
    return await asyncio.get_running_loop().run_in_executor(
        engine.executor, _run_query, module, manifest, source, export, args, fuel)


def _run_query(module: vm.Module, manifest: dict[str, Any], source: Any, export: str,
               args: list[Any], fuel: int) -> dict[str, Any]:
    host = manifest.get("host") or {}
    out, err = Sink(), Sink()
    try:
        wasi = vm.wasi.Wasi.from_state(host["wasi"], stdout=out, stderr=err)
        guest = GuestApi.from_state(host["guest"])
        store_ = vm.Store()
        instance, _ = snapshot.restore(manifest, source, module,
                                       {**wasi.imports(), **guest.imports()}, store_)
        wasi.bind(instance)
        guest.bind(instance)
    except (KeyError, TypeError, ValueError, vm.WasmError) as exc:
        raise FlowError(409, "checkpoint-unusable", f"cannot restore the flow's checkpoint: "
                        f"{exc}") from None
    try:
        func = instance.exports.get(export)
        if not isinstance(func, vm.Function):
            raise FlowError(404, "export-not-found", f"the flow's module exports no function "
                            f"{export!r}", export=export)
        params = func.type.params
        if len(args) != len(params):
            raise FlowError(422, "invalid-args", f"{export} takes {len(params)} arguments, "
                            f"got {len(args)}")
        values = [_arg(a, t, i) for i, (a, t) in enumerate(zip(args, params))]
        ex = store_.start(func, values)
        try:
            status = ex.run(fuel=fuel)
        except vm.wasi.ProcExit as exc:
            raise FlowError(422, "query-exited", f"the query called proc_exit({exc.code})",
                            exit_code=exc.code) from None
        except TrapError as exc:
            raise FlowError(422, "query-trapped", f"trap: {exc.message}") from None
        if status == "suspended":
            raise FlowError(422, "fuel-exhausted", f"the query used up its fuel ({fuel})",
                            fuel=fuel)
        if status == "host":
            reason = ex.pending.reason if ex.pending else None
            what = reason.get("op") if is_guest_wait(reason) else "a host call"
            raise FlowError(422, "query-would-wait", f"the query tried to wait ({what}); "
                            "queries cannot wait")
        wasi.flush()
        results = [_result(v, t) for v, t in zip(ex.results or [], func.type.results)]
        return {"results": results,
                "types": [S.VALTYPE_NAMES.get(t, str(t)) for t in func.type.results],
                "fuel_used": fuel - (ex.fuel_left or 0),
                "stdout": bytes(out.data[:QUERY_OUTPUT_MAX]).decode("utf-8", "replace"),
                "stderr": bytes(err.data[:QUERY_OUTPUT_MAX]).decode("utf-8", "replace")}
    finally:
        wasi.close()


def _arg(value: Any, valtype: int, index: int) -> Any:
    from app.cli import parse_arg

    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FlowError(422, "invalid-args", f"argument {index}: a number (or a string of one) "
                        "expected")
    try:
        return parse_arg(str(value) if not isinstance(value, float) else repr(value), valtype)
    except ValueError as exc:
        raise FlowError(422, "invalid-args", f"argument {index}: {exc}") from None


def _result(value: Any, valtype: int) -> Any:
    from app.cli import format_result

    if valtype == S.I32:
        return value - (1 << 32) if value >= 1 << 31 else value
    if valtype == S.I64:
        return value - (1 << 64) if value >= 1 << 63 else value
    if valtype in (S.F32, S.F64):
        if value != value or value in (float("inf"), float("-inf")):
            return format_result(value, valtype)
        return value
    return format_result(value, valtype)
