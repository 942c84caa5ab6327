"""Lease records: who holds which ports, readable by any process (``status``, reports).

Each live lease has ``<lockDirectory>/leases/<start>-<end>.<pid>.<token>.json``. Records are
advisory: the kernel locks in ``ports.lock`` are the truth, so a record whose holder died is
simply stale and is ignored (and removed by :func:`reap_stale`).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._discovery import write_atomic

LEASES_DIR = "leases"


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

    @property
    def ports(self) -> range:
        return range(self.start_port, self.end_port + 1)

    def holder_alive(self) -> bool:
        """Whether the holding process still exists (only knowable on this host)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "pid": self.pid,
            "host": self.host,
            "createdAt": self.created_at,
            "startPort": self.start_port,
            "endPort": self.end_port,
            "role": self.role,
            "path": self.path,
        }


def write_record(
    lock_directory: str,
    *,
    session_id: str,
    start: int,
    end: int,
    role: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write this process's record for a lease; return its path."""
    directory = os.path.join(lock_directory, LEASES_DIR)
    os.makedirs(directory, mode=0o777, exist_ok=True)
    name = f"{start}-{end}.{os.getpid()}.{secrets.token_hex(4)}.json"
    path = os.path.join(directory, name)
    payload = {
        "sessionId": session_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "createdAt": time.time(),
        "startPort": start,
        "endPort": end,
        "role": role,
        **dict(extra or {}),
    }
    write_atomic(path, json.dumps(payload, sort_keys=True) + "\n")
    return path


def remove_record(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_records(lock_directory: str) -> Iterator[LeaseRecord]:
    """Every parseable record in the directory (stale ones included); junk is skipped."""
    directory = os.path.join(lock_directory, LEASES_DIR)
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
            with os.fdopen(fd, encoding="utf-8") as handle:
                data = json.loads(handle.read(65536))
            yield LeaseRecord(
                path=path,
                session_id=str(data["sessionId"]),
                pid=int(data["pid"]),
                host=str(data["host"]),
                created_at=float(data["createdAt"]),
                start_port=int(data["startPort"]),
                end_port=int(data["endPort"]),
                role=str(data.get("role", "top-level")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a planted symlink, a foreign or half-written file: not ours to read


def holders_of(lock_directory: str, port: int) -> list[LeaseRecord]:
    """Live records whose range contains ``port``."""
    return [r for r in read_records(lock_directory) if port in r.ports and r.holder_alive()]


def reap_stale(lock_directory: str, *, dry_run: bool = False) -> list[LeaseRecord]:
    """Remove records whose holder is dead; return them."""
    stale = [r for r in read_records(lock_directory) if not r.holder_alive()]
    if not dry_run:
        for record in stale:
            remove_record(record.path)
    return stale
