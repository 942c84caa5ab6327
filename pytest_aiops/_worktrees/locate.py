"""Where the user's repository is: the cheap guess without git, and git's own answer.

The worktrees' interface for finding a repository (the plugin's report header and worker,
the CLI): :func:`find_repository` walks up for ``.git`` with a few ``stat`` calls, cheap
enough for every pytest start; :func:`locate_repository` asks ``git rev-parse``. This module
imports only the standard library at load time, so the plugin can use it at start-up.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile


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


#: A worktree root's control directory: owner locks and records (see :mod:`.store`).
CONTROL = ".pytest-aiops"


def default_root_candidates(repo_root: str) -> list[str]:
    """Where the default worktree root of ``repo_root`` may be, the preferred first:
    ``/dev/shm/pytest-aiops-<uid>/worktrees/<repo>-<hash>``, then the same under the temp
    dir. :func:`.store.default_worktree_root` picks one; this only names them (no I/O)."""
    real = os.path.realpath(repo_root)
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    leaf = f"{os.path.basename(real)[:32] or 'repo'}-{digest}"
    bases = [tempfile.gettempdir()]
    if os.path.isdir("/dev/shm"):
        bases.insert(0, "/dev/shm")
    return [os.path.join(base, f"pytest-aiops-{os.geteuid()}", "worktrees", leaf) for base in bases]


#: Record states that never make an orphan while their directory exists (see :mod:`.store`).
_RESTING = ("pooled", "kept")


def may_hold_orphans(root: str) -> bool:
    """Whether ``root`` has a record that is neither pooled nor kept and whose owner lock
    nobody holds (only such a record can be an orphan): a few ``listdir``/``read``/``flock``
    calls, no git, nothing imported.

    A cheap filter for the end of every pytest run: a record whose owner lock a live process
    holds (another run, an agent session) is skipped with one ``flock`` probe. ``True`` only
    says the store must look (:func:`.store.reclaim_orphans` decides, taking the locks).
    """
    control = os.path.join(root, CONTROL)
    try:
        names = os.listdir(control)
    except OSError:
        return False
    for name in names:
        if not (name.startswith("aiops-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(control, name), "rb") as handle:
                data = json.loads(handle.read(1 << 20))
        except (OSError, ValueError):
            return True
        resting = isinstance(data, dict) and data.get("state") in _RESTING
        if not resting and not _held(os.path.join(control, name[: -len(".json")] + ".lock")):
            return True  # its owner is gone (or never locked it): the store must look
    return False


def lock_held_elsewhere(path: str) -> bool:
    """Whether another open file holds the ``flock`` on ``path``: a *shared* probe would not
    be granted. Held for an instant and dropped; two such probes never conflict. (The one
    implementation: :meth:`.store.OwnerLock.held_elsewhere` is this.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no owner locks, nothing provisioned
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        raise
    finally:
        os.close(fd)  # drops our probe's lock with it
    return False


def _held(lock_path: str) -> bool:
    """Whether a live process holds the owner lock (an unexpected error: taken as held,
    so the store looks and decides under the lock itself)."""
    try:
        return lock_held_elsewhere(lock_path)
    except OSError:
        return True


def resolve_commit(path: str, ref: str) -> str:
    """The commit ``ref`` names in the repository around ``path`` (one ``git rev-parse``).

    For the xdist controller, which resolves the base ref once for workers on other hosts,
    and for such a worker, which checks that it has that commit. Raises the provider's
    :class:`~pytest_aiops.AiopsError` (no repository, no such commit).
    """
    from .repository import inspect_repo  # git's runner loads only when git is asked

    return inspect_repo(path, ref)[1]
