"""The compiled tier's code generator: one wasm function body → the source of one Python function.

Where the interpreter (:mod:`vm.execution.translate`) turns a body into closures over a register
list, this module writes straight-line Python in which wasm locals are the Python locals ``l0``,
``l1``, ... and operand-stack slots are ``s0``, ``s1``, ... (slot *i* holds stack position *i*).
Pure instructions are not executed one by one: like the interpreter's virtual stack, a *virtual
stack of expressions* defers them, so ``local.get 0; local.get 1; i32.add; local.set 2`` becomes
the single statement ``l2 = (l0 + l1) & 0xFFFFFFFF``. Anything that can trap (loads, division,
the numerics functions) or has an effect (stores, calls, globals) is a statement of its own, on a
line of its own, so that a Python traceback's line number names the wasm instruction: the
``lines`` table maps line numbers to bytecode offsets (backtraces) and to *stop points*.

Control flow is structured: ``loop`` is ``while True:`` (a back-edge is ``continue``), a block that
is the target of a branch is a one-pass ``while True: ... break``, ``if`` is ``if``/``else``,
blocks nobody branches to are inlined, and runs of nested blocks (switches) become *chains* that
share one loop (see ``open_chain``). A branch out of several Python loops sets ``_br`` to the
target's number and breaks; each loop it leaves passes it on. CPython allows 20 nested loops and
100 indentation levels; a function beyond those raises SyntaxError in ``compile()`` and stays in
the interpreter.

The *OSR variant* (``osr=True``), ``f<index>_osr(d, _R, S, *locals)``, is entered at the header of
loop ``_R - 1`` with the operand-stack slots there in ``S``: every statement sequence is guarded
by ``if not _R:``, a construct containing loop headers is entered when ``_R`` names one of them,
and the header itself restores the slots and clears ``_R``. The machine uses it to move a running
interpreter frame into compiled code (``entries`` maps each fuel stop's offset to its loop).

Stop points: a call (``lines[n] = ("c", offset, below, args)``, the stack entries under the
arguments and the arguments, as descriptors that name the Python local holding each value) and
a loop back-edge's fuel check (``("f", offset)``; the exception raised there carries the stack).
The back-edge positions are the interpreter's, found from its translation of the same function
(a comparison fused with its ``br_if`` stops at the comparison, with the comparison's operands on
the stack), so every state the compiled code stops in is a state the interpreter can resume.
"""

from __future__ import annotations

import bisect
import math
import struct
from typing import Any

from ..binary import opcodes as op
from ..errors import WasmError
from ..structure import BLOCK_EMPTY, F32, F64, FuncType
from . import handlers as H
from . import numerics

M32 = 0xFFFFFFFF

# Loads/stores: struct format (or byte indexing) and post/pre-processing.
_LOADS: dict[str, tuple[str, str]] = {
    "i32.load": ("I", "{v}"), "i64.load": ("Q", "{v}"), "f64.load": ("d", "{v}"),
    "f32.load": ("I", "f32b({v})"),
    "i32.load8_s": ("b", "{v} & 0xFFFFFFFF"), "i32.load8_u": ("B", "{v}"),
    "i32.load16_s": ("h", "{v} & 0xFFFFFFFF"), "i32.load16_u": ("H", "{v}"),
    "i64.load8_s": ("b", "{v} & 0xFFFFFFFFFFFFFFFF"), "i64.load8_u": ("B", "{v}"),
    "i64.load16_s": ("h", "{v} & 0xFFFFFFFFFFFFFFFF"), "i64.load16_u": ("H", "{v}"),
    "i64.load32_s": ("i", "{v} & 0xFFFFFFFFFFFFFFFF"), "i64.load32_u": ("I", "{v}"),
}
_STORES: dict[str, tuple[str, str]] = {
    "i32.store": ("I", "{v}"), "i64.store": ("Q", "{v}"), "f64.store": ("d", "{v}"),
    "f32.store": ("I", "f32t({v})"),
    "i32.store8": ("B", "{v} & 0xFF"), "i32.store16": ("H", "{v} & 0xFFFF"),
    "i64.store8": ("B", "{v} & 0xFF"), "i64.store16": ("H", "{v} & 0xFFFF"),
    "i64.store32": ("I", "{v} & 0xFFFFFFFF"),
}
STRUCT_FORMATS = ("I", "Q", "d", "b", "B", "h", "H", "i")

# Pure expressions beyond the interpreter's templates ({a}, {b} are the operands).
_EXTRA_UNARY = {
    "f64.convert_i32_s": "float(({a} ^ 0x80000000) - 0x80000000)",
    "f64.convert_i32_u": "float({a})",
    "f64.convert_i64_u": "float({a})",
    "f64.convert_i64_s": "float(({a} ^ 0x8000000000000000) - 0x8000000000000000)",
    "i64.extend8_s": "((({a} & 0xFF) ^ 0x80) - 0x80) & 0xFFFFFFFFFFFFFFFF",
    "i64.extend16_s": "((({a} & 0xFFFF) ^ 0x8000) - 0x8000) & 0xFFFFFFFFFFFFFFFF",
    "i64.extend32_s": "((({a} & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & 0xFFFFFFFFFFFFFFFF",
}
_EXTRA_BINARY = {
    # Python raises on a zero divisor; that case goes to the numerics function.
    "f64.div": "({a} / {b} if {b} else n_f64_div({a}, {b}))",
    "i32.rotl": "(({a} << ({b} & 31)) | ({a} >> (-{b} & 31))) & 0xFFFFFFFF",
    "i32.rotr": "(({a} >> ({b} & 31)) | ({a} << (-{b} & 31))) & 0xFFFFFFFF",
    "i64.rotl": "(({a} << ({b} & 63)) | ({a} >> (-{b} & 63))) & 0xFFFFFFFFFFFFFFFF",
    "i64.rotr": "(({a} >> ({b} & 63)) | ({a} << (-{b} & 63))) & 0xFFFFFFFFFFFFFFFF",
}
# Ring operations: masking commutes with them, so an operand may skip its own final mask
# ("lazy" form) when it feeds one of these of the same width.
_RING = {"i32.add": ("+", "0xFFFFFFFF"), "i32.sub": ("-", "0xFFFFFFFF"),
         "i32.mul": ("*", "0xFFFFFFFF"), "i64.add": ("+", "0xFFFFFFFFFFFFFFFF"),
         "i64.sub": ("-", "0xFFFFFFFFFFFFFFFF"), "i64.mul": ("*", "0xFFFFFFFFFFFFFFFF")}
# Statements that may raise ZeroDivisionError (the machine maps it to the spec's trap).
_DIVS = {"i32.div_u": "{a} // {b}", "i32.rem_u": "{a} % {b}",
         "i64.div_u": "{a} // {b}", "i64.rem_u": "{a} % {b}"}

_NAMES = {code: name for code, name in op.NAMES.items()}
_LOAD_OPS = {code: name for code, name in op.NAMES.items() if ".load" in name}
_STORE_OPS = {code: name for code, name in op.NAMES.items() if ".store" in name}
_MAX_EXPR = 160  # longer expressions are stored into their slot first
DLIM_LITERAL = 120  # vm.execution.tier.DLIM, as a literal in every prologue
_MIN_CHAIN = 4  # runs of at least this many nested blocks become a chain (see CodeGen)


class Uncompilable(WasmError):
    """The function cannot be expressed by this tier (it then stays in the interpreter)."""


class Entry:
    """A value on the virtual stack: a Python expression and what it reads."""

    __slots__ = ("src", "atom", "deps", "cond", "ops", "desc", "at", "lazy")

    def __init__(self, src: str, deps: frozenset = frozenset(), atom: bool = False,
                 cond: str | None = None, ops: tuple | None = None,
                 desc: tuple | None = None, at: int = -1) -> None:
        self.src = src  # the expression
        self.atom = atom  # a name or literal: free to repeat
        self.deps = deps  # Python locals it reads (l*, s*)
        self.cond = cond  # for comparisons: the bare condition, for if/br_if
        self.ops = ops  # for comparisons and eqz: the operand entries (fuel stop positions)
        self.desc = desc  # for atoms: how a stop point reads it ("l", x) ("s", i) ("k", v)
        self.at = at  # offset of the instruction that produced it (comparisons, eqz)
        self.lazy: tuple[str, str] | None = None  # (mask, the expression before its mask)


class Ctl:
    __slots__ = ("kind", "height", "nparams", "nresults", "loop", "id", "through", "dead",
                 "has_else", "wrapped", "ids", "else_ids", "start", "chain", "chain_k",
                 "chain_if")

    def __init__(self, kind: str, height: int, nparams: int, nresults: int, loop: bool,
                 ident: int, dead: bool = False) -> None:
        self.kind = kind  # "func", "block", "loop", "if"
        self.height = height
        self.nparams = nparams
        self.nresults = nresults
        self.loop = loop  # emitted as a Python while loop
        self.id = ident
        self.through: set[int] = set()  # ids of outer targets whose branches leave this loop
        self.dead = dead
        self.has_else = False
        self.wrapped = False  # OSR variant: the while loop sits in an "if _R ..." test
        self.ids: frozenset = frozenset()  # OSR entry ids inside (if constructs)
        self.else_ids: frozenset = frozenset()
        self.start = -1  # instruction index of a loop
        self.chain: str | None = None  # block chains (see CodeGen.open_chain): the state variable
        self.chain_k = 0  # this block's place in its chain, outermost 0
        self.chain_if = False  # its region sits in an "if <chain var> >= k" test

    @property
    def arity(self) -> int:
        return self.nparams if self.kind == "loop" else self.nresults


def _simd_fn(code: int) -> str:
    from . import simd as simd_ops

    return "v_" + simd_ops.OPS[code].__name__


def _set(ids: frozenset) -> str:
    return "{" + ", ".join(str(k) for k in sorted(ids)) + "}"


def _const_src(value: Any) -> str | None:
    if type(value) is float:
        if math.isnan(value) or math.isinf(value):
            return None
        return repr(value)
    return repr(value)


class CodeGen:
    """Generates the Python source of one function; use :func:`generate`."""

    def __init__(self, module: Any, func: Any, ftype: FuncType, index: int,
                 fuel_offsets: frozenset[int], osr: bool = False) -> None:
        self.module = module
        self.func = func
        self.ftype = ftype
        self.index = index
        self.fuel_offsets = fuel_offsets
        self.np = len(ftype.params)
        self.nl = self.np + len(func.locals)
        self.body: list[str] = []  # lines of the function body (before the prologue)
        self.meta: list[tuple | None] = []  # per body line
        self.ind = 1
        self.vs: list[Entry] = []
        self.ctrl: list[Ctl] = []
        self.next_id = 1
        self.used: set[str] = set()
        self.consts: list[str] = []  # prelude lines
        self.uses_br = False
        self.chain_members: dict[int, tuple[str, int, int]] = {}
        self.chains: list[str] = []
        self.last_stmt = (-1, "")  # (body length after it, slot) of the last stmt_result
        self.off = func.offset
        self.targeted: set[int] = set()
        self.hoist = any(code == op.LOOP for code, _, _ in func.body)
        # Open Python blocks: body length after the header, whether an OSR guard is open in
        # it, whether it is a guarded construct (no guards inside).
        self.levels: list[list] = [[0, False, False]]
        # The OSR variant (module docstring): entry ids are loop instruction indices + 1.
        self.osr = osr
        self.noguard = 0
        self.end_of: dict[int, int] = {}
        self.else_of: dict[int, int] = {}
        self.loop_heads: set[int] = set()  # loops that branches go back to
        self.backedges: list[int] = []  # the same, sorted (their OSR entry ids: index + 1)
        # Fuel stop offset -> how to enter the OSR variant from there (see fuel_check).
        self.entries: dict[int, Any] = {}

    # --- names and lines ----------------------------------------------------------------------

    def g(self, name: str) -> str:
        """A namespace name; in functions with loops it is read from a local copy."""
        self.used.add(name)
        return name + "_" if self.hoist else name

    def raw(self, text: str, meta: tuple | None = None) -> None:
        self.body.append("    " * self.ind + text)
        self.meta.append(meta if meta is not None else ("o", self.off))

    def line(self, text: str, meta: tuple | None = None) -> None:
        """A statement. In the OSR variant it runs only when not resuming (``not _R``);
        consecutive statements share one guard."""
        if self.osr and self.noguard == 0:
            lv = self.levels[-1]
            if not lv[1]:
                self.raw("if not _R:")
                self.ind += 1
                lv[1] = True
        self.raw(text, meta)

    def close_guard(self) -> None:
        lv = self.levels[-1]
        if lv[1]:
            self.ind -= 1
            lv[1] = False

    def open(self, header: str, ids: frozenset | None = None) -> None:
        """Open a Python block. ``ids``: OSR entries inside it (the header then tests _R
        itself and is not guarded)."""
        if self.osr and self.noguard == 0 and ids:
            self.close_guard()
            self.raw(header)
            plain = False
        else:
            self.line(header)
            plain = self.osr and self.noguard == 0
            if plain:
                self.noguard += 1
        self.ind += 1
        self.levels.append([len(self.body), False, plain])

    def close(self) -> None:
        self.close_guard()
        lv = self.levels.pop()
        if lv[0] == len(self.body):
            self.raw("pass")
        self.ind -= 1
        if lv[2]:
            self.noguard -= 1

    def ids_in(self, start: int, stop: int) -> frozenset:
        """OSR entry ids of the loop headers from instruction start to before stop."""
        lo = bisect.bisect_left(self.backedges, start)
        hi = bisect.bisect_left(self.backedges, stop)
        return frozenset(j + 1 for j in self.backedges[lo:hi])

    def open_loop(self, i: int) -> bool:
        """``while True:`` for the construct starting at instruction i; in the OSR variant
        wrapped in a test that skips it when resuming elsewhere. Returns whether wrapped."""
        ids = self.ids_in(i, self.end_of.get(i, len(self.func.body))) if self.osr else None
        wrapped = bool(self.osr and self.noguard == 0 and ids)
        if wrapped:
            self.open(f"if not _R or _R in {_set(ids)}:", ids)
        self.open("while True:", ids)
        return wrapped

    def entry_marker(self, i: int, height: int) -> None:
        """OSR: entering at the header of the loop at instruction i, with the ``height``
        stack slots below and at the header in ``S``."""
        if not self.osr or self.noguard or i not in self.loop_heads:
            return
        parts = ["_R = 0"] + [f"s{pos} = S[{pos}]" for pos in range(height)]
        self.close_guard()
        self.raw(f"if _R == {i + 1}: " + "; ".join(parts))

    # --- the virtual stack --------------------------------------------------------------------

    def local(self, x: int) -> Entry:
        name = f"l{x}"
        return Entry(name, frozenset((name,)), atom=True, desc=("l", x))

    def slot(self, i: int) -> Entry:
        name = f"s{i}"
        return Entry(name, frozenset((name,)), atom=True, desc=("s", i))

    def const(self, value: Any, desc_value: Any = None) -> Entry:
        src = _const_src(value)
        if src is None:
            name = f"C{self.index}_{len(self.consts)}"
            bits = struct.unpack("<Q", struct.pack("<d", value))[0]
            self.consts.append(f"{name} = f64b({bits})")
            self.used.add("f64b")
            src = name
        return Entry(src, atom=True, desc=("k", value if desc_value is None else desc_value))

    def push_expr(self, src: str, deps: frozenset, cond: str | None = None,
                  ops: tuple | None = None) -> None:
        if len(src) > _MAX_EXPR:
            self.assign_slot(len(self.vs), Entry(src, deps, cond=cond))
            self.vs.append(self.slot(len(self.vs)))
            return
        self.vs.append(Entry(src, deps, cond=cond, ops=ops, at=self.off))

    def write_var(self, name: str, upto: int | None = None) -> None:
        """Before the local ``name`` is assigned: store stack entries that still read it."""
        vs = self.vs
        for i in range(len(vs) if upto is None else upto):
            e = vs[i]
            if name in e.deps and not (e.atom and e.src == f"s{i}"):
                self.assign_slot(i, e)
                vs[i] = self.slot(i)

    def assign_slot(self, i: int, e: Entry) -> None:
        self.write_var(f"s{i}", i)
        self.line(f"s{i} = {e.src}")

    def materialize(self, start: int = 0) -> None:
        """Every stack entry at positions >= start into its slot (block boundaries)."""
        vs = self.vs
        for i in range(start, len(vs)):
            e = vs[i]
            if not (e.atom and e.src == f"s{i}"):
                self.line(f"s{i} = {e.src}")
                vs[i] = self.slot(i)

    def settle(self) -> None:
        """Before an effect (call, store, global write): no pending computed expressions."""
        vs = self.vs
        for i in range(len(vs)):
            e = vs[i]
            if not e.atom:
                self.line(f"s{i} = {e.src}")
                vs[i] = self.slot(i)

    def pop_atom(self) -> Entry:
        """Pop an operand that an expression uses more than once."""
        e = self.vs.pop()
        if not e.atom:
            i = len(self.vs)
            self.assign_slot(i, e)
            return self.slot(i)
        return e

    def stmt_result(self, text: str) -> None:
        """``s<top> = text`` as its own line (an instruction that can trap or reads state)."""
        i = len(self.vs)
        self.write_var(f"s{i}", i)
        self.line(f"s{i} = {text}")
        self.vs.append(self.slot(i))
        self.last_stmt = (len(self.body), f"s{i}")

    @staticmethod
    def par(e: Entry) -> str:
        return e.src if e.atom else f"({e.src})"

    # --- pre-scan: which blocks are branch targets --------------------------------------------

    def prescan(self) -> None:
        stack: list[int] = []
        body = self.func.body
        for i, (code, imm, _) in enumerate(body):
            if code in (op.BLOCK, op.LOOP, op.IF):
                stack.append(i)
            elif code == op.ELSE:
                if stack:
                    self.else_of[stack[-1]] = i
            elif code == op.END:
                if stack:
                    self.end_of[stack.pop()] = i
            elif code in (op.BR, op.BR_IF, op.BR_TABLE):
                depths = (imm,) if code != op.BR_TABLE else (*imm[0], imm[1])
                for depth in depths:
                    if depth < len(stack):
                        t = stack[-1 - depth]
                        self.targeted.add(t)
                        if body[t][0] == op.LOOP:
                            self.loop_heads.add(t)
        self.backedges = sorted(self.loop_heads)

    # --- generation ---------------------------------------------------------------------------

    def generate(self) -> tuple[str, dict[int, tuple]]:
        func = self.func
        heights = func.heights
        if heights is None:
            raise WasmError("function was not validated")
        self.prescan()
        self.ctrl.append(Ctl("func", 0, 0, len(self.ftype.results), False, 0))
        for i, (code, imm, off) in enumerate(func.body):
            self.off = off
            if heights[i] < 0 or self.ctrl[-1].dead:
                self.dead_instr(code)
            else:
                self.instr(i, code, imm)
        return self.assemble()

    def assemble(self) -> tuple[str, dict[int, tuple]]:
        off = self.func.offset
        inits = []
        if self.osr:
            # Entered by the machine at a back-edge's stop point ``_R`` with all locals and the
            # operand stack ``S``; the machine has checked depth and fuel.
            params = ", ".join(["d", "_R", "S"] + [f"l{i}" for i in range(self.nl)])
            head = [f"def f{self.index}_osr({params}):", "    d += 1"]
            head_meta: list[tuple] = [("o", off), ("o", off)]
        else:
            params = ", ".join(["d"] + [f"l{i}" for i in range(self.np)])
            args = "(" + "".join(f"l{i}, " for i in range(self.np)) + ")"
            head = [f"def f{self.index}({params}):",
                    f"    if d > {DLIM_LITERAL} or FUEL[0] <= 0:",
                    f"        _v = PRO(d, {self.index}, {args})",
                    "        if _v is not GO: return _v",
                    "    FUEL[0] -= 1",
                    "    d += 1"]
            head_meta = [("o", off)] + [("p", off)] * 5
            for x, t in enumerate(self.func.locals, start=self.np):
                zero = "0.0" if t in (F32, F64) else ("None" if t in (0x70, 0x6F) else "0")
                inits.append(f"l{x} = {zero}")
        if self.uses_br:
            inits.append("_br = 0")
        inits.extend(f"{var} = 0" for var in self.chains)
        if self.hoist:
            inits.extend(f"{n}_ = {n}" for n in sorted(self.used) if n != "f64b")
        for k in range(0, len(inits), 8):
            head.append("    " + "; ".join(inits[k:k + 8]))
            head_meta.append(("o", self.func.offset))
        prelude = self.consts
        lines = prelude + head + self.body
        metas = [("o", self.func.offset)] * len(prelude) + head_meta + self.meta
        table: dict[int, Any] = {n + 1: m for n, m in enumerate(metas)}
        table[0] = self.entries
        return "\n".join(lines) + "\n", table

    def dead_instr(self, code: int) -> None:
        if code in (op.BLOCK, op.LOOP, op.IF):
            self.ctrl.append(Ctl("block", 0, 0, 0, False, 0, dead=True))
        elif code == op.ELSE:
            ctl = self.ctrl[-1]
            if not ctl.dead:
                self.enter_else(ctl)
        elif code == op.END:
            self.end_block(fallthrough=False)

    def block_arity(self, bt: int) -> tuple[int, int]:
        if bt == BLOCK_EMPTY:
            return 0, 0
        if bt < 0:
            return 0, 1
        t = self.module.types[bt]
        return len(t.params), len(t.results)

    def reset_stack(self, height: int) -> None:
        self.vs = [self.slot(i) for i in range(height)]

    def enter_else(self, ctl: Ctl) -> None:
        # The then-branch's fallthrough was emitted by the caller; now the else body.
        self.close()
        if self.osr and self.noguard == 0 and ctl.ids:
            test = "not _R"
            if ctl.else_ids:
                test = f"not _R or _R in {_set(ctl.else_ids)}"
            self.open(f"elif {test}:", ctl.ids)
        else:
            self.open("else:")
        ctl.has_else = True
        self.reset_stack(ctl.height + ctl.nparams)

    # --- block chains ---------------------------------------------------------------------------
    #
    # A switch compiles to a run of nested blocks entered back to back, the dispatch
    # (br_table) inside the innermost, and each case's code after one of the ends:
    #     block $b0 block $b1 ... block $bN  INNER  end CODE_N end ... CODE_1 end
    # As nested Python loops that would soon exceed CPython's 20. Instead one variable
    # ``_swK`` says where to go on: a branch to $bk sets it to k and leaves the current
    # *region loop* (INNER's, or the case code's), and each CODE_k runs in a one-pass loop of
    # its own under ``if _swK >= k`` (falling out of a region sets the variable to the next
    # case). So a chain costs two levels of Python loops however many cases it has.

    def chain_length(self, i: int) -> int:
        if self.osr:
            return 0
        body = self.func.body
        n = 0
        while i + n < len(body) and body[i + n][0] == op.BLOCK and body[i + n][1] == BLOCK_EMPTY:
            n += 1
        return n

    def open_chain(self, i: int) -> None:
        n = self.chain_length(i)
        var = f"_sw{self.next_id}"
        self.chains.append(var)
        for k in range(1, n):
            self.chain_members[i + k] = (var, k, n - 1)
        self.materialize()
        self.push_chain_ctl(var, 0, n - 1)

    def chain_member(self, i: int) -> None:
        var, k, last = self.chain_members[i]
        self.push_chain_ctl(var, k, last)

    def push_chain_ctl(self, var: str, k: int, last: int) -> None:
        ctl = Ctl("block", len(self.vs), 0, 0, k == last, self.next_id)
        self.next_id += 1
        ctl.chain = var
        ctl.chain_k = k
        if k == last:
            self.open("while True:")  # INNER's region loop
        self.ctrl.append(ctl)

    def end_chain_member(self, ctl: Ctl, fallthrough: bool) -> None:
        """``end`` of $bk: leave its region, then open CODE_k's region in $b(k-1)."""
        k = ctl.chain_k
        if fallthrough:
            self.line(f"{ctl.chain} = {k}; break")
        self.close()
        if ctl.chain_if:
            self.close()
        if ctl.through:
            self.pass_on(ctl)
        self.reset_stack(ctl.height)
        if k > 0:
            owner = self.ctrl[-1]
            assert owner.chain == ctl.chain and owner.chain_k == k - 1
            owner.loop = True
            owner.chain_if = True
            self.open(f"if {ctl.chain} >= {k}:")
            self.open("while True:")

    def end_block(self, fallthrough: bool) -> None:
        ctl = self.ctrl.pop()
        if ctl.dead:
            return
        if ctl.chain is not None:
            if fallthrough:
                self.materialize()
            self.end_chain_member(ctl, fallthrough)
            return
        if fallthrough:
            self.materialize()
        if not self.ctrl:  # the function's end
            if fallthrough:
                self.emit_return()
            return
        if ctl.kind == "if":
            self.close()  # the if (or else) body
            if ctl.loop:
                self.line("break")
                self.close()
        elif ctl.loop:
            self.line("break")
            self.close()
        if ctl.wrapped:
            self.close()
        if ctl.loop and ctl.through:
            self.pass_on(ctl)
        self.reset_stack(ctl.height + ctl.nresults)

    def pass_on(self, inner: Ctl) -> None:
        """After a Python loop that multi-level branches left: continue them outwards."""
        outer = next((c for c in reversed(self.ctrl) if c.loop), None)
        assert outer is not None
        ids = inner.through
        self.open("if _br:")
        if outer.id in ids:
            action = "continue" if outer.kind == "loop" else "break"
            if ids == {outer.id}:
                self.line(f"_br = 0; {action}")
            else:
                self.open(f"if _br == {outer.id}:")
                self.line(f"_br = 0; {action}")
                self.close()
                self.line("break")
        else:
            self.line("break")
        outer.through |= ids - {outer.id}
        self.close()

    # --- branches -----------------------------------------------------------------------------

    def stack_tuple(self, entries: list[Entry]) -> str:
        if not entries:
            return "()"
        return "(" + ", ".join(e.src for e in entries) + ",)"

    def fuel_check(self, stop_entries: list[Entry], offset: int, target: Ctl) -> None:
        if offset not in self.entries:
            # OSR from this stop point enters at the target loop's header: stack slots below
            # the loop, then the branch's values, which sit under the branch's own operands.
            self.entries[offset] = (target.start + 1, target.height, target.arity,
                                    len(self.vs))
        self.used.update(("FUEL", "REFUEL", "FuelOut"))
        fuel = self.g("FUEL")
        self.line(f"if {fuel}[0] <= 0 and not {self.g('REFUEL')}(): "
                  f"raise {self.g('FuelOut')}({self.stack_tuple(stop_entries)})",
                  ("f", offset))
        self.line(f"{fuel}[0] -= 1")

    def emit_return(self) -> None:
        n = len(self.ftype.results)
        vals = self.vs[len(self.vs) - n:] if n else []
        if n == 0:
            self.line("return")
        elif n == 1:
            self.line(f"return {vals[0].src}")
        else:
            self.line("return (" + ", ".join(e.src for e in vals) + ",)")

    def branch(self, depth: int, stop: tuple[list[Entry], int] | None) -> None:
        """Emit the jump to label ``depth`` (values from the top of the virtual stack).
        ``stop``: stack and offset of the fuel stop when the target is a loop."""
        target = self.ctrl[-1 - depth]
        if target.kind == "func":
            self.emit_return()
            return
        if target.kind == "loop" and stop is not None:
            self.fuel_check(stop[0], stop[1], target)
        n = target.arity
        if n:
            vals = self.vs[len(self.vs) - n:]
            dst = [f"s{target.height + i}" for i in range(n)]
            pairs = [(d, v.src) for d, v in zip(dst, vals) if d != v.src]
            if len(pairs) == 1:
                self.line(f"{pairs[0][0]} = {pairs[0][1]}")
            elif pairs:
                self.line(", ".join(p[0] for p in pairs) + " = " + ", ".join(p[1] for p in pairs))
        if target.chain is not None:
            # Into a block chain: record where to go on, then leave the current region loop,
            # owned by the innermost member of the chain still open.
            self.line(f"{target.chain} = {target.chain_k}")
            depth = next(d for d in range(len(self.ctrl))
                         if self.ctrl[-1 - d].chain == target.chain)
            target = self.ctrl[-1 - depth]
        inner = [c for c in self.ctrl[len(self.ctrl) - depth:] if c.loop]
        action = "continue" if target.kind == "loop" else "break"
        if not inner:
            self.line(action)
        else:
            self.uses_br = True
            for c in inner:
                c.through.add(target.id)
            self.line(f"_br = {target.id}; break")

    def loop_stop(self, depth: int, extra: list[Entry]) -> tuple[list[Entry], int] | None:
        target = self.ctrl[-1 - depth]
        if target.kind != "loop":
            return None
        return (self.vs + extra, self.off)

    def cond_of(self, c: Entry) -> str:
        return c.cond if c.cond is not None else self.par(c)

    # --- instructions -------------------------------------------------------------------------

    def instr(self, i: int, code: int, imm: Any) -> None:  # noqa: C901 - one dispatch over the ISA
        vs = self.vs
        if code >= op.FD:
            self.simd(code, imm)
            return
        name = _NAMES.get(code)
        if code == op.LOCAL_GET:
            vs.append(self.local(imm))
        elif code == op.LOCAL_SET or code == op.LOCAL_TEE:
            e = vs.pop()
            var = f"l{imm}"
            last = self.last_stmt
            if (last[0] == len(self.body) and last[1] == e.src
                    and not any(var in x.deps for x in vs)):
                # The statement that just computed the value writes the local itself.
                line = self.body[-1]
                indent = len(line) - len(line.lstrip())
                self.body[-1] = line[:indent] + var + line[indent + len(e.src):]
                self.last_stmt = (-1, "")
            else:
                self.write_var(var)
                if e.src != var:
                    self.line(f"{var} = {e.src}")
            if code == op.LOCAL_TEE:
                vs.append(self.local(imm))
        elif code == op.I32_CONST or code == op.I64_CONST:
            vs.append(self.const(imm))
        elif code == op.F32_CONST:
            vs.append(self.const(numerics.f32_from_bits(imm)))
        elif code == op.F64_CONST:
            vs.append(self.const(numerics.f64_from_bits(imm)))
        elif code in _LOAD_OPS:
            self.load(_LOAD_OPS[code], imm[1])
        elif code in _STORE_OPS:
            self.store(_STORE_OPS[code], imm[1])
        elif 0x45 <= code <= 0xC4 or op.FC <= code <= op.FC + 7:
            self.numeric(code, name)
        elif code == op.BLOCK and i in self.chain_members:
            self.chain_member(i)
        elif code == op.BLOCK and self.chain_length(i) >= _MIN_CHAIN:
            self.open_chain(i)
        elif code == op.BLOCK or code == op.LOOP:
            np_, nr = self.block_arity(imm)
            self.materialize()
            height = len(vs) - np_
            kind = "block" if code == op.BLOCK else "loop"
            loop = i in self.targeted
            ctl = Ctl(kind, height, np_, nr, loop, self.next_id)
            self.next_id += 1
            if loop:
                ctl.wrapped = self.open_loop(i)
                ctl.start = i
                if kind == "loop":
                    self.entry_marker(i, height + np_)
            self.ctrl.append(ctl)
        elif code == op.IF:
            np_, nr = self.block_arity(imm)
            c = vs.pop()
            self.materialize()
            loop = i in self.targeted
            ctl = Ctl("if", len(vs) - np_, np_, nr, loop, self.next_id)
            self.next_id += 1
            if loop:
                ctl.wrapped = self.open_loop(i)
            cond = self.cond_of(c)
            end = self.end_of.get(i, len(self.func.body))
            els = self.else_of.get(i)
            ctl.ids = self.ids_in(i, end) if self.osr else frozenset()
            ctl.else_ids = self.ids_in(els, end) if (self.osr and els is not None) else frozenset()
            if self.osr and self.noguard == 0 and ctl.ids:
                then_ids = self.ids_in(i, els if els is not None else end)
                test = f"not _R and ({cond})"
                if then_ids:
                    test = f"_R in {_set(then_ids)} or ({test})"
                self.open(f"if {test}:", ctl.ids)
            else:
                self.open(f"if {cond}:")
            self.ctrl.append(ctl)
        elif code == op.ELSE:
            ctl = self.ctrl[-1]
            self.materialize()
            self.enter_else(ctl)
        elif code == op.END:
            self.end_block(fallthrough=True)
        elif code == op.BR:
            self.branch(imm, self.loop_stop(imm, []))
        elif code == op.BR_IF:
            self.br_if(imm, i)
        elif code == op.BR_TABLE:
            self.br_table(imm, i)
        elif code == op.RETURN:
            self.emit_return()
        elif code == op.CALL:
            self.call(self.module_func_type(imm), f"{self.g(f'F{imm}')}")
        elif code == op.CALL_INDIRECT:
            typeidx, tableidx = imm
            self.call(self.module.types[typeidx], None, (typeidx, tableidx))
        elif code == op.DROP:
            vs.pop()
        elif code == op.SELECT or code == op.SELECT_T:
            c = vs.pop()
            b = vs.pop()
            a = vs.pop()
            self.push_expr(f"{self.par(a)} if {self.cond_of(c)} else {self.par(b)}",
                           a.deps | b.deps | c.deps)
        elif code == op.GLOBAL_GET:
            self.stmt_result(f"{self.g(f'G{imm}')}.value")
        elif code == op.GLOBAL_SET:
            e = vs.pop()
            self.settle()
            self.line(f"{self.g(f'G{imm}')}.value = {e.src}")
        elif code == op.NOP:
            pass
        elif code == op.UNREACHABLE:
            self.line(f"raise {self.g('Trap')}('unreachable')")
        elif code == op.MEMORY_SIZE:
            self.stmt_result(f"len({self.g('M')}) >> 16")
        elif code == op.MEMORY_GROW:
            e = vs.pop()
            self.settle()
            self.stmt_result(f"{self.g('mem_grow')}({e.src})")
        elif code == op.REF_NULL:
            vs.append(Entry("None", atom=True, desc=("k", None)))
        elif code == op.REF_IS_NULL:
            e = vs.pop()
            self.push_expr(f"1 if {self.par(e)} is None else 0", e.deps,
                           cond=f"{self.par(e)} is None")
        elif code == op.REF_FUNC:
            self.stmt_result(f"{self.g('FUNCS')}[{imm}]")
        else:
            self.bulk(code, imm)

    def module_func_type(self, idx: int) -> FuncType:
        return self.module_types_of_funcs[idx]

    def load(self, name: str, offset: int) -> None:
        fmt, post = _LOADS[name]
        a = self.vs.pop()
        addr = a.src if offset == 0 else f"{self.par(a)} + {offset}"
        mem = self.g("M")
        if fmt == "B":
            v = f"{mem}[{addr}]"
        else:
            v = f"{self.g('ld_' + fmt)}({mem}, {addr})[0]"
        if "f32b" in post:
            self.g("f32b")
            post = post.replace("f32b", self.g("f32b"))
        self.stmt_result(post.format(v=v))

    def store(self, name: str, offset: int) -> None:
        fmt, pre = _STORES[name]
        v = self.vs.pop()
        a = self.vs.pop()
        self.settle()
        addr = a.src if offset == 0 else f"{self.par(a)} + {offset}"
        if "f32t" in pre:
            pre = pre.replace("f32t", self.g("f32t"))
        val = pre.format(v=self.par(v) if pre != "{v}" else v.src)
        mem = self.g("M")
        if fmt == "B":
            self.line(f"{mem}[{addr}] = {val}")
        else:
            self.line(f"{self.g('st_' + fmt)}({mem}, {addr}, {val})")

    def numeric(self, code: int, name: str) -> None:
        vs = self.vs
        if name in _RING:
            opr, mask = _RING[name]
            b = vs.pop()
            a = vs.pop()
            lazy_used = False
            parts = []
            for e in (a, b):
                if e.lazy is not None and e.lazy[0] == mask:
                    parts.append(e.lazy[1])
                    lazy_used = True
                else:
                    parts.append(self.par(e))
            raw = f"({parts[0]} {opr} {parts[1]})"
            self.push_expr(f"{raw} & {mask}", a.deps | b.deps)
            top = vs[-1]
            if not lazy_used and not top.atom:
                top.lazy = (mask, raw)
            return
        if name in H.BINARY_EXPR or name in _DIVS or name in _EXTRA_BINARY:
            tmpl = H.BINARY_EXPR.get(name) or _DIVS.get(name) or _EXTRA_BINARY[name]
            b = vs.pop() if tmpl.count("{b}") == 1 else self.pop_atom()
            a = vs.pop() if tmpl.count("{a}") == 1 else self.pop_atom()
            src = tmpl.format(a=self.par(a), b=self.par(b))
            if "n_f64_div" in src:
                src = src.replace("n_f64_div", self.g("n_f64_div"))
            deps = a.deps | b.deps
            if name in _DIVS:
                vs.append(Entry(src, deps))
                self.settle_top()
                return
            cond = None
            if name in H.COMPARE_COND:
                cond = H.COMPARE_COND[name].format(a=self.par(a), b=self.par(b))
            self.push_expr(src, deps, cond=cond, ops=(a, b) if cond else None)
            return
        tmpl = H.UNARY_EXPR.get(name) or _EXTRA_UNARY.get(name)
        if tmpl is not None:
            a = vs.pop() if tmpl.count("{a}") == 1 else self.pop_atom()
            src = tmpl.format(a=self.par(a))
            cond = None
            ops = None
            if name in ("i32.eqz", "i64.eqz"):
                cond = f"{self.par(a)} == 0"
                ops = (a,)
            self.push_expr(src, a.deps, cond=cond, ops=ops)
            return
        fn = "n_" + numerics.OPS[code].__name__
        if numerics.ARITY[code] == 2:
            b = vs.pop()
            a = vs.pop()
            self.stmt_result(f"{self.g(fn)}({a.src}, {b.src})")
        else:
            a = vs.pop()
            self.stmt_result(f"{self.g(fn)}({a.src})")

    def simd(self, code: int, imm: Any) -> None:
        """A SIMD instruction: v128 values are ints (docs/vm.md); the lane arithmetic calls the
        functions of vm.execution.simd (``v_<name>`` in the namespace), loads and stores are
        struct reads and writes like the scalar ones."""
        name = op.SIMD_NAMES[code]
        kind = op.SIMD_IMM[code]
        vs = self.vs
        mem = self.g("M") if kind in ("memarg", "memarg_lane") else ""
        if kind == "v128":
            vs.append(self.const(imm))
        elif kind == "memarg":
            offset = imm[1]
            if name == "v128.store":
                b = vs.pop()
                a = vs.pop()
                self.settle()
                addr = a.src if offset == 0 else f"{self.par(a)} + {offset}"
                self.line(f"{self.g('v128_st')}({mem}, {addr}, {b.src})")
                return
            a = vs.pop()
            addr = a.src if offset == 0 else f"{self.par(a)} + {offset}"
            if name == "v128.load":
                self.stmt_result(f"{self.g('v128_ld')}({mem}, {addr})")
            elif name.endswith("_splat") or name.endswith("_zero"):
                bits = int(name[len("v128.load"):].split("_")[0])
                fmt = {8: "B", 16: "H", 32: "I", 64: "Q"}[bits]
                scale = 1 if name.endswith("_zero") else sum(1 << (bits * k)
                                                             for k in range(128 // bits))
                self.stmt_result(f"{self.g('ld_' + fmt)}({mem}, {addr})[0] * {scale}")
            else:  # v128.load8x8_s and friends: 64 bits widened by the extend_low instruction
                extend = {"8x8": "i16x8", "16x4": "i32x4", "32x2": "i64x2"}
                shape = name[len("v128.load"):-2]
                src_shape = {"8x8": "i8x16", "16x4": "i16x8", "32x2": "i32x4"}[shape]
                fn = f"v_{extend[shape]}_extend_low_{src_shape}_{name[-1]}"
                self.stmt_result(f"{self.g(fn)}({self.g('ld_Q')}({mem}, {addr})[0])")
        elif kind == "memarg_lane":
            _, offset, lane = imm
            b = vs.pop()
            a = vs.pop()
            nbytes = int(name[len("v128.load"):].split("_")[0]) // 8 if name.startswith(
                "v128.load") else int(name[len("v128.store"):].split("_")[0]) // 8
            fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[nbytes]
            shift = lane * 8 * nbytes
            mask = (1 << (8 * nbytes)) - 1
            addr = a.src if offset == 0 else f"{self.par(a)} + {offset}"
            if name.startswith("v128.load"):
                keep = ((1 << 128) - 1) ^ (mask << shift)
                self.stmt_result(f"({self.par(b)} & {keep}) | "
                                 f"({self.g('ld_' + fmt)}({mem}, {addr})[0] << {shift})")
            else:
                self.settle()
                self.line(f"{self.g('st_' + fmt)}({mem}, {addr}, "
                          f"({self.par(b)} >> {shift}) & {mask})")
        elif kind == "shuffle":
            b = vs.pop()
            a = vs.pop()
            self.stmt_result(f"{self.g(_simd_fn(code))}({a.src}, {b.src}, {bytes(imm)!r})")
        elif kind == "lane":
            if "extract_lane" in name:
                a = vs.pop()
                self.stmt_result(f"{self.g(_simd_fn(code))}({a.src}, {imm})")
            else:
                x = vs.pop()
                a = vs.pop()
                self.stmt_result(f"{self.g(_simd_fn(code))}({a.src}, {x.src}, {imm})")
        else:
            from . import simd as simd_ops

            n = simd_ops.ARITY[code]
            args = [vs.pop() for _ in range(n)][::-1]
            self.stmt_result(f"{self.g(_simd_fn(code))}({', '.join(e.src for e in args)})")

    def settle_top(self) -> None:
        """Store the top entry (which can trap) into its slot now, on its own line."""
        e = self.vs.pop()
        self.stmt_result(e.src)

    def br_if(self, depth: int, i: int) -> None:
        vs = self.vs
        c = vs.pop()
        target = self.ctrl[-1 - depth]
        stop = None
        if target.kind == "loop":
            if self.off in self.fuel_offsets or c.ops is None:
                stop = (vs + [c], self.off)
            elif c.at in self.fuel_offsets:
                stop = (vs + list(c.ops), c.at)
            else:
                raise Uncompilable("back-edge without a matching interpreter stop point")
        self.open(f"if {self.cond_of(c)}:")
        saved = list(vs)
        self.branch(depth, stop)
        self.close()
        self.vs = saved

    def br_table(self, imm: tuple[tuple[int, ...], int], i: int) -> None:
        depths, default = imm
        c = self.pop_atom()
        vs = self.vs
        # OSR entries of this stop point: per table index, the loop it goes back to.
        per = []
        for d in (*depths, default):
            t = self.ctrl[-1 - d]
            per.append((t.start + 1, t.height, t.arity) if t.kind == "loop" else None)
        if any(per):
            self.entries[self.off] = ("t", len(vs), tuple(per))
        groups: dict[int, list[int]] = {}
        for k, depth in enumerate(depths):
            groups.setdefault(depth, []).append(k)
        order = [d for d in dict.fromkeys(depths) if d != default]
        saved = list(vs)

        def emit_target(depth: int) -> None:
            self.vs = list(saved)
            self.branch(depth, self.loop_stop(depth, [c]))

        if not order:
            emit_target(default)
            self.vs = saved
            return
        first = True
        for depth in order:
            idxs = groups[depth]
            if len(idxs) == 1:
                test = f"{c.src} == {idxs[0]}"
            elif idxs == list(range(idxs[0], idxs[-1] + 1)):
                test = f"{idxs[0]} <= {c.src} <= {idxs[-1]}"
            else:
                test = f"{c.src} in {frozenset(idxs)!r}"
            self.open(("if " if first else "elif ") + test + ":")
            first = False
            emit_target(depth)
            self.close()
        self.open("else:")
        emit_target(default)
        self.close()
        self.vs = saved

    def call(self, ft: FuncType, callee: str | None, indirect: tuple[int, int] | None = None
             ) -> None:
        vs = self.vs
        n = len(ft.params)
        self.settle()
        idx = vs.pop() if indirect is not None else None
        # Arguments into their canonical slots, so that a stop point finds them by name.
        self.materialize(len(vs) - n)
        if idx is not None and not idx.atom:
            raise WasmError("internal error: settled index is not an atom")
        below = tuple(e.desc for e in vs[:len(vs) - n])
        args = tuple(e.desc for e in vs[len(vs) - n:])
        if idx is not None:
            args = args + (idx.desc,)
        argsrc = ", ".join(["d"] + [e.src for e in vs[len(vs) - n:]])
        if indirect is not None:
            typeidx, tableidx = indirect
            callee = f"{self.g('CI')}({self.g(f'T{tableidx}')}, {typeidx}, {idx.src})"
        del vs[len(vs) - n:]
        nres = len(ft.results)
        base = len(vs)
        for k in range(nres):
            self.write_var(f"s{base + k}", base)
        call = f"{callee}({argsrc})"
        meta = ("c", self.off, below, args)
        if nres == 0:
            self.line(call, meta)
        elif nres == 1:
            self.line(f"s{base} = {call}", meta)
        else:
            self.line(", ".join(f"s{base + k}" for k in range(nres)) + f", = {call}", meta)
        for k in range(nres):
            vs.append(self.slot(base + k))

    def bulk(self, code: int, imm: Any) -> None:
        vs = self.vs
        if code == op.TABLE_GET:
            a = vs.pop()
            self.stmt_result(f"{self.g('table_get')}({self.g(f'T{imm}')}, {a.src})")
            return
        if code == op.TABLE_SET:
            b = vs.pop()
            a = vs.pop()
            self.settle()
            self.line(f"{self.g('table_set')}({self.g(f'T{imm}')}, {a.src}, {b.src})")
            return
        if code == op.TABLE_SIZE:
            self.stmt_result(f"len({self.g(f'T{imm}')}.elements)")
            return
        if code == op.TABLE_GROW:
            n = vs.pop()
            init = vs.pop()
            self.settle()
            self.stmt_result(f"{self.g(f'T{imm}')}.grow({n.src}, {init.src}) & 0xFFFFFFFF")
            return
        if code == op.DATA_DROP:
            self.settle()
            self.line(f"{self.g('INST')}.datas[{imm}] = b''")
            return
        if code == op.ELEM_DROP:
            self.settle()
            self.line(f"{self.g('INST')}.elems[{imm}] = []")
            return
        n = vs.pop()
        b = vs.pop()
        a = vs.pop()
        self.settle()
        args = f"{a.src}, {b.src}, {n.src}"
        if code == op.MEMORY_FILL:
            self.line(f"{self.g('mem_fill')}({args})")
        elif code == op.MEMORY_COPY:
            self.line(f"{self.g('mem_copy')}({args})")
        elif code == op.MEMORY_INIT:
            self.line(f"{self.g('mem_init')}({args}, {imm})")
        elif code == op.TABLE_FILL:
            self.line(f"{self.g('table_fill')}({self.g(f'T{imm}')}, {args})")
        elif code == op.TABLE_COPY:
            dst, src = imm
            self.line(f"{self.g('table_copy')}({self.g(f'T{dst}')}, {self.g(f'T{src}')}, {args})")
        elif code == op.TABLE_INIT:
            elem, table = imm
            self.line(f"{self.g('table_init')}({self.g(f'T{table}')}, {args}, {elem})")
        else:
            raise Uncompilable(f"unsupported instruction {op.name(code)}")


def generate(module: Any, func: Any, ftype: FuncType, index: int, func_types: list[FuncType],
             fuel_offsets: frozenset[int], osr: bool = False) -> tuple[str, dict[int, Any]]:
    """Python source of function ``index`` and its line table (see the module docstring).

    ``func_types``: the type of every function in the module's index space (for calls);
    ``fuel_offsets``: the offsets of the interpreter's fuel stop points in this function."""
    gen = CodeGen(module, func, ftype, index, fuel_offsets, osr)
    gen.module_types_of_funcs = func_types  # type: ignore[attr-defined]
    return gen.generate()
