"""Parity with the reference design: every entry of tests/data/vectors.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import (
    ChildSplitError,
    DiscoverySnapshot,
    GitWorktreeProviderConfig,
    HardConstraint,
    PortRangeProviderConfig,
    ProvisioningError,
    ResourceProvisioningOrchestrator,
    ResourceRequest,
    build_child_resource_requests,
    build_scoped_name,
    create_git_worktree_provider,
    create_port_range_provider,
)
from pytest_aiops._core.hashing import preferred_block

from .git_helpers import git

VECTORS: dict[str, list[dict[str, Any]]] = json.loads(
    (Path(__file__).parent / "data" / "vectors.json").read_text(encoding="utf-8")
)


def _id(entry: dict[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=True)[:80]


@pytest.mark.parametrize("entry", VECTORS["blocks"], ids=_id)
def test_preferred_block_matches_reference(entry: dict[str, Any]) -> None:
    index = preferred_block(entry["sessionId"], entry["blockCount"])
    start = entry["basePort"] + index * entry["blockSize"]
    assert (index, start, start + entry["blockSize"] - 1) == (
        entry["blockIndex"],
        entry["startPort"],
        entry["endPort"],
    )


@pytest.mark.parametrize("entry", VECTORS["names"], ids=_id)
def test_worktree_name_matches_reference(entry: dict[str, Any]) -> None:
    assert build_scoped_name(entry["sessionId"]) == entry["worktreeName"]


def _parent_snapshot(parent: dict[str, int]) -> DiscoverySnapshot:
    allocation = {**parent, "lockPath": "/locks/ports.lock"}
    return DiscoverySnapshot(
        session_id="parent",
        workspace_root="/ws",
        working_directory="/ws",
        hard_constraints=[HardConstraint("port-range", allocation)],
    )


@pytest.mark.parametrize("entry", VECTORS["children"], ids=_id)
def test_child_split_matches_reference(entry: dict[str, Any]) -> None:
    snapshot = _parent_snapshot(entry["parent"])
    if entry["result"].get("error"):
        with pytest.raises(ChildSplitError, match="Cannot suballocate"):
            build_child_resource_requests(snapshot, entry["childIndex"], entry["childCount"])
        return
    (request,) = build_child_resource_requests(snapshot, entry["childIndex"], entry["childCount"])
    assert request.kind == "port-range"
    options = dict(request.options or {})
    assert {k: options[k] for k in entry["result"]} == entry["result"]
    assert options["lockDirectory"] == "/locks"


@pytest.mark.parametrize(
    "entry", [e for e in VECTORS["rejects"] if e["kind"] == "port-range"], ids=_id
)
def test_port_range_option_acceptance_matches_reference(
    entry: dict[str, Any], lock_dir: Path
) -> None:
    provider = create_port_range_provider(
        PortRangeProviderConfig(lock_directory=str(lock_dir), probe=False)
    )
    orchestrator = ResourceProvisioningOrchestrator([provider])
    request = ResourceRequest("port-range", entry["options"])
    if entry["rejected"]:
        with pytest.raises(ProvisioningError, match=r"^Resource provisioning failed: "):
            orchestrator.provision_session(
                session_id="s", resources=[request], workspace_root=str(lock_dir)
            )
        return
    with pytest.warns() if _overlaps_ephemeral(entry["options"]) else _nothing():
        session = orchestrator.provision_session(
            session_id="s", resources=[request], workspace_root=str(lock_dir)
        )
    session.release()


def _overlaps_ephemeral(options: dict[str, Any]) -> bool:
    from pytest_aiops._ports.probe import overlaps_ephemeral

    config = PortRangeProviderConfig()
    base = options.get("basePort", config.base_port)
    size = options.get("blockSize", config.block_size)
    count = options.get("blockCount", config.block_count)
    return overlaps_ephemeral(base, base + size * count - 1)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(
    "entry", [e for e in VECTORS["rejects"] if e["kind"] == "git-worktree"], ids=_id
)
def test_git_worktree_option_acceptance_matches_reference(
    entry: dict[str, Any], repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "worktrees"
    provider = create_git_worktree_provider(GitWorktreeProviderConfig(root_directory=str(root)))
    orchestrator = ResourceProvisioningOrchestrator([provider])
    request = ResourceRequest("git-worktree", entry["options"])
    before = git(repo, "worktree", "list", "--porcelain")
    if entry["rejected"]:
        with pytest.raises(ProvisioningError, match=r"^Resource provisioning failed: "):
            orchestrator.provision_session(
                session_id="s", resources=[request], workspace_root=str(repo)
            )
    else:
        session = orchestrator.provision_session(
            session_id="s", resources=[request], workspace_root=str(repo)
        )
        assert os.path.isdir(session.working_directory)
        session.release()
    # Refused or released: no worktree directory and no registration remain.
    assert git(repo, "worktree", "list", "--porcelain") == before
    leftovers = [p for p in root.rglob("*") if not p.name.startswith(".")] if root.exists() else []
    assert [p for p in leftovers if p.is_dir() and (p / ".git").exists()] == []
