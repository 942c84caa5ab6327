"""The git-worktree provider on real repositories: lease shape, errors, isolation, release."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import (
    GitError,
    OptionError,
    ProvisioningError,
    ResourceProvisioningOrchestrator,
    ResourceRequest,
)
from pytest_aiops._worktrees.provider import (
    default_worktree_root,
    list_worktrees,
    reclaim_orphans,
    worktree_env,
)

from .git_helpers import MakeRepo, git, run
from .snapshot_helpers import clone_state, repo_state, tree_state
from .worktree_helpers import checkouts, make_a_mess, registrations
from .worktree_helpers import worktree_lease as lease
from .worktree_helpers import worktree_provider as provider


@pytest.fixture
def default_root(repo: Path) -> Iterator[Path]:
    """The machine-wide default root of ``repo``, removed after the test."""
    path = Path(default_worktree_root(str(repo)))
    yield path
    reclaim_orphans(str(path), include_pooled=True)
    shutil.rmtree(path, ignore_errors=True)


# --- lease shape and location ----------------------------------------------------------


def test_default_root_is_outside_the_work_tree_and_lease_matches_reference(
    repo: Path, default_root: Path
) -> None:
    held = lease(provider(None), repo, "gw0 module")
    path = held.hard["worktreePath"]
    assert Path(held.hard["worktreeRoot"]) == default_root
    assert not Path(path).is_relative_to(repo)
    assert os.path.basename(path) == "gw0-module-" + hashlib.sha256(b"gw0 module").hexdigest()[:8]
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        assert path.startswith("/dev/shm/")
    assert {k: held.hard[k] for k in ("repoRoot", "worktreeRoot", "worktreePath", "baseRef")} == {
        "repoRoot": str(repo),
        "worktreeRoot": str(default_root),
        "worktreePath": path,
        "baseRef": "HEAD",
    }
    assert "targetPath" not in held.hard
    assert held.hard["commit"] == git(repo, "rev-parse", "HEAD")
    assert held.hard["isolation"] == "worktree"
    assert dict(held.patch.env) == {
        "AGENT_REPO_ROOT": str(repo),
        "AGENT_WORKTREE_PATH": path,
        "AGENT_WORKTREE_BASE_REF": "HEAD",
    }
    assert list(held.patch.prompt_sections) == [f"Git worktree: {path}", "Worktree base ref: HEAD"]
    assert dict(held.patch.metadata) == {
        "git_worktree_path": path,
        "git_worktree_base_ref": "HEAD",
    }
    assert held.patch.preferred_working_directory == path
    assert sorted(os.listdir(path)) == [".git", "pkg", "top.txt"]
    assert git(repo, "status", "--porcelain", "--ignored") == ""
    assert run(path, "symbolic-ref", "-q", "HEAD", check=False).returncode == 1  # detached
    [record] = list_worktrees(str(default_root))
    assert (record.path, record.state, record.session_id, record.pid) == (
        path,
        "live",
        "gw0 module",
        os.getpid(),
    )
    held.release()
    held.release()  # idempotent
    assert git(repo, "worktree", "list").count("\n") == 0


def test_relative_root_resolves_against_the_repository_root(repo: Path) -> None:
    (repo / "pkg" / "sub").mkdir(parents=True, exist_ok=True)
    held = lease(provider(None, pool=False), repo / "pkg" / "sub", rootDirectory="../wts")
    assert held.hard["worktreeRoot"] == os.path.normpath(os.path.join(repo, "../wts"))
    held.release()
    assert checkouts(repo.parent / "wts") == []


def test_same_session_twice_gets_distinct_names_only_when_needed(repo: Path, root: Path) -> None:
    prov = provider(root, pool=False)
    first = lease(prov, repo, "same")
    second = lease(prov, repo, "same")
    assert os.path.basename(second.hard["worktreePath"]) == (
        os.path.basename(first.hard["worktreePath"]) + "-2"
    )
    first.release()
    second.release()
    third = lease(prov, repo, "same")
    assert third.hard["worktreePath"] == first.hard["worktreePath"]
    third.release()


# --- errors leave nothing --------------------------------------------------------------


def assert_nothing_created(repo: Path, root: Path, before: dict[str, Any]) -> None:
    assert repo_state(repo) == before
    assert checkouts(root) == []
    assert registrations(repo) == []


def test_bad_base_ref_is_an_option_error(repo: Path, root: Path) -> None:
    before = repo_state(repo)
    with pytest.raises(OptionError) as info:
        lease(provider(root), repo, baseRef="no-such-ref")
    assert info.value.option == "baseRef"
    assert str(info.value) == (
        f"Option \"baseRef\" must name a commit in {repo}, not 'no-such-ref' "
        "(git rev-parse found no such commit)."
    )
    with pytest.raises(OptionError, match="must name a commit"):
        lease(provider(root), repo, baseRef="--output=/tmp/x")
    assert not root.exists()
    assert_nothing_created(repo, root, before)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing", 'Configured worktree target path "missing" is not a directory in ref "HEAD".'),
        ("top.txt", 'Configured worktree target path "top.txt" is not a directory in ref "HEAD".'),
        ("/abs", "Option \"targetPath\" must be a relative path within the repository worktree, "
         "not '/abs'."),
        ("a/../b", "Option \"targetPath\" must not contain \"..\" path segments: 'a/../b'."),
    ],
)  # fmt: skip
def test_bad_target_path_refused_before_anything_exists(
    repo: Path, root: Path, target: str, message: str
) -> None:
    before = repo_state(repo)
    with pytest.raises(OptionError) as info:
        lease(provider(root), repo, targetPath=target)
    assert (info.value.option, str(info.value)) == ("targetPath", message)
    assert_nothing_created(repo, root, before)


def test_not_a_repository(tmp_path: Path, root: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match=r"is not inside a git repository .*needs one"):
        lease(provider(root), plain)
    assert not root.exists()


def test_missing_git_executable(
    repo: Path, root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(GitError, match="git executable not found on PATH; install git"):
        lease(provider(root), repo)
    assert not root.exists()


def test_unwritable_root(repo: Path, tmp_path: Path) -> None:
    # Root ignores permission bits, so a regular file in the path makes it uncreatable.
    (tmp_path / "blocker").write_text("x")
    before = repo_state(repo)
    with pytest.raises(OptionError, match=r"^rootDirectory must be a writable directory, not"):
        lease(provider(tmp_path / "blocker" / "wt"), repo)
    assert (tmp_path / "blocker").read_text() == "x"
    assert repo_state(repo) == before
    assert registrations(repo) == []


def test_root_that_is_a_file(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionError) as info:
        lease(provider(tmp_path / "file"), repo)
    assert info.value.option == "rootDirectory"
    assert str(info.value).startswith(
        f"rootDirectory must be a writable directory, not {str(tmp_path / 'file')!r} ("
    )
    assert registrations(repo) == []


@pytest.mark.parametrize(
    ("options", "option"),
    [({"isolation": "vm"}, "isolation"), ({"pool": "yes"}, "pool"), ({"rootDirectory": 3}, None)],
)
def test_bad_option_types(
    repo: Path, root: Path, options: dict[str, Any], option: str | None
) -> None:
    with pytest.raises(OptionError) as info:
        lease(provider(root), repo, **options)
    assert info.value.option == (option or "rootDirectory")
    assert not root.exists()


def test_refused_request_through_orchestrator_rolls_back(repo: Path, root: Path) -> None:
    orchestrator = ResourceProvisioningOrchestrator([provider(root)])
    with pytest.raises(ProvisioningError, match=r"^Resource provisioning failed: Configured"):
        orchestrator.provision_session(
            session_id="s",
            resources=[ResourceRequest("git-worktree", {"targetPath": "missing"})],
            workspace_root=str(repo),
        )
    assert checkouts(root) == []
    assert registrations(repo) == []


# --- the user's repository is never changed --------------------------------------------


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
@pytest.mark.parametrize("pool", [True, False])
def test_session_that_commits_and_writes_leaves_user_repo_unchanged(
    make_repo: MakeRepo, root: Path, isolation: str, pool: bool
) -> None:
    repo = make_repo({"top.txt": "top\n", ".gitignore": "*.log\n", "pkg/sub/f.txt": "f\n"})
    git(repo, "branch", "feature")
    git(repo, "tag", "v1")
    (repo / "wip.txt").write_text("user's untracked work\n")
    (repo / "top.txt").write_text("user's uncommitted edit\n")
    before = repo_state(repo)
    held = lease(provider(root, pool=pool), repo, isolation=isolation)
    path = Path(held.hard["worktreePath"])
    assert (path / "top.txt").read_text() == "top\n"  # the commit, not the user's edits
    (path / "top.txt").write_text("changed\n")
    (path / "new.txt").write_text("new\n")
    run(path, "add", "-A")
    run(path, "commit", "-q", "-m", "made inside")
    (path / "after.log").write_text("ignored\n")
    (path / "untracked.txt").write_text("u\n")
    (path / "pkg" / "sub" / "f.txt").write_text("dirty\n")
    held.release()
    assert repo_state(repo) == before
    assert checkouts(root) == []


# --- sparse ----------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_target_path_is_a_sparse_cone_without_touching_user_config(
    make_repo: MakeRepo, root: Path, isolation: str
) -> None:
    repo = make_repo({"top.txt": "t\n", "pkg/sub/f.txt": "f\n", "pkg/g.txt": "g\n", "o/x": "x\n"})
    config = (repo / ".git" / "config").read_bytes()
    held = lease(provider(root), repo, targetPath="./pkg\\sub/", isolation=isolation)
    path = Path(held.hard["worktreePath"])
    assert held.hard["targetPath"] == "pkg/sub"
    assert held.patch.preferred_working_directory == str(path / "pkg" / "sub")
    assert (
        held.patch.prompt_sections[-1] == "Worktree target path: pkg/sub (sparse-checkout enabled)"
    )
    assert held.patch.metadata["git_worktree_target_path"] == "pkg/sub"
    files = {k for k, v in tree_state(path).items() if v[0] == "file"}
    assert files == {"top.txt", "pkg/g.txt", "pkg/sub/f.txt"}  # cone: parents' files too
    assert run(path, "status", "--porcelain").stdout == ""
    assert (repo / ".git" / "config").read_bytes() == config
    held.release()
    assert (repo / ".git" / "config").read_bytes() == config


# --- release ---------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_release_removes_a_messy_checkout_and_nothing_outside(
    make_repo: MakeRepo, root: Path, tmp_path: Path, isolation: str
) -> None:
    repo = make_repo({"top.txt": "t\n", ".gitignore": "*.pyc\n", "pkg/sub/f.txt": "f\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")
    outside_before = tree_state(outside)
    held = lease(provider(root, pool=False), repo, isolation=isolation)
    make_a_mess(Path(held.hard["worktreePath"]), isolation, outside)
    held.release()
    assert checkouts(root) == []
    assert os.listdir(root / ".pytest-aiops") == []
    assert registrations(repo) == []
    assert tree_state(outside) == outside_before
    assert git(repo, "worktree", "list").count("\n") == 0


# --- git traps -------------------------------------------------------------------------


def test_git_environment_variables_do_not_redirect(
    repo: Path, make_repo: MakeRepo, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = make_repo({"decoy.txt": "d\n"}, name="decoy")
    decoy_before = repo_state(decoy)
    # What git exports to a hook; pytest run from a pre-commit hook inherits them.
    monkeypatch.setenv("GIT_DIR", str(decoy / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(decoy))
    monkeypatch.setenv("GIT_INDEX_FILE", str(decoy / ".git" / "index"))
    held = lease(provider(root), repo, isolation="worktree")
    clone = lease(provider(root), repo, "c", isolation="clone")
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert held.hard["repoRoot"] == str(repo)
    assert sorted(os.listdir(held.hard["worktreePath"])) == [".git", "pkg", "top.txt"]
    assert sorted(os.listdir(clone.hard["worktreePath"])) == [".git", "pkg", "top.txt"]
    assert registrations(repo) != []
    held.release()
    clone.release()
    assert repo_state(decoy) == decoy_before


def test_user_hooks_do_not_run(repo: Path, root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for hooks_dir in (hooks, repo / ".git" / "hooks"):
        hooks_dir.mkdir(exist_ok=True)
        for name in ("post-checkout", "reference-transaction", "post-index-change"):
            script = hooks_dir / name
            script.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
            script.chmod(0o755)
    git(repo, "config", "core.hooksPath", str(hooks))
    for isolation in ("worktree", "clone"):
        held = lease(provider(root), repo, isolation=isolation)
        held.release()
        held = lease(provider(root), repo, isolation=isolation)  # from the pool
        held.release()
    assert not marker.exists()


# --- clone isolation -------------------------------------------------------------------


def test_clone_keeps_refs_tags_stash_config_and_pushes_away_from_user_repo(
    make_repo: MakeRepo, root: Path
) -> None:
    repo = make_repo({"top.txt": "t\n", "pkg/sub/f.txt": "f\n"})
    git(repo, "branch", "feature")
    before = repo_state(repo)
    prov = provider(root)
    held = lease(prov, repo, "m1", isolation="clone")
    path = Path(held.hard["worktreePath"])
    fresh = clone_state(path)
    assert fresh["refs"] == ""  # no branches copied: nothing that could dangle or leak
    assert run(path, "log", "--oneline", "-1").stdout.strip().endswith("initial")
    run(path, "checkout", "-q", "-b", "mine")
    (path / "top.txt").write_text("edited\n")
    run(path, "commit", "-q", "-am", "clone commit")
    run(path, "tag", "v-clone")
    (path / "top.txt").write_text("stash me\n")
    run(path, "stash")
    run(path, "config", "user.name", "Someone Else")
    hook = path / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\nexit 1\n")
    for args in (
        ("push", "origin", "mine"),
        ("push", str(repo), "mine:refs/heads/pushed"),
        ("push", f"file://{repo}", "HEAD:main"),
        ("push", str(repo / ".git"), "mine:refs/heads/pushed"),
    ):
        result = run(path, *args, check=False)
        assert result.returncode != 0, args
    run(path, "fetch", "-q", "origin")  # reading from the user's repo is allowed
    assert "refs/remotes/origin/feature" in run(path, "for-each-ref").stdout
    held.release()
    assert repo_state(repo) == before
    # The next module's checkout (the same one, from the pool) sees none of it.
    again = lease(prov, repo, "m2", isolation="clone")
    path2 = Path(again.hard["worktreePath"])
    assert clone_state(path2) == fresh
    assert run(path2, "stash", "list").stdout == ""
    assert run(path2, "config", "--get", "user.name", check=False).stdout.strip() != "Someone Else"
    assert not (path2 / ".git" / "hooks").exists()
    again.release()
    assert repo_state(repo) == before


def test_worktree_isolation_shares_refs_with_the_user_repo(repo: Path, root: Path) -> None:
    """The documented trade-off: a branch made in a linked worktree is the user's branch."""
    held = lease(provider(root, pool=False), repo)
    run(held.hard["worktreePath"], "branch", "made-in-worktree")
    held.release()
    assert "made-in-worktree" in git(repo, "branch", "--list")
    git(repo, "branch", "-D", "made-in-worktree")


# --- children --------------------------------------------------------------------------


def test_child_worktrees_live_under_the_parent_and_leave_nothing(repo: Path, root: Path) -> None:
    orchestrator = ResourceProvisioningOrchestrator([provider(root)])
    parent = orchestrator.provision_session(
        session_id="parent",
        resources=[ResourceRequest("git-worktree")],
        workspace_root=str(repo),
    )
    snapshot = parent.to_discovery_snapshot()
    allocation = snapshot.allocation("git-worktree")
    assert allocation is not None
    parent_path = allocation["worktreePath"]
    children = [
        orchestrator.provision_child_session(
            parent_snapshot=snapshot, child_session_id=f"child{i}", child_index=i, child_count=2
        )
        for i in range(2)
    ]
    for child in children:
        child_path = child.working_directory
        assert child_path.startswith(os.path.join(parent_path, ".ai_ops", "child-worktrees"))
        assert (Path(child_path) / "top.txt").is_file()
    children[0].release()  # pooled inside the parent
    # Takes the pooled child apart properly; child 1 is still live, so the parent's checkout
    # stays (an orphan that scans skip) rather than being restored or deleted under it.
    parent.release()
    assert (Path(children[1].working_directory) / "top.txt").is_file()
    children[1].release()  # released after its parent: must not fail
    reclaim_orphans(str(root), include_pooled=True)  # now the parent goes too
    assert git(repo, "worktree", "list").count("\n") == 0
    assert registrations(repo) == []


# --- the import trap -------------------------------------------------------------------


def test_worktree_env_imports_the_worktree_not_the_main_checkout(
    make_repo: MakeRepo, root: Path
) -> None:
    repo = make_repo({"src/mypkg/__init__.py": "WHERE = 'committed'\n"})
    held = lease(provider(root, pool=False), repo)
    path = Path(held.hard["worktreePath"])
    (path / "src" / "mypkg" / "__init__.py").write_text("WHERE = 'worktree'\n")
    (repo / "src" / "mypkg" / "__init__.py").write_text("WHERE = 'main checkout'\n")
    # As with an editable install: the main checkout is on the path already.
    base = {**os.environ, "PYTHONPATH": str(repo / "src"), "GIT_DIR": str(repo / ".git")}
    code = "import mypkg; print(mypkg.WHERE)"
    plain = subprocess.run(
        [sys.executable, "-c", code], env=base, cwd=path, capture_output=True, text=True, check=True
    )
    assert plain.stdout.strip() == "main checkout"  # the trap
    env = worktree_env(str(path), base, repo_root=str(repo))
    fixed = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=path, capture_output=True, text=True, check=True
    )
    assert fixed.stdout.strip() == "worktree"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(path / "src")
    assert "GIT_DIR" not in env
    held.release()


def test_read_only_tree_made_by_a_test_is_removed(repo: Path, root: Path) -> None:
    held = lease(provider(root, pool=False), repo)
    path = Path(held.hard["worktreePath"])
    for dirpath, _dirs, filenames in os.walk(path, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), stat.S_IRUSR)
        os.chmod(dirpath, stat.S_IRUSR | stat.S_IXUSR)
    held.release()
    assert checkouts(root) == []
    assert registrations(repo) == []


def test_head_is_followed_as_it_moves_loose_packed_and_detached(repo: Path, root: Path) -> None:
    """Later leases of a workspace read HEAD's ref files instead of running git: same answer."""
    prov = provider(root)

    def leased_commit() -> str:
        held = lease(prov, repo)
        commit = str(held.hard["commit"])
        assert run(held.hard["worktreePath"], "rev-parse", "HEAD").stdout.strip() == commit
        held.release()
        return commit

    assert leased_commit() == git(repo, "rev-parse", "HEAD")
    (repo / "top.txt").write_text("moved\n")
    git(repo, "commit", "-qam", "second")
    assert leased_commit() == git(repo, "rev-parse", "HEAD")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert leased_commit() == git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert leased_commit() == git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "unborn-not", "main")
    assert leased_commit() == git(repo, "rev-parse", "main")
