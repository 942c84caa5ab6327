"""execnet's socket server as a "remote host", for xdist's ``--tx socket=`` runs; two hosts.

The server is execnet's own ``execnet.script.socketserver``, started as a real process on
127.0.0.1 of a network namespace of its own (it runs whatever a connection sends: no other
user of the machine may reach it; the inner pytest joins it with ``nsenter``) on a port the
kernel picks (it prints it), with a clean environment (no ``PYTEST_AIOPS_*``: whatever a
worker there knows of the settings came from the controller) and, where asked, a UTS
namespace with another host name: its workers are on "another host" by name, while sharing
this machine's files so the test can see what they did. :func:`start_host` and
:func:`join_hosts` build two whole hosts (network, mount and UTS namespaces, a veth pair).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .process_helpers import checkout_pythonpath
from .wait_helpers import wait_for

#: execnet's socket server script (serves one gateway at a time, then the next), run as a
#: module: run as a file, its directory would come first on ``sys.path`` and its name
#: shadow the standard library's ``socketserver`` in the workers it serves.
SOCKET_SERVER = ("-m", "execnet.script.socketserver")

#: The name of the socket server's "host" (its UTS namespace).
OTHER_HOST = "aiops-other-host"


def uts_problem() -> str | None:
    """Why this machine cannot run the socket server in network and UTS namespaces of its
    own (``None``: it can)."""
    if os.geteuid() != 0:
        return "needs root (network and UTS namespaces for execnet's socket server)"
    for tool in ("unshare", "nsenter", "hostname", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(
        [
            "unshare",
            "-n",
            "-u",
            "sh",
            "-c",
            f"ip link set lo up && hostname {OTHER_HOST} && hostname",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode or probe.stdout.strip() != OTHER_HOST:
        return f"cannot make network and UTS namespaces: {probe.stderr.strip()}"
    return None


@dataclass(frozen=True)
class SocketServer:
    """execnet's socket server, listening on ``port`` of 127.0.0.1 in the network namespace
    of process ``pid``, which only processes the test puts there can reach."""

    port: int
    pid: int

    def enter(self) -> list[str]:
        """The command prefix that runs a command in the server's network namespace."""
        return ["nsenter", "-t", str(self.pid), "-n", "--"]


@contextmanager
def socket_server(cwd: Path, *, hostname: str | None) -> Iterator[SocketServer]:
    """Run execnet's socket server in ``cwd`` (as host ``hostname`` if given).

    It executes whatever code a connection sends, so it listens on 127.0.0.1 of a network
    namespace of its own: only what the test runs there (:meth:`SocketServer.enter`) reaches
    it, never another user of this machine. Its environment holds only ``PATH``, ``HOME`` and
    this checkout on ``PYTHONPATH``. The server is stopped (SIGTERM, then SIGKILL) when the
    block ends, unless it already died (a worker that crashes takes the server with it: the
    gateway runs in its process).
    """
    log = cwd.parent / f"{cwd.name}-server.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "PYTHONPATH": checkout_pythonpath(),
    }
    command = [sys.executable, "-u", *SOCKET_SERVER, "127.0.0.1:0"]
    script = 'ip link set lo up && exec "$@"'
    flags = ["-n"]
    if hostname is not None:
        script = 'ip link set lo up && hostname "$0" && exec "$@"'
        flags.append("-u")
    command = ["unshare", *flags, "sh", "-c", script, hostname or "-", *command]
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
        yield SocketServer(port[0], process.pid)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def two_host_problem() -> str | None:
    """Why this machine cannot build two "hosts" of namespaces joined by veth (``None``: it can)."""
    problem = uts_problem()
    if problem is not None:
        return problem
    for tool in ("ip", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(
        [
            "unshare",
            "-n",
            "-m",
            "-u",
            "--propagation",
            "private",
            "sh",
            "-c",
            "ip link set lo up && mount -t tmpfs tmpfs /tmp",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode:
        return f"cannot make network and mount namespaces: {probe.stderr.strip()}"
    return None


#: Shell run as a "host" starts (in fresh network, mount and UTS namespaces): its own name,
#: loopback up, fresh tmpfs on /tmp and /dev/shm, with only the directories ``$SHARE`` lists
#: (``:``-separated: the test's, and this checkout and interpreter where they are under /tmp)
#: seen at the same paths, as a shared file system would be.
HOST_SETUP = """
set -e
hostname "$HOST_NAME" 2>/dev/null || true
ip link set lo up
mount -t tmpfs tmpfs /dev/shm
IFS=:
i=0
for path in $SHARE; do
    mkdir /dev/shm/share$i
    mount --bind "$path" /dev/shm/share$i
    i=$((i + 1))
done
mount -t tmpfs tmpfs /tmp
i=0
for path in $SHARE; do
    mkdir -p "$path"
    mount --bind /dev/shm/share$i "$path"
    umount /dev/shm/share$i
    rmdir /dev/shm/share$i
    i=$((i + 1))
done
unset IFS
"""

#: Then wait for the veth end ``$LINK`` to arrive, and give it ``$ADDRESS``.
HOST_LINK = """
while ! ip link show "$LINK" >/dev/null 2>&1; do sleep 0.05; done
ip addr add "$ADDRESS/24" dev "$LINK"
ip link set "$LINK" up
"""


def shares(directory: Path) -> list[Path]:
    """What a host sees of this machine's /tmp: ``directory``, and this checkout and the
    interpreter's prefix when they are under /tmp (else the host would import whatever
    pytest-aiops is installed, not the tree under test)."""
    found = [directory]
    for path in (Path(checkout_pythonpath().split(os.pathsep)[0]), Path(sys.prefix)):
        if path.resolve().is_relative_to("/tmp") and path.resolve() not in found:
            found.append(path.resolve())
    if any(path.resolve().is_relative_to("/dev/shm") for path in found):
        raise AssertionError(f"the hosts get fresh /dev/shm: {found} must be outside it")
    return found


def start_host(
    name: str,
    share: Path,
    link: str,
    address: str,
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path,
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the only process of a new "host" (network, mount and UTS
    namespaces of its own; see :data:`HOST_SETUP`), once its veth end ``link`` is up."""
    script = HOST_SETUP + HOST_LINK + 'exec "$@"'
    shared = ":".join(str(path) for path in shares(share))
    host_env = {**env, "SHARE": shared, "HOST_NAME": name, "LINK": link, "ADDRESS": address}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                "unshare",
                "-n",
                "-m",
                "-u",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                name,
                *command,
            ],
            cwd=cwd,
            env=host_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def join_hosts(first: subprocess.Popen[bytes], second: subprocess.Popen[bytes]) -> None:
    """A veth pair between the two hosts' network namespaces (never in this one's).

    Only once both processes are in namespaces of their own: ``Popen`` returns before
    ``unshare`` has made them, and an end added to a process still in this namespace would
    be an interface of this machine.
    """
    ours = os.readlink("/proc/self/ns/net")

    def apart() -> bool:
        for process in (first, second):
            if process.poll() is not None:
                raise AssertionError(f"a host exited early (status {process.returncode})")
            try:
                if os.readlink(f"/proc/{process.pid}/ns/net") == ours:
                    return False
            except OSError:
                return False
        return True

    wait_for(apart, "both hosts to be in network namespaces of their own")
    subprocess.run(
        [
            "ip",
            "link",
            "add",
            "va",
            "netns",
            str(first.pid),
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "netns",
            str(second.pid),
        ],
        check=True,
        capture_output=True,
    )
