"""The 128-bit SIMD instructions of WebAssembly 2.0 (spec 4.3 and 4.4.3), as plain functions.

One function per instruction, named after it with ``.`` replaced by ``_`` (``i8x16_add``,
``f32x4_pmin``, ``i32x4_trunc_sat_f64x2_u_zero``), like :mod:`vm.execution.numerics` for the
scalar instructions. They live in three modules and are collected here:

* :mod:`~vm.execution.simd_lanes` -- lane access, bitwise operations, splat, extract/replace
  lane, shuffle and swizzle;
* :mod:`~vm.execution.simd_int` -- integer lane arithmetic;
* :mod:`~vm.execution.simd_float` -- float lane arithmetic and conversions.

:data:`OPS` maps the opcode of every SIMD instruction except ``v128.const`` and the memory
instructions to its function, and :data:`ARITY` to the number of operands it pops (1 to 3); the
instructions with a lane immediate take it as one more, last, argument (``extract_lane(a, lane)``,
``replace_lane(a, x, lane)``, ``i8x16_shuffle(a, b, lanes)`` with the 16 lane indices as
``bytes``). The memory instructions are in :mod:`vm.execution.simd_translate`, beside the
translation that gives them their memory.

Representation
--------------

A ``v128`` is a Python ``int`` with ``0 <= v < 2**128`` whose little-endian bytes are the
vector's bytes in memory order: lane ``i`` of a ``w``-bit shape is ``(v >> (i * w)) & (2**w - 1)``,
the bits of an f32/f64 lane are its IEEE-754 pattern. That is also the form of the decoder's
``v128.const`` immediate and of the spec-suite runner's values, and the zero vector is ``0``, the
zero of every integer local. Ints are immutable and hashable, as snapshots and the constant
registers need. :func:`v128_from_bytes`, :func:`v128_to_bytes` and :func:`v128_from_lanes` /
:func:`v128_lanes` convert for embedders.

The alternative was 16-byte ``bytes`` values. Timings of both for the common instructions,
CPython 3.11.7 on the benchmark machine (bench/README.md): one call of a plain function with the
best implementation found for each representation, best of 9 x 200,000, median of three runs:

=====================  =======  =======  ===================================================
instruction            int      bytes    how (int / bytes)
=====================  =======  =======  ===================================================
``i8x16.add``           140 ns   368 ns  lane-carry-free integer add / via int and back
``i8x16.add``                    913 ns  (bytes: a per-lane list comprehension)
``i32x4.add``           135 ns   394 ns  the same / ``struct`` unpack, 4 masked adds, pack
``v128.and``             66 ns   180 ns  ``a & b`` / via int and back
``i8x16.shuffle``       237 ns   122 ns  ``bytes.translate`` of the lane indices through
                                         both operands' bytes (to bytes and back for int)
``v128.load``            96 ns    83 ns  ``struct`` ``<QQ``, ``lo | hi << 64`` / ``16s``
``v128.store``          111 ns    75 ns  ``to_bytes`` into ``16s`` / ``16s``
=====================  =======  =======  ===================================================

The int is 2.6-2.9x faster on lane-wise arithmetic and bitwise instructions, which make up most
of vector code, and 1.2-1.9x slower on memory access and shuffles, which cost little either way;
so v128 is an int.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..binary.opcodes import SIMD_IMM, SIMD_NAMES
from . import simd_float, simd_int, simd_lanes
from .simd_lanes import M128, from_bytes, to_bytes

_LANE_WIDTH = {"i8": 8, "i16": 16, "i32": 32, "i64": 64}


def v128_from_bytes(data: bytes) -> int:
    """The v128 whose bytes in memory order are ``data`` (16 bytes)."""
    if len(data) != 16:
        raise ValueError(f"a v128 has 16 bytes, not {len(data)}")
    return from_bytes(data)


def v128_to_bytes(v: int) -> bytes:
    """The 16 bytes of ``v`` in memory order."""
    return to_bytes(v)


def v128_from_lanes(lane_type: str, lanes: Sequence[int]) -> int:
    """Pack integer lanes (``lane_type`` ``"i8"``, ``"i16"``, ``"i32"`` or ``"i64"``), lane 0
    first; each lane is taken modulo 2**width, so signed values are accepted."""
    width = _LANE_WIDTH[lane_type]
    if len(lanes) * width != 128:
        raise ValueError(f"{lane_type} needs {128 // width} lanes, not {len(lanes)}")
    mask = (1 << width) - 1
    out = 0
    for i, x in enumerate(lanes):
        out |= (x & mask) << (i * width)
    return out


def v128_lanes(v: int, lane_type: str) -> list[int]:
    """The unsigned integer lanes of ``v``, lane 0 first."""
    width = _LANE_WIDTH[lane_type]
    mask = (1 << width) - 1
    return [(v >> i) & mask for i in range(0, 128, width)]


def _is_memory(name: str) -> bool:
    return name == "v128.const" or SIMD_IMM[_BY_NAME[name]] in ("memarg", "memarg_lane")


_BY_NAME = {name: code for code, name in SIMD_NAMES.items()}
_MODULES = (simd_lanes, simd_int, simd_float)


def _lookup(name: str) -> Callable[..., object]:
    attr = name.replace(".", "_")
    for module in _MODULES:
        fn = getattr(module, attr, None)
        if fn is not None:
            return fn
    raise LookupError(f"no function for SIMD instruction {name}")


OPS: dict[int, Callable[..., object]] = {
    code: _lookup(name) for code, name in sorted(SIMD_NAMES.items()) if not _is_memory(name)}
"""Opcode -> the function implementing it (all SIMD instructions but const and memory)."""


def _arity(code: int) -> int:
    argcount = OPS[code].__code__.co_argcount
    return argcount - 1 if SIMD_IMM[code] in ("lane", "shuffle") else argcount


ARITY: dict[int, int] = {code: _arity(code) for code in OPS}
"""Opcode -> number of operands popped (the immediate argument is not counted)."""

globals().update({fn.__name__: fn for fn in OPS.values()})

__all__ = ["ARITY", "M128", "OPS", "v128_from_bytes", "v128_from_lanes", "v128_lanes",
           "v128_to_bytes", *sorted(fn.__name__ for fn in OPS.values())]
