"""What every command prints in common: JSON for ``--json``, aligned tables and ``key  value``
fields, API timestamps for people; one place, so that all commands look alike."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def when(text: str | None) -> str:
    """An API timestamp as ``YYYY-MM-DD HH:MM:SS.mmm`` (in the timezone the API gave)."""
    if not text:
        return "-"
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except ValueError:
        return text


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)


def fields(pairs: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}", file=out)
