"""Who owns which checkout under a worktree root: records, kernel-held owner locks, the pool.

Layout of a root ``R`` (the ``rootDirectory``)::

    R/<name>/                      a checkout, name = build_scoped_name(session id)[-<n>]
    R/.pytest-aiops/<token>.lock   owner lock: an exclusive ``flock`` (per open file on
                                   Linux, macOS and the BSDs), held by the process using
                                   the checkout for the lease's whole life
    R/.pytest-aiops/<token>.json   record: what/where/whose, and the state (read and
                                   written as a :class:`.record.CheckoutRecord`)
    R/.pytest-aiops/aiops-<token>/ where a checkout is built before it is renamed to R/<name>
    R/.pytest-aiops/.aiops-<token>.pooled/
                                   where a pooled checkout waits for its next lease

Each checkout has a random ``token`` that never changes, even when a pooled checkout is
renamed for its next session; git names the worktree's registration after the directory
given to ``git worktree add``, so ``<common-dir>/worktrees/aiops-<token>`` is ours by name --
even if git was killed before it wrote the registration's ``gitdir`` file.

Liveness comes from the kernel: the owner lock is dropped when its holder exits, SIGKILL
included. So for any record, exactly one of:

- lock held by someone          -> ``live``: never touched by anyone else;
- free, state ``pooled``, dir ok -> ``pooled``: restored and waiting for its next lease;
- free, state ``kept``, dir ok   -> ``kept``: left for the user (``--aiops-keep``); nothing
  deletes it but ``reclaim_orphans(include_kept=True)`` (``pytest-aiops gc --kept``), and
  once the user removed the directory (``git worktree remove``) its record is an orphan;
- free otherwise                -> ``orphaned``: its holder died (mid-add, mid-use or
  mid-restore); the next provisioning through ``R`` (or ``reclaim_orphans``) deletes the
  directory and *our* registration, never running a repository-wide ``git worktree prune``.

A record is written before anything it describes is created and removed after everything
is gone, so a crash at any point leaves something the next run can attribute and delete.
Deletion is limited to what the record proves we created: ``R/<name>`` only if its inode is
the one we recorded, the build dir under the control dir, a claimed-but-unused name only if
it is still an empty directory.

Lock files are unlinked only by a holder; whoever locks one checks afterwards that the path
still names the inode it locked (the classic unlink-vs-waiter race), and retries if not.

The record's lifecycle
----------------------

Every change of a record is one named method of :class:`Entry` (or :func:`new_entry`),
made while holding the owner lock, and each writes the whole record through
:meth:`Entry._write`, the one place a record file is written. A method called on a record
in a state its row does not start from raises ``AssertionError`` (a bug in this module)
before doing anything, so the record on disk and the files it names stay as they were::

    from        to          method                   what happened
    (none)      creating    new_entry                nothing exists yet but the lock
    creating    creating    make_build_dir           build dir made (its inode is the proof)
                            git_started              a git runs in it (ended if we die)
                            claim_name               R/<name> reserved (empty dir)
                            move_built_to            renamed onto R/<name>
    creating    live        mark_created             a fresh checkout handed to its session
    pooled      live        mark_reused              a pooled checkout handed to a session
    live        live        git_started, claim_name  (as above, while reusing or restoring)
                            move_pooled_to           renamed from the pool onto R/<name>
                            mark_switched            checked out another commit for reuse
                            mark_working_state       the user's working state laid on it
    live        pooled      move_to_pool             restored, parked in the control dir
    live        kept        keep                     left for the user (--aiops-keep)

A record leaves the table only by :meth:`Entry.discard` (files, registration, record and
lock deleted). ``orphaned`` is no state that is written: it is what a free lock and any
record but an intact ``pooled``/``kept`` one mean. A record of another version keeps the
keys this one does not know (:attr:`.record.CheckoutRecord.raw`); one whose ``state`` this
version cannot read (``None``) is never rewritten, since writing it would drop that state:
it is only classified (an orphan once its lock is free) and discarded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from .._core.trust import private_problem, verify_private
from .._errors import (
    AiopsWarning,
    LockError,
    NoSpaceError,
    OptionError,
    UnsafeDirectoryError,
    WorktreeNameError,
    escape,
)
from .defaults import CLONE, WORKTREE
from .files import remove_tree
from .git import boot_ticks, end_session
from .locate import RepoInfo
from .record import CheckoutRecord, PoolKey, State
from .repository import remove_registrations
from .restore import index_identity, make_stamp
from .roots import CONTROL, default_root_candidates, lock_held_elsewhere

if sys.platform != "win32":  # importing must work on Windows; provisioning says it cannot
    import fcntl

# What list_worktrees reports (WorktreeRecord.state): a record's State seen with its lock.
LIVE = "live"
POOLED = "pooled"
ORPHANED = "orphaned"
KEPT = "kept"

# Below this much free space, /dev/shm (RAM) is not used for a new default root.
_SHM_MIN_FREE = 1 << 30

#: A pooled checkout unused for this long is deleted by the next scan of its root: the pool
#: is for the modules of a run (and the next run), not a permanent cache in RAM.
POOL_MAX_IDLE = 3600.0

# Default bases already swept for roots of deleted repositories by this process.
_SWEPT: set[str] = set()


@dataclass(frozen=True)
class WorktreeRecord:
    """One checkout under a worktree root, as :func:`list_worktrees` sees it."""

    path: str
    repo_root: str
    pid: int
    host: str
    created_at: float
    session_id: str
    state: str  # "live", "orphaned", "pooled" or "kept"
    isolation: str = WORKTREE
    commit: str = ""
    target_path: str | None = None
    token: str = ""
    record_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "repoRoot": self.repo_root,
            "pid": self.pid,
            "host": self.host,
            "createdAt": self.created_at,
            "sessionId": self.session_id,
            "state": self.state,
            "isolation": self.isolation,
            "commit": self.commit,
            "targetPath": self.target_path,
        }


# --- default location ------------------------------------------------------------------


def _shm_usable() -> bool:
    try:
        info = os.statvfs("/dev/shm")
    except OSError:
        return False
    return os.access("/dev/shm", os.W_OK | os.X_OK) and info.f_bavail * info.f_frsize >= (
        _SHM_MIN_FREE
    )


def default_worktree_root(repo_root: str) -> str:
    """The machine-wide default root for ``repo_root``'s checkouts, outside its work tree.

    ``/dev/shm/pytest-aiops-<uid>/worktrees/<repo>-<hash>`` when ``/dev/shm`` is a writable
    tmpfs with at least 1 GiB free, else the same under the temp dir. Checking out many
    files is dominated by creating inodes: 10,000 files took 2.4-8 s on this machine's disk
    and 0.2 s on tmpfs. Once a root exists for a repository it is kept (so ``list`` and
    ``reclaim`` find earlier checkouts even if /dev/shm later runs low).
    """
    roots = default_root_candidates(repo_root)
    candidates = [os.path.dirname(root) for root in roots]
    leaf = os.path.basename(roots[0])
    for base in candidates:
        # Only a root another user cannot have planted counts as "ours already": an
        # attacker's /tmp/pytest-aiops-<uid> must never win over our real /dev/shm one.
        if os.path.isdir(os.path.join(base, leaf)) and _trusted_base(base):
            return os.path.join(base, leaf)
    if len(candidates) == 2 and _shm_usable():
        return os.path.join(candidates[0], leaf)
    return os.path.join(candidates[-1], leaf)


def _trusted_base(base: str) -> bool:
    """Whether ``<parent>/pytest-aiops-<uid>/worktrees`` are both private to us."""
    for path in (os.path.dirname(base), base):
        try:
            if private_problem(os.lstat(path)) is not None:
                return False
        except OSError:
            return False
    return True


def ensure_root(root: str, *, private_base: str | None = None) -> str:
    """Create ``root`` and its control dir, verified private to us; return the path to use.

    ``private_base`` (``<tmp>/pytest-aiops-<uid>/worktrees`` of the default location, in a
    world-writable parent) and everything below it is created ``0700`` and verified with
    ``lstat`` (a real directory, ours, not writable by group or others; see
    :mod:`pytest_aiops._core.trust`). An explicit root is created like that too, below its
    parent with symlinks resolved (the user chose the path), and its ancestors must not be
    re-pointable by another user. An :class:`UnsafeDirectoryError` (an :class:`OptionError`
    for ``rootDirectory``) names the path and the owner found.
    """
    try:
        if private_base is not None:
            top = os.path.dirname(private_base)  # .../pytest-aiops-<uid>
            verify_private(top, create=True)
            with contextlib.suppress(OSError):
                if stat.S_IMODE(os.lstat(top).st_mode) & 0o077:
                    os.chmod(top, 0o700)  # ours: readable by nobody else either
            verify_private(private_base, create=True)
        else:
            parent = os.path.dirname(os.path.abspath(root))
            os.makedirs(parent, exist_ok=True)
            root = os.path.join(os.path.realpath(parent), os.path.basename(root))
        verify_private(root, create=True)
        verify_private(os.path.join(root, CONTROL), create=True)
    except (UnsafeDirectoryError, NoSpaceError):
        raise
    except OSError as error:
        raise _unwritable_root(root, error.strerror or str(error)) from error
    if not os.access(root, os.W_OK | os.X_OK):
        raise _unwritable_root(root, os.strerror(errno.EACCES))
    return root


def _unwritable_root(root: str, reason: str) -> OptionError:
    return OptionError(
        "rootDirectory",
        f"rootDirectory must be a writable directory, not {root!r} ({reason}); "
        "set the rootDirectory option to another directory",
    )


def verified_root(root: str) -> bool:
    """Whether ``root`` exists and may be read: records under it are ours. ``False`` if it
    does not exist; :class:`UnsafeDirectoryError` if it (or its control dir) is not private
    to us -- then nothing in it is trusted, read or acted on."""
    if not verify_private(root, create=False):
        return False
    control = os.path.join(root, CONTROL)
    return verify_private(control, create=False)


# --- owner locks -----------------------------------------------------------------------


class OwnerLock:
    """An exclusive ``flock`` on ``<token>.lock``; the kernel drops it if we die.

    ``flock`` belongs to the open file on every POSIX system (not the process, unlike
    ``fcntl`` record locks), so two entries in one process conflict like two processes and
    closing another descriptor drops nothing. filelock is not used: it cannot lock a file
    created under a hidden name before it appears, check the inode after locking, or test
    whether a lock is held without taking it, and it follows symlinks.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def create(cls, path: str) -> OwnerLock:
        """A brand-new lock file, already locked when it appears under its name.

        Created and locked under a hidden name first, then renamed: otherwise a scanner
        could find it unlocked in between, take it for an orphan and delete it.
        """
        directory, name = os.path.split(path)
        hidden = os.path.join(directory, f".{name}.{os.getpid()}.creating")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(hidden, flags, 0o600)
        lock = cls(hidden, fd)
        try:
            if not lock._try():  # pragma: no cover - nobody knows the name yet
                raise LockError(f"fresh lock file {path!r} already locked", lock_path=path)
            os.rename(hidden, path)
        except BaseException:
            lock.unlink_and_close()
            raise
        lock.path = path
        return lock

    @classmethod
    def take(cls, path: str) -> OwnerLock | None:
        """Lock an existing lock file without waiting; ``None`` if held or gone."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None  # gone (entry deleted), or not a regular file we may open
        lock = cls(path, fd)
        if not lock._try():
            lock.close()
            return None
        # The previous holder may have unlinked the file between our open and our lock:
        # then we hold a lock on a dead inode. Only the inode the path names counts.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            lock.close()
            return None
        return lock

    @staticmethod
    def held_elsewhere(path: str) -> bool:
        """Whether another open file holds the lock (:func:`.roots.lock_held_elsewhere`)."""
        return lock_held_elsewhere(path)

    def _try(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        return True

    def unlink_and_close(self) -> None:
        """Delete the lock file while holding it (waiters re-check the inode), then close."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()


# --- records ---------------------------------------------------------------------------


def control_dir(root: str) -> str:
    return os.path.join(root, CONTROL)


def _write_json(path: str, data: dict[str, Any]) -> None:
    # Atomic replace without fsync: records guard against *process* crashes, and the page
    # cache survives those; an OS crash on tmpfs loses the checkouts too.
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:  # a full disk: leave no half-written file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, encoding="utf-8") as handle:
            data = json.loads(handle.read(1 << 20))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tokens(root: str) -> list[str]:
    try:
        names = os.listdir(control_dir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    tokens = {n[: -len(".lock")] for n in names if n.endswith(".lock") and n.startswith("aiops-")}
    tokens |= {n[: -len(".json")] for n in names if n.endswith(".json") and n.startswith("aiops-")}
    return sorted(tokens)


class Entry:
    """A checkout this process holds the owner lock of (live or being pooled/reclaimed).

    :attr:`record` changes only through the lifecycle methods below (the module
    docstring's table), each of which rewrites the record on disk.
    """

    def __init__(self, root: str, token: str, lock: OwnerLock, record: CheckoutRecord) -> None:
        self.root = root
        self.token = token
        self.lock = lock
        self.record = record
        # Whether every git this entry's record may name was run (and waited for) by us;
        # False for an entry taken over from another process, which may have died mid-git.
        self.trusted = False

    @property
    def record_path(self) -> str:
        return os.path.join(control_dir(self.root), f"{self.token}.json")

    @property
    def build_dir(self) -> str:
        return os.path.join(control_dir(self.root), self.token)

    @property
    def stamp(self) -> str:
        """mtime = when the current lease began (see :func:`.restore.make_stamp`)."""
        return os.path.join(control_dir(self.root), f"{self.token}.stamp")

    @property
    def tree_cache(self) -> str:
        """The tracked paths of the checkout's commit, for the sweep after a lease."""
        return os.path.join(control_dir(self.root), f"{self.token}.tree")

    @property
    def pooled_dir(self) -> str:
        """Where a pooled checkout waits: hidden in the control dir, never at ``R/<name>``."""
        return os.path.join(control_dir(self.root), f".{self.token}.pooled")

    def directory_is_ours(self, path: str | None) -> bool:
        """Whether ``path`` is the very directory (same inode) this record created, where
        this root puts checkouts."""
        if not path or self.record.ino is None:
            return False
        path = os.path.normpath(path)
        root = os.path.normpath(self.root)
        if os.path.dirname(path) != root and path != os.path.normpath(self.pooled_dir):
            return False
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return bool(
            stat.S_ISDIR(st.st_mode)
            and st.st_ino == self.record.ino
            and st.st_dev == self.record.dev
        )

    def classify(self) -> str:
        """``pooled``/``kept`` if so recorded and intact, else ``orphaned`` (lock free)."""
        state = self.record.state
        if state in (State.POOLED, State.KEPT) and self.directory_is_ours(self.record.path):
            return POOLED if state is State.POOLED else KEPT
        return ORPHANED

    def _claimed_paths(self) -> list[str]:
        """The record's ``path``/``claim`` that lie where this root puts checkouts.

        A record is a claim, not an order: a path anywhere else (outside the root, or a
        nested one) is never deleted, whatever the record says, and is reported.
        """
        root = os.path.normpath(self.root)
        inside = {os.path.normpath(self.build_dir), os.path.normpath(self.pooled_dir)}
        paths = []
        for key, claimed in (("path", self.record.path), ("claim", self.record.claim)):
            value = claimed or self.record.raw.get(key)  # the raw one if not a path
            if not value:
                continue
            path = os.path.normpath(claimed) if claimed else ""
            if path and (os.path.dirname(path) == root or path in inside):
                paths.append(path)
            else:
                _ignored(self.record_path, f"its {key} {escape(value)!r} is not under {root!r}")
        return paths

    def discard(self) -> None:
        """Delete everything this record proves we created, then the record and the lock."""
        record = self.record
        finished = self.trusted or record.state is State.POOLED  # pooled: restore completed
        session = record.raw.get("gitSession")
        if record.git_session is not None and not finished:
            # Our predecessor died while its git was writing into the checkout: end that
            # git (and any child it left) before deleting what it writes to -- only if the
            # session is provably that git's (its recorded start time).
            end_session(*record.git_session)
        elif isinstance(session, list) and len(session) == 2 and not finished:
            _ignored(self.record_path, f"its gitSession {escape(session)!r} is not provable")
        paths = self._claimed_paths()
        for path in paths:
            # Child sessions' checkouts live inside this one, with registrations in the
            # user's repository: take them apart properly first, never just delete files.
            for child_root in iter_child_roots(path):
                reclaim_orphans(child_root, include_pooled=True, include_kept=True)
        if record.common_dir and record.isolation == WORKTREE:
            remove_registrations(
                record.common_dir,
                token=self.token,
                paths=[*paths, self.build_dir],
                known=record.git_dir if finished else None,
                root=self.root,
            )
        for path in paths:
            if self.directory_is_ours(path):
                remove_tree(path, fast=True)
            else:
                # A claimed name we never filled: only an empty directory is removed.
                with contextlib.suppress(OSError):
                    if path == record.claim:
                        os.rmdir(path)
        remove_tree(self.build_dir)  # inside our control dir: always ours
        remove_tree(self.pooled_dir)
        remove_tree(self.stamp)
        remove_tree(self.tree_cache)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.record_path)
        self.lock.unlink_and_close()

    def close(self) -> None:
        """Stop holding the entry (what makes a pooled record available again)."""
        self.lock.close()

    # --- the record's lifecycle (the table in the module docstring) --------------------

    def _expect(self, *states: State) -> None:
        """Refuse a change the lifecycle does not allow from the record's current state.

        Such a change is a bug in this module. Each method checks before doing anything,
        so a refused change leaves the record on disk (a claim the next scan acts on) and
        the files it names as they were.
        """
        if self.record.state not in states:
            found = self.record.state
            raise AssertionError(
                f"pytest-aiops: worktree record {self.record_path!r} is "
                f"{repr(found.value) if found is not None else 'in no known state'}, not "
                f"{' or '.join(repr(state.value) for state in states)}"
            )

    def _write(self, record: CheckoutRecord) -> None:
        """Make ``record`` this entry's record, on disk first: the one writer of records."""
        _write_json(self.record_path, record.to_json())
        self.record = record

    def make_build_dir(self) -> str:
        """Make the build dir (``creating``) and record it as the checkout's ``path``, with
        its inode: the proof that lets a reclaim delete the directory, wherever it is
        renamed to. Returns its path."""
        self._expect(State.CREATING)
        build = self.build_dir
        os.mkdir(build, 0o755)
        st = os.lstat(build)
        self._write(replace(self.record, ino=st.st_ino, dev=st.st_dev, path=build))
        return build

    def git_started(self, pid: int) -> None:
        """``on_start`` callback: record the git now writing into this checkout (a reclaim
        ends it, and the processes it left, before deleting what it writes to)."""
        self._expect(State.CREATING, State.LIVE)
        self._write(replace(self.record, git_session=(pid, boot_ticks())))

    def claim_name(self, base: str) -> str:
        """Reserve ``R/<base>`` (or ``R/<base>-2``, ``-3``...) as an empty dir; its path.

        ``mkdir`` is the atomic claim: two live leases of the same session id (two
        processes, or a second lease in one) get different names, and a directory we did
        not create is never reused. The record names the claim before it exists, so a crash
        leaves it attributable; only the empty directory is ever removed for it.
        """
        self._expect(State.CREATING, State.LIVE)
        for number in range(1, 10_000):
            name = base if number == 1 else f"{base}-{number}"
            path = os.path.join(self.root, name)
            if os.path.lexists(path):
                continue
            self._write(replace(self.record, claim=path))
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                continue
            return path
        raise WorktreeNameError(
            errno.EEXIST, "no free worktree name", os.path.join(self.root, base)
        )

    def move_built_to(self, path: str) -> None:
        """Rename the filled build dir onto our empty claim ``path``: atomic, so ``R/<name>``
        only ever appears whole. Recorded first: the record names it either way."""
        self._expect(State.CREATING)
        self._write(replace(self.record, path=path))
        os.rename(self.build_dir, path)

    def mark_created(self, *, git_dir: str, filled_at: float) -> None:
        """``creating`` -> ``live``: the fresh checkout, whose files git wrote at
        ``filled_at``, is handed to its session now (a worktree's registration already
        points at its path)."""
        self._expect(State.CREATING)
        self._write(
            replace(
                self.record,
                state=State.LIVE,
                git_dir=git_dir,
                claim=None,
                filled_at=filled_at,
                handed_at=time.time(),
                settled=False,
                index_id=index_identity(git_dir),
                pid=os.getpid(),
            )
        )

    def mark_reused(self, info: RepoInfo, session_id: str) -> None:
        """``pooled`` -> ``live``: this pooled checkout (still in the pool dir) is handed to
        ``session_id`` of ``info``'s repository.

        It was restored and is untouched since: every change from now on is the test's,
        and the stamp made here lets the next restore find them without asking git. The
        gits a pooled record names all finished, and ours are waited for: trusted.
        """
        self._expect(State.POOLED)
        self.trusted = True
        make_stamp(self.stamp)
        self._write(
            replace(
                self.record,
                state=State.LIVE,
                handed_at=time.time(),
                stamped=True,
                session_id=session_id,
                repo_root=info.repo_root,
                object_format=info.object_format,
                created_at=time.time(),
                pid=os.getpid(),
            )
        )

    def move_pooled_to(self, path: str) -> None:
        """Rename the reused checkout from the pool dir onto our empty claim ``path``
        (atomically), then record it there; a clone's git dir moved with it."""
        self._expect(State.LIVE)
        os.rename(self.pooled_dir, path)
        git_dir = self.record.git_dir
        if self.record.isolation == CLONE:
            git_dir = os.path.join(path, ".git")
        self._write(replace(self.record, path=path, claim=None, git_dir=git_dir))

    def mark_switched(self, commit: str) -> None:
        """The reused checkout now holds ``commit`` (a full checkout just wrote its files):
        no stamp covers that, and the index is new."""
        self._expect(State.LIVE)
        now = time.time()
        self._write(
            replace(
                self.record,
                commit=commit,
                stamped=False,
                filled_at=now,
                handed_at=now,
                settled=False,
                index_id=index_identity(str(self.record.git_dir)),
            )
        )

    def mark_working_state(self) -> None:
        """The user's working state was laid on the checkout: the index now differs from the
        commit's, so no index identity is kept and the next restore runs a full checkout."""
        self._expect(State.LIVE)
        now = time.time()
        self._write(
            replace(self.record, index_id=None, filled_at=now, handed_at=now, settled=False)
        )

    def move_to_pool(
        self, *, index_id: tuple[int, ...], restored_at: float, checked_out: bool
    ) -> None:
        """``live`` -> ``pooled``: the checkout was restored (started at ``restored_at``; a
        full checkout ran if ``checked_out``), leaving the index ``index_id``. It leaves
        ``R/<name>`` for the pool dir (the name is free for the next session at once, and
        nobody looks for a worktree there); the state is written last, so a crash before it
        leaves an orphan, never a pooled record of a half-restored checkout.
        """
        self._expect(State.LIVE)
        record = self.record
        os.rename(str(record.path), self.pooled_dir)
        git_dir = record.git_dir
        if record.isolation == CLONE:
            git_dir = os.path.join(self.pooled_dir, ".git")
        self._write(
            replace(
                record,
                git_dir=git_dir,
                path=self.pooled_dir,
                state=State.POOLED,
                settled=record.settled or checked_out,
                index_id=index_id,
                # A new index means git wrote files: the restore's checkout ran.
                filled_at=restored_at if index_id != record.index_id else record.filled_at,
                stamped=False,
                released_at=time.time(),
            )
        )

    def keep(self) -> None:
        """``live`` -> ``kept``: leave the checkout for the user, then drop the lock.

        Its git registration stays (``git worktree list`` shows it, ``git worktree remove``
        removes it); scans skip it until its directory is gone.
        """
        self._expect(State.LIVE)
        self._write(replace(self.record, state=State.KEPT, kept_at=time.time()))
        self.close()


def new_entry(root: str, key: PoolKey, info: RepoInfo, session_id: str) -> Entry:
    """A new, locked entry (state ``creating``) for a checkout serving ``key`` to
    ``session_id`` of ``info``'s repository, its record written before anything exists."""
    token = f"aiops-{secrets.token_hex(8)}"
    lock = OwnerLock.create(os.path.join(control_dir(root), f"{token}.lock"))
    record = CheckoutRecord(
        token=token,
        state=State.CREATING,
        session_id=session_id,
        repo_root=info.repo_root,
        common_dir=key.common_dir,
        object_format=info.object_format,
        isolation=key.isolation,
        commit=key.commit,
        target_path=key.target_path,
        created_at=time.time(),
        pid=os.getpid(),
        host=socket.gethostname(),
    )
    entry = Entry(root, token, lock, record)
    entry.trusted = True
    try:
        entry._write(record)
    except BaseException:
        lock.unlink_and_close()
        raise
    return entry


def take_entry(root: str, token: str) -> Entry | None:
    """Lock an existing entry that nobody holds; ``None`` if live elsewhere or gone."""
    lock = OwnerLock.take(os.path.join(control_dir(root), f"{token}.lock"))
    if lock is None:
        return None
    record_path = os.path.join(control_dir(root), f"{token}.json")
    data = _read_json(record_path)
    if data is None:
        if os.path.lexists(record_path):
            # Discarding it would forget the checkout it describes while leaving it behind.
            lock.close()
            _ignored(record_path, "it cannot be read as a record")
            return None
        data = {}  # a crash before the first save: only the lock and build dir exist
    return Entry(root, token, lock, CheckoutRecord.from_json(data))


def _ignored(record_path: str, why: str) -> None:
    """Warn that a record is not acted on (and why); nothing it names is touched."""
    warnings.warn(
        f"pytest-aiops: ignoring worktree record {record_path!r}: {why}",
        AiopsWarning,
        stacklevel=3,
    )


def _read_record(root: str, token: str) -> CheckoutRecord:
    """The record of ``token`` as found (an empty one if missing or unreadable)."""
    return CheckoutRecord.from_json(
        _read_json(os.path.join(control_dir(root), f"{token}.json")) or {}
    )


def _record_of(root: str, token: str, record: CheckoutRecord, state: str) -> WorktreeRecord:
    return WorktreeRecord(
        path=record.path or os.path.join(control_dir(root), token),
        repo_root=record.repo_root,
        pid=record.pid,
        host=record.host,
        created_at=record.created_at,
        session_id=record.session_id,
        state=state,
        isolation=record.isolation,
        commit=record.commit,
        target_path=record.target_path,
        token=token,
        record_path=os.path.join(control_dir(root), f"{token}.json"),
    )


def list_worktrees(root: str) -> list[WorktreeRecord]:
    """Every checkout recorded under ``root`` with its state; takes no lock, changes nothing.

    Only a root private to us is read (:class:`UnsafeDirectoryError` otherwise)."""
    if not verified_root(root):
        return []
    records = []
    for token in _tokens(root):
        record = _read_record(root, token)
        lock_path = os.path.join(control_dir(root), f"{token}.lock")
        if OwnerLock.held_elsewhere(lock_path):
            state = LIVE
        else:
            probe = Entry(root, token, OwnerLock(lock_path, -1), record)
            state = probe.classify()
        records.append(_record_of(root, token, record, state))
    return records


def reclaim_orphans(
    root: str, *, dry_run: bool = False, include_pooled: bool = False, include_kept: bool = False
) -> list[WorktreeRecord]:
    """Delete orphaned checkouts under ``root``, pooled ones with ``include_pooled``, and
    those kept for the user (``--aiops-keep``) with ``include_kept``.

    An entry is only touched after taking its owner lock, so nothing a live process holds
    is ever removed. Returns the entries removed (or, with ``dry_run``, that would be).
    Only a root private to us is read (:class:`UnsafeDirectoryError` otherwise): a record
    anyone else could have written would be an order to delete, not a claim.
    """
    if not verified_root(root):
        return []
    removed = []
    for token in _tokens(root):
        entry = take_entry(root, token)
        if entry is None:
            continue
        try:
            state = entry.classify()
            if state == ORPHANED and has_live_descendants(entry.record.path):
                continue  # a live child session works inside it
            if (
                state == ORPHANED
                or (state == POOLED and include_pooled)
                or (state == KEPT and include_kept)
            ):
                removed.append(_record_of(root, token, entry.record, state))
                if not dry_run:
                    entry.discard()
        finally:
            entry.close()
    return removed


def scan_pool(root: str, key: PoolKey, *, take: bool = True) -> Entry | None:
    """Reclaim every orphan under ``root`` and take the best pooled entry matching ``key``.

    Best: same commit (no checkout needed), then any. ``take=False``: only reclaim.
    """
    best: Entry | None = None
    best_rank = -1
    for token in _tokens(root):
        entry = take_entry(root, token)
        if entry is None:
            continue  # live: held by its owner
        keep = False
        try:
            state = entry.classify()
            idle = time.time() - (entry.record.released_at or time.time())
            if state == ORPHANED and has_live_descendants(entry.record.path):
                continue  # a live child session works inside it
            if state == ORPHANED or (state == POOLED and idle > POOL_MAX_IDLE):
                entry.discard()
                continue
            if take and state == POOLED and entry.record.matches(key, commit=False):
                rank = int(entry.record.commit == key.commit)
                if rank > best_rank:
                    if best is not None:
                        best.close()
                    best, best_rank, keep = entry, rank, True
        finally:
            if not keep:
                entry.close()
    return best


def sweep_deleted_repositories(base: str) -> None:
    """Delete what roots under a default base hold for repositories that no longer exist.

    Test suites make repositories in temporary directories; their pooled checkouts would
    otherwise stay in /dev/shm after the repository is gone. Once per process and base;
    entries are taken by their lock first, so a live checkout is never touched.
    """
    if base in _SWEPT:
        return
    _SWEPT.add(base)
    try:
        roots = [os.path.join(base, name) for name in os.listdir(base)]
    except OSError:
        return
    for root in roots:
        gone = False
        try:
            if not verified_root(root):
                continue
        except UnsafeDirectoryError as error:
            warnings.warn(f"pytest-aiops: not sweeping {error}", AiopsWarning, stacklevel=2)
            continue
        for token in _tokens(root):
            common_dir = _read_record(root, token).common_dir
            if not common_dir or os.path.isdir(common_dir):
                continue
            gone = True
            entry = take_entry(root, token)
            if entry is not None:
                try:
                    entry.discard()
                finally:
                    entry.close()
        if gone:
            # The repository is gone, so nobody provisions into this root any more: drop it
            # if that left it empty (rmdir refuses anything else).
            for directory in (control_dir(root), root):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)


def evict_pooled(root: str, keep: int) -> int:
    """Delete the least recently released pooled checkouts of ``root`` until at most ``keep``
    remain (whatever their repository state, commit or isolation); how many were deleted.

    The pool's bound (``poolSize``) is for the whole root: checkouts live in RAM on
    ``/dev/shm``. Each is taken by its owner lock first, so one another process is handing
    out right now is neither counted nor touched; two processes releasing at the same moment
    may each leave ``keep`` and then pool one more, which the next release evicts.
    """
    pooled: list[tuple[float, Entry]] = []
    try:
        for token in _tokens(root):
            entry = take_entry(root, token)
            if entry is None:
                continue
            if entry.classify() == POOLED:
                pooled.append((entry.record.released_at or 0.0, entry))
            else:
                entry.close()
        pooled.sort(key=lambda item: item[0])
        evicted = 0
        for _, entry in pooled[: max(0, len(pooled) - keep)]:
            entry.discard()
            evicted += 1
        return evicted
    finally:
        for _, entry in pooled:
            entry.close()


def has_live_descendants(path: str | None) -> bool:
    """Whether a live process holds a checkout nested under ``path`` (a child session's).

    A child's checkout lives inside its parent's, so deleting an orphaned parent would pull
    the tree out from under a child that outlived it; such a parent waits until its
    children are gone.
    """
    if not path:
        return False
    for child_root in iter_child_roots(path):
        for token in _tokens(child_root):
            lock_path = os.path.join(control_dir(child_root), f"{token}.lock")
            if OwnerLock.held_elsewhere(lock_path):
                return True
            if has_live_descendants(_read_record(child_root, token).path):
                return True
    return False


def iter_child_roots(path: str) -> Iterator[str]:
    """Roots of child sessions' checkouts under a checkout (``.ai_ops/child-worktrees/*``)."""
    base = os.path.join(path, ".ai_ops", "child-worktrees")
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        candidate = os.path.join(base, name)
        if os.path.isdir(os.path.join(candidate, CONTROL)):
            yield candidate
