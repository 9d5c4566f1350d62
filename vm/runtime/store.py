"""The store: the runtime limits and the machine that runs code for the instances it holds."""

from __future__ import annotations

from typing import Any

from ..errors import ExhaustionError
from .objects import Function

# Fuel is counted down at loop back-edges; "unlimited" is a count no run can reach.
UNLIMITED_FUEL = 1 << 62


class Store:
    """Holds limits and the call stack of running code.

    ``max_call_depth`` bounds nested wasm calls (deep recursion raises ``ExhaustionError``, never
    a Python ``RecursionError``); ``max_memory_pages`` and ``max_table_size`` cap what modules may
    declare or grow to; ``fuel`` (None = unlimited) bounds the number of loop iterations a run may
    take before it stops with ``ExhaustionError``.
    """

    def __init__(self, *, max_call_depth: int = 20_000, max_memory_pages: int = 65536,
                 max_table_size: int = 10_000_000, fuel: int | None = None) -> None:
        from ..execution.machine import Machine

        self.max_call_depth = max_call_depth
        self.max_memory_pages = max_memory_pages
        self.max_table_size = max_table_size
        self.fuel: list[int] = [UNLIMITED_FUEL if fuel is None else fuel]
        self.fuel_limited = fuel is not None
        self.machine = Machine(self)

    def invoke(self, func: Function, args: list[Any] | tuple[Any, ...] = ()) -> list[Any]:
        """Call ``func`` with ``args``; returns the list of results."""
        params = func.type.params
        if len(args) != len(params):
            raise TypeError(f"expected {len(params)} arguments, got {len(args)}")
        return self.machine.invoke(func, list(args))

    def start(self, func: Function, args: list[Any] | tuple[Any, ...] = ()) -> Any:
        """A resumable invocation of ``func`` (``vm.Execution``): run it in fuel slices,
        suspend it at host calls, snapshot it."""
        from ..execution.machine import Execution

        params = func.type.params
        if len(args) != len(params):
            raise TypeError(f"expected {len(params)} arguments, got {len(args)}")
        return Execution(self, func, list(args))

    def add_fuel(self, amount: int) -> None:
        self.fuel[0] += amount

    @property
    def fuel_remaining(self) -> int | None:
        return self.fuel[0] if self.fuel_limited else None

    def out_of_fuel(self) -> None:
        """Called by the machine when a back-edge finds no fuel left."""
        if not self.fuel_limited:
            self.fuel[0] = UNLIMITED_FUEL
            return
        raise ExhaustionError("all fuel consumed")
