"""The compiled tier: when a function is compiled, what its generated code runs against, and how
compiled frames become interpreter frames again (docs/vm.md, "Compiled tier").

Generated functions (:mod:`vm.execution.codegen`) take ``(d, *params)``: ``d`` is the Python call
depth of compiled code, checked against :data:`DLIM` in each prologue so that deep wasm recursion
never reaches Python's recursion limit. Results come back as a value, a tuple (multi-value) or
None. They call each other directly through the names ``F<index>`` of their instance's namespace:
a compiled callee is a plain Python call, a host function goes through a small wrapper, and a
function not compiled yet through a stub that counts its calls and compiles it when hot (or runs
it in a nested interpreter while it is cold).

Nothing in compiled code keeps execution state that the interpreter cannot hold. When compiled
code has to stop — fuel spent at a back-edge or call, a host function suspending, Python depth
exhausted — an exception travels up through the compiled frames, and the machine that made the
outermost call rebuilds each of them as an interpreter frame from the exception's traceback: the
traceback's line number names the stop point (``codegen`` records one per line), and the frame's
``f_locals`` hold the wasm locals and stack slots. Generated code pays nothing for this on its
normal path. Traps get their backtraces the same way, from line numbers.
"""

from __future__ import annotations

import builtins
import hashlib
import marshal
import os
import struct
import sys
from pathlib import Path
from types import CodeType, TracebackType
from typing import Any, Callable

from ..errors import Suspend, TrapError, WasmError
from ..runtime.objects import Function, HostFunction, WasmFunction
from . import codegen, numerics

TIERS = ("interp", "compiled", "auto")
HOT_CALLS = 20  # calls after which the auto tier compiles a function
TICK = 1000  # fuel units between the machine's looks at a running interpreted loop
TICK_CREDIT = 10  # what one tick adds to the running function's call count (2 ticks: hot)
DLIM = codegen.DLIM_LITERAL  # nested compiled calls per Python stack; deeper ones interpret
CODEGEN_VERSION = 1


def default_tier() -> str:
    """The tier named by the ``DWASM_TIER`` environment variable (default ``auto``)."""
    tier = os.environ.get("DWASM_TIER", "auto") or "auto"
    if tier not in TIERS:
        raise WasmError(f"DWASM_TIER must be one of {', '.join(TIERS)}, not {tier!r}")
    return tier


class EnterStop(Exception):
    """Raised when a call is about to enter a function but must not: Python depth is used up or
    the fuel is spent. The caller's frame stands at the call, not in it."""


GO = object()  # PRO's answer: the function may run


class FuelOut(Exception):
    """Raised at a loop back-edge when the fuel is spent; carries the wasm operand stack."""

    def __init__(self, stack: tuple) -> None:
        super().__init__()
        self.stack = stack


# Generated function code objects -> (function index, line table); see codegen.
CODE_INFO: dict[CodeType, tuple[int, dict[int, tuple]]] = {}

# Counters for tests and benchmarks: functions compiled, functions this tier cannot express,
# code loaded from the disk cache, on-stack replacements.
stats = {"compiled": 0, "failed": 0, "cache_hits": 0, "osr": 0}


# --- the namespace generated code runs in ------------------------------------------------------

def _base_namespace() -> dict[str, Any]:
    ns: dict[str, Any] = {"__builtins__": builtins, "DLIM": DLIM, "Trap": TrapError,
                          "FuelOut": FuelOut, "f32b": numerics.f32_from_bits,
                          "f32t": numerics.f32_to_bits, "f64b": numerics.f64_from_bits}
    for fmt in codegen.STRUCT_FORMATS:
        s = struct.Struct("<" + fmt)
        ns["ld_" + fmt] = s.unpack_from
        ns["st_" + fmt] = s.pack_into
    for fn in numerics.OPS.values():
        ns["n_" + fn.__name__] = fn
    from . import simd

    for fn in simd.OPS.values():
        ns["v_" + fn.__name__] = fn
    ns["v128_ld"] = _v128_ld
    ns["v128_st"] = _v128_st
    return ns


_QQ = struct.Struct("<QQ").unpack_from
_B16 = struct.Struct("16s").pack_into


def _v128_ld(mem: bytearray, addr: int) -> int:
    lo, hi = _QQ(mem, addr)
    return lo | hi << 64


def _v128_st(mem: bytearray, addr: int, v: int) -> None:
    _B16(mem, addr, v.to_bytes(16, "little"))


_BASE = _base_namespace()


def _oob(what: str) -> TrapError:
    return TrapError(f"out of bounds {what} access")


def namespace(inst: Any) -> dict[str, Any]:
    """The globals of the instance's generated functions (built on the first compile)."""
    ns = getattr(inst, "_py_ns", None)
    if ns is not None:
        return ns
    store = inst.store
    fuel = store.fuel
    refuel = store.refuel
    ns = dict(_BASE)

    funcs = inst.funcs

    def PRO(d: int, index: int, args: tuple) -> Any:
        """The slow path of a prologue: out of fuel (refuel, or stop before the call), or too
        deep for Python (run the function in a nested interpreter, which recurses without
        Python calls). GO: the generated function goes on."""
        if fuel[0] <= 0 and not refuel():
            raise EnterStop()
        if d <= DLIM:
            return GO
        fuel[0] -= 1  # the call's unit, which the prologue would have taken
        return run_nested(funcs[index], d, args)

    ns.update(__instance__=inst, FUEL=fuel, REFUEL=refuel, PRO=PRO, GO=GO, FUNCS=inst.funcs,
              INST=inst)
    for i, g in enumerate(inst.globals):
        ns[f"G{i}"] = g
    for i, t in enumerate(inst.tables):
        ns[f"T{i}"] = t
    for i, f in enumerate(inst.funcs):
        ns[f"F{i}"] = callable_of(f, store)
    if inst.mems:
        mem = inst.mems[0]
        data = mem.data
        ns["M"] = data
        grow = mem.grow

        def mem_grow(n: int) -> int:
            return grow(n) & 0xFFFFFFFF

        def mem_fill(d: int, v: int, n: int) -> None:
            if d + n > len(data):
                raise _oob("memory")
            if n:
                data[d:d + n] = bytes([v & 0xFF]) * n

        def mem_copy(d: int, s: int, n: int) -> None:
            size = len(data)
            if s + n > size or d + n > size:
                raise _oob("memory")
            if n:
                data[d:d + n] = data[s:s + n]

        datas = inst.datas

        def mem_init(d: int, s: int, n: int, seg: int) -> None:
            seg_bytes = datas[seg]
            if s + n > len(seg_bytes) or d + n > len(data):
                raise _oob("memory")
            if n:
                data[d:d + n] = seg_bytes[s:s + n]

        ns.update(mem_grow=mem_grow, mem_fill=mem_fill, mem_copy=mem_copy, mem_init=mem_init)
    elems = inst.elems

    def table_get(t: Any, i: int) -> Any:
        el = t.elements
        if i >= len(el):
            raise _oob("table")
        return el[i]

    def table_set(t: Any, i: int, v: Any) -> None:
        el = t.elements
        if i >= len(el):
            raise _oob("table")
        el[i] = v

    def table_fill(t: Any, d: int, v: Any, n: int) -> None:
        el = t.elements
        if d + n > len(el):
            raise _oob("table")
        el[d:d + n] = [v] * n

    def table_copy(td: Any, ts: Any, d: int, s: int, n: int) -> None:
        de, se = td.elements, ts.elements
        if s + n > len(se) or d + n > len(de):
            raise _oob("table")
        de[d:d + n] = se[s:s + n]

    def table_init(t: Any, d: int, s: int, n: int, seg: int) -> None:
        el = t.elements
        segment = elems[seg]
        if s + n > len(segment) or d + n > len(el):
            raise _oob("table")
        el[d:d + n] = segment[s:s + n]

    types = inst.module.types

    def CI(table: Any, typeidx: int, i: int) -> Callable[..., Any]:
        el = table.elements
        if i >= len(el):
            raise TrapError(f"undefined element {i}")
        f = el[i]
        if f is None:
            raise TrapError(f"uninitialized element {i}")
        ft = types[typeidx]
        if f.type is not ft and f.type != ft:
            raise TrapError("indirect call type mismatch")
        return callable_of(f, store)

    ns.update(table_get=table_get, table_set=table_set, table_fill=table_fill,
              table_copy=table_copy, table_init=table_init, CI=CI)
    inst._py_ns = ns
    return ns


def callable_of(f: Function, store: Any) -> Callable[..., Any]:
    """What compiled code calls for ``f``: its generated function, a stub, or a host wrapper."""
    if isinstance(f, WasmFunction):
        c = f.call
        if c is None:
            f.call = c = _stub(f)
        return c
    assert isinstance(f, HostFunction)
    wrappers = store.__dict__.setdefault("_host_wrappers", {})
    c = wrappers.get(id(f))
    if c is None:
        c = wrappers[id(f)] = _host_wrapper(f, store)
    return c


def _host_wrapper(func: HostFunction, store: Any) -> Callable[..., Any]:
    from .machine import _host_results

    fn = func.fn
    fuel = store.fuel
    refuel = store.refuel
    nres = len(func.type.results)

    def host(d: int, *args: Any) -> Any:
        # A call is a preemption point, host calls included (as in the interpreter).
        if fuel[0] <= 0 and not refuel():
            raise EnterStop()
        fuel[0] -= 1
        try:
            value = fn(*args)
        except Suspend as suspend:
            suspend.func = func
            suspend.call_args = list(args)
            raise
        if nres == 0:
            return None
        results = _host_results(func, value)
        return results[0] if nres == 1 else tuple(results)
    return host


def _stub(func: WasmFunction) -> Callable[..., Any]:
    store = func.instance.store
    fuel = store.fuel
    refuel = store.refuel

    def stub(d: int, *args: Any) -> Any:
        py = func.py
        if py is None:
            py = tier_up(func)
            if py is None:
                # The call's unit of fuel, which a generated prologue would have taken.
                if fuel[0] <= 0 and not refuel():
                    raise EnterStop()
                fuel[0] -= 1
                return run_nested(func, d, args)
        return py(d, *args)
    return stub


def tier_up(func: WasmFunction) -> Callable[..., Any] | None:
    """Count a call of ``func``; its generated function when the store's tier says to use it."""
    tier = func.instance.store.tier
    if tier == "interp" or func.py_failed:
        return None
    func.calls += 1
    if tier == "compiled" or func.calls >= HOT_CALLS:
        return compile_function(func)
    if func.calls == 1 and _cached(func):
        # Compiled in an earlier run (a restart): no reason to interpret it first.
        return compile_function(func)
    return None


def _cached(func: WasmFunction) -> bool:
    module = func.instance.module
    if func.index in module.pycode:
        return True
    path = _cache_file(module, func.index)
    return path is not None and path.is_file()


def run_nested(func: WasmFunction, d: int, args: tuple) -> Any:
    """Run a function that is not compiled, called from compiled code, in an interpreter of its
    own. A stop inside it leaves with its interpreter frames attached to the exception, so the
    outer machine can stack them above the compiled frames it rebuilds."""
    from .machine import Machine, _FuelStop

    store = func.instance.store
    m = Machine(store, resumable=True)
    m.depth_base = d + 3
    below, d0 = store.compiled_origin
    m.frame_offset = below + max(0, d - d0)
    m.push(func, list(args))
    try:
        results = m.run(0)
    except (Suspend, _FuelStop) as exc:
        exc.dwasm_frames = list(m.frames)  # type: ignore[attr-defined]
        raise
    n = len(results)
    if n == 0:
        return None
    return results[0] if n == 1 else tuple(results)


# --- compiling --------------------------------------------------------------------------------

def compile_function(func: WasmFunction) -> Callable[..., Any] | None:
    """The generated Python function of ``func`` (None if this tier cannot express it)."""
    if func.py is not None:
        return func.py
    if func.py_failed:
        return None
    inst = func.instance
    module = inst.module
    entry = module.pycode.get(func.index)
    if entry is None:
        entry = _load(module, func.index)
        if entry is None:
            entry = _generate(func)
            _save(module, func.index, entry)
        module.pycode[func.index] = entry
    code, table = entry
    if code is None:
        func.py_failed = True
        stats["failed"] += 1
        return None
    ns = namespace(inst)
    exec(code, ns)
    py = ns[f"f{func.index}"]
    CODE_INFO[py.__code__] = (func.index, table)
    func.py = py
    func.call = py
    ns[f"F{func.index}"] = py
    stats["compiled"] += 1
    return py


def osr_function(func: WasmFunction) -> tuple[Callable[..., Any], dict[int, int]] | None:
    """The OSR variant of ``func`` (entered at a back-edge's stop point) and its entries
    (stop offset -> entry id), or None when this tier cannot express the function."""
    if compile_function(func) is None:
        return None
    inst = func.instance
    ns = namespace(inst)
    osr = ns.setdefault("__osr__", {})
    got = osr.get(func.index)
    if got is not None:
        return got
    module = inst.module
    key = -1 - func.index  # the variant's slot in Module.pycode and the disk cache
    entry = module.pycode.get(key)
    if entry is None:
        entry = _load(module, key)
        if entry is None:
            entry = _generate(func, osr=True)
            _save(module, key, entry)
        module.pycode[key] = entry
    code, table = entry
    if code is None:
        return None
    exec(code, ns)
    py = ns[f"f{func.index}_osr"]
    CODE_INFO[py.__code__] = (func.index, table)
    osr[func.index] = got = (py, table[0])
    return got


def _generate(func: WasmFunction, osr: bool = False) -> tuple[CodeType | None, dict | None]:
    from .machine import compiled_code
    from .translate import S_FUEL

    inst = func.instance
    interp = compiled_code(func, inst.store.fuel)
    fuel_offsets = frozenset(interp.offsets[pc] for pc, rec in interp.specials.items()
                             if rec[0] == S_FUEL)
    types = [f.type for f in inst.funcs]
    try:
        src, table = codegen.generate(inst.module, func.func, func.type, func.index, types,
                                      fuel_offsets, osr)
        code = compile(src, f"<wasm f{func.index}{'_osr' if osr else ''}>", "exec")
    except (codegen.Uncompilable, SyntaxError, RecursionError, MemoryError):
        return None, None
    return code, table


_version_tag: str | None = None


def _cache_file(module: Any, index: int) -> Path | None:
    global _version_tag
    root = os.environ.get("DWASM_CODE_CACHE")
    if root is not None and root.strip() in ("", "0", "off"):
        return None
    if not module.sha256:
        return None
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "dwasm", "code")
    if _version_tag is None:
        # The dwasm version, as far as generated code is concerned: the source of the code
        # generator and of what the code calls by name, so that a changed generator never
        # loads code an older one made (cheaper than asking the package metadata, ~25 ms).
        digest = hashlib.sha256()
        for name in ("codegen.py", "tier.py", "handlers.py", "numerics.py"):
            digest.update((Path(__file__).parent / name).read_bytes())
        _version_tag = (f"{CODEGEN_VERSION}-{digest.hexdigest()[:16]}-"
                        f"{sys.implementation.cache_tag}")
    return Path(root) / f"{module.sha256}-{_version_tag}" / f"f{index}.bin"


def _load(module: Any, index: int) -> tuple | None:
    path = _cache_file(module, index)
    if path is None:
        return None
    try:
        entry = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not (isinstance(entry, tuple) and len(entry) == 2):
        return None
    stats["cache_hits"] += 1
    return entry


def _save(module: Any, index: int, entry: tuple) -> None:
    path = _cache_file(module, index)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(marshal.dumps(entry))
        os.replace(tmp, path)
    except (OSError, ValueError):
        pass


# --- back to the interpreter ------------------------------------------------------------------

def _generated(tb: TracebackType | None) -> list[tuple[Any, int, int, dict]]:
    """The compiled frames of a traceback, outermost first: (frame, line, index, line table)."""
    out = []
    while tb is not None:
        info = CODE_INFO.get(tb.tb_frame.f_code)
        if info is not None:
            out.append((tb.tb_frame, tb.tb_lineno, info[0], info[1]))
        tb = tb.tb_next
    return out


def backtrace(tb: TracebackType | None) -> list[tuple[int, int]]:
    """(function index, offset) of the compiled frames in ``tb``, innermost first (a frame
    still in its prologue ran nothing: a nested interpreter ran the function instead)."""
    return [(idx, table[line][1]) for _, line, idx, table in reversed(_generated(tb))
            if table[line][0] != "p"]


def _value(loc: dict, desc: tuple) -> Any:
    kind = desc[0]
    if kind == "k":
        return desc[1]
    return loc[f"{kind}{desc[1]}"]


def rebuild(exc: BaseException, tb: TracebackType | None, in_call: bool) -> list[Any]:
    """Interpreter frames (outermost first) for the compiled frames ``tb`` passed through.

    ``in_call``: whether the innermost one is inside its call (a host call suspended, or a
    nested interpreter stopped) rather than about to make it (EnterStop)."""
    from .machine import Frame, compiled_code

    gen = _generated(tb)
    if gen and gen[-1][3][gen[-1][1]][0] == "p":
        gen.pop()  # a callee stopped in its prologue: it never started
    frames = []
    last = len(gen) - 1
    for k, (frame, line, idx, table) in enumerate(gen):
        meta = table[line]
        loc = frame.f_locals
        func = frame.f_globals["__instance__"].funcs[idx]
        kind = meta[0]
        if kind == "c":
            offset = meta[1]
            stack = [_value(loc, dsc) for dsc in meta[2]]
            if k == last and not in_call:
                stack += [_value(loc, dsc) for dsc in meta[3]]
        elif kind == "f" and k == last and isinstance(exc, FuelOut):
            offset = meta[1]
            stack = list(exc.stack)
        else:
            raise WasmError(f"internal error: compiled frame of function {idx} stopped at "
                            f"line {line} {meta}")
        nl = len(func.type.params) + len(func.func.locals)
        locals_ = [loc[f"l{x}"] for x in range(nl)]
        compiled = compiled_code(func, func.instance.store.fuel)
        pc = compiled.stop_pc(offset)
        regs = locals_ + compiled.tail[nl - compiled.nparams:]
        regs[nl:nl + len(stack)] = stack
        frames.append(Frame(func, compiled, regs, pc))
    return frames
