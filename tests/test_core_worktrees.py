"""The ``git-worktree`` request and allocation as typed values (``_core/worktrees.py``): one
conversion each way between them and the reference's camelCase JSON, every bad option
refused in one line naming it, and the provider's typed entry point checking out what the
spec says (a real repository in ``tmp_path``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import AiopsWarning, InvalidArgumentError, OptionError
from pytest_aiops._core.worktrees import ISOLATIONS, WorktreeAllocation, WorktreeSpec
from pytest_aiops._worktrees import defaults
from pytest_aiops._worktrees.provider import GitWorktreeProviderConfig, reclaim_orphans

from .helpers import git, registrations
from .helpers import worktree_provider as provider


def test_the_isolation_levels_are_the_plugins() -> None:
    assert ISOLATIONS == defaults.ISOLATIONS


def test_a_spec_read_from_options_writes_the_same_options_back() -> None:
    options: dict[str, Any] = {
        "rootDirectory": "/checkouts",
        "baseRef": "main",
        "targetPath": "pkg/sub",
        "isolation": "clone",
        "pool": False,
        "poolSize": 0,
        "workingState": True,
        "worktreeInclude": [".env", "*.so"],
        "snapshotDirectory": "/run/snap",
    }
    spec = WorktreeSpec.from_options(options)
    assert spec == WorktreeSpec(
        "/checkouts", "main", "pkg/sub", "clone", False, 0, True, (".env", "*.so"), "/run/snap"
    )
    assert spec.to_options() == options
    assert WorktreeSpec.from_options(spec.to_options()) == spec


def test_absent_options_stay_the_providers_defaults() -> None:
    assert WorktreeSpec.from_options({}) == WorktreeSpec()
    assert WorktreeSpec().to_options() == {}
    # Read as the reference does: blank patterns dropped, the target path normalised.
    spec = WorktreeSpec.from_options({"worktreeInclude": ["", ".env"], "targetPath": "./pkg//sub/"})
    assert (spec.worktree_include, spec.target_path) == ((".env",), "pkg/sub")


@pytest.mark.parametrize(
    ("options", "option", "message"),
    [
        (
            {"rootDirectory": " "},
            "rootDirectory",
            "Option \"rootDirectory\" must be a non-empty string, not ' '.",
        ),
        ({"baseRef": 3}, "baseRef", 'Option "baseRef" must be a non-empty string, not 3.'),
        (
            {"targetPath": "/abs"},
            "targetPath",
            'Option "targetPath" must be a relative path within the repository worktree, '
            "not '/abs'.",
        ),
        (
            {"isolation": "copy"},
            "isolation",
            'Option "isolation" must be "worktree" or "clone", not \'copy\'.',
        ),
        ({"pool": "no"}, "pool", "Option \"pool\" must be true or false, not 'no'."),
        (
            {"poolSize": -1},
            "poolSize",
            'Option "poolSize" must be an integer >= 0 (0 keeps no checkout for reuse), not -1.',
        ),
        (
            {"workingState": 1},
            "workingState",
            'Option "workingState" must be true or false, not 1.',
        ),
        (
            {"worktreeInclude": ".env"},
            "worktreeInclude",
            'Option "worktreeInclude" must be a list of gitignore patterns (strings without '
            "newlines), not '.env'.",
        ),
        (
            {"snapshotDirectory": 5},
            "snapshotDirectory",
            'Option "snapshotDirectory" must be a string when provided, not 5.',
        ),
    ],
)
def test_each_bad_option_is_refused_in_one_line_naming_it(
    options: dict[str, Any], option: str, message: str
) -> None:
    with pytest.raises(OptionError) as info:
        WorktreeSpec.from_options(options)
    assert (info.value.option, str(info.value)) == (option, message)


def test_an_unknown_option_warns_and_is_ignored() -> None:
    with pytest.warns(AiopsWarning, match="git-worktree ignores unknown option"):
        assert WorktreeSpec.from_options({"baseref": "main"}) == WorktreeSpec()


def test_the_config_is_checked_as_the_options_are() -> None:
    with pytest.raises(OptionError, match='Option "isolation" must be'):
        GitWorktreeProviderConfig(isolation="copy")
    with pytest.raises(OptionError, match='Option "poolSize" must be'):
        GitWorktreeProviderConfig(pool_size=-2)
    with pytest.raises(OptionError, match='Option "worktreeInclude" must be'):
        GitWorktreeProviderConfig(worktree_include=".env")  # type: ignore[arg-type]


def _allocation() -> WorktreeAllocation:
    return WorktreeAllocation(
        repo_root="/repo",
        worktree_path="/wt/s-1",
        base_ref="main",
        worktree_root="/wt",
        target_path="pkg",
        commit="0" * 40,
        isolation="clone",
        working_state=True,
    )


def test_an_allocation_writes_the_references_json_and_reads_it_back() -> None:
    allocation = _allocation()
    data = allocation.to_json()
    assert list(data) == [
        "repoRoot",
        "worktreeRoot",
        "worktreePath",
        "baseRef",
        "targetPath",
        "commit",
        "isolation",
        "workingState",
    ]
    assert WorktreeAllocation.from_json(data) == allocation


def test_a_reference_allocation_reads_as_the_reference_means_it() -> None:
    data = {"repoRoot": "/repo", "worktreeRoot": "/wt", "worktreePath": "/wt/a", "baseRef": " "}
    allocation = WorktreeAllocation.from_json(data)
    assert allocation == WorktreeAllocation("/repo", "/wt/a", "HEAD", "/wt")
    assert (allocation.isolation, allocation.working_state, allocation.commit) == (
        "worktree",
        False,
        None,
    )


def test_a_missing_worktree_path_is_named() -> None:
    data = _allocation().to_json()
    del data["worktreePath"]
    with pytest.raises(InvalidArgumentError) as info:
        WorktreeAllocation.from_json(data)
    assert str(info.value) == 'Allocation field "worktreePath" must be a non-empty string.'


def test_a_parent_without_repo_root_still_splits_as_the_references_does() -> None:
    """The reference's child split reads worktreePath, baseRef and targetPath alone: a
    parent snapshot without repoRoot reads (``repo_root`` None) and splits."""
    from pytest_aiops import DiscoverySnapshot, HardConstraint, build_child_resource_requests

    data = _allocation().to_json()
    del data["repoRoot"]
    allocation = WorktreeAllocation.from_json(data)
    assert allocation.repo_root is None
    assert allocation.to_json() == data
    parent = DiscoverySnapshot(
        session_id="parent",
        workspace_root="/ws",
        working_directory="/ws",
        hard_constraints=[HardConstraint("git-worktree", data)],
    )
    (request,) = build_child_resource_requests(parent, 0, 2)
    assert (request.options or {})["rootDirectory"].startswith("/wt/s-1/")


@pytest.mark.parametrize(
    ("spec", "option"),
    [
        (WorktreeSpec(isolation="copy"), "isolation"),
        (WorktreeSpec(pool_size=-1), "poolSize"),
    ],
)
def test_the_typed_lease_checks_a_spec_built_in_code_as_the_options(
    repo: Path, root: Path, spec: WorktreeSpec, option: str
) -> None:
    prov = provider(root)
    with pytest.raises(OptionError) as typed:
        prov.lease(spec, session_id="bad", workspace_root=str(repo))
    assert typed.value.option == option
    assert registrations(repo) == []  # nothing created


def test_the_typed_lease_checks_out_what_the_spec_says(repo: Path, root: Path) -> None:
    prov = provider(root)
    base = git(repo, "rev-parse", "HEAD")
    held = prov.lease(
        WorktreeSpec(target_path="pkg", isolation="clone"),
        session_id="typed",
        workspace_root=str(repo),
    )
    try:
        allocation = held.allocation
        assert (allocation.repo_root, allocation.worktree_root) == (str(repo), str(root))
        assert (allocation.base_ref, allocation.commit) == ("HEAD", base)
        assert (allocation.target_path, allocation.isolation) == ("pkg", "clone")
        assert not allocation.working_state
        assert os.path.isdir(os.path.join(allocation.worktree_path, "pkg", "sub"))
        assert git(allocation.worktree_path, "rev-parse", "HEAD") == base
    finally:
        held.release()
    lease = prov.provision(session_id="typed", workspace_root=str(repo), options={})
    try:
        assert lease.hard == WorktreeAllocation.from_json(lease.hard).to_json()
        assert lease.hard["isolation"] == "worktree"  # the config's, as the spec left it
    finally:
        lease.release()
    reclaim_orphans(str(root), include_pooled=True)  # the pooled checkouts
    assert registrations(repo) == []
