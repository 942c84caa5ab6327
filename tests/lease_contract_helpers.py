"""Helpers for the lease-contract tests: foreign listeners in other processes, an independent
check that every port of a range binds, and the ranges a run's summary lines name."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

from pytest_aiops._ports.probe import host_has_ipv6

_LISTENER = """
import socket, sys
port, host = int(sys.argv[1]), sys.argv[2]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
server = socket.socket(family, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # over an old TIME_WAIT
server.bind((host, port))
server.listen()
print("ready", flush=True)
sys.stdin.read()
"""


def start_foreign_listener(port: int, host: str = "0.0.0.0") -> subprocess.Popen[str]:
    """A process that is no pytest-aiops lease, listening on ``host``:``port`` until its
    stdin closes (the caller kills it at teardown)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _LISTENER, str(port), host],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def ports_that_do_not_bind(start: int, end: int) -> list[int]:
    """Ports of ``start..end`` a TCP server without ``SO_REUSEADDR`` cannot bind now, on
    127.0.0.1, on the IPv4 wildcard and (where the host has IPv6) the IPv6 wildcard.

    Written apart from the provider's probe, so a probe that misses something is caught."""
    hosts: list[tuple[socket.AddressFamily, str]] = [
        (socket.AF_INET, "127.0.0.1"),
        (socket.AF_INET, "0.0.0.0"),
    ]
    if host_has_ipv6():
        hosts.append((socket.AF_INET6, "::"))
    failed: list[int] = []
    for port in range(start, end + 1):
        for family, host in hosts:
            with socket.socket(family, socket.SOCK_STREAM) as server:
                if family == socket.AF_INET6:
                    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    server.bind((host, port))
                except OSError:
                    failed.append(port)
                    break
    return failed


def leased_blocks(output: str) -> list[tuple[int, int]]:
    """Every port block a run's summary lines name: each worker's first range and the
    blocks its pool grew by (``aiops gwN: ports A-B ...; pool grew by ... (C-D, E-F; ...``)."""
    blocks: list[tuple[int, int]] = []
    for line in re.findall(r"^aiops \w+: .*$", output, re.MULTILINE):
        first = re.match(r"aiops \w+: ports (\d+)-(\d+)", line)
        if first:
            blocks.append((int(first.group(1)), int(first.group(2))))
        grown = re.search(r"pool grew by \d+ block\(s\) \(([^;]*);", line)
        if grown:
            for start, end in re.findall(r"(\d+)-(\d+)", grown.group(1)):
                blocks.append((int(start), int(end)))
    return blocks
