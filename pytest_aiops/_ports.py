"""Facts about the machine's TCP ports: which are in use, and the OS ephemeral range."""

from __future__ import annotations

import errno
import socket
import sys
from functools import lru_cache

#: The probe binds the wildcard address: that fails if the port is bound on 127.0.0.1 *or*
#: on any other IPv4 address (a listener on 0.0.0.0, on a LAN address, a socket in
#: TIME_WAIT), so it is stricter than binding 127.0.0.1 alone and matches what a test server
#: binding 0.0.0.0 will need.
PROBE_HOST = "0.0.0.0"
FALLBACK_EPHEMERAL = (49152, 65535)  # IANA dynamic range: macOS, Windows, the BSDs
EPHEMERAL_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def port_is_free(port: int, host: str = PROBE_HOST) -> bool:
    """Whether a TCP socket can bind ``host:port`` right now.

    No ``SO_REUSEADDR``: a port that a server without it could not bind counts as busy.
    UDP is not probed: TCP and UDP ports are separate namespaces, so a UDP user of a port
    does not stop a TCP server from binding it (and test servers are overwhelmingly TCP).
    IPv6-only sockets (``::1``, or ``[::]`` with ``IPV6_V6ONLY``) are not seen either; a
    dual-stack ``[::]`` listener is.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as error:
            # EADDRINUSE: someone has it. EACCES: a privileged port for an unprivileged user.
            # EADDRNOTAVAIL: the host address is not local (only for a custom host).
            if error.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def busy_ports(start: int, end: int, host: str = PROBE_HOST) -> list[int]:
    """The ports in ``start..end`` that cannot be bound on ``host``."""
    return [port for port in range(start, end + 1) if not port_is_free(port, host)]


def read_ephemeral_range(path: str = EPHEMERAL_FILE) -> tuple[int, int] | None:
    """``(low, high)`` from a Linux ``ip_local_port_range`` file; ``None`` if unreadable."""
    try:
        with open(path, encoding="ascii") as handle:
            low, high = (int(part) for part in handle.read().split())
    except (OSError, ValueError):
        return None
    return low, high


@lru_cache(maxsize=1)
def ephemeral_range() -> tuple[int, int]:
    """The range the kernel picks client ports from (Linux: ``ip_local_port_range``)."""
    if sys.platform.startswith("linux"):
        found = read_ephemeral_range()
        if found is not None:
            return found
    return FALLBACK_EPHEMERAL


def overlaps_ephemeral(start: int, end: int) -> bool:
    """Whether ``start..end`` shares a port with the OS ephemeral range."""
    low, high = ephemeral_range()
    return start <= high and end >= low
