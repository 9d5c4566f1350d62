"""Shared pytest setup: reports up front whether the official spec suite will run."""

from __future__ import annotations

import spec_suite

# Fixtures for the service's tests: PostgreSQL, fresh databases, live servers (dbfixtures.py).
pytest_plugins = ["dbfixtures", "etcdfixtures"]


def pytest_report_header(config: object) -> list[str]:
    root = spec_suite.suite_dir()
    if root is None:
        state = "FAIL (DWASM_REQUIRE_SPEC=1)" if spec_suite.required() else "SKIPPED"
        return [f"dwasm spec suite: {state}. {spec_suite.missing_reason()}"]
    return [f"dwasm spec suite: {root} ({len(spec_suite.spec_files())} non-SIMD files)"]


def pytest_terminal_summary(terminalreporter: object, exitstatus: int, config: object) -> None:
    """Lists the files tests left in ``$DWASM_TEST_ARTIFACTS`` (the console's screenshots), so
    that a CI log says where to look."""
    import os
    from pathlib import Path

    target = os.environ.get("DWASM_TEST_ARTIFACTS")
    if not target or not Path(target).is_dir():
        return
    files = sorted(p for p in Path(target).iterdir() if p.is_file())
    if not files:
        return
    terminalreporter.section("test artifacts")  # type: ignore[attr-defined]
    for path in files:
        terminalreporter.write_line(  # type: ignore[attr-defined]
            f"{path} ({path.stat().st_size:,} bytes)")
