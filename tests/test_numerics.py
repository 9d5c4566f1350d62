"""Differential tests of vm.execution.numerics against wasmtime.

Every numeric instruction runs in wasmtime and in our function on the same operands, and the
results are compared bit for bit. Operands and results cross the wasmtime boundary as integer bit
patterns (floats go through ``reinterpret`` inside the module), so no NaN payload is lost on the
way. One module holds, per instruction, a function applying it to its parameters and a batch
function that applies it to records in memory; the batch keeps the per-operand cost in the
microseconds, so each instruction can see all pairs of edge values and thousands of random ones.

NaN results are compared by class, not by payload, since the spec lets engines pick among
arithmetic NaNs: a NaN result must be canonical if every NaN operand was canonical (or there was
none), and arithmetic otherwise. neg, abs, copysign and the reinterpretations must match exactly.
"""

from __future__ import annotations

import math
import random
import re
import struct
from collections.abc import Callable, Iterable, Sequence

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vm.binary import opcodes
from vm.errors import TrapError
from vm.execution import numerics as n

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
BITS_TYPE = {"i32": "i32", "i64": "i64", "f32": "i32", "f64": "i64"}
MASK = {"i32": M32, "i64": M64, "f32": M32, "f64": M64}

NAMES = [opcodes.NAMES[op] for op in sorted(n.OPS)]
TRAPPING = {name for name in NAMES if re.search(r"\.(div|rem)_|\.trunc_[fi]", name)}
EXACT_NAN = {
    "f32.abs", "f64.abs", "f32.neg", "f64.neg", "f32.copysign", "f64.copysign",
    "i32.reinterpret_f32", "i64.reinterpret_f64", "f32.reinterpret_i32", "f64.reinterpret_i64",
}  # fmt: skip
_PREDICATES = {"eqz", "eq", "ne", "lt", "gt", "le", "ge"}

TRAP_MESSAGES = {
    wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO: "integer divide by zero",
    wasmtime.TrapCode.INTEGER_OVERFLOW: "integer overflow",
    wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER: "invalid conversion to integer",
}


def signature(name: str) -> tuple[tuple[str, ...], str]:
    """(operand types, result type) of a numeric instruction, from its name."""
    dst, op = name.split(".")
    source = re.search(r"_(i32|i64|f32|f64)(_[su])?$", op)
    if source:
        return (source.group(1),), dst
    arity = n.ARITY[opcodes.BY_NAME[name]]
    result = "i32" if op.split("_")[0] in _PREDICATES else dst
    return (dst,) * arity, result


# ------------------------------------------------------------------------------------------
# Operand values, as bit patterns
# ------------------------------------------------------------------------------------------


def f32b(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f64b(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def _int_edges(width: int, exponents: Iterable[int], extra: Iterable[int]) -> list[int]:
    """Small numbers and powers of two +-1, both signs, wrapped to ``width`` bits."""
    values = {0, 1, 2, 3, 5, 7, 10, 100, 12345}
    for k in exponents:
        values |= {1 << k, (1 << k) - 1, (1 << k) + 1}
    values |= {-v for v in values}
    values |= set(extra)
    return sorted(v & ((1 << width) - 1) for v in values)


EDGE_I32 = _int_edges(
    32,
    [4, 5, 7, 8, 15, 16, 23, 24, 25, 30, 31],
    [0x12345678, 0xDEADBEEF, 0x55555555, 0xAAAAAAAA, 0xFF, 0xFF00, 31, 32, 33, 63, 64],
)
EDGE_I64 = _int_edges(
    64,
    [4, 8, 16, 24, 25, 31, 32, 33, 53, 54, 62, 63],
    [0x0123456789ABCDEF, 0xDEADBEEFCAFEBABE, 0x5555555555555555, 31, 32, 63, 64, 65]
    # f32 ties and near-ties that a detour through f64 would round wrongly
    + [2**60 + 2**36 + 1, 2**60 + 2**36, 2**60 + 3 * 2**36, 2**60 + 3 * 2**36 - 1, 2**55 + 2**31 + 1],
)

_F32_VALUES = [
    0.0, 1.0, 0.5, 1.5, 2.5, 0.49999997, 0.75, 3.0, 100.5, 1e-45, 1e-38, 1e10,
    2.0**23 - 0.5, 2.0**23, 2.0**23 + 1, 2.0**24, 2.0**24 + 2, 2.0**31, 2.0**31 - 128, 2.0**31 + 256,
    2.0**32, 2.0**32 - 256, 2.0**63, 2.0**64, 2.0**63 - 2.0**39, 2.0**64 - 2.0**40, 0.99999994,
    3.4028234663852886e38, 1.0000001, 16777215.0, math.pi, 1e30, 2.0**-126, 2.0**-149,
]  # fmt: skip
EDGE_F32 = sorted(
    {f32b(v) for v in _F32_VALUES}
    | {f32b(v) | 0x80000000 for v in _F32_VALUES}
    | {0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7FFFFFFF, 0xFFFFFFFF,
       0x7FA00000, 0xFF800001, 0x7F800001, 0x007FFFFF, 0x00800000, 0x80000001, 0xCF000001}
)  # fmt: skip

_F64_VALUES = [
    0.0, 1.0, 0.5, 1.5, 2.5, 0.49999999999999994, 0.9999999999999999, 3.0, 5e-324, 1e-310,
    2.2250738585072014e-308, 1.7976931348623157e308, 1e300, math.pi,
    2.0**31, 2.0**31 - 0.5, 2.0**31 - 1, 2.0**31 + 0.5, 2.0**31 + 1, 2.0**32, 2.0**32 - 0.5,
    2.0**32 - 1, 2.0**32 + 1, 2.0**52, 2.0**52 - 0.5, 2.0**52 + 1, 2.0**53, 2.0**53 + 2,
    2.0**63, 2.0**63 - 1024, 2.0**63 + 2048, 2.0**64, 2.0**64 - 2048, 2.0**64 + 4096,
    math.nextafter(2147483649.0, 0.0), math.nextafter(2147483648.0, 0.0),
    math.nextafter(4294967296.0, 0.0), math.nextafter(1.0, 0.0),
    # near f32 rounding: overflow boundary, ties, the subnormal range
    3.4028234663852886e38, 2.0**128 - 2.0**103, 2.0**128 - 2.0**103 - 2.0**75, 2.0**128,
    1 + 2.0**-24, 1 + 2.0**-24 + 2.0**-52, 1 + 3 * 2.0**-24, 2.0**-149, 2.0**-150,
    2.0**-150 + 2.0**-200, 3 * 2.0**-150, 2.0**-126 - 2.0**-150, 1e-50,
]  # fmt: skip
EDGE_F64 = sorted(
    {f64b(v) for v in _F64_VALUES}
    | {f64b(v) | (1 << 63) for v in _F64_VALUES}
    | {0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000, 0xFFF8000000000000,
       0x7FF8000000000001, 0x7FFFFFFFFFFFFFFF, 0x7FF4000000000000, 0xFFF0000000000001,
       0x7FF0000000000001, 0x7FF4000020000000, 0xC1E0000000200000}
)  # fmt: skip

EDGES = {"i32": EDGE_I32, "i64": EDGE_I64, "f32": EDGE_F32, "f64": EDGE_F64}


def _random_int(rng: random.Random, width: int) -> int:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.getrandbits(width)
    if kind == 1:
        return rng.randint(-300, 300) & ((1 << width) - 1)
    if kind == 2:  # near a power of two, either sign
        v = (1 << rng.randrange(width)) + rng.randint(-3, 3)
        return (-v if rng.random() < 0.5 else v) & ((1 << width) - 1)
    # an f32 rounding tie (or next to one): 24 significant bits, then a half, then +-1
    k = rng.randrange(1, width - 24)
    v = ((rng.getrandbits(23) | 1 << 23) << k) + (1 << (k - 1)) + rng.randint(-1, 1)
    return (-v if rng.random() < 0.5 else v) & ((1 << width) - 1)


def _random_f32(rng: random.Random) -> int:
    kind = rng.randrange(5)
    sign = rng.getrandbits(1) << 31
    if kind == 0:
        return rng.getrandbits(32)
    if kind == 1:  # small integers and halves
        return f32b(rng.randint(-40, 40) / 2.0)
    if kind == 2:  # near the integer conversion bounds
        return (f32b(rng.choice([2.0**31, 2.0**32, 2.0**63, 2.0**64, 1.0])) + rng.randint(-3, 3)) | sign
    if kind == 3:  # close exponents, so sums and products hit f32 ties
        return sign | rng.randint(120, 135) << 23 | rng.getrandbits(23)
    return sign | rng.getrandbits(23)  # subnormal


def _random_f64(rng: random.Random) -> int:
    kind = rng.randrange(6)
    sign = rng.getrandbits(1) << 63
    if kind == 0:
        return rng.getrandbits(64)
    if kind == 1:
        return f64b(rng.randint(-40, 40) / 2.0)
    if kind == 2:
        bound = rng.choice([2.0**31, 2.0**32, 2.0**63, 2.0**64, 1.0, 2.0**52])
        return (f64b(bound) + rng.randint(-3, 3)) | sign
    if kind == 3:  # an f32 rounding tie of a random f32 value, or one double ulp either side
        base = f64b(n.f32_from_bits(rng.randint(1, 0x7F7FFFFF)))
        return sign | (base + (1 << 28) + rng.randint(-1, 1))
    if kind == 4:  # close exponents
        return sign | rng.randint(1018, 1030) << 52 | rng.getrandbits(52)
    return sign | rng.randint(0x380 - 30, 0x380) << 52 | rng.getrandbits(52)  # f32 subnormals


RANDOM = {
    "i32": lambda rng: _random_int(rng, 32),
    "i64": lambda rng: _random_int(rng, 64),
    "f32": _random_f32,
    "f64": _random_f64,
}


# ------------------------------------------------------------------------------------------
# The reference: one wasmtime module with every instruction
# ------------------------------------------------------------------------------------------

RECORD = 24  # operand 0, operand 1, result: 8 bytes each
BATCH = 20000


def _module_text() -> str:
    funcs = []
    for i, name in enumerate(NAMES):
        params, result = signature(name)
        body = []
        for k, t in enumerate(params):
            body.append(f"local.get {k}")
            if t[0] == "f":
                body.append(f"{t}.reinterpret_{BITS_TYPE[t]}")
        body.append(name)
        if result[0] == "f":
            body.append(f"{BITS_TYPE[result]}.reinterpret_{result}")
        loads = " ".join(
            f"(local.get $p) ({BITS_TYPE[t]}.load offset={8 * k})" for k, t in enumerate(params)
        )
        widen = "i64.extend_i32_u" if BITS_TYPE[result] == "i32" else ""
        param_types = " ".join(BITS_TYPE[t] for t in params)
        funcs.append(
            f"""
  (func $f{i} (export "{name}") (param {param_types}) (result {BITS_TYPE[result]})
    {" ".join(body)})
  (func (export "batch {name}") (param $n i32) (local $p i32) (local $end i32)
    (local.set $end (i32.mul (local.get $n) (i32.const {RECORD})))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.get $p) {loads} (call $f{i}) {widen} (i64.store offset=16)
        (local.set $p (i32.add (local.get $p) (i32.const {RECORD})))
        (br $next))))"""
        )
    pages = -(-BATCH * RECORD // 65536)
    return f'(module (memory (export "memory") {pages}) {"".join(funcs)})'


class Reference:
    """wasmtime running the instructions, with integer bit patterns in and out."""

    def __init__(self) -> None:
        engine = wasmtime.Engine()
        self.store = wasmtime.Store(engine)
        module = wasmtime.Module(engine, wasmtime.wat2wasm(_module_text()))
        self.exports = wasmtime.Instance(self.store, module, []).exports(self.store)
        self.memory = self.exports["memory"]

    def call(self, name: str, args: Sequence[int]) -> int | str:
        """The result bits, or the trap message."""
        params, result = signature(name)
        signed = [a - ((a & (MASK[t] ^ MASK[t] >> 1)) << 1) for a, t in zip(args, params)]
        try:
            value = self.exports[name](self.store, *signed)
        except wasmtime.Trap as trap:
            return TRAP_MESSAGES[trap.trap_code]
        return value & MASK[result]

    def batch(self, name: str, cases: Sequence[tuple[int, ...]]) -> list[int]:
        """Result bits for operands that do not trap; raises wasmtime.Trap if one does."""
        results: list[int] = []
        for start in range(0, len(cases), BATCH):
            chunk = cases[start : start + BATCH]
            data = bytearray(len(chunk) * RECORD)
            for i, args in enumerate(chunk):
                struct.pack_into("<QQ", data, i * RECORD, *args, *(0,) * (2 - len(args)))
            self.memory.write(self.store, data, 0)
            self.exports["batch " + name](self.store, len(chunk))
            out = self.memory.read(self.store, 0, len(chunk) * RECORD)
            results.extend(r[2] for r in struct.iter_unpack("<QQQ", out))
        return results


@pytest.fixture(scope="module")
def ref() -> Reference:
    return Reference()


# ------------------------------------------------------------------------------------------
# Our side and the comparison
# ------------------------------------------------------------------------------------------

TO_VALUE: dict[str, Callable[[int], object]] = {
    "i32": lambda b: b,
    "i64": lambda b: b,
    "f32": n.f32_from_bits,
    "f64": n.f64_from_bits,
}


def ours(name: str, args: Sequence[int]) -> int | str:
    """Our result bits, or the trap message; checks the value representation on the way."""
    params, result = signature(name)
    func = n.OPS[opcodes.BY_NAME[name]]
    try:
        value = func(*[TO_VALUE[t](a) for a, t in zip(args, params)])
    except TrapError as trap:
        return trap.message
    if result[0] == "i":
        assert type(value) is int and 0 <= value <= MASK[result], (name, args, value)
        return value
    assert type(value) is float, (name, args, value)
    if result == "f64":
        return n.f64_to_bits(value)
    if value == value:
        assert n.f32_round(value) == value, f"{name}{args}: {value!r} is not an f32 value"
    else:
        assert n.f64_to_bits(value) & (1 << 29) - 1 == 0, f"{name}{args}: f32 NaN convention"
    return n.f32_to_bits(value)


def _nan_class(bits: int, t: str) -> str | None:
    """None (not a NaN), "canonical", "arithmetic" or "signalling"."""
    mantissa_bits = 23 if t == "f32" else 52
    exponent = (bits >> mantissa_bits) & (0xFF if t == "f32" else 0x7FF)
    mantissa = bits & ((1 << mantissa_bits) - 1)
    if exponent != (0xFF if t == "f32" else 0x7FF) or mantissa == 0:
        return None
    quiet = 1 << (mantissa_bits - 1)
    if mantissa == quiet:
        return "canonical"
    return "arithmetic" if mantissa & quiet else "signalling"


def check(name: str, args: Sequence[int], mine: int | str, theirs: int | str) -> None:
    params, result = signature(name)
    where = f"{name}({', '.join(hex(a) for a in args)})"
    if (
        isinstance(theirs, str)
        or isinstance(mine, str)
        or result[0] == "i"
        or name in EXACT_NAN
        or _nan_class(theirs, result) is None
    ):
        assert mine == theirs, f"{where}: ours {mine!r:.60} != wasmtime {theirs!r:.60}"
        return
    assert isinstance(mine, int), f"{where}: ours {mine!r}, wasmtime a NaN"
    got = _nan_class(mine, result)
    assert got is not None, f"{where}: ours {mine:#x} is not a NaN, wasmtime {theirs:#x}"
    nan_inputs = [_nan_class(a, t) for a, t in zip(args, params) if t[0] == "f"]
    if all(c in (None, "canonical") for c in nan_inputs):
        assert got == "canonical", f"{where}: ours {mine:#x} should be a canonical NaN"
    else:
        assert got in ("canonical", "arithmetic"), f"{where}: ours {mine:#x} not arithmetic"


def run_cases(ref: Reference, name: str, cases: list[tuple[int, ...]]) -> None:
    """Compare all cases: batched where we do not trap, one call each where we do."""
    mine = [ours(name, args) for args in cases]
    calm = [i for i, m in enumerate(mine) if isinstance(m, int)]
    try:
        theirs = ref.batch(name, [cases[i] for i in calm])
    except wasmtime.Trap:  # wasmtime trapped where we did not: find the case one by one
        theirs = [ref.call(name, cases[i]) for i in calm]
    for i, result in zip(calm, theirs):
        check(name, cases[i], mine[i], result)
    for i, m in enumerate(mine):
        if isinstance(m, str):
            check(name, cases[i], m, ref.call(name, cases[i]))


# ------------------------------------------------------------------------------------------
# The tests
# ------------------------------------------------------------------------------------------


def test_ops_cover_every_numeric_instruction() -> None:
    expected = set(range(0x45, 0xC5)) | {opcodes.FC + i for i in range(8)}
    assert set(n.OPS) == expected and set(n.ARITY) == expected
    for op, func in n.OPS.items():
        assert func.__name__ == opcodes.NAMES[op].replace(".", "_")
        assert getattr(n, func.__name__) is func
        assert n.ARITY[op] == len(signature(opcodes.NAMES[op])[0])


@pytest.mark.parametrize("name", NAMES)
def test_edge_values(ref: Reference, name: str) -> None:
    params, _ = signature(name)
    if len(params) == 1:
        cases = [(a,) for a in EDGES[params[0]]]
    else:
        cases = [(a, b) for a in EDGES[params[0]] for b in EDGES[params[1]]]
    run_cases(ref, name, cases)


@pytest.mark.parametrize("name", NAMES)
def test_random_values(ref: Reference, name: str) -> None:
    params, _ = signature(name)
    rng = random.Random(name)
    count = 3000 if len(params) == 1 else 6000
    cases = [tuple(RANDOM[t](rng) for t in params) for _ in range(count)]
    run_cases(ref, name, cases)


def _bits(t: str) -> st.SearchStrategy[int]:
    if t == "i32":
        return st.one_of(st.integers(0, M32), st.sampled_from(EDGE_I32))
    if t == "i64":
        return st.one_of(st.integers(0, M64), st.sampled_from(EDGE_I64))
    if t == "f32":
        return st.one_of(
            st.integers(0, M32), st.floats(width=32).map(f32b), st.sampled_from(EDGE_F32)
        )
    return st.one_of(st.integers(0, M64), st.floats().map(f64b), st.sampled_from(EDGE_F64))


@pytest.mark.parametrize("name", NAMES)
@settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hypothesis(ref: Reference, name: str, data: st.DataObject) -> None:
    params, _ = signature(name)
    args = tuple(data.draw(_bits(t), label=f"operand {k}") for k, t in enumerate(params))
    check(name, args, ours(name, args), ref.call(name, args))


# --- traps, spelled out


@pytest.mark.parametrize(
    ("func", "args", "message"),
    [
        (n.i32_div_s, (1, 0), "integer divide by zero"),
        (n.i32_div_u, (1, 0), "integer divide by zero"),
        (n.i32_rem_s, (0x80000000, 0), "integer divide by zero"),
        (n.i64_rem_u, (0, 0), "integer divide by zero"),
        (n.i32_div_s, (0x80000000, M32), "integer overflow"),
        (n.i64_div_s, (1 << 63, M64), "integer overflow"),
        (n.i32_trunc_f32_s, (float("nan"),), "invalid conversion to integer"),
        (n.i64_trunc_f64_u, (-float("nan"),), "invalid conversion to integer"),
        (n.i32_trunc_f64_s, (2147483648.0,), "integer overflow"),
        (n.i32_trunc_f64_s, (-2147483649.0,), "integer overflow"),
        (n.i32_trunc_f64_u, (-1.0,), "integer overflow"),
        (n.i64_trunc_f32_s, (2.0**63,), "integer overflow"),
        (n.i64_trunc_f64_u, (float("inf"),), "integer overflow"),
    ],
)
def test_traps(func: Callable, args: tuple, message: str) -> None:
    with pytest.raises(TrapError) as raised:
        func(*args)
    assert raised.value.message == message


def test_no_trap_at_the_edges() -> None:
    assert n.i32_rem_s(0x80000000, M32) == 0
    assert n.i64_rem_s(1 << 63, M64) == 0
    assert n.i32_trunc_f64_s(math.nextafter(-2147483649.0, 0.0)) == 0x80000000
    assert n.i32_trunc_f64_u(math.nextafter(4294967296.0, 0.0)) == M32
    assert n.i32_trunc_f64_u(-0.9999999999999999) == 0
    assert n.i64_trunc_f64_s(-(2.0**63)) == 1 << 63
    assert n.i64_trunc_f64_u(2.0**64 - 2048) == 2**64 - 2048


# --- the representation helpers


def test_f32_bits_round_trip_nans() -> None:
    for bits in (0x7FA00000, 0xFF800001, 0x7FC00000, 0x7FFFFFFF, 0x7F800001, 0xFFC12345):
        x = n.f32_from_bits(bits)
        assert x != x
        assert n.f64_to_bits(x) == ((bits & 0x80000000) << 32) | 0x7FF0000000000000 | (
            (bits & 0x7FFFFF) << 29
        )
        assert n.f32_to_bits(x) == bits


def test_f64_bits_round_trip_signalling_nan() -> None:
    for bits in (0x7FF0000000000001, 0xFFF4000000000000, 0x7FF8000000000000):
        assert n.f64_to_bits(n.f64_from_bits(bits)) == bits


def test_f32_to_bits_of_a_nan_without_f32_payload_stays_nan() -> None:
    assert n.f32_to_bits(n.f64_from_bits(0x7FF0000000000001)) == 0x7FC00000


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (1 + 2.0**-24, 1.0),  # tie, to even
        (1 + 3 * 2.0**-24, 1 + 2.0**-22),  # tie, to even (up)
        (1 + 2.0**-24 + 2.0**-52, 1 + 2.0**-23),
        (2.0**128 - 2.0**103, math.inf),  # tie at the top rounds to even: infinity
        (2.0**128 - 2.0**103 - 2.0**75, 3.4028234663852886e38),
        (-1e300, -math.inf),
        (2.0**-150, 0.0),
        (-(2.0**-150), -0.0),
        (3 * 2.0**-150, 2.0**-148),
        (1e-50, 0.0),
    ],
)
def test_f32_round(x: float, expected: float) -> None:
    got = n.f32_round(x)
    assert got == expected and math.copysign(1.0, got) == math.copysign(1.0, expected)


def test_f32_round_quiets_nan_into_the_convention() -> None:
    got = n.f64_to_bits(n.f32_round(n.f64_from_bits(0x7FF0000000000001)))
    assert got == 0x7FF8000000000000
    got = n.f64_to_bits(n.f32_round(n.f64_from_bits(0xFFF4000020000000)))
    assert got == 0xFFFC000020000000


def test_f32_convert_i64_rounds_once() -> None:
    # Through a double, 2**60 + 2**36 + 1 becomes the f32 tie 2**60 + 2**36 and then 2**60.
    assert n.f32_convert_i64_u(2**60 + 2**36 + 1) == 2.0**60 + 2.0**37
    assert n.f32_convert_i64_s((-(2**60 + 2**36 + 1)) & M64) == -(2.0**60 + 2.0**37)
    assert n.f32_convert_i64_u(M64) == 2.0**64
    assert n.f32_convert_i64_s(1 << 63) == -(2.0**63)
