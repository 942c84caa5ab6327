"""The one place that runs git: isolated from the caller's environment and hooks.

Every command runs with ``GIT_DIR``/``GIT_WORK_TREE``/``GIT_INDEX_FILE`` (and the other
repository-selecting variables) removed, so a pytest started from inside a git hook does not
redirect it, with the user's hooks disabled, and in its own process group so that ending
it also ends any child git spawned. Errors carry git's stderr.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence

from ._errors import GitError

# Variables git reads to pick a repository, index or object store; inherited from a hook
# they would point our commands at the user's repository instead of the one we name.
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_QUARANTINE_PATH",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
)

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
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
        GIT_CONFIG_NOSYSTEM=env.get("GIT_CONFIG_NOSYSTEM", "0"),
    )
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: str | None = None,
    check: bool = True,
    timeout: float | None = 600.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git -c core.hooksPath=/dev/null args...``; raise :class:`GitError` on failure."""
    command = [git_executable(), "-c", f"core.hooksPath={_NO_HOOKS}", *args]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        # Timeout, KeyboardInterrupt...: end git and everything it started, then re-raise.
        _kill_group(process)
        raise
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check and process.returncode != 0:
        shown = " ".join(["git", *args])
        raise GitError(
            f"git command failed ({process.returncode}): {shown}: {stderr.strip() or stdout.strip()}",
            command=command,
            returncode=process.returncode,
            stderr=stderr,
        )
    return result


def git_output(args: Sequence[str], *, cwd: str | None = None) -> str:
    """Stripped stdout of a successful git command."""
    return run_git(args, cwd=cwd).stdout.strip()


def _kill_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
