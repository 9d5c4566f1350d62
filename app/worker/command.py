"""``dwasm worker MODULE[:ATTR]``: import a module of handlers and run them as a worker.

``MODULE`` is a dotted module name (looked up from the current directory first, as
``python -m`` does) or a path to a ``.py`` file. What runs:

* ``MODULE:ATTR`` — the :class:`~app.worker.Worker` at that attribute (dots allowed), or a
  function that returns one when called without arguments;
* ``MODULE`` — the module's one ``Worker`` instance; if it has none, a new Worker for every
  function marked with :func:`app.worker.handler`.

``--url``/``--token`` override what the module's Worker was built with; otherwise a Worker uses
``$DWASM_URL``/``$DWASM_TOKEN`` (default ``http://127.0.0.1:8080``, no token).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from . import logs
from .task import collect_handlers
from .worker import Worker

EXIT_OK = 0
EXIT_ABANDONED = 130


class WorkerCommandError(Exception):
    """The target cannot be loaded or holds nothing to run; ``details`` are extra lines."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


def import_target(module: str) -> ModuleType:
    """Imports ``module``: a dotted name (from the current directory first) or a .py path."""
    try:
        if module.endswith(".py") or os.sep in module or "/" in module:
            path = Path(module)
            if not path.is_file():
                raise WorkerCommandError(f"{module}: no such file")
            directory = str(path.resolve().parent)
            if directory not in sys.path:
                sys.path.insert(0, directory)  # so that the file's own imports work
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise WorkerCommandError(f"{module}: not a Python module")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = loaded
            spec.loader.exec_module(loaded)
            return loaded
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(module)
    except WorkerCommandError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and module.split(".")[0] == exc.name.split(".")[0]:
            raise WorkerCommandError(f"cannot import {module}: no module named "
                                     f"{exc.name!r}") from None
        raise WorkerCommandError(f"cannot import {module}: {exc}",
                                 traceback.format_exc().rstrip().splitlines()) from None
    except Exception as exc:
        raise WorkerCommandError(f"cannot import {module}: {type(exc).__name__}: {exc}",
                                 traceback.format_exc().rstrip().splitlines()) from None


def resolve_worker(target: str) -> Worker:
    """The Worker that ``MODULE[:ATTR]`` names (see the module docstring)."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise WorkerCommandError(f"bad target {target!r}: expected MODULE[:ATTR]")
    module = import_target(module_name)
    if attr:
        value: Any = module
        for part in attr.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise WorkerCommandError(f"{module_name} has no attribute {attr!r}") from None
        if isinstance(value, Worker):
            return value
        if callable(value) and getattr(value, "__dwasm_queue__", None) is None:
            try:
                built = value()
            except Exception as exc:
                raise WorkerCommandError(f"{target}() failed: {type(exc).__name__}: {exc}",
                                         traceback.format_exc().rstrip().splitlines()) from None
            if isinstance(built, Worker):
                return built
        raise WorkerCommandError(f"{target} is not a Worker (nor a function returning one)")
    workers = {name: value for name, value in vars(module).items()
               if isinstance(value, Worker)}
    if len(workers) > 1:
        raise WorkerCommandError(f"{module_name} has several Workers ({', '.join(workers)}); "
                                 f"name one: {module_name}:{next(iter(workers))}")
    if workers:
        return next(iter(workers.values()))
    marked = collect_handlers(vars(module))
    if not marked:
        raise WorkerCommandError(f"{module_name} defines no Worker and no @handler functions")
    worker = Worker()
    for queue, fn, concurrency in marked:
        try:
            worker.add_handler(queue, fn, concurrency=concurrency)
        except ValueError as exc:
            raise WorkerCommandError(f"{module_name}: {exc}") from None
    return worker


def run(target: str, *, url: str | None = None, token: str | None = None,
        concurrency: int | None = None, log_level: str = "info",
        log_format: str = "text") -> int:
    """Loads the target and serves until SIGINT/SIGTERM; the exit status (0 after a clean
    stop, 130 if in-flight tasks were abandoned)."""
    logs.configure(log_level, log_format)
    worker = resolve_worker(target)
    if not worker.queues:
        raise WorkerCommandError(f"{target}: the Worker has no handlers")
    try:
        worker.configure(url=url, token=token, concurrency=concurrency)
    except ValueError as exc:
        raise WorkerCommandError(str(exc)) from None
    clean = worker.run(install_signals=True)
    return EXIT_OK if clean else EXIT_ABANDONED
