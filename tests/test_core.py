"""The orchestrator core without pytest: registry, order, rollback, release, snapshot, children."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import (
    AiopsError,
    AiopsWarning,
    DiscoverySnapshot,
    GitWorktreeProviderConfig,
    PortRangeProviderConfig,
    ProvisionedResources,
    ProvisioningError,
    RegistrationError,
    ReleaseError,
    ResourceContextPatch,
    ResourceLease,
    ResourceProvider,
    ResourceProvisioningOrchestrator,
    ResourceRequest,
    create_default_orchestrator,
)
from pytest_aiops._ports.provider import create_port_range_provider

from .git_helpers import git
from .worktree_helpers import builtin_registry


class Recorder:
    """A plain-object provider (no base class) that records provision/release calls."""

    def __init__(
        self,
        kind: str,
        log: list[str],
        *,
        fail_provision: bool = False,
        fail_release: bool = False,
        soft: Mapping[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.log = log
        self.fail_provision = fail_provision
        self.fail_release = fail_release
        self.soft = soft

    def provision(
        self, *, session_id: str, workspace_root: str, options: Mapping[str, Any]
    ) -> ResourceLease:
        if self.fail_provision:
            raise KeyError(f"{self.kind} exploded")
        self.log.append(f"provision {self.kind}")

        def release() -> None:
            self.log.append(f"release {self.kind}")
            if self.fail_release:
                raise OSError(f"{self.kind} release broke")

        return ResourceLease(self.kind, {"id": self.kind, **options}, release, self.soft)


def make(*providers: ResourceProvider) -> ResourceProvisioningOrchestrator:
    return ResourceProvisioningOrchestrator(list(providers))


def test_plain_object_is_a_provider(tmp_path: Path) -> None:
    log: list[str] = []
    assert isinstance(Recorder("a", log), ResourceProvider)
    session = make(Recorder("a", log)).provision_session(
        session_id="s", resources=[ResourceRequest("a", {"x": 1})], workspace_root=tmp_path
    )
    assert session.allocation("a") == {"id": "a", "x": 1}
    assert session.working_directory == str(tmp_path)
    session.release()


def test_duplicate_kind_refused() -> None:
    log: list[str] = []
    orchestrator = make(Recorder("a", log))
    with pytest.raises(ValueError, match=r'^Resource provider "a" is already registered\.$'):
        orchestrator.register_provider(Recorder("a", log))


def test_not_a_provider_refused() -> None:
    with pytest.raises(RegistrationError, match="is not a resource provider"):
        ResourceProvisioningOrchestrator([object()])  # type: ignore[list-item]


def test_registry_refuses_duplicates_unless_replacing() -> None:
    registry = builtin_registry()
    assert registry.kinds == ("git-worktree", "port-range")
    with pytest.raises(ValueError, match='"port-range" is already registered'):
        registry(create_port_range_provider())
    replacement = create_port_range_provider()
    registry(replacement, replace=True)
    assert registry.get("port-range") is replacement
    with pytest.raises(TypeError, match="is not a resource provider"):
        registry(object())  # type: ignore[arg-type]


def test_provisioning_goes_in_request_order(tmp_path: Path) -> None:
    log: list[str] = []
    orchestrator = make(Recorder("a", log), Recorder("b", log), Recorder("c", log))
    session = orchestrator.provision_session(
        session_id="s",
        resources=[ResourceRequest("c"), {"kind": "a"}, ResourceRequest("b")],
        workspace_root=tmp_path,
    )
    assert log == ["provision c", "provision a", "provision b"]
    assert [c["kind"] for c in session.to_discovery_snapshot().to_dict()["hardConstraints"]] == [
        "c",
        "a",
        "b",
    ]
    session.release()
    assert log[3:] == ["release b", "release a", "release c"]


def test_failure_rolls_back_in_reverse_and_keeps_original_error(tmp_path: Path) -> None:
    log: list[str] = []
    orchestrator = make(
        Recorder("a", log), Recorder("b", log), Recorder("boom", log, fail_provision=True)
    )
    with pytest.raises(ProvisioningError) as info:
        orchestrator.provision_session(
            session_id="s",
            resources=[ResourceRequest("a"), ResourceRequest("b"), ResourceRequest("boom")],
            workspace_root=tmp_path,
        )
    assert log == ["provision a", "provision b", "release b", "release a"]
    assert str(info.value) == "Resource provisioning failed: 'boom exploded'"
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.kind == "boom"
    assert info.value.session_id == "s"
    assert isinstance(info.value, RuntimeError)


def test_rollback_error_does_not_hide_original(tmp_path: Path) -> None:
    log: list[str] = []
    orchestrator = make(
        Recorder("a", log),
        Recorder("b", log, fail_release=True),
        Recorder("boom", log, fail_provision=True),
    )
    with pytest.raises(ProvisioningError, match="boom exploded") as info:
        orchestrator.provision_session(
            session_id="s",
            resources=[ResourceRequest("a"), ResourceRequest("b"), ResourceRequest("boom")],
            workspace_root=tmp_path,
        )
    assert log == ["provision a", "provision b", "release b", "release a"]
    assert isinstance(info.value.__cause__, KeyError)
    assert getattr(info.value, "__notes__", None) == [
        "while provisioning 'boom' for session 's'",
        "rollback of b also failed: OSError('b release broke')",
    ]


def test_unknown_kind_is_a_provisioning_failure(tmp_path: Path) -> None:
    log: list[str] = []
    with pytest.raises(ProvisioningError) as info:
        make(Recorder("a", log)).provision_session(
            session_id="s",
            resources=[ResourceRequest("a"), ResourceRequest("nope")],
            workspace_root=tmp_path,
        )
    assert str(info.value) == (
        'Resource provisioning failed: No provider registered for resource kind "nope" '
        "(registered: a)."
    )
    assert log == ["provision a", "release a"]


def test_release_reverse_idempotent_all_attempted_errors_aggregated(tmp_path: Path) -> None:
    log: list[str] = []
    orchestrator = make(
        Recorder("a", log, fail_release=True),
        Recorder("b", log),
        Recorder("c", log, fail_release=True),
    )
    session = orchestrator.provision_session(
        session_id="s",
        resources=[ResourceRequest("a"), ResourceRequest("b"), ResourceRequest("c")],
        workspace_root=tmp_path,
    )
    with pytest.raises(ReleaseError) as info:
        session.release()
    assert log[3:] == ["release c", "release b", "release a"]
    assert str(info.value) == (
        "Failed to release provisioned resources: c: c release broke | a: a release broke"
    )
    assert [kind for kind, _ in info.value.failures] == ["c", "a"]
    session.release()  # idempotent: nothing is released twice, no error the second time
    assert log.count("release a") == 1
    assert session.released


def test_context_manager_releases(tmp_path: Path) -> None:
    log: list[str] = []
    with make(Recorder("a", log)).provision_session(
        session_id="s", resources=[ResourceRequest("a")], workspace_root=tmp_path
    ) as session:
        assert isinstance(session, ProvisionedResources)
    assert log == ["provision a", "release a"]


def test_env_merge_and_soft_patches(tmp_path: Path) -> None:
    log: list[str] = []
    first = Recorder(
        "a",
        log,
        soft={
            "env": {"AGENT_X": "1", "SHARED": "a"},
            "promptSections": ["from a"],
            "metadata": {"m": 1},
            "preferredWorkingDirectory": str(tmp_path / "a"),
        },
    )
    second = Recorder(
        "b",
        log,
        soft={"env": {"SHARED": "b"}, "promptSections": ["from b"], "metadata": {"n": 2}},
    )
    session = make(first, second).provision_session(
        session_id="s",
        resources=[ResourceRequest("a"), ResourceRequest("b")],
        workspace_root=tmp_path,
    )
    base = {"PATH": "/bin", "SHARED": "base", "AGENT_X": "old", "GONE": None}
    assert session.injected_env(base) == {"PATH": "/bin", "SHARED": "b", "AGENT_X": "1"}
    assert session.injected_env()["AGENT_X"] == "1"
    assert session.injected_env()["PATH"] == os.environ["PATH"]
    assert session.working_directory == str(tmp_path / "a")
    snapshot = session.to_discovery_snapshot().to_dict()
    assert snapshot["softConstraints"] == {
        "env": {"AGENT_X": "1", "SHARED": "b"},
        "promptSections": ["from a", "from b"],
        "metadata": {"m": 1, "n": 2},
    }
    session.release()


def test_compose_prompt_exact_text(tmp_path: Path) -> None:
    log: list[str] = []
    soft = ResourceContextPatch(prompt_sections=["Primary port: 20000", "Git worktree: /w"])
    session = make(Recorder("a", log, soft={"promptSections": list(soft.prompt_sections)}))
    with session.provision_session(
        session_id="s", resources=[ResourceRequest("a")], workspace_root=tmp_path
    ) as resources:
        assert resources.compose_prompt("Fix the bug.", ["Extra: yes"]) == (
            "Runtime resource constraints are already enforced by the orchestrator:\n"
            "- Primary port: 20000\n"
            "- Git worktree: /w\n"
            "- Extra: yes\n"
            "\n"
            "Fix the bug."
        )
    with make(Recorder("b", log)).provision_session(
        session_id="s", resources=[ResourceRequest("b")], workspace_root=tmp_path
    ) as bare:
        assert bare.compose_prompt("Fix the bug.") == "Fix the bug."
        assert bare.compose_prompt("P", ["only"]) == (
            "Runtime resource constraints are already enforced by the orchestrator:\n- only\n\nP"
        )


def test_runtime_injection_writes_snapshot_atomically(tmp_path: Path) -> None:
    log: list[str] = []
    soft = {"env": {"AGENT_PORT_PRIMARY": "20001"}}
    with make(Recorder("a", log, soft=soft)).provision_session(
        session_id="s", resources=[ResourceRequest("a")], workspace_root=tmp_path
    ) as session:
        injection = session.build_runtime_injection(base_env={"HOME": "/h"})
        expected = tmp_path / ".agent-context" / "resources.json"
        assert injection.discovery_file_path == str(expected)
        assert injection.working_directory == str(tmp_path)
        assert injection.env == {
            "HOME": "/h",
            "AGENT_PORT_PRIMARY": "20001",
            "AGENT_DISCOVERY_FILE": str(expected),
        }
        text = expected.read_text(encoding="utf-8")
        assert text == json.dumps(session.to_discovery_snapshot().to_dict(), indent=2) + "\n"
        assert os.listdir(expected.parent) == ["resources.json"]  # no temp file left
        custom = session.build_runtime_injection("out/ctx.json", base_env={})
        assert custom.discovery_file_path == str(tmp_path / "out" / "ctx.json")
        assert DiscoverySnapshot.load(custom.discovery_file_path) == session.to_discovery_snapshot()


REFERENCE_SNAPSHOT = """{
  "sessionId": "agent-7",
  "workspaceRoot": "/repo",
  "workingDirectory": "/repo/.ai_ops/worktrees/agent-7-0f1e2d3c",
  "hardConstraints": [
    {
      "kind": "git-worktree",
      "allocation": {
        "repoRoot": "/repo",
        "worktreeRoot": "/repo/.ai_ops/worktrees",
        "worktreePath": "/repo/.ai_ops/worktrees/agent-7-0f1e2d3c",
        "baseRef": "HEAD"
      }
    },
    {
      "kind": "port-range",
      "allocation": {
        "basePort": 36000,
        "blockSize": 32,
        "blockCount": 512,
        "blockIndex": 3,
        "startPort": 36096,
        "endPort": 36127,
        "primaryPort": 36096,
        "lockPath": "/repo/.ai_ops/locks/ports/36096-36127.lock"
      }
    }
  ],
  "softConstraints": {
    "env": {
      "AGENT_PORT_RANGE_START": "36096"
    },
    "promptSections": [
      "Primary port: 36096"
    ],
    "metadata": {
      "port_block_index": 3
    }
  }
}
"""


def test_snapshot_round_trips_reference_layout(tmp_path: Path) -> None:
    path = tmp_path / "resources.json"
    path.write_text(REFERENCE_SNAPSHOT, encoding="utf-8")
    snapshot = DiscoverySnapshot.load(path)
    assert snapshot.session_id == "agent-7"
    assert snapshot.allocation("port-range") is not None
    assert snapshot.to_json() == REFERENCE_SNAPSHOT
    assert DiscoverySnapshot.from_dict(snapshot.to_dict()) == snapshot


def test_snapshot_from_garbage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a discovery snapshot"):
        DiscoverySnapshot.from_dict({"sessionId": "x"})


def test_child_session_end_to_end(repo: Path, tmp_path: Path, lock_dir: Path) -> None:
    orchestrator = create_default_orchestrator(
        GitWorktreeProviderConfig(root_directory=str(tmp_path / "wt")),
        PortRangeProviderConfig(lock_directory=str(lock_dir)),
    )
    with orchestrator.provision_session(
        session_id="parent",
        resources=[ResourceRequest("git-worktree"), ResourceRequest("port-range")],
        workspace_root=repo,
    ) as parent:
        snapshot = parent.to_discovery_snapshot()
        parent_git = snapshot.allocation("git-worktree")
        parent_ports = snapshot.allocation("port-range")
        assert parent_git is not None
        assert parent_ports is not None
        children = [
            orchestrator.provision_child_session(
                parent_snapshot=snapshot.to_dict(),
                child_session_id=f"child-{i}",
                child_index=i,
                child_count=3,
            )
            for i in range(3)
        ]
        slices = []
        for child in children:
            wt = child.allocation("git-worktree")
            ports = child.allocation("port-range")
            assert wt is not None
            assert ports is not None
            assert Path(wt["worktreePath"]).is_relative_to(parent_git["worktreePath"])
            assert (Path(wt["worktreePath"]) / "top.txt").read_text() == "top\n"
            assert parent_ports["startPort"] <= ports["startPort"] <= ports["endPort"]
            assert ports["endPort"] <= parent_ports["endPort"]
            slices.append(range(ports["startPort"], ports["endPort"] + 1))
            assert child.working_directory == wt["worktreePath"]
            assert child.to_discovery_snapshot().workspace_root == str(repo)
        assert (
            sum(len(s) for s in slices) == parent_ports["endPort"] - parent_ports["startPort"] + 1
        )
        assert len(set().union(*slices)) == sum(len(s) for s in slices)
        for child in children:
            child.release()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_default_orchestrator_partial_overrides(repo: Path, tmp_path: Path, lock_dir: Path) -> None:
    orchestrator = create_default_orchestrator(
        {"rootDirectory": str(tmp_path / "wt")},
        {"lockDirectory": str(lock_dir), "blockSize": 8, "basePort": 5900, "blockCount": 4},
    )
    assert orchestrator.kinds == ("git-worktree", "port-range")
    with orchestrator.provision_session(
        session_id="partial",
        resources=[ResourceRequest("git-worktree"), ResourceRequest("port-range")],
        workspace_root=repo,
    ) as session:
        ports = session.allocation("port-range")
        assert ports is not None
        assert ports["blockSize"] == 8
        assert 5900 <= ports["startPort"] < 5932
        wt = session.allocation("git-worktree")
        assert wt is not None
        assert Path(wt["worktreePath"]).parent == tmp_path / "wt"


def test_default_orchestrator_unknown_override_is_named() -> None:
    with pytest.raises(ValueError, match="Unknown option 'blokSize'; allowed: "):
        create_default_orchestrator(port_range={"blokSize": 8})


def test_errors_share_one_base() -> None:
    log: list[str] = []
    orchestrator = make(Recorder("a", log))
    with pytest.raises(AiopsError):
        orchestrator.register_provider(Recorder("a", log))


@pytest.mark.parametrize(
    ("kind", "options", "unknown"),
    [
        ("port-range", {"blocksize": 8}, "'blocksize'"),
        ("git-worktree", {"baseref": "HEAD", "bogus": 1}, "'baseref', 'bogus'"),
    ],
)
def test_unknown_option_keys_warn(
    repo: Path, tmp_path: Path, lock_dir: Path, kind: str, options: dict[str, Any], unknown: str
) -> None:
    orchestrator = create_default_orchestrator(
        GitWorktreeProviderConfig(root_directory=str(tmp_path / "wt")),
        PortRangeProviderConfig(lock_directory=str(lock_dir)),
    )
    with pytest.warns(AiopsWarning, match=f"^{kind} ignores unknown option\\(s\\) {unknown}; "):
        session = orchestrator.provision_session(
            session_id="typo", resources=[ResourceRequest(kind, options)], workspace_root=repo
        )
    session.release()


def test_session_id_must_be_a_string(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="session_id must be a str, not None"):
        make().provision_session(
            session_id=None,  # type: ignore[arg-type]
            resources=[],
            workspace_root=tmp_path,
        )


def test_public_api_is_complete_and_lazy() -> None:
    import subprocess
    import sys

    import pytest_aiops

    for name in pytest_aiops.__all__:
        assert getattr(pytest_aiops, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = pytest_aiops.nope  # type: ignore[attr-defined]
    # Loading the pytest plugin must not import the providers, git or locking code (only
    # the two import-free modules of defaults its settings show and validate, and the
    # import-free holder of the current pool its port fixtures read).
    probe = (
        "import sys, pytest_aiops.plugin; "
        "print(sorted(m for m in sys.modules "
        "if m.startswith(('pytest_aiops._ports.', 'pytest_aiops._worktrees.')) "
        "and not m.endswith(('.defaults', '._ports.current'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_child_session_cannot_be_split_again_and_says_so(
    repo: Path, tmp_path: Path, lock_dir: Path
) -> None:
    orchestrator = create_default_orchestrator(
        GitWorktreeProviderConfig(root_directory=str(tmp_path / "wt")),
        PortRangeProviderConfig(lock_directory=str(lock_dir)),
    )
    with (
        orchestrator.provision_session(
            session_id="p", resources=[ResourceRequest("port-range")], workspace_root=repo
        ) as parent,
        orchestrator.provision_child_session(
            parent_snapshot=parent.to_discovery_snapshot(),
            child_session_id="c",
            child_index=0,
            child_count=2,
        ) as child,
        pytest.raises(ProvisioningError, match="nested children are not supported"),
    ):
        orchestrator.provision_child_session(
            parent_snapshot=child.to_discovery_snapshot(),
            child_session_id="g",
            child_index=0,
            child_count=2,
        )


# --- child sessions: a parent snapshot is checked before use (issue 12, item 6) -------------


def _parent(repo: Path, lock_dir: Path, tmp_path: Path) -> Any:
    return create_default_orchestrator().provision_session(
        session_id="parent",
        resources=[
            ResourceRequest("git-worktree", {"rootDirectory": str(tmp_path / "root")}),
            # Ports of its own, outside the default range other runs on the machine lease in
            # (leases of one network namespace exclude each other, any lock directory).
            ResourceRequest(
                "port-range",
                {"lockDirectory": str(lock_dir), "basePort": 31200, "blockCount": 4},
            ),
        ],
        workspace_root=repo,
    )


def _with_allocation(snapshot: DiscoverySnapshot, kind: str, **changes: Any) -> DiscoverySnapshot:
    data = snapshot.to_dict()
    for constraint in data["hardConstraints"]:
        if constraint["kind"] == kind:
            constraint["allocation"].update(changes)
    return DiscoverySnapshot.from_dict(data)


@pytest.mark.parametrize("where", ["user-repo", "relative"])
def test_a_child_worktree_root_is_never_inside_the_users_checkout(
    repo: Path, lock_dir: Path, tmp_path: Path, where: str
) -> None:
    parent = _parent(repo, lock_dir, tmp_path)
    try:
        path = str(repo) if where == "user-repo" else "some/relative/dir"
        snapshot = _with_allocation(
            parent.to_discovery_snapshot(), "git-worktree", worktreePath=path
        )
        with pytest.raises(ProvisioningError) as info:
            create_default_orchestrator().provision_child_session(
                parent_snapshot=snapshot, child_session_id="c", child_index=0, child_count=2
            )
    finally:
        parent.release()
    [line] = str(info.value).splitlines()
    assert 'Allocation field "worktreePath" of the parent snapshot' in line
    assert repr(path) in line
    assert type(info.value.__cause__).__name__ == "ChildSplitError"
    assert git(repo, "status", "--porcelain", "--ignored") == ""  # no `?? .ai_ops/`


def test_a_lock_path_in_a_missing_directory_is_refused_before_anything_is_created(
    repo: Path, lock_dir: Path, tmp_path: Path
) -> None:
    parent = _parent(repo, lock_dir, tmp_path)
    try:
        worktree = parent.allocation("git-worktree")
        assert worktree is not None
        missing = tmp_path / "gone" / "locks"
        snapshot = _with_allocation(
            parent.to_discovery_snapshot(), "port-range", lockPath=str(missing / "ports.lock")
        )
        with pytest.raises(ProvisioningError) as info:
            create_default_orchestrator().provision_child_session(
                parent_snapshot=snapshot, child_session_id="c", child_index=0, child_count=2
            )
        [line] = str(info.value).splitlines()
        assert 'Allocation field "lockPath" of the parent snapshot' in line
        assert str(missing) in line
        assert not (tmp_path / "gone").exists()
        assert not os.path.exists(os.path.join(worktree["worktreePath"], ".ai_ops"))
        assert git(worktree["worktreePath"], "status", "--porcelain", "--ignored") == ""
    finally:
        parent.release()


def test_build_child_resource_requests_takes_the_references_child_session_id(
    repo: Path, lock_dir: Path, tmp_path: Path
) -> None:
    from pytest_aiops import build_child_resource_requests

    parent = _parent(repo, lock_dir, tmp_path)
    try:
        snapshot = parent.to_discovery_snapshot()
        with_id = build_child_resource_requests(snapshot, 1, 2, child_session_id="child-1")
        assert with_id == build_child_resource_requests(snapshot, 1, 2)
        assert [request.kind for request in with_id] == ["git-worktree", "port-range"]
        child = create_default_orchestrator().provision_child_session(
            parent_snapshot=snapshot, child_session_id="child-1", child_index=1, child_count=2
        )
        child.release()
    finally:
        parent.release()
    assert git(repo, "status", "--porcelain", "--ignored") == ""
