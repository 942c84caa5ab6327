"""Where the user's repository is: the cheap guess without git, and git's own answer.

The worktrees' interface for finding a repository (the worker, the CLI): the cheap guess,
:func:`~.roots.find_repository` (a few ``stat`` calls, for every pytest start), is in
:mod:`.roots`; :func:`locate_repository` asks ``git rev-parse``.
"""

from __future__ import annotations

import os


class RepoInfo:
    """The user's repository as git sees it from the workspace (a value: compared and
    hashed by its fields; a plain class, not a dataclass, because every pytest run imports
    this module and a dataclass compiles its methods at import, issue 23)."""

    __slots__ = ("common_dir", "git_dir", "object_format", "repo_root")

    def __init__(
        self, repo_root: str, common_dir: str, object_format: str, git_dir: str = ""
    ) -> None:
        self.repo_root = repo_root
        self.common_dir = common_dir
        self.object_format = object_format
        #: The git dir of the user's checkout the workspace is in (the common dir for the
        #: main checkout): where its per-worktree config and sparse patterns are.
        self.git_dir = git_dir

    def _key(self) -> tuple[str, str, str, str]:
        return (self.repo_root, self.common_dir, self.object_format, self.git_dir)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"RepoInfo(repo_root={self.repo_root!r}, common_dir={self.common_dir!r}, "
            f"object_format={self.object_format!r}, git_dir={self.git_dir!r})"
        )

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
