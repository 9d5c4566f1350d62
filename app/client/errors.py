"""The exit statuses of the client commands and :class:`ClientError`, the one way a command
fails: every module of the client raises it, and ``commands`` turns it into an ``error:`` line
and the exit status (kept apart so that no module has to import the argparse wiring)."""

from __future__ import annotations

from collections.abc import Sequence

EXIT_USAGE = 2
EXIT_FILE = 3
EXIT_SERVICE = 7
EXIT_FLOW_FAILED = 9
EXIT_FLOW_CANCELLED = 10
EXIT_WAIT_TIMEOUT = 11
EXIT_INTERRUPTED = 130


class ClientError(Exception):
    """A failure to report as ``error: <message>`` (plus detail lines) and an exit status."""

    def __init__(self, message: str, exit_code: int, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = list(details)
