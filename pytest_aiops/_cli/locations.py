"""Where the commands look: the lock directory, the repository around the cwd, its worktree root."""

from __future__ import annotations

import os

from .._errors import LockError
from .._ports.defaults import LOCK_DIR_ENV
from .._ports.provider import default_lock_directory
from .._worktrees.locate import locate_repository
from .._worktrees.provider import default_worktree_root


def lock_directory_default() -> str:
    """The default of ``--lock-dir`` as help texts state it, derived from the port provider's
    :func:`default_lock_directory` (so the path is written in one place, there)."""
    path = default_lock_directory()
    if os.environ.get(LOCK_DIR_ENV, "").strip():
        return f"{path}, from ${LOCK_DIR_ENV}"
    return f"${LOCK_DIR_ENV} or {path}, shared by every process on the machine"


def lock_directory(option: str | None) -> str:
    """The lock directory to read; a path that exists but is no directory is an error
    (a missing one just means no run has leased anything there yet)."""
    path = os.path.abspath(os.path.expanduser(option)) if option else default_lock_directory()
    if os.path.lexists(path) and not os.path.isdir(path):
        raise LockError(
            f"--lock-dir must be a directory, not {path!r} (it is a file); pass the lock "
            f"directory the runs use (default: {default_lock_directory()})",
            lock_path=path,
        )
    return path


def repo_root() -> str | None:
    """The top of the git repository around the current directory, or ``None``."""
    info = locate_repository(os.getcwd())
    return info.repo_root if info is not None else None


def main_repo_root() -> str | None:
    """Like :func:`repo_root`, but from inside a linked worktree (an agent's session) the
    repository it belongs to, whose root holds the worktrees ``status``/``gc`` are about."""
    info = locate_repository(os.getcwd())
    return info.main_root if info is not None else None


def worktree_root(option: str | None) -> str | None:
    """``--worktree-root``, else the provider's root for the repository around the cwd.

    ``None`` outside a git repository (then there are no worktrees to show or reclaim).
    """
    if option:
        return os.path.abspath(os.path.expanduser(option))
    root = main_repo_root()
    if root is None:
        return None
    return default_worktree_root(root)
