"""Helpers for the runs that get signals or die mid-test: a real ``pytest`` subprocess in a real
repository, what it leaves behind, and whether a process is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from .git_helpers import git
from .process_helpers import child_env
from .wait_helpers import wait_for

#: Plugins that are not ours and only slow the inner runs down (or warn under xdist).
QUIET = (
    "-p",
    "no:cacheprovider",
    "-p",
    "no:asyncio",
    "-p",
    "no:aiohttp",
    "-p",
    "no:benchmark",
    "-p",
    "no:randomly",
)
#: Ports no other test of the suite uses (and not the plugin's default range).
PORT_RANGE = "28400-28527"


@dataclass
class InnerRun:
    """A ``pytest`` started in a repository, its output going to files."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def output(self) -> tuple[str, str]:
        return (
            self.stdout_path.read_text(errors="replace"),
            self.stderr_path.read_text(errors="replace"),
        )

    def wait(self) -> int:
        """Wait for the run to end (a hang guard of five minutes, never a timing check)."""
        try:
            return self.process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            kill_run(self)
            out, err = self.output()
            pytest.fail(f"the inner run did not end:\n{out[-3000:]}\n{err[-2000:]}")


def inner_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This checkout's plugin, a private lock directory and worktree root, no xdist leftovers."""
    env = {
        k: v
        for k, v in child_env().items()
        if not k.startswith(("PYTEST_AIOPS_", "PYTEST_XDIST_", "GIT_"))
        and k not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")
    }
    locks = tmp_path / "locks"
    locks.mkdir(exist_ok=True)
    env.update(
        PYTEST_AIOPS_LOCK_DIR=str(locks),
        PYTEST_AIOPS_WORKTREE_ROOT=str(tmp_path / "wt"),
        PYTEST_AIOPS_PORT_RANGE=PORT_RANGE,
        SIGNAL_DIR=str(tmp_path / "signals"),
    )
    (tmp_path / "signals").mkdir(exist_ok=True)
    env.update(extra)
    return env


def start_pytest(
    repo: Path, args: Sequence[str], env: Mapping[str, str], *, own_group: bool = False
) -> InnerRun:
    """``python -m pytest args`` in ``repo`` (its own process group with ``own_group``)."""
    out, err = repo.parent / f"{repo.name}.stdout", repo.parent / f"{repo.name}.stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", *QUIET, *args],
            cwd=repo,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=own_group,
        )
    return InnerRun(process, out, err)


def kill_run(run: InnerRun) -> None:
    """SIGKILL what is left of a run (its group, if it has one of its own)."""
    if run.process.poll() is None:
        try:
            os.killpg(run.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            run.process.kill()
    run.process.wait()


def ready_files(directory: Path, prefix: str = "ready-") -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(prefix))


def wait_ready(run: InnerRun, directory: Path, count: int, prefix: str = "ready-") -> list[Path]:
    """Wait until ``count`` inner tests said they are running (or the run died: fail)."""

    def ready() -> bool:
        if run.process.poll() is not None:
            out, err = run.output()
            pytest.fail(f"the inner run ended early:\n{out[-3000:]}\n{err[-2000:]}")
        return len(ready_files(directory, prefix)) >= count

    wait_for(ready, f"{count} inner test(s) to start", timeout=180)
    return ready_files(directory, prefix)


def worktree_list(repo: Path) -> list[str]:
    """The paths ``git worktree list`` shows for ``repo`` (the user's checkout first)."""
    porcelain = git(repo, "worktree", "list", "--porcelain")
    return [
        line[len("worktree ") :] for line in porcelain.splitlines() if line.startswith("worktree ")
    ]


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for a slow reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return True
    except OSError:  # pragma: no cover - no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")
