"""Decoding of the WebAssembly 2.0 binary format (spec chapter 5) into :mod:`vm.structure`.

Error messages start with the texts of the spec suite's ``assert_malformed`` commands and follow
the reference interpreter's choice of message where several defects could be reported. Decoding
is linear in the input: every loop over an untrusted count consumes at least one byte per round,
and counts are checked against the bytes left before looping, so hostile input fails fast and
in bounded memory.
"""

from __future__ import annotations

import hashlib

from vm.binary import opcodes as op
from vm.binary.names import parse_function_names
from vm.binary.reader import (TOO_LONG, UNEXPECTED_END, UNEXPECTED_END_SECTION, Reader,
                              malformed, read_sleb, read_uleb)
from vm.errors import MalformedError
from vm.structure import (BLOCK_EMPTY, EXTERNREF, FUNCREF, KIND_FUNC, KIND_GLOBAL, KIND_MEM,
                          KIND_TABLE, MODE_ACTIVE, MODE_DECLARATIVE, MODE_PASSIVE, VAL_TYPES, Data,
                          Elem, Export, Func, FuncType, Global, GlobalType, Import, Instr, Limits,
                          MemType, Module, TableType)

MAGIC = b"\x00asm"
VERSION = b"\x01\x00\x00\x00"

# Implementation limit on the declared locals of one function (the spec's limit is 2**32 - 1).
# Locals are expanded into a list, so the cap keeps memory proportional to the input; it is the
# limit the major engines use.
MAX_FUNCTION_LOCALS = 50_000
# All functions together may declare at most this many locals per byte of module (plus one
# function's worth): without it, a few bytes per function could each claim MAX_FUNCTION_LOCALS.
LOCALS_PER_BYTE = 4

SEC_CUSTOM, SEC_TYPE, SEC_IMPORT, SEC_FUNCTION, SEC_TABLE, SEC_MEMORY = 0, 1, 2, 3, 4, 5
SEC_GLOBAL, SEC_EXPORT, SEC_START, SEC_ELEMENT, SEC_CODE, SEC_DATA, SEC_DATA_COUNT = range(6, 13)
# Position of each non-custom section in the required order (data count comes before code).
_SECTION_ORDER = {SEC_TYPE: 1, SEC_IMPORT: 2, SEC_FUNCTION: 3, SEC_TABLE: 4, SEC_MEMORY: 5,
                  SEC_GLOBAL: 6, SEC_EXPORT: 7, SEC_START: 8, SEC_ELEMENT: 9,
                  SEC_DATA_COUNT: 10, SEC_CODE: 11, SEC_DATA: 12}

# ---------------------------------------------------------------------------------------------
# SIMD (0xFD prefix): the opcode tables live in vm.binary.opcodes; re-exported for importers.
SIMD_NAMES = op.SIMD_NAMES
SIMD_IMM = op.SIMD_IMM
_SIMD_KIND_BY_SUB: dict[int, str] = {code - op.FD: kind for code, kind in op.SIMD_IMM.items()}

# ---------------------------------------------------------------------------------------------
# Instruction decoding: one small-int kind per first byte drives a flat if-chain.
(_K_INDEX, _K_NONE, _K_I32, _K_END, _K_MEMARG, _K_BLOCK, _K_ELSE, _K_I64, _K_F32, _K_F64,
 _K_BR_TABLE, _K_CALL_INDIRECT, _K_ZERO, _K_SELECT_T, _K_REFTYPE, _K_FC, _K_FD,
 _K_ILLEGAL) = range(18)

_KIND_OF_IMM = {"none": _K_NONE, "label": _K_INDEX, "func": _K_INDEX, "local": _K_INDEX,
                "global": _K_INDEX, "table": _K_INDEX, "i32": _K_I32, "i64": _K_I64,
                "f32": _K_F32, "f64": _K_F64, "memarg": _K_MEMARG, "blocktype": _K_BLOCK,
                "br_table": _K_BR_TABLE, "call_indirect": _K_CALL_INDIRECT,
                "memory": _K_ZERO, "select_t": _K_SELECT_T, "reftype": _K_REFTYPE}


def _build_kinds() -> list[int]:
    kinds = [_K_ILLEGAL] * 256
    for code, imm in op.IMM.items():
        if code < 256:
            kinds[code] = _KIND_OF_IMM[imm]
    kinds[op.END] = _K_END
    kinds[op.ELSE] = _K_ELSE
    kinds[0xFC] = _K_FC
    kinds[0xFD] = _K_FD
    return kinds


_KINDS = _build_kinds()
_DATA_INDEX_OPS = frozenset({op.MEMORY_INIT, op.DATA_DROP})

_IF_OPEN = 1  # an ``if`` whose ``else`` may still come
_IF_ELSE = 2  # an ``if`` past its ``else``


def _type_error(b: int, pos: int, what: str) -> MalformedError:
    """Types are signed 7-bit LEB128s in the reference grammar: a continuation bit makes the
    encoding too long rather than an unknown type."""
    if b >= 0x80:
        return malformed(TOO_LONG, pos)
    return malformed(f"malformed {what}", pos, f"0x{b:02x}")


def _memarg(data: bytes, pos: int) -> tuple[tuple[int, int], int]:
    align = data[pos]
    if align < 0x80:
        pos += 1
    else:
        align, pos = read_uleb(data, pos, 32)
    if align >= 32:
        raise malformed("malformed memop flags", pos - 1, f"{align}")
    offset = data[pos]
    if offset < 0x80:
        pos += 1
    else:
        offset, pos = read_uleb(data, pos, 32)
    return (align, offset), pos


def _zero_byte(data: bytes, pos: int) -> int:
    if data[pos] != 0:
        raise malformed("zero byte expected", pos)
    return pos + 1


def _fixed(data: bytes, pos: int, size: int) -> tuple[int, int]:
    """``size`` raw bytes as an unsigned little-endian int (float bits, v128 constants)."""
    end = pos + size
    if end > len(data):
        raise IndexError(end)
    return int.from_bytes(data[pos:end], "little"), end


def _blocktype(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b == 0x40:
        return BLOCK_EMPTY, pos + 1
    if b < 0x40:
        return b, pos + 1
    if b < 0x80:
        if b not in VAL_TYPES:
            raise _type_error(b, pos, "value type")
        return b - 0x80, pos + 1
    start = pos
    bt, pos = read_sleb(data, pos, 33)
    if bt < 0:
        raise malformed("malformed block type", start)
    return bt, pos


def _decode_fc(data: bytes, pos: int, start: int) -> tuple[int, object, int]:
    """Decode the ``0xFC n`` instruction whose sub-opcode starts at ``pos``."""
    sub, pos = read_uleb(data, pos, 32)
    code = op.FC + sub
    imm = op.IMM.get(code)
    if imm is None:
        raise malformed("illegal opcode", start, f"0xfc {sub}")
    if imm == "none":
        return code, None, pos
    if imm == "memory":  # memory.copy has two reserved bytes, memory.fill one
        pos = _zero_byte(data, pos)
        if code == op.MEMORY_COPY:
            pos = _zero_byte(data, pos)
        return code, None, pos
    first, pos = read_uleb(data, pos, 32)
    if code == op.MEMORY_INIT:
        return code, first, _zero_byte(data, pos)
    if imm in ("table_init", "table_copy"):
        second, pos = read_uleb(data, pos, 32)
        return code, (first, second), pos
    return code, first, pos


def _decode_fd(data: bytes, pos: int, start: int) -> tuple[int, object, int]:
    """Decode the SIMD instruction whose sub-opcode starts at ``pos``."""
    sub, pos = read_uleb(data, pos, 32)
    kind = _SIMD_KIND_BY_SUB.get(sub)
    code = op.FD + sub
    if kind is None:
        raise malformed("illegal opcode", start, f"0xfd {sub}")
    if kind == "none":
        return code, None, pos
    if kind == "memarg":
        memarg, pos = _memarg(data, pos)
        return code, memarg, pos
    if kind == "memarg_lane":
        (align, offset), pos = _memarg(data, pos)
        return code, (align, offset, data[pos]), pos + 1
    if kind == "lane":
        return code, data[pos], pos + 1
    if kind == "v128":
        value, pos = _fixed(data, pos, 16)
        return code, value, pos
    end = pos + 16  # shuffle
    if end > len(data):
        raise IndexError(end)
    return code, tuple(data[pos:end]), end


def decode_instrs(data: bytes, pos: int, out: list[Instr]) -> tuple[int, bool]:
    """Decode the expression at ``pos`` up to and including its closing ``end`` into ``out``.

    Returns the position after the ``end`` and whether ``memory.init``/``data.drop`` occur
    (those require a data count section). Block structure is checked here because the binary
    grammar nests instructions: ``else`` only directly inside an ``if``, once.
    Raises IndexError at the end of ``data``.
    """
    kinds = _KINDS
    append = out.append
    blocks: list[int] = []
    uses_data = False
    while True:
        start = pos
        code = data[pos]
        pos += 1
        k = kinds[code]
        if k == _K_INDEX:
            b = data[pos]
            if b < 0x80:
                pos += 1
                append((code, b, start))
            else:
                b, pos = read_uleb(data, pos, 32)
                append((code, b, start))
        elif k == _K_NONE:
            append((code, None, start))
        elif k == _K_I32:
            b = data[pos]
            if b < 0x40:
                pos += 1
            elif b < 0x80:
                pos += 1
                b += 0xFFFFFF80
            else:
                b, pos = read_sleb(data, pos, 32)
                b &= 0xFFFFFFFF
            append((code, b, start))
        elif k == _K_END:
            append((code, None, start))
            if not blocks:
                return pos, uses_data
            blocks.pop()
        elif k == _K_MEMARG:
            memarg, pos = _memarg(data, pos)
            append((code, memarg, start))
        elif k == _K_BLOCK:
            bt, pos = _blocktype(data, pos)
            append((code, bt, start))
            blocks.append(_IF_OPEN if code == op.IF else 0)
        elif k == _K_ELSE:
            if not blocks or blocks[-1] != _IF_OPEN:
                raise malformed("END opcode expected", start)
            blocks[-1] = _IF_ELSE
            append((code, None, start))
        elif k == _K_I64:
            b = data[pos]
            if b < 0x40:
                pos += 1
            elif b < 0x80:
                pos += 1
                b += 0xFFFFFFFFFFFFFF80
            else:
                b, pos = read_sleb(data, pos, 64)
                b &= 0xFFFFFFFFFFFFFFFF
            append((code, b, start))
        elif k == _K_F32:
            bits, pos = _fixed(data, pos, 4)
            append((code, bits, start))
        elif k == _K_F64:
            bits, pos = _fixed(data, pos, 8)
            append((code, bits, start))
        elif k == _K_BR_TABLE:
            count_pos = pos
            count, pos = read_uleb(data, pos, 32)
            if count > len(data) - count_pos:
                raise malformed("length out of bounds", count_pos, f"{count}")
            labels = []
            for _ in range(count):
                label, pos = read_uleb(data, pos, 32)
                labels.append(label)
            default, pos = read_uleb(data, pos, 32)
            append((code, (tuple(labels), default), start))
        elif k == _K_CALL_INDIRECT:
            type_index, pos = read_uleb(data, pos, 32)
            table_index, pos = read_uleb(data, pos, 32)
            append((code, (type_index, table_index), start))
        elif k == _K_ZERO:
            pos = _zero_byte(data, pos)
            append((code, None, start))
        elif k == _K_SELECT_T:
            count_pos = pos
            count, pos = read_uleb(data, pos, 32)
            if count > len(data) - count_pos:
                raise malformed("length out of bounds", count_pos, f"{count}")
            types = []
            for _ in range(count):
                t = data[pos]
                if t not in VAL_TYPES:
                    raise _type_error(t, pos, "value type")
                types.append(t)
                pos += 1
            append((code, tuple(types), start))
        elif k == _K_REFTYPE:
            t = data[pos]
            if t != FUNCREF and t != EXTERNREF:
                raise _type_error(t, pos, "reference type")
            pos += 1
            append((code, t, start))
        elif k == _K_FC:
            code, imm, pos = _decode_fc(data, pos, start)
            if code in _DATA_INDEX_OPS:
                uses_data = True
            append((code, imm, start))
        elif k == _K_FD:
            code, imm, pos = _decode_fd(data, pos, start)
            append((code, imm, start))
        else:
            raise malformed("illegal opcode", start, f"0x{code:02x}")


# ---------------------------------------------------------------------------------------------
# Sections.


class _ModuleDecoder:
    """Decodes one module; holds the state that crosses sections."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.r = Reader(data, 8)
        self.m = Module(sha256=hashlib.sha256(data).hexdigest())
        self.func_types: list[int] = []
        self.codes: list[tuple[list[int], list[Instr], int]] = []
        self.uses_data = False
        self.locals_budget = MAX_FUNCTION_LOCALS + LOCALS_PER_BYTE * len(data)
        self.sections = {
            SEC_CUSTOM: self.custom_section, SEC_TYPE: self.type_section,
            SEC_IMPORT: self.import_section, SEC_FUNCTION: self.function_section,
            SEC_TABLE: self.table_section, SEC_MEMORY: self.memory_section,
            SEC_GLOBAL: self.global_section, SEC_EXPORT: self.export_section,
            SEC_START: self.start_section, SEC_ELEMENT: self.element_section,
            SEC_CODE: self.code_section, SEC_DATA: self.data_section,
            SEC_DATA_COUNT: self.data_count_section,
        }

    # -- top level ------------------------------------------------------------------------

    def module(self) -> Module:
        """Decode the sections after the header, then the checks that span sections.

        Each section parser is given the end of its section, which only the custom section
        needs; the others read their contents and are checked against the size afterwards.
        """
        r = self.r
        last = 0
        while not r.at_end():
            id_pos = r.pos
            section_id = r.byte()
            if section_id > SEC_DATA_COUNT:
                raise malformed("malformed section id", id_pos, f"{section_id}")
            if section_id != SEC_CUSTOM:
                order = _SECTION_ORDER[section_id]
                if order <= last:
                    raise malformed("unexpected content after last section", id_pos)
                last = order
            try:
                size = r.length()
            except IndexError:
                raise malformed(UNEXPECTED_END, len(self.data)) from None
            start = r.pos
            try:
                self.sections[section_id](start + size)
            except IndexError:
                raise malformed(UNEXPECTED_END_SECTION, len(self.data)) from None
            if r.pos != start + size:
                raise malformed("section size mismatch", start, f"section {section_id}")
        return self.finish()

    def finish(self) -> Module:
        """Checks between sections, in the reference interpreter's order; pairs up functions."""
        m = self.m
        end = len(self.data)
        if len(self.func_types) != len(self.codes):
            raise malformed("function and code section have inconsistent lengths", end)
        if m.data_count is not None and m.data_count != len(m.datas):
            raise malformed("data count and data section have inconsistent lengths", end)
        if m.data_count is None and self.uses_data:
            raise malformed("data count section required", end)
        m.funcs = [Func(t, locals_, body, offset)
                   for t, (locals_, body, offset) in zip(self.func_types, self.codes)]
        return m

    # -- shared pieces ----------------------------------------------------------------------

    def valtype(self) -> int:
        r = self.r
        t = r.data[r.pos]
        if t not in VAL_TYPES:
            raise _type_error(t, r.pos, "value type")
        r.pos += 1
        return t

    def reftype(self) -> int:
        r = self.r
        t = r.data[r.pos]
        if t != FUNCREF and t != EXTERNREF:
            raise _type_error(t, r.pos, "reference type")
        r.pos += 1
        return t

    def limits(self) -> Limits:
        r = self.r
        has_max = r.flag()
        minimum = r.u32()
        return Limits(minimum, r.u32() if has_max else None)

    def table_type(self) -> TableType:
        elem_type = self.reftype()
        return TableType(elem_type, self.limits())

    def global_type(self) -> GlobalType:
        t = self.valtype()
        r = self.r
        mut = r.byte()
        if mut > 1:
            raise malformed("malformed mutability", r.pos - 1, f"{mut}")
        return GlobalType(t, mut == 1)

    def expr(self) -> list[Instr]:
        out: list[Instr] = []
        self.r.pos, _ = decode_instrs(self.data, self.r.pos, out)
        return out

    # -- sections -----------------------------------------------------------------------------

    def custom_section(self, end: int) -> None:
        r = self.r
        name = r.name()
        if r.pos > end:
            raise malformed(UNEXPECTED_END_SECTION, end, "custom section name")
        if end > len(r.data):
            raise malformed(UNEXPECTED_END_SECTION, len(r.data), "custom section content")
        content = r.data[r.pos:end]
        r.pos = end
        self.m.customs.append((name, content))
        if name == "name" and not self.m.func_names:
            self.m.func_names = parse_function_names(content)

    def type_section(self, end: int) -> None:
        r = self.r
        types = self.m.types
        for _ in range(r.length()):
            form = r.data[r.pos]
            if form != 0x60:
                raise _type_error(form, r.pos, "function type")
            r.pos += 1
            params = tuple(self.valtype() for _ in range(r.length()))
            results = tuple(self.valtype() for _ in range(r.length()))
            types.append(FuncType(params, results))

    def import_section(self, end: int) -> None:
        r = self.r
        imports = self.m.imports
        for _ in range(r.length()):
            module = r.name()
            name = r.name()
            kind = r.byte()
            desc: object
            if kind == KIND_FUNC:
                desc = r.u32()
            elif kind == KIND_TABLE:
                desc = self.table_type()
            elif kind == KIND_MEM:
                desc = MemType(self.limits())
            elif kind == KIND_GLOBAL:
                desc = self.global_type()
            else:
                raise malformed("malformed import kind", r.pos - 1, f"{kind}")
            imports.append(Import(module, name, kind, desc))

    def function_section(self, end: int) -> None:
        r = self.r
        self.func_types = [r.u32() for _ in range(r.length())]

    def table_section(self, end: int) -> None:
        r = self.r
        self.m.tables = [self.table_type() for _ in range(r.length())]

    def memory_section(self, end: int) -> None:
        r = self.r
        self.m.mems = [MemType(self.limits()) for _ in range(r.length())]

    def global_section(self, end: int) -> None:
        r = self.r
        globals_ = self.m.globals
        for _ in range(r.length()):
            gt = self.global_type()
            globals_.append(Global(gt, self.expr()))

    def export_section(self, end: int) -> None:
        r = self.r
        exports = self.m.exports
        for _ in range(r.length()):
            name = r.name()
            kind = r.byte()
            if kind > KIND_GLOBAL:
                raise malformed("malformed export kind", r.pos - 1, f"{kind}")
            exports.append(Export(name, kind, r.u32()))

    def start_section(self, end: int) -> None:
        self.m.start = self.r.u32()

    def data_count_section(self, end: int) -> None:
        self.m.data_count = self.r.u32()

    def element_section(self, end: int) -> None:
        r = self.r
        elems = self.m.elems
        for _ in range(r.length()):
            elems.append(self.elem_segment())

    def elem_segment(self) -> Elem:
        """One of the eight element segment encodings (flags 0..7), normalised.

        Bit 0: passive or declarative (else active); bit 1: with bit 0, declarative, without
        it, an explicit table index; bit 2: initialisers are expressions, not function indices.
        """
        r = self.r
        flags_pos = r.pos
        flags = r.u32()
        if flags > 7:
            raise malformed("malformed elements segment kind", flags_pos, f"{flags}")
        table = 0
        offset = None
        if flags & 1:
            mode = MODE_DECLARATIVE if flags & 2 else MODE_PASSIVE
        else:
            mode = MODE_ACTIVE
            if flags & 2:
                table = r.u32()
            offset = self.expr()
        explicit_type = flags & 3 != 0
        if flags & 4:
            elem_type = self.reftype() if explicit_type else FUNCREF
            init = [self.expr() for _ in range(r.length())]
        else:
            if explicit_type:
                kind = r.byte()
                if kind != 0x00:
                    raise malformed("malformed element kind", r.pos - 1, f"{kind}")
            elem_type = FUNCREF
            init = []
            for _ in range(r.length()):
                at = r.pos
                index = r.u32()
                init.append([(op.REF_FUNC, index, at), (op.END, None, at)])
        return Elem(elem_type, init, mode, table, offset)

    def code_section(self, end: int) -> None:
        r = self.r
        for _ in range(r.length()):
            self.codes.append(self.code_entry())

    def code_entry(self) -> tuple[list[int], list[Instr], int]:
        r = self.r
        size = r.length()
        start = r.pos
        runs = [(r.u32(), self.valtype()) for _ in range(r.length())]
        total = sum(n for n, _ in runs)
        if total > MAX_FUNCTION_LOCALS or total > self.locals_budget:
            raise malformed("too many locals", start, f"{total}")
        self.locals_budget -= total
        locals_: list[int] = []
        for n, t in runs:
            locals_ += [t] * n
        body: list[Instr] = []
        r.pos, uses_data = decode_instrs(self.data, r.pos, body)
        self.uses_data = self.uses_data or uses_data
        if r.pos != start + size:
            raise malformed("section size mismatch", start, "function body")
        return locals_, body, start

    def data_section(self, end: int) -> None:
        r = self.r
        datas = self.m.datas
        for _ in range(r.length()):
            flags_pos = r.pos
            flags = r.u32()
            if flags == 0:
                offset = self.expr()
                datas.append(Data(r.raw(r.length()), MODE_ACTIVE, 0, offset))
            elif flags == 1:
                datas.append(Data(r.raw(r.length()), MODE_PASSIVE))
            elif flags == 2:
                memory = r.u32()
                offset = self.expr()
                datas.append(Data(r.raw(r.length()), MODE_ACTIVE, memory, offset))
            else:
                raise malformed("malformed data segment kind", flags_pos, f"{flags}")


def decode_module(data: bytes | bytearray | memoryview) -> Module:
    """Decode a binary module (spec 5.5.16). Raises MalformedError for anything malformed."""
    data = bytes(data)
    if len(data) < 4:
        raise malformed(UNEXPECTED_END, len(data))
    if data[:4] != MAGIC:
        raise malformed("magic header not detected", 0)
    if len(data) < 8:
        raise malformed(UNEXPECTED_END, len(data))
    if data[4:8] != VERSION:
        raise malformed("unknown binary version", 4)
    return _ModuleDecoder(data).module()
