"""Making a fresh checkout (``_worktrees/create.py``) on real repositories, checked with git.

What ``create_worktree`` and ``create_clone`` leave is compared with what git itself does
(``git sparse-checkout set --cone`` for the patterns, ``git status`` for cleanliness), and
the user's repository is compared byte for byte before and after.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from pytest_aiops._errors import GitError, NoSpaceError
from pytest_aiops._worktrees.create import (
    PUSH_DISABLED,
    clone_config,
    cone_patterns,
    create_clone,
    create_worktree,
    in_cone,
    no_space,
    reset_clone_metadata,
    reset_worktree_metadata,
)
from pytest_aiops._worktrees.locate import RepoInfo
from pytest_aiops._worktrees.repository import inspect_repo

from .git_helpers import MakeRepo, git, run
from .snapshot_helpers import repo_state
from .worktree_helpers import registrations

FILES = {
    "top.txt": "top\n",
    "pkg/a.txt": "a\n",
    "pkg/sub/f.txt": "f\n",
    "pkg/sub/deeper/g.txt": "g\n",
    "other/o.txt": "o\n",
}


@pytest.fixture
def layered(make_repo: MakeRepo) -> Path:
    """A repository with files at several depths, for sparse checkouts."""
    return make_repo(FILES)


def _files(path: Path) -> set[str]:
    """Every file under a checkout, ``.git`` left out."""
    return {
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(path).parts
    }


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("target", ["pkg", "pkg/sub", "pkg/sub/deeper", "other"])
def test_cone_patterns_and_in_cone_are_what_git_does(
    layered: Path, tmp_path: Path, target: str
) -> None:
    scratch = tmp_path / "scratch"
    git(layered, "clone", "-q", str(layered), str(scratch))
    git(scratch, "sparse-checkout", "set", "--cone", target)
    assert cone_patterns(target) == (scratch / ".git" / "info" / "sparse-checkout").read_text()
    dirs = {str(Path(f).parent) for f in FILES} - {"."}
    dirs |= {str(p) for d in list(dirs) for p in Path(d).parents if str(p) != "."}
    kept_files, _kept_dirs = in_cone(set(FILES), dirs, target)
    assert kept_files == _files(scratch)


@pytest.mark.parametrize("target", [None, "pkg/sub"])
def test_create_worktree_checks_out_the_commit_and_leaves_the_users_repo_alone(
    layered: Path, tmp_path: Path, target: str | None
) -> None:
    info, commit = inspect_repo(str(layered), "HEAD")
    before = repo_state(layered)
    path = tmp_path / "wt" / "s--00000001"
    path.mkdir(parents=True)
    git_dir = create_worktree(info, commit, str(path), target)
    assert git_dir == str(layered / ".git" / "worktrees" / path.name)
    assert git(path, "rev-parse", "HEAD") == commit
    assert run(path, "symbolic-ref", "-q", "HEAD", check=False).returncode == 1  # detached
    expected = set(FILES) if target is None else in_cone(set(FILES), set(), target)[0]
    assert _files(path) == expected
    assert git(path, "status", "--porcelain") == ""
    assert registrations(layered) == [path.name]
    after = repo_state(layered)
    # The one change: the registration (and git's listing of it); config, refs, index,
    # HEAD, stash and files are as they were (sparse flags never reach the shared config).
    for key in ("HEAD", "refs", "stash", "config", "index", "packed-refs", "hooks", "files"):
        assert after[key] == before[key], key
    git(layered, "worktree", "remove", "--force", str(path))


def test_create_worktree_from_a_sparse_user_checkout_is_full(layered: Path, tmp_path: Path) -> None:
    """The user's own sparse patterns are not inherited: a checkout is full unless asked."""
    git(layered, "sparse-checkout", "set", "--cone", "other")
    info, commit = inspect_repo(str(layered), "HEAD")
    path = tmp_path / "wt" / "s--00000002"
    path.mkdir(parents=True)
    git_dir = create_worktree(info, commit, str(path), None)
    assert _files(path) == set(FILES)
    assert not os.path.exists(os.path.join(git_dir, "info", "sparse-checkout"))
    assert git(path, "status", "--porcelain") == ""


def test_create_worktree_failing_raises_git_error(layered: Path, tmp_path: Path) -> None:
    info, _commit = inspect_repo(str(layered), "HEAD")
    path = tmp_path / "wt" / "s--00000003"
    path.mkdir(parents=True)
    with pytest.raises(GitError):
        create_worktree(info, "0" * 40, str(path), None)  # no such commit
    assert registrations(layered) == []


@pytest.mark.parametrize("target", [None, "pkg"])
def test_create_clone_is_a_private_repository(
    layered: Path, tmp_path: Path, target: str | None
) -> None:
    info, commit = inspect_repo(str(layered), "HEAD")
    before = repo_state(layered)
    path = tmp_path / "clones" / "s--00000004"
    path.mkdir(parents=True)
    git_dir = create_clone(info, commit, str(path), target)
    assert git_dir == str(path / ".git")
    assert git(path, "rev-parse", "HEAD") == commit
    assert git(path, "for-each-ref") == ""  # no refs copied
    assert (path / ".git" / "objects" / "info" / "alternates").read_text() == (
        str(layered / ".git" / "objects") + "\n"
    )
    assert os.listdir(path / ".git" / "objects" / "pack") == []  # borrowed, not copied
    expected = set(FILES) if target is None else in_cone(set(FILES), set(), target)[0]
    assert _files(path) == expected
    assert git(path, "status", "--porcelain") == ""
    assert repo_state(layered) == before  # registered nowhere, nothing changed
    assert (path / ".git" / "config").read_text() == clone_config(info, sparse=bool(target))


def test_a_clone_can_fetch_its_origin_but_not_push_to_the_users_repository(
    layered: Path, tmp_path: Path
) -> None:
    info, commit = inspect_repo(str(layered), "HEAD")
    path = tmp_path / "clone"
    path.mkdir()
    create_clone(info, commit, str(path), None)
    git(path, "fetch", "-q", "origin")
    assert git(path, "rev-parse", "origin/main") == commit
    git(path, "checkout", "-q", "-b", "topic")
    before = repo_state(layered)
    for remote in ("origin", str(layered), os.path.realpath(layered), f"file://{layered}"):
        pushed = run(path, "push", remote, "topic", check=False)
        assert pushed.returncode != 0, remote
        assert PUSH_DISABLED in pushed.stderr or "pytest-aiops-push-disabled" in pushed.stderr
    assert repo_state(layered) == before


def test_clone_config_is_valid_git_config() -> None:
    for object_format in ("sha1", "sha256"):
        for sparse in (False, True):
            info = RepoInfo(
                repo_root='/repo with "quotes"\\and',
                common_dir="/repo/.git",
                object_format=object_format,
            )
            text = clone_config(info, sparse=sparse)
            listed = subprocess.run(
                ["git", "config", "--file", "-", "--list"],
                input=text,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
            assert 'remote.origin.url=/repo with "quotes"\\and' in listed
            assert f"remote.origin.pushurl={PUSH_DISABLED}" in listed
            assert ("core.sparsecheckout=true" in listed) is sparse
            assert ("extensions.objectformat=sha256" in listed) is (object_format == "sha256")
            version = "0" if object_format == "sha1" else "1"
            assert f"core.repositoryformatversion={version}" in listed


def test_reset_clone_metadata_makes_a_used_clone_fresh_again(layered: Path, tmp_path: Path) -> None:
    info, commit = inspect_repo(str(layered), "HEAD")
    used, fresh = tmp_path / "used", tmp_path / "fresh"
    for path in (used, fresh):
        path.mkdir()
        create_clone(info, commit, str(path), None)
    # What a test does to its clone's repository.
    (used / "new.txt").write_text("n\n")
    git(used, "add", "new.txt")
    git(used, "commit", "-q", "-m", "inside")
    git(used, "tag", "t1")
    git(used, "branch", "topic")
    git(used, "config", "test.key", "value")
    (used / ".git" / "hooks").mkdir(exist_ok=True)
    (used / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\nexit 1\n")
    (used / ".git" / "MERGE_HEAD").write_text(commit + "\n")
    reset_clone_metadata(info, str(used / ".git"), commit=commit, target=None)
    assert sorted(os.listdir(used / ".git")) == sorted(os.listdir(fresh / ".git"))
    for sub in ("logs", "refs"):  # the branch's and tag's refs and reflogs gone too
        assert _tree(used / ".git" / sub) == _tree(fresh / ".git" / sub)
    assert git(used, "for-each-ref") == ""
    assert git(used, "rev-parse", "HEAD") == commit
    assert (used / ".git" / "config").read_bytes() == (fresh / ".git" / "config").read_bytes()
    assert len(git(used, "reflog").splitlines()) == 1


def test_reset_worktree_metadata_drops_what_a_test_added(layered: Path, tmp_path: Path) -> None:
    info, commit = inspect_repo(str(layered), "HEAD")
    path = tmp_path / "wt" / "s--00000005"
    path.mkdir(parents=True)
    git_dir = Path(create_worktree(info, commit, str(path), None))
    fresh = sorted(os.listdir(git_dir))
    git(path, "checkout", "-q", "--detach", commit)
    for message in ("one", "two"):
        git(path, "commit", "-q", "--allow-empty", "-m", message)
    (git_dir / "MERGE_HEAD").write_text(commit + "\n")
    (git_dir / "rebase-merge").mkdir()
    (git_dir / "BISECT_LOG").write_text("x\n")
    git(path, "checkout", "-q", "--detach", commit)
    reset_worktree_metadata(info, str(git_dir), commit, None)
    assert sorted(os.listdir(git_dir)) == fresh
    assert (git_dir / "ORIG_HEAD").read_text() == commit + "\n"
    reflog = (git_dir / "logs" / "HEAD").read_text().splitlines()
    assert len(reflog) == 1
    assert reflog[0].split(" ")[:2] == ["0" * 40, commit]
    assert git(path, "status", "--porcelain") == ""
    git(layered, "worktree", "remove", "--force", str(path))


def test_no_space_tells_a_full_filesystem_from_other_failures(
    layered: Path, tmp_path: Path
) -> None:
    info, commit = inspect_repo(str(layered), "HEAD")
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    error = no_space(full, str(tmp_path), info, commit, None)
    assert isinstance(error, NoSpaceError)
    assert error.errno == errno.ENOSPC
    assert no_space(OSError(errno.EACCES, "denied"), str(tmp_path), info, commit, None) is None
    other = GitError("fatal: bad object", command=["git"], returncode=128, stderr="fatal: bad")
    assert no_space(other, str(tmp_path), info, commit, None) is None
    said = GitError(
        "failed", command=["git"], returncode=128, stderr="error: No space left on device\n"
    )
    assert isinstance(no_space(said, str(tmp_path), info, commit, None), NoSpaceError)
    # git's "unable to write file" on a filesystem with room: not reported as full.
    roomy = GitError(
        "failed", command=["git"], returncode=128, stderr="error: unable to write file top.txt\n"
    )
    assert no_space(roomy, str(tmp_path), info, commit, None) is None
