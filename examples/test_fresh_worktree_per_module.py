"""Every module gets a pristine worktree at the base ref, whatever other modules did."""

from __future__ import annotations

import socket
import subprocess

import pytest

from pytest_aiops.plugin import GitWorktree, PortRange


def _git(worktree: GitWorktree, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=worktree.path, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_worktree_starts_clean(git_worktree: GitWorktree) -> None:
    assert _git(git_worktree, "status", "--porcelain", "--untracked-files=no") == ""
    assert not (git_worktree.path / "echo.log").exists()
    assert git_worktree.path != git_worktree.repo_root


def test_worktree_is_at_the_base_ref(git_worktree: GitWorktree) -> None:
    head = subprocess.run(
        ["git", "rev-parse", git_worktree.base_ref],
        cwd=git_worktree.repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert _git(git_worktree, "rev-parse", "HEAD") == head


@pytest.mark.parametrize("offset", range(4))
def test_ports_are_this_workers(port_range: PortRange, worker_id: str, offset: int) -> None:
    port = port_range.next_port()
    # Leased for this worker (its first block, or one its pool grew by on a busy machine)...
    assert port in port_range
    assert port_range.owner == worker_id
    # ...and free now: a server without SO_REUSEADDR binds it.
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
