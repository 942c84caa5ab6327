"""Where the user's repository is: the cheap guess without git, and git's own answer.

The worktrees' interface for finding a repository (the plugin's report header and worker,
the CLI): :func:`find_repository` walks up for ``.git`` with a few ``stat`` calls, cheap
enough for every pytest start; :func:`locate_repository` asks ``git rev-parse``. This module
imports only the standard library at load time, so the plugin can use it at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def find_repository(start: str) -> str | None:
    """The nearest directory at or above ``start`` holding ``.git``, without running git.

    Cheap enough for every pytest start (no process, a few ``stat`` calls). ``.git`` may be
    a directory (a repository) or a gitfile (a linked worktree, a submodule); either makes
    its directory the work tree root git would find (ignoring ``GIT_DIR`` and
    ``GIT_CEILING_DIRECTORIES``, which the provider clears for its own git anyway).
    """
    current = os.path.abspath(start)
    while True:
        if os.path.exists(os.path.join(current, ".git")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


@dataclass(frozen=True)
class RepoInfo:
    """The user's repository as git sees it from the workspace."""

    repo_root: str
    common_dir: str
    object_format: str
    #: The git dir of the user's checkout the workspace is in (the common dir for the main
    #: checkout): where its per-worktree config and sparse patterns are.
    git_dir: str = ""

    @property
    def main_root(self) -> str:
        """The work tree the repository belongs to: from inside a linked worktree (an agent's
        session), the main checkout whose root keys the worktrees ``status``/``gc`` show."""
        if os.path.basename(self.common_dir) == ".git":
            return os.path.dirname(self.common_dir)
        return self.repo_root


#: One ``git rev-parse`` prints the toplevel, common dir, git dir and object format.
LOCATE = (
    "rev-parse",
    "--path-format=absolute",
    "--show-toplevel",
    "--git-common-dir",
    "--absolute-git-dir",
    "--show-object-format",
)


def locate_repository(path: str) -> RepoInfo | None:
    """git's own answer for the repository around ``path``, ``None`` outside one.

    :func:`find_repository` is the cheap guess without git (for every pytest start); this is
    what the commands use, and :func:`inspect_repo` asks the same plus a commit.
    """
    from .git import run_git  # git's runner loads only when git is asked

    result = run_git(["-C", path, *LOCATE], check=False)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) < 4:
        return None
    return RepoInfo(
        repo_root=lines[0], common_dir=lines[1], object_format=lines[3], git_dir=lines[2]
    )


def resolve_commit(path: str, ref: str) -> str:
    """The commit ``ref`` names in the repository around ``path`` (one ``git rev-parse``).

    For the xdist controller, which resolves the base ref once for workers on other hosts,
    and for such a worker, which checks that it has that commit. Raises the provider's
    :class:`~pytest_aiops.AiopsError` (no repository, no such commit).
    """
    from .repository import inspect_repo  # git's runner loads only when git is asked

    return inspect_repo(path, ref)[1]
