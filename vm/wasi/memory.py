"""Checked access to the guest's linear memory for the WASI calls.

Every pointer a guest hands to a WASI function is checked before use. The witx rules (and
wasmtime) make a pointer that is out of bounds or misaligned for its type a trap, not an errno:
the call never half-happens, and the guest gets ``TrapError("out of bounds memory access")``
or ``TrapError("misaligned pointer")``. Memory is read on each call through the ``Memory``
object, whose ``data`` bytearray grows in place.
"""

from __future__ import annotations

import struct

from ..errors import TrapError
from .errno import EILSEQ, WasiError

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_IOVEC = struct.Struct("<II")


class GuestMemory:
    """The exported ``memory`` of a WASI instance, with bounds- and alignment-checked helpers."""

    __slots__ = ("memory",)

    def __init__(self, memory: object) -> None:
        self.memory = memory

    @property
    def data(self) -> bytearray:
        return self.memory.data  # type: ignore[attr-defined]

    def check(self, addr: int, size: int, align: int = 1) -> None:
        """Trap unless ``[addr, addr+size)`` lies in memory and ``addr`` is ``align``-aligned."""
        if addr % align:
            raise TrapError("misaligned pointer")
        if addr < 0 or size < 0 or addr + size > len(self.data):
            raise TrapError("out of bounds memory access")

    def read(self, addr: int, size: int) -> bytes:
        self.check(addr, size)
        return bytes(self.data[addr:addr + size])

    def write(self, addr: int, data: bytes, align: int = 1) -> None:
        self.check(addr, len(data), align)
        self.data[addr:addr + len(data)] = data

    def u32(self, addr: int) -> int:
        self.check(addr, 4, 4)
        return _U32.unpack_from(self.data, addr)[0]

    def set_u32(self, addr: int, value: int) -> None:
        self.check(addr, 4, 4)
        _U32.pack_into(self.data, addr, value & 0xFFFFFFFF)

    def set_u64(self, addr: int, value: int) -> None:
        self.check(addr, 8, 8)
        _U64.pack_into(self.data, addr, value & 0xFFFFFFFFFFFFFFFF)

    def string(self, addr: int, length: int) -> str:
        """A UTF-8 string argument (paths); invalid UTF-8 is EILSEQ, as in wasmtime."""
        raw = self.read(addr, length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WasiError(EILSEQ) from None

    def iovecs(self, addr: int, count: int) -> list[tuple[int, int]]:
        """The ``(buf, len)`` pairs of an iovec/ciovec array; each buffer is bounds-checked."""
        self.check(addr, count * 8, 4)
        data = self.data
        vecs = []
        for i in range(count):
            buf, length = _IOVEC.unpack_from(data, addr + 8 * i)
            self.check(buf, length)
            vecs.append((buf, length))
        return vecs

    def gather(self, vecs: list[tuple[int, int]]) -> bytes:
        """The concatenated contents of ciovec buffers (the bytes of a write)."""
        data = self.data
        return b"".join(bytes(data[buf:buf + length]) for buf, length in vecs)

    def scatter(self, vecs: list[tuple[int, int]], payload: bytes) -> None:
        """Spread ``payload`` over iovec buffers in order (the bytes of a read)."""
        data = self.data
        pos = 0
        for buf, length in vecs:
            if pos >= len(payload):
                break
            chunk = payload[pos:pos + length]
            data[buf:buf + len(chunk)] = chunk
            pos += len(chunk)
