"""Validation of function bodies (spec 3.3 and the algorithm of the spec's appendix A.3).

One forward pass over the instruction list keeps an operand stack of value types and a stack of
control frames. Besides accepting or rejecting the body, the pass records the operand stack height
before every instruction: the execution engine maps operand stack slots to registers with it.

Type ``UNKNOWN`` (0) is the bottom type of the appendix algorithm: what a pop yields from the
polymorphic stack of unreachable code, which matches any expected type.
"""

from __future__ import annotations

from vm.binary import opcodes as op_
from vm.errors import InvalidError
from vm.structure import (BLOCK_EMPTY, EXTERNREF, F32, F64, FUNCREF, I32, I64, V128,
                          VALTYPE_NAMES, Func, Instr)
from vm.validation import simd
from vm.validation.context import Context
from vm.validation.signatures import MEMORY_ACCESS, SIMPLE

UNKNOWN = 0

# Opcodes, bound to plain names: the validation loop compares against them constantly.
BLOCK = op_.BY_NAME["block"]
BR = op_.BY_NAME["br"]
BR_IF = op_.BY_NAME["br_if"]
BR_TABLE = op_.BY_NAME["br_table"]
CALL = op_.BY_NAME["call"]
CALL_INDIRECT = op_.BY_NAME["call_indirect"]
DATA_DROP = op_.BY_NAME["data.drop"]
DROP = op_.BY_NAME["drop"]
ELEM_DROP = op_.BY_NAME["elem.drop"]
ELSE = op_.BY_NAME["else"]
END = op_.BY_NAME["end"]
GLOBAL_GET = op_.BY_NAME["global.get"]
GLOBAL_SET = op_.BY_NAME["global.set"]
IF = op_.BY_NAME["if"]
LOCAL_GET = op_.BY_NAME["local.get"]
LOCAL_SET = op_.BY_NAME["local.set"]
LOCAL_TEE = op_.BY_NAME["local.tee"]
LOOP = op_.BY_NAME["loop"]
MEMORY_COPY = op_.BY_NAME["memory.copy"]
MEMORY_FILL = op_.BY_NAME["memory.fill"]
MEMORY_GROW = op_.BY_NAME["memory.grow"]
MEMORY_INIT = op_.BY_NAME["memory.init"]
MEMORY_SIZE = op_.BY_NAME["memory.size"]
NOP = op_.BY_NAME["nop"]
REF_FUNC = op_.BY_NAME["ref.func"]
REF_IS_NULL = op_.BY_NAME["ref.is_null"]
REF_NULL = op_.BY_NAME["ref.null"]
RETURN = op_.BY_NAME["return"]
SELECT = op_.BY_NAME["select"]
SELECT_T = op_.BY_NAME["select_t"]
TABLE_COPY = op_.BY_NAME["table.copy"]
TABLE_FILL = op_.BY_NAME["table.fill"]
TABLE_GET = op_.BY_NAME["table.get"]
TABLE_GROW = op_.BY_NAME["table.grow"]
TABLE_INIT = op_.BY_NAME["table.init"]
TABLE_SET = op_.BY_NAME["table.set"]
TABLE_SIZE = op_.BY_NAME["table.size"]
UNREACHABLE = op_.BY_NAME["unreachable"]

# Frame fields: [opcode, start types, end types, height, unreachable, dead].
# ``unreachable`` is the appendix's flag (the rest of the block is stack-polymorphic); ``dead``
# marks a block entered from unreachable code, whose instructions never run either.
_OP, _PARAMS, _RESULTS, _HEIGHT, _UNREACH, _DEAD = range(6)

_NUMERIC_OR_VECTOR = frozenset({I32, I64, F32, F64, V128, UNKNOWN})
_REFERENCE_OR_UNKNOWN = frozenset({FUNCREF, EXTERNREF, UNKNOWN})
_SIMPLE = {**SIMPLE, **simd.SIMPLE}
_MEMORY_ACCESS = {**MEMORY_ACCESS, **simd.MEMORY_ACCESS}
_I32_1 = [I32]
_I32_3 = [I32, I32, I32]

# Single-value block types, as (params, results) lists, keyed by the s33 block type.
_VALUE_BLOCKS: dict[int, tuple[list[int], list[int]]] = {
    BLOCK_EMPTY: ([], []),
    **{t - 0x80: ([], [t]) for t in VALTYPE_NAMES},
}


def _names(types: list[int]) -> str:
    return "[" + " ".join(VALTYPE_NAMES.get(t, "?") for t in types) + "]"


def _mismatch(expected: list[int], found: list[int]) -> InvalidError:
    return InvalidError(f"type mismatch: expected {_names(expected)}, found {_names(found)}")


def _pop_vals(vals: list[int], base: int, unreach: bool, expected: list[int]) -> list[int]:
    """Pops ``expected`` (checking each type) and returns the types actually popped."""
    k = len(expected)
    h = len(vals)
    if h - k >= base:
        top = vals[h - k:]
        if top == expected:
            del vals[h - k:]
            return top
    found = vals[max(base, h - k):]
    popped = [UNKNOWN] * k
    for i in range(k - 1, -1, -1):
        want = expected[i]
        if len(vals) > base:
            got = vals[-1]
            if got != want and got != UNKNOWN and want != UNKNOWN:
                raise _mismatch(expected, found)
            popped[i] = vals.pop()
        elif not unreach:
            raise _mismatch(expected, found)
    return popped


def _pop_any(vals: list[int], base: int, unreach: bool) -> int:
    if len(vals) > base:
        return vals.pop()
    if unreach:
        return UNKNOWN
    raise InvalidError("type mismatch: expected a value, found []")


def _block_type(ctx: Context, bt: int) -> tuple[list[int], list[int]]:
    if bt >= 0:
        ctx.type_at(bt)
        return ctx.type_sigs[bt]
    sig = _VALUE_BLOCKS.get(bt)
    if sig is None:
        raise InvalidError(f"type mismatch: invalid block type {bt}")
    return sig


def validate_function(ctx: Context, func: Func, index: int) -> None:
    """Validates ``func`` in ``ctx``; sets ``func.heights`` and ``func.max_height``.

    ``index`` is the function's index in the function space, for error messages. Raises
    InvalidError with the spec's message, followed by the function and offending instruction.
    """
    params, results = ctx.type_sigs[func.type_index]
    local_types = params + list(func.locals)
    heights: list[int] = []
    try:
        _check_body(ctx, func.body, local_types, results, heights)
    except InvalidError as e:
        where = f" (function {index}"
        if 0 < len(heights) <= len(func.body):
            opcode, _, offset = func.body[len(heights) - 1]
            where += f", {op_.name(opcode)} at offset {offset:#x}"
        where += ")"
        raise InvalidError(f"{e}{where}") from None
    func.heights = heights
    func.max_height = max(max(heights), len(results))


def _check_body(ctx: Context, body: list[Instr], local_types: list[int], results: list[int],
                heights: list[int]) -> None:
    """The validation loop proper; appends one height per instruction to ``heights``."""
    vals: list[int] = []
    ctrl: list[list] = [[BLOCK, [], results, 0, False, False]]
    base = 0  # height of the innermost frame
    unreach = False  # the innermost frame's unreachable flag
    dead = False  # the innermost frame was entered from unreachable code
    live = True  # == not (unreach or dead): the current instruction can execute
    nlocals = len(local_types)
    record = heights.append
    simple = _SIMPLE
    memory_access = _MEMORY_ACCESS
    end_index = len(body) - 1

    for index, (op, imm, _offset) in enumerate(body):
        h = len(vals)
        record(h if live else -1)

        sig = simple.get(op)
        if sig is not None:
            pops, pushes = sig
            k = len(pops)
            if k:
                if h - k >= base and vals[h - k:] == pops:
                    del vals[h - k:]
                else:
                    _pop_vals(vals, base, unreach, pops)
            vals += pushes
            continue

        if op == LOCAL_GET:
            if imm >= nlocals:
                raise InvalidError(f"unknown local {imm}")
            vals.append(local_types[imm])
        elif op == LOCAL_SET or op == LOCAL_TEE:
            if imm >= nlocals:
                raise InvalidError(f"unknown local {imm}")
            t = local_types[imm]
            if not (h > base and vals[-1] == t):
                _pop_vals(vals, base, unreach, [t])
                vals.append(t)
            if op == LOCAL_SET:
                vals.pop()
        elif op in memory_access:
            ctx.mem_at(0)
            align, pops, pushes = memory_access[op]
            if imm[0] > align:
                raise InvalidError("alignment must not be larger than natural")
            k = len(pops)
            if h - k >= base and vals[h - k:] == pops:
                del vals[h - k:]
            else:
                _pop_vals(vals, base, unreach, pops)
            vals += pushes
        elif op == END or op == ELSE:
            frame = ctrl[-1]
            fop, fparams, fresults, fh = frame[_OP], frame[_PARAMS], frame[_RESULTS], frame[_HEIGHT]
            k = len(fresults)
            if not (h == fh + k and vals[fh:] == fresults):
                _pop_vals(vals, fh, unreach, fresults)
                if len(vals) != fh:
                    raise InvalidError(f"type mismatch: block must leave {_names(fresults)}, "
                                       f"found {_names(vals[fh:] + fresults)}")
                vals += fresults
            if op == ELSE:
                if fop != IF:
                    raise InvalidError("else without matching if")
                del vals[fh:]
                vals += fparams
                frame[_OP] = ELSE
                unreach = frame[_UNREACH] = False
                live = not dead
                continue
            if fop == IF and fparams != fresults:
                raise InvalidError(f"type mismatch: if without else has params "
                                   f"{_names(fparams)} but results {_names(fresults)}")
            ctrl.pop()
            if not ctrl:
                if index != end_index:
                    raise InvalidError("instructions after the function's end")
                return
            frame = ctrl[-1]
            base, unreach, dead = frame[_HEIGHT], frame[_UNREACH], frame[_DEAD]
            live = not (unreach or dead)
        elif op == GLOBAL_GET:
            vals.append(ctx.global_at(imm).valtype)
        elif op == CALL:
            ctx.func_at(imm)
            fparams, fresults = ctx.func_sigs[imm]
            _pop_vals(vals, base, unreach, fparams)
            vals += fresults
        elif op == BR_IF:
            if imm >= len(ctrl):
                raise InvalidError(f"unknown label {imm}")
            _pop_vals(vals, base, unreach, _I32_1)
            frame = ctrl[-1 - imm]
            labels = frame[_PARAMS] if frame[_OP] == LOOP else frame[_RESULTS]
            _pop_vals(vals, base, unreach, labels)
            vals += labels
        elif op == BLOCK or op == LOOP or op == IF:
            bparams, bresults = _block_type(ctx, imm)
            if op == IF:
                _pop_vals(vals, base, unreach, _I32_1)
            _pop_vals(vals, base, unreach, bparams)
            ctrl[-1][_UNREACH] = unreach
            base = len(vals)
            dead = not live
            unreach = False
            ctrl.append([op, bparams, bresults, base, False, dead])
            vals += bparams
        elif op == BR:
            if imm >= len(ctrl):
                raise InvalidError(f"unknown label {imm}")
            frame = ctrl[-1 - imm]
            labels = frame[_PARAMS] if frame[_OP] == LOOP else frame[_RESULTS]
            _pop_vals(vals, base, unreach, labels)
            del vals[base:]
            unreach = True
            live = False
        elif op == BR_TABLE:
            _pop_vals(vals, base, unreach, _I32_1)
            targets, default = imm
            if default >= len(ctrl):
                raise InvalidError(f"unknown label {default}")
            frame = ctrl[-1 - default]
            default_types = frame[_PARAMS] if frame[_OP] == LOOP else frame[_RESULTS]
            arity = len(default_types)
            for label in targets:
                if label >= len(ctrl):
                    raise InvalidError(f"unknown label {label}")
                frame = ctrl[-1 - label]
                types = frame[_PARAMS] if frame[_OP] == LOOP else frame[_RESULTS]
                if len(types) != arity:
                    raise InvalidError(f"type mismatch: br_table targets of different arity "
                                       f"{_names(types)} and {_names(default_types)}")
                vals += _pop_vals(vals, base, unreach, types)
            _pop_vals(vals, base, unreach, default_types)
            del vals[base:]
            unreach = True
            live = False
        elif op == RETURN:
            _pop_vals(vals, base, unreach, results)
            del vals[base:]
            unreach = True
            live = False
        elif op == UNREACHABLE:
            del vals[base:]
            unreach = True
            live = False
        elif op == NOP:
            pass
        elif op == DROP:
            if h > base:
                vals.pop()
            else:
                _pop_any(vals, base, unreach)
        elif op == SELECT:
            _pop_vals(vals, base, unreach, _I32_1)
            t1 = _pop_any(vals, base, unreach)
            t2 = _pop_any(vals, base, unreach)
            if t1 not in _NUMERIC_OR_VECTOR or t2 not in _NUMERIC_OR_VECTOR:
                raise InvalidError("type mismatch: select without a type needs numeric or "
                                   "vector operands")
            if t1 != t2 and t1 != UNKNOWN and t2 != UNKNOWN:
                raise InvalidError(f"type mismatch: select operands {_names([t2, t1])}")
            vals.append(t2 if t1 == UNKNOWN else t1)
        elif op == SELECT_T:
            if len(imm) != 1:
                raise InvalidError("invalid result arity")
            t = imm[0]
            _pop_vals(vals, base, unreach, [t, t, I32])
            vals.append(t)
        elif op == CALL_INDIRECT:
            type_index, table_index = imm
            if ctx.table_at(table_index).elem_type != FUNCREF:
                raise InvalidError("type mismatch: call_indirect needs a funcref table")
            ctx.type_at(type_index)
            fparams, fresults = ctx.type_sigs[type_index]
            _pop_vals(vals, base, unreach, _I32_1)
            _pop_vals(vals, base, unreach, fparams)
            vals += fresults
        elif op == GLOBAL_SET:
            gt = ctx.global_at(imm)
            if not gt.mutable:
                raise InvalidError(f"global is immutable: global {imm}")
            _pop_vals(vals, base, unreach, [gt.valtype])
        elif op == MEMORY_SIZE:
            ctx.mem_at(0)
            vals.append(I32)
        elif op == MEMORY_GROW:
            ctx.mem_at(0)
            _pop_vals(vals, base, unreach, _I32_1)
            vals.append(I32)
        elif op == REF_NULL:
            vals.append(imm)
        elif op == REF_IS_NULL:
            if _pop_any(vals, base, unreach) not in _REFERENCE_OR_UNKNOWN:
                raise InvalidError("type mismatch: ref.is_null needs a reference")
            vals.append(I32)
        elif op == REF_FUNC:
            ctx.func_at(imm)
            if imm not in ctx.refs:
                raise InvalidError(f"undeclared function reference {imm}")
            vals.append(FUNCREF)
        elif op >= op_.FD:
            _check_simd(ctx, op, imm, vals, base, unreach)
        else:
            _check_table_or_bulk(ctx, op, imm, vals, base, unreach)
    raise InvalidError("function body does not end with end")


def _check_table_or_bulk(ctx: Context, op: int, imm: object, vals: list[int], base: int,
                         unreach: bool) -> None:
    """Table and bulk memory instructions: rarer, and none of them changes control flow."""
    if op == TABLE_GET:
        et = ctx.table_at(imm).elem_type
        _pop_vals(vals, base, unreach, _I32_1)
        vals.append(et)
    elif op == TABLE_SET:
        et = ctx.table_at(imm).elem_type
        _pop_vals(vals, base, unreach, [I32, et])
    elif op == MEMORY_INIT:
        ctx.mem_at(0)
        ctx.check_data(imm)
        _pop_vals(vals, base, unreach, _I32_3)
    elif op == DATA_DROP:
        ctx.check_data(imm)
    elif op == MEMORY_COPY or op == MEMORY_FILL:
        ctx.mem_at(0)
        _pop_vals(vals, base, unreach, _I32_3)
    elif op == TABLE_INIT:
        elem_index, table_index = imm
        et = ctx.table_at(table_index).elem_type
        if ctx.elem_at(elem_index) != et:
            raise InvalidError("type mismatch: element segment and table types differ")
        _pop_vals(vals, base, unreach, _I32_3)
    elif op == ELEM_DROP:
        ctx.elem_at(imm)
    elif op == TABLE_COPY:
        dst, src = imm
        if ctx.table_at(dst).elem_type != ctx.table_at(src).elem_type:
            raise InvalidError("type mismatch: table.copy between tables of different types")
        _pop_vals(vals, base, unreach, _I32_3)
    elif op == TABLE_GROW:
        et = ctx.table_at(imm).elem_type
        _pop_vals(vals, base, unreach, [et, I32])
        vals.append(I32)
    elif op == TABLE_SIZE:
        ctx.table_at(imm)
        vals.append(I32)
    elif op == TABLE_FILL:
        et = ctx.table_at(imm).elem_type
        _pop_vals(vals, base, unreach, [I32, et, I32])
    else:
        raise InvalidError(f"unknown instruction {op_.name(op)}")


def _check_simd(ctx: Context, op: int, imm: object, vals: list[int], base: int,
                unreach: bool) -> None:
    """SIMD instructions with lane or constant immediates (the rest are in the signature tables)."""
    if op == simd.V128_CONST:
        vals.append(V128)
        return
    if op == simd.I8X16_SHUFFLE:
        if any(lane >= 32 for lane in imm):
            raise InvalidError("invalid lane index")
        _pop_vals(vals, base, unreach, [V128, V128])
        vals.append(V128)
        return
    lane_op = simd.LANE.get(op)
    if lane_op is not None:
        lanes, pops, pushes = lane_op
        if imm >= lanes:
            raise InvalidError(f"invalid lane index {imm}")
        _pop_vals(vals, base, unreach, pops)
        vals += pushes
        return
    memory_lane = simd.MEMORY_LANE.get(op)
    if memory_lane is None:
        raise InvalidError(f"unknown instruction {op_.name(op)}")
    align, lanes, pops, pushes = memory_lane
    ctx.mem_at(0)
    if imm[0] > align:
        raise InvalidError("alignment must not be larger than natural")
    if imm[2] >= lanes:
        raise InvalidError(f"invalid lane index {imm[2]}")
    _pop_vals(vals, base, unreach, pops)
    vals += pushes
