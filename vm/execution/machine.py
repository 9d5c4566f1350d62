"""The machine loop: runs translated code with an explicit call stack.

Calls and returns never recurse in Python. A frame is plain data (function, register list,
position), so the whole execution state is a list of frames that can be snapshotted
(:mod:`vm.snapshot`). The inner loop only calls closures; a closure returns ``-1 - pc`` when the
machine must act: push a frame for a call, pop one for a return, or stop for fuel.

Two ways to run code:

* :meth:`Machine.invoke` — call a function to completion (traps raise);
* :class:`Execution` — a resumable invocation: run it with a fuel budget, and it comes back
  ``"suspended"`` at a loop back-edge or call when the fuel is spent, or ``"host"`` when a host
  function raised :class:`vm.errors.Suspend`; both can be snapshotted and continued later.
"""

from __future__ import annotations

import struct
from typing import Any

from ..errors import ExhaustionError, Suspend, TrapError, WasmError
from ..runtime.objects import Function, HostFunction, WasmFunction
from .translate import S_CALL, S_CALL_INDIRECT, S_FUEL, S_RETURN, Compiled, translate


class Frame:
    """One activation: ``pc`` indexes ``compiled.code`` (while the frame is suspended in a call,
    it is the position of that call)."""

    __slots__ = ("func", "compiled", "regs", "pc")

    def __init__(self, func: WasmFunction, compiled: Compiled, regs: list, pc: int = 0) -> None:
        self.func = func
        self.compiled = compiled
        self.regs = regs
        self.pc = pc

    @property
    def offset(self) -> int:
        """The wasm bytecode offset of the frame's current position."""
        offsets = self.compiled.offsets
        if not offsets:
            return self.func.func.offset
        return offsets[min(self.pc, len(offsets) - 1)]


class _FuelStop(Exception):
    """Internal: the fuel ran out in a resumable execution; frames are left as they are."""


def compiled_code(func: WasmFunction, fuel: list[int]) -> Compiled:
    c = func.compiled
    if c is None:
        c = func.compiled = translate(func, fuel)
    return c


def _trap_from(exc: BaseException) -> TrapError:
    """Map an exception raised inside translated code to the spec's trap."""
    if isinstance(exc, TrapError):
        return exc
    if isinstance(exc, struct.error):
        return TrapError("out of bounds memory access")
    if isinstance(exc, MemoryError):
        return ExhaustionError("out of memory")
    raise exc


def _host_results(func: HostFunction, value: Any) -> list[Any]:
    n = len(func.type.results)
    if n == 0:
        return []
    if n == 1 and not isinstance(value, (tuple, list)):
        return [value]
    results = list(value)
    if len(results) != n:
        raise WasmError(f"host function {func.name} returned {len(results)} values, expected {n}")
    return results


def normalize(value: Any) -> Any:
    """Turn Python bools that comparisons may leave into ints at the API boundary."""
    if type(value) is bool:
        return int(value)
    return value


class Machine:
    """A call stack and the loop that runs it, on behalf of a store."""

    def __init__(self, store: Any, resumable: bool = False) -> None:
        self.store = store
        self.frames: list[Frame] = []
        # Resumable machines stop when fuel runs out and let Suspend through with the frames
        # intact; plain ones report exhaustion and always unwind.
        self.resumable = resumable

    def push(self, func: WasmFunction, args: list[Any]) -> None:
        if len(self.frames) >= self.store.max_call_depth:
            raise ExhaustionError("call stack exhausted")
        compiled = compiled_code(func, self.store.fuel)
        self.frames.append(Frame(func, compiled, list(args) + compiled.tail))

    def invoke(self, func: Function, args: list[Any]) -> list[Any]:
        if isinstance(func, HostFunction):
            return [normalize(v) for v in _host_results(func, func.fn(*args))]
        assert isinstance(func, WasmFunction)
        frames = self.frames
        base = len(frames)
        self.push(func, args)
        try:
            results = self.run(base)
        except BaseException:
            del frames[base:]
            raise
        return [normalize(v) for v in results]

    def backtrace(self, base: int = 0) -> list[tuple[int, int]]:
        return [(f.func.index, f.offset) for f in reversed(self.frames[base:])]

    def run(self, base: int = 0) -> list[Any]:  # noqa: C901 - the interpreter's hot loop
        """Run the frames above ``base`` until the one at ``base`` returns; its results."""
        frames = self.frames
        store = self.store
        fuel = store.fuel
        max_depth = store.max_call_depth
        frame = frames[-1]
        compiled = frame.compiled
        code = compiled.code
        specials = compiled.specials
        r = frame.regs
        pc = frame.pc
        while True:
            try:
                while pc >= 0:
                    pc = code[pc](r, pc)
            except Exception as exc:  # a trap inside translated code
                frame.pc = pc
                trap = _trap_from(exc)
                trap.backtrace = self.backtrace(base)
                raise trap from (None if exc is trap else exc)
            pc = -1 - pc
            frame.pc = pc
            rec = specials[pc]
            kind = rec[0]
            if kind == S_CALL or kind == S_CALL_INDIRECT:
                if kind == S_CALL:
                    callee, argbase, nargs = rec[1], rec[2], rec[3]
                else:
                    callee = self._indirect_target(rec, r, base)
                    argbase, nargs = rec[3], rec[4]
                # Function entry is a preemption point: stop before the call when out of fuel.
                if fuel[0] <= 0:
                    self._out_of_fuel()
                    continue
                fuel[0] -= 1
                if type(callee) is WasmFunction:
                    if len(frames) >= max_depth:
                        err = ExhaustionError("call stack exhausted")
                        err.backtrace = self.backtrace(base)
                        raise err
                    compiled = callee.compiled or compiled_code(callee, fuel)
                    r = r[argbase:argbase + nargs] + compiled.tail
                    frame = Frame(callee, compiled, r)
                    frames.append(frame)
                    code = compiled.code
                    specials = compiled.specials
                    pc = 0
                else:
                    results = self._call_host(callee, r[argbase:argbase + nargs], base)
                    r[argbase:argbase + len(results)] = results
                    pc += 1
            elif kind == S_RETURN:
                srcs = rec[1]
                frames.pop()
                if len(frames) == base:
                    return [r[s] for s in srcs]
                caller = frames[-1]
                call = caller.compiled.specials[caller.pc]
                argbase = call[2] if call[0] == S_CALL else call[3]
                cr = caller.regs
                for s in srcs:
                    cr[argbase] = r[s]
                    argbase += 1
                frame = caller
                compiled = frame.compiled
                code = compiled.code
                specials = compiled.specials
                r = cr
                pc = frame.pc + 1
            elif kind == S_FUEL:
                self._out_of_fuel()
            else:  # pragma: no cover - translation emits only the kinds above
                raise WasmError(f"internal error: unknown special {kind}")

    def _out_of_fuel(self) -> None:
        if self.resumable and self.store.fuel_limited:
            raise _FuelStop()
        self.store.out_of_fuel()

    def _indirect_target(self, rec: tuple, r: list, base: int) -> Function:
        ftype, table = rec[1], rec[2]
        i = r[rec[5]]
        elements = table.elements
        if i >= len(elements):
            err = TrapError(f"undefined element {i}")
        else:
            callee = elements[i]
            if callee is None:
                err = TrapError(f"uninitialized element {i}")
            elif callee.type != ftype:
                err = TrapError("indirect call type mismatch")
            else:
                return callee
        err.backtrace = self.backtrace(base)
        raise err

    def _call_host(self, func: Function, args: list[Any], base: int) -> list[Any]:
        try:
            if isinstance(func, HostFunction):
                return _host_results(func, func.fn(*[normalize(v) for v in args]))
            return self.store.invoke(func, args)
        except TrapError as trap:
            if not trap.backtrace:
                trap.backtrace = self.backtrace(base)
            raise
        except Suspend as suspend:
            if not self.resumable:
                raise WasmError(f"host function {getattr(func, 'name', '?')} suspended outside "
                                "a resumable execution") from suspend
            suspend.func = func
            suspend.call_args = [normalize(v) for v in args]
            raise


class Execution:
    """A resumable invocation of one function.

    ``status`` is one of ``"ready"`` (can run), ``"suspended"`` (stopped for fuel; run again to
    continue), ``"host"`` (a host function suspended; deliver its results with
    :meth:`complete_host`), ``"done"`` (``results`` holds the results) or ``"failed"`` (it
    trapped; the trap was raised by :meth:`run`).
    """

    def __init__(self, store: Any, func: Function, args: list[Any] | tuple[Any, ...]) -> None:
        self.store = store
        self.func = func
        self.machine = Machine(store, resumable=True)
        self.status = "ready"
        self.results: list[Any] | None = None
        self.pending: Suspend | None = None  # the host call a "host" execution waits on
        self.delivered: list[Any] | None = None  # its results, until the next run applies them
        self.fuel_left: int | None = None
        if isinstance(func, WasmFunction):
            self.machine.push(func, list(args))
        else:
            self._host_entry = list(args)

    @property
    def frames(self) -> list[Frame]:
        return self.machine.frames

    def run(self, fuel: int | None = None) -> str:
        """Run until done, out of ``fuel`` (None: no limit), or suspended by a host function."""
        if self.status not in ("ready", "suspended"):
            raise WasmError(f"cannot run an execution that is {self.status}")
        if self.delivered is not None:
            self._apply_delivered()
        store = self.store
        saved = (store.fuel[0], store.fuel_limited)
        store.fuel_limited = fuel is not None
        if fuel is not None:
            store.fuel[0] = fuel
        try:
            if isinstance(self.func, WasmFunction):
                results = self.machine.run(0)
            else:
                results = self.machine.invoke(self.func, self._host_entry)
        except _FuelStop:
            self.status = "suspended"
            return self.status
        except Suspend as suspend:
            self.status = "host"
            self.pending = suspend
            return self.status
        except BaseException:
            self.status = "failed"
            self.machine.frames.clear()
            raise
        finally:
            self.fuel_left = store.fuel[0] if store.fuel_limited else None
            store.fuel[0], store.fuel_limited = saved
        self.status = "done"
        self.results = [normalize(v) for v in results]
        return self.status

    def complete_host(self, results: Any) -> None:
        """Deliver the results of the pending host call; the execution becomes ``ready``.

        The results are applied when the execution next runs, so until then the execution still
        stands at the call (and a snapshot records the call with its results)."""
        if self.status != "host" or self.pending is None:
            raise WasmError("no host call is pending")
        func = self.pending.func
        self.delivered = (_host_results(func, results) if isinstance(func, HostFunction)
                          else list(results))
        self.status = "ready"

    def _apply_delivered(self) -> None:
        values = self.delivered
        assert values is not None
        frame = self.machine.frames[-1]
        call = frame.compiled.specials[frame.pc]
        argbase = call[2] if call[0] == S_CALL else call[3]
        frame.regs[argbase:argbase + len(values)] = values
        frame.pc += 1
        self.delivered = None
        self.pending = None
