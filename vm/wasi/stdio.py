"""stdin and the committed output streams (stdout, stderr).

Output is not written when the guest writes it. Each stream keeps a running count of the bytes
the guest has produced (``written``) and the tail that has not reached the destination yet
(``pending``); ``flush()`` writes the tail out. A durable driver takes a checkpoint (which
records the count and the tail), then flushes; after a crash it restores the checkpoint, tells
the stream how much of it the destination already holds (``sync``), and the stream writes only
what is missing — no output is lost or duplicated. stdin keeps the number of bytes consumed, so
a restore can position a seekable source where the guest stood.
"""

from __future__ import annotations

import base64
import codecs
import io
import select
from typing import Any

STREAM_CHUNK = 1 << 16


def _binary(stream: Any) -> Any:
    """The binary layer of a text stream (``sys.stdout`` → ``sys.stdout.buffer``)."""
    if isinstance(stream, io.TextIOBase) and hasattr(stream, "buffer"):
        return stream.buffer
    return stream


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


class OutputGapError(ValueError):
    """The destination holds less than the flushed part of the stream: output was lost outside
    dwasm (for example the destination file was truncated) and cannot be written again."""


class InputStream:
    """The guest's stdin: ``None`` (empty), ``bytes``, or a binary file-like object."""

    def __init__(self, source: Any = None) -> None:
        source = _binary(source)
        self.source = source
        self.data: bytes | None = bytes(source) if isinstance(source, (bytes, bytearray)) else None
        self.consumed = 0  # bytes the guest has read
        self.base = 0 if self.data is not None or source is None else self._tell()
        self.tty = _isatty(source)

    def _tell(self) -> int | None:
        try:
            if self.source.seekable():
                return int(self.source.tell())
        except (AttributeError, OSError, ValueError):
            pass
        return None

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; may return fewer (one read of a pipe), ``b""`` at end of input."""
        if size <= 0:
            return b""
        if self.source is None:
            chunk = b""
        elif self.data is not None:
            chunk = self.data[self.consumed:self.consumed + size]
        else:
            reader = getattr(self.source, "read1", None) or self.source.read
            chunk = reader(size) or b""
        self.consumed += len(chunk)
        return bytes(chunk)

    def available(self) -> int | None:
        """Bytes known to be readable without blocking (poll_oneoff); None when unknown."""
        if self.source is None:
            return 0
        if self.data is not None:
            return len(self.data) - self.consumed
        return None

    def fileno(self) -> int | None:
        try:
            return int(self.source.fileno())
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None

    def wait(self, timeout: float | None) -> bool:
        """Whether the source became readable within ``timeout`` seconds (None: forever)."""
        if self.available() is not None:
            return True
        fd = self.fileno()
        if fd is None:
            return True
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        except (OSError, ValueError):
            return True
        return bool(ready)

    def state(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "base": self.base}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue after ``state["consumed"]`` bytes: in-memory input skips them, a seekable
        source is seeked to where the guest stood; any other source (a pipe) is taken as
        already positioned by the caller."""
        self.consumed = int(state.get("consumed", 0))
        if self.data is not None or self.source is None:
            return
        base = state.get("base")
        if base is not None and self._tell() is not None:
            self.base = int(base)
            self.source.seek(self.base + self.consumed)


class OutputStream:
    """stdout or stderr, buffered until ``flush()``; ``sink`` is ``None`` (discard) or a binary
    (or text, whose ``buffer`` is used) writable object."""

    def __init__(self, sink: Any = None, autoflush: bool = False) -> None:
        self.sink = _binary(sink)
        # A text sink without a binary layer (io.StringIO) gets UTF-8 decoded text; the
        # incremental decoder keeps characters split across flushes whole.
        self.decoder = (codecs.getincrementaldecoder("utf-8")("replace")
                        if isinstance(self.sink, io.TextIOBase) else None)
        self.autoflush = autoflush
        self.written = 0  # bytes the guest has written to the stream, in total
        self.pending = bytearray()  # the last len(pending) of them, not yet flushed
        self.ahead = 0  # bytes of coming output the destination already holds (after sync)
        self.tty = _isatty(self.sink)

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.ahead:
            skip = min(self.ahead, len(data))
            self.ahead -= skip
            data = data[skip:]
        self.pending += data
        if self.autoflush:
            self.flush()

    def flush(self) -> int:
        """Write the pending bytes to the sink; returns how many were written. If the sink
        fails, what it took is dropped from the buffer and the error propagates."""
        data = memoryview(bytes(self.pending))
        sink = self.sink
        done = 0
        try:
            if sink is None:
                done = len(data)
            elif self.decoder is not None:
                sink.write(self.decoder.decode(data))
                done = len(data)
            else:
                while done < len(data):
                    n = sink.write(data[done:done + STREAM_CHUNK])
                    done += min(STREAM_CHUNK, len(data) - done) if n is None else n
            if sink is not None and done:
                flush = getattr(sink, "flush", None)
                if flush is not None:
                    flush()
        finally:
            del self.pending[:done]
        return done

    def sync(self, already: int) -> None:
        """Record that the destination already holds the first ``already`` bytes of the stream:
        pending bytes it holds are dropped, and if it holds more than the guest has written
        (output flushed after the checkpoint this object was restored from), that much of the
        guest's coming output is skipped."""
        start = self.written - len(self.pending)
        if already < start:
            raise OutputGapError(
                f"the destination holds {already} bytes but {start} were flushed before the "
                f"checkpoint; {start - already} bytes of output are lost")
        if already <= self.written:
            del self.pending[:already - start]
            self.ahead = 0
        else:
            self.pending.clear()
            self.ahead = already - self.written

    def state(self) -> dict[str, Any]:
        return {"written": self.written, "ahead": self.ahead,
                "pending": base64.b64encode(bytes(self.pending)).decode("ascii")}

    def restore(self, state: dict[str, Any]) -> None:
        self.written = int(state.get("written", 0))
        self.ahead = int(state.get("ahead", 0))
        self.pending = bytearray(base64.b64decode(state.get("pending", "")))

