"""The two lock backends (issue 13): the same semantics within a process and across them.

Each test names its backend explicitly (``open_lock(..., backend=...)`` or the environment of
a subprocess), so both run on Linux whatever ``$PYTEST_AIOPS_LOCK_BACKEND`` the suite uses.
Another process is the judge of what the kernel holds: it asks with its own backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import LockError
from pytest_aiops._ports.locks import (
    BACKEND_ENV,
    BACKENDS,
    OFD,
    PORTS_FILE,
    POSIX,
    ByteRangeLock,
    backend_name,
    live_lease_ids,
    open_lock,
    range_is_leased,
)
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig

BASE = 5000  # 5000-5299: away from the other lock tests' ports and the default range

_PROBE = """
import json, os, sys
from pytest_aiops._ports.locks import open_lock
lock = open_lock(sys.argv[1], backend=sys.argv[2])
ranges = json.loads(sys.argv[3])
print(json.dumps([lock.is_locked(a, b) for a, b in ranges]))
"""


def held_elsewhere(lock_dir: Path, ranges: list[tuple[int, int]], backend: str = OFD) -> list[bool]:
    """What another process (with ``backend``) sees locked, range by range."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(lock_dir / PORTS_FILE), backend, json.dumps(ranges)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [bool(x) for x in json.loads(result.stdout)]


@contextlib.contextmanager
def holding(script: str, lock_dir: Path, backend: str) -> Iterator[Any]:
    """Run ``script`` (``@BASE@`` replaced) on ``backend``; yield the JSON line it prints
    while it still holds what it leased, and end it (closing its stdin) afterwards."""
    code = script.replace("@BASE@", str(BASE))
    with subprocess.Popen(
        [sys.executable, "-c", code, str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, BACKEND_ENV: backend},
    ) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        line = process.stdout.readline()
        assert line, "the holder died before reporting"
        yield json.loads(line)
        process.stdin.close()
        assert process.wait() == 0


def holder(lock_dir: Path, backend: str) -> ByteRangeLock:
    return open_lock(str(lock_dir / PORTS_FILE), backend=backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_two_holders_in_one_process_conflict_like_two_processes(
    lock_dir: Path, backend: str
) -> None:
    first, second = holder(lock_dir, backend), holder(lock_dir, backend)
    assert first.try_lock(10, 19, shared=False)
    assert not second.try_lock(15, 15, shared=True)  # exclusive excludes everything
    assert not second.try_lock(0, 10, shared=False)
    assert second.is_locked(19, 30)
    assert not second.is_locked(20, 30)
    assert not first.is_locked(10, 19)  # its own lock is not "elsewhere"
    assert first.try_lock(10, 19, shared=True)  # converted in place
    assert second.try_lock(12, 13, shared=True)  # shared + shared
    assert not second.try_lock(12, 13, shared=False)
    first.close()
    assert second.try_lock(0, 11, shared=False)
    second.close()
    assert held_elsewhere(lock_dir, [(0, 100)]) == [False]


def test_releasing_one_holder_keeps_the_others_locks_in_the_kernel(
    lock_dir: Path, backend: str
) -> None:
    # POSIX locks of one process merge in the kernel: unlocking one holder's range must not
    # drop another holder's lock on the same bytes (the in-process table's job).
    parent, child, other = (holder(lock_dir, backend) for _ in range(3))
    assert parent.try_lock(100, 131, shared=False)
    assert parent.try_lock(100, 131, shared=True)
    assert child.try_lock(100, 115, shared=True)  # a child joins the parent's ports
    assert other.try_lock(200, 200, shared=False)
    parent.close()
    assert held_elsewhere(lock_dir, [(100, 115), (116, 131), (200, 200)]) == [True, False, True]
    # The kernel holds only a shared lock where the child is: another process may share it.
    child.unlock(100, 107)
    assert held_elsewhere(lock_dir, [(100, 107), (108, 115)]) == [False, True]
    child.close()
    other.close()
    assert held_elsewhere(lock_dir, [(0, 1000)]) == [False]


def test_a_downgrade_leaves_a_shared_lock_another_process_can_join(lock_dir: Path) -> None:
    lock = holder(lock_dir, POSIX)
    assert lock.try_lock(300, 310, shared=False)
    script = (
        "import sys; from pytest_aiops._ports.locks import open_lock\n"
        "l = open_lock(sys.argv[1], backend='posix')\n"
        "print(l.try_lock(300, 310, shared=True), l.try_lock(300, 310, shared=False))"
    )
    run = [sys.executable, "-c", script, str(lock_dir / PORTS_FILE)]
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout.split() == [
        "False",
        "False",
    ]
    assert lock.try_lock(300, 310, shared=True)
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout.split() == [
        "True",
        "False",
    ]
    lock.close()


def test_many_threads_on_the_posix_backend_never_share_a_port(lock_dir: Path) -> None:
    # In a process of its own, so the whole provider runs on the POSIX backend; every lease
    # is also checked from *another* process while held.
    script = """
import json, sys, threading
from pytest_aiops._ports.locks import backend_name
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
assert backend_name() == "posix"
provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=sys.argv[1], probe=False))
live, guard, errors, leases = set(), threading.Lock(), [], []
def work(n):
    for i in range(40):
        held = provider.provision(session_id=f"t{i % 5}", workspace_root=sys.argv[1],
            options={"basePort": @BASE@, "blockSize": 4, "blockCount": 64})
        ports = set(range(held.hard["startPort"], held.hard["endPort"] + 1))
        with guard:
            if live & ports:
                errors.append(sorted(live & ports))
            live.update(ports)
            if i == 20 and n < 3:
                leases.append(held)  # kept to the end, for the other process to see
                continue
            live.difference_update(ports)
        held.release()
threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"errors": errors, "kept": [[l.hard["startPort"], l.hard["endPort"]]
                  for l in leases]}), flush=True)
sys.stdin.read()
"""
    with holding(script, lock_dir, POSIX) as report:
        assert report["errors"] == []
        kept = [(a, b) for a, b in report["kept"]]
        assert len(kept) == 3
        assert held_elsewhere(lock_dir, kept) == [True, True, True]
    assert held_elsewhere(lock_dir, [(BASE, BASE + 4 * 64 - 1)]) == [False]


def test_our_own_opens_and_closes_do_not_drop_a_posix_lease(lock_dir: Path) -> None:
    # Every pytest-aiops path that opens ports.lock while a lease is held (a second lease,
    # probes, status, records) goes through the process's one descriptor: none drops it.
    script = """
import json, sys
from pytest_aiops._ports.records import read_records, reap_stale
from pytest_aiops._ports.locks import RangeLockFile, live_lease_ids, range_is_leased
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
d = sys.argv[1]
provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=d, probe=False))
kept = provider.provision(session_id="k", workspace_root=d,
                          options={"basePort": @BASE@, "blockSize": 8, "blockCount": 1})
for _ in range(3):
    provider.provision(session_id="x", workspace_root=d,
                       options={"basePort": @BASE@ + 100, "blockSize": 8,
                                "blockCount": 1}).release()
    RangeLockFile(d).close()
    range_is_leased(d, 0, 65535)
    live_lease_ids(d, [kept.hard["leaseId"]])
    list(read_records(d))
    reap_stale(d)
print(json.dumps([kept.hard["startPort"], kept.hard["endPort"]]), flush=True)
sys.stdin.read()
"""
    with holding(script, lock_dir, POSIX) as (start, end):
        assert held_elsewhere(lock_dir, [(start, end), (BASE + 100, BASE + 107)]) == [True, False]


_FOREIGN_CLOSE = """
import json, os, sys
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
d = sys.argv[1]
provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=d, probe=False))
kept = provider.provision(session_id="k", workspace_root=d,
                          options={"basePort": @BASE@, "blockSize": 8, "blockCount": 1})
os.close(os.open(os.path.join(d, "ports.lock"), os.O_RDONLY))  # code that is not ours
print(json.dumps([kept.hard["startPort"], kept.hard["endPort"]]), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize(("backend", "kept"), [(OFD, True), (POSIX, False)])
def test_an_unrelated_descriptor_closed_by_foreign_code(
    lock_dir: Path, backend: str, kept: bool
) -> None:
    """OFD: a descriptor of ports.lock that other code opens and closes drops nothing.
    POSIX: it drops the process's leases -- the kernel's rule the README warns about; this
    test keeps that warning honest (pytest-aiops's own opens never do: see above)."""
    with holding(_FOREIGN_CLOSE, lock_dir, backend) as (start, end):
        assert held_elsewhere(lock_dir, [(start, end)]) == [kept]


@pytest.mark.parametrize("backend", BACKENDS)
def test_what_fork_means_for_each_backend(lock_dir: Path, backend: str) -> None:
    """OFD: a forked child shares the lease (it lives while either process does).
    POSIX: a child inherits no lock; its copy of the lease is inert, releasing it in the
    child drops nothing of the parent's, and the child leases on its own table."""
    script = """
import json, os, sys
from pytest_aiops._ports.locks import RangeLockFile
d = sys.argv[1]
lease = RangeLockFile(d)
assert lease.try_lock(500, 509, shared=False)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    lease.close()  # the child's copy: OFD closes its descriptor, POSIX does nothing
    own = RangeLockFile(d)
    ok = own.try_lock(600, 600, shared=False)
    blocked = not own.try_lock(500, 500, shared=True)
    os.write(write, json.dumps([ok, blocked]).encode())
    os._exit(0)
os.close(write)
child = json.loads(os.read(read, 100))
os.waitpid(pid, 0)
print(json.dumps(child), flush=True)
sys.stdin.read()
"""
    with holding(script, lock_dir, backend) as child:
        # In the child: its own lock worked, and the parent's range was held against it.
        assert child == [True, True]
        # The parent's lease survived the child's release and exit; the child's lock died.
        assert held_elsewhere(lock_dir, [(500, 509), (600, 600)]) == [True, False]


def test_backends_exclude_each_other_on_one_file(lock_dir: Path) -> None:
    ofd, posix = holder(lock_dir, OFD), holder(lock_dir, POSIX)
    assert ofd.try_lock(0, 9, shared=False)
    assert not posix.try_lock(5, 5, shared=True)
    assert posix.is_locked(0, 0)
    ofd.close()
    assert posix.try_lock(5, 5, shared=False)
    assert held_elsewhere(lock_dir, [(5, 5)], backend=OFD) == [True]
    assert held_elsewhere(lock_dir, [(5, 5)], backend=POSIX) == [True]
    posix.close()


def test_processes_on_both_backends_lease_one_directory_at_once(lock_dir: Path) -> None:
    """The mixed run: leases taken at the same moment by OFD and POSIX processes never
    overlap."""
    script = """
import json, sys, time
from pytest_aiops._ports.locks import backend_name
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
d = sys.argv[1]
provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=d, probe=False))
out = open(sys.argv[2], "a")
for i in range(60):
    held = provider.provision(session_id=f"m{i % 7}", workspace_root=d,
                              options={"basePort": @BASE@, "blockSize": 8, "blockCount": 24})
    out.write(f"A {held.hard['leaseId']} {held.hard['startPort']} {held.hard['endPort']}"
              f" {backend_name()}\\n"); out.flush()
    time.sleep(0.001)
    out.write(f"R {held.hard['leaseId']}\\n"); out.flush()
    held.release()
"""
    log = lock_dir.parent / "mixed.log"
    log.write_text("")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script.replace("@BASE@", str(BASE)), str(lock_dir), str(log)],
            env={**os.environ, BACKEND_ENV: backend},
        )
        for backend in [OFD, POSIX] * 4
    ]
    for worker in workers:
        worker.wait()
    assert [w.wait() for w in workers] == [0] * 8
    live: dict[str, tuple[int, int]] = {}
    overlaps, backends = [], set()
    for line in log.read_text().splitlines():
        fields = line.split()
        if fields[0] == "A":
            start, end = int(fields[2]), int(fields[3])
            overlaps += [k for k, (a, b) in live.items() if a <= end and start <= b]
            live[fields[1]] = (start, end)
            backends.add(fields[4])
        else:
            del live[fields[1]]
    assert backends == {OFD, POSIX}
    assert overlaps == []


def test_backend_is_chosen_by_platform_and_forced_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert backend_name() == OFD  # Linux
    monkeypatch.setenv(BACKEND_ENV, "posix")
    assert backend_name() == POSIX
    monkeypatch.setenv(BACKEND_ENV, "flock")
    with pytest.raises(LockError, match=r"PYTEST_AIOPS_LOCK_BACKEND must be ofd or posix"):
        backend_name()
    monkeypatch.delenv(BACKEND_ENV)
    monkeypatch.setattr(sys, "platform", "darwin")  # no such machine here
    monkeypatch.setattr("pytest_aiops._ports.locks.F_OFD_SETLK", -1)
    assert backend_name() == POSIX
    monkeypatch.setenv(BACKEND_ENV, "ofd")
    with pytest.raises(LockError, match="needs Linux open file description locks"):
        backend_name()


def test_live_lease_ids_and_range_probes_see_this_process_s_own_posix_leases(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What status and the provider ask about leases held by this very process.
    monkeypatch.setenv(BACKEND_ENV, POSIX)
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir)))
    held = provider.provision(
        session_id="own",
        workspace_root=str(lock_dir),
        options={"basePort": BASE + 400, "blockCount": 4},
    )
    start, end = held.hard["startPort"], held.hard["endPort"]
    assert range_is_leased(str(lock_dir), start, end)
    assert live_lease_ids(str(lock_dir), [held.hard["leaseId"], 12345]) == {held.hard["leaseId"]}
    held.release()
    assert not range_is_leased(str(lock_dir), start, end)


# --- worktree owner locks (flock, the same on every POSIX system) ----------------------------


def test_owner_locks_conflict_within_a_process_and_survive_unrelated_closes(
    tmp_path: Path,
) -> None:
    from pytest_aiops._worktrees.store import OwnerLock

    path = str(tmp_path / "aiops-x.lock")
    held = OwnerLock.create(path)
    assert OwnerLock.take(path) is None  # a second entry in the same process is refused
    assert OwnerLock.held_elsewhere(path)
    os.close(os.open(path, os.O_RDONLY))  # an unrelated descriptor: drops nothing
    script = (
        "import sys; from pytest_aiops._worktrees.store import OwnerLock as O\n"
        "print(O.held_elsewhere(sys.argv[1]), O.take(sys.argv[1]) is None)"
    )
    check = [sys.executable, "-c", script, path]
    out = subprocess.run(check, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]
    held.close()
    assert not OwnerLock.held_elsewhere(path)
    out = subprocess.run(check, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    again = OwnerLock.take(path)
    assert again is not None
    again.unlink_and_close()
