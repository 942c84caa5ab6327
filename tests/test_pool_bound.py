"""The pool of released checkouts is bounded for the whole root (RAM on /dev/shm): the least
recently released goes first; the bound is a setting in every place settings live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_aiops import OptionError
from pytest_aiops._worktrees.provider import list_worktrees, reclaim_orphans

from .git_helpers import MakeRepo, git
from .worktree_helpers import registrations
from .worktree_helpers import worktree_lease as lease
from .worktree_helpers import worktree_provider as provider


def _tokens_by_path(root: Path) -> dict[str, str]:
    return {record.path: record.token for record in list_worktrees(str(root))}


def _pooled(root: Path) -> set[str]:
    return {r.token for r in list_worktrees(str(root)) if r.state == "pooled"}


def test_the_least_recently_released_checkout_is_evicted_first(repo: Path, root: Path) -> None:
    prov = provider(root, pool_size=2)
    held = [lease(prov, repo, f"s{i}") for i in range(3)]
    tokens = _tokens_by_path(root)
    order = [tokens[str(item.hard["worktreePath"])] for item in held]
    for item in held:  # released s0, s1, s2: s0 is the least recently used
        item.release()
    assert _pooled(root) == set(order[1:])
    assert len(list_worktrees(str(root))) == 2
    # Taken again and released again, a checkout counts as used when it was last released:
    # of three released in the order again, other, third, "again" is the one evicted.
    again, other, third = (lease(prov, repo, name) for name in ("again", "other", "third"))
    tokens = _tokens_by_path(root)
    names = {
        tokens[str(item.hard["worktreePath"])]: name
        for item, name in ((again, "again"), (other, "other"), (third, "third"))
    }
    assert set(order[1:]) <= set(names)  # both pooled ones were reused
    for item in (again, other, third):
        item.release()
    assert {names[token] for token in _pooled(root)} == {"other", "third"}
    reclaim_orphans(str(root), include_pooled=True)
    assert registrations(repo) == []


def test_the_bound_is_for_the_whole_root_not_per_commit_or_isolation(
    make_repo: MakeRepo, root: Path
) -> None:
    repo = make_repo({"top.txt": "1\n", "pkg/a.txt": "a\n"})
    first = git(repo, "rev-parse", "HEAD")
    (repo / "top.txt").write_text("2\n")
    git(repo, "commit", "-qam", "second")
    prov = provider(root, pool_size=2)
    held = [
        lease(prov, repo, "a", baseRef=first),
        lease(prov, repo, "b"),
        lease(prov, repo, "c", isolation="clone"),
        lease(prov, repo, "d", targetPath="pkg"),
    ]
    for item in held:
        item.release()
    assert [r.state for r in list_worktrees(str(root))] == ["pooled", "pooled"]
    assert git(repo, "worktree", "list").count("\n") == 0  # only the user's checkout listed
    reclaim_orphans(str(root), include_pooled=True)
    assert registrations(repo) == []


def test_pool_size_zero_keeps_nothing_and_the_request_option_overrides(
    repo: Path, root: Path
) -> None:
    prov = provider(root)  # default 8
    lease(prov, repo, "a", poolSize=0).release()
    assert list_worktrees(str(root)) == []
    lease(prov, repo, "b").release()
    assert [r.state for r in list_worktrees(str(root))] == ["pooled"]
    reclaim_orphans(str(root), include_pooled=True)


@pytest.mark.parametrize("value", [-1, "3", True, 2.5])
def test_a_bad_pool_size_is_refused_in_one_line(repo: Path, root: Path, value: object) -> None:
    with pytest.raises(OptionError) as caught:
        lease(provider(root), repo, "a", poolSize=value)
    assert str(caught.value) == (
        f'Option "poolSize" must be an integer >= 0 (0 keeps no checkout for reuse), not {value!r}.'
    )
    assert caught.value.option == "poolSize"
    assert not (root / ".pytest-aiops").exists() or list_worktrees(str(root)) == []


HOLD_THREE = """
def test_three(aiops_worktree_factory):
    held = [aiops_worktree_factory.provision() for _ in range(3)]
    for worktree in held:
        aiops_worktree_factory.release(worktree)
"""


@pytest.mark.usefixtures("private_lock_dir")
@pytest.mark.parametrize(
    ("source", "expected"),
    [("cli", 1), ("env", 2), ("ini", 0), ("default", 3)],
)
def test_the_plugin_setting_bounds_the_pool(
    pytester: pytest.Pytester,
    make_repo: MakeRepo,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    source: str,
    expected: int,
) -> None:
    repo = make_repo()
    root = tmp_path / "wt"
    args = [f"--aiops-repo={repo}", f"--aiops-worktree-root={root}", "-p", "no:cacheprovider"]
    if source == "cli":
        args.append("--aiops-pool-size=1")
    elif source == "env":
        monkeypatch.setenv("PYTEST_AIOPS_POOL_SIZE", "2")
    elif source == "ini":
        pytester.makeini("[pytest]\naiops_pool_size = 0\n")
    pytester.makepyfile(test_hold=HOLD_THREE)
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=1)
    assert [r.state for r in list_worktrees(str(root))] == ["pooled"] * expected
    reclaim_orphans(str(root), include_pooled=True)
    assert registrations(repo) == []


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--aiops-pool-size=-1"],
            {},
            "--aiops-pool-size must be an integer >= 0, not '-1' (from --aiops-pool-size)",
        ),
        (
            [],
            {"PYTEST_AIOPS_POOL_SIZE": "many"},
            "--aiops-pool-size must be an integer >= 0, not 'many' "
            "(from env PYTEST_AIOPS_POOL_SIZE)",
        ),
    ],
)
def test_a_bad_pool_size_setting_is_a_usage_error(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: {message}" in result.stderr.lines


def test_status_shows_the_bound(repo: Path, root: Path, lock_dir: Path) -> None:
    lease(provider(root), repo, "a").release()
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_aiops",
            "status",
            f"--lock-dir={lock_dir}",
            f"--worktree-root={root}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "  + 1 pooled for reuse (at most 8 per root unless pytest --aiops-pool-size / "
        "poolSize says otherwise; the least recently used is deleted first); "
        "'pytest-aiops gc --pooled' frees them"
    ) in status.splitlines()
    reclaim_orphans(str(root), include_pooled=True)
