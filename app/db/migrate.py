"""Schema migrations: the SQL files of ``migrations/``, applied in order, each exactly once.

A migration is a file ``NNNN_name.sql`` (NNNN: its version, compared as a number). Applying one
runs its SQL and records it in ``schema_migrations`` in the same transaction, so a crash leaves
either both or neither. Everything happens under a PostgreSQL advisory lock: when several
processes start at once (two ``dwasm serve``, or ``serve`` and ``migrate``), one applies the
pending migrations while the others wait, then find nothing left to do. Running it again is a
no-op (idempotent).

The recorded checksum guards against editing a migration that was already applied somewhere:
that is refused with a clear error. Change the schema with a new file instead.

A migration whose first line is ``-- dwasm: no-transaction`` runs statement by statement
outside a transaction, for what cannot run inside one: ``CREATE INDEX CONCURRENTLY``, which
builds an index on a big table without blocking its writers (a plain ``CREATE INDEX`` would
stall every checkpoint for the build's duration). Such a file holds only plain statements,
each ending with ``;`` at the end of a line (no function bodies: ``$$`` is refused), and each
safe to run again: a crash between its statements and the record re-runs the whole file (so
``DROP INDEX CONCURRENTLY IF EXISTS`` before each ``CREATE INDEX CONCURRENTLY``, which also
removes an invalid index a failed build left). Every other file runs in one transaction.

Where the files are found (:func:`migrations_dir`): ``$DWASM_MIGRATIONS_DIR`` if set; else
``migrations/`` of the source checkout this module belongs to (a clone, or an editable
install); else ``<prefix>/share/dwasm/migrations``, where an installed wheel puts them
(pyproject: ``[tool.setuptools.data-files] "share/dwasm/migrations" = ["migrations/*.sql"]``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from .pool import Database

#: The advisory lock key (64-bit) that serialises migrations across processes.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"dwasm schema migrations").digest()[:8], "big",
                          signed=True)
_FILE_RE = re.compile(r"^(\d+)_([A-Za-z0-9_\-]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(RuntimeError):
    """The migrations cannot be found, read or applied; the message says which and why."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str       # the file name without ``.sql``, e.g. ``0001_init``
    sql: str
    checksum: str   # sha256 hex of the file's bytes

    @property
    def transactional(self) -> bool:
        """False for a ``-- dwasm: no-transaction`` file (see the module docstring)."""
        first = self.sql.lstrip().split("\n", 1)[0]
        return first.strip().lower().replace(" ", "") != "--dwasm:no-transaction"

    def statements(self) -> list[str]:
        """The statements of a no-transaction file, in order."""
        if "$$" in self.sql:
            raise MigrationError(f"{self.name}.sql: a no-transaction migration cannot hold "
                                 "function bodies ($$)")
        lines = [line for line in self.sql.splitlines()
                 if not line.lstrip().startswith("--")]
        return [part.strip() for part in re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
                if part.strip()]


def migrations_dir() -> Path:
    """The directory holding the migration files (see the module docstring for the order)."""
    override = os.environ.get("DWASM_MIGRATIONS_DIR")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2]
    candidates = [checkout / "migrations"] if (checkout / "pyproject.toml").is_file() else []
    for scheme_path in {sysconfig.get_path("data"), sys.prefix}:
        candidates.append(Path(scheme_path) / "share" / "dwasm" / "migrations")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise MigrationError("no migrations directory (looked in "
                         f"{', '.join(str(c) for c in candidates)}); set DWASM_MIGRATIONS_DIR")


def _load(directory: Path) -> tuple[Migration, ...]:
    try:
        paths = sorted(directory.iterdir())
    except OSError as exc:
        raise MigrationError(f"cannot read {directory}: {exc.strerror or exc}") from None
    found: dict[int, Migration] = {}
    for path in paths:
        match = _FILE_RE.match(path.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version}: "
                                 f"{found[version].name}.sql and {path.name}")
        data = path.read_bytes()
        found[version] = Migration(version, path.stem, data.decode("utf-8"),
                                   hashlib.sha256(data).hexdigest())
    if not found:
        raise MigrationError(f"no migration files (NNNN_name.sql) in {directory}")
    return tuple(found[v] for v in sorted(found))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The migrations of ``directory`` (default :func:`migrations_dir`), oldest first."""
    return list(_load((directory or migrations_dir()).resolve()))


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    """version → checksum of the migrations recorded in the database (empty if none yet)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


def _check(applied: dict[int, str], migrations: list[Migration]) -> list[Migration]:
    """The pending migrations; raises if an applied one was changed since."""
    pending = []
    for migration in migrations:
        checksum = applied.get(migration.version)
        if checksum is None:
            pending.append(migration)
        elif checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.name}.sql was changed after it was applied to this "
                "database; put schema changes in a new migration file instead")
    return pending


async def pending_migrations(db: Database,
                             migrations: list[Migration] | None = None) -> list[Migration]:
    """The migrations not yet applied (what ``/readyz`` checks)."""
    migrations = load_migrations() if migrations is None else migrations
    async with db.pool.acquire() as conn:
        return _check(await applied_versions(conn), migrations)


async def _lock(conn: asyncpg.Connection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        if time.monotonic() > deadline:
            raise MigrationError(f"another process has held the migration lock for more than "
                                 f"{timeout:g} s; is a migration stuck?")
        await asyncio.sleep(0.05)


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute("INSERT INTO schema_migrations (version, name, checksum) "
                       "VALUES ($1, $2, $3)",
                       migration.version, migration.name, migration.checksum)


async def migrate(db: Database, migrations: list[Migration] | None = None, *,
                  lock_timeout: float = 300.0) -> list[str]:
    """Applies the pending migrations; returns the names of those this call applied.

    Safe to call from several processes at once, and any number of times.
    """
    migrations = load_migrations() if migrations is None else migrations
    done: list[str] = []
    async with db.pool.acquire() as conn:
        await _lock(conn, lock_timeout)
        try:
            await conn.execute(_CREATE_TABLE)
            for migration in _check(await applied_versions(conn), migrations):
                try:
                    if migration.transactional:
                        async with conn.transaction():
                            await conn.execute(migration.sql)
                            await _record(conn, migration)
                    else:
                        for statement in migration.statements():
                            await conn.execute(statement)
                        await _record(conn, migration)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {migration.name}.sql failed: "
                                         f"{type(exc).__name__}: {exc}") from exc
                done.append(migration.name)
        finally:
            # A broken connection releases the lock by itself; do not mask the real error.
            # The pool does not reset connections (app.db.pool), so a connection whose unlock
            # failed is closed rather than handed out still holding the lock.
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                conn.terminate()
    return done
