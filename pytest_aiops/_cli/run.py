"""``pytest-aiops run``: the supervisor that provisions a session, runs COMMAND in it, forwards
signals to it, makes sure it dies with the CLI, and releases everything when it ends."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import getpass
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from .._builtins import create_default_orchestrator
from .._core.discovery import DEFAULT_DISCOVERY_FILE
from .._core.orchestrator import ResourceProvisioningOrchestrator
from .._core.session import ProvisionedResources
from .._core.types import ResourceRequest
from .._core.worktrees import WorktreeAllocation
from .._errors import CommandLineError, OptionError, ReleaseError
from .._ports.provider import PortRangeProviderConfig
from .._worktrees import provider as git_worktree
from .._worktrees.provider import GitWorktreeProviderConfig
from .locations import repo_root
from .output import EXIT_CANNOT_EXECUTE, EXIT_ERROR, EXIT_NOT_FOUND, PROG, report

#: Signals ``run`` forwards to COMMAND (and that never kill the CLI before it has released).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# siginfo si_code values from <asm-generic/siginfo.h>: a signal sent by a process with kill()
# has si_code <= 0 (SI_USER 0, SI_QUEUE -1, SI_TKILL -6); one the kernel generated (a
# terminal's ^C / hangup, delivered to the whole foreground process group) has SI_KERNEL.
_SI_KERNEL = 0x80
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

#: What ``run`` blocks while it supervises and releases: the forwarded signals and SIGCHLD.
_SUPERVISED = (*FORWARDED_SIGNALS, signal.SIGCHLD)


def default_session_id() -> str:
    """``agent-<user>-<pid>``: unique on this machine while the CLI runs, readable in status."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (minimal containers)
        user = f"uid{os.getuid()}"
    return f"agent-{user}-{os.getpid()}"


def _default_resources() -> list[ResourceRequest]:
    return [ResourceRequest(git_worktree.KIND), ResourceRequest("port-range")]


def _orchestrator_for(
    lock_dir: str | None,
    worktree_root: str | None,
    *,
    working_state: bool = False,
    include: Sequence[str] = (),
) -> ResourceProvisioningOrchestrator:
    """The default orchestrator with ``--lock-dir`` / ``--worktree-root`` /
    ``--working-state`` / ``--worktree-include`` as provider defaults."""
    # No pool: a session's checkout is deleted when it ends, so nothing is left on disk
    # ('git-worktree:{"pool": true}' opts in to reuse by later sessions on the same root).
    worktree_config = GitWorktreeProviderConfig(
        root_directory=os.path.abspath(worktree_root) if worktree_root else None,
        pool=False,
        working_state=working_state,
        worktree_include=tuple(include),
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
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISED)
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
    waited = set(_SUPERVISED)
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
        raise OptionError(
            "--discovery-file",
            f"run: the discovery file {target} already exists and is not this run's; "
            "move it away or pass --discovery-file with a path that does not exist",
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
        raise OptionError(
            "--discovery-file",
            f"run: cannot write the discovery file {target}: {directory} is not a directory; "
            "pass --discovery-file with a path under a directory",
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
    allocation = session.allocation("git-worktree")
    if allocation is None:
        return working_directory
    git = WorktreeAllocation.from_json(allocation)
    if git.target_path or git.repo_root is None:
        return working_directory
    relative = os.path.relpath(os.getcwd(), git.repo_root)
    if relative == "." or relative.startswith(".."):
        return working_directory
    candidate = os.path.join(git.worktree_path, relative)
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
        report(f"command not found: {argv[0]} ({error.strerror})")
        return EXIT_NOT_FOUND
    except PermissionError as error:
        report(f"cannot execute {argv[0]}: {error.strerror}")
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
        raise CommandLineError(
            f"run: COMMAND is missing (usage: {PROG} run [options] -- COMMAND...)", "COMMAND"
        )
    session_id: str = args.session_id or default_session_id()
    resources: list[ResourceRequest] = args.resource or _default_resources()
    if not args.resource and repo_root() is None:
        raise OptionError(
            "--resource",
            f"run: {os.getcwd()} is not inside a git repository, and the default resources "
            "include a worktree of it; cd into a repository or choose resources with "
            "--resource (e.g. --resource port-range)",
        )
    orchestrator = _orchestrator_for(
        args.lock_dir,
        args.worktree_root,
        working_state=bool(getattr(args, "working_state", False)),
        include=list(getattr(args, "worktree_include", None) or ()),
    )

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
        signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISED)
        if pending.signals:
            status = 128 + pending.signals[0]
        else:
            cwd = _command_directory(session, injection.working_directory)
            status = _spawn_and_wait(argv, cwd, injection.env)
    finally:
        # Also on a failure before the block above: nothing may interrupt the release.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISED)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if discovery_file is not None:
            _remove_discovery_file(discovery_file, made_dirs)
        if session is not None:
            try:
                session.release()
            except ReleaseError as error:
                report(str(error))
                status = status or EXIT_ERROR
    return status
