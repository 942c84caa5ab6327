"""Port leases seen from outside: a holder's result, the live lease records, TIME_WAIT made
for real."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

from pytest_aiops._ports.records import read_records

#: A holder process's result: the process and its hard allocation (or its error).
Holder = tuple["subprocess.Popen[str]", dict[str, Any]]


def live_leases(lock_dir: Path) -> list[tuple[int, int, str]]:
    """(start, end, session id) of each live lease record in ``lock_dir``."""
    return [
        (r.start_port, r.end_port, r.session_id)
        for r in read_records(str(lock_dir))
        if r.holder_alive()
    ]


def make_time_wait(port: int, host: str = "127.0.0.1") -> None:
    """Leave ``port`` in TIME_WAIT for real, as a test server that closes first does.

    A listener on ``port`` accepts one connection and closes its side first (the active
    close), then the client and the listener close: the server's socket stays in TIME_WAIT
    (about a minute on Linux), so a server without SO_REUSEADDR cannot bind ``port``.
    """
    with socket.socket() as server:
        # SO_REUSEADDR on this side only so that a TIME_WAIT left by an earlier call (a test
        # run a moment ago) does not stop it; a server without the option still cannot bind.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen()
        client = socket.create_connection((host, port))
        accepted, _ = server.accept()
        accepted.close()
        client.recv(1)  # the server's FIN arrived
        client.close()
