"""The web console: a static single-page app at ``/ui`` that only calls the REST API.

Plain HTML, CSS and JavaScript modules shipped in ``static/`` (no build step, nothing fetched
from elsewhere); :mod:`.router` serves them. See docs/console.md.
"""

from __future__ import annotations

from .router import router

__all__ = ["router"]
