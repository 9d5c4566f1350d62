"""Instantiation (spec 4.5.4): resolve imports, allocate, initialise segments, run start."""

from __future__ import annotations

from typing import Any, Mapping

from ..binary import opcodes as op
from ..errors import ExhaustionError, LinkError, TrapError
from ..execution import numerics
from ..structure import (KIND_FUNC, KIND_GLOBAL, KIND_MEM, KIND_NAMES, KIND_TABLE, MODE_ACTIVE,
                         MODE_DECLARATIVE, Instr, Limits, Module)
from .objects import Function, Global, Instance, Memory, Table, WasmFunction
from .store import Store

Imports = Mapping[str, Mapping[str, Any]]
V128_CONST = op.BY_NAME["v128.const"]


def _limits_match(actual_min: int, actual_max: int | None, want: Limits) -> bool:
    if actual_min < want.min:
        return False
    if want.max is None:
        return True
    return actual_max is not None and actual_max <= want.max


def _resolve_import(module: Module, imp: Any, imports: Imports) -> Any:
    ext = imports.get(imp.module, {}).get(imp.name) if imp.module in imports else None
    what = f"{imp.module}.{imp.name}"
    if ext is None:
        raise LinkError(f"unknown import {what}")
    kind = imp.kind
    ok = False
    if kind == KIND_FUNC:
        ok = isinstance(ext, Function) and ext.type == module.types[imp.desc]
    elif kind == KIND_TABLE:
        ok = (isinstance(ext, Table) and ext.type.elem_type == imp.desc.elem_type
              and _limits_match(len(ext.elements), ext.type.limits.max, imp.desc.limits))
    elif kind == KIND_MEM:
        ok = isinstance(ext, Memory) and _limits_match(ext.pages, ext.type.limits.max,
                                                       imp.desc.limits)
    elif kind == KIND_GLOBAL:
        ok = isinstance(ext, Global) and ext.type == imp.desc
    if not ok:
        raise LinkError(f"incompatible import type for {what} (expected {KIND_NAMES[kind]})")
    return ext


def eval_const(expr: list[Instr], inst: Instance) -> Any:
    """Evaluate a (validated) constant expression."""
    value: Any = None
    for code, imm, _ in expr:
        if code == op.I32_CONST or code == op.I64_CONST:
            value = imm
        elif code == op.F32_CONST:
            value = numerics.f32_from_bits(imm)
        elif code == op.F64_CONST:
            value = numerics.f64_from_bits(imm)
        elif code == op.REF_NULL:
            value = None
        elif code == op.REF_FUNC:
            value = inst.funcs[imm]
        elif code == op.GLOBAL_GET:
            value = inst.globals[imm].value
        elif code == V128_CONST:
            value = imm
        elif code == op.END:
            break
    return value


def allocate(store: Store, module: Module, imports: Imports | None = None) -> Instance:
    """Resolve imports and allocate the module's functions, tables, memories and globals, with
    exports — but apply no segment and run no start function. Restoring a snapshot starts here."""
    imports = imports or {}
    inst = Instance(module, store)
    for imp in module.imports:
        ext = _resolve_import(module, imp, imports)
        [inst.funcs, inst.tables, inst.mems, inst.globals][imp.kind].append(ext)
    nimported = len(inst.funcs)
    for i, f in enumerate(module.funcs):
        inst.funcs.append(WasmFunction(module.types[f.type_index], inst, nimported + i, f))
    for tt in module.tables:
        if tt.limits.min > store.max_table_size:
            raise ExhaustionError(f"table of {tt.limits.min} entries exceeds the store's limit "
                                  f"of {store.max_table_size}")
        inst.tables.append(Table(tt, None, store.max_table_size))
    for mt in module.mems:
        if mt.limits.min > store.max_memory_pages:
            raise ExhaustionError(f"memory of {mt.limits.min} pages exceeds the store's limit "
                                  f"of {store.max_memory_pages}")
        inst.mems.append(Memory(mt, store.max_memory_pages))
    for g in module.globals:
        inst.globals.append(Global(g.type, eval_const(g.init, inst)))
    for ex in module.exports:
        space = [inst.funcs, inst.tables, inst.mems, inst.globals][ex.kind]
        inst.exports[ex.name] = space[ex.index]
    inst.elems = [[eval_const(e, inst) for e in seg.init] for seg in module.elems]
    inst.datas = [seg.init for seg in module.datas]
    return inst


def instantiate(store: Store, module: Module, imports: Imports | None = None) -> Instance:
    """Instantiate a validated module in ``store``.

    Raises LinkError when imports are missing or mismatched, TrapError when a segment does not
    fit or the start function traps. As in the spec, segments applied before a trap stay applied
    (visible through imported tables and memories).
    """
    inst = allocate(store, module, imports)
    for i, seg in enumerate(module.elems):
        if seg.mode == MODE_ACTIVE:
            assert seg.offset is not None
            offset = eval_const(seg.offset, inst)
            table = inst.tables[seg.table]
            items = inst.elems[i]
            if offset + len(items) > len(table.elements):
                raise TrapError("out of bounds table access")
            table.elements[offset:offset + len(items)] = items
            inst.elems[i] = []
        elif seg.mode == MODE_DECLARATIVE:
            inst.elems[i] = []
    for i, seg in enumerate(module.datas):
        if seg.mode == MODE_ACTIVE:
            assert seg.offset is not None
            offset = eval_const(seg.offset, inst)
            mem = inst.mems[seg.memory]
            if offset + len(seg.init) > len(mem.data):
                raise TrapError("out of bounds memory access")
            mem.data[offset:offset + len(seg.init)] = seg.init
            inst.datas[i] = b""
    if module.start is not None:
        store.invoke(inst.funcs[module.start], [])
    return inst
