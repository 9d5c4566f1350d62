"""The numeric instructions of WebAssembly 2.0 without SIMD (spec 4.3 "Numerics").

One plain function per instruction, named after it with ``.`` replaced by ``_`` (``i32_add``,
``f32_nearest``, ``i64_trunc_sat_f64_u``). Unary instructions take one argument, binary ones two;
each returns the result value or raises :class:`~vm.errors.TrapError` with the spec's message.
:data:`OPS` maps every numeric opcode to its function and :data:`ARITY` to its operand count, so
the translator can dispatch on the opcode.

Values follow docs/vm.md:

* ``i32``/``i64`` are ints holding the unsigned bit pattern, so every result is masked; signed
  instructions reinterpret on the way with ``(a ^ 0x80000000) - 0x80000000``.
* ``f64`` is a float; Python's float operations are IEEE-754 binary64 operations, and neg, abs
  and copysign act on the sign bit alone, so NaN payloads survive where the spec demands it.
* ``f32`` is a float holding the exact binary32 value. An f32 NaN with sign ``s`` and payload
  ``m`` is the double with sign ``s``, exponent all ones and mantissa ``m << 29``: the f32 quiet
  bit lands on the f64 quiet bit, so signalling NaNs stay signalling, and a NaN that double
  arithmetic makes from such inputs is again in this form.

f32 arithmetic (add, sub, mul, div, sqrt) is computed in double and rounded once to f32 by
the round trip of :func:`f32_round`. That is exact: binary64 has more than ``2 * 24 + 2`` significand bits, so the
double rounding cannot differ from a direct binary32 operation. It does *not* hold for int64 to f32
conversion, which therefore rounds straight from the integer (:func:`f32_convert_i64_u`).

Rounding to f32 -- timings on CPython 3.11, x86-64, otherwise idle machine, ``f(1.1)`` per call,
best of 5:

=====================================================================  ==========
``struct.Struct('f')`` unpack(pack(x)) in try/except OverflowError      98 ns
``struct.Struct('<f')`` the same (standard size; raises on overflow)    107 ns
``array('f')`` one shared element, store then load                      70 ns
``memoryview(bytearray(4)).cast('f')`` store then load                  59 ns
``ctypes.c_float(x).value``                                             113 ns
=====================================================================  ==========

The array and memoryview variants share one mutable buffer between all callers, so two threads
running wasm at once could read each other's value -- a silent wrong result that would break
deterministic replay. The native-format struct is the fastest variant without shared state; on
3.11 its pack converts with a C cast (rounding to nearest even, overflowing to infinity) and never
raises, and the OverflowError fallback keeps it correct on Pythons whose native pack checks range.
The f32 arithmetic functions inline this round trip instead of calling :func:`f32_round`, which
saves a Python call (76 ns instead of 98 ns).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from math import ceil, copysign, fabs, floor, inf, sqrt
from types import FunctionType

from ..binary.opcodes import FC, NAMES
from ..errors import TrapError

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF

_F32 = struct.Struct("f")
_pack_f = _F32.pack
_unpack_f = _F32.unpack
_I32 = struct.Struct("<I")
_pack_i = _I32.pack
_unpack_i = _I32.unpack
_pack_d = struct.Struct("<d").pack
_unpack_d = struct.Struct("<d").unpack
_from_bytes = int.from_bytes

# Canonical NaN (quiet bit only, positive); it is canonical for f32 and f64 alike.
_NAN = _unpack_d(b"\x00\x00\x00\x00\x00\x00\xf8\x7f")[0]
# 2**52: every double at or above it in magnitude is an integer.
_TWO52 = 4503599627370496.0

assert _F32.size == 4 and _I32.size == 4


# --------------------------------------------------------------------------------------------
# Bit patterns and f32 rounding
# --------------------------------------------------------------------------------------------


def f64_from_bits(bits: int) -> float:
    """The f64 with IEEE-754 bit pattern ``bits`` (payloads, including sNaN, preserved)."""
    return _unpack_d(bits.to_bytes(8, "little"))[0]


def f64_to_bits(x: float) -> int:
    """The IEEE-754 bit pattern of the f64 ``x``."""
    return _from_bytes(_pack_d(x), "little")


def f32_from_bits(bits: int) -> float:
    """The f32 value with bit pattern ``bits``, as a float.

    A NaN is rebuilt by hand: converting a float to double in C quiets a signalling NaN. Testing
    the converted value for NaN is cheaper than testing the bits first.
    """
    x = _unpack_f(_pack_i(bits))[0]
    if x != x:
        return _unpack_d(
            (((bits & 0x80000000) << 32) | 0x7FF0000000000000 | ((bits & 0x7FFFFF) << 29)).to_bytes(
                8, "little"
            )
        )[0]
    return x


def f32_to_bits(x: float) -> int:
    """The binary32 bit pattern of the f32 value ``x`` (which must be an exact f32 value).

    NaNs are taken apart by hand: converting a double to float in C quiets a signalling NaN. A
    double NaN whose payload lies only in the low 29 bits (not an f32 under the convention) maps
    to the quiet NaN rather than to infinity.
    """
    if x != x:
        d = _from_bytes(_pack_d(x), "little")
        return ((d >> 32) & 0x80000000) | 0x7F800000 | (((d >> 29) & 0x7FFFFF) or 0x400000)
    return _unpack_i(_pack_f(x))[0]


def f32_round(x: float) -> float:
    """Round a double to the nearest f32 value: ties to even, overflow to infinity.

    A NaN comes back quieted with the top 23 bits of its payload, which is an arithmetic NaN in
    the f32 convention (canonical if it was canonical).
    """
    try:
        return _unpack_f(_pack_f(x))[0]
    except OverflowError:
        return copysign(inf, x)


def _alias(func: FunctionType, name: str) -> FunctionType:
    """A copy of ``func`` under another instruction's name.

    f32 values are doubles holding exact f32 values, so the instructions that never create a new
    value (comparisons, sign operations, rounding to integer, min/max) are the f64 code verbatim.
    The copy keeps tracebacks and ``__name__`` truthful.
    """
    code = func.__code__.replace(co_name=name, co_qualname=name)
    new = FunctionType(code, func.__globals__, name, func.__defaults__, func.__closure__)
    new.__doc__ = func.__doc__
    new.__annotations__ = dict(func.__annotations__)
    return new


def _trap_divide() -> TrapError:
    return TrapError("integer divide by zero")


def _trap_overflow() -> TrapError:
    return TrapError("integer overflow")


def _trap_trunc(x: float) -> TrapError:
    """The trap of a trapping float-to-int conversion whose operand ``x`` is out of range."""
    if x != x:
        return TrapError("invalid conversion to integer")
    return TrapError("integer overflow")


# --------------------------------------------------------------------------------------------
# i32
# --------------------------------------------------------------------------------------------


def i32_eqz(a: int) -> int:
    return 1 if a == 0 else 0


def i32_eq(a: int, b: int) -> int:
    return 1 if a == b else 0


def i32_ne(a: int, b: int) -> int:
    return 1 if a != b else 0


# Flipping the sign bit maps signed order onto unsigned order.
def i32_lt_s(a: int, b: int) -> int:
    return 1 if (a ^ 0x80000000) < (b ^ 0x80000000) else 0


def i32_lt_u(a: int, b: int) -> int:
    return 1 if a < b else 0


def i32_gt_s(a: int, b: int) -> int:
    return 1 if (a ^ 0x80000000) > (b ^ 0x80000000) else 0


def i32_gt_u(a: int, b: int) -> int:
    return 1 if a > b else 0


def i32_le_s(a: int, b: int) -> int:
    return 1 if (a ^ 0x80000000) <= (b ^ 0x80000000) else 0


def i32_le_u(a: int, b: int) -> int:
    return 1 if a <= b else 0


def i32_ge_s(a: int, b: int) -> int:
    return 1 if (a ^ 0x80000000) >= (b ^ 0x80000000) else 0


def i32_ge_u(a: int, b: int) -> int:
    return 1 if a >= b else 0


def i32_clz(a: int) -> int:
    return 32 - a.bit_length()


def i32_ctz(a: int) -> int:
    return (a & -a).bit_length() - 1 if a else 32


def i32_popcnt(a: int) -> int:
    return a.bit_count()


def i32_add(a: int, b: int) -> int:
    return (a + b) & M32


def i32_sub(a: int, b: int) -> int:
    return (a - b) & M32


def i32_mul(a: int, b: int) -> int:
    return (a * b) & M32


def i32_div_s(a: int, b: int) -> int:
    """Signed division truncating toward zero (Python's ``//`` floors, so work on magnitudes)."""
    if b == 0:
        raise _trap_divide()
    if a == 0x80000000 and b == M32:
        raise _trap_overflow()
    a = (a ^ 0x80000000) - 0x80000000
    b = (b ^ 0x80000000) - 0x80000000
    q = abs(a) // abs(b)
    return (-q if (a ^ b) < 0 else q) & M32


def i32_div_u(a: int, b: int) -> int:
    if b == 0:
        raise _trap_divide()
    return a // b


def i32_rem_s(a: int, b: int) -> int:
    """Signed remainder; its sign is the dividend's, and INT_MIN rem -1 is 0 (no trap)."""
    if b == 0:
        raise _trap_divide()
    a = (a ^ 0x80000000) - 0x80000000
    b = (b ^ 0x80000000) - 0x80000000
    r = abs(a) % abs(b)
    return (-r if a < 0 else r) & M32


def i32_rem_u(a: int, b: int) -> int:
    if b == 0:
        raise _trap_divide()
    return a % b


def i32_and(a: int, b: int) -> int:
    return a & b


def i32_or(a: int, b: int) -> int:
    return a | b


def i32_xor(a: int, b: int) -> int:
    return a ^ b


def i32_shl(a: int, b: int) -> int:
    return (a << (b & 31)) & M32


def i32_shr_s(a: int, b: int) -> int:
    return (((a ^ 0x80000000) - 0x80000000) >> (b & 31)) & M32


def i32_shr_u(a: int, b: int) -> int:
    return a >> (b & 31)


def i32_rotl(a: int, b: int) -> int:
    b &= 31
    return ((a << b) | (a >> (32 - b))) & M32


def i32_rotr(a: int, b: int) -> int:
    b &= 31
    return ((a >> b) | (a << (32 - b))) & M32


# --------------------------------------------------------------------------------------------
# i64
# --------------------------------------------------------------------------------------------


def i64_eqz(a: int) -> int:
    return 1 if a == 0 else 0


def i64_eq(a: int, b: int) -> int:
    return 1 if a == b else 0


def i64_ne(a: int, b: int) -> int:
    return 1 if a != b else 0


def i64_lt_s(a: int, b: int) -> int:
    return 1 if (a ^ 0x8000000000000000) < (b ^ 0x8000000000000000) else 0


def i64_lt_u(a: int, b: int) -> int:
    return 1 if a < b else 0


def i64_gt_s(a: int, b: int) -> int:
    return 1 if (a ^ 0x8000000000000000) > (b ^ 0x8000000000000000) else 0


def i64_gt_u(a: int, b: int) -> int:
    return 1 if a > b else 0


def i64_le_s(a: int, b: int) -> int:
    return 1 if (a ^ 0x8000000000000000) <= (b ^ 0x8000000000000000) else 0


def i64_le_u(a: int, b: int) -> int:
    return 1 if a <= b else 0


def i64_ge_s(a: int, b: int) -> int:
    return 1 if (a ^ 0x8000000000000000) >= (b ^ 0x8000000000000000) else 0


def i64_ge_u(a: int, b: int) -> int:
    return 1 if a >= b else 0


def i64_clz(a: int) -> int:
    return 64 - a.bit_length()


def i64_ctz(a: int) -> int:
    return (a & -a).bit_length() - 1 if a else 64


def i64_popcnt(a: int) -> int:
    return a.bit_count()


def i64_add(a: int, b: int) -> int:
    return (a + b) & M64


def i64_sub(a: int, b: int) -> int:
    return (a - b) & M64


def i64_mul(a: int, b: int) -> int:
    return (a * b) & M64


def i64_div_s(a: int, b: int) -> int:
    """Signed division truncating toward zero (Python's ``//`` floors, so work on magnitudes)."""
    if b == 0:
        raise _trap_divide()
    if a == 0x8000000000000000 and b == M64:
        raise _trap_overflow()
    a = (a ^ 0x8000000000000000) - 0x8000000000000000
    b = (b ^ 0x8000000000000000) - 0x8000000000000000
    q = abs(a) // abs(b)
    return (-q if (a ^ b) < 0 else q) & M64


def i64_div_u(a: int, b: int) -> int:
    if b == 0:
        raise _trap_divide()
    return a // b


def i64_rem_s(a: int, b: int) -> int:
    """Signed remainder; its sign is the dividend's, and INT_MIN rem -1 is 0 (no trap)."""
    if b == 0:
        raise _trap_divide()
    a = (a ^ 0x8000000000000000) - 0x8000000000000000
    b = (b ^ 0x8000000000000000) - 0x8000000000000000
    r = abs(a) % abs(b)
    return (-r if a < 0 else r) & M64


def i64_rem_u(a: int, b: int) -> int:
    if b == 0:
        raise _trap_divide()
    return a % b


def i64_and(a: int, b: int) -> int:
    return a & b


def i64_or(a: int, b: int) -> int:
    return a | b


def i64_xor(a: int, b: int) -> int:
    return a ^ b


def i64_shl(a: int, b: int) -> int:
    return (a << (b & 63)) & M64


def i64_shr_s(a: int, b: int) -> int:
    return (((a ^ 0x8000000000000000) - 0x8000000000000000) >> (b & 63)) & M64


def i64_shr_u(a: int, b: int) -> int:
    return a >> (b & 63)


def i64_rotl(a: int, b: int) -> int:
    b &= 63
    return ((a << b) | (a >> (64 - b))) & M64


def i64_rotr(a: int, b: int) -> int:
    b &= 63
    return ((a >> b) | (a << (64 - b))) & M64


# --------------------------------------------------------------------------------------------
# f64 (and the f32 instructions that are the same code)
# --------------------------------------------------------------------------------------------

# Python compares floats with IEEE semantics: NaN is unordered, -0.0 == 0.0.


def f64_eq(a: float, b: float) -> int:
    return 1 if a == b else 0


def f64_ne(a: float, b: float) -> int:
    return 1 if a != b else 0


def f64_lt(a: float, b: float) -> int:
    return 1 if a < b else 0


def f64_gt(a: float, b: float) -> int:
    return 1 if a > b else 0


def f64_le(a: float, b: float) -> int:
    return 1 if a <= b else 0


def f64_ge(a: float, b: float) -> int:
    return 1 if a >= b else 0


def f64_abs(x: float) -> float:
    """Clear the sign bit; a NaN keeps its payload (``fabs`` is a bit operation)."""
    return fabs(x)


def f64_neg(x: float) -> float:
    """Flip the sign bit; a NaN keeps its payload."""
    return -x


def f64_copysign(a: float, b: float) -> float:
    return copysign(a, b)


# The rounding functions below handle |x| < 2**52 arithmetically and give the sign of x back
# (ceil(-0.5) is -0.0). Larger values, infinities and NaNs fail the range test: they are their
# own result, and ``x + 0.0`` returns them unchanged except that a NaN is quieted, as the spec's
# arithmetic-NaN rule wants. x is never zero there, so the sign of zero is not at stake.


def f64_ceil(x: float) -> float:
    if -_TWO52 < x < _TWO52:
        return copysign(float(ceil(x)), x)
    return x + 0.0


def f64_floor(x: float) -> float:
    if -_TWO52 < x < _TWO52:
        return copysign(float(floor(x)), x)
    return x + 0.0


def f64_trunc(x: float) -> float:
    if -_TWO52 < x < _TWO52:
        return copysign(float(int(x)), x)
    return x + 0.0


def f64_nearest(x: float) -> float:
    """Round to the nearest integer, ties to even.

    Adding 2**52 to |x| < 2**52 leaves no fraction bits, so the hardware rounds the sum to an
    integer with ties-to-even; subtracting 2**52 again is exact (55 ns against 88 ns for
    ``float(round(x))``).
    """
    if -_TWO52 < x < _TWO52:
        return copysign((fabs(x) + _TWO52) - _TWO52, x)
    return x + 0.0


def f64_sqrt(x: float) -> float:
    """IEEE square root; a negative operand gives the canonical NaN (math.sqrt raises)."""
    try:
        return sqrt(x)
    except ValueError:
        return _NAN


def f64_add(a: float, b: float) -> float:
    return a + b


def f64_sub(a: float, b: float) -> float:
    return a - b


def f64_mul(a: float, b: float) -> float:
    return a * b


def f64_div(a: float, b: float) -> float:
    """IEEE division; Python raises on a zero divisor, so that case is spelled out."""
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0.0:
            return _NAN
        if a != a:
            return a + b
        return copysign(inf, a) * copysign(1.0, b)


def f64_min(a: float, b: float) -> float:
    """Minimum; NaN if either operand is NaN, and min(-0.0, +0.0) is -0.0."""
    if a < b:
        return a
    if b < a:
        return b
    if a == b:
        # Equal zeros of either sign: -(-a - b) is +0.0 only if both are +0.0.
        return a if a else -(-a - b)
    return a + b


def f64_max(a: float, b: float) -> float:
    """Maximum; NaN if either operand is NaN, and max(-0.0, +0.0) is +0.0."""
    if a > b:
        return a
    if b > a:
        return b
    if a == b:
        # Equal zeros of either sign: a + b is -0.0 only if both are -0.0.
        return a if a else a + b
    return a + b


f32_eq = _alias(f64_eq, "f32_eq")
f32_ne = _alias(f64_ne, "f32_ne")
f32_lt = _alias(f64_lt, "f32_lt")
f32_gt = _alias(f64_gt, "f32_gt")
f32_le = _alias(f64_le, "f32_le")
f32_ge = _alias(f64_ge, "f32_ge")
f32_abs = _alias(f64_abs, "f32_abs")
f32_neg = _alias(f64_neg, "f32_neg")
f32_copysign = _alias(f64_copysign, "f32_copysign")
f32_ceil = _alias(f64_ceil, "f32_ceil")
f32_floor = _alias(f64_floor, "f32_floor")
f32_trunc = _alias(f64_trunc, "f32_trunc")
f32_nearest = _alias(f64_nearest, "f32_nearest")
f32_min = _alias(f64_min, "f32_min")
f32_max = _alias(f64_max, "f32_max")


# --------------------------------------------------------------------------------------------
# f32 arithmetic: computed in double, rounded once (see the module docstring)
# --------------------------------------------------------------------------------------------


def f32_sqrt(x: float) -> float:
    try:
        r = sqrt(x)
    except ValueError:
        return _NAN
    return _unpack_f(_pack_f(r))[0]


def f32_add(a: float, b: float) -> float:
    try:
        return _unpack_f(_pack_f(a + b))[0]
    except OverflowError:
        return copysign(inf, a + b)


def f32_sub(a: float, b: float) -> float:
    try:
        return _unpack_f(_pack_f(a - b))[0]
    except OverflowError:
        return copysign(inf, a - b)


def f32_mul(a: float, b: float) -> float:
    try:
        return _unpack_f(_pack_f(a * b))[0]
    except OverflowError:
        return copysign(inf, a * b)


def f32_div(a: float, b: float) -> float:
    try:
        return _unpack_f(_pack_f(a / b))[0]
    except ZeroDivisionError:
        return f64_div(a, b)  # NaN or an infinity: already an f32 value
    except OverflowError:
        return copysign(inf, a / b)


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


def i32_wrap_i64(a: int) -> int:
    return a & M32


# Trapping truncations: the open interval is exactly the set of operands whose truncation fits,
# and its bounds are exact doubles. NaN fails every comparison and ends up at the trap as well.


def i32_trunc_f32_s(x: float) -> int:
    if -2147483649.0 < x < 2147483648.0:
        return int(x) & M32
    raise _trap_trunc(x)


def i32_trunc_f32_u(x: float) -> int:
    if -1.0 < x < 4294967296.0:
        return int(x)
    raise _trap_trunc(x)


def i32_trunc_f64_s(x: float) -> int:
    if -2147483649.0 < x < 2147483648.0:
        return int(x) & M32
    raise _trap_trunc(x)


def i32_trunc_f64_u(x: float) -> int:
    if -1.0 < x < 4294967296.0:
        return int(x)
    raise _trap_trunc(x)


# -2**63 - 1 is not a double, but no double lies strictly between it and -2**63, so the lower
# bound is the closed one at -2**63.


def i64_trunc_f32_s(x: float) -> int:
    if -9223372036854775808.0 <= x < 9223372036854775808.0:
        return int(x) & M64
    raise _trap_trunc(x)


def i64_trunc_f32_u(x: float) -> int:
    if -1.0 < x < 18446744073709551616.0:
        return int(x)
    raise _trap_trunc(x)


def i64_trunc_f64_s(x: float) -> int:
    if -9223372036854775808.0 <= x < 9223372036854775808.0:
        return int(x) & M64
    raise _trap_trunc(x)


def i64_trunc_f64_u(x: float) -> int:
    if -1.0 < x < 18446744073709551616.0:
        return int(x)
    raise _trap_trunc(x)


def i64_extend_i32_s(a: int) -> int:
    return ((a ^ 0x80000000) - 0x80000000) & M64


def i64_extend_i32_u(a: int) -> int:
    return a


def f32_convert_i32_s(a: int) -> float:
    # An i32 is exact as a double, so this is a single rounding.
    return _unpack_f(_pack_f(float((a ^ 0x80000000) - 0x80000000)))[0]


def f32_convert_i32_u(a: int) -> float:
    return _unpack_f(_pack_f(float(a)))[0]


def f32_convert_i64_u(a: int) -> float:
    """Round an unsigned integer straight to f32, ties to even.

    Going through a double would round twice and can be off by one ulp (2**60 + 2**36 + 1 rounds
    to a double tie that then goes down instead of up).
    """
    if a < 0x20000000000000:  # below 2**53 the double is exact: a single rounding
        return _unpack_f(_pack_f(float(a)))[0]
    shift = a.bit_length() - 24
    q = a >> shift
    rest = a - (q << shift)
    half = 1 << (shift - 1)
    if rest > half or (rest == half and q & 1):
        q += 1
    return float(q << shift)  # at most 24 significant bits and below 2**65: exact


def f32_convert_i64_s(a: int) -> float:
    if a & 0x8000000000000000:
        return -f32_convert_i64_u(0x10000000000000000 - a)
    return f32_convert_i64_u(a)


def f32_demote_f64(x: float) -> float:
    """Round to f32; a NaN keeps the top 23 payload bits and is quieted (arithmetic NaN)."""
    try:
        return _unpack_f(_pack_f(x))[0]
    except OverflowError:
        return copysign(inf, x)


def f64_convert_i32_s(a: int) -> float:
    return float((a ^ 0x80000000) - 0x80000000)


def f64_convert_i32_u(a: int) -> float:
    return float(a)


def f64_convert_i64_s(a: int) -> float:
    # int -> float conversion in CPython is correctly rounded (ties to even).
    return float((a ^ 0x8000000000000000) - 0x8000000000000000)


def f64_convert_i64_u(a: int) -> float:
    return float(a)


def f64_promote_f32(x: float) -> float:
    """Every f32 is already its f64; ``* 1.0`` only quiets a NaN and keeps -0.0 (``+ 0.0`` wouldn't)."""
    return x * 1.0


def i32_reinterpret_f32(x: float) -> int:
    return f32_to_bits(x)


def i64_reinterpret_f64(x: float) -> int:
    return _from_bytes(_pack_d(x), "little")


def f32_reinterpret_i32(a: int) -> float:
    return f32_from_bits(a)


def f64_reinterpret_i64(a: int) -> float:
    return _unpack_d(a.to_bytes(8, "little"))[0]


def i32_extend8_s(a: int) -> int:
    return (((a & 0xFF) ^ 0x80) - 0x80) & M32


def i32_extend16_s(a: int) -> int:
    return (((a & 0xFFFF) ^ 0x8000) - 0x8000) & M32


def i64_extend8_s(a: int) -> int:
    return (((a & 0xFF) ^ 0x80) - 0x80) & M64


def i64_extend16_s(a: int) -> int:
    return (((a & 0xFFFF) ^ 0x8000) - 0x8000) & M64


def i64_extend32_s(a: int) -> int:
    return (((a & M32) ^ 0x80000000) - 0x80000000) & M64


# Saturating truncations (0xFC 0..7): NaN gives 0, out-of-range operands clamp.


def i32_trunc_sat_f32_s(x: float) -> int:
    if -2147483649.0 < x < 2147483648.0:
        return int(x) & M32
    if x != x:
        return 0
    return 0x7FFFFFFF if x > 0.0 else 0x80000000


def i32_trunc_sat_f32_u(x: float) -> int:
    if -1.0 < x < 4294967296.0:
        return int(x)
    return M32 if x > 0.0 else 0


def i32_trunc_sat_f64_s(x: float) -> int:
    if -2147483649.0 < x < 2147483648.0:
        return int(x) & M32
    if x != x:
        return 0
    return 0x7FFFFFFF if x > 0.0 else 0x80000000


def i32_trunc_sat_f64_u(x: float) -> int:
    if -1.0 < x < 4294967296.0:
        return int(x)
    return M32 if x > 0.0 else 0


def i64_trunc_sat_f32_s(x: float) -> int:
    if -9223372036854775808.0 <= x < 9223372036854775808.0:
        return int(x) & M64
    if x != x:
        return 0
    return 0x7FFFFFFFFFFFFFFF if x > 0.0 else 0x8000000000000000


def i64_trunc_sat_f32_u(x: float) -> int:
    if -1.0 < x < 18446744073709551616.0:
        return int(x)
    return M64 if x > 0.0 else 0


def i64_trunc_sat_f64_s(x: float) -> int:
    if -9223372036854775808.0 <= x < 9223372036854775808.0:
        return int(x) & M64
    if x != x:
        return 0
    return 0x7FFFFFFFFFFFFFFF if x > 0.0 else 0x8000000000000000


def i64_trunc_sat_f64_u(x: float) -> int:
    if -1.0 < x < 18446744073709551616.0:
        return int(x)
    return M64 if x > 0.0 else 0


# --------------------------------------------------------------------------------------------
# Dispatch tables
# --------------------------------------------------------------------------------------------


def _is_numeric(op: int) -> bool:
    return 0x45 <= op <= 0xC4 or FC <= op <= FC + 7


OPS: dict[int, Callable[..., int | float]] = {
    op: globals()[name.replace(".", "_")] for op, name in sorted(NAMES.items()) if _is_numeric(op)
}
"""Opcode (``0xFC n`` as ``FC + n``) -> the function implementing it."""

ARITY: dict[int, int] = {op: func.__code__.co_argcount for op, func in OPS.items()}
"""Opcode -> number of operands it pops (1 or 2); it always pushes one result."""
