"""``dwasm serve`` and ``dwasm migrate``: run the service process.

``serve``: read the settings (:mod:`app.api.settings`); without ``DWASM_DATABASE_URL``, start an
embedded PostgreSQL in ``DWASM_DATA_DIR``; connect and apply migrations (errors here are one
clear line, before anything listens); bind the socket; serve with uvicorn until SIGTERM or
SIGINT; then stop uvicorn (in-flight requests finish, the lifespan shuts the engine down),
close the pool, and stop the embedded PostgreSQL unless another dwasm process still uses it.
Progress lines go to stderr; the ``listening on http://HOST:PORT`` line carries the real port,
so ``--port 0`` (any free port) is usable by scripts and tests. Log lines (uvicorn's included,
and one access line per request in place of uvicorn's) go to stderr as well, as JSON or text
(``DWASM_LOG_FORMAT``, :mod:`app.observability.logs`).

:func:`build_app` is the complete service: the core app (:func:`app.api.app.create_app`) plus
what :mod:`app.flows.service` adds (engine, routers, lifespan hooks).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import sys
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from .api.settings import Settings, SettingsError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .db import Database
    from .db.embedded import EmbeddedPostgres

T = TypeVar("T")


class ServeError(Exception):
    """The service cannot start (or migrate); the message is for the operator."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived before the server was up."""


def say(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def build_app(settings: Settings, db: Database | None = None) -> FastAPI:
    """The complete dwasm service: the core app plus the flow engine, its routers and hooks
    (assembled in :mod:`app.flows.service` with ``create_app``'s extension points)."""
    from .flows.service import build_app as build_service_app

    return build_service_app(settings, db)


class _StopSignals:
    """Records SIGINT/SIGTERM instead of dying, so that shut-down runs in order.

    While uvicorn serves it installs its own handlers; when it returns it restores ours and
    re-raises the signal it caught, which lands here as well.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    @contextmanager
    def installed(self) -> Iterator[_StopSignals]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]


async def _unless_stopped(stop: _StopSignals, awaitable: Awaitable[T]) -> T:
    """Awaits ``awaitable``, cancelling it if a stop signal arrives meanwhile."""
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        await asyncio.wait({task}, timeout=0.1)
        if stop.received is not None and not task.done():
            task.cancel()
            raise Interrupted()
    return task.result()


def _display(path: Path) -> str:
    """``./.dwasm`` rather than ``.dwasm``: a relative path reads as one."""
    text = str(path)
    return text if path.is_absolute() or text.startswith(("./", "../")) else f"./{text}"


def _start_embedded(settings: Settings) -> EmbeddedPostgres:
    from .db.embedded import EmbeddedPostgres, EmbeddedPostgresError

    say(f"starting embedded PostgreSQL in {_display(settings.data_dir)} ...")
    try:
        pg = EmbeddedPostgres.start(settings.data_dir)
    except EmbeddedPostgresError as exc:
        raise ServeError(str(exc)) from None
    how = "started" if pg.started_here else "reusing the running"
    say(f"{how} embedded PostgreSQL ({pg.startup_seconds:.1f} s), socket in {pg.socket_dir}")
    return pg


def _stop_embedded(pg: EmbeddedPostgres) -> None:
    from .db.embedded import EmbeddedPostgresError

    try:
        if pg.stop(if_unused=True):
            say("stopped embedded PostgreSQL")
        else:
            say("left embedded PostgreSQL running: another dwasm process uses it")
    except EmbeddedPostgresError as exc:
        say(f"warning: {exc}")


async def _connect_and_migrate(settings: Settings, url: str, stop: _StopSignals) -> Database:
    from .db import Database, DatabaseUnavailable, MigrationError, migrate

    try:
        db = await _unless_stopped(stop, Database.connect(
            url, settings.db_pool_min, settings.db_pool_max,
            timeout=settings.db_connect_timeout))
    except DatabaseUnavailable as exc:
        raise ServeError(str(exc)) from None
    try:
        applied = await _unless_stopped(stop, migrate(db))
    except MigrationError as exc:
        await db.close()
        raise ServeError(str(exc)) from None
    except BaseException:
        await db.close()
        raise
    say(f"applied migrations: {', '.join(applied)}" if applied
        else "database schema is up to date")
    return db


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket, *, local: bool = False) -> str:
    """The socket's URL; ``local``: as a browser on this machine reaches it (a wildcard bind
    means loopback)."""
    host, port = sock.getsockname()[:2]
    if local and host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(settings: Settings, url: str, stop: _StopSignals,
                 notice: str | None = None) -> None:
    import uvicorn

    db = await _connect_and_migrate(settings, url, stop)
    try:
        sock = _bind(settings.host, settings.port)
        app = build_app(settings, db)
        # log_config=None: uvicorn's loggers keep the handler configure_logging installed;
        # its access lines give way to the request middleware's.
        config = uvicorn.Config(app, log_level=settings.log_level, log_config=None,
                                access_log=False, lifespan="on", timeout_graceful_shutdown=10)

        class Server(uvicorn.Server):
            """The first SIGTERM/SIGINT starts the drain (``watch`` below), which ends by
            stopping the server; a second one stops it at once."""

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if stop.received is None:
                    stop.received = sig
                else:
                    super().handle_exit(sig, frame)

        server = Server(config)

        async def watch() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.02)
            if server.started:
                say(f"listening on {_url(sock)}")
                say(f"web console: {_url(sock, local=True)}/ui")
                if notice:
                    say(notice)
            while not server.should_exit:
                if stop.received is not None:
                    await _drain(app, settings.shutdown_grace)
                    server.should_exit = True
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            sock.close()
        if not server.started:
            raise ServeError("the server did not start (see the messages above)")
        say("server stopped")
    finally:
        await db.close()


async def _drain(app: Any, grace: float) -> None:
    """SIGTERM: turn unready and hand this node's shards over (their flows stop at a safe
    point and checkpoint; their new owners resume them) while requests are still served; then
    the server finishes what is in flight and stops."""
    topology = getattr(app.state, "topology", None)
    if topology is None or grace <= 0:
        return
    say(f"draining: handing shards over (up to {grace:g} s) ...")
    began = time.monotonic()
    try:
        complete = await topology.drain(grace)
    except Exception as exc:  # stopping anyway: the shards move when this node's lease ends
        say(f"drain failed: {exc}")
        return
    say(f"drained in {time.monotonic() - began:.1f} s"
        + ("" if complete else " (not every shard was taken over in time)"))


def serve(host: str | None = None, port: int | None = None, *,
          allow_no_auth: bool | None = None) -> int:
    """Runs the service until SIGTERM/SIGINT; returns the exit status (0 after a clean stop)."""
    from .api.auth import AuthConfigError, check_bind, parse_tokens

    try:
        settings = Settings.from_env(host=host, port=port, allow_no_auth=allow_no_auth)
        notice = check_bind(settings.host, parse_tokens(settings.api_tokens),
                            settings.allow_no_auth)
    except (SettingsError, AuthConfigError) as exc:
        raise ServeError(f"bad configuration: {exc}") from None
    from .observability.logs import configure_logging, node_id_for

    configure_logging(settings.log_level, settings.log_format, node=node_id_for(settings))

    stop = _StopSignals()
    with stop.installed():
        try:
            with _database(settings) as url:
                if stop.received is None:
                    asyncio.run(_serve(settings, url, stop, notice))
        except Interrupted:
            pass
    return 0


@contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The database URL: the configured one, or an embedded server run for the duration."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    pg = _start_embedded(settings)
    try:
        yield pg.url
    finally:
        _stop_embedded(pg)


def migrate_command() -> int:
    """``dwasm migrate``: applies pending migrations and exits."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise ServeError(f"bad configuration: {exc}") from None
    stop = _StopSignals()

    async def run(url: str) -> None:
        db = await _connect_and_migrate(settings, url, stop)
        await db.close()

    with stop.installed():
        try:
            with _database(settings) as url:
                asyncio.run(run(url))
        except Interrupted:
            return 130
    return 0
