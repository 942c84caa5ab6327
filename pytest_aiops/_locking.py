"""Machine-wide byte-range locks on one file that the kernel drops when their holder dies.

Every lease is one open file description of ``<lockDirectory>/ports.lock`` holding Linux
open file description (OFD) locks, ``F_OFD_SETLK``, on regions of the file that stand for
things, not data (the file stays empty; locks past the end of a file are allowed):

==========================  ===========================  ==================================
bytes                       lock                         meaning
==========================  ===========================  ==================================
``P`` (0..65535)            shared                       port P belongs to a live lease
``CHILD_BASE + P``          exclusive                    port P belongs to a live child
``RANGE_BASE + S<<16 + E``  shared                       a live top-level lease is S..E
``ID_BASE + id``            exclusive                    lease ``id`` is alive
==========================  ===========================  ==================================

A top-level lease takes an *exclusive* lock on its ports (fails if any live lease, top-level
or child, holds one of them) and then converts it in place to *shared*: the conversion is
atomic, so no other top-level leaser gets in between, and its children may add their own
shared locks on their slices. A child takes an exclusive lock on its slice in the child
region (two children can never hold the same port), a shared lock on the same ports (its
ports stay reserved even if the parent ends first) and then checks that its parent is still
alive (its lease id, or a live lease of exactly the parent's range): a dead parent's ports
may already belong to someone else.

OFD locks are owned by the open file, not the process: two leases in one process conflict
like two processes do, closing an unrelated descriptor does not drop them (the classic POSIX
``fcntl`` trap), and the kernel drops them when the last descriptor closes -- at exit,
SIGKILL included. One descriptor per lease, whatever its size. The lock file is never
unlinked (unlinking races with a process that has just opened it). A ``fork()`` child shares
the description, so a lease lives while either process does; ``O_CLOEXEC`` keeps it out of
``exec``'d programs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator

from ._errors import LockError
from ._trust import escape, owner_name, shared_problem

PORTS_FILE = "ports.lock"
MAX_PORT = 65535
CHILD_BASE = 1 << 16
RANGE_BASE = 1 << 32
ID_BASE = 1 << 48
ID_BITS = 47

if sys.platform.startswith("linux"):
    # Values from <fcntl.h>; Python has the names since 3.9, on Linux only.
    F_OFD_GETLK: int = getattr(fcntl, "F_OFD_GETLK", 36)
    F_OFD_SETLK: int = getattr(fcntl, "F_OFD_SETLK", 37)
else:  # pragma: no cover - exercised only off Linux
    F_OFD_GETLK = F_OFD_SETLK = -1

_OPEN_FLAGS = (
    os.O_RDWR
    | os.O_CLOEXEC
    # O_NOFOLLOW: a symlink planted at the lock file's name is refused (ELOOP), never
    # followed. O_NONBLOCK: a FIFO planted there cannot hang open(); harmless on a file.
    | getattr(os, "O_NOFOLLOW", 0)
    | os.O_NONBLOCK
)


class _Flock(ctypes.Structure):
    # struct flock from <fcntl.h>; ctypes applies the C ABI's padding for this platform.
    _fields_ = (
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int),
    )


def _flock(kind: int, start: int, end: int) -> bytes:
    return bytes(_Flock(kind, os.SEEK_SET, start, end - start + 1, 0))


def supported() -> bool:
    """Whether this platform has OFD locks (Linux 3.15+)."""
    return F_OFD_SETLK != -1


def range_byte(start: int, end: int) -> int:
    """The byte whose shared lock says "a live lease covers exactly ``start..end``"."""
    return RANGE_BASE + (start << 16) + end


def _lock_error(path: str, what: str, error: OSError | None = None) -> LockError:
    reason = f" ({error.strerror or error})" if error is not None else ""
    return LockError(
        f"lock file {path!r} {what}{reason}; remove whatever is at that path or choose "
        "another lockDirectory",
        lock_path=path,
    )


class RangeLockFile:
    """One open file description of ``ports.lock``; its locks live as long as it is open."""

    def __init__(self, directory: str, *, create: bool = True) -> None:
        self.path = os.path.join(directory, PORTS_FILE)
        self.fd = -1
        if not supported():  # pragma: no cover
            raise LockError(
                "pytest-aiops port leasing needs Linux open file description locks "
                f"(F_OFD_SETLK, Linux 3.15+), which {sys.platform} does not have",
                lock_path=self.path,
            )
        self.fd = self._open(create)
        try:
            info = os.fstat(self.fd)
            if not stat.S_ISREG(info.st_mode):
                raise _lock_error(self.path, "is not a regular file")
            if info.st_nlink != 1:
                # A hard link planted in a shared directory could point at any file; we
                # never write to the lock file, but refuse to touch a file that is not ours.
                raise _lock_error(self.path, f"has {info.st_nlink} hard links, not 1")
        except BaseException:
            self.close()
            raise

    def _open(self, create: bool) -> int:
        """Open ``ports.lock`` relative to a descriptor of its (trusted) directory, and make
        sure the name still names what we opened: nobody else can have swapped it."""
        directory = os.path.dirname(self.path)
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as error:
            raise _lock_error(self.path, "cannot be opened", error) from error
        try:
            problem = shared_problem(os.fstat(dir_fd))
            if problem is not None:
                raise untrusted_error(directory, problem)
            fd = self._open_in(dir_fd, create)
            try:
                info = os.fstat(fd)
                if info.st_uid not in (0, os.geteuid()):
                    # Its owner could rename it away and put a fresh one in its place while
                    # we hold locks on it: two live leases would then share ports.
                    raise untrusted_error(
                        self.path, f"owned by {owner_name(info.st_uid)}, not by root or this user"
                    )
                named = os.stat(PORTS_FILE, dir_fd=dir_fd, follow_symlinks=False)
                if (named.st_ino, named.st_dev) != (info.st_ino, info.st_dev):
                    raise _lock_error(self.path, "was replaced while being opened")
            except BaseException:
                os.close(fd)
                raise
            return fd
        finally:
            os.close(dir_fd)

    def _open_in(self, dir_fd: int, create: bool) -> int:
        for _ in range(3):
            if create:
                try:
                    fd = os.open(
                        PORTS_FILE, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dir_fd
                    )
                except FileExistsError:
                    pass  # the usual case: somebody created it before
                except OSError as error:
                    raise _lock_error(self.path, "cannot be created", error) from error
                else:
                    with contextlib.suppress(OSError):
                        # Only a file we just created: every user of the machine shares it
                        # (a write lock needs a descriptor open for writing).
                        os.fchmod(fd, 0o666)
                    return fd
            try:
                return os.open(PORTS_FILE, _OPEN_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                if not create:
                    raise
                continue  # removed between our O_EXCL attempt and this open: try again
            except OSError as error:
                # ELOOP: a symlink; EISDIR: a directory; EACCES: someone else's private file.
                raise _lock_error(self.path, "cannot be opened", error) from error
        raise _lock_error(self.path, "keeps disappearing")

    def try_lock(self, start: int, end: int, *, shared: bool) -> bool:
        """Lock bytes ``start..end`` (inclusive) without waiting; ``False`` if held elsewhere.

        Locking a range this description already holds converts the lock type atomically
        (used to turn exclusive into shared).
        """
        kind = fcntl.F_RDLCK if shared else fcntl.F_WRLCK
        try:
            fcntl.fcntl(self.fd, F_OFD_SETLK, _flock(kind, start, end))
        except OSError as error:
            # EAGAIN is what Linux returns for a conflicting lock; POSIX also allows EACCES.
            if error.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise LockError(
                f"cannot lock {self.path!r} bytes {start}-{end} ({error.strerror})",
                lock_path=self.path,
            ) from error
        return True

    def unlock(self, start: int, end: int) -> None:
        fcntl.fcntl(self.fd, F_OFD_SETLK, _flock(fcntl.F_UNLCK, start, end))

    def is_locked(self, start: int, end: int) -> bool:
        """Whether another open file description holds any lock overlapping the range."""
        result = fcntl.fcntl(self.fd, F_OFD_GETLK, _flock(fcntl.F_WRLCK, start, end))
        return bool(_Flock.from_buffer_copy(result).l_type != fcntl.F_UNLCK)

    def take_lease_id(self) -> int:
        """Lock a fresh random lease id (exclusive) and return it."""
        while True:
            lease_id = secrets.randbits(ID_BITS)
            # A collision with a live lease is astronomically rare; the lock makes it safe.
            if self.try_lock(ID_BASE + lease_id, ID_BASE + lease_id, shared=False):
                return lease_id

    def close(self) -> None:
        """Close the description, which drops every lock it holds."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __del__(self) -> None:
        # A lease that is garbage-collected unreleased still frees its ports.
        with contextlib.suppress(OSError):
            self.close()


class RangeClaim:
    """What a held lease owns: one open description; releasing closes it."""

    def __init__(self, handle: RangeLockFile, lease_id: int) -> None:
        self.handle = handle
        self.lease_id = lease_id

    def release(self) -> None:
        # Close, never F_UNLCK: a fork()ed child sharing the description must not be able
        # to drop its parent's locks, and closing drops exactly this lease's locks.
        self.handle.close()


class TopLevelScanner:
    """Tries blocks one after another on one open description until one is won.

    A failed attempt holds nothing, so the same descriptor is reused: a scan past many
    held blocks costs one ``fcntl`` per block, not an ``open``.
    """

    def __init__(self, directory: str) -> None:
        self.handle = RangeLockFile(directory)

    def try_block(self, start: int, end: int) -> bool:
        """Exclusive lock on ``start..end``; ``True`` if won (then :meth:`finish` or
        :meth:`give_back`)."""
        return self.handle.try_lock(start, end, shared=False)

    def give_back(self, start: int, end: int) -> None:
        """Drop a won block again (e.g. a port in it is busy)."""
        self.handle.unlock(start, end)

    def finish(self, start: int, end: int) -> RangeClaim:
        """Turn the won block into a lease: identity locks, then exclusive -> shared."""
        try:
            lease_id = self.handle.take_lease_id()
            if not self.handle.try_lock(*(range_byte(start, end),) * 2, shared=True):
                # Nobody can hold it: every holder of this byte also holds our ports.
                raise LockError(
                    f"range marker for {start}-{end} in {self.handle.path!r} is held "
                    "without its ports; is something else locking this file?",
                    lock_path=self.handle.path,
                )
            # Exclusive -> shared on the same description is one atomic conversion: no other
            # top-level leaser can get in between, and our children may now join.
            self.handle.try_lock(start, end, shared=True)
        except BaseException:
            self.handle.close()
            raise
        return RangeClaim(self.handle, lease_id)

    def close(self) -> None:
        self.handle.close()


class ParentGoneError(LockError):
    """A child slice was requested but its parent lease no longer exists."""


def claim_child(
    directory: str,
    start: int,
    end: int,
    *,
    parent: tuple[int, int],
    parent_lease_id: int | None = None,
) -> RangeClaim | None:
    """Lease the slice ``start..end`` of the live parent lease ``parent_start..parent_end``.

    ``None`` if a sibling holds (part of) the slice; :class:`ParentGoneError` if the parent
    lease (``parent_lease_id`` if given, else any live lease of exactly the parent's range)
    has ended, since its ports may already belong to another lease.
    """
    parent_start, parent_end = parent
    handle = RangeLockFile(directory)
    try:
        if not handle.try_lock(CHILD_BASE + start, CHILD_BASE + end, shared=False):
            handle.close()
            return None
        # Shared lock first, parent check second: if the parent is alive *after* our lock is
        # in place, it was alive when we placed it, so no top-level lease could hold these
        # ports then, and from now on our own lock keeps them out. The lock itself fails only
        # while a top-level leaser holds an exclusive lock here, i.e. the parent is gone.
        alive = handle.try_lock(start, end, shared=True)
        if alive:
            marker = range_byte(parent_start, parent_end)
            alive = handle.is_locked(marker, marker)
        if alive and parent_lease_id is not None:
            alive = handle.is_locked(ID_BASE + parent_lease_id, ID_BASE + parent_lease_id)
        if not alive:
            raise ParentGoneError(
                f"parent port range {parent_start}-{parent_end} is not held by a live lease "
                f"in {handle.path!r}; provision the parent session again",
                lock_path=handle.path,
            )
        lease_id = handle.take_lease_id()
    except BaseException:
        handle.close()
        raise
    return RangeClaim(handle, lease_id)


@contextlib.contextmanager
def hold_range(directory: str, start: int, end: int, *, child: bool) -> Iterator[bool]:
    """Briefly hold the exclusive lock a lease of ``start..end`` would need; yield if won."""
    handle = RangeLockFile(directory, create=False)
    try:
        offset = CHILD_BASE if child else 0
        yield handle.try_lock(start + offset, end + offset, shared=False)
    finally:
        handle.close()


def _probe_handle(directory: str) -> RangeLockFile | None:
    try:
        return RangeLockFile(directory, create=False)
    except FileNotFoundError:
        return None


def range_is_leased(directory: str, start: int, end: int) -> bool:
    """Whether a live lease (top-level or child) holds any port in ``start..end``."""
    handle = _probe_handle(directory)
    if handle is None:
        return False
    try:
        return handle.is_locked(start, end)
    finally:
        handle.close()


def live_lease_ids(directory: str, lease_ids: Iterable[int]) -> set[int]:
    """The subset of ``lease_ids`` whose lease is alive right now (asked of the kernel)."""
    handle = _probe_handle(directory)
    if handle is None:
        return set()
    try:
        return {i for i in lease_ids if handle.is_locked(ID_BASE + i, ID_BASE + i)}
    finally:
        handle.close()


LOCK_DIR_ENV = "PYTEST_AIOPS_LOCK_DIR"
LOCK_DIR_HINT = f"set --aiops-lock-dir, ${LOCK_DIR_ENV} or the lockDirectory option"


def untrusted_error(path: str, problem: str) -> LockError:
    """A lock directory or ``ports.lock`` another user controls: refused (see README,
    "Threat model"), never used and never replaced by a private fallback."""
    return LockError(
        f"lock directory path {path!r} is {escape(problem)}: another user could split or "
        "redirect port leases there, so it is refused; set --aiops-lock-dir or "
        f"${LOCK_DIR_ENV} (CLI: --lock-dir) to a directory of your own, or have root create "
        "a shared one (install -d -m 1777)",
        lock_path=path,
    )


def _directory_error(path: str, reason: str, error: OSError | None = None) -> LockError:
    message = (
        f"lockDirectory must be a writable directory, not {path!r} ({reason}); {LOCK_DIR_HINT}"
    )
    return LockError(message, lock_path=path)


def ensure_directory(path: str) -> str:
    """Create the configured lock directory ``path`` (and parents) if needed.

    Symlinks in a path the user chose are the user's business and are followed. Raises
    :class:`LockError` naming the path and the option when it is not a writable directory.
    """
    if os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK):
        return path  # the usual case, two syscalls
    try:
        os.makedirs(path, mode=0o777, exist_ok=True)
    except FileExistsError:
        pass  # a file where the directory should be: reported below
    except OSError as error:
        # ENOTDIR: a regular file in the path; EACCES/EROFS: cannot create it.
        raise _directory_error(path, error.strerror or str(error)) from error
    if not os.path.isdir(path):
        raise _directory_error(path, "not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise _directory_error(path, "Permission denied")
    return path


def ensure_shared_directory(path: str, root: str) -> str:
    """Create the machine-wide lock directory ``path`` below the existing ``root`` (``/tmp``).

    Each directory we create below ``root`` is world-writable and sticky (mode 1777, like
    ``/tmp``) so every user of the machine shares it. Since ``root`` is writable by anyone, a
    symlink at one of those names could have been planted by another user to steer our
    files elsewhere: it is refused, never followed.
    """
    relative = os.path.relpath(path, root)
    current = root
    for part in relative.split(os.sep):
        current = os.path.join(current, part)
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current, 0o777)
            except FileExistsError:
                pass  # created concurrently by another process: checked below
            except OSError as error:
                raise _directory_error(current, error.strerror or str(error)) from error
            else:
                with contextlib.suppress(OSError):
                    os.chmod(current, 0o1777)  # mkdir's mode went through the umask
            info = os.lstat(current)
        if stat.S_ISLNK(info.st_mode):
            raise _directory_error(current, "a symlink, refused in a shared directory")
        if not stat.S_ISDIR(info.st_mode):
            raise _directory_error(current, "not a directory")
        problem = shared_problem(info)
        if problem is not None:
            # Its owner could rename or swap what is in it while we hold leases there.
            raise untrusted_error(current, problem)
    if not os.access(path, os.W_OK | os.X_OK):
        raise _directory_error(path, "Permission denied")
    return path
