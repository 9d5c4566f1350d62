"""The service's PostgreSQL connection pool (asyncpg), with the conventions every query relies on.

* ``json``/``jsonb`` columns take and return Python objects (dicts, lists, ...): a codec set on
  every connection encodes with :func:`json.dumps` and decodes with :func:`json.loads`, so do
  not ``json.dumps`` a value yourself before passing it.
* Every connection says ``application_name = 'dwasm'`` (plus an optional suffix), which lets
  the embedded server see whether a dwasm process still uses it (:mod:`app.db.embedded`).
* :meth:`Database.connect` waits for a server that is still starting (or restarting) instead
  of failing on the first refused connection, and raises :class:`DatabaseUnavailable` with a
  readable message, password removed, when it gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

#: Errors that mean "the server is not reachable yet": worth retrying at start-up.
_TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
              asyncpg.TooManyConnectionsError, asyncpg.ConnectionDoesNotExistError)


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (or refuses us); the message says which and why."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable database URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[-1]}"))


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: dwasm sets no session state
    (no SET, LISTEN, cursors or prepared statements by name), and the one advisory lock it takes
    (migrations) is released explicitly. asyncpg still rolls back an open transaction itself.
    asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``, ...) costs a round trip to the
    server on every release, a fifth of all round trips of a task round trip."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, schema="pg_catalog", encoder=json.dumps,
                                  decoder=json.loads, format="text")


class Database:
    """An asyncpg pool plus helpers; create it with :meth:`connect`, end it with :meth:`close`.

    Use :attr:`pool` directly for single statements (``await db.pool.fetchrow(...)``) and
    :meth:`transaction` for several that must commit together.
    """

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def connect(cls, url: str, min_size: int = 1, max_size: int = 10, *,
                      timeout: float = 30.0, application_name: str = "dwasm",
                      command_timeout: float | None = None) -> Database:
        """Opens a pool, retrying for up to ``timeout`` seconds while the server is unreachable.

        Errors that retrying cannot fix (bad password, unknown database, malformed URL) are
        raised at once as :class:`DatabaseUnavailable`.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                pool = await asyncpg.create_pool(
                    url, min_size=min_size, max_size=max_size, init=_init_connection,
                    reset=_reset_connection,
                    command_timeout=command_timeout,
                    server_settings={"application_name": application_name})
                return cls(pool, url)
            except _TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"cannot connect to PostgreSQL at {redact_url(url)} within "
                        f"{timeout:g} s: {_describe(exc)}") from exc
            except asyncpg.PostgresError as exc:
                raise DatabaseUnavailable(f"PostgreSQL at {redact_url(url)} refused the "
                                          f"connection: {_describe(exc)}") from exc
            except (ValueError, asyncpg.InterfaceError) as exc:  # the DSN parser, bad options
                raise DatabaseUnavailable(f"bad database URL {redact_url(url)}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def close(self, timeout: float = 10.0) -> None:
        """Closes the pool, waiting up to ``timeout`` s for connections in use, then aborting."""
        try:
            await asyncio.wait_for(self.pool.close(), timeout)
        except asyncio.TimeoutError:
            self.pool.terminate()

    @contextlib.asynccontextmanager
    async def transaction(self, *, isolation: str | None = None,
                          readonly: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction: committed when the block ends, rolled back if it
        raises. ``isolation`` is one of asyncpg's names (``'serializable'``, ...)."""
        async with self.pool.acquire() as conn:
            async with conn.transaction(isolation=isolation, readonly=readonly):
                yield conn

    async def ping(self, timeout: float = 2.0) -> None:
        """Raises DatabaseUnavailable unless a trivial query answers within ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                await self.pool.fetchval("SELECT 1")
        except (TimeoutError, *_TRANSIENT, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(f"PostgreSQL does not answer: {_describe(exc)}") from exc

    def stats(self) -> dict[str, int]:
        """Pool sizes for metrics: connections open and idle, and the maximum."""
        return {"size": self.pool.get_size(), "idle": self.pool.get_idle_size(),
                "max": self.pool.get_max_size()}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not text:
        return "timed out"
    return f"{text} ({name})" if text else name


__all__ = ["Database", "DatabaseUnavailable", "redact_url"]
