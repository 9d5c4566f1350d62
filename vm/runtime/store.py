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
                 max_table_size: int = 10_000_000, fuel: int | None = None,
                 tier: str | None = None) -> None:
        from ..execution.machine import Machine
        from ..execution.tier import TIERS, default_tier

        if tier is not None and tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
        # Execution tier: "interp" (threaded code only), "compiled" (every function compiled
        # to Python on its first call), "auto" (compile what is hot); default: $DWASM_TIER.
        self.tier = tier or default_tier()

        self.max_call_depth = max_call_depth
        self.max_memory_pages = max_memory_pages
        self.max_table_size = max_table_size
        self.fuel: list[int] = [UNLIMITED_FUEL if fuel is None else fuel]
        self.fuel_limited = fuel is not None
        # Fuel held back from the counter so that the counter runs out every TICK units: the
        # machine then looks at the running loop (tiering) and refuels (``refuel``). The fuel
        # left is always ``fuel[0] + fuel_reserve``.
        self.fuel_reserve = 0
        # (wasm frames below, depth argument) of the outermost running compiled call, so that
        # an interpreter started inside compiled code knows its depth (vm.execution.tier).
        self.compiled_origin = (0, 0)
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

    def refuel(self) -> bool:
        """The fuel counter reached zero: move the next tick's worth from the reserve into it.
        False when the fuel is really spent."""
        reserve = self.fuel_reserve
        if reserve <= 0:
            return False
        from ..execution.tier import TICK

        n = min(reserve, TICK)
        self.fuel_reserve = reserve - n
        self.fuel[0] += n
        return True

    def start_ticks(self) -> None:
        """Hold back all fuel beyond one tick (see ``fuel_reserve``); tiering needs the ticks."""
        if self.tier == "interp":
            return
        from ..execution.tier import TICK

        excess = self.fuel[0] - TICK
        if excess > 0:
            self.fuel_reserve += excess
            self.fuel[0] = TICK

    def settle_fuel(self) -> None:
        """Give the reserve back to the counter (at the end of a run)."""
        self.fuel[0] += self.fuel_reserve
        self.fuel_reserve = 0
        # (wasm frames below, depth argument) of the outermost running compiled call, so that
        # an interpreter started inside compiled code knows its depth (vm.execution.tier).
        self.compiled_origin = (0, 0)

    def add_fuel(self, amount: int) -> None:
        self.fuel[0] += amount

    @property
    def fuel_remaining(self) -> int | None:
        return self.fuel[0] + self.fuel_reserve if self.fuel_limited else None

    def out_of_fuel(self) -> None:
        """Called by the machine when a back-edge finds no fuel left."""
        if not self.fuel_limited:
            self.fuel[0] = UNLIMITED_FUEL
            return
        raise ExhaustionError("all fuel consumed")
