"""What pytest-aiops costs, in CPU instructions counted by callgrind (issue 23).

Wall time on a shared, loaded machine is noise; the instructions a run executes in user space
are not (fixed ``PYTHONHASHSEED``, same files): run it twice and the figures agree to a few
parts in a million. Three cases, each a ratio against a baseline measured in the same run:

1. ``start-up``: a one-test run with the plugin installed but unused, against pytest's own
   (the same run with ``-p no:aiops -p no:aiops-declarations``: neither entry point loaded).
   Every other installed plugin is off on both sides (``-p no:NAME``) so the baseline is
   pytest alone. Once with ``.pyc`` files (warm), once with ``PYTHONDONTWRITEBYTECODE=1``
   (pytest's assertion rewriting of the plugin's modules, redone each run when its cache
   cannot be written). Targets: 1.02x and 1.04x.
2. ``per test``: ``--tests`` tests (default 2,000) each taking ``aiops_port`` and binding it,
   in one process, against the same tests with a stand-in ``aiops_port`` fixture (bind port
   0 and return what the kernel chose) and the plugin off. Target: 1.03x.
3. ``per lease``: ``--rounds`` leases + releases of a 32-port block
   (``PortRangeProvider.provision`` / ``release``) against as many dual-stack probes of the
   same ports plus one lock (the least any probing allocator does). The probe is written in
   this script with the standard library's ``socket.socket`` (the baseline must not move
   with the package it measures; it used the package's own probe until that moved to the C
   socket type): a reference row gives the ratio against the same probe on the C type
   (``_socket.socket``), where a lease's own bookkeeping (records, lock, network-namespace
   names) weighs more. Each side's set-up (imports, a first round) is measured alone and
   subtracted. Target: 2.0x. Callgrind counts
   user space only, so the system calls each side makes (``strace -c``, when installed) are
   printed beside it.

Reference rows: each other pytest plugin installed in the same venv (pytest-xdist,
pytest-timeout, pytest-randomly, pytest-cov, pytest-asyncio), turned on alone against
pytest's own, for the start-up case. Install the package non-editable in its own venv
(an editable install changes which files pytest rewrites)::

    python -m venv /tmp/venv-bench
    /tmp/venv-bench/bin/pip install . pytest-timeout pytest-randomly pytest-cov
    /tmp/venv-bench/bin/python bench/instructions.py

Needs ``valgrind`` on PATH. Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Entry-point names of pytest plugins measured as reference rows, by distribution.
ANCHORS = {
    "pytest-xdist": ("xdist", "xdist.looponfail"),
    "pytest-timeout": ("timeout",),
    "pytest-randomly": ("randomly",),
    "pytest-cov": ("pytest_cov",),
    "pytest-asyncio": ("asyncio",),
}
AIOPS = ("aiops", "aiops-declarations")

ONE_TEST = "def test_one():\n    assert True\n"

TAKES_PORT = """
import socket
import pytest

@pytest.mark.parametrize("i", range({tests}))
def test_takes_a_port(aiops_port, i):
    with socket.socket() as server:
        server.bind(("127.0.0.1", aiops_port))
"""

STAND_IN = """
import socket
import pytest

@pytest.fixture
def aiops_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
"""

LEASES = """
import fcntl, os, socket, sys
from _socket import socket as c_socket
from pytest_aiops._ports.locks import F_OFD_SETLK, PORTS_FILE, _flock
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig

case, directory, rounds, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
last = base + 31
options = {"basePort": base, "blockSize": 32, "blockCount": 64}


def probe(first, last, make=socket.socket):
    # The baseline's dual-stack probe, written here (not the package's own, which would
    # make the baseline move with the code measured): one [::] bind, IPV6_V6ONLY off, per port.
    busy = []
    for port in range(first, last + 1):
        sock = make(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            busy.append(port)
        finally:
            sock.close()
    return busy


if case == "lease":
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=directory))

    def run():
        provider.provision(session_id="bench", workspace_root=directory, options=options).release()
else:
    fd = os.open(os.path.join(directory, PORTS_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    make = c_socket if case == "probe-c" else socket.socket

    def run():
        probe(base, last, make)
        fcntl.fcntl(fd, F_OFD_SETLK, _flock(fcntl.F_WRLCK, base, last))
        fcntl.fcntl(fd, F_OFD_SETLK, _flock(fcntl.F_UNLCK, base, last))

run()  # set-up: lazy imports, first files
for _ in range(rounds):
    run()
"""

_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(
    python: str, args: Sequence[str], cwd: Path, env: dict[str, str], *, check: bool = True
) -> int:
    """User-space instructions ``python args`` executes, as callgrind counts them."""
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise SystemExit(f"failed in {cwd}: {args}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    found = _COLLECTED.findall(result.stderr)
    if not found:
        raise SystemExit(f"no callgrind total for {args}:\n{result.stderr[-3000:]}")
    return int(found[-1])


def syscalls(python: str, args: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, int]:
    """System calls by name (``strace -c -f``), or {} without strace."""
    if shutil.which("strace") is None:
        return {}
    result = subprocess.run(
        ["strace", "-f", "-c", "-U", "name,calls", python, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    counts: dict[str, int] = {}
    for line in result.stderr.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def free_block(start: int = 21000, size: int = 32) -> int:
    """The first block of ``size`` ports from ``start`` that all bind now (IPv4 and IPv6):
    a busy block would make the lease probe the next one too, and the figure depend on
    what else runs on the machine."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    base = start
    while base + size <= 65535:
        for port in range(base, base + size):
            try:
                for family, host in families:
                    with socket.socket(family) as sock:
                        sock.bind((host, port))
            except OSError:
                break
        else:
            return base
        base += size
    raise SystemExit("no free block of ports to measure a lease with")


def drop_rewrite_cache(python: str) -> None:
    """Remove pytest's cached assertion rewrites (``*-pytest-*.pyc``) of the installed
    package: files pytest itself wrote and rewrites again when missing."""
    where = subprocess.run(
        [python, "-c", "import pytest_aiops; print(pytest_aiops.__path__[0])"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),  # the installed package, not a checkout in the cwd
    ).stdout.strip()
    for cached in Path(where).rglob("*-pytest-*.pyc"):
        cached.unlink()


def off(names: Sequence[str]) -> list[str]:
    return [arg for name in names for arg in ("-p", f"no:{name}")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--python", default=sys.executable, help="the venv's python")
    parser.add_argument("--tests", type=int, default=2000, help="per-test case (default 2000)")
    parser.add_argument("--rounds", type=int, default=200, help="per-lease case (default 200)")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at once")
    parser.add_argument(
        "--only", choices=("start-up", "per-test", "per-lease"), action="append", default=[]
    )
    options = parser.parse_args(argv)
    wanted = set(options.only or ("start-up", "per-test", "per-lease"))
    python = options.python
    probe = subprocess.run(
        [
            python,
            "-c",
            "from importlib.metadata import entry_points as e; "
            "print(' '.join(p.name for p in e(group='pytest11')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    present = set(probe.stdout.split())
    anchors = {dist: names for dist, names in ANCHORS.items() if set(names) <= present}
    others = sorted(present - set(AIOPS))
    with tempfile.TemporaryDirectory(prefix="aiops-instr-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(PYTHONHASHSEED="0", PYTEST_AIOPS_LOCK_DIR=str(root / "locks"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        no_pyc = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
        one = root / "one"
        one.mkdir()
        (one / "pytest.ini").write_text("[pytest]\n")
        (one / "test_one.py").write_text(ONE_TEST)
        pytest = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
        jobs: dict[str, tuple[list[str], Path, dict[str, str]]] = {}
        if "start-up" in wanted:
            everything_off = off(others)
            jobs["pytest"] = ([*pytest, *off(AIOPS), *everything_off], one, env)
            jobs["aiops"] = ([*pytest, *everything_off], one, env)
            jobs["pytest no-pyc"] = ([*pytest, *off(AIOPS), *everything_off], one, no_pyc)
            jobs["aiops no-pyc"] = ([*pytest, *everything_off], one, no_pyc)
            for dist, names in anchors.items():
                rest = [name for name in others if name not in names]
                jobs[dist] = ([*pytest, *off(AIOPS), *off(rest)], one, env)
        if "per-test" in wanted:
            ports = root / "ports"
            stand_in = root / "stand_in"
            for suite in (ports, stand_in):
                suite.mkdir()
                (suite / "pytest.ini").write_text("[pytest]\n")
                (suite / "test_ports.py").write_text(TAKES_PORT.format(tests=options.tests))
            (stand_in / "conftest.py").write_text(STAND_IN)
            per_worker = f"--aiops-ports-per-worker={options.tests + 64}"
            jobs["ports"] = ([*pytest, *off(others), per_worker], ports, env)
            jobs["stand-in"] = ([*pytest, *off(others), *off(AIOPS)], stand_in, env)
        if "per-lease" in wanted:
            script = root / "leases.py"
            script.write_text(LEASES)
            lease_base = str(free_block())
            for case in ("lease", "probe", "probe-c"):
                directory = root / f"locks-{case}"
                directory.mkdir()
                for rounds in (0, options.rounds):
                    jobs[f"{case} {rounds}"] = (
                        [str(script), case, str(directory), str(rounds), lease_base],
                        root,
                        env,
                    )
        # Warm-up (not counted): .pyc files for the warm cases, the lock directories.
        for args, cwd, run_env in jobs.values():
            if "PYTHONDONTWRITEBYTECODE" not in run_env:
                subprocess.run(
                    [python, *args], cwd=cwd, env=run_env, capture_output=True, check=False
                )
        counts: dict[str, int] = {}
        # Warm cases first; then the no-.pyc ones, with pytest's cached rewrites of the
        # plugin's modules removed (as in an image built with PYTHONDONTWRITEBYTECODE=1,
        # where they never exist), so each of those runs rewrites what it imports.
        for phase in (False, True):
            if phase:
                drop_rewrite_cache(python)
            with ThreadPoolExecutor(options.jobs) as pool:
                futures = {
                    name: pool.submit(instructions, python, args, cwd, run_env)
                    for name, (args, cwd, run_env) in jobs.items()
                    if ("PYTHONDONTWRITEBYTECODE" in run_env) == phase
                }
                counts.update({name: future.result() for name, future in futures.items()})
        lease_calls = {}
        if "per-lease" in wanted:
            for case in ("lease", "probe"):
                args, cwd, run_env = jobs[f"{case} {options.rounds}"]
                lease_calls[case] = syscalls(python, args, cwd, run_env)
    version = subprocess.run(
        [python, "-c", "import sys, pytest; print(sys.version.split()[0], pytest.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    print(f"python {version[0]}, pytest {version[1]}; instructions (callgrind, user space)")
    ok = True

    def row(label: str, a: int, b: int, target: float | None = None) -> None:
        nonlocal ok
        ratio = a / b
        verdict = ""
        if target is not None:
            good = ratio <= target
            ok = ok and good
            verdict = f"  target <= {target:.2f}x: {'ok' if good else 'OVER TARGET'}"
        print(
            f"{label:<36} {a / 1e6:9.1f}M vs {b / 1e6:9.1f}M {(a - b) / 1e6:+8.1f}M "
            f"{ratio:.3f}x{verdict}"
        )

    if "start-up" in wanted:
        base = counts["pytest"]
        row("start-up: pytest-aiops, unused", counts["aiops"], base, 1.02)
        row(
            "  with PYTHONDONTWRITEBYTECODE=1",
            counts["aiops no-pyc"],
            counts["pytest no-pyc"],
            1.04,
        )
        for dist in anchors:
            row(f"  reference: {dist}", counts[dist], base)
    if "per-test" in wanted:
        row(f"per test: {options.tests} x aiops_port", counts["ports"], counts["stand-in"], 1.03)
    if "per-lease" in wanted:
        lease = counts[f"lease {options.rounds}"] - counts["lease 0"]
        probe_cost = counts[f"probe {options.rounds}"] - counts["probe 0"]
        row(f"per lease: {options.rounds} x lease+release", lease, probe_cost, 2.0)
        c_probe = counts[f"probe-c {options.rounds}"] - counts["probe-c 0"]
        row("  reference: against a probe on the C socket type", lease, c_probe)
        for case, calls in lease_calls.items():
            if calls:
                named = ", ".join(
                    f"{name} {calls.get(name, 0) / (options.rounds + 1):.1f}"
                    for name in ("openat", "rename", "fcntl", "bind", "socket", "close", "write")
                )
                print(f"  {case} system calls per round: {named}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
