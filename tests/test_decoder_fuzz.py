"""Property tests: whatever the bytes, the decoder returns a Module or raises MalformedError,
quickly and in bounded memory."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vm.binary import decode_module
from vm.binary import opcodes as op
from vm.errors import MalformedError
from vm.structure import Module

HEADER = b"\x00asm\x01\x00\x00\x00"
U32_MAX = b"\xff\xff\xff\xff\x0f"

# Every example must be fast; the largest input here is a few KiB.
SECONDS_PER_EXAMPLE = 0.5
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

SEED_WATS = [
    """(module
      (type $t (func (param i32 i64) (result i32)))
      (import "env" "f" (func $imp (param i32)))
      (import "env" "mem" (memory 1 2))
      (import "env" "g" (global $ig (mut i64)))
      (import "env" "tab" (table 1 funcref))
      (global $g (mut i32) (i32.const 42))
      (global f64 (f64.const -0.0))
      (table $t2 3 10 externref)
      (elem (i32.const 0) $f)
      (elem $p funcref (ref.func $f) (ref.null func))
      (elem declare func $f)
      (data (i32.const 16) "hello")
      (data $d "passive")
      (export "f" (func $f))
      (export "g" (global $g))
      (start $s)
      (func $s)
      (func $f (type $t) (local $x f32) (local i64 i64)
        (block $out (result i32)
          (loop $l
            (br_table $out $l $out (i32.const 1) (local.get 0)))
          (i32.const 0))
        (if (result i32) (i32.eqz (local.get 0))
          (then (i32.load offset=8 (i32.const 4)))
          (else (i32.const -123456)))
        (i64.store32 align=2 (i32.const 0) (i64.const -9000000000))
        (memory.init $d (i32.const 0) (i32.const 0) (i32.const 1))
        (data.drop $d)
        (table.init $t2 $p (i32.const 0) (i32.const 0) (i32.const 0))
        (select (result f32) (f32.const 1.5) (local.get $x) (i32.const 1)) drop
        (call_indirect (type $t) (i32.const 1) (i64.const 2) (i32.const 0)) drop
        (i32.trunc_sat_f64_s (f64.const 3.25)) drop
        (drop (memory.grow (i32.const 0)))
        i32.add))""",
    """(module (memory 1)
      (func (export "simd") (param i32) (result v128)
        (v128.const i32x4 1 2 3 4)
        (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 (v128.load offset=4 (local.get 0)))
        (i32x4.replace_lane 2 (i32.const 9))
        (v128.load16_lane 3 (local.get 0))
        (i16x8.add (v128.const i16x8 1 2 3 4 5 6 7 8))))""",
    """(module
      (func $fac (export "fac") (param i64) (result i64)
        (if (result i64) (i64.eqz (local.get 0))
          (then (i64.const 1))
          (else (i64.mul (local.get 0) (call $fac (i64.sub (local.get 0) (i64.const 1))))))))""",
]
SEEDS = [wasmtime.wat2wasm(w) for w in SEED_WATS]


def check(data: bytes) -> Module | None:
    """Decode, allowing only MalformedError; check the shape of any successful result."""
    start = time.perf_counter()
    try:
        module = decode_module(data)
    except MalformedError:
        module = None
    assert time.perf_counter() - start < SECONDS_PER_EXAMPLE
    if module is not None:
        for func in module.funcs:
            offsets = [off for _, _, off in func.body]
            assert func.body[-1][0] == op.END
            assert offsets == sorted(set(offsets)) and offsets[-1] < len(data)
    return module


def test_seeds_decode() -> None:
    for seed in SEEDS:
        assert check(seed) is not None


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_after_header(data: bytes) -> None:
    check(HEADER + data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 12), st.binary(max_size=40)), max_size=8))
def test_random_well_framed_sections(sections: list[tuple[int, bytes]]) -> None:
    data = HEADER + b"".join(bytes([i, len(p)]) + p for i, p in sections)
    check(data)


@FUZZ
@given(st.binary(max_size=120))
def test_random_function_bodies(body: bytes) -> None:
    code = b"\x00" + body + b"\x0b"
    size = bytes([len(code)]) if len(code) < 128 else bytes([len(code) & 0x7F | 0x80, 1])
    data = (HEADER + b"\x01\x04\x01\x60\x00\x00" + b"\x03\x02\x01\x00" + b"\x05\x03\x01\x00\x01"
            + b"\x0c\x01\x01" + b"\x0a" + bytes([len(code) + len(size) + 1]) + b"\x01"
            + size + code)
    check(data)


def test_every_truncation_of_the_seeds() -> None:
    for seed in SEEDS:
        decoded = [n for n in range(len(seed)) if check(seed[:n]) is not None]
        # Only cuts between sections that leave no function without its code can decode.
        assert 8 in decoded and len(decoded) <= 4


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                        min_size=1, max_size=6))
def test_byte_mutations(seed: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for where, value in edits:
        data[8 + where % (len(data) - 8)] = value
    check(bytes(data))


LEBS = st.sampled_from([b"\x80" * 6 + b"\x00", b"\xff" * 11 + b"\x7f", b"\x80" * 4 + b"\x10",
                        b"\xff" * 4 + b"\x7f", U32_MAX, b"\xff" * 9 + b"\x01", b"\x80" * 200])


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 10**6), LEBS, st.booleans())
def test_huge_leb128s(seed: bytes, where: int, leb: bytes, replace: bool) -> None:
    i = 8 + where % (len(seed) - 8)
    data = seed[:i] + leb + seed[i + 1 if replace else i:]
    check(data)


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 10**6))
def test_absurd_count_anywhere(seed: bytes, where: int) -> None:
    i = 8 + where % (len(seed) - 8)
    check(seed[:i] + U32_MAX + seed[i + 1:])


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id, len(payload)]) + payload


ONE_FUNC = _section(1, b"\x01\x60\x00\x00") + _section(3, b"\x01\x00")

ABSURD = {
    "types": _section(1, U32_MAX + b"\x60\x00\x00"),
    "params": _section(1, b"\x01\x60" + U32_MAX + b"\x7f"),
    "imports": _section(2, U32_MAX + b"\x01a\x01b\x00\x00"),
    "import name": _section(2, b"\x01" + U32_MAX + b"ab"),
    "functions": _section(3, U32_MAX + b"\x00"),
    "tables": _section(4, U32_MAX + b"\x70\x00\x00"),
    "memories": _section(5, U32_MAX + b"\x00\x00"),
    "globals": _section(6, U32_MAX + b"\x7f\x00\x41\x00\x0b"),
    "exports": _section(7, U32_MAX + b"\x01a\x00\x00"),
    "elements": _section(9, U32_MAX + b"\x01\x00\x00"),
    "element items": _section(9, b"\x01\x01\x00" + U32_MAX + b"\x00"),
    "element exprs": _section(9, b"\x01\x05\x70" + U32_MAX + b"\xd2\x00\x0b"),
    "data": _section(11, U32_MAX + b"\x01\x00"),
    "data bytes": _section(11, b"\x01\x01" + U32_MAX + b"abc"),
    "custom name": _section(0, U32_MAX + b"abc"),
    "section size": b"\x01" + U32_MAX + b"\x00",
    "codes": ONE_FUNC + _section(10, U32_MAX + b"\x02\x00\x0b"),
    "body size": ONE_FUNC + _section(10, b"\x01" + U32_MAX + b"\x00\x0b"),
    "local runs": ONE_FUNC + _section(10, b"\x01\x07" + U32_MAX + b"\x01\x7f\x0b"),
    "locals": ONE_FUNC + _section(10, b"\x01\x08\x01" + U32_MAX + b"\x7f\x0b"),
    "br_table": ONE_FUNC + _section(10, b"\x01\x09\x00\x0e" + U32_MAX + b"\x00\x0b"),
    "select_t": ONE_FUNC + _section(10, b"\x01\x09\x00\x1c" + U32_MAX + b"\x7f\x0b"),
}


@pytest.mark.parametrize("where", sorted(ABSURD))
def test_absurd_counts_fail_fast_in_bounded_memory(where: str) -> None:
    data = HEADER + ABSURD[where]
    tracemalloc.start()
    try:
        assert check(data) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, where


def test_deep_nesting_needs_no_recursion() -> None:
    depth = 200_000
    body = b"\x00" + b"\x02\x40" * depth + b"\x0b" * (depth + 1)
    size = len(body)
    leb = bytes([size & 0x7F | 0x80, (size >> 7) & 0x7F | 0x80, size >> 14])
    code = b"\x01" + leb + body
    code_leb = len(code)
    sec = bytes([code_leb & 0x7F | 0x80, (code_leb >> 7) & 0x7F | 0x80, code_leb >> 14])
    data = HEADER + ONE_FUNC + b"\x0a" + sec + code
    module = decode_module(data)
    assert len(module.funcs[0].body) == 2 * depth + 1
    with pytest.raises(MalformedError, match="^unexpected end"):
        decode_module(data[:-1])
