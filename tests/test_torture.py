"""Torture: many processes, mixed configs, foreign squatters, TIME_WAIT and random SIGKILLs.

Each worker (this file run as a script) leases blocks in a loop, binds every leased port
without ``SO_REUSEADDR`` while it holds the lease, and appends ``A``/``R`` (acquire/release)
lines to a shared ``O_APPEND`` log. Some iterations lease a parent, split it into children,
release the parent and keep the children. Four foreign listeners squat ports of the range
and a few ports are in TIME_WAIT (a server that closed first). The test kills random workers
with SIGKILL, then replays the log: no two live leases may overlap (a child may only overlap
its own parent), no bind may fail (a lease reports busy only TIME_WAIT ports, and only when
it asked for ``acceptTimeWait``), no lease holds a squatted port, and after the kills every
block without a squatter or TIME_WAIT can be leased again at once.

``AIOPS_SOAK=1`` runs a longer version (more workers, iterations and kill rounds).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SOAK = os.environ.get("AIOPS_SOAK") == "1"
#: 3160-4183: outside the plugin's default range (20000-26399), where another run on the
#: machine could lease and bind the squatted ports, and used by no other test; the configs
#: below all live here.
LOW, HIGH = 3160, 4183
CONFIGS: list[dict[str, Any]] = [
    {"basePort": LOW, "blockSize": 16, "blockCount": 64},
    {"basePort": LOW, "blockSize": 64, "blockCount": 16},
    {"basePort": LOW + 8, "blockSize": 32, "blockCount": 31},  # misaligned with the others
    {"basePort": LOW, "blockSize": 64, "blockCount": 16, "children": 4},
    # Callers that keep busy ports back (the plugin's pool): TIME_WAIT-only blocks allowed
    # when no block is clean, a listener never.
    {"basePort": LOW, "blockSize": 16, "blockCount": 64, "acceptTimeWait": True},
    {"basePort": LOW, "blockSize": 64, "blockCount": 16, "children": 2, "acceptTimeWait": True},
]
#: Squatters: foreign listeners, on loopback and on the wildcard.
FOREIGN = {
    LOW + 100: "127.0.0.1",
    LOW + 555: "0.0.0.0",
    LOW + 301: "127.0.0.1",
    LOW + 790: "0.0.0.0",
}
#: Ports left in TIME_WAIT by a server that closed first, before the workers start.
TIME_WAIT = (LOW + 400, LOW + 401, LOW + 950)


def _bind_all(start: int, end: int) -> tuple[list[socket.socket], list[int]]:
    sockets: list[socket.socket] = []
    failed: list[int] = []
    for port in range(start, end + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))  # deliberately no SO_REUSEADDR
            sock.listen(1)
        except OSError:
            sock.close()
            failed.append(port)
        else:
            sockets.append(sock)
    return sockets, failed


def _shifted(offset: int) -> tuple[list[dict[str, Any]], dict[int, str], list[int]]:
    """CONFIGS, FOREIGN and TIME_WAIT moved up by ``offset`` ports (two torture runs at once
    under xdist bind real sockets: they must not share ports)."""
    configs = [{**c, "basePort": c["basePort"] + offset} for c in CONFIGS]
    foreign = {port + offset: host for port, host in FOREIGN.items()}
    return configs, foreign, [port + offset for port in TIME_WAIT]


def _worker(lock_dir: str, log_path: str, seed: int, iterations: int, offset: int = 0) -> None:
    from pytest_aiops import PortsExhaustedError, child_port_slice
    from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig

    rng = random.Random(seed)
    configs, foreign, time_wait = _shifted(offset)
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=lock_dir))
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    pid = os.getpid()

    def note(*fields: object) -> None:
        os.write(log, (" ".join(map(str, (*fields, pid))) + "\n").encode())  # one atomic append

    def check_bind(hard: Any, accepts: bool) -> list[socket.socket]:
        # Every port binds, except those the lease reports busy: only a lease that accepts
        # TIME_WAIT reports any, and only ports in TIME_WAIT (never a squatter's).
        reported = set(hard.get("busyPorts") or ())
        for port in reported:
            if not accepts or port not in time_wait:
                note("B", port)
        for port in foreign:
            if hard["startPort"] <= port <= hard["endPort"]:
                note("S", port)
        sockets, failed = _bind_all(hard["startPort"], hard["endPort"])
        for port in failed:
            if port not in reported:
                note("E", port)
        return sockets

    def close(sockets: list[socket.socket]) -> None:
        for sock in sockets:
            sock.close()

    for i in range(iterations):
        config = dict(rng.choice(configs))
        children = config.pop("children", 0)
        accepts = bool(config.get("acceptTimeWait"))
        try:
            lease = provider.provision(
                session_id=f"s{rng.randrange(6)}", workspace_root=lock_dir, options=config
            )
        except PortsExhaustedError:
            continue  # every block held or busy right now (the soak's 16 workers): fine
        hard = lease.hard
        note("A", hard["leaseId"], hard["startPort"], hard["endPort"], "-")
        sockets = check_bind(hard, accepts)
        time.sleep(rng.uniform(0, 0.004))
        if not children:
            close(sockets)
            note("R", hard["leaseId"])
            lease.release()
            continue
        close(sockets)  # the children bind these ports from now on
        kids = []
        for index in range(children):
            start, end, _ = child_port_slice(
                hard["startPort"], hard["endPort"], hard["primaryPort"], index, children
            )
            try:
                kid = provider.provision(
                    session_id=f"c{i}-{index}",
                    workspace_root=lock_dir,
                    options={
                        "basePort": start,
                        "blockSize": end - start + 1,
                        "blockCount": 1,
                        "parentStartPort": hard["startPort"],
                        "parentEndPort": hard["endPort"],
                        "parentLeaseId": hard["leaseId"],
                        "acceptTimeWait": bool(hard.get("acceptTimeWait")),
                    },
                )
            except PortsExhaustedError:
                continue  # a slice that went busy since the parent's probe is refused: fine
            note("A", kid.hard["leaseId"], start, end, hard["leaseId"])
            kids.append(kid)
        note("R", hard["leaseId"])
        lease.release()  # the children outlive their parent and keep their ports
        held = [check_bind(kid.hard, accepts) for kid in kids]
        time.sleep(rng.uniform(0, 0.004))
        for kid, sockets in zip(kids, held, strict=True):
            close(sockets)
            note("R", kid.hard["leaseId"])
            kid.release()
    note("D")


def _replay(lines: list[str]) -> list[str]:
    """Overlaps and bind failures in the log; killed workers' leases end at their ``K``."""
    live: dict[str, tuple[int, int, str, str]] = {}  # lease id -> (start, end, parent, pid)
    killed: set[str] = set()
    problems: list[str] = []
    for line in lines:
        kind, *fields = line.split()
        pid = fields[-1]
        if kind == "K":
            killed.add(pid)
            live = {k: v for k, v in live.items() if v[3] != pid}
        elif pid in killed:
            continue  # written between our K and the signal landing
        elif kind == "E":
            problems.append(f"EADDRINUSE on port {fields[0]} in {pid}")
        elif kind == "S":
            problems.append(f"squatted port {fields[0]} leased to {pid}")
        elif kind == "B":
            problems.append(f"port {fields[0]} reported busy to {pid}, not only in TIME_WAIT")
        elif kind == "A":
            lease_id, start, end, parent = fields[0], int(fields[1]), int(fields[2]), fields[3]
            for other, (s, e, _, owner) in live.items():
                if s <= end and start <= e and other != parent:
                    problems.append(f"{pid} got {start}-{end} while {owner} held {s}-{e}")
            live[lease_id] = (start, end, parent, pid)
        elif kind == "R":
            live.pop(fields[0], None)
    return problems


def test_replay_catches_overlaps_and_bind_failures() -> None:
    log = [
        "A 1 100 163 - 10",
        "A 2 100 115 1 10",  # a child inside its own parent: fine
        "A 3 150 165 - 11",  # overlaps lease 1
        "E 120 12",
        "S 121 12",
        "B 122 12",
        "K 10",
        "R 3 11",
        "A 4 100 163 - 13",  # after the holder was killed: fine
        "A 5 160 170 - 10",  # the killed worker's late line: ignored
    ]
    assert _replay(log) == [
        "11 got 150-165 while 10 held 100-163",
        "EADDRINUSE on port 120 in 12",
        "squatted port 121 leased to 12",
        "port 122 reported busy to 12, not only in TIME_WAIT",
    ]


def _backend_env(backend: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if backend is not None:
        env["PYTEST_AIOPS_LOCK_BACKEND"] = backend
    return env


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR: a TIME_WAIT left by an earlier run must not stop the listener; it
    # still blocks every bind without it, like any foreign server.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1)
    return sock


def test_torture_mixed_configs_foreign_listener_and_sigkill(tmp_path: Path) -> None:
    """Every worker on this process's lock backend (``$PYTEST_AIOPS_LOCK_BACKEND``)."""
    _torture(tmp_path, backends=[None], offset=0)


def test_torture_with_ofd_and_posix_workers_at_once(tmp_path: Path) -> None:
    """Workers alternate between the two lock backends, leasing from one lock directory."""
    # 11000-12023: no other test binds there.
    _torture(tmp_path, backends=["ofd", "posix"], offset=11000 - LOW)


def _torture(tmp_path: Path, backends: list[str | None], offset: int) -> None:
    from .port_helpers import make_time_wait

    configs, foreign_ports, time_wait = _shifted(offset)
    lock_dir, log_path = tmp_path / "locks", tmp_path / "log"
    log_path.write_text("")
    foreign: list[socket.socket] = []
    try:
        for port, host in foreign_ports.items():
            foreign.append(_listen(host, port))
        for port in time_wait:
            make_time_wait(port)
        _run_torture(lock_dir, log_path, configs, foreign_ports, time_wait, backends, offset)
    finally:
        for sock in foreign:
            sock.close()


def _run_torture(
    lock_dir: Path,
    log_path: Path,
    configs: list[dict[str, Any]],
    foreign_ports: dict[int, str],
    time_wait: list[int],
    backends: list[str | None],
    offset: int,
) -> None:
    from pytest_aiops import PortsExhaustedError
    from pytest_aiops._ports.locks import range_is_leased
    from pytest_aiops._ports.probe import port_is_free
    from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
    from pytest_aiops._ports.records import read_records, reap_stale

    workers, iterations, rounds = (16, 150, 4) if SOAK else (10, 40, 1)
    rng = random.Random(1234)
    alive: list[subprocess.Popen[bytes]] = []
    finished: list[subprocess.Popen[bytes]] = []
    kills = 0
    try:
        for round_ in range(rounds):
            started = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        str(lock_dir),
                        str(log_path),
                        str(seed),
                        str(iterations),
                        str(offset),
                    ],
                    env=_backend_env(backends[seed % len(backends)]),
                )
                for seed in range(round_ * workers, (round_ + 1) * workers)
            ]
            alive.extend(started)
            for victim in rng.sample(started, k=workers // 3):
                time.sleep(rng.uniform(0.05, 0.6))
                with log_path.open("a") as log:
                    log.write(f"K {victim.pid}\n")  # before the kill: see _replay
                victim.send_signal(signal.SIGKILL)
                kills += 1
            for process in started:
                process.wait()
                finished.append(process)
                alive.remove(process)
    finally:
        for process in alive:
            process.kill()
            process.wait()
    codes = [p.returncode for p in finished]
    assert set(codes) <= {0, -signal.SIGKILL}, codes
    assert codes.count(-signal.SIGKILL) >= 1  # at least one worker died holding or leasing
    lines = log_path.read_text().splitlines()
    assert sum(line.startswith("A ") for line in lines) > workers * 5
    assert _replay(lines) == []  # no overlap, no EADDRINUSE, no squatted port leased

    # Every block is reclaimable at once: nothing is held, and every block without a
    # squatter or a port still in TIME_WAIT is leased, clean; with acceptTimeWait the
    # TIME_WAIT-only blocks come after them, never a squatter's.
    assert not range_is_leased(str(lock_dir), LOW + offset, HIGH + offset)
    stale = reap_stale(str(lock_dir))
    assert {r.pid for r in stale} <= {p.pid for p in finished if p.returncode != 0}
    assert list(read_records(str(lock_dir))) == []
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir)))
    for config in configs[:3]:
        base, size, count = config["basePort"], config["blockSize"], config["blockCount"]
        still_waiting = {port for port in time_wait if not port_is_free(port)}
        blocks = [(base + n * size, base + (n + 1) * size - 1) for n in range(count)]
        squatted = [b for b in blocks if any(b[0] <= p <= b[1] for p in foreign_ports)]
        waiting = [
            b for b in blocks if b not in squatted and any(b[0] <= p <= b[1] for p in still_waiting)
        ]
        leases: list[Any] = []
        for accept in (False, True):
            while True:
                try:
                    lease = provider.provision(
                        session_id=f"r{len(leases)}",
                        workspace_root=str(lock_dir),
                        options={**config, "acceptTimeWait": accept},
                    )
                except PortsExhaustedError:
                    break
                leases.append(lease)
            if not accept:
                assert len(leases) == count - len(squatted) - len(waiting)
                assert not any(lease.hard.get("busyPorts") for lease in leases)
        assert len(leases) == count - len(squatted)
        got = {(lease.hard["startPort"], lease.hard["endPort"]) for lease in leases}
        assert not got & set(squatted)
        reported = {port for lease in leases for port in lease.hard.get("busyPorts", [])}
        assert reported <= still_waiting
        for lease in leases:
            lease.release()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
