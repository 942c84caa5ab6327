"""Machine-wide byte-range locks that the kernel drops when their holder dies.

A lock directory holds two files whose *bytes* stand for TCP ports (byte N = port N):

- ``ports.lock``: top-level leases. A leaser takes an exclusive lock on its range (fails if
  any live lease, top-level or child, overlaps) and converts it in place to a shared lock,
  which atomically keeps further top-level leasers out while letting the lease's own
  children join it.
- ``children.lock``: child slices. A child takes an exclusive lock on its slice here (so two
  children can never hold the same ports) and a shared lock on the same ports in
  ``ports.lock`` (so its ports stay reserved even if its parent dies first).

Locks are Linux open file description (OFD) locks, ``F_OFD_SETLK``: owned by the open file,
not the process, so two leases in one process conflict like two processes do, closing an
unrelated descriptor does not drop them (the classic POSIX ``fcntl`` trap), and the kernel
releases them when the holder exits, SIGKILL included. A whole range costs one descriptor,
whatever its size. Lock files are never unlinked (unlinking races with a waiter).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import sys
from dataclasses import dataclass

from ._errors import LockError

PORTS_FILE = "ports.lock"
CHILDREN_FILE = "children.lock"

if sys.platform.startswith("linux"):
    # Values from <fcntl.h>; Python exposes them since 3.9 on Linux but not everywhere.
    F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
    F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
else:  # pragma: no cover - exercised only off Linux
    F_OFD_GETLK = F_OFD_SETLK = -1


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


def ensure_directory(path: str, option: str = "lockDirectory") -> str:
    """Create ``path`` (world-writable and sticky, like /tmp, when we create it).

    Raises :class:`LockError` naming ``option`` when it cannot be a writable directory.
    """
    try:
        os.makedirs(path, mode=0o777, exist_ok=True)
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied", path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise LockError(
            f"{option} must be a writable directory, not {path!r} ({reason}); "
            f"choose another with the {option} option (--aiops-lock-dir in pytest)",
            lock_path=path,
        ) from error
    return path


def shared_directory(path: str) -> str:
    """:func:`ensure_directory` and, if we own it, make it sticky world-writable (mode 1777)."""
    ensure_directory(path)
    try:
        info = os.stat(path)
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o1777:
            os.chmod(path, 0o1777)
    except OSError:
        pass  # someone else's directory that we may still use
    return path


class RangeLockFile:
    """One open file description of a lock file; its locks live as long as it is open."""

    def __init__(self, directory: str, name: str) -> None:
        self.path = os.path.join(directory, name)
        if not supported():  # pragma: no cover
            raise LockError(
                "pytest-aiops port leasing needs Linux open file description locks "
                f"(F_OFD_SETLK), which {sys.platform} does not have",
                lock_path=self.path,
            )
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            # O_NOFOLLOW: a symlink planted at this name is refused, never followed.
            self.fd = os.open(self.path, flags, 0o666)
        except OSError as error:
            raise LockError(
                f"cannot open lock file {self.path!r} ({error.strerror or error}); "
                "remove whatever is at that path or choose another lockDirectory",
                lock_path=self.path,
            ) from error
        try:
            info = os.fstat(self.fd)
            if not stat.S_ISREG(info.st_mode):
                raise LockError(
                    f"lock file {self.path!r} is not a regular file; remove it or choose "
                    "another lockDirectory",
                    lock_path=self.path,
                )
            if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o666:
                os.fchmod(self.fd, 0o666)  # so every user of the machine can share it
        except BaseException:
            os.close(self.fd)
            raise

    def try_lock(self, start: int, end: int, *, shared: bool) -> bool:
        """Lock bytes ``start..end`` (inclusive) without waiting; ``False`` if held elsewhere.

        Calling it again on a range this description already holds converts the lock type
        atomically (used to downgrade exclusive to shared).
        """
        kind = fcntl.F_RDLCK if shared else fcntl.F_WRLCK
        try:
            fcntl.fcntl(self.fd, F_OFD_SETLK, _flock(kind, start, end))
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise LockError(
                f"cannot lock {self.path!r} bytes {start}-{end}: {error.strerror}",
                lock_path=self.path,
            ) from error
        return True

    def unlock(self, start: int, end: int) -> None:
        fcntl.fcntl(self.fd, F_OFD_SETLK, _flock(fcntl.F_UNLCK, start, end))

    def is_locked(self, start: int, end: int) -> bool:
        """Whether any other open file description holds a lock overlapping the range."""
        result = fcntl.fcntl(self.fd, F_OFD_GETLK, _flock(fcntl.F_WRLCK, start, end))
        return bool(_Flock.from_buffer_copy(result).l_type != fcntl.F_UNLCK)

    def close(self) -> None:
        """Close the description, which drops every lock it holds."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        # A leaked lease still frees its ports when garbage-collected.
        try:
            self.close()
        except OSError:
            pass


@dataclass(frozen=True)
class RangeClaim:
    """What a held range lease owns; closing it releases everything at once."""

    files: tuple[RangeLockFile, ...]

    def release(self) -> None:
        for handle in self.files:
            handle.close()


def claim_top_level(directory: str, start: int, end: int) -> RangeClaim | None:
    """Lease ``start..end`` as a top-level range, or ``None`` if any live lease overlaps."""
    handle = RangeLockFile(directory, PORTS_FILE)
    try:
        if not handle.try_lock(start, end, shared=False):
            handle.close()
            return None
        # Exclusive -> shared on the same description is atomic: no other top-level leaser
        # can get in between, and our children may now add their own shared locks.
        handle.try_lock(start, end, shared=True)
    except BaseException:
        handle.close()
        raise
    return RangeClaim((handle,))


def claim_child(
    directory: str, start: int, end: int, parent_start: int, parent_end: int
) -> RangeClaim | None:
    """Lease the slice ``start..end`` of the live parent ``parent_start..parent_end``.

    ``None`` if a sibling holds (part of) the slice. A :class:`LockError` if no live lease
    covers the parent range (its holder ended, so the slice is no longer reserved).
    """
    ports = RangeLockFile(directory, PORTS_FILE)
    children: RangeLockFile | None = None
    try:
        if not ports.is_locked(parent_start, parent_end) or not ports.try_lock(
            start, end, shared=True
        ):
            raise LockError(
                f"parent port range {parent_start}-{parent_end} is not held by a live lease "
                f"in {ports.path!r}; provision the parent session again",
                lock_path=ports.path,
            )
        children = RangeLockFile(directory, CHILDREN_FILE)
        if not children.try_lock(start, end, shared=False):
            ports.close()
            children.close()
            return None
    except BaseException:
        ports.close()
        if children is not None:
            children.close()
        raise
    return RangeClaim((ports, children))


def range_is_leased(directory: str, start: int, end: int) -> bool:
    """Whether a live lease (top-level or child) overlaps ``start..end``."""
    path = os.path.join(directory, PORTS_FILE)
    if not os.path.lexists(path):
        return False
    handle = RangeLockFile(directory, PORTS_FILE)
    try:
        return handle.is_locked(start, end)
    finally:
        handle.close()
