"""Lease records: who holds which ports, readable by any process (``status``, failure reports).

Each lease has ``<lockDirectory>/leases/<start>-<end>.<top|child>.<uid>.json``. Records are
advisory: the kernel locks in ``ports.lock`` are the truth. A record names its lease id, so
whether its holder is alive is asked of the kernel too (is that id's byte still locked?),
which is right even across PID namespaces and PID reuse. A record whose lease died is stale:
ignored by :func:`holders_of` and removed by :func:`reap_stale`.

On release a record is renamed to ``.<name>.released``; the range's next lease renames it
back and rewrites it in place: creating and unlinking a file per lease cost more (~0.4 ms on ext4)
than probing the ports. Readers skip dot files and may catch a record half-written, which
they skip too. No ``fsync``: records describe
running processes, which a power loss ends anyway. Every file operation is relative to a
descriptor of ``leases/`` opened with ``O_NOFOLLOW``, so a symlink planted in the shared
directory never redirects a write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

try:
    from _json import encode_basestring_ascii as _encode_basestring_ascii
    from _json import make_encoder as _make_encoder
except ImportError:  # pragma: no cover - an interpreter without json's C accelerator
    _make_encoder = None  # type: ignore[assignment,misc]

from .._core.trust import shared_problem
from .._core.values import dataclass
from .._errors import LockError
from .locks import LEASES_DIR, hold_range, live_lease_ids, unprepared_error

_NAME = re.compile(
    r"^(?:\.(?=.*\.released$))?(\d+)-(\d+)\.(top|child)\.(\d+)(?:\.\d+)?\.json(?:\.released)?$"
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_HOST = socket.gethostname()


@dataclass(frozen=True)
class LeaseRecord:
    """One lease as written by its holder."""

    path: str
    session_id: str
    pid: int
    host: str
    created_at: float
    start_port: int
    end_port: int
    role: str  # "top-level" or "child"
    lease_id: int | None = None
    alive: bool | None = None  # from the kernel when read; None if it could not be asked

    @property
    def ports(self) -> range:
        return range(self.start_port, self.end_port + 1)

    def holder_alive(self) -> bool:
        """Whether the lease still exists: the kernel's answer, else a PID check."""
        if self.alive is not None:
            return self.alive
        if self.host != _HOST:
            return True  # cannot know; assume alive (never reap what might be live)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def record_json(self) -> dict[str, Any]:
        """The record's fields as its file holds them (camelCase)."""
        return _record_json(
            self.session_id,
            self.pid,
            self.host,
            self.created_at,
            self.start_port,
            self.end_port,
            self.role,
            self.lease_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as ``pytest-aiops status --json`` shows it: its fields, whether its
        holder is alive and where it is."""
        return {**self.record_json(), "alive": self.holder_alive(), "path": self.path}


def _record_json(
    session_id: str,
    pid: int,
    host: str,
    created_at: float,
    start_port: int,
    end_port: int,
    role: str,
    lease_id: int | None,
) -> dict[str, Any]:
    """A record's fields as its file holds them (camelCase), the one writer of them (for
    :meth:`LeaseRecord.record_json` and :func:`write_record`, which needs no
    :class:`LeaseRecord` to write one)."""
    return {
        "sessionId": session_id,
        "pid": pid,
        "host": host,
        "createdAt": created_at,
        "startPort": start_port,
        "endPort": end_port,
        "role": role,
        "leaseId": lease_id,
    }


def _not_json(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


if _make_encoder is not None:
    #: ``json.dumps(fields, sort_keys=True)`` for a record's own fields (flat: strings,
    #: numbers, ``None``), made once: ``json.dumps`` builds a ``JSONEncoder`` and a C encoder
    #: per call, about half of its ~40,000 instructions for a record (issue 23). The same C
    #: encoder with the same settings, so the same text; no circular check, as nothing in
    #: the fields nests.
    _FIELDS_ENCODER: Callable[[dict[str, Any], int], Any] | None = _make_encoder(
        None, _not_json, _encode_basestring_ascii, None, ": ", ", ", True, False, True
    )
else:  # pragma: no cover - CPython has the C encoder
    _FIELDS_ENCODER = None


def _record_text(fields: dict[str, Any], extra: Mapping[str, Any] | None) -> bytes:
    """What the record file of ``fields`` (and ``extra``, overriding them) holds."""
    if extra or _FIELDS_ENCODER is None:
        text = json.dumps({**fields, **dict(extra or {})}, sort_keys=True)
    else:
        text = "".join(_FIELDS_ENCODER(fields, 0))
    return (text + "\n").encode("utf-8")


def _leases_error(path: str, reason: str) -> LockError:
    return LockError(
        f"lease record directory {path!r} is unusable ({reason}); remove whatever is at "
        "that path or choose another lockDirectory",
        lock_path=path,
    )


def _open_leases_dir(lock_directory: str, path: str, *, create: bool) -> int | None:
    """A descriptor of ``leases/`` of ``lock_directory``, at ``path`` (never through a
    symlink); ``None`` if absent."""
    for _ in range(3):
        try:
            fd = os.open(path, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as error:
            # ELOOP: a symlink; ENOTDIR: a file. Neither may steer where records go.
            raise _leases_error(path, error.strerror or str(error)) from error
        else:
            problem = shared_problem(os.fstat(fd))
            if problem is None:
                return fd
            os.close(fd)
            # Another user's directory: we never write into it, nor trust what it holds.
            raise _leases_error(path, problem)
        owner = os.stat(lock_directory).st_uid
        if owner != os.geteuid():
            # Root's directory (another user's is refused before): a leases/ we make there
            # would be ours alone and every other user would refuse it.
            raise unprepared_error(lock_directory, LEASES_DIR + "/", owner)
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue  # another process made it first
        except OSError as error:
            raise _leases_error(path, error.strerror or str(error)) from error
        with contextlib.suppress(OSError):
            # Same sharing as the lock directory (1777 in the machine-wide one).
            os.chmod(path, stat.S_IMODE(os.stat(lock_directory).st_mode))
    raise _leases_error(path, "keeps disappearing")


def record_name(start: int, end: int, role: str, uid: int | None = None) -> str:
    """The record file of the one live lease of ``start..end`` with ``role``, for one user.

    Live top-level leases never overlap and two children never share a slice, so the name
    is unique among live leases and is reused by the next lease of the same range: creating
    a file costs about a millisecond on ext4, rewriting one a few microseconds.
    """
    kind = "child" if role == "child" else "top"
    return f"{start}-{end}.{kind}.{os.geteuid() if uid is None else uid}.json"


def write_record(
    lock_directory: str,
    *,
    session_id: str,
    start: int,
    end: int,
    role: str,
    lease_id: int,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write this process's record for a lease it holds; return its path.

    Only the holder of the lease writes this name (the lease's locks make it the only
    one), and :func:`reap_stale` removes it only while holding the same range's lock.
    """
    name = record_name(start, end, role)
    directory = os.path.join(lock_directory, LEASES_DIR)
    path = os.path.join(directory, name)
    fields = _record_json(session_id, os.getpid(), _HOST, time.time(), start, end, role, lease_id)
    data = _record_text(fields, extra)
    dir_fd = _open_leases_dir(lock_directory, directory, create=True)
    assert dir_fd is not None
    try:
        # The range's last lease put its file aside; take it back. (try/except, not
        # contextlib.suppress: a context manager is a few thousand instructions a lease.)
        try:  # noqa: SIM105
            os.rename(_aside(name), name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        # O_NOFOLLOW: never write through a symlink planted at that name; O_NONBLOCK: a
        # FIFO fails (ENXIO) instead of hanging; no O_TRUNC before the checks below.
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            squatted = _write_at(dir_fd, name, flags, data) is not None
        except OSError:
            squatted = True  # ELOOP: a symlink; ENXIO: a FIFO; EACCES: not ours
        if squatted:
            # Someone squats on the range's name (another user planted it, or it is junk):
            # a name nobody can guess, with the lease id in it, so status still lists us.
            name = unique_record_name(start, end, role, lease_id)
            path = os.path.join(lock_directory, LEASES_DIR, name)
            problem = _write_at(dir_fd, name, flags | os.O_EXCL, data)
            if problem is not None:
                raise _leases_error(path, problem)
    except OSError as error:
        if isinstance(error, LockError):
            raise
        raise _leases_error(path, error.strerror or str(error)) from error
    finally:
        os.close(dir_fd)
    return path


def unique_record_name(start: int, end: int, role: str, lease_id: int) -> str:
    """The record name used when :func:`record_name` is taken by a file not ours."""
    kind = "child" if role == "child" else "top"
    return f"{start}-{end}.{kind}.{os.geteuid()}.{lease_id}.json"


def _write_at(dir_fd: int, name: str, flags: int, data: bytes) -> str | None:
    """Write ``data`` over the record file ``name`` if it is ours: a regular file, one link.

    Returns why it is not ours (nothing written), else ``None``; ``OSError`` if it cannot be
    opened.
    """
    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return "not a regular file with one link"
        if info.st_uid != os.geteuid():
            return f"owned by uid {info.st_uid}, not by us"
        # Pad with spaces (valid JSON) over the old content instead of truncating:
        # truncation frees blocks, which costs ~75 us on ext4; files never shrink.
        os.pwrite(fd, data.ljust(info.st_size), 0)
    finally:
        os.close(fd)
    return None


def _aside(name: str) -> str:
    return f".{name}.released"


def _in_directory(path: str, action: Callable[[str, int], object]) -> None:
    """``action(name, dir_fd)`` on ``path``'s entry through a directory handle opened without
    following symlinks; an error (the entry or directory gone, replaced) is ignored."""
    directory, name = os.path.split(path)
    try:
        dir_fd = os.open(directory, _DIR_FLAGS)
    except OSError:
        return
    try:
        action(name, dir_fd)
    except OSError:
        pass  # gone (reaped while we were dead?), or replaced by something not ours
    finally:
        os.close(dir_fd)


def clear_record(path: str) -> None:
    """Put our record aside as ``.<name>.released`` on release, for the range's next lease.

    Readers skip dot files; a rename costs a tenth of creating a file anew.
    """
    _in_directory(
        path, lambda name, fd: os.rename(name, _aside(name), src_dir_fd=fd, dst_dir_fd=fd)
    )


def remove_record(path: str) -> None:
    """Remove one record (missing is fine); never follows a symlink."""
    _in_directory(path, lambda name, fd: os.unlink(name, dir_fd=fd))


def _parse(path: str, text: str) -> LeaseRecord:
    data = json.loads(text)
    raw_id = data.get("leaseId")
    return LeaseRecord(
        path=path,
        session_id=str(data["sessionId"]),
        pid=int(data["pid"]),
        host=str(data["host"]),
        created_at=float(data["createdAt"]),
        start_port=int(data["startPort"]),
        end_port=int(data["endPort"]),
        role=str(data.get("role", "top-level")),
        lease_id=None if raw_id is None else int(raw_id),
    )


def _names(lock_directory: str) -> tuple[str, list[str]]:
    directory = os.path.join(lock_directory, LEASES_DIR)
    try:
        dir_fd = _open_leases_dir(lock_directory, directory, create=False)
    except LockError:
        return directory, []
    if dir_fd is None:
        return directory, []
    try:
        return directory, sorted(os.listdir(dir_fd))
    finally:
        os.close(dir_fd)


def _alive_ids(lock_directory: str, ids: list[int]) -> set[int] | None:
    try:
        return live_lease_ids(lock_directory, ids)
    except (OSError, LockError):
        return None  # ports.lock unusable: fall back to PID checks


def read_records(lock_directory: str) -> Iterator[LeaseRecord]:
    """Every parseable record in the directory (stale ones included); junk is skipped.

    Each record's ``alive`` is the kernel's answer at the time of reading.
    """
    directory, names = _names(lock_directory)
    records: list[LeaseRecord] = []
    for name in names:
        match = _NAME.match(name)
        if match is None or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(path, flags)
            with os.fdopen(fd, "rb") as handle:
                if os.fstat(handle.fileno()).st_uid != int(match.group(4)):
                    continue  # a name squatted by another user: not that user's record
                text = handle.read(65536).decode("utf-8")
            records.append(_parse(path, text))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a planted symlink/FIFO/dir, a foreign or torn file: not ours to read
    alive = _alive_ids(lock_directory, [r.lease_id for r in records if r.lease_id is not None])
    for record in records:
        if alive is not None and record.lease_id is not None:
            yield replace(record, alive=record.lease_id in alive)
        else:
            yield record


def holders_of(lock_directory: str, port: int) -> list[LeaseRecord]:
    """Live records whose range contains ``port``."""
    return [r for r in read_records(lock_directory) if port in r.ports and r.holder_alive()]


def reap_stale(
    lock_directory: str, *, dry_run: bool = False, children_of: tuple[int, int] | None = None
) -> list[LeaseRecord]:
    """Remove records whose lease is dead (and put-aside ones); return the dead records
    removed (with ``dry_run``: that would be removed).

    Each file is removed only while this process holds the lock of its range, so a new
    lease of that range cannot be writing it at the same moment. A dead parent's record
    whose range a live child still holds in part cannot be locked, so it stays (and is not
    reported) until the child ends. ``children_of`` (a parent's first and last port) limits
    the reap to child records inside that range: what a parent's dead children left.
    """
    stale = {os.path.basename(r.path): r for r in read_records(lock_directory)}
    stale = {name: r for name, r in stale.items() if not r.holder_alive()}
    directory, names = _names(lock_directory)
    removed: list[LeaseRecord] = []
    for name in names:
        match = _NAME.match(name)
        if match is None or int(match.group(4)) != os.geteuid():
            continue  # not ours: never delete what we did not create
        try:
            if os.lstat(os.path.join(directory, name)).st_uid != os.geteuid():
                continue
        except OSError:
            continue
        record = stale.get(name)
        if record is None and not name.startswith("."):
            continue
        start, end, child = int(match.group(1)), int(match.group(2)), match.group(3) == "child"
        if children_of is not None and not (
            child and children_of[0] <= start and end <= children_of[1]
        ):
            continue
        try:
            with hold_range(lock_directory, start, end, child=child) as won:
                if not won:
                    continue
                if record is not None:
                    removed.append(record)
                if not dry_run:
                    remove_record(os.path.join(directory, name))
        except (OSError, LockError):
            continue
    return removed
