"""Capture and restore of an instance and its resumable execution (docs/snapshot-format.md)."""

from __future__ import annotations

import json
from typing import Any, Callable, Container

from ..execution.machine import Execution, Frame, compiled_code
from ..execution.translate import S_CALL, S_CALL_INDIRECT, S_FUEL
from ..runtime.instantiate import Imports, allocate
from ..runtime.objects import PAGE_SIZE, Function, HostFunction, Instance, WasmFunction
from ..runtime.store import Store
from ..structure import F32, F64, FUNCREF, I32, I64, V128, VALTYPE_NAMES, Module
from .chunks import CHUNK_SIZE, COMPRESSION, ChunkSource, chunk_hashes, compress, decompress
from .values import SnapshotError, decode_value, encode_value

FORMAT = "dwasm-snapshot"
VERSION = 1


def capture(instance: Instance, execution: Execution | None = None, *, host: Any = None,
            known: Container[str] = frozenset(), max_bytes: int | None = None
            ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Snapshot ``instance`` (and ``execution``, which must be stopped: not running).

    Returns ``(manifest, new_chunks)``: the manifest is JSON-serialisable; ``new_chunks`` maps
    chunk hashes to compressed chunk bytes for every memory chunk not in ``known`` — pass the
    hashes already stored to make the checkpoint incremental. ``host`` is JSON-serialisable
    state of the embedder (e.g. WASI's) stored alongside. ``max_bytes`` limits the snapshot's
    size — its memories' raw bytes plus the manifest's JSON — and raises SnapshotError beyond
    it (before any chunk is compressed), so a runaway guest cannot fill the checkpoint store.
    """
    if max_bytes is not None:
        raw = sum(len(m.data) for m in instance.mems)
        if raw > max_bytes:
            raise SnapshotError(f"snapshot of at least {raw} bytes exceeds the limit of "
                                f"{max_bytes} bytes")
    func_index = {id(f): i for i, f in enumerate(instance.funcs)}

    def enc(v: Any) -> list[Any]:
        return encode_value(v, func_index)

    new_chunks: dict[str, bytes] = {}
    memories = []
    for mem in instance.mems:
        hashes = []
        data = mem.data
        for digest, start in chunk_hashes(data):
            hashes.append(digest)
            if digest not in known and digest not in new_chunks:
                new_chunks[digest] = compress(bytes(data[start:start + CHUNK_SIZE]))
        memories.append({"pages": len(data) // PAGE_SIZE, "chunks": hashes})
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "module": instance.module.sha256,
        "chunk_size": CHUNK_SIZE,
        "compression": COMPRESSION,
        "memories": memories,
        "tables": [[enc(v) for v in t.elements] for t in instance.tables],
        "globals": [enc(g.value) for g in instance.globals],
        "dropped_elems": [i for i, seg in enumerate(instance.elems)
                          if not seg and instance.module.elems[i].init],
        "dropped_datas": [i for i, seg in enumerate(instance.datas)
                          if not seg and instance.module.datas[i].init],
        "execution": None if execution is None else _capture_execution(execution, func_index,
                                                                       enc),
        "host": host,
    }
    if max_bytes is not None:
        size = sum(len(m.data) for m in instance.mems) + len(json.dumps(manifest))
        if size > max_bytes:
            raise SnapshotError(f"snapshot of {size} bytes exceeds the limit of {max_bytes} "
                                "bytes")
    return manifest, new_chunks


def _capture_execution(ex: Execution, func_index: dict[int, int],
                       enc: Callable[[Any], list[Any]]) -> dict[str, Any]:
    if ex.status == "failed":
        raise SnapshotError("a failed execution cannot be snapshotted")
    if not isinstance(ex.func, WasmFunction) and ex.status != "done":
        raise SnapshotError("an execution of a host function can only be snapshotted when done")
    state: dict[str, Any] = {
        "status": ex.status,
        "entry": func_index[id(ex.func)],
        "results": None if ex.results is None else [enc(v) for v in ex.results],
        "frames": [],
        "pending": None,
        "fuel_left": ex.fuel_left,
    }
    if ex.status == "ready" and ex.pending is None and len(ex.frames) == 1 and ex.frames[0].pc == 0:
        # Never run: the arguments are the first locals.
        frame = ex.frames[0]
        state["args"] = [enc(v) for v in frame.regs[:frame.compiled.nparams]]
        return state
    frames = ex.frames
    waiting = ex.pending is not None  # the top frame stands at a host call
    for depth, frame in enumerate(frames):
        in_call = depth < len(frames) - 1 or waiting
        state["frames"].append(_capture_frame(frame, in_call, enc))
    if waiting:
        pending = ex.pending
        assert pending is not None
        idx = func_index.get(id(pending.func))
        if idx is None:
            raise SnapshotError("the pending host call is not to an import of this instance")
        state["pending"] = {
            "func": idx, "args": [enc(v) for v in pending.call_args], "reason": pending.reason,
            "results": None if ex.delivered is None else [enc(v) for v in ex.delivered]}
    return state


def _capture_frame(frame: Frame, in_call: bool, enc: Callable[[Any], list[Any]]) -> dict:
    compiled = frame.compiled
    pc = frame.pc
    stack_map = compiled.stack_maps.get(pc)
    if stack_map is None:
        raise SnapshotError("execution is not at a stop point")
    r = frame.regs
    stack = [r[x] for x in stack_map]
    if in_call:
        rec = compiled.specials[pc]
        consumed = rec[3] if rec[0] == S_CALL else rec[4] + 1  # args (+ table index)
        stack = stack[:len(stack) - consumed]
    return {
        "func": frame.func.index,
        "offset": compiled.offsets[pc],
        "in_call": in_call,
        "locals": [enc(v) for v in r[:compiled.nlocals]],
        "stack": [enc(v) for v in stack],
    }


def restore(manifest: dict[str, Any], chunks: ChunkSource, module: Module,
            imports: Imports | None = None, store: Store | None = None
            ) -> tuple[Instance, Execution | None]:
    """Rebuild the instance and execution captured in ``manifest``.

    ``module`` must be the same module (checked by hash); ``imports`` supply the host functions
    again (they are code, not state). Raises SnapshotError when the snapshot is malformed, of an
    unknown version, or does not fit the module.
    """
    try:
        return _restore(manifest, chunks, module, imports, store or Store())
    except SnapshotError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"malformed snapshot: {type(exc).__name__}: {exc}") from exc


def _restore(manifest: dict[str, Any], chunks: ChunkSource, module: Module,
             imports: Imports | None, store: Store) -> tuple[Instance, Execution | None]:
    if manifest.get("format") != FORMAT:
        raise SnapshotError("not a dwasm snapshot")
    version = manifest.get("version")
    if version != VERSION:
        raise SnapshotError(f"snapshot format version {version} is not supported "
                            f"(this dwasm reads version {VERSION})")
    if manifest["module"] != module.sha256:
        raise SnapshotError(f"snapshot is of module {manifest['module']}, "
                            f"not {module.sha256}")
    if manifest["compression"] != COMPRESSION:
        raise SnapshotError(f"unknown chunk compression {manifest['compression']!r}")
    chunk_size = manifest["chunk_size"]
    inst = allocate(store, module, imports)
    funcs = inst.funcs

    def dec(v: Any) -> Any:
        return decode_value(v, funcs)

    if len(manifest["memories"]) != len(inst.mems) or len(manifest["tables"]) != len(
            inst.tables) or len(manifest["globals"]) != len(inst.globals):
        raise SnapshotError("snapshot does not match the module's memories, tables or globals")
    for mem, m in zip(inst.mems, manifest["memories"]):
        pages = m["pages"]
        if pages > mem.max_pages:
            raise SnapshotError(f"memory of {pages} pages exceeds the limit of {mem.max_pages}")
        data = bytearray()
        size = pages * PAGE_SIZE
        for digest in m["chunks"]:
            blob = chunks.get(digest)
            if blob is None:
                raise SnapshotError(f"memory chunk {digest} is missing")
            want = min(chunk_size, size - len(data))
            try:
                data += decompress(blob, want, digest)
            except ValueError as exc:
                raise SnapshotError(str(exc)) from None
        if len(data) != size:
            raise SnapshotError("memory chunks do not add up to the memory size")
        mem.data[:] = data  # in place: translated code holds on to this bytearray
    for table, elements in zip(inst.tables, manifest["tables"]):
        table.elements[:] = [dec(v) for v in elements]
    for g, v in zip(inst.globals, manifest["globals"]):
        g.value = dec(v)
    for i in manifest["dropped_elems"]:
        inst.elems[i] = []
    for i in manifest["dropped_datas"]:
        inst.datas[i] = b""
    state = manifest["execution"]
    if state is None:
        return inst, None
    return inst, _restore_execution(state, inst, store, dec)


_STATUSES = frozenset({"ready", "suspended", "host", "done"})
_INT_LIMIT = {I32: 1 << 32, I64: 1 << 64, V128: 1 << 128}


def _check_local(valtype: int, value: Any, func: int) -> None:
    """A restored local must be a value of its declared type (the snapshot may be damaged)."""
    limit = _INT_LIMIT.get(valtype)
    if limit is not None:
        ok = type(value) is int and 0 <= value < limit
    elif valtype in (F32, F64):
        ok = type(value) is float
    elif valtype == FUNCREF:
        ok = value is None or isinstance(value, Function)
    else:
        ok = True
    if not ok:
        raise SnapshotError(f"frame of function {func}: {value!r} is not a "
                            f"{VALTYPE_NAMES.get(valtype, hex(valtype))}")


def _restore_execution(state: dict[str, Any], inst: Instance, store: Store,
                       dec: Callable[[Any], Any]) -> Execution:
    if state["status"] not in _STATUSES:
        raise SnapshotError(f"unknown execution status {state['status']!r}")
    entry = inst.funcs[state["entry"]]
    if "args" in state:
        return Execution(store, entry, [dec(v) for v in state["args"]])
    ex = Execution(store, entry, [])  # replaced below
    ex.machine.frames.clear()
    ex.status = state["status"]
    fuel_left = state.get("fuel_left")
    if fuel_left is not None and (type(fuel_left) is not int or fuel_left < 0):
        raise SnapshotError(f"bad fuel_left {fuel_left!r}")
    ex.fuel_left = fuel_left
    if state["results"] is not None:
        ex.results = [dec(v) for v in state["results"]]
    for fs in state["frames"]:
        func = inst.funcs[fs["func"]]
        if not isinstance(func, WasmFunction):
            raise SnapshotError(f"frame of function {fs['func']}, which is not defined by the "
                                "module")
        compiled = compiled_code(func, store.fuel)
        try:
            pc = compiled.stop_pc(fs["offset"])
        except KeyError as exc:
            raise SnapshotError(f"function {fs['func']} has no stop point at offset "
                                f"{fs['offset']:#x}") from exc
        nl = compiled.nlocals
        locals_ = [dec(v) for v in fs["locals"]]
        stack = [dec(v) for v in fs["stack"]]
        if len(locals_) != nl:
            raise SnapshotError(f"frame of function {fs['func']} has {len(locals_)} locals, "
                                f"expected {nl}")
        for valtype, value in zip((*func.type.params, *func.func.locals), locals_):
            _check_local(valtype, value, fs["func"])
        for value in stack:
            if type(value) is int and not 0 <= value < 1 << 128:
                raise SnapshotError(f"frame of function {fs['func']}: stack value {value} is "
                                    "out of range")
        limit = len(compiled.stack_maps[pc])
        if len(stack) > limit:
            raise SnapshotError(f"frame of function {fs['func']} has too deep a stack")
        regs = locals_ + compiled.tail[nl - compiled.nparams:]
        regs[nl:nl + len(stack)] = stack
        ex.machine.frames.append(Frame(func, compiled, regs, pc))
    p = state["pending"]
    if p is not None:
        callee = inst.funcs[p["func"]]
        if not isinstance(callee, HostFunction):
            raise SnapshotError("the pending call is not to a host function")
        from ..errors import Suspend

        pending = Suspend(p["reason"])
        pending.func = callee
        pending.call_args = [dec(v) for v in p["args"]]
        ex.pending = pending
        if p["results"] is not None:
            ex.delivered = [dec(v) for v in p["results"]]
    elif ex.status == "suspended" and ex.frames:
        top = ex.frames[-1]
        kind = top.compiled.specials[top.pc][0]
        if kind not in (S_FUEL, S_CALL, S_CALL_INDIRECT):
            raise SnapshotError("suspended execution is not at a fuel stop")
    return ex
