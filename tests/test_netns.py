"""Leases are scoped like ports: processes of one network namespace never share a port,
whatever lock directory (``/tmp``) they use; other network namespaces are left alone.

Real processes throughout: leasers in lock directories of their own (the stand-in for a
private ``/tmp``), a process SIGKILLed while it holds a lease, a leaser in a network
namespace of its own (``unshare -n``), and two ``-n 2`` runs of a server suite at once, one
of them in a private mount namespace (``unshare -m``, fresh tmpfs on ``/tmp`` and
``/dev/shm``) that shares this network namespace.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import ParentGoneError, PortsExhaustedError
from pytest_aiops._ports import netns
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig

from .inner_run_helpers import allowed_inner_warnings, check_inner_warnings
from .netns_helpers import (
    CORE_BASE,
    SUITE_PROBLEM,
    held_blocks,
    leaser,
    run_server_suites,
    unshare_problem,
)

pytestmark = pytest.mark.skipif(
    not netns.available(), reason="leases are held in the network namespace on Linux only"
)

BLOCK = {"basePort": CORE_BASE, "blockSize": 8, "blockCount": 16}


def _ports(held: list[dict[str, Any]]) -> set[int]:
    assert all("error" not in h for h in held), held
    return {p for h in held for p in range(h["start"], h["end"] + 1)}


def _lease(lock_dir: Path, session: str, **options: Any) -> Any:
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir), probe=False))
    return provider.provision(session_id=session, workspace_root=str(lock_dir), options=options)


def test_two_lock_directories_never_lease_the_same_block(tmp_path: Path) -> None:
    # Same session ids, so both prefer the same blocks in the same order (lockstep), and
    # both start at once: each takes 6 blocks of the 16, in a lock directory of its own.
    requests = [("same", BLOCK)] * 6
    with leaser(tmp_path / "a", requests) as one, leaser(tmp_path / "b", requests) as two:
        one.go()
        two.go()
        first, second = one.held(), two.held()
    assert len(_ports(first)) == len(_ports(second)) == 48
    assert not _ports(first) & _ports(second)


def test_blocks_of_different_sizes_overlap_nowhere(tmp_path: Path) -> None:
    # 8-port blocks from 9300 and 12-port blocks from 9302: every pair of blocks can
    # overlap without being the same block, so only the overlap check keeps them apart.
    eights = [("s", BLOCK)] * 3
    twelves = [("s", {"basePort": CORE_BASE + 2, "blockSize": 12, "blockCount": 10})] * 2
    with leaser(tmp_path / "a", eights) as one, leaser(tmp_path / "b", twelves) as two:
        one.go()
        two.go()
        first, second = one.held(), two.held()
    assert not _ports(first) & _ports(second)
    assert len(_ports(first)) == 24
    assert len(_ports(second)) == 24


def test_a_sigkilled_leaser_frees_its_block_in_the_network_namespace(tmp_path: Path) -> None:
    only = {"basePort": CORE_BASE, "blockSize": 8, "blockCount": 1}
    with leaser(tmp_path / "a", [("k", only)]) as holder:
        holder.go()
        (held,) = holder.held()
        name = netns.Name(netns.TOP, held["start"], held["end"], held["leaseId"])
        assert name in netns.held_names()
        # Another lock directory: refused all the same, and the error says by whom.
        with pytest.raises(PortsExhaustedError, match=r"leased \(1; 1 by runs of this network"):
            _lease(tmp_path / "b", "k", **only)
        os.kill(holder.process.pid, signal.SIGKILL)
        assert holder.process.wait() == -signal.SIGKILL
    assert name not in netns.held_names()
    lease = _lease(tmp_path / "b", "k", **only)
    assert (lease.hard["startPort"], lease.hard["endPort"]) == (held["start"], held["end"])
    lease.release()
    assert not [n for n in netns.held_names() if n.overlaps(CORE_BASE, CORE_BASE + 7)]


def test_a_child_keeps_its_slice_from_other_lock_directories_after_its_parent_dies(
    tmp_path: Path,
) -> None:
    parent_options = {"basePort": CORE_BASE, "blockSize": 16, "blockCount": 1}
    with leaser(tmp_path / "a", [("p", parent_options)]) as parent:
        parent.go()
        (held,) = parent.held()
        child_options = {
            "basePort": CORE_BASE + 8,
            "blockSize": 8,
            "blockCount": 1,
            "parentStartPort": held["start"],
            "parentEndPort": held["end"],
            "parentLeaseId": held["leaseId"],
        }
        with leaser(tmp_path / "a", [("c", child_options)]) as child:
            child.go()
            assert "error" not in child.held()[0]
            os.kill(parent.process.pid, signal.SIGKILL)
            parent.process.wait()
            # The child's slice stays out of reach of every lock directory; the rest of the
            # dead parent's block is free again.
            with pytest.raises(PortsExhaustedError):
                _lease(tmp_path / "b", "t", basePort=CORE_BASE, blockSize=16, blockCount=1)
            with pytest.raises(PortsExhaustedError):
                _lease(tmp_path / "b", "t", basePort=CORE_BASE + 8, blockSize=8, blockCount=1)
            free = _lease(tmp_path / "b", "t", basePort=CORE_BASE, blockSize=8, blockCount=1)
            free.release()


@pytest.mark.skipif(unshare_problem("-n") is not None, reason=str(unshare_problem("-n")))
def test_a_child_of_a_parent_in_another_network_namespace_is_refused(tmp_path: Path) -> None:
    # One lock directory, so the file locks see the parent alive; its ports are another
    # network namespace's, and this namespace's leasers do not see them held.
    parent_options = {"basePort": CORE_BASE, "blockSize": 16, "blockCount": 1}
    with leaser(tmp_path / "a", [("p", parent_options)], wrap=["unshare", "-n"]) as parent:
        parent.go()
        (held,) = parent.held()
        child = {
            "basePort": CORE_BASE,
            "blockSize": 8,
            "blockCount": 1,
            "parentStartPort": held["start"],
            "parentEndPort": held["end"],
            "parentLeaseId": held["leaseId"],
        }
        with pytest.raises(ParentGoneError, match="network namespace"):
            _lease(tmp_path / "a", "c", **child)
        del child["parentLeaseId"]
        with pytest.raises(ParentGoneError, match="network namespace"):
            _lease(tmp_path / "a", "c", **child)


@pytest.mark.skipif(unshare_problem("-n") is not None, reason=str(unshare_problem("-n")))
def test_another_network_namespace_may_lease_the_same_block(tmp_path: Path) -> None:
    only = {"basePort": CORE_BASE, "blockSize": 8, "blockCount": 1}
    here = _lease(tmp_path / "a", "n", **only)
    try:
        # Same network namespace, another lock directory: refused (so the test can fail) ...
        with leaser(tmp_path / "b", [("n", only)]) as same:
            same.go()
            assert "PortsExhaustedError" in same.held()[0]["error"]
        # ... another network namespace: its ports are its own, nothing is shared.
        with leaser(tmp_path / "c", [("n", only)], wrap=["unshare", "-n"]) as other:
            other.go()
            (held,) = other.held()
        assert (held["start"], held["end"]) == (CORE_BASE, CORE_BASE + 7)
    finally:
        here.release()


@pytest.mark.skipif(SUITE_PROBLEM is not None, reason=str(SUITE_PROBLEM))
def test_server_suites_sharing_the_network_but_not_tmp_pass_10_rounds(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    grown = 0
    for round_ in range(10):
        runs = run_server_suites(tmp_path, round_)
        for name, run in runs.items():
            output = run.stdout + run.stderr
            assert "Address already in use" not in output, f"round {round_}, {name}:\n{output}"
            assert run.returncode == 0, f"round {round_}, {name}:\n{output}"
            check_inner_warnings(run.stdout, run.stderr, allowed_inner_warnings(request))
        sync = tmp_path / f"sync-{round_}"
        host = {p for s, e in held_blocks(sync, "host") for p in range(s, e + 1)}
        private = {p for s, e in held_blocks(sync, "private") for p in range(s, e + 1)}
        assert host, round_
        assert private, round_
        assert not host & private, f"round {round_}: both runs held {sorted(host & private)}"
        grown += len(held_blocks(sync, "host") + held_blocks(sync, "private")) - 4
    assert grown > 0  # pools grew (each worker starts with one block)
