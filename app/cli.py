"""The ``dwasm`` command line.

For now it has one job: ``dwasm run --invoke FUNC FILE.wasm [ARGS...]`` loads a module with the
vm/ engine, calls one exported function and prints its results, like ``wasmtime run --invoke``
does, so the two can be compared output for output. Running WASI programs (``_start``), the
service and snapshots come later.

Every failure is one ``error: ...`` line on stderr and an exit status that tells its class (see
:data:`EXIT_CODES`), so that scripts can react without parsing messages.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import vm
from vm import structure as S
from vm.errors import InvalidError, MalformedError, TrapError

from . import runner
from .client.commands import add_client_commands
from .client.errors import (EXIT_FILE, EXIT_FLOW_CANCELLED, EXIT_FLOW_FAILED, EXIT_INTERRUPTED,
                            EXIT_SERVICE, EXIT_USAGE, EXIT_WAIT_TIMEOUT, ClientError)
from .statedir import StateDirError

EXIT_OK = 0
EXIT_MODULE = 4
EXIT_LINK = 5
EXIT_TRAP = 6

EXIT_CODES = {
    EXIT_OK: "success",
    1: "internal error (a bug in dwasm)",
    EXIT_USAGE: "usage error: bad options, unknown export, wrong number or format of arguments",
    EXIT_FILE: "the module file cannot be read",
    EXIT_MODULE: "the module is malformed or invalid",
    EXIT_LINK: "the module's imports cannot be provided (dwasm provides WASI preview1)",
    EXIT_TRAP: "the wasm code trapped, or exhausted the call stack or its fuel",
    8: "a checkpoint would exceed --max-snapshot-bytes",
    EXIT_SERVICE: "the service cannot start (bad settings, database unreachable, failed "
                  "migration, address in use), or it refused a client command",
    EXIT_FLOW_FAILED: "dwasm flows start --wait: the flow failed",
    EXIT_FLOW_CANCELLED: "dwasm flows start --wait: the flow was cancelled",
    EXIT_WAIT_TIMEOUT: "dwasm flows start --wait: --timeout ran out (the flow goes on)",
    EXIT_INTERRUPTED: "interrupted (SIGINT/SIGTERM); a durable run checkpointed first",
}


#: A failure to report as one ``error:`` line plus an exit status: the same for the local
#: commands here and the client commands of app/client.
CliError = ClientError


# --------------------------------------------------------------------------------------------
# Arguments and results


_INT_BITS = {S.I32: 32, S.I64: 64}


def _f32_round(value: float) -> float:
    """Rounds a Python float to the nearest f32, overflowing to infinity as an f32 parse does."""
    from vm.execution.numerics import f32_round

    return f32_round(value)


def parse_arg(text: str, valtype: int) -> int | float:
    """Converts one command-line argument to the vm/ value of a parameter of type ``valtype``.

    Integers accept signed or unsigned decimal (or 0x hex) within the type's range and become
    the unsigned bit pattern vm/ uses; floats accept anything ``float()`` does (``inf``, ``nan``).
    Raises ValueError with a user-facing message.
    """
    name = S.VALTYPE_NAMES.get(valtype, hex(valtype))
    if valtype in _INT_BITS:
        bits = _INT_BITS[valtype]
        try:
            number = int(text, 0)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer ({name} expected)") from None
        if not -(1 << (bits - 1)) <= number < (1 << bits):
            raise ValueError(f"{text} is out of range for {name}")
        return number & ((1 << bits) - 1)
    if valtype in (S.F32, S.F64):
        try:
            real = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number ({name} expected)") from None
        return _f32_round(real) if valtype == S.F32 else real
    raise ValueError(f"parameters of type {name} cannot be given on the command line")


def _shortest_f32_repr(value: float) -> str:
    """The shortest decimal that reads back as the same f32 (what Rust's ``{}`` prints)."""
    for digits in range(1, 10):
        text = f"{value:.{digits - 1}e}"
        if _f32_round(float(text)) == value:
            return text
    return repr(value)


def format_float(value: float, valtype: int) -> str:
    """Formats a float result the way ``wasmtime run --invoke`` prints it (Rust's ``{}``).

    Shortest round-trip digits of the value's own width, positional notation (no exponent),
    no trailing ``.0``; ``NaN``, ``inf``, ``-inf``, ``-0``.
    """
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "-0" if struct.pack("<d", value)[7] & 0x80 else "0"
    shortest = _shortest_f32_repr(value) if valtype == S.F32 else repr(value)
    return format(Decimal(shortest).normalize(), "f")


def format_result(value: Any, valtype: int) -> str:
    """One result line: integers as signed decimals, floats as wasmtime prints them."""
    if valtype in _INT_BITS:
        bits = _INT_BITS[valtype]
        return str(value - (1 << bits) if value >= 1 << (bits - 1) else value)
    if valtype in (S.F32, S.F64):
        return format_float(value, valtype)
    if valtype in (S.FUNCREF, S.EXTERNREF):
        kind = S.VALTYPE_NAMES[valtype]
        return f"<null {kind}>" if value is None else f"<{kind}>"
    return str(value)


_BACKTRACE_HEAD = 20
_BACKTRACE_TAIL = 5


def format_backtrace(trap: TrapError, module: S.Module) -> list[str]:
    """Lines of a wasm backtrace, innermost frame first, with names from the name section.

    A deep one (call stack exhaustion) is cut to its innermost and outermost frames.
    """
    if not trap.backtrace:
        return []

    def frame(depth: int) -> str:
        funcidx, offset = trap.backtrace[depth]
        name = module.func_names.get(funcidx, f"<func {funcidx}>")
        return f"  {depth}: {name} (func {funcidx}) at offset {offset:#x}"

    count = len(trap.backtrace)
    if count <= _BACKTRACE_HEAD + _BACKTRACE_TAIL + 1:
        return ["wasm backtrace:", *map(frame, range(count))]
    omitted = count - _BACKTRACE_HEAD - _BACKTRACE_TAIL
    return ["wasm backtrace:", *map(frame, range(_BACKTRACE_HEAD)),
            f"  ... {omitted} frames omitted ...",
            *map(frame, range(count - _BACKTRACE_TAIL, count))]


# --------------------------------------------------------------------------------------------
# dwasm run


def _load(path: str, data: bytes) -> S.Module:
    try:
        return vm.load(data)
    except MalformedError as exc:
        raise CliError(f"{path}: malformed module: {exc}", EXIT_MODULE) from None
    except InvalidError as exc:
        raise CliError(f"{path}: invalid module: {exc}", EXIT_MODULE) from None


def _exported_func_type(module: S.Module, name: str) -> S.FuncType:
    for export in module.exports:
        if export.name == name:
            if export.kind != S.KIND_FUNC:
                kind = S.KIND_NAMES.get(export.kind, "?")
                raise CliError(f"export {name!r} is a {kind}, not a function", EXIT_USAGE)
            return module.func_type(export.index)
    funcs = sorted(e.name for e in module.exports if e.kind == S.KIND_FUNC)
    hint = f" (exported functions: {', '.join(funcs)})" if funcs else " (it exports no functions)"
    raise CliError(f"the module has no export {name!r}{hint}", EXIT_USAGE)


def format_results(results: list[Any], functype: S.FuncType) -> list[str]:
    return [format_result(v, t) for v, t in zip(results, functype.results)]


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_FILE) from None


def _parse_dir(text: str) -> list[str]:
    host, sep, guest = text.partition("::")
    if not host:
        raise CliError(f"bad --dir {text!r}: expected HOST[::GUEST]", EXIT_USAGE)
    if not os.path.isdir(host):
        raise CliError(f"--dir {host}: not a directory", EXIT_FILE)
    return [host, guest if sep else host]


def _parse_env(text: str) -> list[str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CliError(f"bad --env {text!r}: expected NAME=VALUE", EXIT_USAGE)
    return [name, value]


def _cmd_run(ns: argparse.Namespace) -> int:
    args = list(ns.args)
    if args[:1] == ["--"]:
        args = args[1:]
    data = _read_bytes(ns.file)
    module = _load(ns.file, data)
    values: list[Any] = []
    if ns.invoke is not None:
        functype = _exported_func_type(module, ns.invoke)
        if len(args) != len(functype.params):
            raise CliError(f"{ns.invoke} takes {len(functype.params)} argument(s) {functype}, "
                           f"{len(args)} given", EXIT_USAGE)
        try:
            values = [parse_arg(a, t) for a, t in zip(args, functype.params)]
        except ValueError as exc:
            raise CliError(f"bad argument: {exc}", EXIT_USAGE) from None
    if ns.fuel is not None and ns.fuel <= 0:
        raise CliError("--fuel must be positive", EXIT_USAGE)
    if ns.checkpoint_interval <= 0:
        raise CliError("--checkpoint-interval must be positive", EXIT_USAGE)
    config = runner.RunConfig(
        module_path=ns.file, args=args, env=[_parse_env(e) for e in ns.env],
        dirs=[_parse_dir(d) for d in ns.dir], invoke=ns.invoke, fuel=ns.fuel,
        interval=ns.checkpoint_interval, max_snapshot_bytes=ns.max_snapshot_bytes)
    try:
        return runner.run(module, data, config, values, format_results, state=ns.state)
    except runner.RunError as exc:
        raise CliError(exc.message, exc.exit_code, exc.details) from None
    except StateDirError as exc:
        raise CliError(str(exc), EXIT_FILE) from None


def _cmd_resume(ns: argparse.Namespace) -> int:
    try:
        return runner.resume(ns.state, format_results)
    except runner.RunError as exc:
        raise CliError(exc.message, exc.exit_code, exc.details) from None
    except StateDirError as exc:
        raise CliError(str(exc), EXIT_FILE) from None
    except (MalformedError, InvalidError) as exc:
        raise CliError(f"{ns.state}/module.wasm: {exc}", EXIT_MODULE) from None


def _cmd_serve(ns: argparse.Namespace) -> int:
    from . import serve  # imported here: `dwasm run` does not need the service's dependencies

    try:
        return serve.serve(ns.host, ns.port, allow_no_auth=True if ns.allow_no_auth else None)
    except serve.ServeError as exc:
        raise CliError(str(exc), EXIT_SERVICE) from None


def _cmd_migrate(ns: argparse.Namespace) -> int:
    from . import serve

    try:
        return serve.migrate_command()
    except serve.ServeError as exc:
        raise CliError(str(exc), EXIT_SERVICE) from None


def _cmd_worker(ns: argparse.Namespace) -> int:
    from .worker import command  # imported here: only workers need httpx

    try:
        return command.run(ns.target, url=ns.url, token=ns.token, concurrency=ns.concurrency,
                           log_level=ns.log_level, log_format=ns.log_format)
    except command.WorkerCommandError as exc:
        raise CliError(exc.message, EXIT_USAGE, exc.details) from None


# --------------------------------------------------------------------------------------------
# Entry point


def _parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code}  {text}" for code, text in sorted(EXIT_CODES.items()))
    parser = argparse.ArgumentParser(
        prog="dwasm",
        description="dwasm: durable WebAssembly flows. Runs WebAssembly modules on the vm/ "
                    "interpreter.",
        epilog=f"exit status:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_parser = commands.add_parser(
        "run", help="run a WebAssembly program (WASI command) or one exported function",
        description="Run a WASI command (its _start), or with --invoke call one exported "
                    "function and print its results, one per line (integers signed, floats as "
                    "wasmtime prints them). Options go before FILE; everything after FILE is an "
                    "argument of the program or function. With --state DIR the run is durable: "
                    "it checkpoints into DIR, and after the process dies (even SIGKILL) "
                    "`dwasm resume DIR` continues it; output is neither lost nor repeated.",
        epilog="examples:\n  dwasm run --invoke fib examples/fib.wasm 25\n"
               "  dwasm run --dir data::/data --state run1 prog.wasm input.txt\n"
               f"\nexit status: the program's exit code, or\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run_parser.add_argument("--dir", action="append", default=[], metavar="HOST[::GUEST]",
                            help="preopen directory HOST for the program, as GUEST (default: "
                                 "the same path); nothing outside preopens is reachable")
    run_parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                            help="environment variable for the program")
    run_parser.add_argument("--invoke", metavar="FUNC",
                            help="call this exported function instead of _start")
    run_parser.add_argument("--fuel", type=int, metavar="N",
                            help="stop with an error after N units of fuel (loop iterations "
                                 "and calls)")
    run_parser.add_argument("--state", metavar="DIR",
                            help="run durably, checkpointing into DIR (must be new or empty)")
    run_parser.add_argument("--checkpoint-interval", type=float, default=1.0,
                            metavar="SECONDS", help="with --state: seconds between periodic "
                                                    "checkpoints (default 1)")
    run_parser.add_argument("--max-snapshot-bytes", type=int, metavar="N",
                            help="with --state: fail (exit 8) rather than write a checkpoint "
                                 "larger than N bytes (memory plus manifest)")
    run_parser.add_argument("file", metavar="FILE.wasm", help="the WebAssembly binary")
    run_parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                            help="the program's arguments, or the function's (decimal integers "
                                 "or floats)")
    run_parser.set_defaults(handler=_cmd_run)
    resume_parser = commands.add_parser(
        "resume", help="continue a durable run from its state directory",
        description="Continue a `dwasm run --state DIR` run from its latest checkpoint, with "
                    "the same stdout/stderr destinations (append: `>> out`).",
        epilog=f"exit status: the program's exit code, or\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    resume_parser.add_argument("state", metavar="DIR", help="the state directory")
    resume_parser.set_defaults(handler=_cmd_resume)
    service_env = ("environment: DWASM_DATABASE_URL (default: an embedded PostgreSQL in "
                   "DWASM_DATA_DIR, default ./.dwasm), DWASM_MAX_PAYLOAD, DWASM_MAX_MODULE_SIZE, "
                   "DWASM_LOG_LEVEL, DWASM_LOG_FORMAT (json|text), DWASM_API_TOKENS; see "
                   "app/api/settings.py and docs/operations.md")
    serve_parser = commands.add_parser(
        "serve", help="run the dwasm service (HTTP API)",
        description="Serve the dwasm HTTP API until SIGTERM/SIGINT. Applies pending database "
                    "migrations first.", epilog=service_env)
    serve_parser.add_argument("--host", metavar="HOST",
                              help="address to listen on (default: DWASM_HOST or 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, metavar="PORT",
                              help="port to listen on, 0 for any free port (default: DWASM_PORT "
                                   "or 8080)")
    serve_parser.add_argument("--allow-no-auth", action="store_true",
                              help="listen beyond loopback without DWASM_API_TOKENS (anyone who "
                                   "can reach the port may use the API)")
    serve_parser.set_defaults(handler=_cmd_serve)
    migrate_parser = commands.add_parser(
        "migrate", help="apply pending database migrations and exit",
        description="Apply the pending SQL migrations to the service's database and exit.",
        epilog=service_env)
    migrate_parser.set_defaults(handler=_cmd_migrate)
    worker_parser = commands.add_parser(
        "worker", help="run Python task handlers as a worker of a dwasm service",
        description="Import MODULE (a dotted name or a .py file) and run its Worker (or the\n"
                    "Worker named by :ATTR, or its @handler functions) until SIGINT/SIGTERM:\n"
                    "in-flight tasks finish first; a second signal abandons them.\n"
                    "See docs/workers.md.",
        epilog="environment: DWASM_URL, DWASM_TOKEN (when --url/--token are not given)\n"
               "exit status: 0 after a clean stop, 130 if in-flight tasks were abandoned, "
               "2 if MODULE cannot be loaded",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    worker_parser.add_argument("target", metavar="MODULE[:ATTR]",
                               help="module with a Worker or @handler functions")
    worker_parser.add_argument("--url", metavar="URL",
                               help="the service (default: DWASM_URL or http://127.0.0.1:8080)")
    worker_parser.add_argument("--token", metavar="TOKEN",
                               help="bearer token for the service (default: DWASM_TOKEN)")
    worker_parser.add_argument("--concurrency", type=int, metavar="N",
                               help="handler threads per queue (default: as the module says, "
                                    "else 1)")
    worker_parser.add_argument("--log-level", default="info",
                               choices=["debug", "info", "warning", "error"])
    worker_parser.add_argument("--log-format", default="text", choices=["text", "json"],
                               help="json: one JSON object per line")
    worker_parser.set_defaults(handler=_cmd_worker)
    add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dwasm`` console script; returns the exit status."""
    parser = _parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return int(exc.code or 0)
    if ns.command is None:
        parser.print_usage(sys.stderr)
        print("error: a command is required (dwasm run ...)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return ns.handler(ns)
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for line in exc.details:
            print(line, file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
