"""Facts about the machine's TCP ports: which are in use, and the OS ephemeral range."""

from __future__ import annotations

import errno
import socket
import sys
from functools import lru_cache

PROBE_HOST = "127.0.0.1"
_FALLBACK_EPHEMERAL = (49152, 65535)  # IANA dynamic range: macOS, Windows, BSDs


def port_is_free(port: int, host: str = PROBE_HOST) -> bool:
    """Whether a TCP socket can bind ``host:port`` right now.

    No ``SO_REUSEADDR``: a port that a server without it could not bind (a listener on
    127.0.0.1 or 0.0.0.0, or a socket in TIME_WAIT) counts as busy. UDP is not probed:
    test servers are TCP, and a UDP user of a port does not stop a TCP bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def busy_ports(start: int, end: int, host: str = PROBE_HOST) -> list[int]:
    """The ports in ``start..end`` that cannot be bound on ``host``."""
    return [port for port in range(start, end + 1) if not port_is_free(port, host)]


@lru_cache(maxsize=1)
def ephemeral_range() -> tuple[int, int]:
    """The range the kernel picks client ports from (Linux: ``ip_local_port_range``)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
                low, high = (int(part) for part in handle.read().split())
                return low, high
        except (OSError, ValueError):
            pass
    return _FALLBACK_EPHEMERAL


def overlaps_ephemeral(start: int, end: int) -> bool:
    low, high = ephemeral_range()
    return start <= high and end >= low
