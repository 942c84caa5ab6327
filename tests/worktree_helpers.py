"""Providers and git-worktree leases for the tests: a provider under a root, a lease, and
what a test module might leave in its checkout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_aiops import ResourceLease
from pytest_aiops._core.registry import ProviderRegistry
from pytest_aiops._ports.provider import create_port_range_provider
from pytest_aiops._worktrees.provider import (
    GitWorktreeProvider,
    GitWorktreeProviderConfig,
    create_git_worktree_provider,
)

from .git_helpers import run


def builtin_registry() -> ProviderRegistry:
    """A registry holding the two built-in providers, with their default configuration."""
    registry = ProviderRegistry()
    registry(create_git_worktree_provider())
    registry(create_port_range_provider())
    return registry


def worktree_provider(root: Path | None, **config: Any) -> GitWorktreeProvider:
    """A git-worktree provider whose checkouts live under ``root`` (None: the default root)."""
    return create_git_worktree_provider(
        GitWorktreeProviderConfig(root_directory=str(root) if root else None, **config)
    )


def worktree_lease(
    prov: GitWorktreeProvider, repo: Path, session_id: str = "s", **options: Any
) -> ResourceLease:
    """A checkout of ``repo`` from ``prov`` for ``session_id``, with request ``options``."""
    return prov.provision(session_id=session_id, workspace_root=str(repo), options=options)


def registrations(repo: Path) -> list[str]:
    """The linked-worktree registrations under ``repo/.git/worktrees``."""
    base = repo / ".git" / "worktrees"
    return sorted(os.listdir(base)) if base.is_dir() else []


def checkouts(root: Path) -> list[str]:
    """The visible checkouts under a worktree root (its control dir left out)."""
    return sorted(p for p in os.listdir(root) if not p.startswith(".")) if root.is_dir() else []


def make_a_mess(path: Path, isolation: str, outside: Path) -> None:
    """Everything a test module might do to its checkout, and leave behind.

    Dirty, deleted, untracked, ignored, staged and committed files; read-only files and
    directories, an unreadable directory, symlinks pointing outside; half a merge; for a
    clone also branches, tags, a stash, config, sparse-checkout and hooks. Files of the
    reference layout that ``path`` lacks are skipped.
    """
    git_dir = Path(run(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    if isolation == "clone":  # in a linked worktree these would change the user's repo
        run(path, "checkout", "-q", "-b", "topic")
        run(path, "tag", "t1")
        (path / "top.txt").write_text("stashed\n")
        run(path, "stash")
        run(path, "config", "test.key", "value")
        run(path, "sparse-checkout", "set", "pkg", "o")
        (git_dir / "hooks").mkdir(exist_ok=True)
        (git_dir / "hooks" / "post-checkout").write_text("#!/bin/sh\nexit 1\n")
    (path / "top.txt").write_text("modified\n")
    if (path / "pkg" / "g.txt").exists():
        (path / "pkg" / "g.txt").unlink()
    (path / "untracked.txt").write_text("u\n")
    (path / "empty-dir").mkdir()
    (path / "x.pyc").write_text("ignored\n")
    (path / "pkg" / "__pycache__").mkdir(exist_ok=True)
    (path / "pkg" / "__pycache__" / "m.pyc").write_text("ignored\n")
    for rel, mode in (("pkg/a.txt", 0o444), ("run.sh", 0o755), ("pkg/sub/f.txt", 0o444)):
        if (path / rel).exists():
            (path / rel).chmod(mode)  # same content, only the mode changed
    if (path / "o").exists():
        (path / "o" / "x.txt").unlink()
        (path / "o").rmdir()
        (path / "o").symlink_to(outside)  # a tracked dir replaced by a symlink outward
    (path / "staged.txt").write_text("s\n")
    run(path, "add", "staged.txt")
    run(path, "commit", "-q", "-m", "commit made inside")
    (path / "staged-too.txt").write_text("s\n")
    run(path, "add", "staged-too.txt")
    (git_dir / "MERGE_MSG").write_text("half a merge\n")
    (git_dir / "rebase-merge").mkdir()
    (git_dir / "info").mkdir(exist_ok=True)
    (git_dir / "info" / "exclude").write_text("secret\n")
    ro = path / "ro-dir"
    ro.mkdir()
    (ro / "inner.txt").write_text("x")
    (ro / "inner.txt").chmod(0o400)
    ro.chmod(0o500)
    closed = path / "closed"
    closed.mkdir()
    (closed / "secret").write_text("s")
    closed.chmod(0o000)
    (path / "link-out").symlink_to(outside)
    (path / "link-file").symlink_to(outside / "keep.txt")
    (path / "pkg" / "sub").chmod(0o555)
