"""Leases held in the network namespace itself (Linux): abstract Unix socket names.

The byte-range locks of :mod:`.locks` keep apart the processes that share a lock directory,
i.e. (by default) a mount namespace: ``/tmp``. Ports belong to a *network* namespace.
Containers with host networking and CI runners that each get a private ``/tmp`` share the
ports but not the lock file, and would hand out the same blocks. So on Linux every lease is
also announced in the network namespace: a datagram Unix socket bound to an abstract name
(``\\0pytest-aiops/...``). Abstract names live in the network namespace, not in the file
system; a bind fails with ``EADDRINUSE`` while another socket of the namespace has the name,
and the name disappears when the last descriptor of its socket closes -- at exit, SIGKILL
included, exactly like an OFD lock. Sockets are close-on-exec (Python's default); a
``fork()`` child shares the socket, so the name lives while either process does.

Names (all ASCII, ``S-E`` a port range, ``ID`` the lease id of :mod:`.locks`):

==============================  ============================================================
``pytest-aiops/top/S-E/ID``     a live top-level lease of ports ``S..E`` (held for its life)
``pytest-aiops/child/S-E/ID``   a live child slice ``S..E`` (held for its life)
``pytest-aiops/claim/S-E``      a top-level leaser deciding on ``S..E`` (held for a moment)
==============================  ============================================================

One socket per lease, whatever its size: a socket per *port* would cost a descriptor per
port, 4,096 for a worker pool at its bound -- past the usual limit of 1,024. Blocks of
different sizes overlap without sharing a name, so overlap is found by reading the names
the namespace holds (``/proc/net/unix``, which lists the sockets of the reader's network
namespace) *after* announcing one's own: of two overlapping leasers at least one sees the
other and gives the block up. A top-level leaser first binds the ``claim`` name of its exact
range: two runs that choose the same blocks in lockstep (they are seeded alike) are told
apart by that bind, one wins, the other moves on, rather than both giving every block up.

The names carry no user id: ports are shared by every user of the network namespace, so a
lease must keep every other user's leases out. Any user can bind any abstract name, as any
user can bind any free port: a name squatted by someone else makes a block busy, like a
listener in it, never lets two leases share it.

Where this cannot work (not Linux, or no ``/proc/net/unix`` to read) :func:`available` is
false and leases are held by the file locks alone; see docs/how-it-works.md.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import os
import re
import socket
import sys
from _socket import socket as RawSocket
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .._errors import LockError

PREFIX = "pytest-aiops/"
TOP = "top"
CHILD = "child"
CLAIM = "claim"
UNIX_TABLE = "/proc/net/unix"


class Name(NamedTuple):
    """One announced lease: its kind, ports and lease id (``None`` for a claim)."""

    kind: str
    start: int
    end: int
    lease_id: int | None

    def text(self) -> str:
        tail = "" if self.lease_id is None else f"/{self.lease_id}"
        return f"{PREFIX}{self.kind}/{self.start}-{self.end}{tail}"

    def overlaps(self, start: int, end: int) -> bool:
        return self.start <= end and start <= self.end


def available() -> bool:
    """Whether leases are also held in the network namespace (Linux with ``/proc``)."""
    return sys.platform.startswith("linux") and os.access(UNIX_TABLE, os.R_OK)


# A line of /proc/net/unix ends with the socket's path; abstract names start with "@".
_OURS = re.compile(rb" @pytest-aiops/(top|child|claim)/(\d+)-(\d+)(?:/(\d+))?$", re.MULTILINE)


_KINDS = {b"top": TOP, b"child": CHILD, b"claim": CLAIM}
_new_name: Callable[[type[Name], tuple[str, int, int, int | None]], Name] = tuple.__new__


def parse(table: bytes) -> list[Name]:
    """The pytest-aiops names in a ``/proc/net/unix`` listing (other sockets are skipped)."""
    names: list[Name] = []
    # findall: group tuples without a match object each (a look reads every lease of the
    # namespace); an absent lease id is b"" (\d+ never matches empty).
    for kind, start, end, lease_id in _OURS.findall(table):
        if (kind == b"claim") != (not lease_id):
            continue  # only looks like ours
        fields = (_KINDS[kind], int(start), int(end), int(lease_id) if lease_id else None)
        names.append(_new_name(Name, fields))  # Name(*fields) without its Python __new__
    return names


def held_names() -> list[Name]:
    """Every pytest-aiops name bound in this process's network namespace right now.

    Costs one read of ``/proc/net/unix``, whose length is every Unix socket of the
    namespace: about 0.4 ms per 1,000 sockets (``bench/netns.py``).
    """
    chunks: list[bytes] = []
    try:
        # Unbuffered, in big reads: the kernel renders the table a page at a time anyway.
        fd = os.open(UNIX_TABLE, os.O_RDONLY | os.O_CLOEXEC)
        try:
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as error:
        raise LockError(
            f"cannot read {UNIX_TABLE} ({error.strerror or error}), which lists the port "
            "leases of this network namespace; mount /proc",
            lock_path=UNIX_TABLE,
        ) from error
    return parse(b"".join(chunks))


def _bind(name: Name) -> RawSocket | None:
    """A socket bound to ``name``; ``None`` if another socket of the namespace has it. The
    C socket type (close-on-exec, as ``socket.socket``), without the Python layer: two a
    lease (issue 23)."""
    sock = RawSocket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name.text())
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            return None
        raise LockError(
            f"cannot bind the abstract socket {name.text()!r} ({error.strerror or error})",
            lock_path=UNIX_TABLE,
        ) from error
    return sock


class Seen:
    """The lease names one look found, for a scan to skip the blocks they cover without a
    look of its own (a look costs a read of the whole table; this costs a bisection)."""

    def __init__(self) -> None:
        self.names: list[Name] = []
        self.starts: list[int] = []
        self.reach: list[int] = []  # reach[i]: the highest end among the first i+1 names
        self.indexed = True  # starts and reach are those of names

    def update(self, names: Iterable[Name]) -> None:
        # Indexed at the next covers(), if any: a scan whose first block is won never asks.
        self.names = list(names)
        self.indexed = False

    def covers(self, start: int, end: int) -> bool:
        """Whether a name seen overlaps ``start..end``."""
        if not self.indexed:
            ranges = sorted((n.start, n.end) for n in self.names if n.kind != CLAIM)
            self.starts = [first for first, _ in ranges]
            self.reach = list(itertools.accumulate((last for _, last in ranges), max))
            self.indexed = True
        count = bisect.bisect_right(self.starts, end)  # the names starting at or before end
        return count > 0 and self.reach[count - 1] >= start


def _others(names: Iterable[Name], mine: Name) -> list[Name]:
    return [n for n in names if n != mine and n.kind != CLAIM]


class Announcement:
    """One lease's name in the network namespace; :meth:`close` takes it back."""

    def __init__(self, sock: RawSocket, name: Name) -> None:
        self.sock: RawSocket | None = sock
        self.name = name

    def close(self) -> None:
        """Close the socket (idempotent): the name is free again."""
        if self.sock is not None:
            sock, self.sock = self.sock, None
            sock.close()

    def __del__(self) -> None:
        # A lease garbage-collected unreleased frees its name too, without a ResourceWarning
        # (as its lock file does).
        self.close()


def announce_top(
    start: int, end: int, lease_id: int, seen: Seen | None = None
) -> Announcement | None:
    """Hold ``start..end`` for a top-level lease, ``None`` if a live lease of this network
    namespace (any lock directory) holds any of its ports, or another leaser is deciding on
    exactly this range right now.

    ``seen``, if given, is what the caller's previous attempt read: a range held there is
    given up without a look (skipping a block is always safe), and the list is updated with
    this attempt's look. A scan past many held blocks then reads the table once or twice,
    not once per block.
    """
    if seen is not None and seen.covers(start, end):
        return None
    claim = _bind(Name(CLAIM, start, end, None))
    if claim is None:
        return None
    try:
        name = Name(TOP, start, end, lease_id)
        sock = _bind(name)
        if sock is None:
            return None  # the same id on the same range: astronomically rare, but busy
        announcement = Announcement(sock, name)
        try:
            # Announced first, looked second: an overlapping leaser that announced before
            # this read is seen here; one that announces after it sees us.
            others = _others(held_names(), name)
            if seen is not None:
                seen.update(others)
            if any(n.start <= end and start <= n.end for n in others):  # n.overlaps, inline
                announcement.close()
                return None
        except BaseException:
            announcement.close()
            raise
        return announcement
    finally:
        claim.close()


def announce_child(
    start: int, end: int, lease_id: int, *, parent: tuple[int, int], parent_lease_id: int | None
) -> Announcement | None:
    """Hold the child slice ``start..end``; ``None`` if its parent lease is not announced
    in this network namespace (gone, or leased in another one), so the slice may already
    belong to a top-level lease of another lock directory.

    Siblings are kept apart by the file locks of the parent's lock directory; the name
    only keeps top-level leasers of other lock directories out: one that announced before
    our look sees the parent alive here (and cannot have passed its own look while the
    parent was announced), one that announces after sees this slice.
    """
    name = Name(CHILD, start, end, lease_id)
    sock = _bind(name)
    if sock is None:
        return None
    announcement = Announcement(sock, name)
    try:
        alive = any(
            n.kind == TOP
            and (n.start, n.end) == parent
            and (parent_lease_id is None or n.lease_id == parent_lease_id)
            for n in held_names()
        )
    except BaseException:
        announcement.close()
        raise
    if not alive:
        announcement.close()
        return None
    return announcement
