"""The ``pytest-aiops`` command line: its parser, and ``main`` dispatching to the commands.

This is what an agent orchestrator (or a person) uses outside pytest: give a process a git
worktree and a port range, tell it where they are (``AGENT_*`` variables and a discovery
file), take them back when it ends, and show or reclaim what other processes hold or left.

Exit statuses (``run`` passes its COMMAND's through):

- ``0``: success; ``run``: COMMAND's own status, or ``128+N`` when COMMAND died of signal N
  (the shell's convention: 130 for SIGINT, 143 for SIGTERM).
- ``1``: an error (provisioning or releasing failed, an unusable lock directory, ...), as one
  ``pytest-aiops: error: ...`` line on stderr, never a traceback.
- ``2``: a usage error (unknown option, bad ``--resource`` JSON, no COMMAND).
- ``126``/``127``: ``run`` could not execute COMMAND / COMMAND was not found (as a shell).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .._core.types import ResourceRequest
from .._errors import AiopsError, CommandLineError
from .admin import INIT_EPILOG, add_init_options, cmd_init_lock_dir
from .locations import lock_directory_default
from .output import EXIT_ERROR, EXIT_USAGE, PROG, one_line, report, show_warning
from .run import cmd_run
from .status import cmd_gc, cmd_status


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one ``pytest-aiops: error: ...`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{message} (see '{self.prog} --help')")


_RUN_EPILOG = f"""\
examples:
  {PROG} run -- claude              # an agent in its own worktree + port range
  {PROG} run --session-id review-42 -- bash
  {PROG} run --resource port-range -- pytest -n 4    # ports only, in the cwd
  {PROG} run --resource 'port-range:{{"blockSize": 8}}' --resource git-worktree \\
      -- make test
  {PROG} run --discovery-file /tmp/agent.json -- python serve.py

COMMAND runs in the session's working directory (the worktree) with the current
environment plus AGENT_PORT_RANGE_START/END, AGENT_PORT_PRIMARY, AGENT_REPO_ROOT,
AGENT_WORKTREE_PATH, AGENT_WORKTREE_BASE_REF and AGENT_DISCOVERY_FILE, the discovery
JSON (default .agent-context/resources.json under the working directory; removed at
the end).

SIGINT, SIGTERM and SIGHUP sent to {PROG} are forwarded to COMMAND (a terminal's ^C
reaches both already, so it is not sent twice). {PROG} then waits for COMMAND and
releases everything. If {PROG} itself is SIGKILLed, COMMAND gets SIGTERM and
'{PROG} gc' reclaims what was left.

exit status: COMMAND's; 128+N if it died of signal N (130 SIGINT, 143 SIGTERM);
127 if COMMAND was not found, 126 if it could not be executed; 1 if provisioning
failed (or releasing failed after COMMAND succeeded); 2 for a usage error.

The default session id is agent-<user>-<pid of {PROG}>: unique on the machine
while it runs, and readable in '{PROG} status'.
"""

_STATUS_EPILOG = f"""\
examples:
  {PROG} status            # leases in the machine-wide lock directory and the
                                 # worktrees of the repository in the cwd
  {PROG} status --json | jq '.leases[].sessionId'
  {PROG} status --lock-dir /tmp/my-locks --worktree-root ../worktrees

Leases whose holder died are not listed, only counted ('{PROG} gc' removes
their records). Worktree states: live (its owner runs), orphaned (its owner died;
gc reclaims it), pooled (kept for reuse), kept (left by pytest --aiops-keep for you
to inspect; stays until 'git worktree remove --force PATH' or '{PROG} gc --kept').
"""

_GC_EPILOG = f"""\
examples:
  {PROG} gc --dry-run      # say what would be reclaimed
  {PROG} gc                # reclaim it
  {PROG} gc --pooled       # also free the checkouts kept for reuse
  {PROG} gc --kept         # also remove the worktrees pytest --aiops-keep left
  {PROG} gc --lock-dir /tmp/my-locks --worktree-root ../worktrees

Only what dead processes left behind is touched: stale lease records and orphaned
worktrees with their git registrations. Nothing a live process holds is removed,
and worktrees kept by pytest --aiops-keep only with --kept.
"""


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--session-id", metavar="ID", help="session id (default: agent-<user>-<pid>)"
    )
    parser.add_argument(
        "--resource",
        metavar="KIND[:JSON]",
        action="append",
        default=[],
        type=_parse_resource,
        help="a resource to provision, with options as a JSON object (repeatable; default: "
        "git-worktree and port-range)",
    )
    parser.add_argument(
        "--working-state",
        action="store_true",
        help="the worktree also holds your working state: staged and unstaged changes, "
        "deletions and untracked files that are not ignored, on top of HEAD",
    )
    parser.add_argument(
        "--worktree-include",
        metavar="PATTERN",
        action="append",
        default=[],
        help="with --working-state, also copy the ignored paths matching this gitignore "
        "pattern, e.g. .env or '*.so' (repeatable; .worktreeinclude adds its lines)",
    )
    parser.add_argument(
        "--discovery-file",
        metavar="PATH",
        help="where to write the discovery JSON, relative to the working directory or "
        "absolute (default: .agent-context/resources.json)",
    )
    parser.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND...",
        help="the command to run in the session, after --",
    )


def _add_status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _add_gc_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    parser.add_argument(
        "--pooled",
        action="store_true",
        help="also remove pooled checkouts (kept for reuse by later sessions, e.g. by pytest "
        "runs); never live ones",
    )
    parser.add_argument(
        "--kept",
        action="store_true",
        help="also remove the worktrees pytest --aiops-keep left for inspection",
    )


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    """``--lock-dir`` and ``--worktree-root``, which every command takes."""
    parser.add_argument(
        "--lock-dir",
        metavar="DIR",
        help=f"port lock directory (default: {lock_directory_default()})",
    )
    parser.add_argument(
        "--worktree-root",
        metavar="DIR",
        help="directory holding the session worktrees (default: the git-worktree "
        "provider's root for the repository in the current directory)",
    )


@dataclass(frozen=True)
class _Command:
    """A subcommand: its help texts, its own options, and the function that runs it."""

    name: str
    help: str
    description: str
    epilog: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    locations: bool = True  # takes --lock-dir and --worktree-root


_COMMANDS = (
    _Command(
        "run",
        "run a command in a new session (worktree + port range)",
        "Provision a session, run COMMAND in it, release everything when it ends.",
        _RUN_EPILOG,
        _add_run_options,
        cmd_run,
    ),
    _Command(
        "status",
        "show live leases and worktrees",
        "Show the live port leases and the worktrees under a root.",
        _STATUS_EPILOG,
        _add_status_options,
        cmd_status,
    ),
    _Command(
        "gc",
        "reclaim what dead processes left behind",
        "Remove stale lease records and orphaned worktrees left by dead processes.",
        _GC_EPILOG,
        _add_gc_options,
        cmd_gc,
    ),
    _Command(
        "init-lock-dir",
        "prepare a lock directory every user shares (as root, once)",
        "Make DIR a lock directory every user of the machine can lease ports in: "
        "root's, with the modes each part needs.",
        INIT_EPILOG,
        add_init_options,
        cmd_init_lock_dir,
        locations=False,
    ),
)


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked for (importlib.metadata is
    not free to import, and every command builds this parser)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"{PROG} {_version()}")  # on stdout, as argparse's own version action
        parser.exit()


def _version() -> str:
    """The installed distribution's version, which the build reads from ``__version__``
    (one source); the package itself is not imported, the CLI sits below its public API."""
    try:
        import importlib.metadata  # only for --version: it is not free to import

        return importlib.metadata.version("pytest-aiops")
    except importlib.metadata.PackageNotFoundError:  # run from a bare checkout, not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The ``pytest-aiops`` parser with its subcommands."""
    parser = _Parser(
        prog=PROG,
        description="Isolated git worktrees and TCP port ranges for agent sessions and\n"
        "test runs: run a command in one, show what is held, reclaim what dead\n"
        "processes left.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Run '{PROG} COMMAND --help' for the options and examples of each command.",
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="{run,status,gc,init-lock-dir}")
    commands.required = True
    for command in _COMMANDS:
        subparser = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_options(subparser)
        if command.locations:
            _add_location_options(subparser)
        subparser.set_defaults(handler=command.run)
    return parser


def _parse_resource(text: str) -> ResourceRequest:
    """``KIND`` or ``KIND:{json object}`` -> a request (argparse turns errors into usage)."""
    kind, sep, raw = text.partition(":")
    kind = kind.strip()
    if not kind:
        raise argparse.ArgumentTypeError(f"resource kind missing in {text!r}")
    options: Any = {}
    if sep:
        try:
            options = json.loads(raw) if raw.strip() else {}
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"options of resource {kind!r} must be a JSON object, not {raw!r} ({error})"
            ) from error
        if not isinstance(options, dict):
            raise argparse.ArgumentTypeError(
                f"options of resource {kind!r} must be a JSON object, not {raw!r}"
            )
    return ResourceRequest(kind, options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pytest-aiops`` script and ``python -m pytest_aiops``."""
    warnings.showwarning = show_warning
    try:
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except CommandLineError as error:
        report(str(error))
        return EXIT_USAGE
    except BrokenPipeError:
        # ``status | head``: the reader left. Point stdout at /dev/null so the interpreter's
        # final flush does not complain again, and exit as a shell would (128+SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (AiopsError, OSError, ValueError) as error:
        report(one_line(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":  # pragma: no cover - ``python -m pytest_aiops`` uses __main__.py
    sys.exit(main())
