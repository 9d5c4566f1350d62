"""Translation of the SIMD instructions into threaded code (see :mod:`vm.execution.translate`).

:func:`instr` is the translator's hook for every ``0xFD`` opcode. It uses the translator the way
its scalar cases do: operands are popped from the virtual stack ``tr.vs`` as register indices,
``tr.emit_result`` emits a closure whose first argument is its destination register, and a
``v128.const`` becomes a constant register (``tr.const``) without any code.

Closures come in three kinds:

* **inline** closures for the instructions that dominate vector loops (bitwise operations,
  lane-wise add and sub, splats, lane extraction): the whole-vector integer expression of
  :mod:`vm.execution.simd_int` is compiled into the closure, saving a Python call per execution;
* **memory** closures (the v128 loads and stores, also per lane), which capture the memory's
  ``bytearray`` like the scalar loads and stores. Their bounds checks are ``struct``'s: reading
  or writing past the end raises ``struct.error``, which the machine turns into the spec's
  "out of bounds memory access" trap;
* closures that **call** the instruction's function from :data:`vm.execution.simd.OPS`.

The inline expressions must agree with the functions of :mod:`vm.execution.simd`;
tests/test_simd.py checks each against its function.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from ..binary.opcodes import SIMD_IMM, SIMD_NAMES
from . import handlers as H
from . import simd, simd_int, simd_lanes
from .simd_lanes import M64, M128, REP8, REP16, REP32, REP64

Handler = Callable[[list, int], int]
Factory = Callable[..., Handler]

# --- inline expression templates ------------------------------------------------------------------
# {a} and {b} are the operands (each read once into a local first); names are from _ENV.

_ENV: dict[str, Any] = {"M128": M128, "M64": M64, "REP8": REP8, "REP16": REP16, "REP32": REP32,
                        "REP64": REP64}
for _w in (8, 16, 32, 64):
    _ENV[f"LOW{_w}"] = getattr(simd_lanes, f"LOW{_w}")
    _ENV[f"HIGH{_w}"] = getattr(simd_lanes, f"HIGH{_w}")


def _add_expr(w: int) -> str:
    return f"((x & LOW{w}) + (y & LOW{w})) ^ ((x ^ y) & HIGH{w})"


def _sub_expr(w: int) -> str:
    return f"((x | HIGH{w}) - (y & LOW{w})) ^ ((x ^ y ^ HIGH{w}) & HIGH{w})"


INLINE_BINARY: dict[str, str] = {
    "v128.and": "x & y",
    "v128.or": "x | y",
    "v128.xor": "x ^ y",
    "v128.andnot": "x & (y ^ M128)",
    **{f"{shape}.add": _add_expr(w) for shape, w in
       (("i8x16", 8), ("i16x8", 16), ("i32x4", 32), ("i64x2", 64))},
    **{f"{shape}.sub": _sub_expr(w) for shape, w in
       (("i8x16", 8), ("i16x8", 16), ("i32x4", 32), ("i64x2", 64))},
}
"""Binary instructions compiled inline: expressions over the operands ``x`` and ``y``."""

INLINE_UNARY: dict[str, str] = {
    "v128.not": "x ^ M128",
    "v128.any_true": "1 if x else 0",
    "i8x16.splat": "(x & 0xFF) * REP8",
    "i16x8.splat": "(x & 0xFFFF) * REP16",
    "i32x4.splat": "x * REP32",
    "i64x2.splat": "x * REP64",
}
"""Unary instructions compiled inline: expressions over the operand ``x``."""


def _compile(params: str, body: str, env: dict[str, Any]) -> Factory:
    src = f"def factory({params}):\n    def h(r, pc):\n{body}\n    return h\n"
    ns = dict(env)
    exec(compile(src, "<dwasm simd handler>", "exec"), ns)
    return ns["factory"]


def _binary_factory(expr: str) -> Factory:
    return _compile("d, a, b", f"        x = r[a]\n        y = r[b]\n        r[d] = {expr}\n"
                               "        return pc + 1", _ENV)


def _unary_factory(expr: str) -> Factory:
    return _compile("d, a", f"        x = r[a]\n        r[d] = {expr}\n        return pc + 1", _ENV)


INLINE_BINARY_FACTORIES: dict[str, Factory] = H.LazyFactories(_binary_factory, INLINE_BINARY)
"""name -> factory(d, a, b) of the inline closure."""
INLINE_UNARY_FACTORIES: dict[str, Factory] = H.LazyFactories(_unary_factory, INLINE_UNARY)
"""name -> factory(d, a) of the inline closure."""


# --- calls of the instruction functions -----------------------------------------------------------

def call_ternary(fn: Callable[[int, int, int], int], d: int, a: int, b: int, c: int) -> Handler:
    def h(r: list, pc: int) -> int:
        r[d] = fn(r[a], r[b], r[c])
        return pc + 1
    return h


def call_lane1(fn: Callable[[int, Any], Any], d: int, a: int, imm: Any) -> Handler:
    """One operand and an immediate (``extract_lane``)."""
    def h(r: list, pc: int) -> int:
        r[d] = fn(r[a], imm)
        return pc + 1
    return h


def call_lane2(fn: Callable[[int, Any, Any], Any], d: int, a: int, b: int, imm: Any) -> Handler:
    """Two operands and an immediate (``replace_lane``, ``i8x16.shuffle``)."""
    def h(r: list, pc: int) -> int:
        r[d] = fn(r[a], r[b], imm)
        return pc + 1
    return h


def extract_int_lane(d: int, a: int, shift: int, mask: int) -> Handler:
    """The unsigned integer extractions, inline: a shift and a mask."""
    def h(r: list, pc: int) -> int:
        r[d] = (r[a] >> shift) & mask
        return pc + 1
    return h


# name -> (log2 of the lane width, lane mask) of the extractions done inline.
UNSIGNED_EXTRACT = {"i8x16.extract_lane_u": (3, 0xFF), "i16x8.extract_lane_u": (4, 0xFFFF),
                    "i32x4.extract_lane": (5, 0xFFFFFFFF), "i64x2.extract_lane": (6, M64)}


# --- memory ---------------------------------------------------------------------------------------
# ``a`` is the address register, ``off`` the static offset, ``mem`` the memory's bytearray.

_V128 = struct.Struct("<QQ")
_BYTES16 = struct.Struct("16s")
_UNPACK = {1: struct.Struct("<B").unpack_from, 2: struct.Struct("<H").unpack_from,
           4: struct.Struct("<I").unpack_from, 8: struct.Struct("<Q").unpack_from}
_PACK = {1: struct.Struct("<B").pack_into, 2: struct.Struct("<H").pack_into,
         4: struct.Struct("<I").pack_into, 8: struct.Struct("<Q").pack_into}


def v128_load(d: int, a: int, off: int, mem: bytearray) -> Handler:
    unpack = _V128.unpack_from

    def h(r: list, pc: int) -> int:
        lo, hi = unpack(mem, r[a] + off)
        r[d] = lo | hi << 64
        return pc + 1
    return h


def v128_store(a: int, b: int, off: int, mem: bytearray) -> Handler:
    pack = _BYTES16.pack_into

    def h(r: list, pc: int) -> int:
        pack(mem, r[a] + off, r[b].to_bytes(16, "little"))
        return pc + 1
    return h


def load_extend(extend: Callable[[int], int]) -> Factory:
    """``v128.loadMxN_s/u``: 64 bits read as the low half of a v128, then widened by the
    matching ``extend_low`` instruction."""
    unpack = _UNPACK[8]

    def factory(d: int, a: int, off: int, mem: bytearray) -> Handler:
        def h(r: list, pc: int) -> int:
            r[d] = extend(unpack(mem, r[a] + off)[0])
            return pc + 1
        return h
    return factory


def load_scaled(nbytes: int, scale: int) -> Factory:
    """A scalar read of ``nbytes`` times ``scale``: ``scale`` 1 is ``v128.loadN_zero``, a
    lane-repeat constant makes ``v128.loadN_splat``."""
    unpack = _UNPACK[nbytes]

    def factory(d: int, a: int, off: int, mem: bytearray) -> Handler:
        def h(r: list, pc: int) -> int:
            r[d] = unpack(mem, r[a] + off)[0] * scale
            return pc + 1
        return h
    return factory


def load_lane(nbytes: int) -> Callable[..., Handler]:
    """``v128.loadN_lane``: replace lane ``lane`` of the vector in ``b`` with memory."""
    unpack = _UNPACK[nbytes]
    mask = (1 << (8 * nbytes)) - 1

    def factory(d: int, a: int, b: int, off: int, lane: int, mem: bytearray) -> Handler:
        shift = lane * 8 * nbytes
        keep = M128 ^ (mask << shift)

        def h(r: list, pc: int) -> int:
            r[d] = (r[b] & keep) | (unpack(mem, r[a] + off)[0] << shift)
            return pc + 1
        return h
    return factory


def store_lane(nbytes: int) -> Callable[..., Handler]:
    """``v128.storeN_lane``: write lane ``lane`` of the vector in ``b`` to memory."""
    pack = _PACK[nbytes]
    mask = (1 << (8 * nbytes)) - 1

    def factory(a: int, b: int, off: int, lane: int, mem: bytearray) -> Handler:
        shift = lane * 8 * nbytes

        def h(r: list, pc: int) -> int:
            pack(mem, r[a] + off, (r[b] >> shift) & mask)
            return pc + 1
        return h
    return factory


LOAD: dict[str, Factory] = {
    "v128.load": v128_load,
    "v128.load8x8_s": load_extend(simd_int.i16x8_extend_low_i8x16_s),
    "v128.load8x8_u": load_extend(simd_int.i16x8_extend_low_i8x16_u),
    "v128.load16x4_s": load_extend(simd_int.i32x4_extend_low_i16x8_s),
    "v128.load16x4_u": load_extend(simd_int.i32x4_extend_low_i16x8_u),
    "v128.load32x2_s": load_extend(simd_int.i64x2_extend_low_i32x4_s),
    "v128.load32x2_u": load_extend(simd_int.i64x2_extend_low_i32x4_u),
    "v128.load8_splat": load_scaled(1, REP8),
    "v128.load16_splat": load_scaled(2, REP16),
    "v128.load32_splat": load_scaled(4, REP32),
    "v128.load64_splat": load_scaled(8, REP64),
    "v128.load32_zero": load_scaled(4, 1),
    "v128.load64_zero": load_scaled(8, 1),
}
"""Loads with a plain memarg: factory(d, address_register, offset, memory_bytes)."""

LOAD_LANE: dict[str, Callable[..., Handler]] = {
    f"v128.load{8 * n}_lane": load_lane(n) for n in (1, 2, 4, 8)}
STORE_LANE: dict[str, Callable[..., Handler]] = {
    f"v128.store{8 * n}_lane": store_lane(n) for n in (1, 2, 4, 8)}


# --- the hook -------------------------------------------------------------------------------------

def instr(tr: Any, code: int, imm: Any) -> None:
    """Translate the SIMD instruction ``code`` with immediate ``imm`` for translator ``tr``."""
    name = SIMD_NAMES[code]
    kind = SIMD_IMM[code]
    vs = tr.vs
    if kind == "none":
        _plain(tr, code, name)
    elif kind == "v128":
        vs.append(tr.const(("v128", imm), imm))
    elif kind == "memarg":
        mem = tr.inst.mems[0].data
        if name == "v128.store":
            b = vs.pop()
            a = vs.pop()
            tr.emit(v128_store, a, b, imm[1], mem)
        else:
            tr.emit_result(None, LOAD[name], vs.pop(), imm[1], mem)
    elif kind == "memarg_lane":
        mem = tr.inst.mems[0].data
        _, offset, lane = imm
        b = vs.pop()
        a = vs.pop()
        if name in LOAD_LANE:
            tr.emit_result(None, LOAD_LANE[name], a, b, offset, lane, mem)
        else:
            tr.emit(STORE_LANE[name], a, b, offset, lane, mem)
    elif kind == "shuffle":
        b = vs.pop()
        a = vs.pop()
        tr.emit_result(None, _factory(call_lane2, simd.OPS[code]), a, b, bytes(imm))
    elif name in UNSIGNED_EXTRACT:
        size, mask = UNSIGNED_EXTRACT[name]
        tr.emit_result(None, extract_int_lane, vs.pop(), imm << size, mask)
    elif "extract_lane" in name:
        tr.emit_result(None, _factory(call_lane1, simd.OPS[code]), vs.pop(), imm)
    else:  # replace_lane
        x = vs.pop()
        a = vs.pop()
        tr.emit_result(None, _factory(call_lane2, simd.OPS[code]), a, x, imm)


def _plain(tr: Any, code: int, name: str) -> None:
    """An instruction without immediate: inline if it has a template, else a call."""
    vs = tr.vs
    arity = simd.ARITY[code]
    if arity == 1:
        a = vs.pop()
        factory = INLINE_UNARY_FACTORIES.get(name) or _factory(H.call_unary, simd.OPS[code])
        tr.emit_result(None, factory, a)
    elif arity == 2:
        b = vs.pop()
        a = vs.pop()
        factory = INLINE_BINARY_FACTORIES.get(name) or _factory(H.call_binary, simd.OPS[code])
        tr.emit_result(None, factory, a, b)
    else:
        c = vs.pop()
        b = vs.pop()
        a = vs.pop()
        tr.emit_result(None, _factory(call_ternary, simd.OPS[code]), a, b, c)


_FACTORIES: dict[tuple[Callable, Callable], Factory] = {}


def _factory(make: Callable[..., Handler], fn: Callable) -> Factory:
    """The factory ``(d, *registers_and_immediates) -> make(fn, d, ...)``, one per pair."""
    key = (make, fn)
    factory = _FACTORIES.get(key)
    if factory is None:
        def factory(*args: Any) -> Handler:
            return make(fn, *args)
        _FACTORIES[key] = factory
    return factory
