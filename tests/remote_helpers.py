"""execnet's socket server as a "remote host" on loopback, for xdist's ``--tx socket=`` runs.

The server is execnet's own ``execnet/script/socketserver.py``, started as a real process on
127.0.0.1 on a port the kernel picks (it prints it), with a clean environment (no
``PYTEST_AIOPS_*``: whatever a worker there knows of the settings came from the controller)
and, where this machine allows it, in a UTS namespace of its own with another host name
(``unshare -u``, as root): its workers are on "another host" by name, while sharing this
machine's loopback and files so the test can see what they did.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import execnet

from .helpers import checkout_pythonpath, wait_for

#: execnet's socket server script (serves one gateway at a time, then the next).
SOCKET_SERVER = Path(execnet.__file__).parent / "script" / "socketserver.py"

#: The name of the socket server's "host" (its UTS namespace).
OTHER_HOST = "aiops-other-host"


def uts_problem() -> str | None:
    """Why this machine cannot give a process its own host name (``None``: it can)."""
    if os.geteuid() != 0:
        return "needs root (a UTS namespace for the socket server's host name)"
    if shutil.which("unshare") is None or shutil.which("hostname") is None:
        return "needs unshare and hostname"
    probe = subprocess.run(
        ["unshare", "-u", "sh", "-c", f"hostname {OTHER_HOST} && hostname"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode or probe.stdout.strip() != OTHER_HOST:
        return f"cannot make a UTS namespace: {probe.stderr.strip()}"
    return None


@contextmanager
def socket_server(cwd: Path, *, hostname: str | None) -> Iterator[int]:
    """Run execnet's socket server in ``cwd`` (as host ``hostname`` if given); its port.

    Its environment holds only ``PATH``, ``HOME`` and this checkout on ``PYTHONPATH``. The
    server is stopped (SIGTERM, then SIGKILL) when the block ends, unless it already died
    (a worker that crashes takes the server with it: the gateway runs in its process).
    """
    log = cwd.parent / f"{cwd.name}-server.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "PYTHONPATH": checkout_pythonpath(),
    }
    command = [sys.executable, "-u", str(SOCKET_SERVER), "127.0.0.1:0"]
    if hostname is not None:
        script = 'hostname "$0" && exec "$@"'
        command = ["unshare", "-u", "sh", "-c", script, hostname, *command]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        port: list[int] = []

        def listening() -> bool:
            match = re.search(r"Entering Accept loop \('127\.0\.0\.1', (\d+)\)", log.read_text())
            if match:
                port.append(int(match.group(1)))
            elif process.poll() is not None:
                raise AssertionError(f"the socket server exited: {log.read_text()}")
            return bool(match)

        wait_for(listening, "execnet's socket server to listen")
        yield port[0]
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
