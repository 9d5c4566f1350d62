"""Tests of the binary decoder (vm.binary): sections, instructions, LEB128, error messages, and
the binary ``assert_malformed`` commands of the official spec suite."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import wasmtime

import spec_suite
from vm.binary import decode_module
from vm.binary import opcodes as op
from vm.binary.decoder import MAX_FUNCTION_LOCALS, SIMD_IMM, SIMD_NAMES
from vm.binary.names import parse_function_names
from vm.binary.reader import read_sleb, read_uleb
from vm.errors import MalformedError
from vm.structure import (BLOCK_EMPTY, EXTERNREF, F32, F64, FUNCREF, I32, I64, KIND_FUNC,
                          KIND_GLOBAL, KIND_MEM, KIND_TABLE, MODE_ACTIVE, MODE_DECLARATIVE,
                          MODE_PASSIVE, V128, FuncType, GlobalType, Limits, MemType, TableType)

HEADER = b"\x00asm\x01\x00\x00\x00"


# -- building binaries by hand ------------------------------------------------------------------

def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def vec(items: list[bytes]) -> bytes:
    return uleb(len(items)) + b"".join(items)


def name(s: str) -> bytes:
    raw = s.encode()
    return uleb(len(raw)) + raw


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + uleb(len(payload)) + payload


def module(*sections: bytes) -> bytes:
    return HEADER + b"".join(sections)


VOID_TYPE = section(1, vec([b"\x60\x00\x00"]))


def func_module(body: bytes, locals_: bytes = b"\x00", extra: tuple[bytes, ...] = ()) -> bytes:
    """One function of type [] -> [] with the given locals vector and instruction bytes."""
    code = locals_ + body
    return module(VOID_TYPE, section(3, vec([b"\x00"])), *extra,
                  section(10, vec([uleb(len(code)) + code])))


def body_of(data: bytes) -> list:
    return decode_module(data).funcs[0].body


def malformed_message(data: bytes) -> str:
    with pytest.raises(MalformedError) as info:
        decode_module(data)
    return str(info.value)


# -- LEB128 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 1, 63, 64, 127, 128, 624485, 2**31, 2**32 - 1])
def test_uleb_round_trip(value: int) -> None:
    raw = uleb(value)
    assert read_uleb(raw, 0, 32) == (value, len(raw))


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, -65, -123456, 2**31 - 1, -2**31])
def test_sleb_round_trip(value: int) -> None:
    raw = sleb(value)
    assert read_sleb(raw, 0, 32) == (value, len(raw))


@pytest.mark.parametrize("value", [2**63 - 1, -2**63, -1, 2**40])
def test_sleb64_round_trip(value: int) -> None:
    raw = sleb(value)
    assert read_sleb(raw, 0, 64) == (value, len(raw))


def test_uleb_padding_is_allowed_up_to_the_byte_limit() -> None:
    assert read_uleb(b"\x80\x80\x80\x80\x00", 0, 32) == (0, 5)
    assert read_uleb(b"\xff\xff\xff\xff\x0f", 0, 32) == (2**32 - 1, 5)
    assert read_sleb(b"\xff\xff\xff\xff\x7f", 0, 32) == (-1, 5)
    assert read_sleb(b"\x80\x80\x80\x80\x78", 0, 32) == (-2**31, 5)
    assert read_uleb(b"\x80" * 9 + b"\x01", 0, 64) == (2**63, 10)


@pytest.mark.parametrize("raw, bits, message", [
    (b"\x80\x80\x80\x80\x80\x00", 32, "integer representation too long"),
    (b"\x80\x80\x80\x80\x10", 32, "integer too large"),
    (b"\xff\xff\xff\xff\x1f", 32, "integer too large"),
    (b"\x80\x80\x80\x80\x90\x00", 32, "integer too large"),  # value bits are checked first
    (b"\x02", 1, "integer too large"),
    (b"\x81\x00", 1, "integer representation too long"),
    (b"\x80" * 10 + b"\x00", 64, "integer representation too long"),
    (b"\x80" * 9 + b"\x02", 64, "integer too large"),
])
def test_uleb_limits(raw: bytes, bits: int, message: str) -> None:
    with pytest.raises(MalformedError, match=f"^{message}"):
        read_uleb(raw, 0, bits)


@pytest.mark.parametrize("raw, bits, message", [
    (b"\xff\xff\xff\xff\xff\x7f", 32, "integer representation too long"),
    (b"\x80\x80\x80\x80\x70", 32, "integer too large"),
    (b"\xff\xff\xff\xff\x0f", 32, "integer too large"),
    (b"\xff\xff\xff\xff\x4f", 32, "integer too large"),
    (b"\xff" * 9 + b"\x01", 64, "integer too large"),
    (b"\x80" * 9 + b"\x7e", 64, "integer too large"),
    (b"\x80\x80\x80\x80\x60", 33, "integer too large"),
])
def test_sleb_limits(raw: bytes, bits: int, message: str) -> None:
    with pytest.raises(MalformedError, match=f"^{message}"):
        read_sleb(raw, 0, bits)


def test_leb_past_the_end_is_an_index_error_for_the_caller_to_map() -> None:
    with pytest.raises(IndexError):
        read_uleb(b"\x80\x80", 0, 32)


# -- header and section framing -----------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    (b"", "unexpected end"),
    (b"\x00as", "unexpected end"),
    (b"asm\x00", "magic header not detected"),
    (b"\x00ASM\x01\x00\x00\x00", "magic header not detected"),
    (b"\x00asm\x01\x00", "unexpected end"),
    (b"\x00asm\x02\x00\x00\x00", "unknown binary version"),
    (HEADER + b"\x0d\x00", "malformed section id"),
    (HEADER + b"\x80\x00", "malformed section id"),
    (HEADER + b"\x01", "unexpected end"),
    (HEADER + b"\x01\x05\x00", "length out of bounds"),
    (HEADER + b"\x01\x02\x00\x00", "section size mismatch"),
    (HEADER + b"\x01\x01\x01", "unexpected end of section or function"),
    (HEADER + b"\x03\x01\x00\x01\x01\x00", "unexpected content after last section"),
    (HEADER + b"\x03\x01\x00\x03\x01\x00", "unexpected content after last section"),
    (HEADER + b"\x0a\x01\x00\x0c\x01\x00", "unexpected content after last section"),
])
def test_framing_errors(data: bytes, message: str) -> None:
    assert malformed_message(data).startswith(message)


def test_empty_module_and_identity() -> None:
    m = decode_module(HEADER)
    assert m.types == [] and m.funcs == [] and m.start is None and m.data_count is None
    assert m.sha256 == hashlib.sha256(HEADER).hexdigest()
    assert decode_module(bytearray(HEADER)).sha256 == m.sha256
    assert decode_module(memoryview(HEADER)).sha256 == m.sha256


def test_custom_sections_anywhere_and_kept() -> None:
    custom = section(0, name("hello") + b"\x01\x02")
    data = module(custom, VOID_TYPE, custom, section(12, uleb(0)), section(0, name("x")))
    m = decode_module(data)
    assert m.customs == [("hello", b"\x01\x02"), ("hello", b"\x01\x02"), ("x", b"")]
    assert m.data_count == 0


def test_custom_section_cut_short_is_unexpected_end() -> None:
    data = module(section(0, name("abc") + b"payload"))
    assert malformed_message(data[:-1]).startswith("unexpected end of section or function")


def test_custom_section_name_must_fit_and_be_utf8() -> None:
    assert malformed_message(module(b"\x00\x01\x05abcde")).startswith("unexpected end")
    assert malformed_message(module(section(0, b"\x02\xc3\x28"))).startswith(
        "malformed UTF-8 encoding")


# -- sections -----------------------------------------------------------------------------------

def test_type_section() -> None:
    types = vec([b"\x60" + vec([bytes([I32]), bytes([I64])]) + vec([bytes([F32])]),
                 b"\x60" + vec([bytes([V128]), bytes([FUNCREF]), bytes([EXTERNREF])]) + vec([])])
    m = decode_module(module(section(1, types)))
    assert m.types == [FuncType((I32, I64), (F32,)), FuncType((V128, FUNCREF, EXTERNREF), ())]


@pytest.mark.parametrize("payload, message", [
    (vec([b"\x61\x00\x00"]), "malformed function type"),
    (vec([b"\xe0\x7f\x00\x00"]), "integer representation too long"),
    (vec([b"\x60\x01\x40\x00"]), "malformed value type"),
])
def test_type_section_errors(payload: bytes, message: str) -> None:
    assert malformed_message(module(section(1, payload))).startswith(message)


def test_import_section_all_kinds() -> None:
    imports = vec([
        name("m") + name("f") + b"\x00" + uleb(0),
        name("m") + name("t") + b"\x01\x70\x01" + uleb(1) + uleb(10),
        name("m") + name("mem") + b"\x02\x00" + uleb(2),
        name("m") + name("g") + b"\x03\x7e\x01",
        name("ünï") + name("") + b"\x03\x6f\x00",
    ])
    m = decode_module(module(VOID_TYPE, section(2, imports)))
    assert [(i.module, i.name, i.kind) for i in m.imports] == [
        ("m", "f", KIND_FUNC), ("m", "t", KIND_TABLE), ("m", "mem", KIND_MEM),
        ("m", "g", KIND_GLOBAL), ("ünï", "", KIND_GLOBAL)]
    assert [i.desc for i in m.imports] == [
        0, TableType(FUNCREF, Limits(1, 10)), MemType(Limits(2)), GlobalType(I64, True),
        GlobalType(EXTERNREF, False)]


@pytest.mark.parametrize("desc, message", [
    (b"\x04\x00", "malformed import kind"),
    (b"\x03\x7f\x02", "malformed mutability"),
    (b"\x01\x7f\x00\x00", "malformed reference type"),
    (b"\x02\x02\x00", "integer too large"),
    (b"\x02\x81\x00\x00", "integer representation too long"),
])
def test_import_errors(desc: bytes, message: str) -> None:
    data = module(section(2, vec([name("a") + name("b") + desc])))
    assert malformed_message(data).startswith(message)


def test_import_name_must_be_utf8() -> None:
    data = module(section(2, vec([b"\x01\xff" + name("b") + b"\x00\x00"])))
    assert malformed_message(data).startswith("malformed UTF-8 encoding")


def test_module_sections_from_wat() -> None:
    data = wasmtime.wat2wasm("""
      (module
        (type $t (func (param i32) (result i32)))
        (func $f (export "f") (type $t) (local i64 i64) (local f32) local.get 0)
        (func $g (param f64))
        (table $tab 2 20 funcref)
        (table externref (elem))
        (memory (export "mem") 1 2)
        (global $gl (mut i32) (i32.const -1))
        (global f64 (f64.const 1.5))
        (export "g" (global $gl))
        (start $g2)
        (func $g2)
        (data (i32.const 8) "hi")
        (data "passive"))
    """)
    m = decode_module(data)
    assert m.types[0] == FuncType((I32,), (I32,))
    assert [f.type_index for f in m.funcs][0] == 0
    f = m.funcs[0]
    assert f.locals == [I64, I64, F32]
    assert f.body[0][:2] == (op.LOCAL_GET, 0) and f.body[-1][:2] == (op.END, None)
    assert m.tables == [TableType(FUNCREF, Limits(2, 20)), TableType(EXTERNREF, Limits(0, 0))]
    assert m.mems == [MemType(Limits(1, 2))]
    assert m.globals[0].type == GlobalType(I32, True)
    assert m.globals[0].init[0][:2] == (op.I32_CONST, 0xFFFFFFFF)
    bits = struct.unpack("<Q", struct.pack("<d", 1.5))[0]
    assert m.globals[1].init[0][:2] == (op.F64_CONST, bits)
    assert [(e.name, e.kind, e.index) for e in m.exports] == [
        ("f", KIND_FUNC, 0), ("mem", KIND_MEM, 0), ("g", KIND_GLOBAL, 0)]
    assert m.start == 2
    assert m.datas[0].mode == MODE_ACTIVE and m.datas[0].init == b"hi"
    assert m.datas[0].offset[0][:2] == (op.I32_CONST, 8) and m.datas[0].memory == 0
    assert m.datas[1].mode == MODE_PASSIVE and m.datas[1].init == b"passive"


def test_offsets_are_module_absolute() -> None:
    data = func_module(b"\x41\x05\x1a\x0b")
    m = decode_module(data)
    f = m.funcs[0]
    assert data[f.offset] == 0x00  # the locals vector
    assert [data[o] for _, _, o in f.body] == [0x41, 0x1A, 0x0B]
    assert [o - f.offset for _, _, o in f.body] == [1, 3, 4]


def test_locals_are_expanded() -> None:
    locals_ = vec([uleb(2) + bytes([I32]), uleb(0) + bytes([F64]), uleb(3) + bytes([EXTERNREF])])
    f = decode_module(func_module(b"\x0b", locals_)).funcs[0]
    assert f.locals == [I32, I32, EXTERNREF, EXTERNREF, EXTERNREF]


@pytest.mark.parametrize("counts", [[MAX_FUNCTION_LOCALS + 1], [2**32 - 1, 2], [2**30] * 4])
def test_too_many_locals(counts: list[int]) -> None:
    locals_ = vec([uleb(n) + bytes([I32]) for n in counts])
    assert malformed_message(func_module(b"\x0b", locals_)).startswith("too many locals")


def test_locals_budget_is_shared_by_the_module() -> None:
    entry = uleb(MAX_FUNCTION_LOCALS) + bytes([I32])
    code = b"\x01" + entry + b"\x0b"
    n = 40
    data = module(section(1, vec([b"\x60\x00\x00"])), section(3, vec([b"\x00"] * n)),
                  section(10, vec([uleb(len(code)) + code] * n)))
    assert malformed_message(data).startswith("too many locals")


def test_function_and_code_lengths() -> None:
    no_code = module(VOID_TYPE, section(3, vec([b"\x00"])))
    assert malformed_message(no_code).startswith(
        "function and code section have inconsistent lengths")
    no_funcs = module(section(10, vec([b"\x02\x00\x0b"])))
    assert malformed_message(no_funcs).startswith(
        "function and code section have inconsistent lengths")


def test_function_body_size_must_match() -> None:
    code = b"\x00\x0b"
    data = module(VOID_TYPE, section(3, vec([b"\x00"])),
                  section(10, vec([uleb(len(code) + 1) + code + b"\x01"])))
    assert malformed_message(data).startswith("section size mismatch")


def _elem_module(segment: bytes) -> bytes:
    return module(VOID_TYPE, section(3, vec([b"\x00"])), section(4, vec([b"\x70\x00\x01"])),
                  section(9, vec([segment])), section(10, vec([b"\x02\x00\x0b"])))


OFFSET_EXPR = b"\x41\x02\x0b"
REF_FUNC_EXPR = b"\xd2\x00\x0b"
REF_NULL_EXPR = b"\xd0\x6f\x0b"


@pytest.mark.parametrize("segment, mode, table, elem_type, has_offset", [
    (b"\x00" + OFFSET_EXPR + vec([b"\x00"]), MODE_ACTIVE, 0, FUNCREF, True),
    (b"\x01\x00" + vec([b"\x00"]), MODE_PASSIVE, 0, FUNCREF, False),
    (b"\x02\x03" + OFFSET_EXPR + b"\x00" + vec([b"\x00"]), MODE_ACTIVE, 3, FUNCREF, True),
    (b"\x03\x00" + vec([b"\x00"]), MODE_DECLARATIVE, 0, FUNCREF, False),
    (b"\x04" + OFFSET_EXPR + vec([REF_FUNC_EXPR]), MODE_ACTIVE, 0, FUNCREF, True),
    (b"\x05\x6f" + vec([REF_NULL_EXPR]), MODE_PASSIVE, 0, EXTERNREF, False),
    (b"\x06\x01" + OFFSET_EXPR + b"\x70" + vec([REF_FUNC_EXPR]), MODE_ACTIVE, 1, FUNCREF, True),
    (b"\x07\x70" + vec([REF_FUNC_EXPR]), MODE_DECLARATIVE, 0, FUNCREF, False),
])
def test_element_segment_encodings(segment: bytes, mode: int, table: int, elem_type: int,
                                   has_offset: bool) -> None:
    data = _elem_module(segment)
    (elem,) = decode_module(data).elems
    assert (elem.mode, elem.table, elem.type) == (mode, table, elem_type)
    if has_offset:
        assert [i[:2] for i in elem.offset] == [(op.I32_CONST, 2), (op.END, None)]
    else:
        assert elem.offset is None
    (expr,) = elem.init
    if elem_type == EXTERNREF:
        assert [i[:2] for i in expr] == [(op.REF_NULL, EXTERNREF), (op.END, None)]
    else:
        assert [i[:2] for i in expr] == [(op.REF_FUNC, 0), (op.END, None)]
        assert data[expr[0][2]] in (0x00, 0xD2)  # the funcidx, or the ref.func opcode


def test_funcidx_elements_point_at_their_index() -> None:
    data = _elem_module(b"\x01\x00" + vec([b"\x00", uleb(300), b"\x07"]))
    init = decode_module(data).elems[0].init
    assert [e[0][1] for e in init] == [0, 300, 7]
    assert all(e[0][2] == e[1][2] for e in init)
    assert data[init[1][0][2]:init[1][0][2] + 2] == uleb(300)


@pytest.mark.parametrize("segment, message", [
    (b"\x08" + OFFSET_EXPR + vec([]), "malformed elements segment kind"),
    (b"\x01\x01" + vec([]), "malformed element kind"),
    (b"\x05\x7f" + vec([]), "malformed reference type"),
])
def test_element_errors(segment: bytes, message: str) -> None:
    assert malformed_message(_elem_module(segment)).startswith(message)


def test_data_segments() -> None:
    datas = vec([b"\x00" + OFFSET_EXPR + name("ab"), b"\x01" + name("cd"),
                 b"\x02\x01" + OFFSET_EXPR + name("")])
    m = decode_module(module(section(5, vec([b"\x00\x01"])), section(12, uleb(3)),
                             section(11, datas)))
    assert m.data_count == 3
    assert [(d.init, d.mode, d.memory) for d in m.datas] == [
        (b"ab", MODE_ACTIVE, 0), (b"cd", MODE_PASSIVE, 0), (b"", MODE_ACTIVE, 1)]
    assert m.datas[1].offset is None


def test_data_errors() -> None:
    assert malformed_message(module(section(11, vec([b"\x03"])))).startswith(
        "malformed data segment kind")
    mismatch = module(section(12, uleb(2)), section(11, vec([b"\x01\x00"])))
    assert malformed_message(mismatch).startswith(
        "data count and data section have inconsistent lengths")
    for body in (b"\x41\x00\x41\x00\x41\x00\xfc\x08\x00\x00\x0b", b"\xfc\x09\x00\x0b"):
        data = func_module(body, extra=(section(5, vec([b"\x00\x01"])),))
        assert malformed_message(data).startswith("data count section required")


# -- instructions -------------------------------------------------------------------------------

def test_immediates_from_wat() -> None:
    data = wasmtime.wat2wasm("""
      (module
        (type $t (func (param i32) (result i32)))
        (memory 1) (table 2 funcref) (table $e 1 externref)
        (elem $seg func 0) (data $d "x")
        (func (param i32) (result i32)
          (block $b (result i32)
            (br_table 0 0 $b (i32.const 0))
            drop
            (br_if $b (i32.const -7) (i32.const 1)))
          drop
          (i64.const -2) drop
          (f32.const -0.5) drop
          (call_indirect (type $t) (i32.const 0) (i32.const 1))
          (select (result i64) (i64.const 1) (i64.const 2) (i32.const 0)) drop
          (i32.load16_u offset=40 align=1 (i32.const 0)) drop
          memory.size drop
          (memory.grow (i32.const 1)) drop
          (ref.null extern) drop
          (ref.func 0) drop
          (memory.init $d (i32.const 0) (i32.const 0) (i32.const 0))
          (data.drop $d)
          (memory.copy (i32.const 0) (i32.const 0) (i32.const 0))
          (memory.fill (i32.const 0) (i32.const 0) (i32.const 0))
          (table.init 0 $seg (i32.const 0) (i32.const 0) (i32.const 0))
          (elem.drop $seg)
          (table.copy $e $e (i32.const 0) (i32.const 0) (i32.const 0))
          (table.size $e) drop
          (i32.trunc_sat_f64_u (f64.const 1)) drop
          (if (result i32) (local.get 0) (then (i32.const 1)) (else (i32.const 2)))))
    """)
    body = [(code, imm) for code, imm, _ in decode_module(data).funcs[0].body]

    def imm_of(code: int, nth: int = 0) -> object:
        return [imm for c, imm in body if c == code][nth]

    assert imm_of(op.BLOCK) == -1  # i32 result: 0x7F read as signed 7-bit
    assert imm_of(op.BR_TABLE) == ((0, 0), 0)
    assert imm_of(op.I32_CONST, 1) == 0xFFFFFFF9
    assert imm_of(op.BR_IF) == 0
    assert imm_of(op.I64_CONST) == 2**64 - 2
    assert imm_of(op.F32_CONST) == struct.unpack("<I", struct.pack("<f", -0.5))[0]
    assert imm_of(op.CALL_INDIRECT) == (0, 0)
    assert imm_of(op.SELECT_T) == (I64,)
    assert imm_of(op.I32_LOAD16_U) == (0, 40)
    assert imm_of(op.MEMORY_SIZE) is None and imm_of(op.MEMORY_GROW) is None
    assert imm_of(op.REF_NULL) == EXTERNREF
    assert imm_of(op.REF_FUNC) == 0
    assert imm_of(op.MEMORY_INIT) == 0 and imm_of(op.DATA_DROP) == 0
    assert imm_of(op.MEMORY_COPY) is None and imm_of(op.MEMORY_FILL) is None
    assert imm_of(op.TABLE_INIT) == (0, 0) and imm_of(op.ELEM_DROP) == 0
    assert imm_of(op.TABLE_COPY) == (1, 1) and imm_of(op.TABLE_SIZE) == 1
    assert imm_of(op.I32_TRUNC_SAT_F64_U) is None
    assert imm_of(op.IF) == -1
    assert [c for c, _ in body[-5:]] == [op.I32_CONST, op.ELSE, op.I32_CONST, op.END, op.END]


@pytest.mark.parametrize("blocktype, expected", [
    (b"\x40", BLOCK_EMPTY), (b"\x7f", I32 - 0x80), (b"\x7b", V128 - 0x80),
    (b"\x6f", EXTERNREF - 0x80), (b"\x05", 5), (uleb(1000), 1000), (sleb(2**32 - 1), 2**32 - 1),
])
def test_block_types(blocktype: bytes, expected: int) -> None:
    body = body_of(func_module(b"\x02" + blocktype + b"\x0b\x0b"))
    assert body[0][:2] == (op.BLOCK, expected)


@pytest.mark.parametrize("blocktype, message", [
    (b"\x41", "malformed value type"),
    (b"\xff\x7f", "malformed block type"),
    (sleb(2**32), "integer too large"),
])
def test_block_type_errors(blocktype: bytes, message: str) -> None:
    assert malformed_message(func_module(b"\x02" + blocktype + b"\x0b\x0b")).startswith(message)


@pytest.mark.parametrize("body, message", [
    (b"\x05\x0b", "END opcode expected"),
    (b"\x02\x40\x05\x0b\x0b", "END opcode expected"),
    (b"\x41\x00\x04\x40\x05\x05\x0b\x0b", "END opcode expected"),
    (b"\x0a\x0b", "illegal opcode"),
    (b"\xfc\x12\x0b", "illegal opcode"),
    (b"\xfd\x9a\x01\x0b", "illegal opcode"),
    (b"\xfd\x80\x80\x80\x80\x10\x0b", "integer too large"),
    (b"\x41\x00\x28\x20\x00\x1a\x0b", "malformed memop flags"),
    (b"\x3f\x01\x1a\x0b", "zero byte expected"),
    (b"\x41\x00\x40\x80\x00\x1a\x0b", "zero byte expected"),
    (b"\xfc\x0a\x00\x01\x0b", "zero byte expected"),
    (b"\xfc\x0b\x01\x0b", "zero byte expected"),
    (b"\xd0\x7f\x0b", "malformed reference type"),
    (b"\x1c\x01\x00\x0b", "malformed value type"),
    (b"\x0e\xff\xff\xff\xff\x0f\x0b", "length out of bounds"),
    (b"\x41\x80\x80\x80\x80\x80\x00\x0b", "integer representation too long"),
    (b"\x42\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02\x0b", "integer too large"),
    (b"\x02\x40\x0b", "unexpected end of section or function"),
    (b"\x43\x00\x00", "unexpected end of section or function"),
])
def test_instruction_errors(body: bytes, message: str) -> None:
    data = func_module(body, extra=(section(5, vec([b"\x00\x01"])),))
    assert malformed_message(data).startswith(message)


def test_truncated_float_constant_is_unexpected_end() -> None:
    data = HEADER + b"\x06\x06\x01\x7d\x00\x43\x00\x00"
    assert malformed_message(data).startswith("unexpected end")


def test_simd_table_matches_wat2wasm() -> None:
    assert len(SIMD_NAMES) == 236
    for code, mnemonic in SIMD_NAMES.items():
        imm = {"v128": " i64x2 0 0", "shuffle": " 0" * 16, "lane": " 0",
               "memarg_lane": " 0"}.get(SIMD_IMM[code], "")
        data = wasmtime.wat2wasm(f"(module (memory 1) (func {mnemonic}{imm}))")
        assert body_of(data)[0][0] == code, mnemonic


def test_simd_immediates() -> None:
    data = wasmtime.wat2wasm("""
      (module (memory 1)
        (func
          (v128.const i32x4 1 2 3 0x80000000)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 31)
          (i16x8.extract_lane_u 7) drop
          (v128.load offset=16 align=4 (i32.const 0)) drop
          (v128.load32_lane offset=8 2 (i32.const 0) (v128.const i64x2 0 0)) drop
          (v128.store (i32.const 0) (i8x16.splat (i32.const 3)))))
    """)
    body = [(code, imm) for code, imm, _ in body_of(data)]
    assert body[0] == (op.FD + 12, 1 | 2 << 32 | 3 << 64 | 0x80000000 << 96)
    assert body[1] == (op.FD + 13, tuple(range(15)) + (31,))
    assert body[2] == (op.FD + 25, 7)
    assert body[5] == (op.FD + 0, (2, 16))
    assert body[9] == (op.FD + 86, (2, 8, 2))
    assert body[14] == (op.FD + 11, (4, 0))


# -- the name section -------------------------------------------------------------------------

def test_function_names_from_wat() -> None:
    data = wasmtime.wat2wasm(
        '(module (import "a" "b" (func $imp)) (func $foo (local $x i32)) (func) (func $bar))')
    assert decode_module(data).func_names == {0: "imp", 1: "foo", 3: "bar"}


def _names(func_sub: bytes, *others: bytes) -> bytes:
    return b"".join(others) + b"\x01" + uleb(len(func_sub)) + func_sub


@pytest.mark.parametrize("content", [
    _names(vec([b"\x00" + name("a")]) + b"\x00"),  # subsection too long for its contents
    _names(vec([b"\x00\x02\xc3\x28"])),  # bad UTF-8
    _names(vec([b"\x00" + name("a")]), b"\x02\x01\x00")[:-1],  # truncated
    b"\x01\x7f" + vec([]),  # size out of bounds
    _names(vec([]), b"\x01\x01\x00"),  # duplicate subsection
])
def test_malformed_name_section_is_ignored(content: bytes) -> None:
    assert parse_function_names(content) == {}
    m = decode_module(module(section(0, name("name") + content)))
    assert m.func_names == {} and m.customs[0][0] == "name"


def test_name_section_with_other_subsections() -> None:
    content = b"\x00\x02\x01m" + _names(vec([b"\x00" + name("a"), b"\x05" + name("é")]))
    content += b"\x02\x01\x00"
    assert parse_function_names(content) == {0: "a", 5: "é"}


# -- the spec suite -----------------------------------------------------------------------------

def _spec_commands() -> list[tuple[Path, dict]]:
    out = []
    for path in spec_suite.spec_files():
        for command in json.loads(path.read_text())["commands"]:
            if "filename" in command and command.get("module_type", "binary") == "binary":
                out.append((path.parent / command["filename"], command))
    return out


# Modules that the JSON files call invalid but that, as binaries, are malformed first: they use
# memory.init/data.drop without a data count section (see the suite's README).
_MALFORMED_BEFORE_INVALID = {"memory_init.4.wasm", "memory_init.9.wasm"}


@pytest.fixture(scope="module")
def spec_commands() -> list[tuple[Path, dict]]:
    if spec_suite.suite_dir() is None:
        if spec_suite.required():
            pytest.fail(spec_suite.missing_reason())
        pytest.skip(spec_suite.missing_reason())
    return _spec_commands()


def test_spec_binary_malformed_modules(spec_commands: list[tuple[Path, dict]]) -> None:
    total = matched = 0
    wrong = []
    for wasm, command in spec_commands:
        if command["type"] != "assert_malformed":
            continue
        total += 1
        try:
            decode_module(wasm.read_bytes())
        except MalformedError as e:
            if str(e).startswith(command["text"]):
                matched += 1
            else:
                wrong.append((wasm.name, command["text"], str(e)))
        else:
            wrong.append((wasm.name, command["text"], "decoded"))
    assert total > 700
    assert not wrong, wrong[:20]
    assert matched == total


def test_spec_modules_decode(spec_commands: list[tuple[Path, dict]]) -> None:
    failures = []
    decoded = 0
    for wasm, command in spec_commands:
        if command["type"] == "assert_malformed":
            continue
        try:
            decode_module(wasm.read_bytes())
            decoded += 1
        except MalformedError as e:
            if wasm.name not in _MALFORMED_BEFORE_INVALID:
                failures.append((wasm.name, command["type"], str(e)))
            elif not str(e).startswith("data count section required"):
                failures.append((wasm.name, command["type"], str(e)))
    assert decoded > 3000
    assert not failures, failures[:20]
