"""The typed checkout record: the on-disk JSON is read and written only at its edge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_aiops._errors import InvalidArgumentError
from pytest_aiops._worktrees.record import CheckoutRecord, PoolKey, State
from pytest_aiops._worktrees.restore import RestorePlan, Sweep
from pytest_aiops._worktrees.roots import find_repository

from .worktree_record_helpers import POOLED_RECORD as _POOLED


def test_a_record_of_the_previous_version_round_trips() -> None:
    record = CheckoutRecord.from_json({**_POOLED, "futureKey": [1]})
    assert record.state is State.POOLED
    assert record.git_session == (4242, 777)
    assert record.index_id == (123, 456)
    # None is written as absent (readers take both as unset); unknown keys survive.
    written = {k: v for k, v in _POOLED.items() if v is not None}
    assert record.to_json() == {**written, "futureKey": [1]}
    assert CheckoutRecord.from_json(record.to_json()) == record


def test_values_of_the_wrong_type_are_dropped_not_trusted() -> None:
    record = CheckoutRecord.from_json(
        {"pid": "7", "ino": True, "state": "weird", "gitSession": [4242, None], "path": 5}
    )
    assert (record.pid, record.ino, record.state, record.git_session) == (0, None, None, None)
    assert record.path is None
    assert record.raw["path"] == 5  # still there to be named in a warning


def test_the_pool_key_matches_with_or_without_the_commit() -> None:
    record = CheckoutRecord.from_json(_POOLED)
    key = PoolKey(common_dir="/r/.git", isolation="worktree", target_path=None, commit="b" * 40)
    assert record.matches(key, commit=False)
    assert not record.matches(key, commit=True)


@pytest.mark.parametrize(
    ("changes", "sweep", "checkout"),
    [
        ({"stamped": True}, Sweep.SINCE_STAMP, False),
        ({}, Sweep.GIT, False),  # lease began in the second git wrote files
        ({"handedAt": 102.0}, Sweep.GIT_DIRECTORIES, False),
        ({"settled": False, "stamped": True}, Sweep.GIT, True),  # settle: a full checkout
    ],
)
def test_the_restore_plan_follows_the_lease(
    changes: dict[str, object], sweep: Sweep, checkout: bool
) -> None:
    record = CheckoutRecord.from_json({**_POOLED, **changes})
    plan = record.restore_plan(stamp="/s", tree_cache="/t", now=300.0)
    assert (plan.sweep, plan.checkout, plan.index_id) == (sweep, checkout, (123, 456))


def test_a_stamp_sweep_needs_its_stamp() -> None:
    with pytest.raises(InvalidArgumentError, match="needs a stamp and a tree cache"):
        RestorePlan(commit="a" * 40, target=None, sweep=Sweep.SINCE_STAMP)


def test_find_repository_walks_up_to_a_git_dir_or_gitfile(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / ".git").write_text("gitdir: /elsewhere\n")
    assert find_repository(str(tmp_path / "repo" / "a" / "b")) == str(tmp_path / "repo")
    assert find_repository(str(tmp_path / "linked")) == str(tmp_path / "linked")
    assert find_repository("/") is None or Path("/.git").exists()


def test_a_record_with_odd_values_is_listed_not_fatal(tmp_path: Path) -> None:
    """A record's values are claims: the wrong type is ignored (it used to raise ValueError)."""
    from pytest_aiops._worktrees import store

    root = store.ensure_root(str(tmp_path / "root"))
    token = "aiops-00000000000000bb"
    control = Path(root) / ".pytest-aiops"
    (control / f"{token}.lock").write_text("")
    (control / f"{token}.json").write_text(json.dumps({"pid": "x", "createdAt": "y"}))
    [record] = store.list_worktrees(root)
    assert (record.state, record.pid, record.created_at) == ("orphaned", 0, 0.0)
