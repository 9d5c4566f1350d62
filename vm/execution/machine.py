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
from . import tier as T
from .translate import S_CALL, S_CALL_INDIRECT, S_FUEL, S_RETURN, Compiled, translate

_UNWOUND = object()  # a compiled call stopped; its frames are now interpreter frames


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
    if isinstance(exc, (struct.error, IndexError)):
        return TrapError("out of bounds memory access")
    if isinstance(exc, ZeroDivisionError):
        return TrapError("integer divide by zero")
    if isinstance(exc, MemoryError):
        return ExhaustionError("out of memory")
    if isinstance(exc, RecursionError):
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


def _as_list(value: Any, n: int) -> list[Any]:
    """A generated function's return value (None, one value, or a tuple) as a result list."""
    if n == 0:
        return []
    if n == 1:
        return [value]
    return list(value)


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
        # Python call depth of compiled code this machine's calls start at (a machine run from
        # compiled code starts deeper; see vm.execution.tier).
        self.depth_base = 0
        # Wasm frames below this machine's (a machine run from compiled code sits on top of
        # other frames); they count against the store's max_call_depth.
        self.frame_offset = 0

    def push(self, func: WasmFunction, args: list[Any]) -> None:
        if len(self.frames) + self.frame_offset >= self.store.max_call_depth:
            raise ExhaustionError("call stack exhausted")
        compiled = compiled_code(func, self.store.fuel)
        self.frames.append(Frame(func, compiled, list(args) + compiled.tail))

    def invoke(self, func: Function, args: list[Any]) -> list[Any]:
        if isinstance(func, HostFunction):
            return [normalize(v) for v in _host_results(func, func.fn(*args))]
        assert isinstance(func, WasmFunction)
        frames = self.frames
        base = len(frames)
        store = self.store
        ticking = store.fuel_reserve == 0  # the outermost run: it sets up the fuel ticks
        if ticking:
            store.start_ticks()
        try:
            results = self.enter(func, args, base)
        except BaseException:
            del frames[base:]
            raise
        finally:
            if ticking:
                store.settle_fuel()
        return [normalize(v) for v in results]

    def enter(self, func: WasmFunction, args: list[Any], base: int) -> list[Any]:
        """Run ``func`` to completion with the frames above ``base``: compiled when its tier
        says so, else (or after a compiled stop) in the interpreter."""
        py = func.py or T.tier_up(func)
        if py is not None and self.depth_base < T.DLIM - 8:
            if len(self.frames) + self.frame_offset >= self.store.max_call_depth:
                raise ExhaustionError("call stack exhausted")
            fuel = self.store.fuel
            if fuel[0] > 0 or self.store.refuel():
                # The prologue takes a unit for the call; the interpreter charges none for
                # the entry, so neither may this.
                fuel[0] += 1
                value = self.call_compiled(py, args, base)
                if value is not _UNWOUND:
                    return _as_list(value, len(func.type.results))
                if len(self.frames) > base:
                    return self.run(base)
        self.push(func, args)
        return self.run(base)

    def call_compiled(self, py: Any, args: list[Any], base: int) -> Any:
        """Call a generated function; on a stop, its frames become interpreter frames on this
        machine's stack and the result is ``_UNWOUND``."""
        # Compiled calls nest in Python; start them deep enough that they stop (EnterStop) before
        # the wasm call depth, these frames included, exceeds the store's limit.
        store = self.store
        below = self.frame_offset + len(self.frames)
        d = max(self.depth_base, T.DLIM - (store.max_call_depth - below - 1))
        # Where the compiled frames start, for a nested interpreter started among them.
        saved = store.compiled_origin
        store.compiled_origin = (below, d)
        try:
            return py(d, *args)
        except T.EnterStop as exc:
            self._rebuild(exc, False)
            return _UNWOUND
        except T.FuelOut as exc:
            self._rebuild(exc, False)
            self._out_of_fuel()
            return _UNWOUND
        except (Suspend, _FuelStop) as exc:
            if isinstance(exc, Suspend) and not self.resumable:
                raise WasmError(f"host function {getattr(exc.func, 'name', '?')} suspended "
                                "outside a resumable execution") from None
            self._rebuild(exc, True)
            if isinstance(exc, _FuelStop) and not self.resumable:
                self._out_of_fuel()
                return _UNWOUND
            raise exc.with_traceback(None)
        except Exception as exc:
            trap = _trap_from(exc)
            trap.backtrace = (list(trap.backtrace) + T.backtrace(exc.__traceback__)
                              + self.backtrace(base))
            raise trap.with_traceback(None) from (None if exc is trap else exc)
        finally:
            store.compiled_origin = saved

    def _rebuild(self, exc: BaseException, in_call: bool) -> None:
        frames = T.rebuild(exc, exc.__traceback__, in_call)
        frames += getattr(exc, "dwasm_frames", ())
        exc.__traceback__ = None
        self.frames.extend(frames)
        if len(self.frames) + self.frame_offset > self.store.max_call_depth:
            raise ExhaustionError("call stack exhausted")

    def backtrace(self, base: int = 0) -> list[tuple[int, int]]:
        return [(f.func.index, f.offset) for f in reversed(self.frames[base:])]

    def run(self, base: int = 0) -> list[Any]:  # noqa: C901 - the interpreter's hot loop
        """Run the frames above ``base`` until the one at ``base`` returns; its results."""
        frames = self.frames
        store = self.store
        fuel = store.fuel
        max_depth = store.max_call_depth - self.frame_offset
        tiered = store.tier != "interp"
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
                if fuel[0] <= 0 and not store.refuel():
                    self._out_of_fuel()
                    continue
                if type(callee) is WasmFunction:
                    if len(frames) >= max_depth:
                        err = ExhaustionError("call stack exhausted")
                        err.backtrace = self.backtrace(base)
                        raise err
                    py = callee.py or (tiered and T.tier_up(callee))
                    if py and self.depth_base < T.DLIM - 8:
                        # The generated prologue takes the call's unit of fuel.
                        value = self.call_compiled(py, r[argbase:argbase + nargs], base)
                        if value is _UNWOUND:
                            frame = frames[-1]
                            compiled = frame.compiled
                            code = compiled.code
                            specials = compiled.specials
                            r = frame.regs
                            pc = frame.pc
                            continue
                        n = len(callee.type.results)
                        if n == 1:
                            r[argbase] = value
                        elif n:
                            r[argbase:argbase + n] = value
                        pc += 1
                        continue
                    fuel[0] -= 1
                    compiled = callee.compiled or compiled_code(callee, fuel)
                    r = r[argbase:argbase + nargs] + compiled.tail
                    frame = Frame(callee, compiled, r)
                    frames.append(frame)
                    code = compiled.code
                    specials = compiled.specials
                    pc = 0
                else:
                    fuel[0] -= 1
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
                if store.refuel():  # a tick: the fuel is not spent, the running loop is hot
                    if tiered:
                        value = self._tick(frame, base)
                        if value is not None:
                            if len(frames) == base and value is not _UNWOUND:
                                return value
                            frame = frames[-1]
                            if value is not _UNWOUND:
                                self._deliver(frame, value)
                            compiled = frame.compiled
                            code = compiled.code
                            specials = compiled.specials
                            r = frame.regs
                            pc = frame.pc
                    continue
                self._out_of_fuel()
            else:  # pragma: no cover - translation emits only the kinds above
                raise WasmError(f"internal error: unknown special {kind}")

    def _tick(self, frame: Frame, base: int) -> Any:
        """At a loop back-edge of an interpreted frame, once per fuel tick: when its function
        is hot, continue the frame in compiled code (on-stack replacement). Returns None (go on
        interpreting), _UNWOUND (compiled code stopped; its frames are on the stack) or the
        frame's results as a list (the frame was popped)."""
        func = frame.func
        if func.py_failed or self.depth_base >= T.DLIM - 8:
            return None
        if func.py is None:
            func.calls += T.TICK_CREDIT
            if self.store.tier != "compiled" and func.calls < T.HOT_CALLS:
                return None
        got = T.osr_function(func)
        if got is None:
            return None
        py, entries = got
        compiled = frame.compiled
        pc = frame.pc
        entry = entries.get(compiled.offsets[pc])
        if entry is None:
            return None
        r = frame.regs
        stack = [r[x] for x in compiled.stack_maps[pc]]
        # The frame stands before a branch that goes back to a loop (S_FUEL stops only there);
        # compiled code takes over at that loop's header, with the branch's values.
        if entry[0] == "t":  # br_table: the index (on top of the stack) picks the loop
            _, nvs, per = entry
            i = stack[-1]
            target = per[i if i < len(per) - 1 else -1]
            if target is None:
                return None
            k, height, arity = target
        else:
            k, height, arity, nvs = entry
        header = tuple(stack[:height] + stack[nvs - arity:nvs])
        self.store.fuel[0] -= 1  # the back-edge's unit (the tick's refuel left at least one)
        T.stats["osr"] += 1
        self.frames.pop()
        value = self.call_compiled(py, [k, header] + r[:compiled.nlocals], base)
        if value is _UNWOUND:
            return value
        return _as_list(value, len(func.type.results))

    def _deliver(self, caller: Frame, results: list[Any]) -> None:
        """Results of the call ``caller`` stands at: into its registers, and step past it."""
        call = caller.compiled.specials[caller.pc]
        argbase = call[2] if call[0] == S_CALL else call[3]
        caller.regs[argbase:argbase + len(results)] = results
        caller.pc += 1

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
        store.start_ticks()
        try:
            if isinstance(self.func, WasmFunction):
                frames = self.machine.frames
                if (len(frames) == 1 and frames[0].pc == 0 and self.status == "ready"
                        and self.pending is None):
                    # Never run: the whole call may go to compiled code.
                    frame = frames.pop()
                    results = self.machine.enter(self.func, frame.regs[:frame.compiled.nparams],
                                                 0)
                else:
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
            store.settle_fuel()
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
