"""Fixtures for tests of the service: a real PostgreSQL, fresh databases, real uvicorn servers.

Registered for the whole suite by ``tests/conftest.py`` (``pytest_plugins``). Nothing here
imports the service's dependencies until a fixture is used, so the engine's tests run without
them.

PostgreSQL
    ``pg_server`` (session; one per xdist worker): an embedded PostgreSQL in a new temp dir
    (non-durable: fsync off; ~0.7 s to create; removed at the end), or the server of
    ``$DWASM_TEST_DATABASE_URL`` when that is set (then nothing is started; the URL's user must
    be allowed to CREATE DATABASE). Methods: ``create_database(migrated=True) -> url``,
    ``drop_database(url)``, ``url_for(name)``.

    ``database_url`` (function): URL of a new, migrated database, dropped after the test.
    ``empty_database_url`` (function): the same without migrations (to test them).
    ``module_database_url`` (module): one migrated database shared by a test module.
    ``make_database_url`` (function): factory ``make(migrated=True) -> url``, all dropped after.
    Database names are ``dwasm_test_<uuid>``: unique across workers and runs.

Servers (all stopped after the test; failures to start raise with the server's log)
    ``live_server`` (function): the app in-process, uvicorn in a background thread on
    127.0.0.1 and an ephemeral port, on ``database_url``, running ``app.serve.build_app`` (the
    complete service). Yields a :class:`LiveServer` (``.url``, ``.app``, ``.settings``,
    ``.client()``, ``.stop()``). About 0.3 s with its fresh database; use it by default.
    ``start_live_server`` (function): factory ``start(database_url=None, *, app_factory=None,
    **settings) -> LiveServer`` for custom settings (``max_module_size=1024``), another app
    (``app_factory=create_app``: the core app only) or several servers.
    ``server`` (function): the test module's server, ``live_server`` unless the module defines
    its own ``server`` fixture (``return start_live_server(app_factory=flow_app)``), and
    ``client`` (function): an ``httpx.Client`` of that ``server``, closed after the test.
    ``spawn_server`` (function): factory for real ``python -m app.cli serve`` processes:
    ``spawn(database_url=..., env=..., data_dir=...) -> ServerProcess`` with ``.url``,
    ``.stop()`` (SIGTERM, then SIGKILL after a timeout; returns the exit status), ``.kill()``
    (SIGKILL, for crash tests), ``.restart()`` (same port, same database) and ``.log()``.
    Without ``database_url`` the process gets a fresh migrated one; pass
    ``database_url=None, embedded=True`` to let it start its own embedded PostgreSQL in
    ``data_dir``. Ports: the process binds port 0 and the fixture reads the real port from its
    ``listening on http://...`` line (no race between picking and binding); ``restart()``
    reuses the port, retrying for a few seconds while it is still taken.

Async code: ``database`` (pytest-asyncio fixture, function) is a connected
:class:`app.db.Database` on ``database_url``; mark such tests ``@pytest.mark.asyncio``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
_LISTENING_RE = re.compile(r"listening on (http://\S+)")


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _replace_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _admin_execute(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate_url(url: str) -> None:
    from app.db import Database, migrate

    db = await Database.connect(url, min_size=1, max_size=1)
    try:
        await migrate(db)
    finally:
        await db.close()


class TestPostgres:
    """A PostgreSQL server for tests: creates and drops throw-away databases."""

    __test__ = False  # not a test class

    def __init__(self, admin_url: str, embedded: Any = None) -> None:
        self.admin_url = admin_url
        self.embedded = embedded
        self._template: str | None = None
        self._lock = threading.Lock()

    def url_for(self, name: str) -> str:
        return _replace_database(self.admin_url, name)

    def _migrated_template(self) -> str:
        """A migrated database that fresh ones are copied from (faster than migrating each)."""
        with self._lock:
            if self._template is None:
                name = f"dwasm_test_tmpl_{uuid.uuid4().hex}"
                asyncio.run(_admin_execute(self.admin_url, f'CREATE DATABASE "{name}"'))
                asyncio.run(_migrate_url(self.url_for(name)))
                self._template = name
            return self._template

    def create_database(self, migrated: bool = True) -> str:
        """A new database (``dwasm_test_<uuid>``); returns its URL."""
        name = f"dwasm_test_{uuid.uuid4().hex}"
        template = f' TEMPLATE "{self._migrated_template()}"' if migrated else ""
        asyncio.run(_admin_execute(self.admin_url, f'CREATE DATABASE "{name}"{template}'))
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        asyncio.run(_admin_execute(self.admin_url,
                                   f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        if self._template is not None:
            self.drop_database(self.url_for(self._template))
            self._template = None
        if self.embedded is not None:
            self.embedded.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestPostgres]:
    external = os.environ.get("DWASM_TEST_DATABASE_URL")
    if external:
        server = TestPostgres(external)
    else:
        from app.db.embedded import EmbeddedPostgres

        # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, and
        # would delete the cluster under the running server.
        data_dir = Path(tempfile.mkdtemp(prefix="dwasm-test-pg-"))
        pg = EmbeddedPostgres.start(data_dir, durable=False)
        server = TestPostgres(pg.url, pg)
    try:
        yield server
    finally:
        server.close()
        if not external:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def make_database_url(pg_server: TestPostgres) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(migrated: bool = True) -> str:
        url = pg_server.create_database(migrated)
        created.append(url)
        return url

    yield make
    for url in created:
        pg_server.drop_database(url)


@pytest.fixture
def database_url(make_database_url: Callable[..., str]) -> str:
    return make_database_url(True)


@pytest.fixture
def empty_database_url(make_database_url: Callable[..., str]) -> str:
    return make_database_url(False)


@pytest.fixture(scope="module")
def module_database_url(pg_server: TestPostgres) -> Iterator[str]:
    url = pg_server.create_database(True)
    yield url
    pg_server.drop_database(url)


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only the async fixture needs it
    pytest_asyncio = None

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def database(database_url: str) -> Any:
        from app.db import Database

        db = await Database.connect(database_url, min_size=1, max_size=5)
        try:
            yield db
        finally:
            await db.close()


# --------------------------------------------------------------------------------------------
# In-process server


def bind_ephemeral(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a free port of ``host`` (the kernel picks it: no race)."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets it recognises as TCP,
    # and without it every keep-alive request waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class LiveServer:
    """An app served by uvicorn in a background thread (its own event loop)."""

    def __init__(self, app: Any, settings: Any) -> None:
        import uvicorn

        self.app = app
        self.settings = settings
        self._sock = bind_ephemeral()
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{port}", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self, timeout: float = 30) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"in-process server did not start: {self._error!r} "
                                   "(see the captured log for the lifespan error)")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(5)
        self._sock.close()

    def client(self, **kwargs: Any) -> Any:
        """An ``httpx.Client`` for this server (close it, or use it in a ``with``)."""
        import httpx

        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30), **kwargs)


@pytest.fixture
def start_live_server(make_database_url: Callable[..., str]) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(database_url: str | None = None, *, app_factory: Callable[..., Any] | None = None,
              **settings: Any) -> LiveServer:
        from app.api.settings import Settings
        from app.serve import build_app

        config = Settings(database_url=database_url or make_database_url(True), **settings)
        server = LiveServer((app_factory or build_app)(config), config)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def live_server(start_live_server: Callable[..., LiveServer], database_url: str) -> LiveServer:
    return start_live_server(database_url)


@pytest.fixture
def server(live_server: LiveServer) -> LiveServer:
    """The server ``client`` talks to; a test module overrides this fixture for other settings
    or another app, and its tests' ``client`` follows."""
    return live_server


@pytest.fixture
def client(server: LiveServer) -> Iterator[Any]:
    """An ``httpx.Client`` of the test module's ``server``."""
    with server.client() as c:
        yield c


# --------------------------------------------------------------------------------------------
# Server processes


class ServerProcess:
    """A ``python -m app.cli serve`` process; its stdout and stderr go to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path,
                 start_timeout: float = 60) -> None:
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.starts = 0

    def start(self, port: int = 0) -> ServerProcess:
        """Starts the process and waits for its ``listening on`` line. A fixed ``port`` that is
        briefly taken (a restart right after a kill) is retried for a few seconds."""
        for attempt in range(20):
            if self._start_once(port):
                return self
            time.sleep(0.25)
        raise RuntimeError(f"server could not listen on port {port}:\n{self.log()}")

    def _start_once(self, port: int) -> bool:
        self.starts += 1
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts} (port {port}) ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port",
                 str(port)], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            text = self._log_since(offset)
            match = _LISTENING_RE.search(text)
            if match:
                self.url = match.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return True
            if self.proc.poll() is not None:
                if port and "Address already in use" in text:
                    return False
                raise RuntimeError(f"server exited with status {self.proc.returncode} before "
                                   f"listening:\n{text}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not listen within {self.start_timeout} s:\n"
                           f"{self._log_since(offset)}")

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def log(self) -> str:
        """Everything the process (all its starts) printed."""
        return self._log_since(0) if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` s; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (a crash): the process gets no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, *, kill: bool = False) -> ServerProcess:
        """Stops (or kills) the process and starts it again on the same port."""
        self.kill() if kill else self.stop()
        return self.start(self.port)


@pytest.fixture
def spawn_server(tmp_path: Path,
                 make_database_url: Callable[..., str]) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def spawn(database_url: str | None = None, *, embedded: bool = False,
              data_dir: Path | None = None, env: dict[str, str] | None = None,
              start_timeout: float = 60, port: int = 0) -> ServerProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DWASM_")}
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        full_env["DWASM_LOG_LEVEL"] = "warning"
        full_env["DWASM_DATA_DIR"] = str(data_dir or tmp_path / f"dwasm-{len(servers)}")
        if not embedded:
            full_env["DWASM_DATABASE_URL"] = database_url or make_database_url(True)
        full_env.update(env or {})
        server = ServerProcess(full_env, tmp_path / f"server-{len(servers)}.log", REPO_ROOT,
                               start_timeout)
        servers.append(server)
        return server.start(port)

    yield spawn
    for server in reversed(servers):
        server.stop()
        data_dir = server.env.get("DWASM_DATA_DIR")
        if "DWASM_DATABASE_URL" not in server.env and data_dir:
            from app.db.embedded import EmbeddedPostgres

            leftover = EmbeddedPostgres.attach(data_dir)  # a killed server leaves it running
            if leftover is not None:
                leftover.stop()
