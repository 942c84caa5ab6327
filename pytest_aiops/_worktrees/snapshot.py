"""The user's working state, snapshotted without writing into the user's repository.

A worktree of ``HEAD`` alone is the last commit, not the code under test: the user's
unstaged and staged edits, deletions and new files (the new test module itself) are
missing. A snapshot captures them as two trees, and :func:`apply_snapshot` lays them on a
checkout of the same ``HEAD``, so ``git status`` there shows what it shows in the user's
checkout:

- ``index_tree``: the user's index (staged state), ``git write-tree`` of a *copy* of it;
- ``work_tree``: the files (``git add -A`` on that copy, so ``.gitignore`` is respected),
  plus the ignored paths an include list names (``.env``, extension modules built in place),
  added with ``-f``.

Nothing is written into the user's repository, not even an object's timestamp: the index
is a private copy (``GIT_INDEX_FILE``), and the blobs and trees git writes go to a private
object directory (``GIT_OBJECT_DIRECTORY``). The user's objects are not even an alternate
there (git would "freshen", i.e. touch, each one it finds again); ``write-tree
--missing-ok`` names the user's blobs without reading them. A checkout reads the snapshot's
objects through ``GIT_ALTERNATE_OBJECT_DIRECTORIES`` on our own git commands only; once
applied it needs none of them (its index names only blobs the user's own ``git add``
stored, and the files are on disk), so the snapshot can be deleted as soon as the run's
last checkout is made.

Snapshots live in ``<dev/shm or tmp>/pytest-aiops-<uid>/snapshots`` (created ``0700`` and
verified private, as the worktree roots are), or in the control dir of an explicit worktree
root (``rootDirectory``); a core API checkout's own one in its root's control dir. A run's
snapshot directory has an owner lock (``<name>.lock``, a ``flock`` the run holds for its
life); one whose lock is free is a dead run's and the next :meth:`SnapshotRun.create`
deletes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from .._core.trust import verify_private
from .._errors import GitError
from .create import SPARSE_FLAGS, OnStart
from .files import remove_tree, write_text
from .git import run_git
from .locate import RepoInfo
from .store import OwnerLock, control_dir, ensure_root

if sys.platform != "win32":
    import fcntl

#: Settings our git commands get while snapshotting: nothing that starts a daemon
#: (fsmonitor), writes a shared index into the user's git dir (split index), or runs
#: maintenance; the untracked cache would only be stale in the copy.
_QUIET = (
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.splitIndex=false",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
)

#: The file in the repository root listing ignored paths to copy (gitignore patterns).
INCLUDE_FILE = ".worktreeinclude"
_META = "snapshot.json"


@dataclass(frozen=True)
class Snapshot:
    """A taken snapshot: its private directory and the trees to lay on ``head``."""

    path: str
    common_dir: str
    head: str
    index_tree: str
    work_tree: str

    @property
    def objects(self) -> str:
        return os.path.join(self.path, "objects")


def snapshot_base() -> str:
    """``<dev/shm or tmp>/pytest-aiops-<uid>/snapshots``: tmpfs when there is one (taking a
    snapshot writes one object per changed file), created private to us."""
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else tempfile.gettempdir()
    top = os.path.join(parent, f"pytest-aiops-{os.geteuid()}")
    base = os.path.join(top, "snapshots")
    verify_private(top, create=True)
    verify_private(base, create=True)
    return base


def _git_path(info: RepoInfo, name: str) -> str:
    """Where the user's checkout keeps ``name`` (its index: per-worktree in a linked one)."""
    out = run_git(["-C", info.repo_root, "rev-parse", "--path-format=absolute", "--git-path", name])
    return out.stdout.strip()


def include_patterns(repo_root: str, extra: Sequence[str] = ()) -> list[str]:
    """The include list: ``extra`` then the lines of ``<repo_root>/.worktreeinclude``."""
    patterns = [p.strip() for p in extra if p.strip()]
    try:
        with open(os.path.join(repo_root, INCLUDE_FILE), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        lines = []
    patterns += [line for line in lines if line.strip() and not line.startswith("#")]
    return patterns


def take_snapshot(info: RepoInfo, head: str, directory: str, include: Sequence[str]) -> Snapshot:
    """Snapshot the working state of ``info``'s checkout (at ``head``) into ``directory``.

    ``directory`` is an empty private directory of ours. ``include`` are gitignore patterns
    of ignored paths to copy too. Writes only inside ``directory``.
    """
    objects = os.path.join(directory, "objects")
    os.makedirs(os.path.join(objects, "info"), exist_ok=True)
    index = os.path.join(directory, "index")
    user_index = _git_path(info, "index")
    with contextlib.suppress(FileNotFoundError):  # no index yet: an empty one
        # copy2: the copy keeps the index's mtime, which is what git compares file mtimes
        # with to find "racily clean" entries (a file changed in the second the index was
        # written, same size): a copy with a new mtime would hide such an edit.
        shutil.copy2(user_index, index)
    # The user's objects are deliberately *not* an alternate here: git "freshens" (sets the
    # mtime of) every object it would write that exists already, alternates included. So
    # git sees only the private store: blobs of changed files and all trees are written
    # there, and ``--missing-ok`` lets write-tree name the user's blobs without reading
    # them. Nothing of the user's repository is written, not even a timestamp.
    env = {"GIT_INDEX_FILE": index, "GIT_OBJECT_DIRECTORY": objects}
    top = ["-C", info.repo_root, *_QUIET]
    staged = run_git([*top, "write-tree", "--missing-ok"], env=env, check=False)
    run_git([*top, "add", "-A"], env=env)
    if include:
        patterns = os.path.join(directory, "include")
        write_text(patterns, "\n".join(include) + "\n")
        listing = run_git(
            [*top, "ls-files", "-z", "-o", "-i", f"--exclude-from={patterns}"], env=env
        ).stdout
        if listing:
            paths = os.path.join(directory, "include-paths")
            write_text(paths, listing)
            run_git(
                [*top, "add", "-f", "--pathspec-from-file", paths, "--pathspec-file-nul"],
                env=env,
            )
    work_tree = run_git([*top, "write-tree", "--missing-ok"], env=env).stdout.strip()
    # An index with conflicts has no tree: the worktree then gets the files as staged.
    index_tree = staged.stdout.strip() if staged.returncode == 0 else work_tree
    snapshot = Snapshot(directory, info.common_dir, head, index_tree, work_tree)
    write_text(
        os.path.join(directory, _META),
        json.dumps(
            {
                "commonDir": info.common_dir,
                "head": head,
                "indexTree": index_tree,
                "workTree": work_tree,
            }
        ),
    )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(index)  # the copy served its purpose; the objects stay
    return snapshot


def _load(directory: str, info: RepoInfo) -> Snapshot | None:
    """The snapshot already taken in ``directory`` for ``info``'s repository, if any."""
    try:
        with open(os.path.join(directory, _META), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("commonDir") != info.common_dir:
        return None
    values = [data.get(key) for key in ("head", "indexTree", "workTree")]
    if not all(isinstance(value, str) and value for value in values):
        return None
    head, index_tree, work_tree = (str(value) for value in values)
    return Snapshot(directory, info.common_dir, head, index_tree, work_tree)


def shared_snapshot(
    run_directory: str, info: RepoInfo, head: str, include: Sequence[str]
) -> Snapshot:
    """The run's one snapshot of ``info``'s repository: taken by the first caller (of any
    process of the run, under a ``flock``), read by every later one.

    ``run_directory`` is a :class:`SnapshotRun`'s directory: private to us (verified here
    too, since its path came through xdist's worker input). Each repository gets its own
    subdirectory, named after its common dir.
    """
    if not verify_private(run_directory, create=False):
        raise GitError(
            f"the run's snapshot directory {run_directory!r} is gone",
            command=["git"],
            returncode=None,
            stderr="",
        )
    name = hashlib.sha256(info.common_dir.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    directory = os.path.join(run_directory, name)
    lock_path = os.path.join(run_directory, f"{name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the first taker works, the others wait for it
        found = _load(directory, info)
        if found is not None:
            return found
        remove_tree(directory)  # a taker that failed halfway
        os.mkdir(directory, 0o700)
        return take_snapshot(info, head, directory, include)
    finally:
        os.close(fd)


def private_snapshot(info: RepoInfo, head: str, include: Sequence[str], base: str) -> Snapshot:
    """A snapshot for one checkout (the core API's ``workingState``), in a directory of its
    own under ``base`` (the control dir of the checkout's root, verified private);
    :func:`discard_snapshot` deletes it once applied."""
    reclaim_snapshots(base)  # what dead processes left (a listing when there is none)
    directory = os.path.join(base, f"one-{os.getpid()}-{secrets.token_hex(6)}")
    os.mkdir(directory, 0o700)
    try:
        return take_snapshot(info, head, directory, include)
    except BaseException:
        remove_tree(directory)
        raise


def discard_snapshot(snapshot: Snapshot) -> None:
    """Delete a :func:`private_snapshot` (never a run's shared one)."""
    if os.path.basename(snapshot.path).startswith("one-"):
        remove_tree(snapshot.path)


def apply_snapshot(
    snapshot: Snapshot, path: str, target: str | None, on_start: OnStart = None
) -> None:
    """Lay ``snapshot`` on the checkout at ``path`` (a clean checkout of ``snapshot.head``).

    ``read-tree -m -u HEAD <work tree>`` writes only the files that differ (a two-tree
    switch); ``read-tree -m <index tree>`` then makes the index the user's staged state,
    keeping the stat data of entries whose content is the same, without touching files. The
    snapshot's objects are read through ``GIT_ALTERNATE_OBJECT_DIRECTORIES`` on these commands only.
    """
    # The checkout's own store (the user's, or a clone's borrowing it) has every blob the
    # trees name but the new ones; the snapshot's store has those and the trees.
    env = {"GIT_ALTERNATE_OBJECT_DIRECTORIES": snapshot.objects}
    flags = list(SPARSE_FLAGS) if target else []
    git = ["-C", path, *flags]
    run_git(
        [*git, "read-tree", "-m", "-u", snapshot.head, snapshot.work_tree],
        env=env,
        on_start=on_start,
    )
    if snapshot.index_tree != snapshot.work_tree:
        # No `update-index --refresh` after it (a stat of every file and a rewritten index,
        # 30-100 ms on 20,000 files): only the few entries whose staged and worktree
        # content differ lack stat data, and git compares those by content, correctly.
        run_git([*git, "read-tree", "-m", snapshot.index_tree], env=env, on_start=on_start)


class SnapshotRun:
    """The directory of one run's snapshot, held (owner lock) for the run's life.

    The plugin makes one per run (the xdist controller, or the single process) and hands its
    path to every worktree request; :func:`shared_snapshot` fills it on first use.
    :meth:`close` deletes it. A dead run's directory (lock free) is deleted by the next
    :meth:`create`.
    """

    def __init__(self, path: str, lock: OwnerLock) -> None:
        self.path = path
        self._lock: OwnerLock | None = lock

    @classmethod
    def create(cls, root: str | None = None) -> SnapshotRun:
        """A new run directory: in :func:`snapshot_base`, or with ``root`` (an explicit
        worktree root, ``rootDirectory``) in that root's control dir, so that the one
        setting that moves the checkouts away from a refused default moves this too."""
        explicit = None if root is None else ensure_root(os.path.abspath(root))
        base = snapshot_base() if explicit is None else control_dir(explicit)
        reclaim_snapshots(base)
        name = f"run-{secrets.token_hex(8)}"
        lock = OwnerLock.create(os.path.join(base, f"{name}.lock"))
        path = os.path.join(base, name)
        try:
            os.mkdir(path, 0o700)
        except BaseException:
            lock.unlink_and_close()
            raise
        return cls(path, lock)

    def close(self) -> None:
        """Delete the snapshot (idempotent); checkouts made from it no longer need it."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        remove_tree(self.path)
        lock.unlink_and_close()


def reclaim_snapshots(base: str) -> None:
    """Delete run snapshots whose owner died (their lock free) and stray one-off ones."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if name.startswith("run-") and name.endswith(".lock"):
            lock = OwnerLock.take(os.path.join(base, name))
            if lock is None:
                continue  # a live run's
            remove_tree(os.path.join(base, name[: -len(".lock")]))
            lock.unlink_and_close()
        elif name.startswith("one-"):
            pid = name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                remove_tree(os.path.join(base, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
