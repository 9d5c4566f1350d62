"""dwasm's WebAssembly engine: decode, validate, instantiate and run modules (docs/vm.md)."""

from __future__ import annotations

from .errors import (ExhaustionError, InvalidError, LinkError, MalformedError, Suspend,
                     TrapError, WasmError)
from .execution.machine import Execution
from .runtime.objects import (Function, Global, HostFunction, Instance, Memory, Table,
                              WasmFunction)
from .runtime.store import Store
from .structure import Module


def __getattr__(name: str):  # ``vm.wasi`` and ``vm.snapshot`` load on first use
    if name in ("wasi", "snapshot"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'vm' has no attribute {name!r}")


def decode_module(data: bytes) -> Module:
    """Decode a binary module; raises MalformedError."""
    from .binary.decoder import decode_module as decode

    return decode(data)


def validate_module(module: Module) -> None:
    """Validate a decoded module; raises InvalidError."""
    from .validation import validate_module as validate

    validate(module)


def load(data: bytes) -> Module:
    """Decode and validate: the module is ready to instantiate."""
    module = decode_module(data)
    validate_module(module)
    return module


def instantiate(store: Store, module: Module, imports: dict | None = None) -> Instance:
    """Instantiate a validated module; raises LinkError or TrapError."""
    from .runtime.instantiate import instantiate as inst

    return inst(store, module, imports)


__all__ = [
    "ExhaustionError", "Execution", "Function", "Global", "HostFunction", "Instance", "InvalidError",
    "LinkError", "MalformedError", "Memory", "Module", "Store", "Suspend", "Table", "TrapError",
    "WasmError", "WasmFunction", "decode_module", "instantiate", "load", "validate_module",
]
