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

Two backends implement the one primitive (:class:`ByteRangeLock`: try-lock a range shared or
exclusive, convert in place, test whether a range is held elsewhere, unlock, close), chosen
by platform or forced with ``$PYTEST_AIOPS_LOCK_BACKEND=ofd|posix``:

- ``ofd`` (Linux): open file description locks are owned by the open file, not the process:
  two leases in one process conflict like two processes do, closing an unrelated
  descriptor does not drop them (the classic POSIX ``fcntl`` trap), and the kernel drops
  them when the last descriptor closes -- at exit, SIGKILL included. One descriptor per
  lease, whatever its size. A ``fork()`` child shares the description, so a lease lives
  while either process does; ``O_CLOEXEC`` keeps it out of ``exec``'d programs.
- ``posix`` (macOS, the BSDs; forced on Linux for tests): ``F_SETLK``/``F_GETLK`` record
  locks belong to the *process*, and closing *any* descriptor of the file drops all of the
  process's locks on it. So, as SQLite's unix VFS does (``unixInodeInfo``), each process
  opens each lock file once (keyed by device and inode) and never closes it, and an
  in-process lock table decides conflicts between the leases of one process exactly as the
  kernel decides them between processes; the kernel holds, per byte, the strongest lock
  any of the process's leases wants. A ``fork()`` child inherits no POSIX lock: its copy
  of the parent's leases is inert (releasing it changes nothing), and it starts a table of
  its own. A descriptor of ``ports.lock`` that code outside pytest-aiops opens and closes in
  a leasing process drops that process's leases (kernel semantics; nothing can prevent it).

On Linux OFD and POSIX locks on one file conflict with each other, so processes using
either backend share one lock directory safely. The lock file is never unlinked
(unlinking races with a process that has just opened it).

The locks keep apart the processes that share the lock file (by default: ``/tmp``). On
Linux each lease is also a name in the network namespace (:mod:`.netns`), which keeps apart
the processes that share the ports but not the file; a block is won only with both.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import struct
import sys
import threading
from collections.abc import Iterable, Iterator

from .._core.ports import MAX_LEASE_ID  # lease ids: byte offsets past ID_BASE, below it
from .._core.trust import owner_name, shared_problem
from .._errors import LockError, ParentGoneError, UnsupportedPlatformError, escape
from . import netns
from .defaults import LOCK_DIR_CLI_OPTION, LOCK_DIR_ENV, LOCK_DIR_PLUGIN_OPTION

if sys.platform != "win32":  # Windows has no fcntl: importing must work, leasing fails
    import fcntl

PORTS_FILE = "ports.lock"
LEASES_DIR = "leases"  # the lease records (see .records)
CHILD_BASE = 1 << 16
RANGE_BASE = 1 << 32
ID_BASE = 1 << 48

if sys.platform.startswith("linux"):
    # Values from <fcntl.h>; Python has the names since 3.9, on Linux only.
    F_OFD_GETLK: int = getattr(fcntl, "F_OFD_GETLK", 36)
    F_OFD_SETLK: int = getattr(fcntl, "F_OFD_SETLK", 37)
else:  # pragma: no cover - exercised only off Linux
    F_OFD_GETLK = F_OFD_SETLK = -1

BACKEND_ENV = "PYTEST_AIOPS_LOCK_BACKEND"
OFD = "ofd"
POSIX = "posix"
BACKENDS = (OFD, POSIX)

_OPEN_FLAGS = (
    os.O_RDWR
    | getattr(os, "O_CLOEXEC", 0)
    # O_NOFOLLOW: a symlink planted at the lock file's name is refused (ELOOP), never
    # followed. O_NONBLOCK: a FIFO planted there cannot hang open(); harmless on a file.
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
)


#: ``struct flock`` from <fcntl.h> in the C ABI's layout and padding (native ``@``
#: alignment, the trailing ``0q`` pads the end as the compiler does): Linux puts the type
#: first, macOS and the BSDs the offsets first (off_t is 64-bit there; FreeBSD adds
#: ``l_sysid``). With :mod:`struct`, not ctypes: importing ctypes and building a Structure
#: cost every run that leases ports more than the lease itself (issue 23).
if sys.platform.startswith("linux"):
    _FLOCK = struct.Struct("@hhqqi0q")  # l_type, l_whence, l_start, l_len, l_pid

    def _flock(kind: int, start: int, end: int) -> bytes:
        """A ``struct flock`` for bytes ``start..end`` (inclusive), in this platform's
        layout."""
        return _FLOCK.pack(kind, os.SEEK_SET, start, end - start + 1, 0)

    def _flock_type(raw: bytes) -> int:
        return int(_FLOCK.unpack_from(raw)[0])

else:
    _SYSID = "i" if sys.platform.startswith("freebsd") else ""
    _FLOCK = struct.Struct(f"@qqihh{_SYSID}0q")  # l_start, l_len, l_pid, l_type, l_whence

    def _flock(kind: int, start: int, end: int) -> bytes:
        """A ``struct flock`` for bytes ``start..end`` (inclusive), in this platform's
        layout."""
        return _FLOCK.pack(start, end - start + 1, 0, kind, os.SEEK_SET, *([0] if _SYSID else []))

    def _flock_type(raw: bytes) -> int:
        return int(_FLOCK.unpack_from(raw)[3])


def _random_id(bits: int) -> int:
    """A random number of ``bits`` bits from the OS's generator, as ``secrets.randbits``
    makes one (without importing :mod:`secrets`, and through it :mod:`random`)."""
    size = (bits + 7) // 8
    return int.from_bytes(os.urandom(size), "big") >> (size * 8 - bits)


def backend_name() -> str:
    """The lock backend of this process: ``$PYTEST_AIOPS_LOCK_BACKEND``, else ``ofd`` on
    Linux and ``posix`` on other POSIX systems; :class:`LockError` where there is none.

    Read at every open: set it before the process leases anything, not halfway.
    """
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if sys.platform == "win32":
        raise UnsupportedPlatformError("port leasing", "POSIX fcntl byte-range locks")
    if forced and forced not in BACKENDS:
        raise LockError(
            f"${BACKEND_ENV} must be {' or '.join(BACKENDS)}, not {escape(forced)!r}",
            lock_path="",
        )
    if forced == OFD and F_OFD_SETLK == -1:
        raise LockError(
            f"${BACKEND_ENV}=ofd needs Linux open file description locks (F_OFD_SETLK, "
            f"Linux 3.15+), which {sys.platform} does not have; unset it to use the POSIX "
            "backend",
            lock_path="",
        )
    return forced or (OFD if F_OFD_SETLK != -1 else POSIX)


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


def _conflict(error: OSError) -> bool:
    # EAGAIN is what Linux returns for a conflicting lock; POSIX also allows EACCES.
    return error.errno in (errno.EAGAIN, errno.EACCES)


def _setlk_error(path: str, start: int, end: int, error: OSError) -> LockError:
    return LockError(f"cannot lock {path!r} bytes {start}-{end} ({error.strerror})", lock_path=path)


class ByteRangeLock:
    """The lock primitive: one holder's locks on byte ranges of one lock file.

    Two holders conflict as the kernel's record locks do, whether they live in two processes
    or in one: exclusive excludes everything, shared excludes exclusive. Locking a range the
    holder already holds converts it in place, atomically (exclusive -> shared).
    """

    path: str

    def try_lock(self, start: int, end: int, *, shared: bool) -> bool:
        """Lock bytes ``start..end`` (inclusive) without waiting; ``False`` if held elsewhere."""
        raise NotImplementedError

    def unlock(self, start: int, end: int) -> None:
        """Drop this holder's locks on ``start..end``."""
        raise NotImplementedError

    def is_locked(self, start: int, end: int) -> bool:
        """Whether another holder (this process's or another's) locks any byte of the range."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop every lock of this holder (idempotent)."""
        raise NotImplementedError


class _OfdLock(ByteRangeLock):
    """Linux: the holder is one open file description (one descriptor per lease)."""

    def __init__(self, path: str, create: bool) -> None:
        self.path = path
        self.fd = _open_lock_file(path, create)

    def try_lock(self, start: int, end: int, *, shared: bool) -> bool:
        kind = fcntl.F_RDLCK if shared else fcntl.F_WRLCK
        try:
            fcntl.fcntl(self.fd, F_OFD_SETLK, _flock(kind, start, end))
        except OSError as error:
            if _conflict(error):
                return False
            raise _setlk_error(self.path, start, end, error) from error
        return True

    def unlock(self, start: int, end: int) -> None:
        fcntl.fcntl(self.fd, F_OFD_SETLK, _flock(fcntl.F_UNLCK, start, end))

    def is_locked(self, start: int, end: int) -> bool:
        result = fcntl.fcntl(self.fd, F_OFD_GETLK, _flock(fcntl.F_WRLCK, start, end))
        return _flock_type(result) != fcntl.F_UNLCK

    def close(self) -> None:
        # Close, never F_UNLCK: a fork()ed child sharing the description must not be able
        # to drop its parent's locks, and closing drops exactly this lease's locks.
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class _Held:
    """One entry of the in-process table: ``holder`` locks ``start..end``."""

    __slots__ = ("end", "holder", "shared", "start")

    def __init__(self, holder: int, start: int, end: int, shared: bool) -> None:
        self.holder, self.start, self.end, self.shared = holder, start, end, shared


class _PosixFile:
    """The one descriptor of one lock file (device, inode) in this process, never closed
    while the process lives, and the table of which of its holders locks what."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self.held: list[_Held] = []
        self.spare: list[int] = []  # more descriptors of the same inode: never closed either


_POSIX_MUTEX = threading.Lock()
_POSIX_FILES: dict[tuple[int, int], _PosixFile] = {}
_POSIX_HOLDERS = itertools.count(1)


def _posix_after_fork_in_child() -> None:
    # A child holds no POSIX lock of its parent: forget the parent's table (the inherited
    # _PosixFile objects stay inert: their pid is the parent's) and take a fresh mutex.
    global _POSIX_MUTEX
    _POSIX_MUTEX = threading.Lock()
    _POSIX_FILES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        # Lambdas: the child rebinds _POSIX_MUTEX, so look it up at each fork.
        before=lambda: _POSIX_MUTEX.acquire(),  # noqa: PLW0108
        after_in_parent=lambda: _POSIX_MUTEX.release(),  # noqa: PLW0108
        after_in_child=_posix_after_fork_in_child,
    )


def _segments(start: int, end: int, held: Iterable[_Held]) -> list[tuple[int, int, int]]:
    """``start..end`` cut into ``(a, b, level)`` pieces: the strongest lock any entry of
    ``held`` wants there (0 none, 1 shared, 2 exclusive)."""
    points = {start, end + 1}
    relevant = [h for h in held if h.start <= end and h.end >= start]
    for entry in relevant:
        points.update(p for p in (entry.start, entry.end + 1) if start < p <= end)
    edges = sorted(points)
    pieces: list[tuple[int, int, int]] = []
    for a, b in itertools.pairwise(edges):
        level = max(
            (1 if h.shared else 2 for h in relevant if h.start <= a and h.end >= b - 1),
            default=0,
        )
        if pieces and pieces[-1][2] == level and pieces[-1][1] == a - 1:
            pieces[-1] = (pieces[-1][0], b - 1, level)
        else:
            pieces.append((a, b - 1, level))
    return pieces


class _PosixLock(ByteRangeLock):
    """macOS/BSD (or forced): one holder in the process-wide table of a shared descriptor."""

    def __init__(self, path: str, create: bool) -> None:
        self.path = path
        self.holder = next(_POSIX_HOLDERS)
        self.closed = False
        self.file = _posix_file(path, create)

    def _usable(self) -> bool:
        # A holder inherited across fork() holds nothing in this process: inert.
        return not self.closed and self.file.pid == os.getpid()

    def _set(self, kind: int, start: int, end: int) -> None:
        fcntl.fcntl(self.file.fd, fcntl.F_SETLK, _flock(kind, start, end))

    def try_lock(self, start: int, end: int, *, shared: bool) -> bool:
        if not self._usable():
            raise LockError(f"lock holder of {self.path!r} is closed", lock_path=self.path)
        with _POSIX_MUTEX:
            held = self.file.held
            for entry in held:
                if (
                    entry.holder != self.holder
                    and entry.start <= end
                    and entry.end >= start
                    and not (shared and entry.shared)
                ):
                    return False  # another holder of this process: as if another process
            # No other holder of ours locks this range exclusively (and, for an exclusive
            # request, at all), so the process's kernel lock over it becomes exactly the
            # requested type: a downgrade of our own exclusive lock is atomic, and a failed
            # F_SETLK (another process) changes nothing.
            try:
                self._set(fcntl.F_RDLCK if shared else fcntl.F_WRLCK, start, end)
            except OSError as error:
                if _conflict(error):
                    return False
                raise _setlk_error(self.path, start, end, error) from error
            self.file.held = [*self._cut(start, end), _Held(self.holder, start, end, shared)]
        return True

    def _cut(self, start: int, end: int) -> list[_Held]:
        """The table without this holder's locks on ``start..end`` (its others kept)."""
        kept: list[_Held] = []
        for entry in self.file.held:
            if entry.holder != self.holder or entry.end < start or entry.start > end:
                kept.append(entry)
                continue
            if entry.start < start:
                kept.append(_Held(self.holder, entry.start, start - 1, entry.shared))
            if entry.end > end:
                kept.append(_Held(self.holder, end + 1, entry.end, entry.shared))
        return kept

    def _settle(self, start: int, end: int) -> None:
        """Unlock in the kernel the parts of ``start..end`` no remaining holder wants.

        Where another holder remains, the kernel already holds what it wants: a holder that
        had a byte exclusively was its only holder, so a remaining one holds it shared
        alongside a shared lock, which the kernel's lock there already is.
        """
        for a, b, level in _segments(start, end, self.file.held):
            if level == 0:
                self._set(fcntl.F_UNLCK, a, b)

    def unlock(self, start: int, end: int) -> None:
        if not self._usable():
            return
        with _POSIX_MUTEX:
            self.file.held = self._cut(start, end)
            self._settle(start, end)

    def is_locked(self, start: int, end: int) -> bool:
        with _POSIX_MUTEX:
            if any(
                e.holder != self.holder and e.start <= end and e.end >= start
                for e in self.file.held
            ):
                return True
        # F_GETLK reports other processes' locks only (never this process's own).
        result = fcntl.fcntl(self.file.fd, fcntl.F_GETLK, _flock(fcntl.F_WRLCK, start, end))
        return _flock_type(result) != fcntl.F_UNLCK

    def close(self) -> None:
        if not self._usable():
            self.closed = True
            return
        with _POSIX_MUTEX:
            mine = [e for e in self.file.held if e.holder == self.holder]
            self.file.held = [e for e in self.file.held if e.holder != self.holder]
            for entry in mine:
                self._settle(entry.start, entry.end)
            self.closed = True


def _trusted_directory(path: str) -> int:
    """A descriptor of the directory of the lock file ``path``, refused with a
    :class:`LockError` when another user controls it; ``FileNotFoundError`` if it is gone."""
    directory = os.path.dirname(path)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise _lock_error(path, "cannot be opened", error) from error
    try:
        problem = shared_problem(os.fstat(dir_fd))
        if problem is not None:
            raise untrusted_error(directory, problem)
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd


def _posix_file(path: str, create: bool) -> _PosixFile:
    """This process's one descriptor of the lock file at ``path``, opened at first use.

    An existing descriptor is found by the (device, inode) the name names, so nothing is
    opened (and nothing closed: closing any descriptor would drop all our locks on it).
    """
    dir_fd = _trusted_directory(path)
    try:
        try:
            named = os.stat(os.path.basename(path), dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            named = None
            if not create:
                raise
    finally:
        os.close(dir_fd)
    with _POSIX_MUTEX:
        known = None if named is None else _POSIX_FILES.get((named.st_dev, named.st_ino))
        if known is not None and named is not None and stat.S_ISREG(named.st_mode):
            if named.st_nlink != 1:
                raise _lock_error(path, f"has {named.st_nlink} hard links, not 1")
            return known
    fd = _open_lock_file(path, create)
    info = os.fstat(fd)
    with _POSIX_MUTEX:
        known = _POSIX_FILES.get((info.st_dev, info.st_ino))
        if known is None:
            known = _POSIX_FILES[(info.st_dev, info.st_ino)] = _PosixFile(fd)
        else:
            known.spare.append(fd)  # opened concurrently by another thread: keep it open
        return known


def _open_lock_file(path: str, create: bool) -> int:
    """A verified descriptor of the lock file: a regular file with one link, owned by root
    or us, opened relative to a trusted directory (see :func:`_open_in`)."""
    fd, info = _open_trusted(path, create)
    try:
        if not stat.S_ISREG(info.st_mode):
            raise _lock_error(path, "is not a regular file")
        if info.st_nlink != 1:
            # A hard link planted in a shared directory could point at any file; we
            # never write to the lock file, but refuse to touch a file that is not ours.
            raise _lock_error(path, f"has {info.st_nlink} hard links, not 1")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_trusted(path: str, create: bool) -> tuple[int, os.stat_result]:
    """Open ``ports.lock`` relative to a descriptor of its (trusted) directory, and make
    sure the name still names what we opened: nobody else can have swapped it. Returns the
    descriptor and its ``fstat``."""
    dir_fd = _trusted_directory(path)
    try:
        fd = _open_in(path, dir_fd, create)
        try:
            info = os.fstat(fd)
            if info.st_uid not in (0, os.geteuid()):
                # Its owner could rename it away and put a fresh one in its place while
                # we hold locks on it: two live leases would then share ports.
                raise untrusted_error(
                    path,
                    f"owned by {owner_name(info.st_uid)}, not by root or this user",
                    os.path.dirname(path),
                )
            named = os.stat(PORTS_FILE, dir_fd=dir_fd, follow_symlinks=False)
            if (named.st_ino, named.st_dev) != (info.st_ino, info.st_dev):
                raise _lock_error(path, "was replaced while being opened")
        except BaseException:
            os.close(fd)
            raise
        return fd, info
    finally:
        os.close(dir_fd)


def _open_in(path: str, dir_fd: int, create: bool) -> int:
    for _ in range(3):
        try:
            return os.open(PORTS_FILE, _OPEN_FLAGS, dir_fd=dir_fd)  # the usual case: it exists
        except FileNotFoundError:
            if not create:
                raise
        except OSError as error:
            # ELOOP: a symlink; EISDIR: a directory; EACCES: someone else's private file.
            raise _lock_error(path, "cannot be opened", error) from error
        owner = os.fstat(dir_fd).st_uid
        if owner != os.geteuid():
            # Root's directory (another user's is refused before): a file we create there
            # would be ours alone, and every other user would refuse it.
            raise unprepared_error(os.path.dirname(path), PORTS_FILE, owner)
        try:
            fd = os.open(PORTS_FILE, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dir_fd)
        except FileExistsError:
            continue  # created meanwhile by another process: open that one
        except OSError as error:
            raise _lock_error(path, "cannot be created", error) from error
        with contextlib.suppress(OSError):
            # Only a file we just created: every user of the machine shares it
            # (a write lock needs a descriptor open for writing).
            os.fchmod(fd, 0o666)
        return fd
    raise _lock_error(path, "keeps disappearing")


def open_lock(path: str, *, create: bool = True, backend: str | None = None) -> ByteRangeLock:
    """A new holder on the lock file ``path`` with ``backend`` (default: :func:`backend_name`)."""
    chosen = backend or backend_name()
    return _PosixLock(path, create) if chosen == POSIX else _OfdLock(path, create)


class RangeLockFile:
    """One lease's holder on ``ports.lock``; its locks live until it is closed."""

    def __init__(self, directory: str, *, create: bool = True) -> None:
        self.path = os.path.join(directory, PORTS_FILE)
        self._lock: ByteRangeLock | None = None
        self._lock = open_lock(self.path, create=create)

    @property
    def lock(self) -> ByteRangeLock:
        assert self._lock is not None
        return self._lock

    def try_lock(self, start: int, end: int, *, shared: bool) -> bool:
        """Lock bytes ``start..end`` (inclusive) without waiting; ``False`` if held elsewhere.

        Locking a range this holder already holds converts the lock type atomically
        (used to turn exclusive into shared).
        """
        return self.lock.try_lock(start, end, shared=shared)

    def unlock(self, start: int, end: int) -> None:
        self.lock.unlock(start, end)

    def is_locked(self, start: int, end: int) -> bool:
        """Whether another holder (another lease, here or in another process) locks any
        byte of the range."""
        return self.lock.is_locked(start, end)

    def take_lease_id(self) -> int:
        """Lock a fresh random lease id (exclusive) and return it."""
        while True:
            lease_id = _random_id(MAX_LEASE_ID.bit_length() - 1)  # below MAX_LEASE_ID
            # A collision with a live lease is astronomically rare; the lock makes it safe.
            if self.try_lock(ID_BASE + lease_id, ID_BASE + lease_id, shared=False):
                return lease_id

    def close(self) -> None:
        """Drop every lock this holder has (OFD: close its description)."""
        if self._lock is not None:
            self._lock.close()

    def __del__(self) -> None:
        # A lease that is garbage-collected unreleased still frees its ports. (try/except,
        # not contextlib.suppress: this runs for every lease, released or not.)
        try:  # noqa: SIM105
            self.close()
        except OSError:
            pass


class RangeClaim:
    """What a held lease owns: one open description and, on Linux, its name in the network
    namespace (see :mod:`.netns`); releasing closes both."""

    def __init__(
        self, handle: RangeLockFile, lease_id: int, announcement: netns.Announcement | None = None
    ) -> None:
        self.handle = handle
        self.lease_id = lease_id
        self.announcement = announcement

    def release(self) -> None:
        # Closing the holder drops exactly this lease's locks, on either backend (each
        # backend's ``close`` says how). The file lock goes first: the name never ends
        # before the lock it stands beside.
        self.handle.close()
        if self.announcement is not None:
            self.announcement.close()


class TopLevelScanner:
    """Tries blocks one after another on one open description until one is won.

    A failed attempt holds nothing, so the same descriptor is reused: a scan past many
    held blocks costs one ``fcntl`` per block, not an ``open``. On Linux a block is won only
    if it is also free in the network namespace (:func:`.netns.announce_top`): the lease id
    is taken at the first block won in the file, since the block's name carries it.
    """

    def __init__(self, directory: str) -> None:
        self.handle = RangeLockFile(directory)
        self.lease_id: int | None = None
        self.announcement: netns.Announcement | None = None
        self.in_network = netns.available()
        self.seen = netns.Seen()  # the names the last attempt saw
        self.elsewhere = 0  # blocks refused by names only: leases of other lock directories

    def try_block(self, start: int, end: int) -> bool:
        """Exclusive lock on ``start..end``, announced in the network namespace; ``True``
        if won (then :meth:`finish` or :meth:`give_back`)."""
        if not self.handle.try_lock(start, end, shared=False):
            return False
        if not self.in_network:
            return True
        try:
            if self.lease_id is None:
                self.lease_id = self.handle.take_lease_id()
            self.announcement = netns.announce_top(start, end, self.lease_id, self.seen)
        except BaseException:
            self.handle.unlock(start, end)
            raise
        if self.announcement is None:
            self.handle.unlock(start, end)  # held by a lease of another lock directory
            self.elsewhere += 1
            return False
        return True

    def give_back(self, start: int, end: int) -> None:
        """Drop a won block again (e.g. a port in it is busy)."""
        self.handle.unlock(start, end)
        if self.announcement is not None:
            self.announcement.close()
            self.announcement = None

    def finish(self, start: int, end: int) -> RangeClaim:
        """Turn the won block into a lease: identity locks, then exclusive -> shared."""
        try:
            lease_id = self.lease_id if self.lease_id is not None else self.handle.take_lease_id()
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
            self.close()
            raise
        announcement, self.announcement = self.announcement, None
        return RangeClaim(self.handle, lease_id, announcement)

    def close(self) -> None:
        self.handle.close()
        if self.announcement is not None:
            self.announcement.close()
            self.announcement = None


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
        announcement = None
        if netns.available():
            announcement = netns.announce_child(
                start, end, lease_id, parent=parent, parent_lease_id=parent_lease_id
            )
            if announcement is None:
                raise ParentGoneError(
                    f"parent port range {parent_start}-{parent_end} is not announced in this "
                    "network namespace (its lease ended, or it was leased in another network "
                    "namespace); provision the parent session again in this one",
                    lock_path=handle.path,
                )
    except BaseException:
        handle.close()
        raise
    return RangeClaim(handle, lease_id, announcement)


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


LOCK_DIR_HINT = f"set {LOCK_DIR_PLUGIN_OPTION}, ${LOCK_DIR_ENV} or the lockDirectory option"
#: The command that prepares a lock directory every user of the machine shares.
INIT_COMMAND = "pytest-aiops init-lock-dir"


def share_hint(lock_directory: str) -> str:
    """The two remedies for a lock directory not fit for this user: root prepares it once
    for every user, or this user takes a directory of their own (each entry point's name)."""
    return (
        f"have root prepare it once for every user: {INIT_COMMAND} {escape(lock_directory)} "
        f"(docs: troubleshooting, shared lock directory), or set {LOCK_DIR_PLUGIN_OPTION} or "
        f"${LOCK_DIR_ENV} (CLI: {LOCK_DIR_CLI_OPTION}, core: lockDirectory) to a directory of "
        "your own"
    )


def untrusted_error(path: str, problem: str, lock_directory: str | None = None) -> LockError:
    """A lock directory or ``ports.lock`` another user controls: refused (docs/security.md,
    "The shared lock directory cannot be split"), never used and never replaced by a private
    fallback."""
    return LockError(
        f"lock directory path {path!r} is {escape(problem)}: another user could split or "
        f"redirect port leases there, so it is refused; {share_hint(lock_directory or path)}",
        lock_path=path,
    )


def unprepared_error(lock_directory: str, missing: str, owner: int) -> LockError:
    """A lock directory root made (``install -d -m 1777``) without what every user needs in
    it: creating ``missing`` ourselves would make it ours alone and lock every other user
    out, so nothing is created."""
    return LockError(
        f"lock directory {lock_directory!r} belongs to {owner_name(owner)} and has no "
        f"{missing}: one made by this user would be trusted by nobody else, so none is "
        f"made; {share_hint(lock_directory)}",
        lock_path=os.path.join(lock_directory, missing),
    )


def _directory_error(path: str, reason: str) -> LockError:
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
    _check_usable(path)
    return path


def _check_usable(path: str) -> None:
    """A lock directory we cannot write to is fine once it holds what leases need; else
    say why: another user's (root's) directory is not prepared, or ours is read-only."""
    if os.access(path, os.W_OK | os.X_OK):
        return
    missing = [
        name for name in (PORTS_FILE, LEASES_DIR) if not os.path.lexists(os.path.join(path, name))
    ]
    if not missing and os.access(path, os.X_OK):
        return
    owner = os.stat(path).st_uid
    if missing and owner != os.geteuid():
        raise unprepared_error(path, " or ".join(missing), owner)
    raise _directory_error(path, "Permission denied")


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
            raise untrusted_error(current, problem, path)
    _check_usable(path)
    return path
