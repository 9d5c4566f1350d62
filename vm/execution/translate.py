"""Translation of a validated function body into threaded code (a list of closures).

Validation recorded the operand stack height before every instruction, so each operand-stack
position has a fixed register: position *i* lives in ``r[nlocals + i]`` (its *canonical* register).
The translator keeps a *virtual stack* of register indices: ``local.get x`` pushes ``x`` itself and a
constant pushes the register holding it, without emitting any code; the instruction that consumes
them reads those registers directly. Before anything that needs values in their canonical
registers (block boundaries, calls, a write to a local that is still referenced) the pending entries
are *materialised* with copies. An instruction whose result is immediately stored by ``local.set``
or ``local.tee`` writes the local directly, and a comparison feeding ``br_if``/``if`` becomes one
compare-and-branch closure. Together these remove most of the dispatches a stack machine does.

Every emitted closure remembers the wasm bytecode offset it came from (``Compiled.offsets``), the
position that backtraces and snapshots use.
"""

from __future__ import annotations

from typing import Any, Callable

from ..binary import opcodes as op
from ..errors import WasmError
from ..structure import BLOCK_EMPTY, F32, F64, FuncType
from . import handlers as H
from . import numerics, simd_translate

# Kinds of records in Compiled.specials: what the machine loop does when a closure returns
# ``-1 - pc``.
S_CALL = 0  # (S_CALL, function, argbase, nargs)
S_CALL_INDIRECT = 1  # (S_CALL_INDIRECT, functype, table, argbase, nargs, index_register)
S_RETURN = 2  # (S_RETURN, source_registers)
S_FUEL = 3  # (S_FUEL,): a backward branch found the fuel exhausted; re-run it to continue


class Compiled:
    """The translated form of one function of one instance."""

    __slots__ = ("code", "specials", "stack_maps", "offsets", "tail", "nparams", "nlocals",
                 "nregs", "_resume_pcs")

    def __init__(self, code: list, specials: dict[int, tuple], stack_maps: dict[int, tuple],
                 offsets: list[int], tail: list, nparams: int, nlocals: int) -> None:
        self.code = code
        self.specials = specials
        # For each place execution can stop (calls and fuel checks): the register holding each
        # wasm operand-stack value there, bottom first. Snapshots read the operand stack through
        # it; restores write values to the canonical registers (nlocals + position).
        self.stack_maps = stack_maps
        self.offsets = offsets  # wasm bytecode offset of each closure
        self.tail = tail  # initial registers after the params: zeroed locals, stack, constants
        self.nparams = nparams
        self.nlocals = nlocals  # params + declared locals
        self.nregs = nparams + len(tail)
        self._resume_pcs: dict[int, int] | None = None

    def stop_pc(self, offset: int) -> int:
        """The closure index of the stop point (call or fuel check) at wasm ``offset``."""
        if self._resume_pcs is None:
            self._resume_pcs = {self.offsets[pc]: pc for pc in self.stack_maps}
        pc = self._resume_pcs.get(offset)
        if pc is None:
            raise KeyError(f"no stop point at offset {offset:#x}")
        return pc


class Label:
    __slots__ = ("pc",)

    def __init__(self, pc: int = -1) -> None:
        self.pc = pc


class _Ctrl:
    __slots__ = ("kind", "height", "nparams", "nresults", "label", "else_label", "dead")

    def __init__(self, kind: str, height: int, nparams: int, nresults: int, label: Label | None,
                 else_label: Label | None = None, dead: bool = False) -> None:
        self.kind = kind
        self.height = height  # stack height of the label (below the block's params)
        self.nparams = nparams
        self.nresults = nresults
        self.label = label
        self.else_label = else_label
        self.dead = dead  # the block starts in unreachable code: nothing is emitted for it

    @property
    def arity(self) -> int:
        """Number of values a branch to this label carries."""
        return self.nparams if self.kind == "loop" else self.nresults


def _plain(handler: Callable) -> Callable:
    return handler


def _resolve(x: Any) -> Any:
    if type(x) is Label:
        if x.pc < 0:
            raise WasmError("internal error: unbound label")
        return x.pc
    if type(x) is tuple:
        return tuple(_resolve(i) for i in x)
    return x


_NUMERIC_NAMES = {code: name for code, name in op.NAMES.items()
                  if 0x45 <= code <= 0xC4 or op.FC <= code <= op.FC + 7}
_LOAD_OPS = {code: name for code, name in op.NAMES.items() if ".load" in name}
_STORE_OPS = {code: name for code, name in op.NAMES.items() if ".store" in name}


class Translator:
    """Translates one ``WasmFunction``; use :func:`translate`."""

    def __init__(self, wfunc: Any, fuel: list[int]) -> None:
        inst = wfunc.instance
        func = wfunc.func
        self.inst = inst
        self.module = inst.module
        self.func = func
        self.ftype: FuncType = wfunc.type
        self.fuel = fuel
        self.nparams = len(self.ftype.params)
        self.nl = self.nparams + len(func.locals)
        self.const_base = self.nl + max(func.max_height, 1)
        self.consts: list[Any] = []
        self.const_regs: dict[Any, int] = {}
        self.ins: list[list] = []  # pending instructions: [factory, *args]
        self.offsets: list[int] = []
        self.specials: dict[int, tuple] = {}
        self.stack_maps: dict[int, tuple[int, ...]] = {}
        self.vs: list[int] = []
        self.ctrl: list[_Ctrl] = []
        # Index in self.ins of the last instruction if it wrote its single result to the
        # canonical register of the stack top (so it may be retargeted or fused); else None.
        self.fusable: int | None = None
        self.fusable_name: str | None = None
        self.off = func.offset

    # --- emission helpers ---------------------------------------------------------------------

    def emit(self, *entry: Any) -> int:
        self.ins.append(list(entry))
        self.offsets.append(self.off)
        self.fusable = None
        return len(self.ins) - 1

    def emit_result(self, name: str | None, factory: Callable, *args: Any) -> None:
        """Emit an instruction whose first argument is its destination register, and push it."""
        d = self.nl + len(self.vs)
        self.vs.append(d)
        pc = self.emit(factory, d, *args)
        self.fusable = pc
        self.fusable_name = name

    def emit_special(self, record: tuple) -> int:
        pc = self.emit(_plain, H.special)
        self.specials[pc] = record
        return pc

    def stop_point(self, pc: int, record: tuple, extra: tuple[int, ...] = (),
                   offset: int | None = None) -> None:
        """Mark closure ``pc`` as a place where execution may stop, with the wasm operand stack
        there: the virtual stack plus ``extra`` registers already popped by the translator."""
        self.specials[pc] = record
        self.stack_maps[pc] = tuple(self.vs) + extra
        if offset is not None:
            self.offsets[pc] = offset

    def here(self) -> int:
        return len(self.ins)

    def bind(self, label: Label) -> None:
        label.pc = len(self.ins)
        self.fusable = None

    def canonical(self, pos: int) -> int:
        return self.nl + pos

    def const(self, key: Any, value: Any) -> int:
        reg = self.const_regs.get(key)
        if reg is None:
            reg = self.const_base + len(self.consts)
            self.consts.append(value)
            self.const_regs[key] = reg
        return reg

    def materialize(self, start: int = 0) -> None:
        """Copy deferred entries at stack positions >= start into their canonical registers."""
        vs = self.vs
        pairs = []
        for i in range(start, len(vs)):
            c = self.nl + i
            if vs[i] != c:
                pairs.append((c, vs[i]))
                vs[i] = c
        if len(pairs) == 1:
            self.emit(H.copy, *pairs[0])
        elif pairs:
            self.emit(H.copies, tuple(pairs))

    def materialize_refs(self, reg: int) -> None:
        """Before ``reg`` (a local) is written, copy stack entries that still read it."""
        vs = self.vs
        pairs = []
        for i, v in enumerate(vs):
            if v == reg:
                c = self.nl + i
                pairs.append((c, v))
                vs[i] = c
        if len(pairs) == 1:
            self.emit(H.copy, *pairs[0])
        elif pairs:
            self.emit(H.copies, tuple(pairs))

    def reset_stack(self, height: int) -> None:
        self.vs = [self.nl + i for i in range(height)]

    def block_arity(self, bt: int) -> tuple[int, int]:
        if bt == BLOCK_EMPTY:
            return 0, 0
        if bt < 0:
            return 0, 1
        t = self.module.types[bt]
        return len(t.params), len(t.results)

    def branch_pairs(self, target: _Ctrl) -> tuple[tuple[int, int], ...]:
        n = target.arity
        if n == 0:
            return ()
        srcs = self.vs[-n:]
        return tuple((self.nl + target.height + i, s) for i, s in enumerate(srcs)
                     if self.nl + target.height + i != s)

    def return_record(self) -> tuple:
        n = len(self.ftype.results)
        return (S_RETURN, tuple(self.vs[-n:]) if n else ())

    # --- conditional branches, with compare fusion --------------------------------------------

    def cond_branch(self, c: int, target: Label, negate: bool, fuel: bool) -> None:
        """Emit "if r[c] (or not r[c], when negate) jump to target".

        A comparison or ``eqz`` that was just emitted to produce ``c`` is folded into the branch
        (the fused closure then stands at the comparison's offset). With ``fuel`` (a backward
        branch) the taken path checks and consumes fuel first; when none is left the closure
        stops with S_FUEL and re-running it later continues.
        """
        fused = self.fusable
        extra: tuple[int, ...] = (c,)
        offset = None
        if fused is not None and fused == len(self.ins) - 1 and self.ins[fused][1] == c:
            name = self.fusable_name
            entry = self.ins[fused]
            if name in H.COMPARE_COND:
                self.ins.pop()
                offset = self.offsets.pop()
                factory = H.CMP_BRANCH[(negate, fuel)][name]
                if fuel:
                    pc = self.emit(factory, entry[2], entry[3], target, self.fuel)
                    self.stop_point(pc, (S_FUEL,), (entry[2], entry[3]), offset)
                else:
                    self.emit(factory, entry[2], entry[3], target)
                return
            if name in ("i32.eqz", "i64.eqz"):
                self.ins.pop()
                offset = self.offsets.pop()
                c = entry[2]
                extra = (c,)
                negate = not negate
        if fuel:
            pc = self.emit(H.br_unless_fuel if negate else H.br_if_fuel, c, target, self.fuel)
            self.stop_point(pc, (S_FUEL,), extra, offset)
        else:
            pc = self.emit(H.br_unless if negate else H.br_if, c, target)
            if offset is not None:
                self.offsets[pc] = offset

    # --- the translation ----------------------------------------------------------------------

    def translate(self) -> Compiled:
        func = self.func
        heights = func.heights
        if heights is None:
            raise WasmError("function was not validated")
        nres = len(self.ftype.results)
        self.ctrl.append(_Ctrl("func", 0, 0, nres, Label()))
        body = func.body
        for i in range(len(body)):
            code, imm, off = body[i]
            self.off = off
            if heights[i] < 0 or self.ctrl[-1].dead:
                self.dead_instr(code)
            else:
                self.instr(code, imm)
        return self.finish()

    def dead_instr(self, code: int) -> None:
        if code in (op.BLOCK, op.LOOP, op.IF):
            self.ctrl.append(_Ctrl("block", 0, 0, 0, None, dead=True))
        elif code == op.ELSE:
            ctrl = self.ctrl[-1]
            if not ctrl.dead:
                self.enter_else(ctrl)
        elif code == op.END:
            self.end_block(fallthrough=False)

    def enter_else(self, ctrl: _Ctrl) -> None:
        assert ctrl.else_label is not None
        self.bind(ctrl.else_label)
        ctrl.else_label = None
        ctrl.kind = "else"
        self.reset_stack(ctrl.height + ctrl.nparams)

    def end_block(self, fallthrough: bool) -> None:
        ctrl = self.ctrl.pop()
        if ctrl.dead:
            return
        if fallthrough:
            self.materialize()
        if not self.ctrl:  # the function's own end
            if fallthrough:
                self.emit_special(self.return_record())
            return
        if ctrl.else_label is not None:  # an if without else: the false path ends here
            self.bind(ctrl.else_label)
        if ctrl.kind != "loop":
            assert ctrl.label is not None
            self.bind(ctrl.label)
        self.fusable = None
        self.reset_stack(ctrl.height + ctrl.nresults)

    def branch(self, depth: int, extra: tuple[int, ...] = ()) -> None:
        """Unconditional branch; ``extra``: registers of operands the wasm instruction still has
        on its stack (the condition of a taken ``br_if``), for the stop point's stack map."""
        target = self.ctrl[-1 - depth]
        if depth == len(self.ctrl) - 1:
            self.emit_special(self.return_record())
            return
        pairs = self.branch_pairs(target)
        if target.kind == "loop":
            pc = self.emit(H.jump_fuel, pairs, target.label, self.fuel)
            self.stop_point(pc, (S_FUEL,), extra)
        elif pairs:
            self.emit(H.copy_jump, pairs, target.label)
        else:
            self.emit(H.jump, target.label)

    def instr(self, code: int, imm: Any) -> None:  # noqa: C901 - one dispatch over the ISA
        vs = self.vs
        inst = self.inst
        name = _NUMERIC_NAMES.get(code)
        if name is not None:
            self.numeric(code, name)
            return
        if code >= op.FD:  # SIMD: vm.execution.simd_translate
            simd_translate.instr(self, code, imm)
            return
        if code == op.LOCAL_GET:
            vs.append(imm)
        elif code == op.LOCAL_SET or code == op.LOCAL_TEE:
            self.set_local(imm, code == op.LOCAL_TEE)
        elif code == op.I32_CONST or code == op.I64_CONST:
            vs.append(self.const((code, imm), imm))
        elif code == op.F32_CONST:
            vs.append(self.const((F32, imm), numerics.f32_from_bits(imm)))
        elif code == op.F64_CONST:
            vs.append(self.const((F64, imm), numerics.f64_from_bits(imm)))
        elif code in _LOAD_OPS:
            a = vs.pop()
            self.emit_result(None, H.LOAD[_LOAD_OPS[code]], a, imm[1], inst.mems[0].data)
        elif code in _STORE_OPS:
            b = vs.pop()
            a = vs.pop()
            self.emit(H.STORE[_STORE_OPS[code]], a, b, imm[1], inst.mems[0].data)
        elif code == op.BLOCK or code == op.LOOP:
            np_, nr = self.block_arity(imm)
            self.materialize()
            height = len(vs) - np_
            if code == op.BLOCK:
                self.ctrl.append(_Ctrl("block", height, np_, nr, Label()))
            else:
                label = Label()
                self.bind(label)
                self.ctrl.append(_Ctrl("loop", height, np_, nr, label))
        elif code == op.IF:
            np_, nr = self.block_arity(imm)
            c = vs.pop()
            self.materialize()
            else_label = Label()
            self.cond_branch(c, else_label, negate=True, fuel=False)
            self.ctrl.append(_Ctrl("if", len(vs) - np_, np_, nr, Label(), else_label))
        elif code == op.ELSE:
            ctrl = self.ctrl[-1]
            self.materialize()
            self.emit(H.jump, ctrl.label)
            self.enter_else(ctrl)
        elif code == op.END:
            self.end_block(fallthrough=True)
        elif code == op.BR:
            self.branch(imm)
        elif code == op.BR_IF:
            c = vs.pop()
            target = self.ctrl[-1 - imm]
            pairs = () if imm == len(self.ctrl) - 1 else self.branch_pairs(target)
            if imm == len(self.ctrl) - 1 or pairs:
                skip = Label()
                self.cond_branch(c, skip, negate=True, fuel=False)
                self.branch(imm, (c,))
                self.bind(skip)
            else:
                self.cond_branch(c, target.label, negate=False, fuel=target.kind == "loop")
        elif code == op.BR_TABLE:
            self.br_table(imm)
        elif code == op.RETURN:
            self.emit_special(self.return_record())
        elif code == op.CALL:
            callee = inst.funcs[imm]
            self.call(callee.type, (S_CALL, callee))
        elif code == op.CALL_INDIRECT:
            typeidx, tableidx = imm
            idx = vs.pop()
            ft = self.module.types[typeidx]
            self.call(ft, (S_CALL_INDIRECT, ft, inst.tables[tableidx]), idx)
        elif code == op.DROP:
            vs.pop()
        elif code == op.SELECT or code == op.SELECT_T:
            c = vs.pop()
            b = vs.pop()
            a = vs.pop()
            self.emit_result(None, H.select, a, b, c)
        elif code == op.GLOBAL_GET:
            self.emit_result(None, H.global_get, inst.globals[imm])
        elif code == op.GLOBAL_SET:
            self.emit(H.global_set, inst.globals[imm], vs.pop())
        elif code == op.NOP:
            pass
        elif code == op.UNREACHABLE:
            self.emit(_plain, H.unreachable)
        elif code == op.MEMORY_SIZE:
            self.emit_result(None, H.memory_size, inst.mems[0])
        elif code == op.MEMORY_GROW:
            self.emit_result(None, H.memory_grow, vs.pop(), inst.mems[0])
        elif code == op.REF_NULL:
            vs.append(self.const(("null",), None))
        elif code == op.REF_IS_NULL:
            self.emit_result(None, H.ref_is_null, vs.pop())
        elif code == op.REF_FUNC:
            vs.append(self.const(("func", imm), inst.funcs[imm]))
        elif code == op.TABLE_GET:
            self.emit_result(None, H.table_get, vs.pop(), inst.tables[imm])
        elif code == op.TABLE_SET:
            b = vs.pop()
            a = vs.pop()
            self.emit(H.table_set, a, b, inst.tables[imm])
        else:
            self.bulk(code, imm)

    def bulk(self, code: int, imm: Any) -> None:
        vs = self.vs
        inst = self.inst
        if code == op.TABLE_SIZE:
            self.emit_result(None, H.table_size, inst.tables[imm])
            return
        if code == op.TABLE_GROW:
            n = vs.pop()
            init = vs.pop()
            self.emit_result(None, H.table_grow, init, n, inst.tables[imm])
            return
        if code == op.DATA_DROP:
            self.emit(H.data_drop, inst, imm)
            return
        if code == op.ELEM_DROP:
            self.emit(H.elem_drop, inst, imm)
            return
        n = vs.pop()
        b = vs.pop()
        a = vs.pop()
        if code == op.MEMORY_FILL:
            self.emit(H.memory_fill, a, b, n, inst.mems[0])
        elif code == op.MEMORY_COPY:
            self.emit(H.memory_copy, a, b, n, inst.mems[0])
        elif code == op.MEMORY_INIT:
            self.emit(H.memory_init, a, b, n, inst.mems[0], inst, imm)
        elif code == op.TABLE_FILL:
            self.emit(H.table_fill, a, b, n, inst.tables[imm])
        elif code == op.TABLE_COPY:
            dst, src = imm
            self.emit(H.table_copy, a, b, n, inst.tables[dst], inst.tables[src])
        elif code == op.TABLE_INIT:
            elem, table = imm
            self.emit(H.table_init, a, b, n, inst.tables[table], inst, elem)
        else:
            raise WasmError(f"unsupported instruction {op.name(code)}")

    def numeric(self, code: int, name: str) -> None:
        vs = self.vs
        if name in H.BINARY:
            b = vs.pop()
            a = vs.pop()
            self.emit_result(name, H.BINARY[name], a, b)
        elif name in H.UNARY:
            self.emit_result(name, H.UNARY[name], vs.pop())
        else:
            fn = numerics.OPS[code]
            if numerics.ARITY[code] == 2:
                b = vs.pop()
                a = vs.pop()
                self.emit_result(None, _call_binary(fn), a, b)
            else:
                self.emit_result(None, _call_unary(fn), vs.pop())

    def set_local(self, x: int, tee: bool) -> None:
        vs = self.vs
        v = vs[-1]
        fused = self.fusable
        if (fused is not None and fused == len(self.ins) - 1 and self.ins[fused][1] == v
                and v == self.nl + len(vs) - 1 and x not in vs[:-1]):
            self.ins[fused][1] = x  # the producer writes the local directly
            self.fusable = None
            vs.pop()
        else:
            vs.pop()
            self.materialize_refs(x)
            if v != x:
                self.emit(H.copy, x, v)
        if tee:
            vs.append(x)

    def call(self, ft: FuncType, record: tuple, idx: int | None = None) -> None:
        vs = self.vs
        nargs = len(ft.params)
        self.materialize(len(vs) - nargs)
        argbase = self.nl + len(vs) - nargs
        pc = self.emit(_plain, H.special)
        if idx is None:
            self.stop_point(pc, record + (argbase, nargs))
        else:
            self.stop_point(pc, record + (argbase, nargs, idx), (idx,))
        del vs[len(vs) - nargs:]
        for _ in ft.results:
            vs.append(self.nl + len(vs))

    def br_table(self, imm: tuple[tuple[int, ...], int]) -> None:
        depths, default = imm
        c = self.vs.pop()
        targets = []
        returns = []
        for depth in (*depths, default):
            target = self.ctrl[-1 - depth]
            if depth == len(self.ctrl) - 1:  # the function's label: jump to a return stub
                stub = Label()
                returns.append(stub)
                targets.append((stub, (), False))
            else:
                targets.append((target.label, self.branch_pairs(target), target.kind == "loop"))
        pc = self.emit(H.br_table, c, tuple(targets), self.fuel)
        if any(t[2] for t in targets):
            self.stop_point(pc, (S_FUEL,), (c,))
        for stub in returns:
            self.bind(stub)
            self.emit_special(self.return_record())

    def finish(self) -> Compiled:
        code = []
        for entry in self.ins:
            factory = entry[0]
            code.append(factory(*[_resolve(a) for a in entry[1:]]))
        zero_locals = [_zero(t) for t in self.func.locals]
        stack = [None] * (self.const_base - self.nl)
        tail = zero_locals + stack + self.consts
        return Compiled(code, self.specials, self.stack_maps, self.offsets, tail, self.nparams,
                        self.nl)


def _zero(valtype: int) -> Any:
    if valtype == F32 or valtype == F64:
        return 0.0
    if valtype in (0x70, 0x6F):
        return None
    return 0


def _call_unary(fn: Callable) -> Callable:
    def factory(d: int, a: int) -> Callable:
        return H.call_unary(fn, d, a)
    return factory


def _call_binary(fn: Callable) -> Callable:
    def factory(d: int, a: int, b: int) -> Callable:
        return H.call_binary(fn, d, a, b)
    return factory


def translate(wfunc: Any, fuel: list[int]) -> Compiled:
    """Translate ``wfunc`` (a validated ``WasmFunction``) for its instance."""
    return Translator(wfunc, fuel).translate()
