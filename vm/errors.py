"""The error classes of the embedding API.

Each class matches one outcome class of the WebAssembly spec's test suite, so that a caller (the
spec runner, the flow engine, the CLI) can tell "your bytes are broken" from "your program trapped"
without parsing messages. Messages follow the spec's wording (e.g. "unexpected end",
"type mismatch", "integer divide by zero") because users search for them.
"""

from __future__ import annotations


class WasmError(Exception):
    """Base of every error raised by vm/ on purpose."""


class MalformedError(WasmError):
    """The bytes are not a WebAssembly binary (binary format, spec chapter 5)."""


class InvalidError(WasmError):
    """The module decodes but is not valid (validation, spec chapter 3)."""


class LinkError(WasmError):
    """Imports cannot be resolved or do not match their declared types."""


class TrapError(WasmError):
    """Execution trapped (spec chapter 4). ``backtrace`` lists wasm frames, innermost first."""

    def __init__(self, message: str, backtrace: list[tuple[int, int]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # (function index, bytecode offset) pairs, innermost frame first.
        self.backtrace: list[tuple[int, int]] = backtrace or []


class ExhaustionError(TrapError):
    """A resource limit of the engine was hit: call stack depth, fuel-independent limits.

    A subclass of TrapError because, for the guest, it behaves like a trap: the invocation is
    aborted and the instance remains usable.
    """


class Suspend(Exception):
    """Raised by a host function to suspend a resumable execution (``vm.Execution``) at this call.

    Not an error: the execution's status becomes ``"host"``, it can be snapshotted, and
    ``Execution.complete_host(results)`` later delivers the call's results. ``reason`` is any
    data the host wants to keep with the pending call; ``func`` and ``call_args`` (the call's
    arguments) are filled in by the machine.
    """

    def __init__(self, reason: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.func: object = None
        self.call_args: list[object] = []
