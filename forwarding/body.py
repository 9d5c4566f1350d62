"""Request bodies read once and sent (or replayed) as often as needed.

A forwarded body must be hashed before its headers are signed, and may have to be sent again
after a misdirected attempt, so the sender reads it first: into memory up to
:data:`MEMORY_LIMIT`, beyond that into a temporary file (never more than the configured body
limit). It is then streamed to the owner in chunks, from the start on every attempt.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Message, Receive

MEMORY_LIMIT = 1 << 20
CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds the limit of {limit} bytes")
        self.limit = limit


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class Body:
    """A complete request body with its size and SHA-256."""

    def __init__(self, spool: Any, size: int, sha256: str) -> None:
        self._spool = spool
        self.size = size
        self.sha256 = sha256

    @classmethod
    def from_bytes(cls, data: bytes) -> Body:
        spool = tempfile.SpooledTemporaryFile(max_size=MEMORY_LIMIT)
        spool.write(data)
        return cls(spool, len(data), hashlib.sha256(data).hexdigest())

    @classmethod
    async def read(cls, receive: Receive, limit: int) -> Body:
        """Reads the whole body from ASGI ``receive``; :class:`BodyTooLarge` past ``limit``
        bytes, :class:`ClientGone` if the client leaves first."""
        spool = tempfile.SpooledTemporaryFile(max_size=MEMORY_LIMIT)
        digest = hashlib.sha256()
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientGone()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                if chunk:
                    digest.update(chunk)
                    spool.write(chunk)
                if not message.get("more_body", False):
                    return cls(spool, size, digest.hexdigest())
        except BaseException:
            spool.close()
            raise

    def bytes(self) -> bytes:
        """The whole body in memory (for the bodies that must be parsed as JSON)."""
        self._spool.seek(0)
        return bytes(self._spool.read())

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from its start, in chunks (an httpx request ``content``)."""
        self._spool.seek(0)
        while True:
            chunk = self._spool.read(CHUNK)
            if not chunk:
                return
            yield chunk

    def replay(self, receive: Receive) -> Receive:
        """An ASGI ``receive`` that gives this body, then defers to ``receive`` (which reports
        the client's disconnect)."""
        self._spool.seek(0)
        done = False

        async def replayed() -> Message:
            nonlocal done
            if done:
                return await receive()
            chunk = self._spool.read(CHUNK)
            more = self._spool.tell() < self.size
            done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}

        return replayed

    def close(self) -> None:
        self._spool.close()
