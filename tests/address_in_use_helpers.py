"""Helpers for the "who holds the port" tests: a real second process that holds a port.

:func:`foreign_listener` starts a separate Python process listening on a port (optionally
inside a pytest-aiops lease of its own, as another run's server would be) and keeps it there
until the block ends; :func:`note` cuts the "aiops: who holds the port" sections out of an
inner run's output.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .process_helpers import child_env

#: Ports these tests bind (disjoint from every other test of the suite and from the
#: plugin's default range 20000-26399).
FOREIGN_PORTS = range(10000, 10100)
OTHER_RUN_BLOCK = (10100, 10103)
OWN_RANGE = (10200, 10263)

_LISTENER = """
import json, socket, sys
port, lease, lock_dir, root = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
release = None
if lease:
    from pytest_aiops._ports.provider import PortRangeProvider
    options = {**lease["options"], "lockDirectory": lock_dir}
    got = PortRangeProvider().provision(
        session_id=lease["session"], workspace_root=root, options=options
    )
    release = got.release
server = socket.create_server(("127.0.0.1", port))
print(json.dumps({"ready": True}), flush=True)
sys.stdin.read()
server.close()
if release is not None:
    release()
"""


@dataclass(frozen=True)
class Listener:
    """A live foreign process listening on ``port``."""

    pid: int
    port: int
    command: str


@contextmanager
def foreign_listener(
    port: int,
    *,
    lock_dir: Path | None = None,
    lease: Mapping[str, Any] | None = None,
    root: Path | None = None,
) -> Iterator[Listener]:
    """A second process listening on 127.0.0.1:``port`` until the block ends (then it
    closes and exits; SIGKILLed if it does not). With ``lease`` (``{"session": id,
    "options": port-range options}``), it first leases that range in ``lock_dir``."""
    args = [
        sys.executable,
        "-c",
        _LISTENER,
        str(port),
        json.dumps(dict(lease) if lease else None),
        str(lock_dir or ""),
        str(root or Path.cwd()),
    ]
    process = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert json.loads(line) == {"ready": True}, f"the listener did not start: {line!r}"
        yield Listener(process.pid, port, " ".join(args))
    finally:
        try:
            process.communicate("", timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def notes(output: str) -> list[list[str]]:
    """The lines of each "aiops: who holds the port" section in an inner run's output."""
    sections = re.split(r"^-+ aiops: who holds the port -+$", output, flags=re.MULTILINE)[1:]
    found = []
    for section in sections:
        lines = []
        for line in section.splitlines()[1:]:  # [0]: the rest of the title line
            if not line or line.startswith(("_", "=", "-")) or line.startswith("aiops "):
                break
            lines.append(line)
        found.append(lines)
    return found


def port_lines(note: list[str]) -> set[int]:
    """Every port a note says something about."""
    return {int(m[1]) for line in note if (m := re.match(r"port (\d+)[:, ]", line))}
