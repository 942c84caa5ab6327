"""Benchmark: one lease + release of a 32-port block, against probing the same ports.

Run: ``python bench/ports.py [--rounds N]``. Prints, in microseconds:

- ``baseline``: probing the 32 ports of a block (bind 0.0.0.0 without SO_REUSEADDR) plus
  one ``fcntl`` lock syscall -- the least any probing allocator must do;
- ``lease``: ``PortRangeProvider.provision`` + ``release`` in an empty lock directory;
- ``lease@90%``: the same with 90% of the blocks held by another process.

The idle cases run first, the ``@90%`` cases once the other process holds its blocks: on
Linux leases of every lock directory meet in the network namespace, so the other process's
leases would make the idle cases busy too (``bench/netns.py`` measures that layer).

Each lease case runs once per lock backend (``ofd``, ``posix``; issue 13), in this one
process: ``PYTEST_AIOPS_LOCK_BACKEND`` is switched around each round.

Targets (issue 4): median(lease) <= 2 x median(baseline); p99(lease@90%) <= 20 ms.
Rounds alternate between the three so that machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from pytest_aiops._ports.locks import BACKEND_ENV, F_OFD_SETLK, OFD, PORTS_FILE, POSIX, _flock
from pytest_aiops._ports.probe import busy_ports, host_has_ipv6
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig

BASE, SIZE, COUNT = 20000, 32, 200

_OCCUPIER = """
import sys
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=sys.argv[1], probe=False))
options = {"basePort": int(sys.argv[3]), "blockSize": int(sys.argv[4]),
           "blockCount": int(sys.argv[5])}
held = [provider.provision(session_id=f"o{i}", workspace_root=sys.argv[1], options=options)
        for i in range(int(sys.argv[2]))]
print("ready", flush=True)
sys.stdin.read()
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    empty = tempfile.mkdtemp(prefix="aiops-bench-")
    empty_posix = tempfile.mkdtemp(prefix="aiops-bench-")
    busy = tempfile.mkdtemp(prefix="aiops-bench-")
    fd = os.open(os.path.join(empty, PORTS_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    start = BASE + 10 * SIZE

    def baseline() -> None:
        busy_ports(start, start + SIZE - 1)
        fcntl.fcntl(fd, F_OFD_SETLK, _flock(fcntl.F_WRLCK, start, start + SIZE - 1))

    def make_lease(directory: str, backend: str) -> Callable[[], None]:
        provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=directory))

        def run() -> None:
            os.environ[BACKEND_ENV] = backend
            try:
                provider.provision(
                    session_id="bench", workspace_root=directory, options={}
                ).release()
            finally:
                del os.environ[BACKEND_ENV]

        return run

    def probe_ipv4_only() -> None:
        # What the probe cost before it looked at IPv6 too: one IPv4 TCP bind per port.
        for port in range(start, start + SIZE):
            with socket.socket() as sock, contextlib.suppress(OSError):
                sock.bind(("0.0.0.0", port))

    def probe_every_family() -> None:
        busy_ports(start, start + SIZE - 1)  # TCP on 0.0.0.0 and, if the host has it, [::]

    cases = {
        "baseline": baseline,
        "lease": make_lease(empty, OFD),
        "lease@90%": make_lease(busy, OFD),
        "lease-posix": make_lease(empty_posix, POSIX),
        "lease-posix@90%": make_lease(busy, POSIX),
        "probe-ipv4": probe_ipv4_only,
        "probe-all-families": probe_every_family,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}

    def measure(names: list[str]) -> None:
        for _ in range(50):  # warm-up: imports, page cache, socket tables
            for name in names:
                cases[name]()
        for _ in range(args.rounds):
            for name in names:
                began = time.perf_counter()
                cases[name]()
                samples[name].append((time.perf_counter() - began) * 1e6)

    measure([name for name in cases if "@" not in name])
    occupier = subprocess.Popen(
        [sys.executable, "-c", _OCCUPIER, busy, str(COUNT * 9 // 10)]
        + [str(n) for n in (BASE, SIZE, COUNT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert occupier.stdout is not None
    assert occupier.stdout.readline().strip() == "ready"
    measure([name for name in cases if "@" in name])
    occupier.communicate("")
    os.close(fd)
    report = {
        name: {
            "median_us": round(statistics.median(values), 1),
            "p99_us": round(percentile(values, 0.99), 1),
        }
        for name, values in samples.items()
    }
    print(json.dumps(report, indent=2))
    for backend, suffix in ((OFD, ""), (POSIX, "-posix")):
        ratio = report[f"lease{suffix}"]["median_us"] / report["baseline"]["median_us"]
        p99 = report[f"lease{suffix}@90%"]["p99_us"] / 1000
        print(f"{backend}: median lease / median baseline = {ratio:.2f} (target <= 2.00)")
        print(f"{backend}: p99 lease at 90% occupancy = {p99:.2f} ms (<= 20)")
    families = report["probe-all-families"]["median_us"] / report["probe-ipv4"]["median_us"]
    print(
        f"probing {SIZE} ports on every family (IPv6: {host_has_ipv6()}) / IPv4 only = "
        f"{families:.2f} ({report['probe-all-families']['median_us'] / SIZE:.1f} us per port)"
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.rounds} rounds")


if __name__ == "__main__":
    main()
