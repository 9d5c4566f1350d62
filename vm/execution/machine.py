"""The machine loop: runs translated code with an explicit call stack.

Calls and returns never recurse in Python. A frame is plain data (function, register list,
position), so the whole execution state is a list of frames that later versions can snapshot.
The inner loop only calls closures; a closure returns ``-1 - pc`` when the machine must act:
push a frame for a call, pop one for a return, or stop for fuel.
"""

from __future__ import annotations

import struct
from typing import Any

from ..errors import ExhaustionError, TrapError, WasmError
from ..runtime.objects import Function, HostFunction, WasmFunction
from ..structure import I32, I64
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
    if isinstance(exc, (RecursionError,)):
        return ExhaustionError("call stack exhausted")
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


def normalize(valtype: int, value: Any) -> Any:
    """Turn Python bools that comparisons may leave into ints at the API boundary."""
    if type(value) is bool:
        return int(value)
    return value


class Machine:
    """Runs invocations on behalf of a store; holds the call stack."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.frames: list[Frame] = []

    def invoke(self, func: Function, args: list[Any]) -> list[Any]:
        if isinstance(func, HostFunction):
            return _host_results(func, func.fn(*args))
        assert isinstance(func, WasmFunction)
        store = self.store
        frames = self.frames
        base = len(frames)
        if base >= store.max_call_depth:
            raise ExhaustionError("call stack exhausted")
        compiled = compiled_code(func, store.fuel)
        regs = list(args) + compiled.tail
        frames.append(Frame(func, compiled, regs))
        try:
            results = self._run(base)
        except BaseException:
            del frames[base:]
            raise
        return [normalize(t, v) for t, v in zip(func.type.results, results)]

    def _run(self, base: int) -> list[Any]:  # noqa: C901 - the interpreter's hot loop
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
                trap.backtrace = [(f.func.index, f.offset) for f in reversed(frames[base:])]
                raise trap from (None if exc is trap else exc)
            pc = -1 - pc
            rec = specials[pc]
            kind = rec[0]
            if kind == S_CALL or kind == S_CALL_INDIRECT:
                argbase = rec[2 if kind == S_CALL else 3]
                nargs = rec[3 if kind == S_CALL else 4]
                if kind == S_CALL:
                    callee = rec[1]
                else:
                    callee = self._indirect_target(rec, r, frame, pc, base)
                if type(callee) is WasmFunction:
                    if len(frames) >= max_depth:
                        frame.pc = pc
                        err = ExhaustionError("call stack exhausted")
                        err.backtrace = [(f.func.index, f.offset) for f in reversed(frames[base:])]
                        raise err
                    frame.pc = pc
                    compiled = callee.compiled or compiled_code(callee, fuel)
                    r = r[argbase:argbase + nargs] + compiled.tail
                    frame = Frame(callee, compiled, r)
                    frames.append(frame)
                    code = compiled.code
                    specials = compiled.specials
                    pc = 0
                else:
                    frame.pc = pc
                    results = self._call_host(callee, r[argbase:argbase + nargs], base)
                    r[argbase:argbase + len(results)] = results
                    pc += 1
            elif kind == S_RETURN:
                results = [r[s] for s in rec[1]]
                frames.pop()
                if len(frames) == base:
                    return results
                frame = frames[-1]
                compiled = frame.compiled
                code = compiled.code
                specials = compiled.specials
                r = frame.regs
                pc = frame.pc
                call = specials[pc]
                argbase = call[2 if call[0] == S_CALL else 3]
                r[argbase:argbase + len(results)] = results
                pc += 1
            elif kind == S_FUEL:
                frame.pc = pc
                store.out_of_fuel()
            else:  # pragma: no cover - translation emits only the kinds above
                raise WasmError(f"internal error: unknown special {kind}")

    def _indirect_target(self, rec: tuple, r: list, frame: Frame, pc: int, base: int) -> Function:
        ftype, table = rec[1], rec[2]
        i = r[rec[5]]
        elements = table.elements
        err = None
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
        frame.pc = pc
        err.backtrace = [(f.func.index, f.offset) for f in reversed(self.frames[base:])]
        raise err

    def _call_host(self, func: Function, args: list[Any], base: int) -> list[Any]:
        try:
            if isinstance(func, HostFunction):
                args = [normalize(t, v) for t, v in zip(func.type.params, args)]
                return _host_results(func, func.fn(*args))
            return self.invoke(func, args)  # a function of another store's machine type
        except TrapError as trap:
            if not trap.backtrace:
                trap.backtrace = [(f.func.index, f.offset) for f in reversed(self.frames[base:])]
            raise


__all__ = ["Machine", "Frame", "I32", "I64"]
