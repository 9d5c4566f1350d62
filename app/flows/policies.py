"""Retry policies per queue: how often a task is attempted, the backoff between attempts, and how
long a lease lasts without a heartbeat.

Every queue starts from the service's defaults (``Settings``: ``DWASM_MAX_ATTEMPTS``,
``DWASM_LEASE_TIMEOUT``, ``DWASM_RETRY_BACKOFF``, ``DWASM_RETRY_BACKOFF_MAX``); a queue's row in
``queue_policies`` (set with ``PUT /v1/queues/{queue}/policy``) overrides some or all of them.
The hot paths (lease, report, checkpoint) read policies from memory: :class:`PolicyBook` holds
the overrides and reloads them every few seconds, and at once after a change made through this
process, so a change made through another node applies everywhere within ``REFRESH`` seconds.
A policy applies to what happens after it is read: a task keeps the ``max_attempts`` it was
created with.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dwasm.policies")

REFRESH = 5.0  # seconds between reloads of the overrides
FIELDS = ("max_attempts", "backoff_initial", "backoff_factor", "backoff_max", "lease_timeout")


@dataclass(frozen=True)
class QueuePolicy:
    """How tasks of a queue are retried."""

    max_attempts: int = 3
    backoff_initial: float = 1.0  # seconds before the 2nd attempt
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    lease_timeout: float = 30.0  # seconds a lease lasts without a heartbeat

    def backoff(self, attempt: int) -> float:
        """Delay before the attempt after ``attempt`` (1-based) becomes leasable."""
        return min(self.backoff_max,
                   self.backoff_initial * self.backoff_factor ** max(0, attempt - 1))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PolicyBook:
    """The default policy plus per-queue overrides, read from memory; see the module doc."""

    def __init__(self, default: QueuePolicy | None = None) -> None:
        self.default = default or QueuePolicy()
        self._overrides: dict[str, dict[str, Any]] = {}
        self._loaded_at = float("-inf")

    def get(self, queue: str) -> QueuePolicy:
        """The policy that applies to ``queue`` now."""
        changes = self._overrides.get(queue)
        if not changes:
            return self.default
        return dataclasses.replace(self.default, **changes)

    def override(self, queue: str) -> dict[str, Any]:
        """The fields ``queue`` sets itself (empty: all defaults)."""
        return dict(self._overrides.get(queue) or {})

    def overridden(self) -> list[str]:
        """The queues that set some policy field themselves."""
        return sorted(self._overrides)

    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at >= REFRESH

    async def load(self, db: Any) -> None:
        """Reload the overrides from the database."""
        rows = await db.pool.fetch(f"SELECT queue, {', '.join(FIELDS)} FROM queue_policies")
        self._overrides = {r["queue"]: {f: r[f] for f in FIELDS if r[f] is not None}
                           for r in rows}
        self._loaded_at = time.monotonic()

    async def refresh(self, db: Any) -> None:
        """Reload if the overrides are older than ``REFRESH`` seconds; errors are logged (the
        last overrides stay in force)."""
        if not self.stale():
            return
        try:
            await self.load(db)
        except Exception as exc:  # the database is away: keep what we have
            log.warning("cannot reload queue policies: %s", exc)
            self._loaded_at = time.monotonic()

    async def put(self, db: Any, queue: str, changes: dict[str, Any]) -> QueuePolicy:
        """Store ``queue``'s overrides (None values: the default) and apply them here at once."""
        values = [changes.get(f) for f in FIELDS]
        await db.pool.execute(
            f"""INSERT INTO queue_policies (queue, {', '.join(FIELDS)}, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, now())
                ON CONFLICT (queue) DO UPDATE SET
                {', '.join(f'{f} = EXCLUDED.{f}' for f in FIELDS)}, updated_at = now()""",
            queue, *values)
        await self.load(db)
        return self.get(queue)

    async def delete(self, db: Any, queue: str) -> bool:
        """Drop ``queue``'s overrides; False if it had none."""
        status = await db.pool.execute("DELETE FROM queue_policies WHERE queue = $1", queue)
        await self.load(db)
        return status.endswith(" 1")
