"""Primitive values of the binary format (spec 5.1, 5.2): bytes, LEB128 integers, names.

Reads are bounded by the end of the whole module, not by the enclosing section. This mirrors the
reference interpreter, whose error messages the spec suite checks: a function body that runs past
its declared size is a "section size mismatch" found after the body was read, and an expression
that runs into the next section reports the opcode it finds there. Nothing is lost for
robustness: every read still stops at the end of the bytes, and the first error ends decoding.

Reading past the end of the bytes raises ``IndexError`` from ``bytes`` indexing; callers turn it
into a :class:`~vm.errors.MalformedError` ("unexpected end ..."). Letting the interpreter do the
bounds check is much cheaper than testing the position before every byte.
"""

from __future__ import annotations

from vm.errors import MalformedError

TOO_LONG = "integer representation too long"
TOO_LARGE = "integer too large"
UNEXPECTED_END = "unexpected end"
UNEXPECTED_END_SECTION = "unexpected end of section or function"


def malformed(message: str, offset: int, detail: str = "") -> MalformedError:
    """Build the error for ``message`` (a spec text, kept as the prefix) found at ``offset``."""
    if detail:
        return MalformedError(f"{message}: {detail} (at offset {offset})")
    return MalformedError(f"{message} (at offset {offset})")


def read_uleb(data: bytes, pos: int, bits: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 of at most ``bits`` bits at ``pos``; return (value, next pos).

    Enforces the spec's limits: at most ceil(bits / 7) bytes ("integer representation too
    long"), and the unused high bits of the last byte must be zero ("integer too large").
    """
    result = 0
    shift = 0
    while True:
        if shift >= bits:
            raise malformed(TOO_LONG, pos)
        b = data[pos]
        pos += 1
        left = bits - shift
        if left < 7 and (b & 0x7F) >> left:
            raise malformed(TOO_LARGE, pos - 1)
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def read_sleb(data: bytes, pos: int, bits: int) -> tuple[int, int]:
    """Decode a signed LEB128 of at most ``bits`` bits at ``pos``; return (value, next pos).

    The unused bits of the last byte must all equal the sign bit ("integer too large").
    """
    result = 0
    shift = 0
    while True:
        if shift >= bits:
            raise malformed(TOO_LONG, pos)
        b = data[pos]
        pos += 1
        left = bits - shift
        if left < 7:
            mask = (-1 << (left - 1)) & 0x7F
            high = b & mask
            if high and high != mask:
                raise malformed(TOO_LARGE, pos - 1)
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos


def decode_name(raw: bytes, offset: int) -> str:
    """A name is UTF-8 (spec 5.2.4); Python's strict decoder rejects exactly what the spec does:
    overlong forms, surrogates, code points above U+10FFFF, truncated sequences."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed("malformed UTF-8 encoding", offset) from None


class Reader:
    """A cursor over module bytes for the section-level structure.

    The instruction decoder does not use it: it works on ``data``/``pos`` directly for speed.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        b = self.data[self.pos]
        if b < 0x80:
            self.pos += 1
            return b
        value, self.pos = read_uleb(self.data, self.pos, 32)
        return value

    def flag(self) -> int:
        """A one-bit unsigned LEB128, as used for the "has maximum" flag of limits."""
        value, self.pos = read_uleb(self.data, self.pos, 1)
        return value

    def length(self) -> int:
        """A u32 length or vector count, which cannot exceed the bytes that are left.

        Every vector element takes at least one byte, so this bounds every loop over an
        untrusted count by the size of the input. As in the reference interpreter, the bytes
        left are counted from the start of the length itself.
        """
        start = self.pos
        n = self.u32()
        if n > len(self.data) - start:
            raise malformed("length out of bounds", start, f"{n}")
        return n

    def raw(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        end = self.pos + n
        if end > len(self.data):
            raise IndexError(end)
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def name(self) -> str:
        """A length-prefixed UTF-8 name."""
        start = self.pos
        return decode_name(self.raw(self.length()), start)
