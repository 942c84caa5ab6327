"""Keep goes through the worktree handle: the lease that made a checkout keeps it, with no
provider looked up by kind (so orchestrators that share no provider still keep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_aiops import ResourceLease
from pytest_aiops._core.orchestrator import ResourceProvisioningOrchestrator
from pytest_aiops._core.registry import ProviderRegistry
from pytest_aiops._plugin.settings import Settings
from pytest_aiops._plugin.worker import WorktreeFactory
from pytest_aiops._worktrees import store
from pytest_aiops._worktrees.provider import GitWorktreeProvider

from .git_helpers import MakeRepo, git
from .worktree_helpers import worktree_provider


def test_a_kept_worktree_is_kept_by_its_handle_not_by_a_provider_found_by_kind(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = make_repo({"a.txt": "a\n"})
    root = tmp_path / "wt"
    made: list[ProviderRegistry] = []

    def orchestrator() -> ResourceProvisioningOrchestrator:
        # A new registry, so a new provider, every call: none knows another's checkouts.
        registry = ProviderRegistry()
        registry(worktree_provider(root))
        made.append(registry)
        return registry.orchestrator()

    factory = WorktreeFactory(
        orchestrator, Settings(keep="failed"), repo=str(repo), session_prefix="keep"
    )
    worktree = factory.provision()
    assert worktree.keep_checkout is not None
    (worktree.path / "a.txt").write_text("edited\n")
    assert not factory.release(worktree, failed=True)
    assert factory.kept == [worktree]
    assert len(made) == 1  # release asked no orchestrator (and so no provider) for keep
    records = store.list_worktrees(str(root))
    assert [(r.state, r.path) for r in records] == [("kept", str(worktree.path))]
    assert worktree.resources is not None
    worktree.resources.release()  # a no-op for a kept checkout
    assert (worktree.path / "a.txt").read_text() == "edited\n"
    assert [r.state for r in store.list_worktrees(str(root))] == ["kept"]
    git(repo, "worktree", "remove", "--force", str(worktree.path))


class _NoKeep:
    """A user's replacement git-worktree provider whose release carries no keep."""

    kind = "git-worktree"

    def __init__(self, inner: GitWorktreeProvider) -> None:
        self.inner = inner
        self.released: list[str] = []

    def provision(self, *, session_id: str, workspace_root: str, options: Any) -> ResourceLease:
        lease = self.inner.provision(
            session_id=session_id, workspace_root=workspace_root, options=options
        )

        def release() -> None:
            self.released.append(session_id)
            lease.release()

        return ResourceLease(lease.kind, lease.hard, release, lease.soft)


def test_a_replacement_provider_without_keep_leaves_the_checkout_held(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = make_repo({"a.txt": "a\n"})
    provider = _NoKeep(worktree_provider(tmp_path / "wt"))
    registry = ProviderRegistry()
    registry(provider)
    factory = WorktreeFactory(
        registry.orchestrator, Settings(keep="all"), repo=str(repo), session_prefix="nokeep"
    )
    worktree = factory.provision()
    assert worktree.keep_checkout is None
    assert not factory.release(worktree)
    assert provider.released == []  # held, not released, until the session ends
    assert worktree.path.is_dir()
    assert factory.close() == []
    assert provider.released == []
    assert worktree.resources is not None
    worktree.resources.release()  # what the process's end does
    assert provider.released == [worktree.session_id]
