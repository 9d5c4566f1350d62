"""Tests of SIMD execution: vm.execution.simd and its translation (the simd_* spec files run
in tests/test_spec.py with the others).

* A differential test against wasmtime: one module holds, for every SIMD instruction (and every
  lane immediate of the lane instructions), a batch function that applies it to records in
  memory. dwasm and wasmtime run the same binary on the same records and the results are compared
  lane by lane: bit for bit, except that a NaN lane of a float result only has to be an
  arithmetic NaN, and a canonical one when no operand lane was a non-canonical NaN.
* The v128 loads and stores, including their bounds checks, against wasmtime.
* The inline closures of the translator against the instruction functions.
* Hand-checked cases of the trickier lane semantics, and the embedding API for v128 values.
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable, Sequence

import pytest
import wasmtime
from test_numerics import EDGES, RANDOM

import vm
from vm.binary import opcodes
from vm.errors import TrapError
from vm.execution import simd, simd_translate
from vm.structure import F32, F64, I32, I64, V128, FuncType
from vm.validation.simd import LANE, SIMPLE

M128 = (1 << 128) - 1

# --- operands -------------------------------------------------------------------------------------

_SCALAR = {I32: "i32", I64: "i64", F32: "f32", F64: "f64"}
_LANE_TYPES = ("i8", "i16", "i32", "i64", "f32", "f64")


def _int_lane(rng: random.Random, width: int) -> int:
    mask = (1 << width) - 1
    pick = rng.randrange(4)
    if pick == 0:
        return rng.getrandbits(width)
    if pick == 1:
        return rng.randint(-3, 3) & mask
    if pick == 2:  # the signed and unsigned bounds, and next to them
        return ((1 << (width - 1)) + rng.randint(-2, 2)) & mask
    return (1 << rng.randrange(width)) + rng.randint(-1, 1) & mask


def _lane(rng: random.Random, lane_type: str) -> int:
    if lane_type in ("f32", "f64"):
        if rng.random() < 0.5:
            return rng.choice(EDGES[lane_type])
        return RANDOM[lane_type](rng)
    if lane_type in ("i32", "i64") and rng.random() < 0.3:
        return rng.choice(EDGES[lane_type])
    return _int_lane(rng, int(lane_type[1:]))


def random_v128(rng: random.Random) -> int:
    """A vector of one lane type's edge and random values (or 128 random bits)."""
    if rng.random() < 0.1:
        return rng.getrandbits(128)
    lane_type = rng.choice(_LANE_TYPES)
    width = int(lane_type[1:])
    return sum(_lane(rng, lane_type) << i for i in range(0, 128, width))


def random_scalar(rng: random.Random, valtype: str) -> int:
    """A scalar operand's bits; i32 values are often small, as shift counts are."""
    if valtype == "i32" and rng.random() < 0.4:
        return rng.randrange(140)
    return _lane(rng, valtype)


# --- the reference module -------------------------------------------------------------------------
# A record is three v128 operands, a scalar operand (8 bytes, padded to 16) and the result.

RECORD = 80
RESULT = 64
N_CASES = 300
_SHUFFLES = [tuple(range(16)), tuple(range(31, 15, -1)), (0,) * 16,
             (0, 17, 2, 19, 4, 21, 6, 23, 8, 25, 10, 27, 12, 29, 14, 31),
             (3, 30, 7, 16, 1, 28, 9, 9, 15, 16, 31, 0, 20, 5, 11, 24)]


class Case:
    """One batch function: an instruction with its immediate, and its operand/result types."""

    def __init__(self, name: str, imm: str, params: Sequence[int], result: int) -> None:
        self.name = name
        self.imm = imm
        self.params = [_SCALAR.get(t, "v128") for t in params]
        self.result = _SCALAR.get(result, "v128")
        self.export = f"{name} {imm}".strip()

    def wat(self) -> str:
        loads = []
        vectors = 0
        for t in self.params:
            if t == "v128":
                loads.append(f"(v128.load offset={16 * vectors} (local.get $p))")
                vectors += 1
            else:
                loads.append(f"({t}.load offset=48 (local.get $p))")
        op = f"({self.name} {self.imm} {' '.join(loads)})"
        return f"""
  (func (export "{self.export}") (param $n i32) (local $p i32) (local $end i32)
    (local.set $end (i32.mul (local.get $n) (i32.const {RECORD})))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        ({self.result}.store offset={RESULT} (local.get $p) {op})
        (local.set $p (i32.add (local.get $p) (i32.const {RECORD})))
        (br $next))))"""


def _cases() -> list[Case]:
    cases = []
    for code, name in sorted(opcodes.SIMD_NAMES.items()):
        if code in SIMPLE:
            params, results = SIMPLE[code]
            cases.append(Case(name, "", params, results[0]))
        elif code in LANE:
            count, params, results = LANE[code]
            for lane in sorted({0, 1, count - 1}):
                cases.append(Case(name, str(lane), params, results[0]))
        elif name == "i8x16.shuffle":
            for lanes in _SHUFFLES:
                cases.append(Case(name, " ".join(map(str, lanes)), [V128, V128], V128))
    return cases


CASES = _cases()


def _module(cases: Sequence[Case]) -> bytes:
    pages = -(-N_CASES * RECORD // 65536)
    text = f'(module (memory (export "memory") {pages}) {"".join(c.wat() for c in cases)})'
    return bytes(wasmtime.wat2wasm(text))


class Engines:
    """The same module instantiated in wasmtime and in dwasm."""

    def __init__(self, binary: bytes) -> None:
        engine = wasmtime.Engine()
        self.store = wasmtime.Store(engine)
        instance = wasmtime.Instance(self.store, wasmtime.Module(engine, binary), [])
        self.theirs = instance.exports(self.store)
        self.ours = vm.instantiate(vm.Store(), vm.load(binary), {})

    def run(self, export: str, records: bytes, n: int) -> tuple[bytes, bytes]:
        """Both engines' memory after running ``export`` over ``n`` records."""
        memory = self.theirs["memory"]
        memory.write(self.store, records, 0)
        self.theirs[export](self.store, n)
        theirs = bytes(memory.read(self.store, 0, len(records)))
        data = self.ours.exports["memory"].data
        data[:len(records)] = records
        self.ours.invoke(export, [n])
        return bytes(data[:len(records)]), theirs


@pytest.fixture(scope="module")
def engines() -> Engines:
    return Engines(_module(CASES))


def _records(case: Case, rng: random.Random) -> bytes:
    data = bytearray(N_CASES * RECORD)
    for k in range(N_CASES):
        base = k * RECORD
        vectors = 0
        for t in case.params:
            if t == "v128":
                struct.pack_into("16s", data, base + 16 * vectors,
                                 random_v128(rng).to_bytes(16, "little"))
                vectors += 1
            else:
                struct.pack_into("<Q", data, base + 48, random_scalar(rng, t))
        # Some records repeat an operand, so that equal lanes (eq, min, pmin of +-0) are common.
        if vectors >= 2 and rng.random() < 0.2:
            data[base + 16:base + 32] = data[base:base + 16]
    return bytes(data)


# --- comparing results ----------------------------------------------------------------------------

_FLOAT_RESULT = re.compile(r"^(f32x4|f64x2)\.(?!eq|ne|lt|gt|le|ge)|^f(32|64)x\d\.extract_lane")
_EXACT = re.compile(r"\.(abs|neg|pmin|pmax|splat|extract_lane|replace_lane)$|^f..x.\.extract")


def _result_lane_type(case: Case) -> str | None:
    """The float lane type of a result whose NaN lanes may differ in payload, or None."""
    if _EXACT.search(case.name) or not _FLOAT_RESULT.search(case.name):
        return None
    return case.name[:3]


def _operand_lane_type(case: Case) -> str:
    """The float lane type of the operands, for the canonical-NaN rule."""
    source = re.search(r"_(f32x4|f64x2)", case.name)
    return (source.group(1) if source else case.name)[:3]


def _lanes(data: bytes, lane_type: str) -> list[int]:
    width = 4 if lane_type == "f32" else 8
    return [int.from_bytes(data[i:i + width], "little") for i in range(0, len(data), width)]


def _is_nan(bits: int, lane_type: str) -> bool:
    if lane_type == "f32":
        return bits & 0x7F800000 == 0x7F800000 and bits & 0x7FFFFF != 0
    return bits & 0x7FF0000000000000 == 0x7FF0000000000000 and bits & (1 << 52) - 1 != 0


def _is_canonical(bits: int, lane_type: str) -> bool:
    return bits & (0x7FFFFFFF if lane_type == "f32" else (1 << 63) - 1) == (
        0x7FC00000 if lane_type == "f32" else 0x7FF8000000000000)


def _is_arithmetic(bits: int, lane_type: str) -> bool:
    quiet = 0x7FC00000 if lane_type == "f32" else 0x7FF8000000000000
    return bits & quiet == quiet


def _check_record(case: Case, record: bytes, mine: bytes, theirs: bytes) -> None:
    where = f"{case.export} on {record[:56].hex()}"
    lane_type = _result_lane_type(case)
    if lane_type is None:
        assert mine == theirs, f"{where}: ours {mine.hex()} != wasmtime {theirs.hex()}"
        return
    source = _operand_lane_type(case)
    operands = [lane for t, k in zip(case.params, range(3)) if t == "v128"
                for lane in _lanes(record[16 * k:16 * k + 16], source)]
    canonical_only = all(_is_canonical(x, source) for x in operands if _is_nan(x, source))
    for i, (m, t) in enumerate(zip(_lanes(mine, lane_type), _lanes(theirs, lane_type))):
        if _is_nan(t, lane_type):
            assert _is_arithmetic(m, lane_type), f"{where}: lane {i} {m:#x} is no arithmetic NaN"
            if canonical_only:
                assert _is_canonical(m, lane_type), f"{where}: lane {i} {m:#x} is not canonical"
        else:
            assert m == t, f"{where}: lane {i}: ours {m:#x} != wasmtime {t:#x}"


@pytest.mark.parametrize("case", CASES, ids=[c.export for c in CASES])
def test_instruction_against_wasmtime(engines: Engines, case: Case) -> None:
    rng = random.Random(case.export)
    records = _records(case, rng)
    mine, theirs = engines.run(case.export, records, N_CASES)
    size = 16 if case.result == "v128" else int(case.result[1:]) // 8
    for k in range(N_CASES):
        base = k * RECORD
        result = slice(base + RESULT, base + RESULT + size)
        _check_record(case, records[base:base + RECORD], mine[result], theirs[result])


def test_every_instruction_is_covered() -> None:
    covered = {c.name for c in CASES}
    memory = {n for n in opcodes.SIMD_NAMES.values() if n.startswith("v128.load")
              or n.startswith("v128.store")} | {"v128.const"}
    assert covered | memory == set(opcodes.SIMD_NAMES.values())
    assert {opcodes.BY_NAME[n] for n in covered} == set(simd.OPS)


# --- loads and stores, with their bounds ----------------------------------------------------------

_MEMORY_OPS = [n for n in opcodes.SIMD_NAMES.values()
               if n.startswith(("v128.load", "v128.store"))]
_ADDRESSES = [0, 3, 1000, 65536 - 64, 65536 - 17, 65536 - 16, 65536 - 9, 65536 - 8, 65536 - 5,
              65536 - 4, 65536 - 2, 65536 - 1, 65536, 0xFFFFFFF0, 0xFFFFFFFF]
_OFFSETS = [0, 1, 15, 16, 65535, 65536]


def _memory_wat(name: str, offset: int, lane: int) -> str:
    """(func (param addr)): the instruction at addr; the vector operand and a load's result are
    at 16 and 0; a store writes at addr."""
    lane_imm = f" {lane}" if name.endswith("_lane") else ""
    op = f"{name} offset={offset}{lane_imm} (local.get 0)"
    if name.startswith("v128.store"):
        body = f"({op} (v128.load (i32.const 16)))"
    elif name.endswith("_lane"):
        body = f"(v128.store (i32.const 0) ({op} (v128.load (i32.const 16))))"
    else:
        body = f"(v128.store (i32.const 0) ({op}))"
    return f'(func (export "f") (param i32) {body})'


@pytest.mark.parametrize("name", _MEMORY_OPS)
def test_memory_instruction_against_wasmtime(name: str) -> None:
    rng = random.Random(name)
    count = 128 // int(re.search(r"(\d+)_lane", name).group(1)) if "_lane" in name else 1
    for offset in _OFFSETS:
        lane = rng.randrange(count)
        text = f"(module (memory (export \"memory\") 1) {_memory_wat(name, offset, lane)})"
        e = Engines(bytes(wasmtime.wat2wasm(text)))
        initial = bytes(rng.getrandbits(8) for _ in range(65536))
        for address in _ADDRESSES:
            memory = e.theirs["memory"]
            memory.write(e.store, initial, 0)
            e.ours.exports["memory"].data[:] = initial
            try:
                e.theirs["f"](e.store, address - (address >> 31 << 32))
                theirs: object = bytes(memory.read(e.store, 0, 65536))
            except wasmtime.Trap:
                theirs = "out of bounds memory access"
            try:
                e.ours.invoke("f", [address])
                mine: object = bytes(e.ours.exports["memory"].data)
            except TrapError as trap:
                mine = trap.message
            assert mine == theirs, f"{name} offset={offset} lane={lane} at {address:#x}"


def test_out_of_bounds_lane_access_traps_with_the_spec_message() -> None:
    text = """(module (memory 1)
      (func (export "load") (param i32) (result v128)
        (v128.load32_lane 1 (local.get 0) (v128.const i64x2 0 0)))
      (func (export "store") (param i32)
        (v128.store64_lane 1 (local.get 0) (v128.const i64x2 1 2))))"""
    inst = vm.instantiate(vm.Store(), vm.load(bytes(wasmtime.wat2wasm(text))), {})
    assert inst.invoke("load", [65532]) == [0]
    with pytest.raises(TrapError, match="^out of bounds memory access"):
        inst.invoke("load", [65533])
    with pytest.raises(TrapError, match="^out of bounds memory access"):
        inst.invoke("store", [65529])


# --- the translator's inline closures -------------------------------------------------------------

_INLINE = [*simd_translate.INLINE_BINARY, *simd_translate.INLINE_UNARY]


@pytest.mark.parametrize("name", _INLINE)
def test_inline_closure_matches_function(name: str) -> None:
    rng = random.Random(name)
    code = opcodes.BY_NAME[name]
    fn = simd.OPS[code]
    binary = name in simd_translate.INLINE_BINARY
    factory = simd_translate.INLINE_BINARY_FACTORIES[name] if binary else simd_translate.INLINE_UNARY_FACTORIES[name]
    for _ in range(500):
        args = [random_v128(rng) for _ in range(2)]
        if name.endswith("splat"):
            args[0] &= (1 << (64 if name.startswith("i64") else 32)) - 1
        regs = [*args, None]
        handler = factory(2, 0, 1) if binary else factory(2, 0)
        assert handler(regs, 7) == 8
        assert regs[2] == fn(*args[:2 if binary else 1])


@pytest.mark.parametrize("name", list(simd_translate.UNSIGNED_EXTRACT))
def test_inline_extract_matches_function(name: str) -> None:
    rng = random.Random(name)
    fn = simd.OPS[opcodes.BY_NAME[name]]
    size, mask = simd_translate.UNSIGNED_EXTRACT[name]
    for lane in range(128 >> size):
        v = random_v128(rng)
        regs = [v, None]
        simd_translate.extract_int_lane(1, 0, lane << size, mask)(regs, 0)
        assert regs[1] == fn(v, lane)


# --- lane semantics, by hand -------------------------------------------------------------------

L = simd.v128_from_lanes


def test_representation_helpers() -> None:
    v = L("i16", [1, -1, 2, -2, 3, -3, 0x7FFF, -0x8000])
    assert simd.v128_lanes(v, "i16") == [1, 0xFFFF, 2, 0xFFFE, 3, 0xFFFD, 0x7FFF, 0x8000]
    assert simd.v128_to_bytes(v)[:4] == b"\x01\x00\xff\xff"
    assert simd.v128_from_bytes(simd.v128_to_bytes(v)) == v
    assert 0 <= v <= M128 and hash(v) == hash(int(v))
    with pytest.raises(ValueError):
        L("i32", [1, 2, 3])
    with pytest.raises(ValueError):
        simd.v128_from_bytes(b"\0" * 15)


@pytest.mark.parametrize("fn, args, expected", [
    # saturation
    (simd.i8x16_add_sat_s, (L("i8", [127, -128] + [0] * 14), L("i8", [1, -1] + [0] * 14)),
     L("i8", [127, -128] + [0] * 14)),
    (simd.i16x8_sub_sat_u, (L("i16", [1] * 8), L("i16", [2] * 8)), 0),
    (simd.i8x16_narrow_i16x8_s, (L("i16", [300, -300, 5, -5, 127, -128, 128, -129]), 0),
     L("i8", [127, -128, 5, -5, 127, -128, 127, -128] + [0] * 8)),
    (simd.i8x16_narrow_i16x8_u, (L("i16", [300, -300, 5, 255, 256, 0, 1, -1]), 0),
     L("i8", [255, 0, 5, 255, 255, 0, 1, 0] + [0] * 8)),
    (simd.i16x8_q15mulr_sat_s, (L("i16", [-0x8000, 0x4000, -0x8000] + [0] * 5),
                                L("i16", [-0x8000, 0x4000, 0x7FFF] + [0] * 5)),
     L("i16", [0x7FFF, 0x2000, -0x7FFF] + [0] * 5)),
    # widening
    (simd.i32x4_dot_i16x8_s, (L("i16", [-0x8000] * 8), L("i16", [-0x8000] * 8)),
     L("i32", [-0x80000000] * 4)),
    (simd.i16x8_extmul_high_i8x16_s, (L("i8", [0] * 8 + [-128] * 8), L("i8", [0] * 8 + [-128] * 8)),
     L("i16", [16384] * 8)),
    (simd.i32x4_extadd_pairwise_i16x8_u, (L("i16", [0xFFFF] * 8),), L("i32", [0x1FFFE] * 4)),
    (simd.i64x2_extend_high_i32x4_s, (L("i32", [0, 0, -1, 5]),), L("i64", [-1, 5])),
    # lane tests and shifts
    (simd.i8x16_bitmask, (L("i8", [-1, 0, -128, 127] * 4),), 0b0101010101010101),
    (simd.i64x2_bitmask, (L("i64", [0, -1]),), 0b10),
    (simd.i16x8_all_true, (L("i16", [1] * 7 + [0]),), 0),
    (simd.i32x4_shr_s, (L("i32", [-8, 8, -1, 1 << 30]), 33), L("i32", [-4, 4, -1, 1 << 29])),
    (simd.i8x16_shl, (L("i8", [0xFF] * 16), 7), L("i8", [0x80] * 16)),
    (simd.i64x2_shr_u, (L("i64", [-1, 2]), 64), L("i64", [-1, 2])),
    # shuffles
    (simd.i8x16_swizzle, (L("i8", list(range(100, 116))), L("i8", [15, 0, 16, 255] + [1] * 12)),
     L("i8", [115, 100, 0, 0] + [101] * 12)),
    (simd.i8x16_shuffle, (L("i8", list(range(16))), L("i8", list(range(16, 32))),
                          bytes(range(31, -1, -2))), L("i8", list(range(31, -1, -2)))),
])
def test_lane_semantics(fn: Callable[..., int], args: tuple, expected: int) -> None:
    assert fn(*args) == expected


def _f32s(*xs: float) -> int:
    return int.from_bytes(struct.pack("<4f", *xs), "little")


def _f64s(*xs: float) -> int:
    return int.from_bytes(struct.pack("<2d", *xs), "little")


def test_float_lane_semantics() -> None:
    nan = float("nan")
    assert simd.f32x4_nearest(_f32s(0.5, 1.5, 2.5, -0.5)) == _f32s(0.0, 2.0, 2.0, -0.0)
    assert simd.f64x2_nearest(_f64s(-2.5, 4503599627370495.5)) == _f64s(-2.0, 4503599627370496.0)
    assert simd.f32x4_min(_f32s(0.0, -0.0, 1.0, nan), _f32s(-0.0, 0.0, nan, 1.0)) & ~(
        (0x7FFFFFFF << 64) | (0x7FFFFFFF << 96)) == _f32s(-0.0, -0.0, 0.0, 0.0)
    # pmin and pmax return an operand's bits, NaNs (even signalling ones) included
    snan = 0x7FA00001
    a = snan | 0x3F800000 << 32 | 0x80000000 << 64
    b = 0x3F800000 | snan << 32 | 0x00000000 << 64
    assert simd.f32x4_pmin(a, b) == snan | 0x3F800000 << 32 | 0x80000000 << 64
    assert simd.f32x4_pmax(a, b) == snan | 0x3F800000 << 32 | 0x80000000 << 64
    assert simd.i32x4_trunc_sat_f32x4_s(_f32s(nan, 3e9, -3e9, -1.9)) == L(
        "i32", [0, 0x7FFFFFFF, -0x80000000, -1])
    assert simd.i32x4_trunc_sat_f64x2_u_zero(_f64s(-1.0, 5e9)) == L("i32", [0, -1, 0, 0])
    # f32 rounding of a double tie, and overflow to infinity
    assert simd.f32x4_demote_f64x2_zero(_f64s(1 + 2.0**-24, 3.4028235677973366e38)) == _f32s(
        1.0, float("inf"), 0.0, 0.0)
    assert simd.f32x4_add(_f32s(3.4028234663852886e38, 1, 2, 3),
                          _f32s(3.4028234663852886e38, 0, 0, 0)) == _f32s(float("inf"), 1, 2, 3)
    assert simd.f32x4_convert_i32x4_u(L("i32", [-1, 16777217, 0, 1])) == _f32s(
        4294967296.0, 16777216.0, 0.0, 1.0)
    # sign operations keep NaN payloads; extract/replace keep signalling NaNs
    assert simd.f32x4_neg(snan) == snan | 0x80000000 | 0x80000000 << 32 | 0x80000000 << 64 | (
        0x80000000 << 96)
    assert simd.f32x4_replace_lane(0, simd.f32x4_extract_lane(snan << 96, 3), 1) == snan << 32


# --- v128 through the embedding API ---------------------------------------------------------------

def test_v128_params_results_and_host_functions() -> None:
    text = """(module
      (import "host" "twice" (func $twice (param v128) (result v128)))
      (func (export "swap") (param v128 v128) (result v128 v128) local.get 1 local.get 0)
      (func (export "via_host") (param v128) (result v128)
        (i32x4.add (call $twice (local.get 0)) (v128.const i32x4 1 1 1 1)))
      (func (export "zero") (result v128) (local v128) local.get 0))"""
    seen = []

    def twice(v: int) -> int:
        seen.append(v)
        return simd.i32x4_add(v, v)

    host = vm.HostFunction(FuncType((V128,), (V128,)), twice)
    inst = vm.instantiate(vm.Store(), vm.load(bytes(wasmtime.wat2wasm(text))),
                          {"host": {"twice": host}})
    a, b = L("i32", [1, 2, 3, 4]), M128
    assert inst.invoke("swap", [a, b]) == [b, a]
    assert inst.invoke("via_host", [a]) == [L("i32", [3, 5, 7, 9])]
    assert seen == [a]
    assert inst.invoke("zero", []) == [0]


def test_v128_global_initializer() -> None:
    text = """(module (global (export "g") v128 (v128.const i32x4 1 2 3 4))
      (func (export "get") (result v128) global.get 0))"""
    inst = vm.instantiate(vm.Store(), vm.load(bytes(wasmtime.wat2wasm(text))), {})
    assert inst.invoke("get", []) == [L("i32", [1, 2, 3, 4])]
    assert inst.exports["g"].value == L("i32", [1, 2, 3, 4])
