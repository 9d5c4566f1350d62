"""Where the official WebAssembly spec test suite is, for the tests.

The suite is never part of this repository: it is read from ``$DWASM_SPEC_DIR`` or from
``../shared/spec/core-2.0`` beside the checkout. Without it the spec tests are skipped loudly,
unless ``DWASM_REQUIRE_SPEC=1`` (set by CI), which turns the absence into a failure so that a
green CI run always means the suite ran.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO.parent / "shared" / "spec" / "core-2.0"


def suite_dir() -> Path | None:
    """The suite folder (holding NAME/NAME.json), or None if it is not there."""
    configured = os.environ.get("DWASM_SPEC_DIR")
    path = Path(configured) if configured else DEFAULT_DIR
    return path if path.is_dir() else None


def required() -> bool:
    """Whether a missing suite must fail the run instead of skipping (CI sets this)."""
    return os.environ.get("DWASM_REQUIRE_SPEC") == "1"


def missing_reason() -> str:
    """Why the suite was not found, and how to point the tests at it."""
    configured = os.environ.get("DWASM_SPEC_DIR")
    where = f"DWASM_SPEC_DIR={configured}" if configured else str(DEFAULT_DIR)
    return (f"SPEC SUITE NOT FOUND at {where}: the spec tests did not run. Set DWASM_SPEC_DIR "
            "to the folder holding NAME/NAME.json (the wabt-JSON core-2.0 suite).")


def spec_files() -> list[Path]:
    """The suite's NAME.json files, sorted by name; empty if the suite is absent."""
    root = suite_dir()
    if root is None:
        return []
    return sorted(p for p in root.glob("*/*.json") if p.stem == p.parent.name)
