"""Operand signatures of the 128-bit SIMD instructions (``0xFD n``, spec 3.3.3 and 5.4.8).

As in :mod:`vm.validation.signatures`, the types follow from the instruction names, which come
from :data:`vm.binary.opcodes.SIMD_NAMES`.
"""

from __future__ import annotations

from vm.binary.opcodes import BY_NAME, SIMD_NAMES
from vm.structure import F32, F64, I32, I64, V128

# Scalar type of a shape's lanes, and its lane count.
_LANE_TYPE = {"i8x16": I32, "i16x8": I32, "i32x4": I32, "i64x2": I64, "f32x4": F32, "f64x2": F64}
_LANES = {"i8x16": 16, "i16x8": 8, "i32x4": 4, "i64x2": 2, "f32x4": 4, "f64x2": 2}
# Bytes accessed by the v128 loads and stores, by the name after "v128.".
_ACCESS_BYTES = {"load": 16, "store": 16, "load8x8_s": 8, "load8x8_u": 8, "load16x4_s": 8,
                 "load16x4_u": 8, "load32x2_s": 8, "load32x2_u": 8, "load8_splat": 1,
                 "load16_splat": 2, "load32_splat": 4, "load64_splat": 8, "load32_zero": 4,
                 "load64_zero": 8}
_LANE_ACCESS_BYTES = {"8": 1, "16": 2, "32": 4, "64": 8}
_TESTS = {"any_true", "all_true", "bitmask"}
_SHIFTS = {"shl", "shr_s", "shr_u"}
_UNARY_PREFIXES = ("not", "abs", "neg", "popcnt", "ceil", "floor", "trunc", "nearest", "sqrt",
                   "extadd_pairwise", "extend_", "demote", "promote", "convert")

Sig = tuple[list[int], list[int]]


def _alignment(nbytes: int) -> int:
    return nbytes.bit_length() - 1


def _classify() -> tuple[dict[int, Sig], dict[int, tuple[int, list[int], list[int]]],
                         dict[int, tuple[int, list[int], list[int]]],
                         dict[int, tuple[int, int, list[int], list[int]]]]:
    simple: dict[int, Sig] = {}
    memory: dict[int, tuple[int, list[int], list[int]]] = {}
    lane: dict[int, tuple[int, list[int], list[int]]] = {}
    memory_lane: dict[int, tuple[int, int, list[int], list[int]]] = {}
    for op, name in SIMD_NAMES.items():
        shape, _, rest = name.partition(".")
        if rest in _ACCESS_BYTES:
            align = _alignment(_ACCESS_BYTES[rest])
            if rest == "store":
                memory[op] = (align, [I32, V128], [])
            else:
                memory[op] = (align, [I32], [V128])
        elif rest.endswith("_lane") and shape == "v128":
            nbytes = _LANE_ACCESS_BYTES[rest.removeprefix("load").removeprefix("store")
                                        .removesuffix("_lane")]
            pushes = [V128] if rest.startswith("load") else []
            memory_lane[op] = (_alignment(nbytes), 16 // nbytes, [I32, V128], pushes)
        elif rest.startswith("extract_lane"):
            lane[op] = (_LANES[shape], [V128], [_LANE_TYPE[shape]])
        elif rest == "replace_lane":
            lane[op] = (_LANES[shape], [V128, _LANE_TYPE[shape]], [V128])
        elif rest in ("const", "shuffle"):
            continue  # immediates need their own checks
        elif rest == "splat":
            simple[op] = ([_LANE_TYPE[shape]], [V128])
        elif rest in _TESTS:
            simple[op] = ([V128], [I32])
        elif rest in _SHIFTS:
            simple[op] = ([V128, I32], [V128])
        elif rest == "bitselect":
            simple[op] = ([V128, V128, V128], [V128])
        elif rest.startswith(_UNARY_PREFIXES) or rest.startswith("trunc_sat"):
            simple[op] = ([V128], [V128])
        else:
            simple[op] = ([V128, V128], [V128])
    return simple, memory, lane, memory_lane


# SIMPLE: opcode -> (operand types, result types).
# MEMORY_ACCESS: opcode -> (max alignment exponent, operand types, result types).
# LANE: opcode -> (lane count, operand types, result types) of extract_lane / replace_lane.
# MEMORY_LANE: opcode -> (max alignment exponent, lane count, operand types, result types).
SIMPLE, MEMORY_ACCESS, LANE, MEMORY_LANE = _classify()
V128_CONST = BY_NAME["v128.const"]
I8X16_SHUFFLE = BY_NAME["i8x16.shuffle"]
