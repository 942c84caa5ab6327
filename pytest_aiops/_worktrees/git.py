"""The one place that runs git: isolated from the caller's environment and hooks.

Every command runs with ``GIT_DIR``/``GIT_WORK_TREE``/``GIT_INDEX_FILE`` (and the other
repository-selecting variables) removed, so a pytest started from inside a git hook does not
redirect it, with the user's hooks disabled, and in its own process group so that ending
it also ends any child git spawned. Errors carry git's stderr.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from .._errors import GitError

#: What ``git rev-parse --local-env-vars`` prints (git 2.39; a test checks it against the
#: git installed): the variables git itself clears before it runs git in another repository
#: (a submodule), because each binds git to one repository, index, object store or config.
LOCAL_ENV_VARS = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
)

#: The repository-binding variables: :data:`LOCAL_ENV_VARS` and the global ones a hook or a
#: server sets that also pick a repository (its ref namespace, a push's quarantine) or where
#: git looks for one. Inherited from a git hook (pre-commit exports ``GIT_INDEX_FILE``,
#: pre-receive ``GIT_OBJECT_DIRECTORY``...) they point git at the user's repository instead
#: of the one its working directory names. The plugin's own git, ``GitWorktree.env()`` and
#: the test process while a worktree fixture is out all drop exactly these
#: (:func:`without_repo_env`).
REPO_ENV = (
    *LOCAL_ENV_VARS,
    "GIT_NAMESPACE",
    "GIT_QUARANTINE_PATH",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
)


def without_repo_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` without the repository-binding variables (:data:`REPO_ENV`)."""
    return {key: value for key, value in env.items() if key not in REPO_ENV}


# Hooks are looked up as <hooksPath>/<name>; under a non-directory no hook can exist.
_NO_HOOKS = os.devnull


def git_executable() -> str:
    """Path of ``git``, or a :class:`GitError` telling the user to install it."""
    found = shutil.which("git")
    if found is None:
        raise GitError(
            "git executable not found on PATH; install git or add it to PATH",
            command=["git"],
            returncode=None,
            stderr="",
        )
    return found


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without repository-selecting variables, non-interactive, C locale."""
    env = without_repo_env(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
        GIT_CONFIG_NOSYSTEM=env.get("GIT_CONFIG_NOSYSTEM", "0"),
    )
    if extra:
        env.update(extra)
    return env


# Messages of git failures caused by another git process working on the same repository at
# the same moment (its index.lock, a ref lock, the .git/worktrees directory being created):
# they go away when retried, so they are retried rather than reported.
_TRANSIENT = (
    "index.lock",
    ".lock': File exists",
    "Another git process seems to be running",
    "cannot lock ref",
    "could not lock",
    "unable to create directory",
    "could not create directory",
    "could not create leading directories",
    "could not create work tree dir",
)


def summarize(output: str, *, keep: int = 3) -> str:
    """git's stderr for a one-line message: a checkout that fails on every file prints one
    line per file (thousands); keep the first ``keep`` lines and the last, count the rest."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if len(lines) <= keep + 1:
        return "\n".join(lines)
    skipped = len(lines) - keep - 1
    return "\n".join([*lines[:keep], f"... ({skipped} more lines)", lines[-1]])


_DUBIOUS = re.compile(r"dubious ownership in repository at '([^']*)'")


def dubious_ownership(stderr: str) -> str | None:
    """One line for git's refusal of a repository another user owns, ``None`` otherwise.

    git (2.35.2+) refuses to work in a repository whose directory is owned by another user
    than the one running it (CVE-2022-24765: a planted ``.git`` could run its hooks or
    config). Its message is five lines; this says the same, and what to do, in one.
    """
    match = _DUBIOUS.search(stderr)
    if match is None:
        return None
    path = match.group(1)
    return (
        f"git refuses to work in {path}: another user owns it (git's 'dubious ownership' "
        "check, which keeps a repository someone else planted from running its hooks and "
        f"config); if you trust it, run: git config --global --add safe.directory {path}"
    )


def git_failure(args: Sequence[str], result: subprocess.CompletedProcess[str]) -> GitError:
    """The error for a git command that exited non-zero: ``git command failed (<code>):
    git <args>: <git's message>`` (stderr, else stdout, see :func:`summarize`); git's
    "dubious ownership" refusal as one line saying what to do (:func:`dubious_ownership`)."""
    shown = " ".join(["git", *args])
    detail = summarize(result.stderr) or summarize(result.stdout)
    dubious = dubious_ownership(result.stderr)
    if dubious is not None:
        detail = dubious
    return GitError(
        f"git command failed ({result.returncode}): {shown}: {detail}",
        command=list(result.args),
        returncode=result.returncode,
        stderr=result.stderr,
    )


def split_nul(output: str) -> list[str]:
    """The items of git's (or find's) ``-z`` / ``-print0`` output."""
    return [item for item in output.split("\0") if item]


def is_transient(stderr: str) -> bool:
    """Whether git failed only because a concurrent git process held a lock we needed.

    Also: `git worktree add` reads every registration in ``.git/worktrees``; one another
    `worktree add` has just created but not yet filled makes it die with "failed to read
    .git/worktrees/<id>/commondir: Success" (git 2.39).
    """
    if "failed to read" in stderr and "worktrees/" in stderr:
        return True
    return any(marker in stderr for marker in _TRANSIENT)


def _start(
    args: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    on_start: Callable[[int], None] | None = None,
) -> _Running:
    command = [git_executable(), "-c", f"core.hooksPath={_NO_HOOKS}", *args]
    # start_new_session: git and whatever it spawns (checkout workers, `git reset` run by
    # `worktree add`) form their own process group, so _kill_group ends all of them and no
    # orphaned child keeps writing into a directory we are about to delete.
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Paths git prints are bytes; a non-UTF-8 one round-trips as os.fsdecode gives it.
        encoding="utf-8",
        errors="surrogateescape",
        start_new_session=True,
    )
    if on_start is not None:
        try:
            on_start(process.pid)
        except BaseException:
            _kill_group(process)
            raise
    return _Running(list(args), command, process)


class _Running:
    def __init__(self, args: list[str], command: list[str], process: subprocess.Popen[str]) -> None:
        self.args = args
        self.command = command
        self.process = process

    def finish(self, *, check: bool, timeout: float | None) -> subprocess.CompletedProcess[str]:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except BaseException:
            # Timeout, KeyboardInterrupt...: end git and everything it started, then re-raise.
            _kill_group(self.process)
            raise
        result = subprocess.CompletedProcess(self.command, self.process.returncode, stdout, stderr)
        if check and self.process.returncode != 0:
            raise git_failure(self.args, result)
        return result


def run_git(
    args: Sequence[str],
    *,
    cwd: str | None = None,
    check: bool = True,
    timeout: float | None = 600.0,
    env: Mapping[str, str] | None = None,
    retries: int = 0,
    on_start: Callable[[int], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git -c core.hooksPath=/dev/null args...``; raise :class:`GitError` on failure.

    With ``retries``, a failure that :func:`is_transient` recognises (a lock held by a
    concurrent git) is retried up to that many times after a short, jittered back-off. Only
    pass it for commands that are safe to repeat after such a failure. ``on_start`` gets
    git's pid (= its session id) as soon as it runs, for recording; see :func:`end_session`.
    """
    attempt = 0
    while True:
        result = _start(args, cwd, env, on_start).finish(check=False, timeout=timeout)
        if result.returncode == 0 or attempt >= retries or not is_transient(result.stderr):
            break
        attempt += 1
        time.sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + random.random()))
    if check and result.returncode != 0:
        raise git_failure(args, result)
    return result


def run_git_parallel(
    commands: Sequence[Sequence[str]], *, cwd: str | None = None, timeout: float | None = 600.0
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent read-only git commands at the same time; all must succeed."""
    running: list[_Running] = []
    try:
        for args in commands:
            running.append(_start(args, cwd, None))
    except BaseException:
        for item in running:
            _kill_group(item.process)
        raise
    results: list[subprocess.CompletedProcess[str]] = []
    failure: BaseException | None = None
    for item in running:
        try:
            results.append(item.finish(check=True, timeout=timeout))
        except BaseException as error:  # keep reaping the others before raising
            failure = failure or error
    if failure is not None:
        raise failure
    return results


def _kill_group(process: subprocess.Popen[str]) -> None:
    # ProcessLookupError: the group is already gone; PermissionError: a member changed
    # credentials (setuid helper) -- nothing more we may do.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


# --- git sessions that outlived us ---------------------------------------------------------
#
# If *our* process is SIGKILLed while git runs, git and what it spawned (`worktree add` runs
# a checkout; a killed git can leave such a child writing) keep going in their own session.
# The record of the checkout stores (pid, start time) of that git; whoever reclaims the
# checkout ends the session first, so it never deletes files git is still writing.


def _proc() -> bool:
    """Whether process facts come from Linux ``/proc``; elsewhere from ``ps`` (POSIX)."""
    return sys.platform.startswith("linux")


#: Off Linux start times are wall-clock hundredths of a second (``ps`` has whole seconds).
_PS_TICKS = 100


def _ticks() -> int:
    """Clock ticks per second of :func:`boot_ticks` and :func:`process_start_time`."""
    return os.sysconf("SC_CLK_TCK") if _proc() else _PS_TICKS


def _slack() -> int:
    """How far a recorded start may be from the process's: one tick-second on Linux, two
    seconds from ``ps`` (it truncates to the second)."""
    return _ticks() if _proc() else 2 * _PS_TICKS


def _ps(args: Sequence[str]) -> str | None:
    try:
        result = subprocess.run(
            ["ps", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _ps_start_time(pid: int) -> int | None:
    """Start of ``pid`` from ``ps -o lstart=`` (macOS, the BSDs), in ``_PS_TICKS``."""
    out = _ps(["-o", "lstart=", "-p", str(pid)])
    if not out or not out.strip():
        return None
    try:
        started = time.mktime(time.strptime(" ".join(out.split()), "%a %b %d %H:%M:%S %Y"))
    except ValueError:
        return None
    return int(started * _PS_TICKS)


def _ps_group_members(group: int) -> list[int]:
    """Pids of live (not zombie) processes of this user in process group ``group``."""
    out = _ps(["-A", "-o", "pid=,pgid=,uid=,stat="]) or ""
    members = []
    for line in out.splitlines():
        fields = line.split()
        if (
            len(fields) == 4
            and fields[1:3] == [str(group), str(os.geteuid())]
            and not fields[3].startswith("Z")
        ):
            members.append(int(fields[0]))
    return members


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/<pid>/stat (``None`` if no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after its last ")".
    return raw[raw.rindex(b")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in :func:`boot_ticks`'s unit; ``None`` if no such process.

    Linux: field 22 of /proc/<pid>/stat (clock ticks since boot); elsewhere ``ps``.
    """
    if not _proc():
        return _ps_start_time(pid)
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def _session_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return None  # a zombie writes nothing; its reaper may be slow (PID 1 in containers)
    return int(fields[3])


def session_members(session: int) -> list[int]:
    """Pids of live processes whose session id is ``session`` (Linux /proc)."""
    members = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit() and _session_of(int(name)) == session:
            members.append(int(name))
    return members


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def boot_ticks() -> int:
    """Now, in the unit and origin of :func:`process_start_time` (Linux: clock ticks since
    boot; elsewhere hundredths of a second since the epoch).

    Taken right after starting git it matches git's start time to within a tick or two,
    without reading /proc while git is still exec'ing (which can block for milliseconds).
    """
    if not _proc():
        return int(time.time() * _PS_TICKS)
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def end_session(pid: int, start_time: int | None, *, wait: float = 10.0) -> None:
    """SIGKILL every process of the session git ``pid`` led, if it is still that session.

    While any member lives, the kernel keeps the number ``pid`` reserved for the session, so
    it cannot name someone else's session; if ``pid`` itself runs but started at another
    time (``start_time`` from :func:`boot_ticks`, one second of slack), it is a new process
    (the session ended and the number was reused): leave it alone. Without a recorded
    start time nothing is signalled, and never a process of another user.
    """
    if start_time is None:
        return  # nothing proves the session is the git we started: signal nobody
    leader_start = process_start_time(pid)
    if leader_start is not None and abs(leader_start - start_time) > _slack():
        return
    uid = os.geteuid()
    deadline = time.monotonic() + wait
    while not _proc():
        # No /proc: git is the leader of its own process group (start_new_session) and a
        # process can only join a group of its own session, so the group's live members
        # are what that git left; ps lists them (zombies excluded), killpg ends them.
        if not _ps_group_members(pid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    while True:
        # Only processes of ours that started no earlier than that git: a process of
        # another user, or one older than the recorded git, is not what it left running.
        members = [
            member
            for member in session_members(pid)
            if _uid_of(member) == uid
            and (process_start_time(member) or 0) + os.sysconf("SC_CLK_TCK") >= start_time
        ]
        if not members:
            return
        for member in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
