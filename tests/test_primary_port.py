"""``primaryPort``: the reference's rule, checked directly on the allocation.

The reference (``orchestrator.ts``) computes ``primaryPort = startPort + primaryPortOffset`` for
the block it leased, and a child's ``primaryPortOffset`` as the parent's primary port clamped
into the child's slice. pytest-aiops keeps that rule whenever the port binds (it moves on only
past a busy port, tested in ``test_lease_contract.py``). Here nothing is busy: the probe is off
and the lock directory private, so the leased block is the reference's preferred block
(``vectors.json``, ``blocks``) and the primary port must be exactly the reference's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import (
    PortRangeProviderConfig,
    ResourceContextPatch,
    ResourceLease,
    ResourceProvisioningOrchestrator,
    ResourceRequest,
    build_child_resource_requests,
    create_port_range_provider,
)

BLOCKS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "vectors.json").read_text(encoding="utf-8")
)["blocks"]


def _reference_index(session_id: str, count: int) -> int:
    """The block index the reference leases first for this session among ``count`` blocks
    (its vectors; the index does not depend on ``basePort`` or ``blockSize``)."""
    (index,) = {
        e["blockIndex"] for e in BLOCKS if (e["sessionId"], e["blockCount"]) == (session_id, count)
    }
    return int(index)


def _lease(lock_dir: Path, session_id: str, **options: Any) -> ResourceLease:
    provider = create_port_range_provider(
        PortRangeProviderConfig(lock_directory=str(lock_dir), probe=False)
    )
    return provider.provision(session_id=session_id, workspace_root=str(lock_dir), options=options)


def _check_primary(lease: ResourceLease, primary: int) -> None:
    """Every place the allocation names its primary port says ``primary``."""
    assert lease.hard["primaryPort"] == primary
    assert isinstance(lease.soft, ResourceContextPatch)
    assert lease.soft.env["AGENT_PORT_PRIMARY"] == str(primary)
    assert lease.soft.metadata["port_primary"] == primary
    assert f"Primary port: {primary}" in lease.soft.prompt_sections


#: Each test below leases in ranges of its own (leases of one network namespace exclude each
#: other whatever their lock directory), outside the default range 20000-26399: 4200-4991
#: in all (4200-4999 is this module's and test_port_records.py's; nothing binds there).
@pytest.mark.parametrize(
    ("session_id", "base"),
    [("public:", 4200), ("public:gw0", 4312), ("public:a..b", 4424), ("public:😀 emoji", 4536)],
)
def test_primary_port_is_start_plus_offset_of_the_references_block(
    lock_dir: Path, session_id: str, base: int
) -> None:
    index = _reference_index(session_id, 7)
    assert index > 0  # so that startPort + offset differs from basePort + offset
    start = base + index * 16  # the reference's startPort
    for offset in (0, 1, 7, 15):
        lease = _lease(
            lock_dir,
            session_id,
            basePort=base,
            blockSize=16,
            blockCount=7,
            primaryPortOffset=offset,
        )
        try:
            assert (lease.hard["blockIndex"], lease.hard["startPort"], lease.hard["endPort"]) == (
                index,
                start,
                start + 15,
            )
            _check_primary(lease, start + offset)
        finally:
            lease.release()


@pytest.mark.parametrize(
    ("base", "size", "count", "offset"),
    [(4650, 10, 5, 9), (4700, 1, 3, 0), (4703, 3, 8, 2), (4730, 32, 2, 31)],
)
def test_primary_port_follows_the_block_actually_leased(
    lock_dir: Path, base: int, size: int, count: int, offset: int
) -> None:
    """With the preferred block held, the next lease takes another block: its primary port
    is that block's start plus the offset, not the preferred block's nor the range's."""
    options = {"basePort": base, "blockSize": size, "blockCount": count}
    first = _lease(lock_dir, "first", **options, primaryPortOffset=offset)
    second = _lease(lock_dir, "first", **options, primaryPortOffset=offset)
    try:
        starts = {first.hard["startPort"], second.hard["startPort"]}
        assert len(starts) == 2
        assert {(s - base) % size for s in starts} == {0}  # block starts
        for lease in (first, second):
            _check_primary(lease, lease.hard["startPort"] + offset)
    finally:
        second.release()
        first.release()


@pytest.mark.parametrize(
    ("base", "offset", "count"),
    [(4800, 0, 2), (4832, 5, 2), (4864, 20, 3), (4896, 31, 4), (4928, 17, 7), (4960, 31, 32)],
)
def test_a_childs_primary_port_is_the_parents_clamped_into_its_slice(
    lock_dir: Path, base: int, offset: int, count: int
) -> None:
    """Split the way the reference splits (``vectors.json``, ``children``): each child's
    primary port is the parent's primary port if it falls in the child's slice, else the
    slice's nearest end."""
    orchestrator = ResourceProvisioningOrchestrator(
        [create_port_range_provider(PortRangeProviderConfig(probe=False))]
    )
    options = {
        "basePort": base,
        "blockSize": 32,
        "blockCount": 1,
        "primaryPortOffset": offset,
        "lockDirectory": str(lock_dir),
    }
    parent = orchestrator.provision_session(
        session_id="parent",
        resources=[ResourceRequest("port-range", options)],
        workspace_root=str(lock_dir),
    )
    try:
        snapshot = parent.to_discovery_snapshot()
        allocation = parent.allocation("port-range")
        assert allocation is not None
        start, end = allocation["startPort"], allocation["endPort"]
        parent_primary = start + offset
        assert allocation["primaryPort"] == parent_primary
        size = (end - start + 1) // count
        for index in range(count):
            child_start = start + size * index
            child_end = end if index == count - 1 else child_start + size - 1
            expected = min(max(parent_primary, child_start), child_end)
            requests = build_child_resource_requests(snapshot, index, count)
            child = orchestrator.provision_session(
                session_id=f"child-{index}", resources=requests, workspace_root=str(lock_dir)
            )
            try:
                hard = child.allocation("port-range")
                assert hard is not None
                assert (hard["startPort"], hard["endPort"]) == (child_start, child_end)
                assert hard["primaryPort"] == expected
                assert child.injected_env()["AGENT_PORT_PRIMARY"] == str(expected)
            finally:
                child.release()
    finally:
        parent.release()
