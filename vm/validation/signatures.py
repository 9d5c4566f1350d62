"""Static operand signatures of the instructions whose typing depends only on the opcode.

Most of the instruction set (constants, numeric operators, conversions, loads and stores) pops and
pushes a fixed list of value types. Deriving those lists once from the opcode names in
:mod:`vm.binary.opcodes` keeps the validator's hot loop to one dict lookup and a list comparison
per instruction, and keeps the table in step with the opcode list instead of repeating it.
"""

from __future__ import annotations

import re

from vm.binary import opcodes
from vm.structure import F32, F64, I32, I64, V128

_TYPES = {"i32": I32, "i64": I64, "f32": F32, "f64": F64, "v128": V128}

_UNARY = {"clz", "ctz", "popcnt", "abs", "neg", "ceil", "floor", "trunc", "nearest", "sqrt",
          "extend8_s", "extend16_s", "extend32_s"}
_BINARY = {"add", "sub", "mul", "div", "div_s", "div_u", "rem_s", "rem_u", "and", "or", "xor",
           "shl", "shr_s", "shr_u", "rotl", "rotr", "min", "max", "copysign"}
_COMPARE = {"eq", "ne", "lt", "lt_s", "lt_u", "gt", "gt_s", "gt_u", "le", "le_s", "le_u",
            "ge", "ge_s", "ge_u"}
# Conversions are named ``<result>.<op>_<operand>[_s|_u]``.
_CONVERSION = re.compile(r"^(?:wrap|extend|trunc|trunc_sat|convert|demote|promote|reinterpret)"
                         r"_(i32|i64|f32|f64)(?:_[su])?$")
_LOAD_BYTES = re.compile(r"^(load|store)(8|16|32)?(?:_[su])?$")

Sig = tuple[list[int], list[int]]


def _signature(name: str) -> Sig | None:
    """Operand and result types of a fixed-signature instruction, or None if typing needs more."""
    prefix, _, op = name.partition(".")
    t = _TYPES.get(prefix)
    if t is None:
        return None
    if op == "const":
        return [], [t]
    if op == "eqz":
        return [t], [I32]
    if op in _COMPARE:
        return [t, t], [I32]
    if op in _UNARY:
        return [t], [t]
    if op in _BINARY:
        return [t, t], [t]
    m = _CONVERSION.match(op)
    if m:
        return [_TYPES[m.group(1)]], [t]
    return None


def _natural_alignment(name: str) -> int | None:
    """log2 of the access width in bytes of a load or store, the largest valid alignment."""
    prefix, _, op = name.partition(".")
    m = _LOAD_BYTES.match(op)
    if prefix not in _TYPES or not m:
        return None
    bits = int(m.group(2)) if m.group(2) else int(prefix[1:])
    return {8: 0, 16: 1, 32: 2, 64: 3}[bits]


def _build() -> tuple[dict[int, Sig], dict[int, tuple[int, list[int], list[int]]]]:
    simple: dict[int, Sig] = {}
    memory: dict[int, tuple[int, list[int], list[int]]] = {}
    for op, name in opcodes.NAMES.items():
        kind = opcodes.IMM[op]
        if kind == "memarg":
            align = _natural_alignment(name)
            assert align is not None, name
            t = _TYPES[name.partition(".")[0]]
            if ".load" in name:
                memory[op] = (align, [I32], [t])
            else:
                memory[op] = (align, [I32, t], [])
            continue
        if kind not in ("none", "i32", "i64", "f32", "f64"):
            continue
        sig = _signature(name)
        if sig is not None:
            simple[op] = sig
    return simple, memory


# SIMPLE: opcode -> (operand types, result types), for instructions typed by their opcode alone.
# MEMORY_ACCESS: opcode -> (max alignment exponent, operand types, result types) of loads/stores.
SIMPLE, MEMORY_ACCESS = _build()
