"""The user's repository (``_worktrees/repository.py``) on real git repositories.

What is read (where the repository is, which commit a ref names, a checkout's git dir), what
is refused (bad refs, no repository, an unborn branch, a target that is no directory) and
what is edited: only registrations that are provably ours, never one of the user's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pytest_aiops._errors import GitError, InvalidArgumentError, OptionError
from pytest_aiops._worktrees.repository import (
    PARKED_GITDIR,
    check_target,
    git_dir_of,
    inspect_repo,
    park_registration,
    remove_registrations,
    unpark_registration,
)

from .git_helpers import MakeRepo, git
from .snapshot_helpers import repo_state
from .worktree_helpers import registrations


def test_inspect_repo_names_the_repository_and_the_commit(repo: Path) -> None:
    (repo / "pkg" / "sub").mkdir(parents=True, exist_ok=True)
    info, commit = inspect_repo(str(repo / "pkg" / "sub"), "HEAD")  # from a subdirectory
    assert info.repo_root == str(repo)
    assert info.common_dir == str(repo / ".git")
    assert info.git_dir == str(repo / ".git")
    assert info.object_format == "sha1"
    assert info.main_root == str(repo)
    assert commit == git(repo, "rev-parse", "HEAD")


def test_inspect_repo_resolves_branches_tags_and_expressions(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "-a", "-m", "annotated", "v1")  # a tag object: peeled to its commit
    (repo / "top.txt").write_text("second\n")
    git(repo, "commit", "-q", "-am", "second")
    second = git(repo, "rev-parse", "HEAD")
    workspace = str(repo)
    assert inspect_repo(workspace, "v1")[1] == first
    assert inspect_repo(workspace, "HEAD~1")[1] == first
    assert inspect_repo(workspace, "main")[1] == second
    assert inspect_repo(workspace, first[:10])[1] == first


def test_inspect_repo_follows_head_as_it_moves(repo: Path) -> None:
    """Later calls read HEAD from the ref files (loose or packed) instead of asking git:
    they must still see every new commit, a packed branch and a detached HEAD."""
    workspace = str(repo)
    assert inspect_repo(workspace, "HEAD")[1] == git(repo, "rev-parse", "HEAD")
    for round_ in range(2):
        (repo / "top.txt").write_text(f"round {round_}\n")
        git(repo, "commit", "-q", "-am", f"round {round_}")
        assert inspect_repo(workspace, "HEAD")[1] == git(repo, "rev-parse", "HEAD")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert inspect_repo(workspace, "HEAD")[1] == git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert inspect_repo(workspace, "HEAD")[1] == git(repo, "rev-parse", "HEAD")


def test_inspect_repo_from_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked))
    info, commit = inspect_repo(str(linked), "HEAD")
    assert info.repo_root == str(linked)
    assert info.common_dir == str(repo / ".git")
    assert info.git_dir == str(repo / ".git" / "worktrees" / "linked")
    assert info.main_root == str(repo)  # the main checkout keys status and gc
    assert commit == git(repo, "rev-parse", "HEAD")


def test_inspect_repo_of_a_sha256_repository(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = tmp_path / "sha256"
    repo.mkdir()
    if git(repo, "init", "-q", "--object-format=sha256", "-b", "main") != "":
        pytest.skip("git without sha256 repositories")
    (repo / "f").write_text("f")
    git(repo, "add", "f")
    git(repo, "commit", "-q", "-m", "f")
    info, commit = inspect_repo(str(repo), "HEAD")
    assert info.object_format == "sha256"
    assert len(commit) == 64
    assert commit == git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("ref", ["nosuchref", "HEAD~5", "0" * 40])
def test_inspect_repo_refuses_a_ref_that_names_no_commit(repo: Path, ref: str) -> None:
    with pytest.raises(OptionError) as raised:
        inspect_repo(str(repo), ref)
    assert str(raised.value) == (
        f'Option "baseRef" must name a commit in {repo}, not {ref!r} '
        "(git rev-parse found no such commit)."
    )


def test_inspect_repo_refuses_a_ref_that_would_be_an_option(repo: Path) -> None:
    with pytest.raises(OptionError, match=r'^Option "baseRef" must name a commit, not \'--all\''):
        inspect_repo(str(repo), "--all")


def test_inspect_repo_refuses_what_is_no_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a directory"):
        inspect_repo(str(tmp_path / "missing"), "HEAD")
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above
    with pytest.raises(GitError, match="is not inside a git repository"):
        inspect_repo(str(plain), "HEAD")


def test_inspect_repo_explains_an_unborn_head(tmp_path: Path, repo: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    git(new, "init", "-q", "-b", "trunk")
    with pytest.raises(OptionError) as raised:
        inspect_repo(str(new), "HEAD")
    assert str(raised.value) == (
        f"the repository {new} has no commits yet (HEAD is the unborn branch 'trunk'); "
        "commit once, or pass baseRef naming a commit"
    )
    git(repo, "checkout", "-q", "--orphan", "fresh")
    with pytest.raises(OptionError) as raised:
        inspect_repo(str(repo), "HEAD")
    assert str(raised.value) == (
        f"HEAD of {repo} is the branch 'fresh', which has no commits yet; "
        "commit once, or pass baseRef naming a commit"
    )


def test_check_target_takes_only_a_directory_of_the_commit(repo: Path) -> None:
    commit = git(repo, "rev-parse", "HEAD")
    check_target(str(repo), commit, "pkg", "HEAD")
    check_target(str(repo), commit, "pkg/sub", "HEAD")
    for target in ("top.txt", "missing", "pkg/sub/f.txt"):
        with pytest.raises(OptionError) as raised:
            check_target(str(repo), commit, target, "main")
        assert str(raised.value) == (
            f'Configured worktree target path "{target}" is not a directory in ref "main".'
        )


def test_git_dir_of_a_repository_a_linked_worktree_and_a_bad_gitfile(
    repo: Path, tmp_path: Path
) -> None:
    assert git_dir_of(str(repo)) == str(repo / ".git")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked))
    assert git_dir_of(str(linked)) == str(repo / ".git" / "worktrees" / "linked")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ".git").write_text("not a gitfile\n")
    with pytest.raises(GitError, match="is not a gitfile"):
        git_dir_of(str(bad))


def _add(repo: Path, path: Path) -> Path:
    """A linked worktree at ``path`` (git names its registration after the basename)."""
    git(repo, "worktree", "add", "-q", "--detach", str(path))
    return Path(git_dir_of(str(path)))


def test_remove_registrations_removes_ours_and_never_the_users(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    token = "s--0123abcd"
    _add(repo, tmp_path / "users-own")  # the user's: another name
    _add(repo, tmp_path / "elsewhere" / token)  # our token's name, checkout outside root
    ours = root / token
    _add(repo, ours)
    # git numbered the second registration of the same basename: token + digit.
    assert registrations(repo) == sorted(["users-own", token, f"{token}1"])
    (tmp_path / "elsewhere" / token / ".git").unlink()  # its checkout's gitfile gone...
    remove_registrations(str(repo / ".git"), token=token, paths=[str(ours)], root=str(root))
    # ...yet its gitdir names a place under no root of ours: kept, as is the user's own.
    assert registrations(repo) == sorted(["users-own", token])
    assert git(repo, "worktree", "list").count("\n") == 2


def test_remove_registrations_keeps_a_registration_the_user_moved(
    repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    token = "s--feedbeef"
    _add(repo, root / token)
    moved = tmp_path / "kept-by-user"
    git(repo, "worktree", "move", str(root / token), str(moved))  # a kept checkout, moved
    before = repo_state(repo)
    remove_registrations(str(repo / ".git"), token=token, paths=[str(root / token)], root=str(root))
    assert repo_state(repo) == before
    # Even named as the registration the owner recorded, it is the user's now.
    known = str(repo / ".git" / "worktrees" / token)
    remove_registrations(str(repo / ".git"), token=token, known=known, root=str(root))
    assert repo_state(repo) == before
    assert git(moved, "status", "--porcelain") == ""


def test_remove_registrations_clears_one_left_half_made(repo: Path, tmp_path: Path) -> None:
    """A SIGKILLed ``worktree add`` leaves a registration locked as "initializing", maybe
    without ``gitdir``: ``git worktree prune`` skips it; we remove it, as it is ours."""
    root = tmp_path / "root"
    token = "s--00aa11bb"
    reg = _add(repo, root / token)
    (reg / "locked").write_text("initializing\n")
    (reg / "gitdir").unlink()
    git(repo, "worktree", "prune")
    assert registrations(repo) == [token]
    remove_registrations(str(repo / ".git"), token=token, known=str(reg), root=str(root))
    assert registrations(repo) == []


def test_remove_registrations_with_a_known_registration_removes_only_it(
    repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    token = "s--12345678"
    first = _add(repo, root / token)
    second = _add(repo, root / "again" / token)  # token1: named ours too
    remove_registrations(
        str(repo / ".git"),
        token=token,
        paths=[str(root / token)],
        known=str(first),
        root=str(root),
    )
    assert registrations(repo) == [second.name]
    remove_registrations(str(repo / ".git"), token=token, known=str(second), root=str(root))
    assert registrations(repo) == [second.name]  # a known dir not named the token: untouched


def test_park_hides_a_registration_from_git_and_unpark_brings_it_back(
    repo: Path, tmp_path: Path
) -> None:
    path = tmp_path / "pool" / "s--0000aaaa"
    reg = _add(repo, path)
    park_registration(str(reg), "pytest-aiops: pooled")
    listed = git(repo, "worktree", "list", "--porcelain")
    assert str(path) not in listed
    git(repo, "worktree", "prune")  # what git gc runs: the parked registration survives
    assert (reg / PARKED_GITDIR).is_file()
    assert (reg / "locked").read_text() == "pytest-aiops: pooled\n"
    moved = tmp_path / "pool" / "s--0000bbbb"
    path.rename(moved)
    unpark_registration(str(reg), str(moved))
    assert not (reg / PARKED_GITDIR).exists()
    assert not (reg / "locked").exists()
    worktrees = re.findall(r"^worktree (.*)$", git(repo, "worktree", "list", "--porcelain"), re.M)
    assert worktrees == [str(repo), str(moved)]
    assert git(moved, "status", "--porcelain") == ""


def test_remove_registrations_takes_the_token_only_with_gits_numbering(
    repo: Path, tmp_path: Path
) -> None:
    """git names a second registration of the same basename ``<token>1``; ``<token>-b``
    is another name, never ours, even when its checkout is gone from under our root."""
    root = tmp_path / "root"
    token = "s--abcdef01"
    for name in (f"{token}-b", f"{token}x9", f"{token}7"):
        _add(repo, root / name)
        git(repo, "worktree", "lock", str(root / name))  # kept from prune below
        shutil.rmtree(root / name)  # the checkout gone, its registration left
    remove_registrations(str(repo / ".git"), token=token, root=str(root))
    assert registrations(repo) == sorted([f"{token}-b", f"{token}x9"])
