"""Reuse of released checkouts: a pooled checkout must be indistinguishable from a fresh one."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import ResourceRequest, create_default_orchestrator
from pytest_aiops._worktrees.provider import (
    default_worktree_root,
    list_worktrees,
    reclaim_orphans,
)

from .git_helpers import MakeRepo, git, run
from .snapshot_helpers import checkout_state, clone_state, repo_state
from .worktree_helpers import checkouts, make_a_mess, registrations
from .worktree_helpers import worktree_lease as lease
from .worktree_helpers import worktree_provider as provider

FILES = {
    "top.txt": "top\n",
    ".gitignore": "*.pyc\n__pycache__/\n",
    "pkg/a.txt": "a\n",
    "pkg/g.txt": "g\n",
    "pkg/sub/f.txt": "f\n",
    "o/x.txt": "x\n",
    "run.sh": "#!/bin/sh\n",
}


def observe(path: str, isolation: str) -> dict[str, Any]:
    state = checkout_state(path)
    if isolation == "clone":
        state.update(clone_state(path))
    return state


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
@pytest.mark.parametrize("target", [None, "pkg"])
def test_reused_checkout_is_indistinguishable_from_fresh(
    make_repo: MakeRepo, tmp_path: Path, isolation: str, target: str | None
) -> None:
    repo = make_repo(FILES)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep\n")
    options: dict[str, Any] = {"isolation": isolation}
    if target:
        options["targetPath"] = target
    fresh = lease(provider(tmp_path / "fresh", pool=False), repo, "m", **options)
    expected = observe(fresh.hard["worktreePath"], isolation)
    fresh.release()
    user_before = repo_state(repo)

    prov = provider(tmp_path / "pooled")
    first = lease(prov, repo, "module-1", **options)
    inode = os.stat(first.hard["worktreePath"]).st_ino
    make_a_mess(Path(first.hard["worktreePath"]), isolation, outside)
    first.release()
    assert (outside / "precious.txt").read_text() == "keep\n"
    # The first restore asks git what changed; later ones sweep what changed since the
    # lease began (a stamp): check both.
    for round_ in range(2):
        second = lease(prov, repo, f"module-{round_ + 2}", **options)
        path = second.hard["worktreePath"]
        assert os.stat(path).st_ino == inode  # really the reused checkout
        assert observe(path, isolation) == expected
        assert second.hard["commit"] == git(repo, "rev-parse", "HEAD")
        if round_ == 0:
            make_a_mess(Path(path), isolation, outside)
        second.release()
    if isolation == "clone":
        assert repo_state(repo) == user_before


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_reuse_at_another_base_ref_switches_commit(
    make_repo: MakeRepo, tmp_path: Path, isolation: str
) -> None:
    repo = make_repo(FILES)
    git(repo, "tag", "v1")
    (repo / "pkg" / "new.txt").write_text("new\n")
    (repo / "top.txt").write_text("second\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    fresh = lease(provider(tmp_path / "fresh", pool=False), repo, isolation=isolation)
    expected = observe(fresh.hard["worktreePath"], isolation)
    fresh.release()
    prov = provider(tmp_path / "pooled")
    old = lease(prov, repo, baseRef="v1", isolation=isolation)
    inode = os.stat(old.hard["worktreePath"]).st_ino
    (Path(old.hard["worktreePath"]) / "junk").write_text("j")
    old.release()
    new = lease(prov, repo, isolation=isolation)
    assert os.stat(new.hard["worktreePath"]).st_ino == inode
    assert observe(new.hard["worktreePath"], isolation) == expected
    new.release()


def test_pooled_checkouts_are_invisible_to_the_user_repo_and_reclaimable(
    repo: Path, root: Path
) -> None:
    prov = provider(root)
    held = [lease(prov, repo, f"s{i}") for i in range(2)]
    assert git(repo, "worktree", "list").count("\n") == 2
    for item in held:
        item.release()
    # Pooled: not listed by the user's repository, no directory at R/<name>. The
    # registrations stay, hidden (no gitdir) and locked against `git worktree prune`.
    assert git(repo, "worktree", "list").count("\n") == 0
    for name in registrations(repo):
        reg = repo / ".git" / "worktrees" / name
        assert not (reg / "gitdir").exists()
        assert (reg / "locked").read_text().startswith("pytest-aiops: pooled checkout")
    git(repo, "worktree", "prune")
    assert len(registrations(repo)) == 2
    assert checkouts(root) == []
    assert sorted(r.state for r in list_worktrees(str(root))) == ["pooled", "pooled"]
    assert reclaim_orphans(str(root)) == []  # pooled are not orphans
    removed = reclaim_orphans(str(root), include_pooled=True, dry_run=True)
    assert len(removed) == 2
    assert len(list_worktrees(str(root))) == 2
    reclaim_orphans(str(root), include_pooled=True)
    assert list_worktrees(str(root)) == []
    assert os.listdir(root / ".pytest-aiops") == []
    assert registrations(repo) == []


def test_pool_size_caps_what_is_kept_and_pool_false_keeps_nothing(repo: Path, root: Path) -> None:
    prov = provider(root, pool_size=1)
    held = [lease(prov, repo, f"s{i}") for i in range(3)]
    for item in held:
        item.release()
    assert [r.state for r in list_worktrees(str(root))] == ["pooled"]
    again = lease(prov, repo, "x", pool=False)  # neither takes from the pool nor gives
    assert sorted(r.state for r in list_worktrees(str(root))) == ["live", "pooled"]
    again.release()
    assert [r.state for r in list_worktrees(str(root))] == ["pooled"]
    reclaim_orphans(str(root), include_pooled=True)
    assert registrations(repo) == []


def test_worktree_and_clone_pools_are_kept_apart(repo: Path, root: Path) -> None:
    prov = provider(root)
    lease(prov, repo, isolation="clone").release()
    wt = lease(prov, repo, isolation="worktree")
    assert (Path(wt.hard["worktreePath"]) / ".git").is_file()  # not the pooled clone
    wt.release()
    clone = lease(prov, repo, isolation="clone")
    assert (Path(clone.hard["worktreePath"]) / ".git").is_dir()
    clone.release()
    reclaim_orphans(str(root), include_pooled=True)


def test_a_pooled_checkout_that_was_tampered_with_is_discarded(repo: Path, root: Path) -> None:
    prov = provider(root)
    lease(prov, repo).release()
    [record] = list_worktrees(str(root))
    # Replace the pooled directory: its inode no longer matches the record.
    os.rename(record.path, str(root / "moved-away"))
    os.mkdir(record.path)
    again = lease(prov, repo)
    assert os.path.isfile(os.path.join(again.hard["worktreePath"], "top.txt"))
    assert os.path.isdir(root / "moved-away")  # not ours any more: never deleted
    again.release()


@pytest.mark.parametrize("change", ["chmod", "delete", "add", "replace-dir", "rename"])
def test_sweep_since_the_lease_began_catches_each_change(
    make_repo: MakeRepo, tmp_path: Path, change: str
) -> None:
    """Changes that leave git's index alone, undone by the stamp sweep (no git asked)."""
    repo = make_repo(FILES)
    fresh = lease(provider(tmp_path / "fresh", pool=False), repo)
    expected = observe(fresh.hard["worktreePath"], "worktree")
    fresh.release()
    prov = provider(tmp_path / "pooled")
    lease(prov, repo).release()  # now pooled; the next lease is stamped
    held = lease(prov, repo)
    path = Path(held.hard["worktreePath"])
    if change == "chmod":
        (path / "pkg" / "a.txt").chmod(0o400)
        (path / "pkg").chmod(0o700)
    elif change == "delete":
        (path / "pkg" / "sub" / "f.txt").unlink()
    elif change == "add":
        (path / "pkg" / "__pycache__").mkdir()
        (path / "pkg" / "__pycache__" / "x.pyc").write_text("x")
        (path / "out.txt").write_text("o")
    elif change == "replace-dir":
        for child in (path / "o").iterdir():
            child.unlink()
        (path / "o").rmdir()
        (path / "o").write_text("now a file")
    else:
        (path / "top.txt").rename(path / "pkg" / "top-moved.txt")
    held.release()
    again = lease(prov, repo)
    assert observe(again.hard["worktreePath"], "worktree") == expected
    again.release()


def test_pool_of_a_deleted_repository_is_swept_from_the_default_base(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_aiops._worktrees import store as _worktree_store

    gone = make_repo(name="gone")
    kept = make_repo(name="kept")
    roots = [default_worktree_root(str(r)) for r in (gone, kept)]
    try:
        lease(provider(None), gone).release()
        [pooled] = list_worktrees(roots[0])
        shutil.rmtree(gone)
        monkeypatch.setattr(_worktree_store, "_SWEPT", set())
        held = lease(provider(None), kept)  # any provisioning into the default base sweeps
        assert list_worktrees(roots[0]) == []
        assert not os.path.exists(pooled.path)
        assert not os.path.exists(roots[0])  # the emptied root of the gone repo too
        assert os.path.isdir(roots[1])
        held.release()
    finally:
        for root in roots:
            reclaim_orphans(root, include_pooled=True)
            shutil.rmtree(root, ignore_errors=True)


def test_pooled_checkouts_idle_too_long_are_dropped(
    repo: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_aiops._worktrees import store as _worktree_store

    prov = provider(root)
    lease(prov, repo, "a").release()
    [old] = list_worktrees(str(root))
    monkeypatch.setattr(_worktree_store, "POOL_MAX_IDLE", -1.0)
    held = lease(prov, repo, "b")
    assert [r.token for r in list_worktrees(str(root))] != [old.token]
    assert not os.path.exists(old.path)
    held.release()


def test_quick_modules_do_not_make_every_restore_rewrite_the_tree(
    make_repo: MakeRepo, root: Path
) -> None:
    """A restore must not mistake what the previous restore rewrote for the test's changes.

    Leases follow each other within a second here, as quick test modules do; an untouched
    tracked file keeps its inode across a hand-out whose test changed nothing.
    """
    files = {f"d{i % 5}/f{i}.txt": f"{i}\n" for i in range(200)}
    repo = make_repo(files)
    prov = provider(root)

    def inodes(path: Path) -> dict[str, int]:
        return {name: (path / name).stat().st_ino for name in files}

    first = lease(prov, repo, "m1")
    path = Path(first.hard["worktreePath"])
    for name in files:  # the test rewrote every tracked file: the restore replaces them
        (path / name).write_text("changed\n")
    first.release()
    second = lease(prov, repo, "m2")
    path = Path(second.hard["worktreePath"])
    before = inodes(path)
    assert all((path / name).read_text() == text for name, text in files.items())
    second.release()  # this test changed nothing
    third = lease(prov, repo, "m3")
    path = Path(third.hard["worktreePath"])
    assert inodes(path) == before
    third.release()


def test_a_directory_moved_in_with_old_times_does_not_survive_the_pool(
    make_repo: MakeRepo, root: Path, tmp_path: Path
) -> None:
    repo = make_repo(FILES)
    prov = provider(root)
    old = tmp_path / "made-before"
    (old / "x").mkdir(parents=True)
    (old / "x" / "data.bin").write_bytes(b"old")
    (tmp_path / "loose.txt").write_text("old")
    # Cycles a second apart settle the checkout's index; from then on the pool restores by
    # the timestamp sweep, which is what this test is about.
    for _ in range(3):
        lease(prov, repo, "warm-up").release()
        time.sleep(1.1)
    held = lease(prov, repo, "m")
    path = Path(held.hard["worktreePath"])
    os.rename(old, path / "moved")  # keeps its old times
    os.rename(tmp_path / "loose.txt", path / "pkg" / "loose.txt")
    held.release()
    again = lease(prov, repo, "m2")
    path = Path(again.hard["worktreePath"])
    assert not (path / "moved").exists()
    assert not (path / "pkg" / "loose.txt").exists()
    assert run(path, "status", "--porcelain", "--ignored").stdout == ""
    again.release()


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_a_pooled_checkout_moved_to_a_new_commit_has_a_fresh_reflog(
    make_repo: MakeRepo, root: Path, isolation: str
) -> None:
    repo = make_repo(FILES)
    prov = provider(root)
    lease(prov, repo, "m1", isolation=isolation).release()
    (repo / "top.txt").write_text("second\n")
    git(repo, "commit", "-q", "-am", "second")
    head = git(repo, "rev-parse", "HEAD")
    again = lease(prov, repo, "m2", isolation=isolation)
    path = again.hard["worktreePath"]
    assert run(path, "rev-parse", "HEAD").stdout.strip() == head
    assert run(path, "rev-parse", "HEAD@{0}").stdout.strip() == head
    assert len(run(path, "reflog", "show", "--format=%H", "HEAD").stdout.split()) == 1
    again.release()


# --- fallbacks: a checkout the pool cannot restore or reuse (issue 12, item 8) --------------


def _worktree_session(repo: Path, root: Path, **options: Any) -> Any:
    return create_default_orchestrator().provision_session(
        session_id="s",
        resources=[ResourceRequest("git-worktree", {"rootDirectory": str(root), **options})],
        workspace_root=repo,
    )


def test_a_checkout_that_cannot_be_restored_is_removed_with_a_warning(
    repo: Path, tmp_path: Path
) -> None:
    from pytest_aiops import AiopsWarning, list_worktrees

    root = tmp_path / "root"
    session = _worktree_session(repo, root)
    worktree = session.allocation("git-worktree")
    assert worktree is not None
    os.unlink(os.path.join(worktree["worktreePath"], ".git"))  # a test broke its checkout
    with pytest.warns(AiopsWarning, match="could not restore pooled checkout .*; removing it"):
        session.release()
    assert list_worktrees(str(root)) == []
    assert not os.path.exists(worktree["worktreePath"])
    assert not os.listdir(repo / ".git" / "worktrees")


def test_a_pooled_checkout_that_cannot_be_reused_is_replaced_with_a_warning(
    repo: Path, tmp_path: Path
) -> None:
    from pytest_aiops import AiopsWarning, list_worktrees

    root = tmp_path / "root"
    _worktree_session(repo, root).release()
    [pooled] = list_worktrees(str(root))
    assert pooled.state == "pooled"
    os.unlink(os.path.join(pooled.path, ".git"))
    (repo / "new.txt").write_text("new\n")
    git(repo, "add", "new.txt")
    git(repo, "commit", "-qm", "second")  # another commit: reuse has to run git
    with pytest.warns(AiopsWarning, match="could not reuse pooled checkout .*; creating a fresh"):
        session = _worktree_session(repo, root)
    try:
        worktree = session.allocation("git-worktree")
        assert worktree is not None
        assert (Path(worktree["worktreePath"]) / "new.txt").read_text() == "new\n"
        assert git(worktree["worktreePath"], "status", "--porcelain") == ""
    finally:
        session.release()
    assert [record.state for record in list_worktrees(str(root))] == ["pooled"]


def test_a_pooled_worktree_of_a_repository_cloned_again_in_place_is_dropped_quietly(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    # The user deleted the repository and cloned (here: made) it again at the same path:
    # the pool's worktree lost its registration with the old .git, through no fault of
    # anyone's. A warning would fail every suite that runs with filterwarnings = error.
    from pytest_aiops import list_worktrees

    repo = make_repo(name="again")
    root = tmp_path / "root"
    _worktree_session(repo, root).release()
    [pooled] = list_worktrees(str(root))
    shutil.rmtree(repo)
    repo = make_repo(name="again")
    session = _worktree_session(repo, root)  # filterwarnings = error: no warning allowed
    try:
        worktree = session.allocation("git-worktree")
        assert worktree is not None
        assert not os.path.exists(pooled.path)
        assert git(worktree["worktreePath"], "status", "--porcelain") == ""
        assert registrations(repo) != []
    finally:
        session.release()
    assert [record.state for record in list_worktrees(str(root))] == ["pooled"]
