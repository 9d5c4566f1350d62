"""Integer lane arithmetic of the SIMD instructions (spec 4.3.2 and 4.4.3, "vector instructions").

One function per instruction, named after it (``i8x16_add``, ``i16x8_q15mulr_sat_s``); operands
and results are v128 ints as described in :mod:`vm.execution.simd`, shift counts and lane tests
use i32 ints.

Two techniques keep the common instructions cheap in pure Python:

* **whole-vector integer arithmetic** where carries can be kept inside lanes: add and sub work on
  all lanes at once by splitting off each lane's top bit (:func:`_add`), the saturating forms
  turn each lane's carry into a lane mask (:func:`_saturating`), shifts mask away the bits that
  crossed a lane boundary (:func:`_shifts`), and avgr, extadd_pairwise and i64x2.mul need no
  more than masks and shifts either;
* **C-level lane loops** for the rest: the lanes are split with ``struct`` and combined with
  ``map`` over ``operator`` functions and builtins (``min``, ``max``, ``abs``), so no Python
  code runs per lane. Comparisons produce 0/1 lanes and multiply them by the all-ones lane,
  which yields the 0/-1 masks the spec wants without any carry between lanes.
"""

from __future__ import annotations

import struct
from itertools import repeat
from operator import add, eq, ge, gt, le, lt, mul, ne
from typing import Callable

from .simd_lanes import (HIGH8, HIGH16, HIGH32, HIGH64, LOW8, LOW16, LOW32, LOW64, M32, M64,
                         from_bytes, join_s8, join_s16, join_s32, join_s64, join_u8, join_u16,
                         join_u32, join_u64, repeat_lane, s8, s16, s32, s64, u8, u16, u32, u64)

V128Op = Callable[..., int]


def _named(fn: V128Op, name: str, doc: str | None = None) -> V128Op:
    """Give a function made by one of the family builders below its instruction's name."""
    fn.__name__ = fn.__qualname__ = name
    if doc:
        fn.__doc__ = doc
    return fn


# --- add, sub, neg: all lanes at once ---------------------------------------------------------
# Adding the lanes without their top bits cannot carry into the next lane; the top bit of each
# lane is then the xor of the operands' top bits and that carry. Subtraction sets each lane's top
# bit of the minuend first, so no lane borrows from its neighbour, and corrects it the same way.

def _add(low: int, high: int, name: str) -> V128Op:
    def f(a: int, b: int) -> int:
        return ((a & low) + (b & low)) ^ ((a ^ b) & high)
    return _named(f, name)


def _sub(low: int, high: int, name: str) -> V128Op:
    def f(a: int, b: int) -> int:
        return ((a | high) - (b & low)) ^ ((a ^ b ^ high) & high)
    return _named(f, name)


def _neg(low: int, high: int, name: str) -> V128Op:
    def f(a: int) -> int:
        return (high - (a & low)) ^ ((a ^ high) & high)
    return _named(f, name)


i8x16_add = _add(LOW8, HIGH8, "i8x16_add")
i16x8_add = _add(LOW16, HIGH16, "i16x8_add")
i32x4_add = _add(LOW32, HIGH32, "i32x4_add")
i64x2_add = _add(LOW64, HIGH64, "i64x2_add")
i8x16_sub = _sub(LOW8, HIGH8, "i8x16_sub")
i16x8_sub = _sub(LOW16, HIGH16, "i16x8_sub")
i32x4_sub = _sub(LOW32, HIGH32, "i32x4_sub")
i64x2_sub = _sub(LOW64, HIGH64, "i64x2_sub")
i8x16_neg = _neg(LOW8, HIGH8, "i8x16_neg")
i16x8_neg = _neg(LOW16, HIGH16, "i16x8_neg")
i32x4_neg = _neg(LOW32, HIGH32, "i32x4_neg")
i64x2_neg = _neg(LOW64, HIGH64, "i64x2_neg")


# --- shifts: the count is taken modulo the lane width -------------------------------------------

def _shifts(width: int, high: int, prefix: str) -> tuple[V128Op, V128Op, V128Op]:
    # Per shift count n: the bits shl keeps, the bits shr_u keeps, and the lane-sized run of
    # sign copies that shr_s adds on top of a negative lane.
    lane = (1 << width) - 1
    keep_left = [repeat_lane((lane << n) & lane, width) for n in range(width)]
    keep_right = [repeat_lane(lane >> n, width) for n in range(width)]
    fill = [lane ^ (lane >> n) for n in range(width)]
    count_mask = width - 1
    top = width - 1

    def shl(a: int, n: int) -> int:
        n &= count_mask
        return (a << n) & keep_left[n]

    def shr_u(a: int, n: int) -> int:
        n &= count_mask
        return (a >> n) & keep_right[n]

    def shr_s(a: int, n: int) -> int:
        # A lane's sign bit, moved to the lane's bit 0, times the fill: no carries between lanes.
        n &= count_mask
        return ((a >> n) & keep_right[n]) | (((a & high) >> top) * fill[n])

    return (_named(shl, f"{prefix}_shl"), _named(shr_s, f"{prefix}_shr_s"),
            _named(shr_u, f"{prefix}_shr_u"))


i8x16_shl, i8x16_shr_s, i8x16_shr_u = _shifts(8, HIGH8, "i8x16")
i16x8_shl, i16x8_shr_s, i16x8_shr_u = _shifts(16, HIGH16, "i16x8")
i32x4_shl, i32x4_shr_s, i32x4_shr_u = _shifts(32, HIGH32, "i32x4")
i64x2_shl, i64x2_shr_s, i64x2_shr_u = _shifts(64, HIGH64, "i64x2")


# --- comparisons ----------------------------------------------------------------------------------

def _compare(lanes: Callable[[int], tuple], join: Callable[..., int], ones: int,
             pred: Callable[[int, int], bool], name: str) -> V128Op:
    def f(a: int, b: int) -> int:
        return join(*map(pred, lanes(a), lanes(b))) * ones
    return _named(f, name)


def _comparisons(prefix: str, unsigned: Callable, signed: Callable, join: Callable,
                 ones: int) -> dict[str, V128Op]:
    ops: dict[str, V128Op] = {
        "eq": _compare(unsigned, join, ones, eq, f"{prefix}_eq"),
        "ne": _compare(unsigned, join, ones, ne, f"{prefix}_ne"),
    }
    for rel, pred in (("lt", lt), ("gt", gt), ("le", le), ("ge", ge)):
        ops[f"{rel}_s"] = _compare(signed, join, ones, pred, f"{prefix}_{rel}_s")
        ops[f"{rel}_u"] = _compare(unsigned, join, ones, pred, f"{prefix}_{rel}_u")
    return ops


_C8 = _comparisons("i8x16", u8, s8, join_u8, 0xFF)
_C16 = _comparisons("i16x8", u16, s16, join_u16, 0xFFFF)
_C32 = _comparisons("i32x4", u32, s32, join_u32, M32)
_C64 = _comparisons("i64x2", u64, s64, join_u64, M64)

i8x16_eq, i8x16_ne = _C8["eq"], _C8["ne"]
i8x16_lt_s, i8x16_lt_u, i8x16_gt_s, i8x16_gt_u = _C8["lt_s"], _C8["lt_u"], _C8["gt_s"], _C8["gt_u"]
i8x16_le_s, i8x16_le_u, i8x16_ge_s, i8x16_ge_u = _C8["le_s"], _C8["le_u"], _C8["ge_s"], _C8["ge_u"]
i16x8_eq, i16x8_ne = _C16["eq"], _C16["ne"]
i16x8_lt_s, i16x8_lt_u, i16x8_gt_s, i16x8_gt_u = (_C16["lt_s"], _C16["lt_u"], _C16["gt_s"],
                                                  _C16["gt_u"])
i16x8_le_s, i16x8_le_u, i16x8_ge_s, i16x8_ge_u = (_C16["le_s"], _C16["le_u"], _C16["ge_s"],
                                                  _C16["ge_u"])
i32x4_eq, i32x4_ne = _C32["eq"], _C32["ne"]
i32x4_lt_s, i32x4_lt_u, i32x4_gt_s, i32x4_gt_u = (_C32["lt_s"], _C32["lt_u"], _C32["gt_s"],
                                                  _C32["gt_u"])
i32x4_le_s, i32x4_le_u, i32x4_ge_s, i32x4_ge_u = (_C32["le_s"], _C32["le_u"], _C32["ge_s"],
                                                  _C32["ge_u"])
# i64x2 has only the signed relations.
i64x2_eq, i64x2_ne = _C64["eq"], _C64["ne"]
i64x2_lt_s, i64x2_gt_s, i64x2_le_s, i64x2_ge_s = (_C64["lt_s"], _C64["gt_s"], _C64["le_s"],
                                                  _C64["ge_s"])


# --- lane tests: all_true and bitmask ---------------------------------------------------------

def i8x16_all_true(a: int) -> int:
    return 0 if 0 in a.to_bytes(16, "little") else 1


def i16x8_all_true(a: int) -> int:
    return 1 if all(u16(a)) else 0


def i32x4_all_true(a: int) -> int:
    return 1 if all(u32(a)) else 0


def i64x2_all_true(a: int) -> int:
    return 1 if a & M64 and a >> 64 else 0


# bitmask: each lane's top bit, moved to bit 0 of its lane, is a 0 or 1 byte in the lane's last
# big-endian byte; those bytes, as ASCII digits, are the mask in binary (lane 0 least significant).
_DIGITS = bytes.maketrans(b"\x00\x01", b"01")


def _bitmask(width: int, name: str) -> V128Op:
    top = width - 1
    ones = repeat_lane(1, width)
    step = width // 8

    def f(a: int) -> int:
        bits = ((a >> top) & ones).to_bytes(16, "big")[step - 1::step]
        return int(bits.translate(_DIGITS), 2)
    return _named(f, name, "The lanes' sign bits as an i32, lane 0 in bit 0.")


i8x16_bitmask = _bitmask(8, "i8x16_bitmask")
i16x8_bitmask = _bitmask(16, "i16x8_bitmask")
i32x4_bitmask = _bitmask(32, "i32x4_bitmask")
i64x2_bitmask = _bitmask(64, "i64x2_bitmask")


# --- abs, min, max, avgr, popcnt ----------------------------------------------------------------
# abs of the most negative lane value is itself; as an unsigned lane that is exactly abs().

def i8x16_abs(a: int) -> int:
    return join_u8(*map(abs, s8(a)))


def i16x8_abs(a: int) -> int:
    return join_u16(*map(abs, s16(a)))


def i32x4_abs(a: int) -> int:
    return join_u32(*map(abs, s32(a)))


def i64x2_abs(a: int) -> int:
    return join_u64(*map(abs, s64(a)))


def i8x16_min_s(a: int, b: int) -> int:
    return join_s8(*map(min, s8(a), s8(b)))


def i8x16_min_u(a: int, b: int) -> int:
    return join_u8(*map(min, u8(a), u8(b)))


def i8x16_max_s(a: int, b: int) -> int:
    return join_s8(*map(max, s8(a), s8(b)))


def i8x16_max_u(a: int, b: int) -> int:
    return join_u8(*map(max, u8(a), u8(b)))


def i16x8_min_s(a: int, b: int) -> int:
    return join_s16(*map(min, s16(a), s16(b)))


def i16x8_min_u(a: int, b: int) -> int:
    return join_u16(*map(min, u16(a), u16(b)))


def i16x8_max_s(a: int, b: int) -> int:
    return join_s16(*map(max, s16(a), s16(b)))


def i16x8_max_u(a: int, b: int) -> int:
    return join_u16(*map(max, u16(a), u16(b)))


def i32x4_min_s(a: int, b: int) -> int:
    return join_s32(*map(min, s32(a), s32(b)))


def i32x4_min_u(a: int, b: int) -> int:
    return join_u32(*map(min, u32(a), u32(b)))


def i32x4_max_s(a: int, b: int) -> int:
    return join_s32(*map(max, s32(a), s32(b)))


def i32x4_max_u(a: int, b: int) -> int:
    return join_u32(*map(max, u32(a), u32(b)))


# Rounding average (x + y + 1) >> 1 is (x | y) - ((x ^ y) >> 1); the subtrahend never exceeds
# x | y, so subtracting whole vectors borrows nothing across lanes.
_HALF8 = repeat_lane(0x7F, 8)
_HALF16 = repeat_lane(0x7FFF, 16)


def i8x16_avgr_u(a: int, b: int) -> int:
    return (a | b) - (((a ^ b) >> 1) & _HALF8)


def i16x8_avgr_u(a: int, b: int) -> int:
    return (a | b) - (((a ^ b) >> 1) & _HALF16)


_POPCOUNT = bytes(bin(i).count("1") for i in range(256))


def i8x16_popcnt(a: int) -> int:
    return from_bytes(a.to_bytes(16, "little").translate(_POPCOUNT))


# --- saturating add and sub: whole-vector, with each lane's carry turned into a mask -------------
# The lane-wise sum or difference comes from _add/_sub; the carry (borrow) out of each lane's top
# bit, or its signed overflow, is recomputed from the operands' and result's top bits, spread to a
# whole-lane mask by a multiplication, and used to select the saturated value.

def _saturating(width: int, low: int, high: int, prefix: str) -> tuple[V128Op, ...]:
    top = width - 1
    lane_ones = (1 << width) - 1
    signed_max = repeat_lane((1 << top) - 1, width)  # +1 in a negative lane gives the minimum

    def add_lanes(a: int, b: int) -> int:
        return ((a & low) + (b & low)) ^ ((a ^ b) & high)

    def sub_lanes(a: int, b: int) -> int:
        return ((a | high) - (b & low)) ^ ((a ^ b ^ high) & high)

    def add_sat_u(a: int, b: int) -> int:
        s = add_lanes(a, b)
        carry = ((a & b) | ((a | b) & ~s)) & high
        return s | (carry >> top) * lane_ones

    def sub_sat_u(a: int, b: int) -> int:
        d = sub_lanes(a, b)
        borrow = ((~a & b) | (~(a ^ b) & d)) & high
        return d & ~((borrow >> top) * lane_ones)

    def add_sat_s(a: int, b: int) -> int:
        s = add_lanes(a, b)
        mask = ((~(a ^ b) & (a ^ s) & high) >> top) * lane_ones
        return (s & ~mask) | ((signed_max + ((a & high) >> top)) & mask)

    def sub_sat_s(a: int, b: int) -> int:
        d = sub_lanes(a, b)
        mask = (((a ^ b) & (a ^ d) & high) >> top) * lane_ones
        return (d & ~mask) | ((signed_max + ((a & high) >> top)) & mask)

    return (_named(add_sat_s, f"{prefix}_add_sat_s"), _named(add_sat_u, f"{prefix}_add_sat_u"),
            _named(sub_sat_s, f"{prefix}_sub_sat_s"), _named(sub_sat_u, f"{prefix}_sub_sat_u"))


i8x16_add_sat_s, i8x16_add_sat_u, i8x16_sub_sat_s, i8x16_sub_sat_u = _saturating(
    8, LOW8, HIGH8, "i8x16")
i16x8_add_sat_s, i16x8_add_sat_u, i16x8_sub_sat_s, i16x8_sub_sat_u = _saturating(
    16, LOW16, HIGH16, "i16x8")


# --- multiplication -----------------------------------------------------------------------------

def i16x8_mul(a: int, b: int) -> int:
    return join_u16(*[(x * y) & 0xFFFF for x, y in zip(u16(a), u16(b))])


def i32x4_mul(a: int, b: int) -> int:
    return (((a & M32) * (b & M32) & M32)
            | ((a >> 32 & M32) * (b >> 32 & M32) & M32) << 32
            | ((a >> 64 & M32) * (b >> 64 & M32) & M32) << 64
            | ((a >> 96) * (b >> 96) & M32) << 96)


def i64x2_mul(a: int, b: int) -> int:
    return ((a & M64) * (b & M64) & M64) | (((a >> 64) * (b >> 64) & M64) << 64)


def i16x8_q15mulr_sat_s(a: int, b: int) -> int:
    """Q15 fixed-point multiply, rounded: ``(x * y + 2**14) >> 15``. Only -1.0 * -1.0 leaves the
    range, and saturates to 32767."""
    return join_s16(*[min((x * y + 0x4000) >> 15, 32767) for x, y in zip(s16(a), s16(b))])


def i32x4_dot_i16x8_s(a: int, b: int) -> int:
    """Sums of adjacent signed 16-bit products; the sum of two (-2**15)**2 wraps to -2**31."""
    x, y = s16(a), s16(b)
    sums = map(add, map(mul, x[0::2], y[0::2]), map(mul, x[1::2], y[1::2]))
    return join_u32(*[s & M32 for s in sums])


# --- widening: extend, extmul, extadd_pairwise ----------------------------------------------------
# The half-vector views read 8 bytes at offset 0 (low half) or 8 (high half).

_LO_S8 = struct.Struct("<8b")
_LO_U8 = struct.Struct("<8B")
_LO_S16 = struct.Struct("<4h")
_LO_U16 = struct.Struct("<4H")
_LO_S32 = struct.Struct("<2i")
_LO_U32 = struct.Struct("<2I")


def _half(view: struct.Struct, offset: int) -> Callable[[int], tuple[int, ...]]:
    unpack_from = view.unpack_from

    def lanes(v: int) -> tuple[int, ...]:
        return unpack_from(v.to_bytes(16, "little"), offset)
    return lanes


_LOW_S8, _HIGH_S8 = _half(_LO_S8, 0), _half(_LO_S8, 8)
_LOW_U8, _HIGH_U8 = _half(_LO_U8, 0), _half(_LO_U8, 8)
_LOW_S16, _HIGH_S16 = _half(_LO_S16, 0), _half(_LO_S16, 8)
_LOW_U16, _HIGH_U16 = _half(_LO_U16, 0), _half(_LO_U16, 8)
_LOW_S32, _HIGH_S32 = _half(_LO_S32, 0), _half(_LO_S32, 8)
_LOW_U32, _HIGH_U32 = _half(_LO_U32, 0), _half(_LO_U32, 8)


def _extend(half: Callable[[int], tuple[int, ...]], join: Callable[..., int],
            name: str) -> V128Op:
    def f(a: int) -> int:
        return join(*half(a))
    return _named(f, name)


def _extmul(half: Callable[[int], tuple[int, ...]], join: Callable[..., int],
            name: str) -> V128Op:
    # The product of two extended lanes always fits the wide lane (signed or unsigned).
    def f(a: int, b: int) -> int:
        return join(*map(mul, half(a), half(b)))
    return _named(f, name)


i16x8_extend_low_i8x16_s = _extend(_LOW_S8, join_s16, "i16x8_extend_low_i8x16_s")
i16x8_extend_high_i8x16_s = _extend(_HIGH_S8, join_s16, "i16x8_extend_high_i8x16_s")
i16x8_extend_low_i8x16_u = _extend(_LOW_U8, join_u16, "i16x8_extend_low_i8x16_u")
i16x8_extend_high_i8x16_u = _extend(_HIGH_U8, join_u16, "i16x8_extend_high_i8x16_u")
i32x4_extend_low_i16x8_s = _extend(_LOW_S16, join_s32, "i32x4_extend_low_i16x8_s")
i32x4_extend_high_i16x8_s = _extend(_HIGH_S16, join_s32, "i32x4_extend_high_i16x8_s")
i32x4_extend_low_i16x8_u = _extend(_LOW_U16, join_u32, "i32x4_extend_low_i16x8_u")
i32x4_extend_high_i16x8_u = _extend(_HIGH_U16, join_u32, "i32x4_extend_high_i16x8_u")
i64x2_extend_low_i32x4_s = _extend(_LOW_S32, join_s64, "i64x2_extend_low_i32x4_s")
i64x2_extend_high_i32x4_s = _extend(_HIGH_S32, join_s64, "i64x2_extend_high_i32x4_s")
i64x2_extend_low_i32x4_u = _extend(_LOW_U32, join_u64, "i64x2_extend_low_i32x4_u")
i64x2_extend_high_i32x4_u = _extend(_HIGH_U32, join_u64, "i64x2_extend_high_i32x4_u")

i16x8_extmul_low_i8x16_s = _extmul(_LOW_S8, join_s16, "i16x8_extmul_low_i8x16_s")
i16x8_extmul_high_i8x16_s = _extmul(_HIGH_S8, join_s16, "i16x8_extmul_high_i8x16_s")
i16x8_extmul_low_i8x16_u = _extmul(_LOW_U8, join_u16, "i16x8_extmul_low_i8x16_u")
i16x8_extmul_high_i8x16_u = _extmul(_HIGH_U8, join_u16, "i16x8_extmul_high_i8x16_u")
i32x4_extmul_low_i16x8_s = _extmul(_LOW_S16, join_s32, "i32x4_extmul_low_i16x8_s")
i32x4_extmul_high_i16x8_s = _extmul(_HIGH_S16, join_s32, "i32x4_extmul_high_i16x8_s")
i32x4_extmul_low_i16x8_u = _extmul(_LOW_U16, join_u32, "i32x4_extmul_low_i16x8_u")
i32x4_extmul_high_i16x8_u = _extmul(_HIGH_U16, join_u32, "i32x4_extmul_high_i16x8_u")
i64x2_extmul_low_i32x4_s = _extmul(_LOW_S32, join_s64, "i64x2_extmul_low_i32x4_s")
i64x2_extmul_high_i32x4_s = _extmul(_HIGH_S32, join_s64, "i64x2_extmul_high_i32x4_s")
i64x2_extmul_low_i32x4_u = _extmul(_LOW_U32, join_u64, "i64x2_extmul_low_i32x4_u")
i64x2_extmul_high_i32x4_u = _extmul(_HIGH_U32, join_u64, "i64x2_extmul_high_i32x4_u")


# Pairwise sums: the even lanes plus the odd lanes shifted down, in wide lanes that cannot
# overflow. The signed sums flip each narrow lane's sign bit first (x + 2**(w-1) is unsigned) and
# subtract the two biases again with a lane-wise add of -2**w.
_EVEN8 = repeat_lane(0xFF, 16)
_EVEN16 = repeat_lane(0xFFFF, 32)
_BIAS16 = repeat_lane(0xFF00, 16)
_BIAS32 = repeat_lane(0xFFFF0000, 32)


def i16x8_extadd_pairwise_i8x16_u(a: int) -> int:
    return (a & _EVEN8) + ((a >> 8) & _EVEN8)


def i16x8_extadd_pairwise_i8x16_s(a: int) -> int:
    return i16x8_add(i16x8_extadd_pairwise_i8x16_u(a ^ HIGH8), _BIAS16)


def i32x4_extadd_pairwise_i16x8_u(a: int) -> int:
    return (a & _EVEN16) + ((a >> 16) & _EVEN16)


def i32x4_extadd_pairwise_i16x8_s(a: int) -> int:
    return i32x4_add(i32x4_extadd_pairwise_i16x8_u(a ^ HIGH16), _BIAS32)


# --- narrowing: both operands' signed lanes, saturated to the narrow lane ------------------------

def i8x16_narrow_i16x8_s(a: int, b: int) -> int:
    return join_s8(*map(max, map(min, s16(a) + s16(b), repeat(127)), repeat(-128)))


def i8x16_narrow_i16x8_u(a: int, b: int) -> int:
    return join_u8(*map(max, map(min, s16(a) + s16(b), repeat(255)), repeat(0)))


def i16x8_narrow_i32x4_s(a: int, b: int) -> int:
    return join_s16(*map(max, map(min, s32(a) + s32(b), repeat(32767)), repeat(-32768)))


def i16x8_narrow_i32x4_u(a: int, b: int) -> int:
    return join_u16(*map(max, map(min, s32(a) + s32(b), repeat(65535)), repeat(0)))
