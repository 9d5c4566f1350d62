"""Module validation (spec 3.4): index spaces, limits, constant expressions, segments, exports.

Checks run in the order of the reference interpreter, so that a module with several faults
reports the same one as other engines do. Function bodies are checked by
:mod:`vm.validation.code`, which also records the stack heights the execution engine needs.
"""

from __future__ import annotations

from collections.abc import Iterable

from vm.binary import opcodes as op_
from vm.errors import InvalidError
from vm.structure import (F32, F64, FUNCREF, I32, I64, KIND_FUNC, KIND_GLOBAL, KIND_MEM,
                          KIND_TABLE, MODE_ACTIVE, V128, VALTYPE_NAMES, Data, Elem, GlobalType,
                          Instr, Limits, Module)
from vm.validation.code import validate_function
from vm.validation.context import Context
from vm.validation.simd import V128_CONST

MAX_PAGES = 65536
MAX_TABLE_SIZE = 2**32 - 1

_CONST_TYPES = {op_.I32_CONST: I32, op_.I64_CONST: I64, op_.F32_CONST: F32,
                op_.F64_CONST: F64, V128_CONST: V128}


def validate_module(module: Module) -> None:
    """Checks that ``module`` is valid; raises InvalidError (spec wording first) if it is not.

    On success every function in ``module.funcs`` has ``heights`` and ``max_height`` set.
    """
    ctx = _context(module)
    imported_globals = [i.desc for i in module.imports if i.kind == KIND_GLOBAL]
    for glob in module.globals:
        _check_const(ctx, imported_globals, glob.init, glob.type.valtype)
    for table in module.tables:
        _check_limits(table.limits, MAX_TABLE_SIZE, "table size must be at most 2^32-1")
    for mem in module.mems:
        _check_limits(mem.limits, MAX_PAGES, "memory size must be at most 65536 pages (4GiB)")
    for elem in module.elems:
        _check_elem(ctx, imported_globals, elem)
    for data in module.datas:
        _check_data(ctx, imported_globals, data)
    first = len(ctx.funcs) - len(module.funcs)
    for index, func in enumerate(module.funcs):
        validate_function(ctx, func, first + index)
    if module.start is not None:
        start = ctx.func_at(module.start)
        if start.params or start.results:
            raise InvalidError(f"start function must have type [] -> [], not {start}")
    _check_exports(ctx, module)
    if len(ctx.mems) > 1:
        raise InvalidError("multiple memories")


def _context(module: Module) -> Context:
    """Builds the context C of spec 3.4, checking imports and type uses on the way."""
    ctx = Context(types=module.types, datas=len(module.datas))
    ctx.type_sigs = [(list(t.params), list(t.results)) for t in module.types]
    for imp in module.imports:
        if imp.kind == KIND_FUNC:
            ctx.funcs.append(ctx.type_at(imp.desc))
            ctx.func_sigs.append(ctx.type_sigs[imp.desc])
        elif imp.kind == KIND_TABLE:
            _check_limits(imp.desc.limits, MAX_TABLE_SIZE, "table size must be at most 2^32-1")
            ctx.tables.append(imp.desc)
        elif imp.kind == KIND_MEM:
            _check_limits(imp.desc.limits, MAX_PAGES,
                          "memory size must be at most 65536 pages (4GiB)")
            ctx.mems.append(imp.desc)
        elif imp.kind == KIND_GLOBAL:
            ctx.globals.append(imp.desc)
        else:
            raise InvalidError(f"unknown import kind {imp.kind}")
    for func in module.funcs:
        ctx.funcs.append(ctx.type_at(func.type_index))
        ctx.func_sigs.append(ctx.type_sigs[func.type_index])
    ctx.tables.extend(module.tables)
    ctx.mems.extend(module.mems)
    ctx.globals.extend(g.type for g in module.globals)
    ctx.elems = [e.type for e in module.elems]
    ctx.refs = _declared_refs(module)
    return ctx


def _declared_refs(module: Module) -> set[int]:
    """C.refs: functions referenced outside function bodies, the only ones ref.func may name."""
    refs = {e.index for e in module.exports if e.kind == KIND_FUNC}
    exprs: list[list[Instr]] = [g.init for g in module.globals]
    for elem in module.elems:
        exprs.extend(elem.init)
    for expr in exprs:
        refs.update(imm for op, imm, _ in expr if op == op_.REF_FUNC)
    return refs


def _check_limits(limits: Limits, bound: int, too_large: str) -> None:
    if limits.min > bound or (limits.max is not None and limits.max > bound):
        raise InvalidError(too_large)
    if limits.max is not None and limits.min > limits.max:
        raise InvalidError("size minimum must not be greater than maximum")


def _check_const(ctx: Context, globals_: list[GlobalType], expr: Iterable[Instr],
                 expected: int) -> None:
    """A constant expression (spec 3.3.10) producing one ``expected`` value.

    ``globals_`` are the globals it may read: in WebAssembly 2.0 only the imported ones.
    """
    stack: list[int] = []
    for op, imm, _ in expr:
        t = _CONST_TYPES.get(op)
        if t is not None:
            stack.append(t)
        elif op == op_.REF_NULL:
            stack.append(imm)
        elif op == op_.REF_FUNC:
            ctx.func_at(imm)
            stack.append(FUNCREF)
        elif op == op_.GLOBAL_GET:
            if not 0 <= imm < len(globals_):
                raise InvalidError(f"unknown global {imm}")
            if globals_[imm].mutable:
                raise InvalidError(f"constant expression required: global {imm} is mutable")
            stack.append(globals_[imm].valtype)
        elif op == op_.END:
            break
        else:
            raise InvalidError(f"constant expression required, found {op_.name(op)}")
    if stack != [expected]:
        found = " ".join(VALTYPE_NAMES.get(t, "?") for t in stack)
        raise InvalidError(f"type mismatch: constant expression must produce "
                           f"[{VALTYPE_NAMES.get(expected, '?')}], not [{found}]")


def _check_elem(ctx: Context, globals_: list[GlobalType], elem: Elem) -> None:
    for expr in elem.init:
        _check_const(ctx, globals_, expr, elem.type)
    if elem.mode == MODE_ACTIVE:
        table = ctx.table_at(elem.table)
        if table.elem_type != elem.type:
            raise InvalidError(f"type mismatch: element segment of "
                               f"{VALTYPE_NAMES.get(elem.type, '?')} for a table of "
                               f"{VALTYPE_NAMES.get(table.elem_type, '?')}")
        _check_const(ctx, globals_, elem.offset or [], I32)


def _check_data(ctx: Context, globals_: list[GlobalType], data: Data) -> None:
    if data.mode == MODE_ACTIVE:
        ctx.mem_at(data.memory)
        _check_const(ctx, globals_, data.offset or [], I32)


def _check_exports(ctx: Context, module: Module) -> None:
    names: set[str] = set()
    for export in module.exports:
        if export.kind == KIND_FUNC:
            ctx.func_at(export.index)
        elif export.kind == KIND_TABLE:
            ctx.table_at(export.index)
        elif export.kind == KIND_MEM:
            ctx.mem_at(export.index)
        elif export.kind == KIND_GLOBAL:
            ctx.global_at(export.index)
        else:
            raise InvalidError(f"unknown export kind {export.kind}")
        if export.name in names:
            raise InvalidError(f"duplicate export name {export.name!r}")
        names.add(export.name)
