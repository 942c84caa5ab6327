"""The ``pytest-aiops`` command line: ``run`` a command in a session, ``status``, ``gc``.

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
import contextlib
import ctypes
import getpass
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

from .._builtins import create_default_orchestrator
from .._core.discovery import DEFAULT_DISCOVERY_FILE
from .._core.orchestrator import ResourceProvisioningOrchestrator, rollback_notes
from .._core.session import ProvisionedResources
from .._core.trust import escape
from .._core.types import ResourceRequest
from .._errors import AiopsError, NoSpaceError, UnsafeDirectoryError
from .._ports.provider import PortRangeProviderConfig, default_lock_directory
from .._ports.records import LeaseRecord, read_records, reap_stale
from .._worktrees import provider as git_worktree
from .._worktrees.git import git_output
from .._worktrees.provider import (
    GitWorktreeProviderConfig,
    WorktreeRecord,
    default_worktree_root,
    list_worktrees,
    reclaim_orphans,
)

PROG = "pytest-aiops"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

#: Signals ``run`` forwards to COMMAND (and that never kill the CLI before it has released).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# siginfo si_code values from <asm-generic/siginfo.h>: a signal sent by a process with kill()
# has si_code <= 0 (SI_USER 0, SI_QUEUE -1, SI_TKILL -6); one the kernel generated (a
# terminal's ^C / hangup, delivered to the whole foreground process group) has SI_KERNEL.
_SI_KERNEL = 0x80
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class UsageError(AiopsError, ValueError):
    """The command line itself is wrong (exit status 2)."""


# --------------------------------------------------------------------------- parsing


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one ``pytest-aiops: error: ...`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


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


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-dir",
        metavar="DIR",
        help="port lock directory (default: $PYTEST_AIOPS_LOCK_DIR or "
        "/tmp/pytest-aiops/locks, shared by every process on the machine)",
    )
    parser.add_argument(
        "--worktree-root",
        metavar="DIR",
        help="directory holding the session worktrees (default: the git-worktree "
        "provider's root for the repository in the current directory)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``pytest-aiops`` parser with its three subcommands."""
    parser = _Parser(
        prog=PROG,
        description="Isolated git worktrees and TCP port ranges for agent sessions and\n"
        "test runs: run a command in one, show what is held, reclaim what dead\n"
        "processes left.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Run '{PROG} COMMAND --help' for the options and examples of each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,status,gc}")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run a command in a new session (worktree + port range)",
        description="Provision a session, run COMMAND in it, release everything when it ends.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--session-id", metavar="ID", help="session id (default: agent-<user>-<pid>)")
    run.add_argument(
        "--resource",
        metavar="KIND[:JSON]",
        action="append",
        default=[],
        type=_parse_resource,
        help="a resource to provision, with options as a JSON object (repeatable; default: "
        "git-worktree and port-range)",
    )
    run.add_argument(
        "--discovery-file",
        metavar="PATH",
        help="where to write the discovery JSON, relative to the working directory or "
        "absolute (default: .agent-context/resources.json)",
    )
    _add_location_options(run)
    run.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND...",
        help="the command to run in the session, after --",
    )

    status = commands.add_parser(
        "status",
        help="show live leases and worktrees",
        description="Show the live port leases and the worktrees under a root.",
        epilog=_STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _add_location_options(status)

    gc = commands.add_parser(
        "gc",
        help="reclaim what dead processes left behind",
        description="Remove stale lease records and orphaned worktrees left by dead processes.",
        epilog=_GC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument(
        "--pooled",
        action="store_true",
        help="also remove pooled checkouts (kept for reuse by later sessions, e.g. by pytest "
        "runs); never live ones",
    )
    gc.add_argument(
        "--kept",
        action="store_true",
        help="also remove the worktrees pytest --aiops-keep left for inspection",
    )
    _add_location_options(gc)
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


# --------------------------------------------------------------------------- locations


def _lock_directory(option: str | None) -> str:
    """The lock directory to read; a path that exists but is no directory is an error
    (a missing one just means no run has leased anything there yet)."""
    path = os.path.abspath(os.path.expanduser(option)) if option else default_lock_directory()
    if os.path.lexists(path) and not os.path.isdir(path):
        raise AiopsError(
            f"--lock-dir must be a directory, not {path!r} (it is a file); pass the lock "
            "directory the runs use (default: /tmp/pytest-aiops/locks)"
        )
    return path


def _repo_root() -> str | None:
    """The top of the git repository around the current directory, or ``None``."""
    try:
        return git_output(["-C", os.getcwd(), "rev-parse", "--show-toplevel"])
    except AiopsError:
        return None


def _worktree_root(option: str | None) -> str | None:
    """``--worktree-root``, else the provider's root for the repository around the cwd.

    ``None`` outside a git repository (then there are no worktrees to show or reclaim).
    """
    if option:
        return os.path.abspath(os.path.expanduser(option))
    repo_root = _main_repo_root()
    if repo_root is None:
        return None
    return default_worktree_root(repo_root)


def _main_repo_root() -> str | None:
    """Like :func:`_repo_root`, but from inside a linked worktree (an agent's session) the
    repository it belongs to, whose root holds the worktrees ``status``/``gc`` are about."""
    repo_root = _repo_root()
    if repo_root is None:
        return None
    try:
        common = git_output(["-C", os.getcwd(), "rev-parse", "--git-common-dir"])
    except AiopsError:
        return repo_root
    common = os.path.normpath(os.path.join(os.getcwd(), common))
    if os.path.basename(common) == ".git" and os.path.dirname(common) != repo_root:
        return os.path.dirname(common)
    return repo_root


def default_session_id() -> str:
    """``agent-<user>-<pid>``: unique on this machine while the CLI runs, readable in status."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (minimal containers)
        user = f"uid{os.getuid()}"
    return f"agent-{user}-{os.getpid()}"


# --------------------------------------------------------------------------- run


def _default_resources() -> list[ResourceRequest]:
    return [ResourceRequest(git_worktree.KIND), ResourceRequest("port-range")]


def _orchestrator_for(
    lock_dir: str | None, worktree_root: str | None
) -> ResourceProvisioningOrchestrator:
    """The default orchestrator with ``--lock-dir`` / ``--worktree-root`` as provider defaults."""
    # No pool: a session's checkout is deleted when it ends, so nothing is left on disk
    # ('git-worktree:{"pool": true}' opts in to reuse by later sessions on the same root).
    worktree_config = GitWorktreeProviderConfig(
        root_directory=os.path.abspath(worktree_root) if worktree_root else None, pool=False
    )
    port_config = (
        PortRangeProviderConfig(lock_directory=os.path.abspath(lock_dir)) if lock_dir else None
    )
    return create_default_orchestrator(git_worktree=worktree_config, port_range=port_config)


@dataclass
class _Pending:
    """Signals that arrived while provisioning (before they were blocked for sigwaitinfo)."""

    signals: list[int]

    def record(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)


def _child_setup_for(libc: ctypes.CDLL | None) -> Callable[[], None]:
    """What the forked child runs before exec: undo the CLI's signal mask, die with the CLI.

    The mask is inherited across fork and exec, so without this COMMAND would start with
    SIGINT/SIGTERM/SIGHUP blocked. PR_SET_PDEATHSIG makes the kernel send COMMAND SIGTERM if
    the CLI dies without forwarding anything (SIGKILL): its leases end at that moment, and
    the worktree it works in becomes an orphan for gc. ``libc`` is loaded in the parent:
    nothing that may lock or spawn belongs between fork and exec.
    """
    parent = os.getpid()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (*FORWARDED_SIGNALS, signal.SIGCHLD))
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the CLI died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return setup


def _load_libc() -> ctypes.CDLL | None:
    """libc for ``prctl`` on Linux; ``None`` elsewhere (then a watchdog supervises)."""
    if not sys.platform.startswith("linux"):
        return None  # PR_SET_PDEATHSIG is Linux-only
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a libc without dlopen(NULL)
        return None


def _exit_status(returncode: int) -> int:
    """Popen's ``-N`` (killed by signal N) as the shell's ``128+N``."""
    return 128 - returncode if returncode < 0 else returncode


def _siginfo() -> bool:
    """Whether the sender of a signal can be told (Linux ``sigwaitinfo`` and ``si_code``);
    macOS has no ``sigwaitinfo``, and the BSDs' ``si_code`` values differ."""
    return sys.platform.startswith("linux") and hasattr(signal, "sigwaitinfo")


def _terminal_sent(signum: int) -> bool:
    """Without siginfo: whether a SIGINT/SIGHUP most likely came from our terminal (the CLI
    is its foreground process group, so COMMAND got it too). SIGTERM never does."""
    if signum == signal.SIGTERM:
        return False
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False  # no controlling terminal: some process sent it
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _supervise(child: subprocess.Popen[bytes]) -> int:
    """Wait for COMMAND, forwarding signals to it; return its exit status.

    Runs with the forwarded signals and SIGCHLD blocked, taking them one by one with
    ``sigwaitinfo`` (``sigwait`` off Linux): no handler can interrupt the wait or the
    release that follows. A signal some process sent to the CLI (``kill``) is forwarded;
    one the terminal generated (``^C``) already reached COMMAND too, since it shares our
    process group, so forwarding it would deliver it twice. Linux tells the two apart by
    ``si_code``; elsewhere a SIGINT/SIGHUP counts as the terminal's while the CLI is the
    terminal's foreground group.
    """
    waited = {*FORWARDED_SIGNALS, signal.SIGCHLD}
    siginfo = _siginfo()
    while True:
        returncode = child.poll()
        if returncode is not None:
            return _exit_status(returncode)
        if siginfo:
            info = signal.sigwaitinfo(waited)
            signum, from_terminal = info.si_signo, info.si_code == _SI_KERNEL
        else:
            signum = signal.sigwait(waited)
            from_terminal = _terminal_sent(signum)
        if signum == signal.SIGCHLD or from_terminal:
            continue
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile: poll() reaps it
            child.send_signal(signum)


#: Off Linux (no PR_SET_PDEATHSIG): a watchdog process reads a pipe whose only writer is the
#: CLI. A byte means "COMMAND has ended, the CLI releases"; end of file without it means the
#: CLI died (SIGKILL), so COMMAND gets SIGTERM -- if its pid is still in the CLI's process
#: group (a reused pid would almost surely be in another).
_WATCHDOG = """
import os, signal, sys
pid, group = int(sys.argv[1]), int(sys.argv[2])
if not os.read(0, 1):
    try:
        if os.getpgid(pid) == group:
            os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
"""


def _start_watchdog(command_pid: int) -> tuple[int, subprocess.Popen[bytes]] | None:
    """Start the watchdog of ``command_pid``; the pipe's write end (ours alone) and it."""
    read, write = os.pipe()  # not inheritable: COMMAND never holds the write end
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(command_pid), str(os.getpgrp())],
            stdin=read,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's ^C or hangup does not end it
        )
    except OSError:
        os.close(write)
        return None
    finally:
        os.close(read)
    return write, watchdog


def _stop_watchdog(started: tuple[int, subprocess.Popen[bytes]] | None) -> None:
    if started is None:
        return
    write, watchdog = started
    with contextlib.suppress(OSError):
        os.write(write, b"x")
    os.close(write)
    watchdog.wait()


def _claim_discovery_path(working_directory: str, requested: str | None) -> tuple[str, list[str]]:
    """Where the discovery file goes, refusing a path that already exists (it is not ours).

    Also returns the directories this run will have to create for it (deepest last), so
    that cleanup removes exactly those and never a directory the user had.
    """
    relative = (requested or "").strip() or DEFAULT_DISCOVERY_FILE
    target = os.path.normpath(os.path.join(working_directory, os.path.expanduser(relative)))
    if os.path.lexists(target):
        raise AiopsError(
            f"run: the discovery file {target} already exists and is not this run's; "
            "move it away or pass --discovery-file with a path that does not exist"
        )
    missing: list[str] = []
    directory = os.path.dirname(target)
    while directory and not os.path.lexists(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    if directory and not os.path.isdir(directory):
        raise AiopsError(
            f"run: cannot write the discovery file {target}: {directory} is not a directory; "
            "pass --discovery-file with a path under a directory"
        )
    return target, missing[::-1]


def _remove_discovery_file(path: str, made_dirs: Sequence[str]) -> None:
    """Remove the discovery file we wrote, and the directories we created for it if empty."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    for directory in reversed(made_dirs):
        with contextlib.suppress(OSError):  # not empty: the other files are not ours
            os.rmdir(directory)


def _command_directory(session: ProvisionedResources, working_directory: str) -> str:
    """COMMAND's directory: started from a repository subdirectory, the same one in the
    worktree (when the session has a worktree, no ``targetPath``, and it exists there)."""
    git = session.allocation("git-worktree")
    if git is None or git.get("targetPath"):
        return working_directory
    relative = os.path.relpath(os.getcwd(), str(git.get("repoRoot", "")))
    if relative == "." or relative.startswith(".."):
        return working_directory
    candidate = os.path.join(str(git["worktreePath"]), relative)
    return candidate if os.path.isdir(candidate) else working_directory


def _spawn_and_wait(argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> int:
    """Start COMMAND (signals already blocked) and supervise it; shell-like 126/127."""
    try:
        # preexec_fn is safe here: the CLI never starts a thread.
        libc = _load_libc()
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            preexec_fn=_child_setup_for(libc),  # noqa: PLW1509
        )
    except FileNotFoundError as error:
        _report(f"command not found: {argv[0]} ({error.strerror})")
        return EXIT_NOT_FOUND
    except PermissionError as error:
        _report(f"cannot execute {argv[0]}: {error.strerror}")
        return EXIT_CANNOT_EXECUTE
    # Linux: PR_SET_PDEATHSIG (set in the child) ends COMMAND if we die; elsewhere a watchdog.
    watchdog = None if libc is not None else _start_watchdog(child.pid)
    try:
        return _supervise(child)
    finally:
        _stop_watchdog(watchdog)


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: provision, write the discovery file, run COMMAND, forward signals, release.

    Returns COMMAND's status; if releasing fails that is reported and the status is
    COMMAND's when it failed, else 1.
    """
    argv: list[str] = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError(f"run: COMMAND is missing (usage: {PROG} run [options] -- COMMAND...)")
    session_id: str = args.session_id or default_session_id()
    resources: list[ResourceRequest] = args.resource or _default_resources()
    if not args.resource and _repo_root() is None:
        raise AiopsError(
            f"run: {os.getcwd()} is not inside a git repository, and the default resources "
            "include a worktree of it; cd into a repository or choose resources with "
            "--resource (e.g. --resource port-range)"
        )
    orchestrator = _orchestrator_for(args.lock_dir, args.worktree_root)

    # Until the signals are blocked, a SIGTERM or ^C must not kill us halfway through
    # provisioning (the worktree would be left): record it, act on it once we can release.
    pending = _Pending([])
    previous = {sig: signal.signal(sig, pending.record) for sig in FORWARDED_SIGNALS}
    session: ProvisionedResources | None = None
    discovery_file: str | None = None
    made_dirs: list[str] = []
    status = EXIT_ERROR
    try:
        session = orchestrator.provision_session(
            session_id=session_id, resources=resources, workspace_root=os.getcwd()
        )
        target, made_dirs = _claim_discovery_path(session.working_directory, args.discovery_file)
        injection = session.build_runtime_injection(target)
        discovery_file = injection.discovery_file_path
        # From here to exit the signals are taken by sigwaitinfo only; pending ones stay
        # queued, so nothing can interrupt the release below.
        signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED_SIGNALS, signal.SIGCHLD))
        if pending.signals:
            status = 128 + pending.signals[0]
        else:
            cwd = _command_directory(session, injection.working_directory)
            status = _spawn_and_wait(argv, cwd, injection.env)
    finally:
        # Also on a failure before the block above: nothing may interrupt the release.
        signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED_SIGNALS, signal.SIGCHLD))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if discovery_file is not None:
            _remove_discovery_file(discovery_file, made_dirs)
        if session is not None:
            try:
                session.release()
            except AiopsError as error:
                _report(str(error))
                status = status or EXIT_ERROR
    return status


# --------------------------------------------------------------------------- status


def format_age(seconds: float) -> str:
    """A short human age: ``42s``, ``5m07s``, ``3h02m``, ``2d04h``."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return [
        "  ".join(
            cell if i == len(row) - 1 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in table
    ]


def lease_is_live(record: LeaseRecord) -> bool:
    """Whether the lease still exists: the kernel's answer (its lease id's lock), else its pid."""
    return record.holder_alive()


def _lease_json(record: LeaseRecord, now: float) -> dict[str, Any]:
    return {**record.to_dict(), "ageSeconds": round(now - record.created_at, 3)}


def _worktree_json(record: WorktreeRecord, now: float) -> dict[str, Any]:
    return {**record.to_dict(), "ageSeconds": round(now - record.created_at, 3)}


def collect_status(lock_dir: str, worktree_root: str | None) -> dict[str, Any]:
    """Everything ``status`` shows, as the JSON document ``status --json`` prints."""
    now = time.time()
    live: list[dict[str, Any]] = []
    stale: list[dict[str, Any]] = []
    for record in read_records(lock_dir):
        (live if lease_is_live(record) else stale).append(_lease_json(record, now))
    worktrees = (
        [
            _worktree_json(w, now)
            for w in sorted(list_worktrees(worktree_root), key=lambda w: (w.created_at, w.path))
        ]
        if worktree_root
        else []
    )
    return {
        "lockDirectory": lock_dir,
        "leases": live,
        "staleLeases": stale,
        "worktreeRoot": worktree_root,
        "worktrees": worktrees,
    }


def render_status(status: Mapping[str, Any]) -> str:
    """The human-readable tables of :func:`collect_status`'s document."""
    lines = [f"Port leases in {status['lockDirectory']}:"]
    leases = status["leases"]
    if leases:
        rows = [
            (
                f"{lease['startPort']}-{lease['endPort']}",
                escape(lease["sessionId"]),
                str(lease["pid"]),
                escape(lease["host"]),
                format_age(lease["ageSeconds"]),
                escape(lease["role"]),
            )
            for lease in leases
        ]
        table = format_table(("PORTS", "SESSION", "PID", "HOST", "AGE", "ROLE"), rows)
        lines.extend(f"  {line}" for line in table)
    else:
        lines.append("  (no live leases)")
    stale = status["staleLeases"]
    if stale:
        lines.append(
            f"  + {len(stale)} stale lease record(s) left by dead processes; "
            f"'{PROG} gc' removes them"
        )
    lines.append("")
    root = status["worktreeRoot"]
    if root is None:
        lines.append("Worktrees: not in a git repository; pass --worktree-root to show them")
        return "\n".join(lines) + "\n"
    lines.append(f"Worktrees in {root}:")
    worktrees = status["worktrees"]
    if worktrees:
        rows = [
            (
                w["state"],
                escape(w["sessionId"] or "-"),
                str(w["pid"]) if w["pid"] else "-",
                escape(w["host"] or "-"),
                format_age(w["ageSeconds"]),
                escape(w["path"]),
            )
            for w in worktrees
        ]
        table = format_table(("STATE", "SESSION", "PID", "HOST", "AGE", "PATH"), rows)
        lines.extend(f"  {line}" for line in table)
    else:
        lines.append("  (no worktrees)")
    orphaned = sum(1 for w in worktrees if w["state"] == "orphaned")
    if orphaned:
        lines.append(f"  + {orphaned} orphaned; '{PROG} gc' reclaims them")
    pooled = sum(1 for w in worktrees if w["state"] == "pooled")
    if pooled:
        lines.append(f"  + {pooled} pooled for reuse; '{PROG} gc --pooled' frees them")
    kept = sum(1 for w in worktrees if w["state"] == "kept")
    if kept:
        lines.append(
            f"  + {kept} kept by --aiops-keep; 'git worktree remove --force PATH' or "
            f"'{PROG} gc --kept' removes them"
        )
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: live leases and worktrees, as tables or ``--json``."""
    status = collect_status(_lock_directory(args.lock_dir), _worktree_root(args.worktree_root))
    if args.json:
        sys.stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_status(status))
    return EXIT_OK


# --------------------------------------------------------------------------- gc


def cmd_gc(args: argparse.Namespace) -> int:
    """``gc``: remove stale lease records and orphaned worktrees; say what (would be) removed."""
    lock_dir = _lock_directory(args.lock_dir)
    root = _worktree_root(args.worktree_root)
    verb = "would remove" if args.dry_run else "removed"
    removed = 0
    for record in reap_stale(lock_dir, dry_run=args.dry_run):
        removed += 1
        print(
            f"{verb} stale lease {record.start_port}-{record.end_port} (session "
            f"{escape(record.session_id)}, pid {record.pid} on {escape(record.host)}): "
            f"{escape(record.path)}"
        )
    if root is not None:
        found = reclaim_orphans(
            root, dry_run=args.dry_run, include_pooled=args.pooled, include_kept=args.kept
        )
        for worktree in found:
            removed += 1
            owner = (
                f"session {escape(worktree.session_id)}, pid {worktree.pid} on "
                f"{escape(worktree.host)}"
            )
            print(f"{verb} {worktree.state} worktree {escape(worktree.path)} ({owner})")
    if not removed:
        where = lock_dir if root is None else f"{lock_dir} and {root}"
        print(f"nothing to reclaim in {where}")
    return EXIT_OK


# --------------------------------------------------------------------------- main

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "status": cmd_status,
    "gc": cmd_gc,
}


def _one_line(error: BaseException) -> str:
    """An error as one line; a worktree root refused for safety names ``--worktree-root``.

    The orchestrator's notes on rollbacks that failed too are kept (what was left behind).
    """
    line = " ".join(str(error).split("\n")[:1]) or type(error).__name__
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, (UnsafeDirectoryError, NoSpaceError)):
            line = cause.for_setting("--worktree-root")
            break
        cause = cause.__cause__
    return line + "".join(f"; {note}" for note in rollback_notes(error))


def _report(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {escape(message)}\n")
    sys.stderr.flush()


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A warning in the CLI is one ``pytest-aiops: warning: ...`` line, no source line."""
    sys.stderr.write(f"{PROG}: warning: {escape(' '.join(str(message).split()))}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pytest-aiops`` script and ``python -m pytest_aiops``."""
    warnings.showwarning = _show_warning
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except UsageError as error:
        _report(str(error))
        return EXIT_USAGE
    except BrokenPipeError:
        # ``status | head``: the reader left. Point stdout at /dev/null so the interpreter's
        # final flush does not complain again, and exit as a shell would (128+SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (AiopsError, OSError, ValueError) as error:
        _report(_one_line(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":  # pragma: no cover - ``python -m pytest_aiops`` uses __main__.py
    sys.exit(main())
