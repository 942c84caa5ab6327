"""Prepare a lock directory every user of the machine shares (``pytest-aiops init-lock-dir``).

A lease opens ``<DIR>/ports.lock`` read-write and writes its record in ``<DIR>/leases/``;
each user trusts only what root or that user owns (:mod:`pytest_aiops._core.trust`). So a
directory several users share needs, made once by root:

==================  ==========  =============================================================
path                mode        why
==================  ==========  =============================================================
``DIR``             ``0755``    nobody else adds, renames or swaps what is in it
``DIR/leases/``     ``1777``    every user writes its own records; sticky: only their owner
                                renames or removes them
``DIR/ports.lock``  ``0666``    every user opens it read-write (a write lock needs that)
==================  ==========  =============================================================

and, for a path that does not exist yet, its missing parents root's, ``0755``. Nothing
another (non-root) user owns is adopted: it may be in use, or planted; the admin is told to
remove it. Everything is opened relative to a descriptor of its directory, never through a
symlink, so nothing in a world-writable parent can redirect root's ``mkdir``/``chmod``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .._core.trust import owner_name
from .._errors import LockError, UnsupportedPlatformError, escape
from .defaults import LOCK_DIR_CLI_OPTION, LOCK_DIR_ENV, LOCK_DIR_PLUGIN_OPTION
from .locks import INIT_COMMAND, LEASES_DIR, PORTS_FILE

DIRECTORY_MODE = 0o755
LEASES_MODE = 0o1777
PORTS_FILE_MODE = 0o666
# getattr: importing must work on Windows, where the command says it is unsupported.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0) | _NOFOLLOW


@dataclass(frozen=True)
class Prepared:
    """What :func:`init_lock_directory` did: the directory, and one line per change."""

    path: str
    changes: tuple[str, ...]
    #: Why other users cannot reach ``path`` (a parent they may not search), else ``None``.
    unreachable: str | None = None


def shell_commands(path: str) -> list[str]:
    """The plain commands that make what :func:`init_lock_directory` makes (for the docs)."""
    return [
        f"install -d -o root -g root -m 0755 {path}",
        f"install -d -o root -g root -m 1777 {path}/{LEASES_DIR}",
        f"install -o root -g root -m 0666 /dev/null {path}/{PORTS_FILE}",
    ]


def _refuse(path: str, what: str, problem: str, remedy: str) -> LockError:
    return LockError(
        f"cannot prepare lock directory {escape(path)!r}: {escape(what)!r} is "
        f"{escape(problem)}; {remedy}",
        lock_path=what,
    )


def _mode_text(mode: int) -> str:
    return f"{mode:04o}"


class _Preparer:
    """One run of :func:`init_lock_directory` on the absolute, symlink-free ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.changes: list[str] = []

    def refuse_foreign(self, what: str, info: os.stat_result) -> LockError:
        return _refuse(
            self.path,
            what,
            f"owned by {owner_name(info.st_uid)}, not root",
            "that user made it (a run before the directory was prepared, or a planted "
            "file) and may be using it: remove it once no pytest-aiops run uses it (or "
            f"choose another directory), then run {INIT_COMMAND} again",
        )

    def open_directory(self, parent_fd: int, name: str, what: str) -> int:
        """``name`` in ``parent_fd`` opened as a directory; refused if it is none (a symlink)."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as error:
            try:
                info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            except OSError:
                raise LockError(
                    f"{INIT_COMMAND}: cannot open {escape(what)!r} ({error.strerror})",
                    lock_path=what,
                ) from error
            kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
            raise _refuse(
                self.path,
                what,
                f"{kind} (owned by {owner_name(info.st_uid)})",
                f"remove it, or choose another directory, then run {INIT_COMMAND} again",
            ) from error

    def directory(self, parent_fd: int, name: str, what: str, mode: int, *, final: bool) -> int:
        """A descriptor of the root-owned directory ``name`` in ``parent_fd``: made with
        ``mode`` if missing; an existing one checked, and (``final``) set to ``mode``."""
        made = False
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)  # fchmod below: no umask, no window
                made = True
            except FileExistsError:
                pass  # made meanwhile by someone else: checked below like any other
            except OSError as error:
                raise LockError(
                    f"{INIT_COMMAND}: cannot create {escape(what)!r} ({error.strerror})",
                    lock_path=what,
                ) from error
            fd = self.open_directory(parent_fd, name, what)
        except OSError:
            fd = self.open_directory(parent_fd, name, what)
        try:
            info = os.fstat(fd)
            if info.st_uid != 0:
                raise self.refuse_foreign(what, info)
            current = stat.S_IMODE(info.st_mode)
            if made:
                os.fchmod(fd, mode)
                self.changes.append(f"created {what} (root, mode {_mode_text(mode)})")
                return fd
            if current & 0o022 and not current & stat.S_ISVTX:
                raise _refuse(
                    self.path,
                    what,
                    f"writable by group or others without the sticky bit (mode "
                    f"{_mode_text(current)})",
                    "anyone could have replaced what it holds: check it, chmod it to "
                    f"{_mode_text(mode)} (or remove it), then run {INIT_COMMAND} again",
                )
            if final and current != mode:
                os.fchmod(fd, mode)
                self.changes.append(
                    f"changed {what} from mode {_mode_text(current)} to {_mode_text(mode)}"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def ports_file(self, dir_fd: int) -> None:
        """``ports.lock``: created empty, root's, ``0666``; an existing one checked and set."""
        what = os.path.join(self.path, PORTS_FILE)
        flags = os.O_RDONLY | os.O_CLOEXEC | _NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(PORTS_FILE, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
            made = True
        except FileExistsError:
            info = os.stat(PORTS_FILE, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
                raise _refuse(
                    self.path,
                    what,
                    f"{kind} (owned by {owner_name(info.st_uid)})",
                    f"remove it, then run {INIT_COMMAND} again",
                ) from None
            fd = os.open(PORTS_FILE, flags, dir_fd=dir_fd)
            made = False
        try:
            info = os.fstat(fd)
            if info.st_uid != 0:
                raise self.refuse_foreign(what, info)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                raise _refuse(
                    self.path,
                    what,
                    f"not a regular file with one link ({info.st_nlink} links)",
                    f"remove it, then run {INIT_COMMAND} again",
                )
            current = stat.S_IMODE(info.st_mode)
            if made:
                os.fchmod(fd, PORTS_FILE_MODE)
                self.changes.append(f"created {what} (root, mode {_mode_text(PORTS_FILE_MODE)})")
            elif current != PORTS_FILE_MODE:
                os.fchmod(fd, PORTS_FILE_MODE)
                self.changes.append(
                    f"changed {what} from mode {_mode_text(current)} to "
                    f"{_mode_text(PORTS_FILE_MODE)}"
                )
        finally:
            os.close(fd)


def _real_path(path: str) -> str:
    """``path`` with the symlinks root owns resolved (``/tmp`` -> ``/private/tmp`` on macOS);
    a symlink anyone else owns is refused: they could re-point it after we prepared it."""
    parts = path.strip("/").split("/")
    current = "/"
    for index, part in enumerate(parts):
        candidate = os.path.join(current, part)
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            return os.path.join(current, *parts[index:])
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid != 0:
                raise _refuse(
                    path,
                    candidate,
                    f"a symlink owned by {owner_name(info.st_uid)}",
                    "that user could re-point it: pass a path without it, then run "
                    f"{INIT_COMMAND} again",
                )
            candidate = os.path.realpath(candidate)
        current = candidate
    return current


def init_lock_directory(path: str) -> Prepared:
    """Make ``path`` a lock directory every user of the machine can lease ports in.

    Idempotent: what exists and is right is left alone, a root-owned part with another safe
    mode is set to the mode above, and anything another user owns, a symlink, a non-directory,
    or a directory writable by others without the sticky bit is refused in one line (a
    :class:`LockError`) naming it and what to do. Must run as root.
    """
    if not hasattr(os, "geteuid"):
        raise UnsupportedPlatformError(INIT_COMMAND.split()[-1], "POSIX owners and modes")
    if os.geteuid() != 0:
        raise LockError(
            f"{INIT_COMMAND} must run as root (uid 0), not as {owner_name(os.geteuid())}: "
            "every user trusts only what root or they themselves own; run it with sudo, or "
            f"set {LOCK_DIR_PLUGIN_OPTION} / ${LOCK_DIR_ENV} (CLI: {LOCK_DIR_CLI_OPTION}) to a "
            "directory of your own, which needs no preparing",
            lock_path=path,
        )
    if "\0" in path:
        raise LockError(
            f"the lock directory to prepare contains a NUL character ({escape(path)!r}); "
            "pass a path without one",
            lock_path=path,
        )
    absolute = _real_path(os.path.abspath(path))
    preparer = _Preparer(absolute)
    try:
        _prepare(preparer, absolute)
    except LockError as error:
        if not preparer.changes:
            raise
        done = "; ".join(preparer.changes)
        raise LockError(f"{error} (done before: {done})", lock_path=error.lock_path) from error
    return Prepared(absolute, tuple(preparer.changes), _unreachable(absolute))


def _unreachable(path: str) -> str | None:
    """Why other users cannot get to ``path``: the first parent they may not search."""
    current = os.path.dirname(path)
    blocked = None
    while True:
        mode = stat.S_IMODE(os.stat(current).st_mode)
        if not mode & 0o001:
            blocked = f"{current!r} is mode {_mode_text(mode)} (others may not search it)"
        parent = os.path.dirname(current)
        if parent == current:
            return None if blocked is None else f"other users cannot reach it: {blocked}"
        current = parent


def _prepare(preparer: _Preparer, absolute: str) -> None:
    parts = absolute.strip("/").split("/")
    fd = os.open("/", _DIR_FLAGS)
    try:
        walked = ""
        for index, part in enumerate(parts):
            walked = f"{walked}/{part}"
            final = index == len(parts) - 1
            next_fd = preparer.directory(fd, part, walked, DIRECTORY_MODE, final=final)
            os.close(fd)
            fd = next_fd
        leases = preparer.directory(
            fd, LEASES_DIR, os.path.join(absolute, LEASES_DIR), LEASES_MODE, final=True
        )
        os.close(leases)
        preparer.ports_file(fd)
    finally:
        os.close(fd)
