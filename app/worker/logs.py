"""Log output for workers: one line per record, as text or as JSON.

The worker attaches ``extra`` fields to its records (``event``, ``task_id``, ``queue``,
``attempt``, ``duration_ms``, ...). :class:`JsonFormatter` writes them as one JSON object per
line, for log collectors; the text format appends them as ``key=value`` pairs, for people.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from ..observability.logs import RECORD_ATTRS, rfc3339


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record."""
    return {k: v for k, v in record.__dict__.items() if k not in RECORD_ATTRS}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields, "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage()}
        out.update(record_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO dwasm.worker: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {k: v for k, v in record_fields(record).items()
                  if k not in ("task_id", "attempt")}  # already in the message
        if fields:
            head, sep, tail = text.partition("\n")
            pairs = " ".join(f"{k}={v}" for k, v in fields.items())
            text = f"{head} {pairs}{sep}{tail}"
        return text


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Sends ``dwasm.*`` records at ``level`` and above to ``stream`` (stderr) in ``fmt``
    (``text`` or ``json``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger = logging.getLogger("dwasm")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
