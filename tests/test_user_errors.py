"""One line for what users really get wrong: a marker where it does nothing, a repository with
no commit yet, a repository another user owns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_aiops import GitError, OptionError

from .git_helpers import MakeRepo, git
from .worktree_helpers import worktree_lease as lease
from .worktree_helpers import worktree_provider as provider

MISPLACED = """
import pytest

@pytest.mark.aiops(base_ref="HEAD~1")
def test_function(git_worktree):
    pass

@pytest.mark.aiops(base_ref="HEAD~1")
class TestClass:
    def test_method(self, git_worktree):
        pass

    class TestInner:  # under the marked class: refused too (the class is looked at once)
        @pytest.mark.parametrize("n", [1, 2])
        def test_inner(self, git_worktree, n):
            pass

def test_unmarked(git_worktree):
    pass
"""

PLACED = """
import pytest

pytestmark = pytest.mark.aiops(base_ref="HEAD~1")

def test_module_level(git_worktree):
    assert (git_worktree.path / "top.txt").read_text() == "first\\n"
"""


def _two_commits(make_repo: MakeRepo) -> Path:
    repo = make_repo({"top.txt": "first\n"})
    (repo / "top.txt").write_text("second\n")
    git(repo, "commit", "-qam", "second")
    return repo


def _misplaced_line(where: str) -> str:
    return (
        f"pytest.mark.aiops on {where} is not applied: git_worktree is one checkout per module "
        "and takes its options from the module; set them there with "
        "pytestmark = pytest.mark.aiops(base_ref=...), or use "
        "aiops_worktree_factory.worktree(base_ref=...) in the test"
    )


@pytest.mark.usefixtures("private_lock_dir")
def test_a_marker_on_a_function_or_class_is_refused_in_one_line(
    pytester: pytest.Pytester, make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = _two_commits(make_repo)
    pytester.makepyfile(test_misplaced=MISPLACED)
    result = pytester.runpytest_inprocess(
        f"--aiops-repo={repo}", f"--aiops-worktree-root={tmp_path / 'wt'}", "-rE"
    )
    result.assert_outcomes(passed=1, errors=4)
    for where in ("test test_function", "class TestClass"):
        assert _misplaced_line(where) in result.stdout.lines
    # The error sections' own lines (the short summary repeats them, cut to the terminal's
    # width unless $CI is set, so they are not counted).
    assert result.stdout.lines.count(_misplaced_line("class TestClass")) == 3


@pytest.mark.usefixtures("private_lock_dir")
def test_a_module_level_marker_is_honoured(
    pytester: pytest.Pytester, make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = _two_commits(make_repo)
    pytester.makepyfile(test_placed=PLACED)
    result = pytester.runpytest_inprocess(
        f"--aiops-repo={repo}", f"--aiops-worktree-root={tmp_path / 'wt'}"
    )
    result.assert_outcomes(passed=1)


def test_an_unborn_head_says_the_repository_has_no_commits(tmp_path: Path) -> None:
    repo = tmp_path / "new"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    with pytest.raises(OptionError) as caught:
        lease(provider(tmp_path / "wt"), repo)
    assert str(caught.value) == (
        f"the repository {repo} has no commits yet (HEAD is the unborn branch 'main'); "
        "commit once, or pass baseRef naming a commit"
    )
    assert caught.value.option == "baseRef"
    assert not (tmp_path / "wt").exists()


def test_an_orphan_branch_says_which_branch_has_no_commits(repo: Path, tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "--orphan", "fresh")
    with pytest.raises(OptionError) as caught:
        lease(provider(tmp_path / "wt"), repo)
    assert str(caught.value) == (
        f"HEAD of {repo} is the branch 'fresh', which has no commits yet; "
        "commit once, or pass baseRef naming a commit"
    )


@pytest.mark.usefixtures("private_lock_dir")
def test_the_plugin_says_so_in_one_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    repo = tmp_path / "new"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    pytester.makepyfile("def test_wt(git_worktree): pass")
    result = pytester.runpytest_inprocess(
        f"--aiops-repo={repo}", f"--aiops-worktree-root={tmp_path / 'wt'}", "-rE"
    )
    result.assert_outcomes(errors=1)
    assert (
        f"git_worktree: the repository {repo} has no commits yet (HEAD is the unborn branch "
        "'main'); commit once, or pass baseRef naming a commit; set --aiops-base-ref (ini "
        "aiops_base_ref) or the module's pytest.mark.aiops(base_ref=...) to an existing commit"
    ) in result.stdout.lines


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_dubious_ownership_is_one_line_naming_safe_directory(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No global or system config may already trust the directory (safe.directory).
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    repo = make_repo()
    for dirpath, dirnames, filenames in os.walk(repo):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), 12345, 12345)
    os.lchown(repo, 12345, 12345)
    with pytest.raises(GitError) as caught:
        lease(provider(tmp_path / "wt"), repo)
    assert str(caught.value) == (
        f"git refuses to work in {repo}: another user owns it (git's 'dubious ownership' "
        "check, which keeps a repository someone else planted from running its hooks and "
        f"config); if you trust it, run: git config --global --add safe.directory {repo}"
    )
