"""Facts about the machine's ports: which are in use (TCP/UDP, IPv4/IPv6), the ephemeral range."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from _socket import socket as _RawSocket  # socket.socket's C type: _busy_dual_stack
from functools import lru_cache

#: The probe binds the wildcard address: that fails if the port is bound on 127.0.0.1 *or*
#: on any other IPv4 address (a listener on 0.0.0.0, on a LAN address, a socket in
#: TIME_WAIT), so it is stricter than binding 127.0.0.1 alone and matches what a test server
#: binding 0.0.0.0 will need.
PROBE_HOST = "0.0.0.0"
FALLBACK_EPHEMERAL = (49152, 65535)  # IANA dynamic range: macOS, Windows, the BSDs
EPHEMERAL_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


TCP = "tcp"
UDP = "udp"
PROTOCOLS = (TCP, UDP)


@lru_cache(maxsize=1)
def host_has_ipv6() -> bool:
    """Whether this host can bind IPv6 sockets (``::1``); cached for the process."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _binds(
    family: socket.AddressFamily,
    kind: socket.SocketKind,
    port: int,
    reuse: bool,
    host: str | None = None,
    *,
    v6only: bool = True,
) -> bool:
    """Whether a socket of ``family`` and ``kind`` binds ``host`` (default: the wildcard)
    and ``port`` now; ``v6only=False`` makes an IPv6 wildcard cover IPv4 too."""
    if host is None:
        host = PROBE_HOST if family == socket.AF_INET else "::"
    with socket.socket(family, kind) as sock:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            # EADDRINUSE: someone has it. EACCES: a privileged port for an unprivileged user.
            # EADDRNOTAVAIL: the host address is not local (only for a custom host).
            if error.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def _families() -> tuple[socket.AddressFamily, ...]:
    return (socket.AF_INET, socket.AF_INET6) if host_has_ipv6() else (socket.AF_INET,)


def _dual_stack_sees(family: socket.AddressFamily, host: str, kind: socket.SocketKind) -> bool:
    """Whether a dual-stack bind fails on a port a real ``family`` socket holds on ``host``."""
    with socket.socket(family, kind) as bound:
        if family == socket.AF_INET6:
            bound.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        bound.bind((host, 0))
        port = int(bound.getsockname()[1])
        return not _binds(socket.AF_INET6, kind, port, reuse=False, v6only=False)


@lru_cache(maxsize=1)
def dual_stack_probe() -> bool:
    """Whether one dual-stack bind (``[::]``, ``IPV6_V6ONLY`` off) can stand for the IPv4
    and the IPv6 wildcard binds; checked once per process, with real sockets.

    Linux puts every socket of a port, IPv4 or IPv6, TIME_WAIT included, in one bind bucket
    and treats a dual-stack wildcard as covering every address of both families, so the one
    bind fails exactly when either wildcard bind would: half the syscalls of a probe (tests
    cover listeners, bound sockets and TIME_WAIT of each family). Other kernels keep the two
    binds: BSD-derived stacks can let an IPv4 and a dual-stack wildcard share a port. The
    check (a loopback socket of each family, TCP and UDP, must make the bind fail) guards
    against a kernel or sandbox that differs.
    """
    if not sys.platform.startswith("linux") or not host_has_ipv6():
        return False
    try:
        return all(
            _dual_stack_sees(family, host, kind)
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM)
        )
    except OSError:
        return False


def port_is_free(port: int, host: str = PROBE_HOST, *, protocol: str = TCP) -> bool:
    """Whether a server could bind ``port`` right now, on every address family the host has.

    ``protocol`` ``tcp`` (default) or ``udp``. IPv4 on the wildcard (``0.0.0.0``: a socket on
    127.0.0.1 or any other address counts) and, where the host has IPv6, the IPv6 wildcard
    (``[::]``, so a listener on ``[::1]`` counts); both in one dual-stack bind where
    :func:`dual_stack_probe` holds. No ``SO_REUSEADDR``: a port in TIME_WAIT, which a server
    without it (``socketserver.TCPServer``) could not bind, counts as busy. A custom IPv4
    ``host`` probes that address alone.
    """
    kind = socket.SOCK_DGRAM if protocol == UDP else socket.SOCK_STREAM
    if host != PROBE_HOST:
        return _binds(socket.AF_INET, kind, port, reuse=False, host=host)
    if dual_stack_probe():
        return not _busy_dual_stack(kind, port, port)
    return all(_binds(family, kind, port, reuse=False) for family in _families())


def _busy_dual_stack(kind: int, start: int, end: int) -> list[int]:
    """The ports of ``start..end`` a dual-stack wildcard socket of ``kind`` cannot bind now
    (:func:`_binds` with ``v6only=False``), on the C socket type itself: the probe of every
    port handed out and of every port of a leased block, so without ``socket.socket``'s
    Python layer nor a call per port (issue 23)."""
    busy: list[int] = []
    level, v6only = socket.IPPROTO_IPV6, socket.IPV6_V6ONLY
    in_use = (errno.EADDRINUSE, errno.EACCES)
    for port in range(start, end + 1):
        sock = _RawSocket(socket.AF_INET6, kind)
        try:
            sock.setsockopt(level, v6only, 0)
            sock.bind(("::", port))
        except OSError as error:
            if error.errno not in in_use:
                raise
            busy.append(port)
        finally:
            sock.close()
    return busy


def _linux_tcp_states(ports: set[int]) -> dict[int, set[str]] | None:
    """Port -> TCP states of the sockets on it, from ``/proc/net/tcp{,6}``; None if unread."""
    from .sockets import read_socket_table  # only for a lease that met a busy block

    entries = read_socket_table(ports)
    if entries is None:
        return None
    states: dict[int, set[str]] = {}
    for entry in entries:
        states.setdefault(entry.port, set()).add(entry.state)
    return states


def only_in_time_wait(ports: list[int]) -> bool:
    """Whether every port of ``ports`` (each already found busy) is held by TIME_WAIT
    sockets alone: no listener, no bound socket, nothing that stays.

    Told only where the kernel says it (Linux, ``/proc/net/tcp{,6}``); elsewhere, or when
    those files cannot be read, ``False``: a busy port is taken to be held.
    """
    if not sys.platform.startswith("linux"):
        return False
    states = _linux_tcp_states(set(ports))
    if states is None:
        return False
    from .sockets import TIME_WAIT

    return all(states.get(port) == {TIME_WAIT} for port in ports)


def busy_ports(start: int, end: int, host: str = PROBE_HOST) -> list[int]:
    """The ports in ``start..end`` that a TCP server could not bind on ``host`` now."""
    if host != PROBE_HOST or not dual_stack_probe():
        return [port for port in range(start, end + 1) if not port_is_free(port, host)]
    return _busy_dual_stack(socket.SOCK_STREAM, start, end)


def kernel_port(protocol: str = TCP) -> int:
    """A port the kernel picks (bind to port 0), as suites without pytest-aiops get one."""
    kind = socket.SOCK_DGRAM if protocol == UDP else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_ephemeral_range(path: str = EPHEMERAL_FILE) -> tuple[int, int] | None:
    """``(low, high)`` from a Linux ``ip_local_port_range`` file; ``None`` if unreadable."""
    try:
        with open(path, encoding="ascii") as handle:
            low, high = (int(part) for part in handle.read().split())
    except (OSError, ValueError):
        return None
    return low, high


SYSCTL_NAMES = ("net.inet.ip.portrange.first", "net.inet.ip.portrange.last")


def read_sysctl_range(sysctl: str = "sysctl") -> tuple[int, int] | None:
    """``(first, last)`` from ``sysctl -n net.inet.ip.portrange.first/last`` (macOS, the
    BSDs); ``None`` if the command or the names are missing."""
    try:
        result = subprocess.run(
            [sysctl, "-n", *SYSCTL_NAMES],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        low, high = (int(part) for part in result.stdout.split())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return (low, high) if result.returncode == 0 and 0 < low <= high <= 65535 else None


@lru_cache(maxsize=1)
def ephemeral_range() -> tuple[int, int]:
    """The range the kernel picks client ports from: Linux ``ip_local_port_range``, macOS
    and the BSDs ``sysctl net.inet.ip.portrange.first/last``, else 49152-65535."""
    found = None
    if sys.platform.startswith("linux"):
        found = read_ephemeral_range()
    elif sys.platform == "darwin" or "bsd" in sys.platform or "dragonfly" in sys.platform:
        found = read_sysctl_range()
    return found or FALLBACK_EPHEMERAL


def overlaps_ephemeral(start: int, end: int) -> bool:
    """Whether ``start..end`` shares a port with the OS ephemeral range."""
    low, high = ephemeral_range()
    return start <= high and end >= low
