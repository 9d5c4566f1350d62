"""Lane access for v128 values, and the SIMD instructions that only move bits.

A v128 is an ``int`` with ``0 <= v < 2**128`` whose little-endian bytes are the vector's bytes in
memory order, so lane ``i`` of width ``w`` is ``(v >> (i * w)) & (2**w - 1)`` (see
:mod:`vm.execution.simd` for why). This module holds what the other SIMD modules share:

* masks that repeat one lane value across the vector (``REP8`` ... ``HIGH64``), used by the
  instructions that work on all lanes at once with plain integer arithmetic;
* ``struct`` views that split a v128 into lanes and join lanes back (``u8``/``s8`` ...
  ``f64``, ``join_u8`` ...), for the instructions that need lane values;
* the instructions that are pure bit movement: bitwise operations, splat, lane extract and
  replace, shuffle and swizzle.

Joining lanes with ``struct`` requires in-range lane values; every caller masks or clamps first,
because a ``struct.error`` escaping translated code would be reported as a memory trap.
"""

from __future__ import annotations

import struct

from .numerics import f32_from_bits, f32_round, f32_to_bits, f64_from_bits, f64_to_bits

M128 = (1 << 128) - 1
M64 = (1 << 64) - 1
M32 = 0xFFFFFFFF


def repeat_lane(value: int, width: int) -> int:
    """The v128 whose every ``width``-bit lane holds ``value`` (which must fit the lane)."""
    out = 0
    for i in range(0, 128, width):
        out |= value << i
    return out


REP8 = repeat_lane(1, 8)
REP16 = repeat_lane(1, 16)
REP32 = repeat_lane(1, 32)
REP64 = repeat_lane(1, 64)
# The top bit of every lane, and every bit but the top one.
HIGH8, HIGH16, HIGH32, HIGH64 = (repeat_lane(1 << (w - 1), w) for w in (8, 16, 32, 64))
LOW8, LOW16, LOW32, LOW64 = (M128 ^ h for h in (HIGH8, HIGH16, HIGH32, HIGH64))

_U8 = struct.Struct("<16B")
_S8 = struct.Struct("<16b")
_U16 = struct.Struct("<8H")
_S16 = struct.Struct("<8h")
_U32 = struct.Struct("<4I")
_S32 = struct.Struct("<4i")
_U64 = struct.Struct("<2Q")
_S64 = struct.Struct("<2q")
_F32 = struct.Struct("<4f")
_F64 = struct.Struct("<2d")

_from_bytes = int.from_bytes


def to_bytes(v: int) -> bytes:
    """The 16 bytes of a v128, in memory order."""
    return v.to_bytes(16, "little")


def from_bytes(data: bytes) -> int:
    """The v128 made of 16 bytes in memory order."""
    return _from_bytes(data, "little")


# --- splitting into lanes: a tuple of the lane values, lane 0 first ----------------------------

def u8(v: int) -> tuple[int, ...]:
    return _U8.unpack(v.to_bytes(16, "little"))


def s8(v: int) -> tuple[int, ...]:
    return _S8.unpack(v.to_bytes(16, "little"))


def u16(v: int) -> tuple[int, ...]:
    return _U16.unpack(v.to_bytes(16, "little"))


def s16(v: int) -> tuple[int, ...]:
    return _S16.unpack(v.to_bytes(16, "little"))


def u32(v: int) -> tuple[int, ...]:
    return _U32.unpack(v.to_bytes(16, "little"))


def s32(v: int) -> tuple[int, ...]:
    return _S32.unpack(v.to_bytes(16, "little"))


def u64(v: int) -> tuple[int, ...]:
    return _U64.unpack(v.to_bytes(16, "little"))


def s64(v: int) -> tuple[int, ...]:
    return _S64.unpack(v.to_bytes(16, "little"))


def f32(v: int) -> tuple[float, ...]:
    """The four f32 lanes as doubles. A signalling NaN comes back quieted (the C conversion to
    double does that), so use this only where the result may be an arithmetic NaN."""
    return _F32.unpack(v.to_bytes(16, "little"))


def f64(v: int) -> tuple[float, ...]:
    """The two f64 lanes, bit-exact (NaN payloads included)."""
    return _F64.unpack(v.to_bytes(16, "little"))


# --- joining lanes back -------------------------------------------------------------------------
# Each takes the lane values in order; they must be in range for the lane type (see the module
# docstring). The signed and unsigned joins give the same bits for values both accept.

def join_u8(*lanes: int) -> int:
    return _from_bytes(_U8.pack(*lanes), "little")


def join_s8(*lanes: int) -> int:
    return _from_bytes(_S8.pack(*lanes), "little")


def join_u16(*lanes: int) -> int:
    return _from_bytes(_U16.pack(*lanes), "little")


def join_s16(*lanes: int) -> int:
    return _from_bytes(_S16.pack(*lanes), "little")


def join_u32(*lanes: int) -> int:
    return _from_bytes(_U32.pack(*lanes), "little")


def join_s32(*lanes: int) -> int:
    return _from_bytes(_S32.pack(*lanes), "little")


def join_u64(*lanes: int) -> int:
    return _from_bytes(_U64.pack(*lanes), "little")


def join_s64(*lanes: int) -> int:
    return _from_bytes(_S64.pack(*lanes), "little")


def join_f64(*lanes: float) -> int:
    """Two doubles, bit-exact."""
    return _from_bytes(_F64.pack(*lanes), "little")


def join_f32(*lanes: float) -> int:
    """Four doubles rounded to f32 (ties to even, overflow to infinity).

    The standard-size ``struct`` format rounds with a C cast but raises ``OverflowError`` when a
    finite double rounds to infinity; that rare case is redone lane by lane.
    """
    try:
        return _from_bytes(_F32.pack(*lanes), "little")
    except OverflowError:
        return _from_bytes(_F32.pack(*map(f32_round, lanes)), "little")


# --- bitwise ------------------------------------------------------------------------------------

def v128_not(a: int) -> int:
    return a ^ M128


def v128_and(a: int, b: int) -> int:
    return a & b


def v128_andnot(a: int, b: int) -> int:
    return a & (b ^ M128)


def v128_or(a: int, b: int) -> int:
    return a | b


def v128_xor(a: int, b: int) -> int:
    return a ^ b


def v128_bitselect(a: int, b: int, c: int) -> int:
    """Bits of ``a`` where ``c`` is 1, bits of ``b`` where it is 0."""
    return (a & c) | (b & (c ^ M128))


def v128_any_true(a: int) -> int:
    return 1 if a else 0


# --- splat --------------------------------------------------------------------------------------
# Multiplying by a lane-repeat constant copies a lane-sized value into every lane without carries.

def i8x16_splat(x: int) -> int:
    return (x & 0xFF) * REP8


def i16x8_splat(x: int) -> int:
    return (x & 0xFFFF) * REP16


def i32x4_splat(x: int) -> int:
    return x * REP32


def i64x2_splat(x: int) -> int:
    return x * REP64


def f32x4_splat(x: float) -> int:
    return f32_to_bits(x) * REP32


def f64x2_splat(x: float) -> int:
    return f64_to_bits(x) * REP64


# --- lanes: extract and replace (``lane`` is the immediate lane index) --------------------------

def i8x16_extract_lane_s(a: int, lane: int) -> int:
    return ((((a >> (lane << 3)) & 0xFF) ^ 0x80) - 0x80) & M32


def i8x16_extract_lane_u(a: int, lane: int) -> int:
    return (a >> (lane << 3)) & 0xFF


def i16x8_extract_lane_s(a: int, lane: int) -> int:
    return ((((a >> (lane << 4)) & 0xFFFF) ^ 0x8000) - 0x8000) & M32


def i16x8_extract_lane_u(a: int, lane: int) -> int:
    return (a >> (lane << 4)) & 0xFFFF


def i32x4_extract_lane(a: int, lane: int) -> int:
    return (a >> (lane << 5)) & M32


def i64x2_extract_lane(a: int, lane: int) -> int:
    return (a >> (lane << 6)) & M64


def f32x4_extract_lane(a: int, lane: int) -> float:
    return f32_from_bits((a >> (lane << 5)) & M32)


def f64x2_extract_lane(a: int, lane: int) -> float:
    return f64_from_bits((a >> (lane << 6)) & M64)


def _replace(a: int, bits: int, shift: int, mask: int) -> int:
    return (a & ~(mask << shift)) | ((bits & mask) << shift)


def i8x16_replace_lane(a: int, x: int, lane: int) -> int:
    return _replace(a, x, lane << 3, 0xFF)


def i16x8_replace_lane(a: int, x: int, lane: int) -> int:
    return _replace(a, x, lane << 4, 0xFFFF)


def i32x4_replace_lane(a: int, x: int, lane: int) -> int:
    return _replace(a, x, lane << 5, M32)


def i64x2_replace_lane(a: int, x: int, lane: int) -> int:
    return _replace(a, x, lane << 6, M64)


def f32x4_replace_lane(a: int, x: float, lane: int) -> int:
    return _replace(a, f32_to_bits(x), lane << 5, M32)


def f64x2_replace_lane(a: int, x: float, lane: int) -> int:
    return _replace(a, f64_to_bits(x), lane << 6, M64)


# --- shuffle and swizzle ------------------------------------------------------------------------
# Both are byte-table lookups, which ``bytes.translate`` does in C: the index bytes are mapped
# through a 256-entry table holding the source bytes followed by zeros.

_ZEROS_240 = bytes(240)
_ZEROS_224 = bytes(224)


def i8x16_swizzle(a: int, s: int) -> int:
    """Lane ``i`` is ``a``'s lane ``s[i]``, or 0 where ``s[i]`` is 16 or more."""
    table = a.to_bytes(16, "little") + _ZEROS_240
    return _from_bytes(s.to_bytes(16, "little").translate(table), "little")


def i8x16_shuffle(a: int, b: int, lanes: bytes) -> int:
    """Lane ``i`` is byte ``lanes[i]`` of ``a``'s bytes followed by ``b``'s (indices < 32, as
    validation ensures). ``lanes`` is the immediate as ``bytes``."""
    table = a.to_bytes(16, "little") + b.to_bytes(16, "little") + _ZEROS_224
    return _from_bytes(lanes.translate(table), "little")
