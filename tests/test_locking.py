"""Lease locking with real processes, threads, SIGKILL and a hostile lock directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import (
    AiopsWarning,
    LockError,
    ParentGoneError,
    PortRangeProviderConfig,
    PortsExhaustedError,
)
from pytest_aiops._core.types import ResourceLease
from pytest_aiops._ports import netns
from pytest_aiops._ports.locks import (
    LEASES_DIR,
    PORTS_FILE,
    POSIX,
    backend_name,
    ensure_shared_directory,
    range_is_leased,
)
from pytest_aiops._ports.provider import PortRangeProvider
from pytest_aiops._ports.records import holders_of, read_records, reap_stale

from .port_helpers import Holder

HoldLease = Callable[..., Holder]
BASE = 5500  # 5500-5819: below the default range, where no default-settings run leases


def provider(lock_dir: Path, *, probe: bool = False) -> PortRangeProvider:
    return PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir), probe=probe))


def lease(lock_dir: Path, session_id: str = "s", **options: Any) -> ResourceLease:
    return provider(lock_dir).provision(
        session_id=session_id, workspace_root=str(lock_dir), options=options
    )


def child_options(parent: dict[str, Any], start: int, size: int, **extra: Any) -> dict[str, Any]:
    return {
        "basePort": start,
        "blockSize": size,
        "blockCount": 1,
        "parentStartPort": parent["startPort"],
        "parentEndPort": parent["endPort"],
        **extra,
    }


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


# --- no overlap ---------------------------------------------------------------------------


def test_threads_in_one_process_never_share_a_port(lock_dir: Path) -> None:
    live: set[int] = set()
    guard = threading.Lock()
    errors: list[str] = []
    shared = provider(lock_dir)  # one provider object used by every thread

    def work(worker: int) -> None:
        for i in range(15):
            held = shared.provision(
                session_id=f"t{i % 3}",
                workspace_root=str(lock_dir),
                options={"basePort": BASE, "blockSize": 8, "blockCount": 40},
            )
            ports = set(range(held.hard["startPort"], held.hard["endPort"] + 1))
            with guard:
                if live & ports:
                    errors.append(f"thread {worker} got {sorted(live & ports)} twice")
                live.update(ports)
            with guard:
                live.difference_update(ports)
            held.release()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert not range_is_leased(str(lock_dir), BASE, BASE + 8 * 40 - 1)


def test_sixteen_and_sixty_four_port_configs_do_not_overlap(lock_dir: Path) -> None:
    big = [lease(lock_dir, f"b{i}", basePort=BASE, blockSize=64, blockCount=4) for i in range(3)]
    # 16-port blocks over the same 256 ports: only the 64 the big ones left are free.
    small = [lease(lock_dir, "s", basePort=BASE, blockSize=16, blockCount=16) for _ in range(4)]
    with pytest.raises(PortsExhaustedError, match="No free deterministic port block"):
        lease(lock_dir, "s", basePort=BASE, blockSize=16, blockCount=16)
    assert len(small) == 4
    taken = [set(range(x.hard["startPort"], x.hard["endPort"] + 1)) for x in big + small]
    assert sum(map(len, taken)) == len(set().union(*taken)) == 256
    for held in big + small:
        held.release()


def test_top_level_cannot_take_ports_of_a_live_parent(
    lock_dir: Path, hold_lease: HoldLease
) -> None:
    process, parent = hold_lease(
        {"basePort": BASE, "blockSize": 32, "blockCount": 1, "lockDirectory": str(lock_dir)}
    )
    with pytest.raises(PortsExhaustedError):
        lease(lock_dir, basePort=BASE + 16, blockSize=32, blockCount=1)  # straddles the parent
    with pytest.raises(PortsExhaustedError):
        lease(lock_dir, basePort=BASE + 8, blockSize=8, blockCount=2)  # inside it
    child = lease(lock_dir, "c", **child_options(parent, BASE, 16))  # its own child may join
    kill(process)
    # The parent is gone but its live child keeps its slice: only the other half is free.
    free = lease(lock_dir, basePort=BASE, blockSize=16, blockCount=2)
    assert free.hard["startPort"] == BASE + 16
    free.release()
    child.release()


# --- children ----------------------------------------------------------------------------


def test_two_children_cannot_hold_the_same_slice(lock_dir: Path, hold_lease: HoldLease) -> None:
    parent = lease(lock_dir, basePort=BASE, blockSize=32, blockCount=1)
    options = child_options(dict(parent.hard), BASE, 16, lockDirectory=str(lock_dir))
    _, first = hold_lease(options)
    assert first["startPort"] == BASE
    with pytest.raises(PortsExhaustedError, match="already held by another live child"):
        lease(lock_dir, "c2", **options)
    second = lease(lock_dir, "c3", **child_options(dict(parent.hard), BASE + 16, 16))
    second.release()
    parent.release()


def test_child_refused_once_its_parent_is_dead(lock_dir: Path, hold_lease: HoldLease) -> None:
    process, parent = hold_lease(
        {"basePort": BASE, "blockSize": 32, "blockCount": 1, "lockDirectory": str(lock_dir)}
    )
    kill(process)
    # Someone else now holds part of the dead parent's range, in another shape.
    other = lease(lock_dir, "other", basePort=BASE, blockSize=16, blockCount=1)
    with pytest.raises(ParentGoneError) as caught:
        lease(lock_dir, "c", **child_options(parent, BASE, 16))
    assert str(caught.value) == (
        f"parent port range {BASE}-{BASE + 31} is not held by a live lease in "
        f"'{lock_dir / PORTS_FILE}'; provision the parent session again"
    )
    assert isinstance(caught.value, LockError)
    with pytest.raises(ParentGoneError):
        lease(lock_dir, "c", **child_options(parent, BASE + 16, 16))
    other.release()


def test_child_with_lease_id_refused_after_same_range_is_leased_again(lock_dir: Path) -> None:
    parent = lease(lock_dir, basePort=BASE, blockSize=32, blockCount=1)
    old = dict(parent.hard)
    parent.release()
    again = lease(lock_dir, basePort=BASE, blockSize=32, blockCount=1)  # same range, new lease
    with pytest.raises(ParentGoneError):
        lease(lock_dir, "c", **child_options(old, BASE, 16, parentLeaseId=old["leaseId"]))
    fresh = dict(again.hard)
    child = lease(lock_dir, "c", **child_options(fresh, BASE, 16, parentLeaseId=fresh["leaseId"]))
    child.release()
    again.release()


# --- crashes ------------------------------------------------------------------------------


def test_sigkill_frees_the_block_at_once(lock_dir: Path, hold_lease: HoldLease) -> None:
    options = {"basePort": BASE, "blockSize": 32, "blockCount": 8, "lockDirectory": str(lock_dir)}
    process, held = hold_lease(options, "crash-me")
    assert [r.session_id for r in holders_of(str(lock_dir), held["startPort"])] == ["crash-me"]
    with pytest.raises(PortsExhaustedError):
        lease(lock_dir, "x", basePort=held["startPort"], blockSize=32, blockCount=1)
    kill(process)
    (record,) = read_records(str(lock_dir))
    assert (record.session_id, record.alive) == ("crash-me", False)  # the kernel says so
    # No timeout, no cleanup: the kernel dropped the lock with the process.
    again = lease(
        lock_dir, "crash-me", **{k: v for k, v in options.items() if k != "lockDirectory"}
    )
    assert again.hard["startPort"] == held["startPort"]
    (record,) = read_records(str(lock_dir))  # the record file was reused for the new lease
    assert (record.pid, record.alive) == (os.getpid(), True)
    again.release()
    assert list(read_records(str(lock_dir))) == []


def test_reap_stale_removes_dead_records_only(lock_dir: Path, hold_lease: HoldLease) -> None:
    dead, _ = hold_lease({"basePort": BASE, "blockCount": 4, "lockDirectory": str(lock_dir)}, "d")
    live, _ = hold_lease({"basePort": BASE, "blockCount": 4, "lockDirectory": str(lock_dir)}, "l")
    kill(dead)
    assert [(r.session_id, r.pid) for r in reap_stale(str(lock_dir))] == [("d", dead.pid)]
    assert [r.session_id for r in read_records(str(lock_dir))] == ["l"]
    kill(live)
    assert [r.session_id for r in reap_stale(str(lock_dir))] == ["l"]
    assert os.listdir(lock_dir / LEASES_DIR) == []


def test_reap_stale_keeps_and_does_not_report_a_dead_parent_with_a_live_child(
    lock_dir: Path, hold_lease: HoldLease
) -> None:
    parent, held = hold_lease({"basePort": BASE, "blockCount": 4, "lockDirectory": str(lock_dir)})
    child = lease(lock_dir, "child", **child_options(held, held["startPort"], 8))
    kill(parent)
    for dry_run in (True, False, False):  # never claims a removal it cannot make
        assert reap_stale(str(lock_dir), dry_run=dry_run) == []
    assert {r.session_id for r in read_records(str(lock_dir))} == {"holder", "child"}
    child.release()
    assert [r.session_id for r in reap_stale(str(lock_dir), dry_run=True)] == ["holder"]
    assert [r.session_id for r in reap_stale(str(lock_dir))] == ["holder"]
    assert list(read_records(str(lock_dir))) == []


def test_reap_stale_children_of_takes_only_dead_children_inside_the_range(
    lock_dir: Path, hold_lease: HoldLease
) -> None:
    """What an xdist controller runs when its workers are down: it removes what its dead
    workers left in its parent range, and nothing of any other lease."""
    dead_top, _ = hold_lease({"basePort": BASE, "blockCount": 4, "lockDirectory": str(lock_dir)})
    parent = lease(lock_dir, "parent", basePort=BASE, blockCount=4)
    held = dict(parent.hard)
    slices = [
        hold_lease(
            {**child_options(held, held["startPort"] + 8 * i, 8), "lockDirectory": str(lock_dir)},
            f"child-{i}",
        )[0]
        for i in range(2)
    ]
    kill(dead_top)
    kill(slices[0])
    inside = (held["startPort"], held["endPort"])
    assert [r.session_id for r in reap_stale(str(lock_dir), children_of=inside)] == ["child-0"]
    sessions = {r.session_id for r in read_records(str(lock_dir))}
    assert sessions == {"holder", "parent", "child-1"}  # the dead top-level one: not ours
    assert reap_stale(str(lock_dir), children_of=(held["endPort"] + 1, held["endPort"] + 64)) == []
    kill(slices[1])
    parent.release()
    assert sorted(r.session_id for r in reap_stale(str(lock_dir))) == ["child-1", "holder"]


_FD_LIMIT = """
import json, os, resource, sys
from pytest_aiops import child_port_slice
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=sys.argv[1], probe=False))
before = len(os.listdir("/proc/self/fd"))
parent = provider.provision(session_id="p", workspace_root=sys.argv[1],
                            options={"basePort": 1100, "blockSize": 64 * 32, "blockCount": 1})
start, end = parent.hard["startPort"], parent.hard["endPort"]
children = []
for index in range(64):
    s, e, _ = child_port_slice(start, end, start, index, 64)
    children.append(provider.provision(session_id=f"c{index}", workspace_root=sys.argv[1],
        options={"basePort": s, "blockSize": e - s + 1, "blockCount": 1,
                 "parentStartPort": start, "parentEndPort": end}))
print(json.dumps({"fds": len(os.listdir("/proc/self/fd")) - before,
                  "sizes": sorted({c.hard["blockSize"] for c in children})}))
"""


def test_64_workers_of_32_ports_fit_under_1024_open_files(lock_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FD_LIMIT, str(lock_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    # OFD: one descriptor per lease; POSIX: one descriptor per lock file per process; plus,
    # where leases are held in the network namespace too, one socket per lease.
    fds = (1 if backend_name() == POSIX else 65) + (65 if netns.available() else 0)
    assert report == {"fds": fds, "sizes": [32]}


# --- a hostile or unusable lock directory ---------------------------------------------------


def _plant(kind: str, path: Path, outside: Path) -> None:
    if kind == "symlink":
        path.symlink_to(outside / "target")
    elif kind == "dangling symlink":
        path.symlink_to(outside / "missing")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "hard link":
        (outside / "target").write_text("precious\n")
        os.link(outside / "target", path)


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "directory", "fifo", "hard link"])
def test_planted_ports_lock_is_refused_not_followed(
    lock_dir: Path, tmp_path: Path, kind: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("precious\n")
    _plant(kind, lock_dir / PORTS_FILE, outside)
    with pytest.raises(LockError) as caught:
        lease(lock_dir)
    assert caught.value.lock_path == str(lock_dir / PORTS_FILE)
    assert str(caught.value).startswith(f"lock file '{lock_dir / PORTS_FILE}' ")
    assert str(caught.value).endswith(
        "; remove whatever is at that path or choose another lockDirectory"
    )
    assert (outside / "target").read_text() == "precious\n"
    assert sorted(os.listdir(outside)) == ["target"]


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_planted_leases_dir_is_refused_not_followed(
    lock_dir: Path, tmp_path: Path, kind: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").mkdir()
    _plant(kind, lock_dir / LEASES_DIR, outside)
    # Records only inform; the lease itself holds, with a warning naming the directory.
    with pytest.warns(AiopsWarning) as caught:
        held = lease(lock_dir)
    message = str(caught[0].message)
    assert "its record could not be written" in message
    assert f"lease record directory '{lock_dir / LEASES_DIR}' is" in message
    assert os.listdir(outside / "target") == []
    assert range_is_leased(str(lock_dir), held.hard["startPort"], held.hard["endPort"])
    held.release()
    assert not range_is_leased(str(lock_dir), 0, 65535)
    assert list(read_records(str(lock_dir))) == []
    assert os.listdir(outside / "target") == []


def test_planted_record_names_are_ignored_and_never_followed(
    lock_dir: Path, tmp_path: Path
) -> None:
    held = lease(lock_dir, "mine")
    leases = lock_dir / LEASES_DIR
    victim = tmp_path / "victim.json"
    victim.write_text(
        json.dumps(
            {"sessionId": "v", "pid": 1, "host": "h", "createdAt": 0, "startPort": 1, "endPort": 2}
        )
    )
    (leases / "1-2.1.abc.json").symlink_to(victim)
    os.mkfifo(leases / "3-4.1.abc.json")
    (leases / "5-6.1.abc.json").mkdir()
    (leases / "junk.json").write_text("{not json")
    (leases / "big.json").write_bytes(b" " * 200_000)
    assert [r.session_id for r in read_records(str(lock_dir))] == ["mine"]
    assert reap_stale(str(lock_dir)) == []
    assert victim.exists()
    held.release()


def test_uncreatable_lock_directory_names_path_and_option(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "locks"
    with pytest.raises(LockError) as caught:
        lease(target)
    assert str(caught.value) == (
        f"lockDirectory must be a writable directory, not '{target}' (Not a directory); "
        "set --aiops-lock-dir, $PYTEST_AIOPS_LOCK_DIR or the lockDirectory option"
    )
    with pytest.raises(LockError, match=r"not '.*file' \(not a directory\)"):
        lease(blocker)


def test_machine_wide_directory_refuses_a_planted_symlink(tmp_path: Path) -> None:
    root = tmp_path / "tmp"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "pytest-aiops").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LockError) as caught:
        ensure_shared_directory(str(root / "pytest-aiops" / "locks"), str(root))
    assert "(a symlink, refused in a shared directory)" in str(caught.value)
    assert os.listdir(tmp_path / "elsewhere") == []
    (root / "pytest-aiops").unlink()
    path = ensure_shared_directory(str(root / "pytest-aiops" / "locks"), str(root))
    assert oct(os.stat(path).st_mode & 0o7777) == oct(0o1777)
    assert oct(os.stat(root / "pytest-aiops").st_mode & 0o7777) == oct(0o1777)


def test_lease_ports_are_bindable_without_reuseaddr(lock_dir: Path) -> None:
    held = provider(lock_dir, probe=True).provision(
        session_id="b", workspace_root=str(lock_dir), options={"basePort": BASE, "blockCount": 4}
    )
    sockets = []
    try:
        for port in range(held.hard["startPort"], held.hard["endPort"] + 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", port))  # no SO_REUSEADDR: EADDRINUSE would fail here
    finally:
        for sock in sockets:
            sock.close()
        held.release()


def test_a_second_release_leaves_the_next_lease_record_alone(lock_dir: Path) -> None:
    first = lease(lock_dir, "a", basePort=BASE, blockCount=1)
    first.release()
    second = lease(lock_dir, "b", basePort=BASE, blockCount=1)
    first.release()  # a stale handle released again must not touch b's record
    assert [(r.session_id, r.alive) for r in read_records(str(lock_dir))] == [("b", True)]
    second.release()


def test_a_planted_record_name_does_not_cost_the_block(lock_dir: Path) -> None:
    from pytest_aiops._ports.records import record_name

    first = lease(lock_dir, "probe", basePort=BASE, blockCount=1)
    start, end = first.hard["startPort"], first.hard["endPort"]
    first.release()
    for name in os.listdir(lock_dir / LEASES_DIR):  # the put-aside record of that lease
        os.unlink(lock_dir / LEASES_DIR / name)
    planted = lock_dir / LEASES_DIR / record_name(start, end, "top-level")
    planted.write_text("{}")
    os.chown(planted, 65534, 65534)  # another user's file (tests run as root here)
    held = lease(lock_dir, "victim", basePort=BASE, blockCount=1)  # no warning: -W error
    assert held.hard["startPort"] == start
    # The squatted name never hides the lease: its record has a name nobody can guess.
    from pytest_aiops._ports.records import read_records, unique_record_name

    listed = [r for r in read_records(str(lock_dir)) if r.alive]
    assert [(r.session_id, os.path.basename(r.path)) for r in listed] == [
        ("victim", unique_record_name(start, end, "top-level", held.hard["leaseId"]))
    ]
    held.release()
    assert planted.read_text() == "{}"  # not ours: untouched


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"parentEndPort": 70000}, "parentStartPort"),
        ({"parentLeaseId": 2**63}, "parentLeaseId"),
    ],
)
def test_parent_options_are_bounded(lock_dir: Path, options: dict[str, Any], option: str) -> None:
    from pytest_aiops import OptionError

    base = {"basePort": BASE, "blockSize": 8, "blockCount": 1, "parentStartPort": BASE}
    base["parentEndPort"] = BASE + 31
    with pytest.raises(OptionError) as info:
        lease(lock_dir, "child", **{**base, **options})
    assert info.value.option == option
