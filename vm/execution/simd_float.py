"""Floating-point lane arithmetic and the conversions of the SIMD instructions.

One function per instruction, named after it (``f32x4_add``, ``i32x4_trunc_sat_f64x2_s_zero``),
on v128 ints as described in :mod:`vm.execution.simd`. Each lane follows the scalar instruction
of :mod:`vm.execution.numerics` exactly, so NaN handling, signed zeros and rounding are those of
the scalar code:

* f64 lanes are unpacked bit-exactly and computed with Python floats (IEEE binary64);
* f32 lanes are unpacked to doubles, computed in double and rounded once to f32 when packed
  (:func:`~vm.execution.simd_lanes.join_f32`); for add, sub, mul, div and sqrt that single
  rounding of the exact-in-double result is the correctly rounded f32 result, as the numerics
  module explains. Unpacking quiets a signalling NaN, which only matters where the spec wants an
  operand's bits back unchanged: abs, neg, pmin, pmax and the lane moves, which therefore work on
  the lanes' bit patterns.

Arithmetic NaNs come from the hardware, which quiets and propagates an operand NaN's payload and
otherwise produces the canonical NaN, as the spec's NaN rules require.
"""

from __future__ import annotations

import struct
from operator import eq, ge, gt, le, lt, ne, sub, truediv
from operator import add as fadd
from operator import mul as fmul
from typing import Callable

from . import numerics as n
from .simd_lanes import (HIGH32, HIGH64, LOW32, LOW64, M32, f32, f64, join_f32, join_f64,
                         join_u32, join_u64, s32, u32, u64)

V128Op = Callable[..., int]

_F32 = struct.Struct("<4f")
_unpack_f32 = _F32.unpack
_pack_f32 = _F32.pack
_from_bytes = int.from_bytes


def _named(fn: V128Op, name: str) -> V128Op:
    fn.__name__ = fn.__qualname__ = name
    return fn


# --- sign operations: bit operations, NaN payloads untouched --------------------------------------

def f32x4_abs(a: int) -> int:
    return a & LOW32


def f32x4_neg(a: int) -> int:
    return a ^ HIGH32


def f64x2_abs(a: int) -> int:
    return a & LOW64


def f64x2_neg(a: int) -> int:
    return a ^ HIGH64


# --- lane-wise arithmetic -------------------------------------------------------------------------

def _f32_arith(op: Callable[[float, float], float], name: str) -> V128Op:
    """add, sub and mul: the lane helpers inlined, as these dominate float vector code."""
    def f(a: int, b: int) -> int:
        lanes = map(op, _unpack_f32(a.to_bytes(16, "little")),
                    _unpack_f32(b.to_bytes(16, "little")))
        try:
            return _from_bytes(_pack_f32(*lanes), "little")
        except OverflowError:  # a lane rounds to infinity: join_f32 handles it
            return join_f32(*map(op, f32(a), f32(b)))
    return _named(f, name)


f32x4_add = _f32_arith(fadd, "f32x4_add")
f32x4_sub = _f32_arith(sub, "f32x4_sub")
f32x4_mul = _f32_arith(fmul, "f32x4_mul")


def f32x4_div(a: int, b: int) -> int:
    x, y = f32(a), f32(b)
    try:
        return join_f32(*map(truediv, x, y))
    except ZeroDivisionError:  # Python raises where IEEE gives an infinity or NaN
        return join_f32(*map(n.f64_div, x, y))


def f32x4_sqrt(a: int) -> int:
    return join_f32(*map(n.f64_sqrt, f32(a)))


def f32x4_min(a: int, b: int) -> int:
    return join_f32(*map(n.f32_min, f32(a), f32(b)))


def f32x4_max(a: int, b: int) -> int:
    return join_f32(*map(n.f32_max, f32(a), f32(b)))


def f32x4_ceil(a: int) -> int:
    return join_f32(*map(n.f32_ceil, f32(a)))


def f32x4_floor(a: int) -> int:
    return join_f32(*map(n.f32_floor, f32(a)))


def f32x4_trunc(a: int) -> int:
    return join_f32(*map(n.f32_trunc, f32(a)))


def f32x4_nearest(a: int) -> int:
    return join_f32(*map(n.f32_nearest, f32(a)))


def f64x2_add(a: int, b: int) -> int:
    return join_f64(*map(fadd, f64(a), f64(b)))


def f64x2_sub(a: int, b: int) -> int:
    return join_f64(*map(sub, f64(a), f64(b)))


def f64x2_mul(a: int, b: int) -> int:
    return join_f64(*map(fmul, f64(a), f64(b)))


def f64x2_div(a: int, b: int) -> int:
    return join_f64(*map(n.f64_div, f64(a), f64(b)))


def f64x2_sqrt(a: int) -> int:
    return join_f64(*map(n.f64_sqrt, f64(a)))


def f64x2_min(a: int, b: int) -> int:
    return join_f64(*map(n.f64_min, f64(a), f64(b)))


def f64x2_max(a: int, b: int) -> int:
    return join_f64(*map(n.f64_max, f64(a), f64(b)))


def f64x2_ceil(a: int) -> int:
    return join_f64(*map(n.f64_ceil, f64(a)))


def f64x2_floor(a: int) -> int:
    return join_f64(*map(n.f64_floor, f64(a)))


def f64x2_trunc(a: int) -> int:
    return join_f64(*map(n.f64_trunc, f64(a)))


def f64x2_nearest(a: int) -> int:
    return join_f64(*map(n.f64_nearest, f64(a)))


# --- pmin / pmax: "pseudo" min and max, ``b < a ? b : a`` and ``a < b ? b : a`` -------------------
# They return one operand's lane as it is (a NaN operand included), so lanes are selected by bits.

def f32x4_pmin(a: int, b: int) -> int:
    return join_u32(*[y if fy < fx else x
                      for x, y, fx, fy in zip(u32(a), u32(b), f32(a), f32(b))])


def f32x4_pmax(a: int, b: int) -> int:
    return join_u32(*[y if fx < fy else x
                      for x, y, fx, fy in zip(u32(a), u32(b), f32(a), f32(b))])


def f64x2_pmin(a: int, b: int) -> int:
    return join_u64(*[y if fy < fx else x
                      for x, y, fx, fy in zip(u64(a), u64(b), f64(a), f64(b))])


def f64x2_pmax(a: int, b: int) -> int:
    return join_u64(*[y if fx < fy else x
                      for x, y, fx, fy in zip(u64(a), u64(b), f64(a), f64(b))])


# --- comparisons: IEEE relations per lane (NaN unordered), as all-ones / all-zeros lanes ----------

def _compare(lanes: Callable[[int], tuple], join: Callable[..., int], ones: int,
             pred: Callable[[float, float], bool], name: str) -> V128Op:
    def f(a: int, b: int) -> int:
        return join(*map(pred, lanes(a), lanes(b))) * ones
    return _named(f, name)


f32x4_eq = _compare(f32, join_u32, M32, eq, "f32x4_eq")
f32x4_ne = _compare(f32, join_u32, M32, ne, "f32x4_ne")
f32x4_lt = _compare(f32, join_u32, M32, lt, "f32x4_lt")
f32x4_gt = _compare(f32, join_u32, M32, gt, "f32x4_gt")
f32x4_le = _compare(f32, join_u32, M32, le, "f32x4_le")
f32x4_ge = _compare(f32, join_u32, M32, ge, "f32x4_ge")
f64x2_eq = _compare(f64, join_u64, (1 << 64) - 1, eq, "f64x2_eq")
f64x2_ne = _compare(f64, join_u64, (1 << 64) - 1, ne, "f64x2_ne")
f64x2_lt = _compare(f64, join_u64, (1 << 64) - 1, lt, "f64x2_lt")
f64x2_gt = _compare(f64, join_u64, (1 << 64) - 1, gt, "f64x2_gt")
f64x2_le = _compare(f64, join_u64, (1 << 64) - 1, le, "f64x2_le")
f64x2_ge = _compare(f64, join_u64, (1 << 64) - 1, ge, "f64x2_ge")


# --- conversions ----------------------------------------------------------------------------------

_LOW_F32 = struct.Struct("<2f")


def i32x4_trunc_sat_f32x4_s(a: int) -> int:
    return join_u32(*map(n.i32_trunc_sat_f32_s, f32(a)))


def i32x4_trunc_sat_f32x4_u(a: int) -> int:
    return join_u32(*map(n.i32_trunc_sat_f32_u, f32(a)))


def i32x4_trunc_sat_f64x2_s_zero(a: int) -> int:
    x, y = f64(a)
    return n.i32_trunc_sat_f64_s(x) | n.i32_trunc_sat_f64_s(y) << 32


def i32x4_trunc_sat_f64x2_u_zero(a: int) -> int:
    x, y = f64(a)
    return n.i32_trunc_sat_f64_u(x) | n.i32_trunc_sat_f64_u(y) << 32


def f32x4_convert_i32x4_s(a: int) -> int:
    # An i32 is exact as a double, so packing rounds once, as a direct conversion would.
    return join_f32(*map(float, s32(a)))


def f32x4_convert_i32x4_u(a: int) -> int:
    return join_f32(*map(float, u32(a)))


def f64x2_convert_low_i32x4_s(a: int) -> int:
    x, y, _, _ = s32(a)
    return join_f64(float(x), float(y))


def f64x2_convert_low_i32x4_u(a: int) -> int:
    return join_f64(float(a & M32), float((a >> 32) & M32))


def f32x4_demote_f64x2_zero(a: int) -> int:
    """Both lanes rounded to f32 (NaNs quieted, payload's top bits kept); the high lanes are 0."""
    return join_f32(*f64(a), 0.0, 0.0)


def f64x2_promote_low_f32x4(a: int) -> int:
    """The low two f32 lanes, exactly; a NaN comes out quieted (``* 1.0``), as for the scalar."""
    x, y = _LOW_F32.unpack_from(a.to_bytes(16, "little"))
    return join_f64(x * 1.0, y * 1.0)
