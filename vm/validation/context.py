"""The validation context (spec 3.1.1): what a module's definitions look like from inside it."""

from __future__ import annotations

from dataclasses import dataclass, field

from vm.errors import InvalidError
from vm.structure import FuncType, GlobalType, MemType, TableType


@dataclass(slots=True)
class Context:
    """Index spaces of a module, imports first, as seen by its function bodies and expressions.

    Function types are also kept as lists (``type_sigs``, ``func_sigs``) because the validator
    compares them against slices of its operand stack, which are lists.
    """

    types: list[FuncType] = field(default_factory=list)
    type_sigs: list[tuple[list[int], list[int]]] = field(default_factory=list)
    funcs: list[FuncType] = field(default_factory=list)
    func_sigs: list[tuple[list[int], list[int]]] = field(default_factory=list)
    tables: list[TableType] = field(default_factory=list)
    mems: list[MemType] = field(default_factory=list)
    globals: list[GlobalType] = field(default_factory=list)
    elems: list[int] = field(default_factory=list)  # reference type of each element segment
    datas: int = 0  # number of data segments
    refs: set[int] = field(default_factory=set)  # function indices declared for ref.func

    def type_at(self, index: int) -> FuncType:
        if not 0 <= index < len(self.types):
            raise InvalidError(f"unknown type {index}")
        return self.types[index]

    def func_at(self, index: int) -> FuncType:
        if not 0 <= index < len(self.funcs):
            raise InvalidError(f"unknown function {index}")
        return self.funcs[index]

    def table_at(self, index: int) -> TableType:
        if not 0 <= index < len(self.tables):
            raise InvalidError(f"unknown table {index}")
        return self.tables[index]

    def mem_at(self, index: int) -> MemType:
        if not 0 <= index < len(self.mems):
            raise InvalidError(f"unknown memory {index}")
        return self.mems[index]

    def global_at(self, index: int) -> GlobalType:
        if not 0 <= index < len(self.globals):
            raise InvalidError(f"unknown global {index}")
        return self.globals[index]

    def elem_at(self, index: int) -> int:
        if not 0 <= index < len(self.elems):
            raise InvalidError(f"unknown elem segment {index}")
        return self.elems[index]

    def check_data(self, index: int) -> None:
        if not 0 <= index < self.datas:
            raise InvalidError(f"unknown data segment {index}")
