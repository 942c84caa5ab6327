"""Who holds a port: the sockets on it and the processes that own them, from Linux ``/proc``.

One parser of ``/proc/net/{tcp,tcp6,udp,udp6}`` (:func:`read_socket_table`) serves both the
probe (which ports hold only TIME_WAIT) and the plugin's "who holds the port" note, which
maps a socket's inode to the processes whose ``/proc/<pid>/fd`` has it open. Elsewhere (macOS,
the BSDs, Windows: no ``/proc``) :func:`port_holders` says so and what to run instead. This
module is ``_ports``' interface for that note: read-only, only ever called on a failure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from dataclasses import dataclass, field

PROC = "/proc"
TCP_TABLES = ("tcp", "tcp6")
UDP_TABLES = ("udp", "udp6")
#: The kernel's TCP state codes (include/net/tcp_states.h) as /proc/net/tcp shows them.
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}
TIME_WAIT = "06"
LISTEN = "0A"
#: Longest command line a note shows (the rest is cut, with an ellipsis).
COMMAND_WIDTH = 160


@dataclass(frozen=True)
class SocketEntry:
    """One line of a ``/proc/net`` socket table."""

    table: str  # "tcp", "tcp6", "udp" or "udp6"
    address: str  # the local address, as text ("127.0.0.1", "::", ...)
    port: int
    state: str  # the kernel's hex state code ("0A" = LISTEN)
    uid: int
    inode: int  # 0 for a socket no process owns any more (TIME_WAIT)

    @property
    def state_name(self) -> str:
        """``LISTEN``, ``TIME_WAIT``, ... (UDP sockets show ``CLOSE`` when not connected)."""
        if self.table.startswith("udp"):
            return "UDP"
        return TCP_STATES.get(self.state, self.state)


def _address(text: str) -> str:
    """A /proc/net address (host byte order, hex, per 32-bit word) as ``1.2.3.4`` or IPv6."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    import ipaddress

    return str(ipaddress.IPv6Address(words))


def read_socket_table(
    ports: Collection[int] | None = None,
    tables: Collection[str] = TCP_TABLES,
    *,
    proc: str = PROC,
) -> list[SocketEntry] | None:
    """The sockets on ``ports`` (all when ``None``) in ``/proc/net/<table>`` for each table;
    ``None`` when no table could be read (not Linux, or /proc hidden)."""
    entries: list[SocketEntry] = []
    read_any = False
    for table in tables:
        try:
            with open(os.path.join(proc, "net", table), encoding="ascii") as handle:
                read_any = True
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) < 10:
                        continue
                    host, port_text = fields[1].rsplit(":", 1)
                    port = int(port_text, 16)
                    if ports is not None and port not in ports:
                        continue
                    entries.append(
                        SocketEntry(
                            table, _address(host), port, fields[3], int(fields[7]), int(fields[9])
                        )
                    )
        except FileNotFoundError:
            continue  # no IPv6 on this host: no tcp6 table
        except (OSError, ValueError):
            return None
    return entries if read_any else None


def socket_pids(inodes: Collection[int], *, proc: str = PROC) -> dict[int, list[int]]:
    """Socket inode -> the pids with it open (``/proc/<pid>/fd`` links ``socket:[inode]``).

    Only processes this user may inspect are seen (root sees all); one walk of ``/proc``.
    """
    wanted = {f"socket:[{inode}]": inode for inode in inodes if inode}
    pids_by_inode: dict[int, list[int]] = {}
    if not wanted:
        return pids_by_inode
    try:
        pids = [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return pids_by_inode
    for pid in sorted(pids):
        fd_dir = os.path.join(proc, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or another user's process
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and pid not in pids_by_inode.setdefault(inode, []):
                pids_by_inode[inode].append(pid)
    return pids_by_inode


def process_command(pid: int, *, proc: str = PROC) -> str | None:
    """The command line of ``pid`` (shortened to :data:`COMMAND_WIDTH`); None if unreadable."""
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
            raw = handle.read(4096)
    except OSError:
        return None
    # One line: arguments may hold newlines (``python -c`` scripts).
    command = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
    if len(command) > COMMAND_WIDTH:
        command = command[: COMMAND_WIDTH - 3] + "..."
    return command or None


def user_name(uid: int) -> str:
    """``name`` (uid) where the password database knows the uid, else the number."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


@dataclass(frozen=True)
class ProcessHolder:
    """A process with a socket on the port open."""

    pid: int
    command: str | None
    uid: int
    states: tuple[str, ...]  # of its sockets on the port: "LISTEN", "ESTABLISHED", ...
    addresses: tuple[str, ...]  # the local addresses those sockets are on


@dataclass(frozen=True)
class PortHolders:
    """What the machine says about one port: who holds it, as far as this user can see."""

    port: int
    readable: bool  # False: no /proc socket table (not Linux); nothing below is known
    processes: tuple[ProcessHolder, ...] = ()
    #: Sockets on the port whose process this user cannot see: (uid, state name) each.
    hidden: tuple[tuple[int, str], ...] = ()
    time_wait: int = 0  # sockets in TIME_WAIT (no process: the kernel closes them)
    protocols: tuple[str, ...] = field(default=("tcp",))


def port_holders(
    port: int, protocols: Collection[str] = ("tcp",), *, proc: str | None = None
) -> PortHolders:
    """The processes holding ``port`` (``protocols`` ``tcp`` and/or ``udp``), from ``proc``
    (default :data:`PROC`, read where the platform is Linux)."""
    linux = sys.platform.startswith("linux") or proc is not None
    proc = PROC if proc is None else proc
    tables = [
        table
        for protocol in protocols
        for table in (TCP_TABLES if protocol == "tcp" else UDP_TABLES)
    ]
    entries = read_socket_table({port}, tables, proc=proc) if linux else None
    if entries is None:
        return PortHolders(port, readable=False, protocols=tuple(protocols))
    owned = [entry for entry in entries if entry.inode]
    pids_by_inode = socket_pids({entry.inode for entry in owned}, proc=proc)
    by_pid: dict[int, list[SocketEntry]] = {}
    hidden: list[tuple[int, str]] = []
    for entry in owned:
        pids = pids_by_inode.get(entry.inode)
        if not pids:
            hidden.append((entry.uid, entry.state_name))
        for pid in pids or ():
            by_pid.setdefault(pid, []).append(entry)
    processes = tuple(
        ProcessHolder(
            pid,
            process_command(pid, proc=proc),
            found[0].uid,
            tuple(dict.fromkeys(entry.state_name for entry in found)),
            tuple(dict.fromkeys(entry.address for entry in found)),
        )
        for pid, found in sorted(by_pid.items())
    )
    time_wait = sum(1 for e in entries if not e.inode and e.state == TIME_WAIT)
    return PortHolders(
        port,
        readable=True,
        processes=processes,
        hidden=tuple(dict.fromkeys(hidden)),
        time_wait=time_wait,
        protocols=tuple(protocols),
    )


def parent_pid(pid: int, *, proc: str = PROC) -> int | None:
    """The parent of ``pid`` (``/proc/<pid>/stat``); None where unreadable."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as handle:
            stat = handle.read(4096)
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after it.
        return int(stat[stat.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None
