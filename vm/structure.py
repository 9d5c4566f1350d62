"""The abstract syntax of a module (spec chapter 2), as produced by the decoder.

Everything downstream (validation, instantiation, execution, snapshots) reads these plain data
classes, never the bytes again. Instructions are tuples ``(opcode, immediate, offset)``:

* ``opcode`` — an int: the single-byte opcode, or ``0xFC000 + n`` / ``0xFD000 + n`` for the
  prefixed ``0xFC n`` / ``0xFD n`` instructions (see :mod:`vm.binary.opcodes`);
* ``immediate`` — op-specific, documented in :mod:`vm.binary.opcodes`;
* ``offset`` — the byte offset of the instruction in the module binary. Snapshots and backtraces
  use these offsets, so positions stay meaningful across dwasm versions and execution tiers.

Value types are the ints of their binary encoding (``I32 = 0x7F`` ...), cheap to compare and to
store in snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Value types, by their binary encoding.
I32 = 0x7F
I64 = 0x7E
F32 = 0x7D
F64 = 0x7C
V128 = 0x7B
FUNCREF = 0x70
EXTERNREF = 0x6F

NUM_TYPES = frozenset({I32, I64, F32, F64})
VEC_TYPES = frozenset({V128})
REF_TYPES = frozenset({FUNCREF, EXTERNREF})
VAL_TYPES = NUM_TYPES | VEC_TYPES | REF_TYPES

VALTYPE_NAMES = {I32: "i32", I64: "i64", F32: "f32", F64: "f64", V128: "v128",
                 FUNCREF: "funcref", EXTERNREF: "externref"}

# Block types are kept as the s33 of the binary format: -64 (0x40) means no value, -1..-17 are
# the single value types (0x7F..0x6F read as signed 7-bit), a non-negative value is a type index.
BLOCK_EMPTY = -64


def blocktype_valtype(bt: int) -> int:
    """Value type of a negative (single-result) block type."""
    return bt & 0x7F


Instr = tuple[int, Any, int]


@dataclass(frozen=True, slots=True)
class FuncType:
    params: tuple[int, ...]
    results: tuple[int, ...]

    def __str__(self) -> str:
        p = " ".join(VALTYPE_NAMES.get(t, hex(t)) for t in self.params)
        r = " ".join(VALTYPE_NAMES.get(t, hex(t)) for t in self.results)
        return f"[{p}] -> [{r}]"


@dataclass(frozen=True, slots=True)
class Limits:
    min: int
    max: int | None = None


@dataclass(frozen=True, slots=True)
class TableType:
    elem_type: int  # FUNCREF or EXTERNREF
    limits: Limits


@dataclass(frozen=True, slots=True)
class MemType:
    limits: Limits  # in 64 KiB pages


@dataclass(frozen=True, slots=True)
class GlobalType:
    valtype: int
    mutable: bool


# Import and export kinds, as in the binary format.
KIND_FUNC = 0
KIND_TABLE = 1
KIND_MEM = 2
KIND_GLOBAL = 3
KIND_NAMES = {KIND_FUNC: "func", KIND_TABLE: "table", KIND_MEM: "memory", KIND_GLOBAL: "global"}


@dataclass(slots=True)
class Import:
    module: str
    name: str
    kind: int
    # KIND_FUNC: type index (int); KIND_TABLE: TableType; KIND_MEM: MemType; KIND_GLOBAL: GlobalType
    desc: Any


@dataclass(slots=True)
class Export:
    name: str
    kind: int
    index: int


@dataclass(slots=True)
class Func:
    """A function defined in the module (imported functions are not in ``Module.funcs``)."""

    type_index: int
    locals: list[int]  # value types of the declared locals, expanded (params not included)
    body: list[Instr]  # ends with the function's final ``end``
    offset: int = 0  # byte offset of the body (the locals vector) in the binary
    # Filled by validation: operand stack height before each instruction of ``body`` (not
    # counting params/locals), or -1 where the instruction is unreachable; and the maximum height.
    heights: list[int] | None = None
    max_height: int = 0


@dataclass(slots=True)
class Global:
    type: GlobalType
    init: list[Instr]  # constant expression, ending with ``end``


# Segment modes.
MODE_ACTIVE = 0
MODE_PASSIVE = 1
MODE_DECLARATIVE = 2


@dataclass(slots=True)
class Elem:
    type: int  # FUNCREF or EXTERNREF
    init: list[list[Instr]]  # one constant expression per element
    mode: int
    table: int = 0
    offset: list[Instr] | None = None  # constant expression, for active segments


@dataclass(slots=True)
class Data:
    init: bytes
    mode: int  # MODE_ACTIVE or MODE_PASSIVE
    memory: int = 0
    offset: list[Instr] | None = None


@dataclass(slots=True)
class Module:
    types: list[FuncType] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    funcs: list[Func] = field(default_factory=list)
    tables: list[TableType] = field(default_factory=list)
    mems: list[MemType] = field(default_factory=list)
    globals: list[Global] = field(default_factory=list)
    elems: list[Elem] = field(default_factory=list)
    datas: list[Data] = field(default_factory=list)
    start: int | None = None
    exports: list[Export] = field(default_factory=list)
    data_count: int | None = None
    customs: list[tuple[str, bytes]] = field(default_factory=list)
    # From the "name" custom section when present and well-formed: function index -> name.
    func_names: dict[int, str] = field(default_factory=dict)
    # sha256 hex digest of the module bytes: the module's identity in snapshots.
    sha256: str = ""
    # The compiled tier's per-function code (vm.execution.tier), shared by all instances.
    pycode: dict = field(default_factory=dict, repr=False, compare=False)

    # Convenience views over imports, in index-space order.
    def imported(self, kind: int) -> list[Import]:
        return [i for i in self.imports if i.kind == kind]

    def func_type(self, funcidx: int) -> FuncType:
        """Type of function ``funcidx`` in the function index space (imports first)."""
        imports = self.imported(KIND_FUNC)
        if funcidx < len(imports):
            return self.types[imports[funcidx].desc]
        return self.types[self.funcs[funcidx - len(imports)].type_index]
