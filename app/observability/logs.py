"""Structured logs: one JSON object per line (or a readable line on a terminal), each carrying
the context it was written in.

The context lives in context variables, so that it follows the work rather than the thread:

- ``node``: this node's id. ``dwasm serve`` sets it for the process (:func:`set_process_node`);
  the request middleware and the app's lifespan set it for their work, so that several apps in
  one process (tests) still log their own.
- ``request_id``: one HTTP request, set by
  :class:`app.observability.requests.RequestContextMiddleware` for everything done while
  handling it, including a flow run the request wakes (asyncio tasks copy the context they are
  created in).
- ``flow_id``: the flow a request is about, and the flow being run (the engine sets it in the
  task that drives a flow and copies it into the threads that run its steps).

A JSON line has ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``, the
context fields that are set, every ``extra=`` field of the call, and ``exc_info`` (the formatted
traceback) when there is one. docs/observability.md lists the fields.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

NODE: ContextVar[str | None] = ContextVar("dwasm_log_node", default=None)
REQUEST_ID: ContextVar[str | None] = ContextVar("dwasm_log_request_id", default=None)
FLOW_ID: ContextVar[str | None] = ContextVar("dwasm_log_flow_id", default=None)

#: ``DWASM_LOG_LEVEL`` values; ``trace`` is uvicorn's level below debug.
LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
          "info": logging.INFO, "debug": logging.DEBUG, "trace": 5}
FORMATS = ("json", "text")
REQUEST_ID_MAX = 128
#: Loggers that say one line per outgoing HTTP request at INFO (the forwarder's client).
_CHATTY = ("httpx", "httpcore")
#: Attributes every LogRecord has; any other attribute came from ``extra=`` and becomes a field.
RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message", "asctime", "taskName", "color_message"}
_BASE_KEYS = ("ts", "level", "logger", "message")

_process_node: str | None = None


def set_process_node(node: str | None) -> None:
    """The node id of lines written outside any request or app context (``dwasm serve``
    start-up, library threads)."""
    global _process_node
    _process_node = node


def current_node() -> str | None:
    return NODE.get() or _process_node


def node_id_for(settings: Any, environ: Mapping[str, str] | None = None) -> str:
    """The id this node will have in the cluster (``DWASM_NODE_ID``, else the default
    :mod:`topology.config` derives from the host name and port), known before the topology
    starts so that the first log lines carry it."""
    from topology.config import default_node_id

    env = os.environ if environ is None else environ
    return env.get("DWASM_NODE_ID", "").strip() or default_node_id(settings.port)


# --- request ids ------------------------------------------------------------------------------

def valid_request_id(value: str | None) -> bool:
    """An incoming ``X-Request-Id`` is kept when it is 1 to 128 visible ASCII characters (no
    spaces or control characters): safe to log and to send on as a header."""
    return (value is not None and 0 < len(value) <= REQUEST_ID_MAX
            and all("!" <= c <= "~" for c in value))


def new_request_id() -> str:
    """32 hex digits (128 random bits)."""
    return secrets.token_hex(16)


def request_id_or_new(value: str | None) -> str:
    """``value`` if it is a valid request id, else a new one."""
    return value if valid_request_id(value) else new_request_id()  # type: ignore[return-value]


@contextmanager
def flow_context(flow_id: str | None) -> Iterator[None]:
    """Lines written inside concern ``flow_id``."""
    token = FLOW_ID.set(flow_id)
    try:
        yield
    finally:
        FLOW_ID.reset(token)


# --- formatting -------------------------------------------------------------------------------

def rfc3339(created: float) -> str:
    """``2024-05-01T12:00:00.123Z``."""
    seconds = int(created)
    millis = min(999, int((created - seconds) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def context_fields() -> dict[str, str]:
    """The context of the calling code: node, request_id, flow_id (those that are set)."""
    out: dict[str, str] = {}
    node = current_node()
    if node:
        out["node"] = node
    request_id = REQUEST_ID.get()
    if request_id:
        out["request_id"] = request_id
    flow_id = FLOW_ID.get()
    if flow_id:
        out["flow_id"] = flow_id
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": rfc3339(record.created),
                               "level": record.levelname.lower(), "logger": record.name,
                               "message": record.getMessage()}
        out.update(context_fields())
        for key, value in record.__dict__.items():
            if key not in RECORD_ATTRS and key not in _BASE_KEYS:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(out, default=str, separators=(",", ":"), allow_nan=False)
        except ValueError:  # NaN or infinity in a field: still one valid JSON object
            return json.dumps({k: (str(v) if isinstance(v, float) else v)
                               for k, v in out.items()}, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``<ts> <level> <logger>: <message> [node=… request_id=… flow_id=…]``, then the traceback;
    for people at a terminal (the ``extra=`` fields appear in JSON only)."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in context_fields().items())
        line = (f"{rfc3339(record.created)} {record.levelname.lower():<7} {record.name}: "
                f"{record.getMessage()}" + (f" [{context}]" if context else ""))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


# --- configuration ----------------------------------------------------------------------------

def default_format(stream: IO[str]) -> str:
    """``text`` on a terminal, ``json`` otherwise (files, pipes, log collectors)."""
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure_logging(level: str = "info", fmt: str | None = None, *, node: str | None = None,
                      stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger (dwasm's, uvicorn's, libraries') through one handler on ``stream``
    (default stderr) in format ``fmt`` (``json``, ``text``; None: :func:`default_format`).
    Calling it again replaces the handler it installed before. Returns the handler."""
    stream = stream if stream is not None else sys.stderr
    fmt = fmt or default_format(stream)
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    levelno = LEVELS[level.lower()]
    logging.addLevelName(LEVELS["trace"], "TRACE")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._dwasm_handler = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_dwasm_handler", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    # uvicorn may have configured its loggers before (its own handlers, no propagation, a
    # level of their own from an earlier ``uvicorn.Config(log_level=...)`` in this process).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(levelno, logging.WARNING)
                                         if levelno > logging.DEBUG else logging.NOTSET)
    if node is not None:
        set_process_node(node)
    return handler
