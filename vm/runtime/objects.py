"""Runtime objects of the store (spec 4.2): functions, tables, memories, globals, instances.

These are what imports and exports hand around. They are plain mutable Python objects; the
execution engine's translated code captures them directly (a memory's ``data`` bytearray, a
global object) so that instructions reach them without lookups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import TrapError
from ..structure import (EXTERNREF, F32, F64, FUNCREF, I32, I64, V128, Func, FuncType,
                         GlobalType, MemType, Module, TableType)

if TYPE_CHECKING:
    from ..execution.translate import Compiled
    from .store import Store

PAGE_SIZE = 65536
MAX_PAGES = 65536  # 4 GiB, the 32-bit address space


def default_value(valtype: int) -> Any:
    """The zero value of a type, used for locals and fresh tables."""
    if valtype == I32 or valtype == I64 or valtype == V128:
        return 0
    if valtype == F32 or valtype == F64:
        return 0.0
    return None


class Function:
    """A function instance: either defined by a module (``WasmFunction``) or by the host."""

    __slots__ = ("type",)

    def __init__(self, type: FuncType) -> None:
        self.type = type


class WasmFunction(Function):
    """A function defined in a module instance. ``compiled`` is filled on first call."""

    __slots__ = ("instance", "index", "func", "compiled", "py", "call", "calls", "py_failed")

    def __init__(self, type: FuncType, instance: "Instance", index: int, func: Func) -> None:
        super().__init__(type)
        self.instance = instance
        self.index = index  # index in the module's function index space
        self.func = func
        self.compiled: Compiled | None = None
        # The compiled tier (vm.execution.tier): the generated Python function once compiled,
        # the callable that compiled code calls (a stub until then), and the call count that
        # decides when to compile.
        self.py: Callable[..., Any] | None = None
        self.call: Callable[..., Any] | None = None
        self.calls = 0
        self.py_failed = False

    def __repr__(self) -> str:
        return f"<wasm function {self.index} {self.type}>"


class HostFunction(Function):
    """A function implemented in Python.

    ``fn`` is called with the wasm arguments as Python values (docs/vm.md) and returns None, one
    value, or a tuple/list of values matching ``type.results``.
    """

    __slots__ = ("fn", "name")

    def __init__(self, type: FuncType, fn: Callable[..., Any], name: str = "") -> None:
        super().__init__(type)
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "host")

    def __repr__(self) -> str:
        return f"<host function {self.name} {self.type}>"


class Memory:
    """A linear memory. ``data`` is one bytearray that grows in place (its identity never changes,
    which lets translated code hold on to it)."""

    __slots__ = ("type", "data", "max_pages")

    def __init__(self, type: MemType, max_pages: int = MAX_PAGES) -> None:
        self.type = type
        limit = type.limits.max if type.limits.max is not None else MAX_PAGES
        self.max_pages = min(limit, max_pages)
        self.data = bytearray(type.limits.min * PAGE_SIZE)

    @property
    def pages(self) -> int:
        return len(self.data) // PAGE_SIZE

    def grow(self, delta: int) -> int:
        """Grow by ``delta`` pages; returns the old size in pages, or -1 (as the instruction)."""
        old = len(self.data) // PAGE_SIZE
        if delta == 0:
            return old
        if old + delta > self.max_pages:
            return -1
        try:
            self.data.extend(bytes(delta * PAGE_SIZE))
        except MemoryError:
            return -1
        return old

    def read(self, addr: int, size: int) -> bytes:
        if addr < 0 or size < 0 or addr + size > len(self.data):
            raise TrapError("out of bounds memory access")
        return bytes(self.data[addr:addr + size])

    def write(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > len(self.data):
            raise TrapError("out of bounds memory access")
        self.data[addr:addr + len(data)] = data


class Table:
    """A table of references (``None`` is null)."""

    __slots__ = ("type", "elements", "max_size")

    def __init__(self, type: TableType, init: Any = None, max_size: int = 0xFFFFFFFF) -> None:
        self.type = type
        limit = type.limits.max if type.limits.max is not None else 0xFFFFFFFF
        self.max_size = min(limit, max_size)
        self.elements: list[Any] = [init] * type.limits.min

    @property
    def size(self) -> int:
        return len(self.elements)

    def grow(self, delta: int, init: Any = None) -> int:
        """Grow by ``delta`` entries set to ``init``; returns the old size, or -1."""
        old = len(self.elements)
        if old + delta > self.max_size:
            return -1
        try:
            self.elements.extend([init] * delta)
        except MemoryError:
            return -1
        return old


class Global:
    """A global variable. ``value`` is read and written directly by translated code."""

    __slots__ = ("type", "value")

    def __init__(self, type: GlobalType, value: Any = None) -> None:
        self.type = type
        self.value = default_value(type.valtype) if value is None and type.valtype not in (
            FUNCREF, EXTERNREF) else value


class Instance:
    """A module instance: the module's index spaces resolved to runtime objects."""

    def __init__(self, module: Module, store: "Store") -> None:
        self.module = module
        self.store = store
        self.funcs: list[Function] = []
        self.tables: list[Table] = []
        self.mems: list[Memory] = []
        self.globals: list[Global] = []
        # Element segments as lists of references; data segments as bytes. Dropping a segment
        # replaces it with an empty one (spec: elem.drop / data.drop).
        self.elems: list[list[Any]] = []
        self.datas: list[bytes] = []
        self.exports: dict[str, Any] = {}

    def invoke(self, name: str, args: list[Any] | tuple[Any, ...] = ()) -> list[Any]:
        """Call the exported function ``name``; returns the list of its results."""
        func = self.exports.get(name)
        if not isinstance(func, Function):
            raise KeyError(f"no exported function {name!r}")
        return self.store.invoke(func, args)
