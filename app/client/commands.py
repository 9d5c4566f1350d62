"""The argparse wiring of the client: the ``modules``, ``flows``, ``queues`` and ``cluster``
subcommands with their options and help texts, the options they share (``--url``, ``--token``,
``--json``), and :func:`_run`, which gives each handler its :class:`~app.client.api.Api` and
turns a :class:`~app.client.errors.ClientError` or Ctrl-C into an ``error:`` line and the exit
status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from . import cluster, flows, modules, queues
from .api import Api
from .errors import (
    EXIT_FILE,
    EXIT_FLOW_CANCELLED,
    EXIT_FLOW_FAILED,
    EXIT_INTERRUPTED,
    EXIT_SERVICE,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
    ClientError,
)
from .inputs import finite

DEFAULT_URL = "http://127.0.0.1:8080"

WAIT_EXIT_HELP = (
    "exit status of `flows start --wait`: the flow's exit code when it completed; "
    f"{EXIT_FLOW_FAILED} when it failed (trapped, unloadable), {EXIT_FLOW_CANCELLED} when it was "
    f"cancelled, {EXIT_WAIT_TIMEOUT} when --timeout passed first (the flow keeps running); "
    "a flow may itself exit with these numbers, so check --json's status when that matters.\n"
    f"other exit status: {EXIT_USAGE} usage, {EXIT_FILE} unreadable file, {EXIT_SERVICE} the "
    f"service answered an error or cannot be reached, {EXIT_INTERRUPTED} interrupted (Ctrl-C)")


def _run(handler: Callable[[Api, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wraps a handler: builds the client, reports :class:`ClientError` and Ctrl-C."""

    def run(ns: argparse.Namespace) -> int:
        api = None
        try:
            url = ns.url or os.environ.get("DWASM_URL") or DEFAULT_URL
            token = ns.token if ns.token is not None else os.environ.get("DWASM_TOKEN")
            api = Api(url, token)
            return handler(api, ns)
        except ClientError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            for line in exc.details:
                print(line, file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            if api is not None:
                api.close()

    return run


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(ns: argparse.Namespace) -> int:
        parser.print_usage(sys.stderr)
        print(f"error: a subcommand is required ({parser.prog} --help lists them)",
              file=sys.stderr)
        return EXIT_USAGE

    return show


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", metavar="URL",
                        help=f"the service (default: DWASM_URL or {DEFAULT_URL})")
    common.add_argument("--token", metavar="TOKEN",
                        help="bearer token for the service (default: DWASM_TOKEN)")
    common.add_argument("--json", action="store_true",
                        help="print the API's JSON answer instead of the human form")
    return common


def add_client_commands(commands: Any) -> None:
    """Adds ``modules``, ``flows``, ``queues`` and ``cluster`` to the ``dwasm`` subcommands
    (an argparse subparsers object)."""
    common = [_common()]
    fmt = argparse.RawDescriptionHelpFormatter
    epilog = f"environment: DWASM_URL, DWASM_TOKEN\n{WAIT_EXIT_HELP}"

    modules_parser = commands.add_parser(
        "modules", help="upload and inspect modules on a service",
        description="Upload WebAssembly modules to a dwasm service and describe them. See "
                    "docs/cli.md.",
        epilog=epilog, formatter_class=fmt)
    modules_parser.set_defaults(handler=_usage(modules_parser))
    msub = modules_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    p = msub.add_parser("upload", parents=common, help="upload a .wasm file; prints its id")
    p.add_argument("file", metavar="FILE.wasm")
    p.set_defaults(handler=_run(modules.cmd_upload))
    p = msub.add_parser("list", parents=common, help="list modules, newest first")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (1-1000)")
    p.set_defaults(handler=_run(modules.cmd_list))
    p = msub.add_parser("get", parents=common, help="describe one module")
    p.add_argument("id", metavar="ID", help="sha256:<hex>")
    p.set_defaults(handler=_run(modules.cmd_get))

    flows_parser = commands.add_parser(
        "flows", help="start, watch and control flows on a service",
        description="Start flows on a dwasm service, follow them, signal, cancel and query "
                    "them. See docs/cli.md.",
        epilog=epilog, formatter_class=fmt)
    flows_parser.set_defaults(handler=_usage(flows_parser))
    fsub = flows_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    p = fsub.add_parser(
        "start", parents=common, help="start a flow (uploading a .wasm file first if given)",
        description="Start a flow of MODULE (an uploaded module's sha256:... id, or a .wasm "
                    "file, uploaded first) with ARGS as argv[1:]; put `--` before ARGS that "
                    "start with '-'. Prints the flow id; with --wait follows the flow and "
                    "ends as it does.", epilog=WAIT_EXIT_HELP, formatter_class=fmt)
    p.add_argument("module", metavar="MODULE", help="sha256:<hex> module id or a .wasm file")
    p.add_argument("args", nargs="*", metavar="ARGS", help="the flow's arguments")
    p.add_argument("--id", metavar="ID", help="choose the flow's id (makes the start "
                                              "idempotent)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment variable of the flow (repeatable)")
    p.add_argument("--stdin", metavar="TEXT", help="the flow's stdin")
    p.add_argument("--stdin-file", metavar="FILE", help="read the flow's stdin from FILE")
    p.add_argument("--wait", action="store_true",
                   help="follow the flow (status on stderr) until it ends; then print its "
                        "stdout and stderr and exit with its exit code")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help=f"with --wait: give up after SECONDS (exit {EXIT_WAIT_TIMEOUT})")
    p.set_defaults(handler=_run(flows.cmd_start))
    p = fsub.add_parser("get", parents=common, help="a flow's status and output")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=_run(flows.cmd_get))
    p = fsub.add_parser("list", parents=common, help="list flows, newest first (a table)")
    p.add_argument("--status", choices=["running", "waiting", "completed", "failed",
                                        "cancelled"])
    p.add_argument("--module", metavar="MODULE_ID", help="only flows of this module")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (1-1000)")
    p.set_defaults(handler=_run(flows.cmd_list))
    p = fsub.add_parser("cancel", parents=common,
                        help="cancel a flow, its pending tasks and its children")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=_run(flows.cmd_cancel))
    p = fsub.add_parser("signal", parents=common, help="send a signal to a flow")
    p.add_argument("id", metavar="ID")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--payload", metavar="TEXT", help="the payload (default: empty)")
    p.add_argument("--payload-file", metavar="FILE", help="read the payload from FILE")
    p.set_defaults(handler=_run(flows.cmd_signal))
    p = fsub.add_parser("events", parents=common,
                        help="a flow's history, oldest first, one line per event")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=_run(flows.cmd_events))
    p = fsub.add_parser(
        "query", parents=common,
        help="call an export on a copy of the flow's latest checkpoint",
        description="Call EXPORT with ARGS (numbers) on a throw-away copy of the flow's latest "
                    "checkpoint; prints its results one per line. The flow is not changed.")
    p.add_argument("id", metavar="ID")
    p.add_argument("export", metavar="EXPORT")
    p.add_argument("args", nargs="*", metavar="ARGS", help="the export's arguments")
    p.add_argument("--fuel", type=int, metavar="N", help="fuel limit (default 10 000 000)")
    p.set_defaults(handler=_run(flows.cmd_query))

    queues_parser = commands.add_parser(
        "queues", help="queues' backlog and retry policies",
        description="Show the task queues of a dwasm service (backlog and the retry policy in "
                    "force) and set their policies. See docs/cli.md.",
        epilog=epilog, formatter_class=fmt)
    queues_parser.set_defaults(handler=_usage(queues_parser))
    qsub = queues_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    p = qsub.add_parser("list", parents=common,
                        help="queues with a backlog or a policy of their own (a table)")
    p.set_defaults(handler=_run(queues.cmd_list))
    p = qsub.add_parser("get", parents=common, help="one queue's backlog and policy")
    p.add_argument("queue", metavar="QUEUE")
    p.set_defaults(handler=_run(queues.cmd_get))
    p = qsub.add_parser(
        "set-policy", parents=common, help="set a queue's retry policy",
        description="Replace QUEUE's policy overrides: the options given apply to QUEUE, every "
                    "other field takes the service's default (DWASM_MAX_ATTEMPTS, ...). "
                    "Applies from now on, on every node within a few seconds; a task keeps "
                    "the max attempts it was scheduled with. Prints the queue.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--max-attempts", dest="max_attempts", type=int, metavar="N",
                   help="attempts per task, the first included (1-1000)")
    p.add_argument("--backoff", dest="backoff_initial", type=finite, metavar="S",
                   help="seconds before the second attempt (0-86400)")
    p.add_argument("--backoff-factor", dest="backoff_factor", type=finite, metavar="F",
                   help="each further backoff is F times longer (1-100)")
    p.add_argument("--backoff-max", dest="backoff_max", type=finite, metavar="S",
                   help="the longest backoff, seconds (0-604800)")
    p.add_argument("--lease-timeout", dest="lease_timeout", type=finite, metavar="S",
                   help="seconds a lease lasts without a heartbeat (above 0, up to 86400)")
    p.set_defaults(handler=_run(queues.cmd_set_policy))
    p = qsub.add_parser("reset-policy", parents=common,
                        help="return a queue to the service's default policy",
                        description="Drop QUEUE's policy overrides (an error if it has none); "
                                    "prints the queue.")
    p.add_argument("queue", metavar="QUEUE")
    p.set_defaults(handler=_run(queues.cmd_reset_policy))

    p = commands.add_parser(
        "cluster", parents=common, help="the cluster as a node sees it",
        description="This node (mode, id, readiness, shard map version, shards it holds), the "
                    "members (url, state, shards owned) and a summary of the shard map "
                    "(shards per owner, shards in handoff). See docs/cluster.md.",
        epilog=epilog, formatter_class=fmt)
    p.set_defaults(handler=_run(cluster.cmd_show))
