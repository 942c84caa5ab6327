"""Helpers for the network-namespace tests: processes that lease, and runs that share the
network but not ``/tmp``.

:func:`leaser` starts a separate Python process that leases port blocks in a lock directory
of its own and holds them until told to stop (or killed); :func:`run_server_suites` runs the
same server suite twice at once with ``-n 2``, one of them in a private mount namespace
(``unshare -m``, fresh tmpfs on ``/tmp`` and ``/dev/shm``) in this network namespace.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .process_helpers import REPO_ROOT, child_env, namespace_problem

#: Ports these tests lease (disjoint from every other test of the suite and from the
#: plugin's default range 20000-26399).
CORE_BASE = 9000  # 9000-9127: 16 blocks of 8 ports
SUITE_RANGE = (9200, 9999)  # the inner server suites: 100 blocks of 8

_LEASER = """
import json, os, sys
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
lock_dir, requests = sys.argv[1], json.loads(sys.argv[2])
provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=lock_dir, probe=False))
sys.stdin.readline()  # go
held, leases = [], []  # leases: kept, so none is garbage-collected (and released)
for session, options in requests:
    try:
        lease = provider.provision(session_id=session, workspace_root=lock_dir, options=options)
    except Exception as error:
        held.append({"error": type(error).__name__ + ": " + str(error)})
        continue
    leases.append(lease)
    held.append({"start": lease.hard["startPort"], "end": lease.hard["endPort"],
                 "leaseId": lease.hard["leaseId"]})
print(json.dumps(held), flush=True)
sys.stdin.read()  # hold until stdin closes (or SIGKILL)
"""


@dataclass
class Leaser:
    """A live process that leased (or failed to lease) the blocks it was asked for."""

    process: subprocess.Popen[str]

    def go(self) -> None:
        """Start leasing (so several leasers can be started first, then released at once)."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def held(self) -> list[dict[str, Any]]:
        """What it leased, one entry per request: ``start``/``end``/``leaseId`` or ``error``."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"leaser exited: {self.process.wait()}"
        return list(json.loads(line))


def leaser_argv(lock_dir: Path, requests: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The command line of a leaser process (for a caller that wraps it, e.g. in unshare)."""
    return [sys.executable, "-c", _LEASER, str(lock_dir), json.dumps(list(requests))]


@contextmanager
def leaser(
    lock_dir: Path,
    requests: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    wrap: Sequence[str] = (),
) -> Iterator[Leaser]:
    """A process leasing ``requests`` (``(session id, options)``) in ``lock_dir`` once told
    to :meth:`Leaser.go`; it holds them until the block ends (then it exits; SIGKILLed if it
    does not). ``wrap`` goes before its command line (e.g. ``["unshare", "-n"]``)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [*wrap, *leaser_argv(lock_dir, requests)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        yield Leaser(process)
    finally:
        assert process.stdin is not None
        assert process.stdout is not None
        with suppress(BrokenPipeError):
            process.stdin.close()  # the leaser's cue to end
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def unshare_problem(*flags: str) -> str | None:
    """Why ``unshare FLAGS true`` cannot run here (``None``: it can)."""
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    if os.geteuid() != 0:
        return "needs root to make namespaces"
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True, text=True, check=False)
    if probe.returncode:
        return f"cannot run unshare {' '.join(flags)}: {probe.stderr.strip()}"
    return None


#: The server suite both runs execute: each test serves on its port and takes one connection;
#: every other one closes its side first (so the port stays in TIME_WAIT for a minute and the
#: pools of 8 ports grow, as the two runs' pools did in lockstep in issue 21); each worker
#: then says which blocks it holds and waits, holding them, until every worker of both runs
#: has said so: every block either run leased is then held at one moment, so two runs that
#: shared a port would show it.
SERVER_SUITE = {
    "conftest.py": textwrap.dedent(
        """
        import json, os, time

        import pytest

        SYNC = os.environ["NETNS_SYNC"]
        RUN = os.environ["NETNS_RUN"]
        WORKERS = int(os.environ["NETNS_WORKERS"])


        @pytest.fixture(scope="session", autouse=True)
        def _hold_until_all_done(port_range):
            yield
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            path = os.path.join(SYNC, f"{RUN}-{worker}.json")
            with open(path + ".tmp", "w") as out:
                json.dump([list(b) for b in port_range.blocks], out)
            os.rename(path + ".tmp", path)
            for _ in range(6000):  # a hang guard counting polls (about two minutes)
                done = [n for n in os.listdir(SYNC) if n.endswith(".json")]
                if len(done) >= WORKERS:
                    return
                time.sleep(0.02)
            raise AssertionError(f"other workers never finished: {sorted(done)}")
        """
    ),
    "test_servers.py": textwrap.dedent(
        """
        import socket, time

        import pytest


        @pytest.mark.parametrize("n", range(48))
        def test_serves(aiops_port, n):
            server = socket.socket()  # no SO_REUSEADDR: a shared port fails here
            server.bind(("127.0.0.1", aiops_port))
            server.listen()
            client = socket.create_connection(("127.0.0.1", aiops_port))
            conn, _ = server.accept()
            first, second = (conn, client) if n % 2 == 0 else (client, conn)
            first.close()  # conn first: TIME_WAIT on aiops_port
            second.close()
            server.close()
            time.sleep(0.01)
        """
    ),
}


def write_suite(project: Path) -> None:
    """The server suite in ``project`` (a plain directory: no worktree is needed)."""
    project.mkdir(parents=True, exist_ok=True)
    for name, text in SERVER_SUITE.items():
        (project / name).write_text(text)


def _hidden(paths: Sequence[Path]) -> list[str]:
    """What a fresh tmpfs on /tmp or /dev/shm would hide that the namespaced run needs."""
    wanted = sorted({*map(str, paths), str(REPO_ROOT), os.path.realpath(sys.prefix)})
    found: list[str] = []
    for path in wanted:
        if path.startswith(("/tmp/", "/dev/shm/")) and not any(
            path.startswith(kept + "/") for kept in found
        ):
            found.append(path)
    return found


def namespaced(argv: Sequence[str], binds: Mapping[Path, Path]) -> list[str]:
    """``argv`` in a private mount namespace with fresh tmpfs on /tmp and /dev/shm, the same
    network namespace, and each ``binds`` source directory mounted at its target path there
    (besides the tree under test and the interpreter if a fresh /tmp would hide them)."""
    pairs = [(str(s), str(t)) for s, t in binds.items()]
    pairs += [(p, p) for p in _hidden([]) if p not in dict(pairs).values()]
    before = "".join(
        f"mkdir /mnt/keep{i} && mount --bind {shlex.quote(s)} /mnt/keep{i} && "
        for i, (s, _) in enumerate(pairs)
    )
    after = "".join(
        f"&& mkdir -p {shlex.quote(t)} && mount --bind /mnt/keep{i} {shlex.quote(t)} "
        for i, (_, t) in enumerate(pairs)
    )
    shell = (
        "mount -t tmpfs tmpfs /mnt && "
        + before
        + "mount -t tmpfs -o mode=1777 tmpfs /tmp && mount -t tmpfs -o mode=1777 tmpfs /dev/shm "
        + after
        + '&& exec "$@"'
    )
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, "sh", *argv]


SUITE_PROBLEM = namespace_problem(
    tools=("unshare", "mount"),
    mount_point="/tmp",
    root_for="a private /tmp for one of two runs",
)


def run_server_suites(base: Path, round_: int) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the server suite at one path twice at once with ``-n 2``: ``host`` with a lock
    directory of its own, ``private`` in a private mount namespace (its own project directory
    mounted at the same path, fresh /tmp with the default lock directory in it). Returns both
    finished runs; the blocks each worker held are in ``base/sync-<round>/<run>-<gw>.json``."""
    project = base / "project"  # the same path for both: they seed their blocks alike
    other = base / f"project-private-{round_}"
    sync = base / f"sync-{round_}"
    for directory in (project, other):
        write_suite(directory)
    sync.mkdir()
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "-p",
        "no:benchmark",
        "-p",
        "no:aiohttp",
        "-q",
        f"--aiops-port-range={SUITE_RANGE[0]}-{SUITE_RANGE[1]}",
        "--aiops-ports-per-worker=8",
        "-W",
        "error",
    ]
    env = child_env(NETNS_SYNC=str(sync), NETNS_WORKERS="4", TMPDIR="/tmp")
    for name in list(env):
        # each inner run is a run of its own, not part of this suite's xdist worker
        if name.startswith("PYTEST_XDIST_") or name in ("PYTEST_AIOPS_LOCK_DIR", "PYTEST_ADDOPTS"):
            env.pop(name)
    host_env = {**env, "NETNS_RUN": "host", "PYTEST_AIOPS_LOCK_DIR": str(base / "host-locks")}
    private_env = {**env, "NETNS_RUN": "private"}
    wrapped = namespaced(
        ["sh", "-c", 'cd "$0" && exec "$@"', str(project), *argv],
        {
            other: project,
            sync: sync,
        },
    )
    runs = {
        "host": subprocess.Popen(
            argv,
            cwd=project,
            env=host_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        "private": subprocess.Popen(
            wrapped,
            cwd="/",
            env=private_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    }
    done: dict[str, subprocess.CompletedProcess[str]] = {}
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return done


def held_blocks(sync: Path, run: str) -> list[tuple[int, int]]:
    """The blocks every worker of ``run`` held at the end (as its ``*.json`` said)."""
    blocks: list[tuple[int, int]] = []
    for path in sorted(sync.glob(f"{run}-*.json")):
        blocks += [(int(s), int(e)) for s, e in json.loads(path.read_text())]
    return blocks
