"""Which directories and files another local user cannot have planted, swapped or steered.

pytest-aiops keeps state in world-writable places (``/tmp``, ``/dev/shm``). Another local
user may create, rename, swap and lock anything there before and while we run. What we rely
on is checked with ``lstat`` (never following a symlink) before it is used:

- a **private** directory (a worktree root, its control dir, ``pytest-aiops-<uid>``) must be
  a real directory owned by this user and not writable by group or others, as pytest checks
  its ``pytest-of-<user>`` directory. Nobody else can then add, rename or replace anything
  in it;
- its **ancestors** must be owned by root or this user and, when writable by group or
  others, sticky (like ``/tmp``): in a sticky directory only an entry's owner can rename or
  delete it, so once the entry is ours its name keeps naming it. That is why paths below a
  verified directory may be used by name: the chain from ``/`` to it cannot be re-pointed
  by another user;
- a **shared** directory (the machine-wide lock directory and its parents) must be owned by
  root or this user and, when writable by others, sticky.

A failed check gives one line naming the path, the owner found and the setting to change.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from .._errors import NoSpaceError, UnsafeDirectoryError

if sys.platform != "win32":  # importing must work on Windows (nothing here runs there)
    import pwd


def owner_name(uid: int) -> str:
    """``uid 65534 (nobody)``: how an owner is named in messages."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def private_problem(info: os.stat_result) -> str | None:
    """Why a directory with this ``lstat`` cannot be private to us, or ``None`` if it is."""
    uid = os.geteuid()
    if stat.S_ISLNK(info.st_mode):
        return f"it is a symlink (owned by {owner_name(info.st_uid)})"
    if not stat.S_ISDIR(info.st_mode):
        return f"it is not a directory (owned by {owner_name(info.st_uid)})"
    if info.st_uid != uid:
        return f"it is owned by {owner_name(info.st_uid)}, not by this user ({owner_name(uid)})"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        return f"it is writable by group or others (mode {mode:04o}, owner {owner_name(uid)})"
    return None


def ancestor_problem(path: str) -> tuple[str, str] | None:
    """``(directory, why)`` for the first ancestor of the absolute ``path`` another user could
    rename entries of (not root's or ours, or writable by others without the sticky bit)."""
    uid = os.geteuid()
    current = os.path.dirname(os.path.normpath(path))
    while True:
        try:
            info = os.lstat(current)
        except OSError as error:
            return current, error.strerror or str(error)
        if stat.S_ISLNK(info.st_mode):
            return current, f"it is a symlink (owned by {owner_name(info.st_uid)})"
        if info.st_uid not in (0, uid):
            return current, f"it is owned by {owner_name(info.st_uid)}"
        if stat.S_IMODE(info.st_mode) & 0o022 and not info.st_mode & stat.S_ISVTX:
            return current, (
                f"it is writable by group or others without the sticky bit "
                f"(mode {stat.S_IMODE(info.st_mode):04o})"
            )
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def shared_problem(info: os.stat_result) -> str | None:
    """Why a directory of the machine-wide lock path cannot be trusted, or ``None``."""
    if stat.S_ISLNK(info.st_mode):
        return f"a symlink (owned by {owner_name(info.st_uid)})"
    if not stat.S_ISDIR(info.st_mode):
        return "not a directory"
    if info.st_uid not in (0, os.geteuid()):
        return f"owned by {owner_name(info.st_uid)}, not by root or this user"
    if stat.S_IMODE(info.st_mode) & 0o002 and not info.st_mode & stat.S_ISVTX:
        return f"writable by others without the sticky bit (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def verify_private(path: str, *, create: bool) -> bool:
    """Make sure ``path`` is a directory private to us (created ``0700`` if ``create``).

    ``False`` if it does not exist (and ``create`` is false); :class:`UnsafeDirectoryError`
    if it exists but is not ours alone, or an ancestor lets another user re-point it.
    """
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise NoSpaceError(path) from error
            raise UnsafeDirectoryError(path, error.strerror or str(error)) from error
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if create:  # pragma: no cover - removed right after we made it
            raise UnsafeDirectoryError(path, "it keeps disappearing") from None
        return False
    except OSError as error:
        raise UnsafeDirectoryError(path, error.strerror or str(error)) from error
    problem = private_problem(info)
    if problem is not None:
        raise UnsafeDirectoryError(path, problem)
    found = ancestor_problem(path)
    if found is not None:
        directory, why = found
        raise UnsafeDirectoryError(path, f"its parent {directory!r} is unsafe: {why}")
    return True
