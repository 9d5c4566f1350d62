"""The dwasm HTTP API (FastAPI): :func:`create_app`, settings, problem details, metrics.

See :mod:`app.api.app` for how the app is assembled and extended.
"""

from __future__ import annotations

from .app import create_app, operation_id
from .problems import Problem, ProblemError
from .settings import Settings, SettingsError

__all__ = ["Problem", "ProblemError", "Settings", "SettingsError", "create_app", "operation_id"]
