"""The API's routers. Each sets ``tags=[<resource>]`` and names its routes (``name="get"``), so
that operationIds come out as ``<tag>_<name>`` (``modules_upload``, ``flows_get``); see
:func:`app.api.app.operation_id`."""

from __future__ import annotations

from . import health, modules

#: The routers every dwasm app has, in the order they appear in the OpenAPI document.
CORE_ROUTERS = (health.router, modules.router)

__all__ = ["CORE_ROUTERS", "health", "modules"]
