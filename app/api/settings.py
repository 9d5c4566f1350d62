"""Service settings, read from ``DWASM_*`` environment variables into a validated model.

- ``DWASM_DATABASE_URL`` (none): PostgreSQL URL; without it ``dwasm serve`` starts an embedded
  server in the data directory.
- ``DWASM_DATA_DIR`` (``./.dwasm``): the embedded server's directory.
- ``DWASM_HOST`` (``127.0.0.1``), ``DWASM_PORT`` (``8080``; 0: any free port): where to listen;
  ``--host``/``--port`` override them.
- ``DWASM_MAX_PAYLOAD`` (``16MiB``): largest payload (task payload and result, signal, stdin).
- ``DWASM_MAX_MODULE_SIZE`` (``64MiB``): largest wasm module upload.
- ``DWASM_DB_POOL_MIN`` / ``DWASM_DB_POOL_MAX`` (1 / 10): connection pool size.
- ``DWASM_DB_CONNECT_TIMEOUT`` (30): seconds to keep retrying an unreachable database at start.
- ``DWASM_LOG_LEVEL`` (``info``): the level of every log line, uvicorn's included
  (``warning`` hides the access lines).
- ``DWASM_LOG_FORMAT`` (``json`` unless stderr is a terminal, then ``text``): ``json`` writes
  one JSON object per line (docs/observability.md), ``text`` a readable line.
- ``DWASM_ADVERTISE_URL`` (``http://<host>:<port>``): how other nodes reach this one; cluster
  mode (``DWASM_ETCD`` and the rest, ``topology.config``) needs it when binding 0.0.0.0.
- ``DWASM_API_TOKENS`` (none): comma-separated ``SCOPES:TOKEN`` entries, scopes ``client``,
  ``worker``, ``admin`` joined by ``+``; a bare token is an admin token (``app.api.auth``).
  Without tokens the node accepts every request and listens on loopback only unless
  ``DWASM_ALLOW_NO_AUTH=1`` (``--allow-no-auth``).
- ``DWASM_SHUTDOWN_GRACE`` (30): seconds a SIGTERM spends handing this node's shards to others
  (flows checkpoint and move) before the server stops.
- ``DWASM_LEASE_TIMEOUT`` (30), ``DWASM_MAX_ATTEMPTS`` (3), ``DWASM_RETRY_BACKOFF`` (1),
  ``DWASM_RETRY_BACKOFF_MAX`` (300): the default retry policy of every queue (seconds a task
  lease lasts without a heartbeat, attempts per task, first backoff doubling up to the maximum);
  ``PUT /v1/queues/{queue}/policy`` overrides them per queue.
- ``DWASM_FLOW_RETENTION`` (``30d``): how long finished flows (with their events, signals and
  tasks) are kept after they finished; ``0`` or ``forever`` keeps them (app/flows/retention.py).

Sizes accept a plain number of bytes or a number with a unit: ``k``/``KiB``, ``M``/``MiB``,
``G``/``GiB`` (all binary). Durations accept seconds or a number with ``s``, ``m``, ``h``, ``d``.
A malformed value raises :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MiB = 1 << 20
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class SettingsError(ValueError):
    """A ``DWASM_*`` variable has a value that cannot be used."""


def parse_size(text: str) -> int:
    """``'16MiB'`` → 16777216; raises ValueError for anything else than a size."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 1048576, 512KiB, 16MiB, 1G)")
    unit = (match.group(2) or "")[:1].lower()
    return int(match.group(1)) * _UNITS[unit]


def parse_duration(text: str) -> float:
    """``'30d'`` → 2592000.0 seconds, ``'12h'``, ``'90m'``, ``'3600'``; ``'forever'`` → 0
    (meaning: no limit). Raises ValueError for anything else."""
    if text.strip().lower() == "forever":
        return 0.0
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 3600, 90m, 12h, 30d, forever)")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


class Settings(BaseModel):
    """Everything the service is configured with. Build it with :meth:`from_env`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str | None = None
    data_dir: Path = Path(".dwasm")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_payload: int = Field(16 * MiB, gt=0)
    max_module_size: int = Field(64 * MiB, gt=0)
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, ge=1)
    db_connect_timeout: float = Field(30.0, ge=0)
    log_level: str = "info"
    #: ``json`` or ``text``; None: json unless stderr is a terminal (app.observability.logs).
    log_format: str | None = None
    #: How peers (and the shard map) reach this node; default http://<host>:<port>.
    advertise_url: str | None = None
    #: Bearer tokens with scopes (app.api.auth); none: no authentication, loopback only.
    api_tokens: str | None = None
    #: Allow listening beyond loopback without tokens (``--allow-no-auth``).
    allow_no_auth: bool = False
    #: SIGTERM: seconds to hand this node's shards over before it stops serving.
    shutdown_grace: float = Field(30.0, ge=0, le=3600)
    lease_timeout: float = Field(30.0, gt=0, le=86400)
    max_attempts: int = Field(3, ge=1, le=1000)
    retry_backoff: float = Field(1.0, ge=0, le=86400)
    retry_backoff_max: float = Field(300.0, ge=0, le=86400 * 7)
    #: Seconds finished flows are kept (app/flows/retention.py); 0: forever.
    flow_retention: float = Field(30 * 86400.0, ge=0)
    #: Apply pending migrations when the app starts (``/readyz`` fails while any is pending).
    migrate_on_start: bool = True

    @field_validator("database_url")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ValueError("must be one of critical, error, warning, info, debug, trace")
        return value

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if not value:
            return None
        value = value.lower()
        if value not in ("json", "text"):
            raise ValueError("must be json or text")
        return value

    @property
    def max_request_body(self) -> int:
        """The cap on any request body, enforced before a handler runs.

        Large enough for a module upload or a JSON request carrying a maximal payload in base64
        (4/3 of it) plus room for the other fields; each handler then checks its own limit.
        """
        return max(self.max_module_size, self.max_payload * 4 // 3 + MiB)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``DWASM_*`` variables (default: ``os.environ``), then ``overrides``
        (e.g. from command-line options; None values are ignored)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        names = {"database_url": "DWASM_DATABASE_URL", "data_dir": "DWASM_DATA_DIR",
                 "host": "DWASM_HOST", "port": "DWASM_PORT", "log_level": "DWASM_LOG_LEVEL",
                 "log_format": "DWASM_LOG_FORMAT",
                 "db_pool_min": "DWASM_DB_POOL_MIN", "db_pool_max": "DWASM_DB_POOL_MAX",
                 "db_connect_timeout": "DWASM_DB_CONNECT_TIMEOUT",
                 "advertise_url": "DWASM_ADVERTISE_URL", "api_tokens": "DWASM_API_TOKENS",
                 "allow_no_auth": "DWASM_ALLOW_NO_AUTH",
                 "shutdown_grace": "DWASM_SHUTDOWN_GRACE",
                 "lease_timeout": "DWASM_LEASE_TIMEOUT", "max_attempts": "DWASM_MAX_ATTEMPTS",
                 "retry_backoff": "DWASM_RETRY_BACKOFF",
                 "retry_backoff_max": "DWASM_RETRY_BACKOFF_MAX"}
        sizes = {"max_payload": "DWASM_MAX_PAYLOAD", "max_module_size": "DWASM_MAX_MODULE_SIZE"}
        durations = {"flow_retention": "DWASM_FLOW_RETENTION"}
        for field, var in names.items():
            if env.get(var, "") != "":
                values[field] = env[var]
        for field, var in sizes.items():
            if env.get(var, "") != "":
                try:
                    values[field] = parse_size(env[var])
                except ValueError as exc:
                    raise SettingsError(f"{var}: {exc}") from None
        for field, var in durations.items():
            if env.get(var, "") != "":
                try:
                    values[field] = parse_duration(env[var])
                except ValueError as exc:
                    raise SettingsError(f"{var}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            variables = {**names, **sizes, **durations}
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else "?"
                where = variables.get(field, field)
                problems.append(f"{where}: {error['msg']}")
            raise SettingsError("; ".join(problems)) from None
