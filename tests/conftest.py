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
