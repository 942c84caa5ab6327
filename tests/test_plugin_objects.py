"""The plugin's plain objects behind the fixtures, without pytest: workers, WorktreeFactory."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_aiops import ProvisioningError
from pytest_aiops._plugin.settings import Settings
from pytest_aiops._plugin.worker import AiopsWorker, WorktreeFactory

from .git_helpers import MakeRepo
from .port_helpers import live_leases
from .worktree_helpers import builtin_registry


def test_worker_leases_nothing_until_asked_and_releases_on_close(
    lock_dir: Path, tmp_path: Path
) -> None:
    worker = AiopsWorker(
        Settings(ports_per_worker=8, port_range=(12032, 12095), lock_dir=str(lock_dir)),
        registry=builtin_registry(),
        worker_id="master",
        session_id="objects-test",
        workspace_root=str(tmp_path),
    )
    assert not worker.ports_leased
    assert live_leases(lock_dir) == []
    ports = worker.port_range()
    assert len(ports) == 8
    assert 12032 <= ports.start <= ports.end <= 12095
    assert worker.port_range() is ports
    assert live_leases(lock_dir) == [(ports.start, ports.end, "objects-test")]
    assert worker.close() == []
    assert live_leases(lock_dir) == []


def test_worktree_factory_isolates_and_keeps_by_policy(make_repo: MakeRepo) -> None:
    repo = make_repo({"a.txt": "original\n"})
    registry = builtin_registry()
    factory = WorktreeFactory(
        registry.orchestrator, Settings(keep="failed"), repo=str(repo), session_prefix="objects"
    )
    with factory.worktree() as worktree:
        assert worktree.repo_root == repo
        assert worktree.base_ref == "HEAD"
        (worktree.path / "a.txt").write_text("edited\n")
        released_inode = worktree.path.stat().st_ino
    assert (repo / "a.txt").read_text() == "original\n"
    assert factory.kept == []
    kept = factory.provision()
    assert not factory.release(kept, failed=True)
    assert factory.kept == [kept]
    assert kept.path.is_dir()
    # The pool hands the same checkout out again, renamed for its new session (so compare
    # inodes, not paths), restored:
    assert kept.path.stat().st_ino == released_inode
    assert (kept.path / "a.txt").read_text() == "original\n"
    assert kept.resources is not None
    kept.resources.release()


def test_worktree_factory_outside_a_repository_says_so(tmp_path: Path) -> None:
    factory = WorktreeFactory(
        builtin_registry().orchestrator, Settings(), repo=str(tmp_path), session_prefix="objects"
    )
    with pytest.raises(ProvisioningError) as excinfo:
        factory.provision()
    assert str(excinfo.value) == (
        f"git_worktree needs a git repository, but {tmp_path} is not inside one; set "
        "--aiops-repo (ini aiops_repo) to the repository under test"
    )
