"""Opcode numbers, names and immediate kinds (spec 5.4).

Prefixed instructions get one int each: ``0xFC n`` is ``0xFC000 + n`` and ``0xFD n`` (SIMD) is
``0xFD000 + n``. ``NAMES`` and ``IMM`` cover the non-SIMD instructions, from which other modules
derive scalar signatures and handlers by name; the SIMD instructions are in ``SIMD_NAMES`` and
``SIMD_IMM``. ``BY_NAME`` and :func:`name` cover both. The immediate stored in an instruction
tuple depends on ``IMM`` / ``SIMD_IMM``:

====================  ==========================================================================
kind                  immediate
====================  ==========================================================================
``none``              ``None``
``blocktype``         s33 block type (see :data:`vm.structure.BLOCK_EMPTY`)
``label``             label depth (int)
``br_table``          ``(tuple_of_depths, default_depth)``
``func``              function index
``call_indirect``     ``(type_index, table_index)``
``select_t``          tuple of value types (the typed ``select``)
``local`` ``global``  index
``table``             table index
``memarg``            ``(align_exponent, offset)``; also the v128 loads and stores without a lane
``memory``            ``None`` (the reserved memory index byte was checked to be 0)
``i32`` ``i64``       the constant as an unsigned bit pattern (0 <= v < 2**32 / 2**64)
``f32`` ``f64``       the constant's raw IEEE-754 bits as an unsigned int
``reftype``           FUNCREF or EXTERNREF
``data``              data segment index
``elem``              element segment index
``table_init``        ``(elem_index, table_index)``
``table_copy``        ``(dst_table, src_table)``
``v128``              ``v128.const``: the 16 bytes as an unsigned little-endian int
``shuffle``           ``i8x16.shuffle``: tuple of 16 lane indices
``lane``              ``extract_lane`` / ``replace_lane``: lane index (int)
``memarg_lane``       ``v128.loadN_lane`` / ``storeN_lane``: ``(align_exponent, offset, lane)``
====================  ==========================================================================
"""

from __future__ import annotations

FC = 0xFC000
FD = 0xFD000

# (opcode, name, immediate kind)
_TABLE: list[tuple[int, str, str]] = [
    (0x00, "unreachable", "none"),
    (0x01, "nop", "none"),
    (0x02, "block", "blocktype"),
    (0x03, "loop", "blocktype"),
    (0x04, "if", "blocktype"),
    (0x05, "else", "none"),
    (0x0B, "end", "none"),
    (0x0C, "br", "label"),
    (0x0D, "br_if", "label"),
    (0x0E, "br_table", "br_table"),
    (0x0F, "return", "none"),
    (0x10, "call", "func"),
    (0x11, "call_indirect", "call_indirect"),
    (0x1A, "drop", "none"),
    (0x1B, "select", "none"),
    (0x1C, "select_t", "select_t"),
    (0x20, "local.get", "local"),
    (0x21, "local.set", "local"),
    (0x22, "local.tee", "local"),
    (0x23, "global.get", "global"),
    (0x24, "global.set", "global"),
    (0x25, "table.get", "table"),
    (0x26, "table.set", "table"),
    (0x28, "i32.load", "memarg"),
    (0x29, "i64.load", "memarg"),
    (0x2A, "f32.load", "memarg"),
    (0x2B, "f64.load", "memarg"),
    (0x2C, "i32.load8_s", "memarg"),
    (0x2D, "i32.load8_u", "memarg"),
    (0x2E, "i32.load16_s", "memarg"),
    (0x2F, "i32.load16_u", "memarg"),
    (0x30, "i64.load8_s", "memarg"),
    (0x31, "i64.load8_u", "memarg"),
    (0x32, "i64.load16_s", "memarg"),
    (0x33, "i64.load16_u", "memarg"),
    (0x34, "i64.load32_s", "memarg"),
    (0x35, "i64.load32_u", "memarg"),
    (0x36, "i32.store", "memarg"),
    (0x37, "i64.store", "memarg"),
    (0x38, "f32.store", "memarg"),
    (0x39, "f64.store", "memarg"),
    (0x3A, "i32.store8", "memarg"),
    (0x3B, "i32.store16", "memarg"),
    (0x3C, "i64.store8", "memarg"),
    (0x3D, "i64.store16", "memarg"),
    (0x3E, "i64.store32", "memarg"),
    (0x3F, "memory.size", "memory"),
    (0x40, "memory.grow", "memory"),
    (0x41, "i32.const", "i32"),
    (0x42, "i64.const", "i64"),
    (0x43, "f32.const", "f32"),
    (0x44, "f64.const", "f64"),
    (0xD0, "ref.null", "reftype"),
    (0xD1, "ref.is_null", "none"),
    (0xD2, "ref.func", "func"),
    (FC + 0, "i32.trunc_sat_f32_s", "none"),
    (FC + 1, "i32.trunc_sat_f32_u", "none"),
    (FC + 2, "i32.trunc_sat_f64_s", "none"),
    (FC + 3, "i32.trunc_sat_f64_u", "none"),
    (FC + 4, "i64.trunc_sat_f32_s", "none"),
    (FC + 5, "i64.trunc_sat_f32_u", "none"),
    (FC + 6, "i64.trunc_sat_f64_s", "none"),
    (FC + 7, "i64.trunc_sat_f64_u", "none"),
    (FC + 8, "memory.init", "data"),
    (FC + 9, "data.drop", "data"),
    (FC + 10, "memory.copy", "memory"),
    (FC + 11, "memory.fill", "memory"),
    (FC + 12, "table.init", "table_init"),
    (FC + 13, "elem.drop", "elem"),
    (FC + 14, "table.copy", "table_copy"),
    (FC + 15, "table.grow", "table"),
    (FC + 16, "table.size", "table"),
    (FC + 17, "table.fill", "table"),
]

# The numeric instructions 0x45..0xC4 have no immediates; listed by name in opcode order.
_NUMERIC = """
i32.eqz i32.eq i32.ne i32.lt_s i32.lt_u i32.gt_s i32.gt_u i32.le_s i32.le_u i32.ge_s i32.ge_u
i64.eqz i64.eq i64.ne i64.lt_s i64.lt_u i64.gt_s i64.gt_u i64.le_s i64.le_u i64.ge_s i64.ge_u
f32.eq f32.ne f32.lt f32.gt f32.le f32.ge
f64.eq f64.ne f64.lt f64.gt f64.le f64.ge
i32.clz i32.ctz i32.popcnt i32.add i32.sub i32.mul i32.div_s i32.div_u i32.rem_s i32.rem_u
i32.and i32.or i32.xor i32.shl i32.shr_s i32.shr_u i32.rotl i32.rotr
i64.clz i64.ctz i64.popcnt i64.add i64.sub i64.mul i64.div_s i64.div_u i64.rem_s i64.rem_u
i64.and i64.or i64.xor i64.shl i64.shr_s i64.shr_u i64.rotl i64.rotr
f32.abs f32.neg f32.ceil f32.floor f32.trunc f32.nearest f32.sqrt f32.add f32.sub f32.mul f32.div
f32.min f32.max f32.copysign
f64.abs f64.neg f64.ceil f64.floor f64.trunc f64.nearest f64.sqrt f64.add f64.sub f64.mul f64.div
f64.min f64.max f64.copysign
i32.wrap_i64 i32.trunc_f32_s i32.trunc_f32_u i32.trunc_f64_s i32.trunc_f64_u
i64.extend_i32_s i64.extend_i32_u i64.trunc_f32_s i64.trunc_f32_u i64.trunc_f64_s i64.trunc_f64_u
f32.convert_i32_s f32.convert_i32_u f32.convert_i64_s f32.convert_i64_u f32.demote_f64
f64.convert_i32_s f64.convert_i32_u f64.convert_i64_s f64.convert_i64_u f64.promote_f32
i32.reinterpret_f32 i64.reinterpret_f64 f32.reinterpret_i32 f64.reinterpret_i64
i32.extend8_s i32.extend16_s i64.extend8_s i64.extend16_s i64.extend32_s
""".split()

for _i, _name in enumerate(_NUMERIC):
    _TABLE.append((0x45 + _i, _name, "none"))

assert _TABLE[-1] == (0xC4, "i64.extend32_s", "none"), _TABLE[-1]

NAMES: dict[int, str] = {op: name for op, name, _ in _TABLE}
IMM: dict[int, str] = {op: kind for op, _, kind in _TABLE}
BY_NAME: dict[str, int] = {name: op for op, name, _ in _TABLE}

# Module-level constants for the opcodes, e.g. ``I32_ADD``, ``LOCAL_GET``, ``MEMORY_INIT``.
for _op, _name, _ in _TABLE:
    globals()[_name.upper().replace(".", "_")] = _op

# The SIMD instructions 0xFD 0x00..0xFF, listed by name in opcode order; "-" marks the opcodes the
# spec leaves unassigned.
_SIMD = """
v128.load v128.load8x8_s v128.load8x8_u v128.load16x4_s v128.load16x4_u v128.load32x2_s
v128.load32x2_u v128.load8_splat v128.load16_splat v128.load32_splat v128.load64_splat
v128.store v128.const i8x16.shuffle i8x16.swizzle i8x16.splat i16x8.splat i32x4.splat
i64x2.splat f32x4.splat f64x2.splat i8x16.extract_lane_s i8x16.extract_lane_u
i8x16.replace_lane i16x8.extract_lane_s i16x8.extract_lane_u i16x8.replace_lane
i32x4.extract_lane i32x4.replace_lane i64x2.extract_lane i64x2.replace_lane
f32x4.extract_lane f32x4.replace_lane f64x2.extract_lane f64x2.replace_lane
i8x16.eq i8x16.ne i8x16.lt_s i8x16.lt_u i8x16.gt_s i8x16.gt_u i8x16.le_s i8x16.le_u
i8x16.ge_s i8x16.ge_u i16x8.eq i16x8.ne i16x8.lt_s i16x8.lt_u i16x8.gt_s i16x8.gt_u
i16x8.le_s i16x8.le_u i16x8.ge_s i16x8.ge_u i32x4.eq i32x4.ne i32x4.lt_s i32x4.lt_u
i32x4.gt_s i32x4.gt_u i32x4.le_s i32x4.le_u i32x4.ge_s i32x4.ge_u
f32x4.eq f32x4.ne f32x4.lt f32x4.gt f32x4.le f32x4.ge
f64x2.eq f64x2.ne f64x2.lt f64x2.gt f64x2.le f64x2.ge
v128.not v128.and v128.andnot v128.or v128.xor v128.bitselect v128.any_true
v128.load8_lane v128.load16_lane v128.load32_lane v128.load64_lane
v128.store8_lane v128.store16_lane v128.store32_lane v128.store64_lane
v128.load32_zero v128.load64_zero f32x4.demote_f64x2_zero f64x2.promote_low_f32x4
i8x16.abs i8x16.neg i8x16.popcnt i8x16.all_true i8x16.bitmask i8x16.narrow_i16x8_s
i8x16.narrow_i16x8_u f32x4.ceil f32x4.floor f32x4.trunc f32x4.nearest
i8x16.shl i8x16.shr_s i8x16.shr_u i8x16.add i8x16.add_sat_s i8x16.add_sat_u
i8x16.sub i8x16.sub_sat_s i8x16.sub_sat_u f64x2.ceil f64x2.floor
i8x16.min_s i8x16.min_u i8x16.max_s i8x16.max_u f64x2.trunc i8x16.avgr_u
i16x8.extadd_pairwise_i8x16_s i16x8.extadd_pairwise_i8x16_u
i32x4.extadd_pairwise_i16x8_s i32x4.extadd_pairwise_i16x8_u
i16x8.abs i16x8.neg i16x8.q15mulr_sat_s i16x8.all_true i16x8.bitmask
i16x8.narrow_i32x4_s i16x8.narrow_i32x4_u i16x8.extend_low_i8x16_s i16x8.extend_high_i8x16_s
i16x8.extend_low_i8x16_u i16x8.extend_high_i8x16_u
i16x8.shl i16x8.shr_s i16x8.shr_u i16x8.add i16x8.add_sat_s i16x8.add_sat_u
i16x8.sub i16x8.sub_sat_s i16x8.sub_sat_u f64x2.nearest
i16x8.mul i16x8.min_s i16x8.min_u i16x8.max_s i16x8.max_u - i16x8.avgr_u
i16x8.extmul_low_i8x16_s i16x8.extmul_high_i8x16_s
i16x8.extmul_low_i8x16_u i16x8.extmul_high_i8x16_u
i32x4.abs i32x4.neg - i32x4.all_true i32x4.bitmask - -
i32x4.extend_low_i16x8_s i32x4.extend_high_i16x8_s
i32x4.extend_low_i16x8_u i32x4.extend_high_i16x8_u
i32x4.shl i32x4.shr_s i32x4.shr_u i32x4.add - - i32x4.sub - - -
i32x4.mul i32x4.min_s i32x4.min_u i32x4.max_s i32x4.max_u i32x4.dot_i16x8_s -
i32x4.extmul_low_i16x8_s i32x4.extmul_high_i16x8_s
i32x4.extmul_low_i16x8_u i32x4.extmul_high_i16x8_u
i64x2.abs i64x2.neg - i64x2.all_true i64x2.bitmask - -
i64x2.extend_low_i32x4_s i64x2.extend_high_i32x4_s
i64x2.extend_low_i32x4_u i64x2.extend_high_i32x4_u
i64x2.shl i64x2.shr_s i64x2.shr_u i64x2.add - - i64x2.sub - - - i64x2.mul
i64x2.eq i64x2.ne i64x2.lt_s i64x2.gt_s i64x2.le_s i64x2.ge_s
i64x2.extmul_low_i32x4_s i64x2.extmul_high_i32x4_s
i64x2.extmul_low_i32x4_u i64x2.extmul_high_i32x4_u
f32x4.abs f32x4.neg - f32x4.sqrt f32x4.add f32x4.sub f32x4.mul f32x4.div
f32x4.min f32x4.max f32x4.pmin f32x4.pmax
f64x2.abs f64x2.neg - f64x2.sqrt f64x2.add f64x2.sub f64x2.mul f64x2.div
f64x2.min f64x2.max f64x2.pmin f64x2.pmax
i32x4.trunc_sat_f32x4_s i32x4.trunc_sat_f32x4_u f32x4.convert_i32x4_s f32x4.convert_i32x4_u
i32x4.trunc_sat_f64x2_s_zero i32x4.trunc_sat_f64x2_u_zero
f64x2.convert_low_i32x4_s f64x2.convert_low_i32x4_u
""".split()


def _simd_kind(simd_name: str) -> str:
    """Immediate kind of a SIMD instruction, which its name determines."""
    if simd_name == "v128.const":
        return "v128"
    if simd_name == "i8x16.shuffle":
        return "shuffle"
    if "_lane" in simd_name:
        return "memarg_lane" if simd_name.startswith("v128.") else "lane"
    if simd_name.startswith("v128.load") or simd_name == "v128.store":
        return "memarg"
    return "none"


SIMD_NAMES: dict[int, str] = {FD + n: s for n, s in enumerate(_SIMD) if s != "-"}
SIMD_IMM: dict[int, str] = {op: _simd_kind(s) for op, s in SIMD_NAMES.items()}
assert len(_SIMD) == 0x100 and len(SIMD_NAMES) == 236, (len(_SIMD), len(SIMD_NAMES))
assert not BY_NAME.keys() & SIMD_NAMES.values()
BY_NAME.update({s: op for op, s in SIMD_NAMES.items()})

del _i, _name, _op


def name(op: int) -> str:
    """Human-readable name of an opcode, for errors and disassembly."""
    if op in NAMES:
        return NAMES[op]
    if op in SIMD_NAMES:
        return SIMD_NAMES[op]
    if op >= FD:
        return f"simd.0x{op - FD:x}"
    if op >= FC:
        return f"0xfc 0x{op - FC:x}"
    return f"0x{op:02x}"
