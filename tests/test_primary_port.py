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


def _reference_block(session_id: str, base: int, size: int, count: int) -> dict[str, Any]:
    """The block the reference leases first for this session and config (from its vectors)."""
    (entry,) = [
        e
        for e in BLOCKS
        if (e["sessionId"], e["basePort"], e["blockSize"], e["blockCount"])
        == (session_id, base, size, count)
    ]
    return entry


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


@pytest.mark.parametrize(
    ("session_id", "count"),
    [("public:", 7), ("public:gw0", 512), ("public:a..b", 7), ("public:😀 emoji", 512)],
)
@pytest.mark.parametrize("offset", [0, 1, 7, 15])
def test_primary_port_is_start_plus_offset_of_the_references_block(
    lock_dir: Path, session_id: str, count: int, offset: int
) -> None:
    block = _reference_block(session_id, 20000, 16, count)
    assert block["blockIndex"] > 0  # so that startPort + offset differs from basePort + offset
    lease = _lease(
        lock_dir,
        session_id,
        basePort=20000,
        blockSize=16,
        blockCount=count,
        primaryPortOffset=offset,
    )
    try:
        assert (lease.hard["blockIndex"], lease.hard["startPort"], lease.hard["endPort"]) == (
            block["blockIndex"],
            block["startPort"],
            block["endPort"],
        )
        _check_primary(lease, block["startPort"] + offset)
    finally:
        lease.release()


@pytest.mark.parametrize(
    ("base", "size", "count", "offset"),
    [(27000, 10, 5, 9), (27100, 1, 3, 0), (27200, 3, 40, 2), (27400, 64, 2, 33)],
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


@pytest.mark.parametrize(("offset", "count"), [(0, 2), (5, 2), (20, 3), (31, 4), (17, 7), (31, 32)])
def test_a_childs_primary_port_is_the_parents_clamped_into_its_slice(
    lock_dir: Path, offset: int, count: int
) -> None:
    """Split the way the reference splits (``vectors.json``, ``children``): each child's
    primary port is the parent's primary port if it falls in the child's slice, else the
    slice's nearest end."""
    orchestrator = ResourceProvisioningOrchestrator(
        [create_port_range_provider(PortRangeProviderConfig(probe=False))]
    )
    options = {
        "basePort": 27500,
        "blockSize": 32,
        "blockCount": 4,
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
