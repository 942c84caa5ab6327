"""Benchmark: what holding leases in the network namespace costs (Linux; issue 21.2).

Run: ``python bench/netns.py [--rounds N]``. Each case runs with the network-namespace
layer on (abstract socket names, see ``pytest_aiops/_ports/netns.py``) and off (file locks
only, as off Linux), in this one process, rounds alternating, and prints the ratio on/off:

- ``lease``: ``provision`` + ``release`` of a 32-port block, nothing else leased;
- ``lease+1000``: the same with 1,000 unrelated Unix sockets bound in the namespace (a
  desktop's ``/proc/net/unix`` has hundreds to thousands of lines; it is read at each lease);
- ``lease@90%``: 90% of the blocks held by another process; "on": in *another* lock
  directory, found by their names; "off": in the *same* lock directory, found by the file
  locks (so the ratio compares finding held blocks by name with finding them by lock);
- ``child``: a child slice of 8 ports of a held parent;
- descriptors per lease: open files of 64 held leases, divided by 64.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pytest_aiops._ports import netns
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig

BASE, SIZE, COUNT = 12000, 32, 200  # 12000-18399: no other bench or test uses it
_AVAILABLE = netns.available

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


@contextmanager
def layer(on: bool) -> Iterator[None]:
    """The network-namespace layer on or off for the leases made inside."""
    netns.available = _AVAILABLE if on else (lambda: False)
    try:
        yield
    finally:
        netns.available = _AVAILABLE


def median_us(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    if not _AVAILABLE():
        sys.exit("the network-namespace layer is Linux-only (and needs /proc/net/unix)")
    directory = tempfile.mkdtemp(prefix="aiops-bench-")
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=directory, probe=False))
    options = {"basePort": BASE, "blockSize": SIZE, "blockCount": COUNT}

    def lease() -> None:
        provider.provision(session_id="bench", workspace_root=directory, options=options).release()

    parent = provider.provision(
        session_id="parent", workspace_root=directory, options={**options, "blockCount": 1}
    )
    pstart, pend = parent.hard["startPort"], parent.hard["endPort"]
    child_options = {
        "basePort": pstart,
        "blockSize": 8,
        "blockCount": 1,
        "parentStartPort": pstart,
        "parentEndPort": pend,
        "parentLeaseId": parent.hard["leaseId"],
    }

    def child() -> None:
        provider.provision(
            session_id="child", workspace_root=directory, options=child_options
        ).release()

    def run_cases(cases: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
        samples: dict[str, list[float]] = {f"{n}/{s}": [] for n in cases for s in ("on", "off")}
        for _ in range(rounds):
            for name, run in cases.items():
                for state in ("on", "off"):
                    with layer(state == "on"):
                        began = time.perf_counter()
                        run()
                        samples[f"{name}/{state}"].append((time.perf_counter() - began) * 1e6)
        return {name: median_us(values) for name, values in samples.items()}

    for _ in range(50):  # warm-up
        lease()
    report = run_cases({"lease": lease, "child": child}, args.rounds)
    parent.release()

    crowd = []
    for i in range(1000):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(f"\0aiops-bench-crowd/{os.getpid()}/{i}")
        crowd.append(sock)
    report.update(run_cases({"lease+1000": lease}, args.rounds))
    for sock in crowd:
        sock.close()

    for state, where in (("on", tempfile.mkdtemp(prefix="aiops-bench-")), ("off", directory)):
        occupier = subprocess.Popen(
            [sys.executable, "-c", _OCCUPIER, where, str(COUNT * 9 // 10)]
            + [str(n) for n in (BASE, SIZE, COUNT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert occupier.stdout is not None
        assert occupier.stdout.readline().strip() == "ready"
        busy: list[float] = []
        with layer(state == "on"):
            for _ in range(max(1, args.rounds // 10)):
                began = time.perf_counter()
                lease()
                busy.append((time.perf_counter() - began) * 1e6)
        report[f"lease@90%/{state}"] = median_us(busy)
        occupier.communicate("")

    fds: dict[str, float] = {}
    for state in ("on", "off"):
        with layer(state == "on"):
            before = len(os.listdir("/proc/self/fd"))
            held = [
                provider.provision(session_id=f"h{i}", workspace_root=directory, options=options)
                for i in range(64)
            ]
            fds[state] = (len(os.listdir("/proc/self/fd")) - before) / 64
            for one in held:
                one.release()

    print(json.dumps({"median_us": report, "fds_per_lease": fds}, indent=2))
    for name in ("lease", "lease+1000", "child", "lease@90%"):
        on, off = report[f"{name}/on"], report[f"{name}/off"]
        print(f"{name}: median {on} us with names / {off} us without = {on / off:.2f}")
    print(f"descriptors per lease: {fds['on']:.0f} with names, {fds['off']:.0f} without")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.rounds} rounds")


if __name__ == "__main__":
    main()
