"""The worktree record's lifecycle (``_worktrees/store.py``): each state change, on real files.

Each test drives an :class:`~pytest_aiops._worktrees.store.Entry` through its named methods
in a root under ``tmp_path`` and reads the record back from disk: what the next run, another
version or ``pytest-aiops gc`` would find there. No git runs: the methods only record what
the provider did, and move the directories they name.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops._worktrees import store
from pytest_aiops._worktrees.git import boot_ticks
from pytest_aiops._worktrees.locate import RepoInfo
from pytest_aiops._worktrees.record import CheckoutRecord, PoolKey, State
from pytest_aiops._worktrees.restore import index_identity

from .worktree_record_helpers import POOLED_RECORD as PREVIOUS_POOLED

COMMIT = "a" * 40
OTHER_COMMIT = "b" * 40


def _info(tmp_path: Path) -> RepoInfo:
    repo = tmp_path / "repo"
    return RepoInfo(repo_root=str(repo), common_dir=str(repo / ".git"), object_format="sha1")


def _git_dir(tmp_path: Path, name: str = "aiops-git") -> str:
    """A stand-in for a registration dir with an index (what ``index_identity`` reads)."""
    git_dir = tmp_path / "repo" / ".git" / "worktrees" / name
    git_dir.mkdir(parents=True, exist_ok=True)
    (git_dir / "index").write_bytes(b"DIRC" + bytes(28))
    return str(git_dir)


def _new(tmp_path: Path, isolation: str = "worktree", session_id: str = "s1") -> store.Entry:
    root = store.ensure_root(str(tmp_path / "root"))
    info = _info(tmp_path)
    key = PoolKey(common_dir=info.common_dir, isolation=isolation, target_path=None, commit=COMMIT)
    return store.new_entry(root, key, info, session_id)


def _on_disk(entry: store.Entry) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(entry.record_path).read_text(encoding="utf-8"))
    # What is on disk is what the entry holds: no change is kept in memory only.
    assert CheckoutRecord.from_json(data) == entry.record
    return data


def _states(root: str) -> list[str]:
    return [record.state for record in store.list_worktrees(root)]


def _live(tmp_path: Path, isolation: str = "worktree") -> store.Entry:
    """A fresh checkout handed to its session, as ``_Checkout._create`` makes it."""
    entry = _new(tmp_path, isolation)
    build = entry.make_build_dir()
    Path(build, "file.txt").write_text("content\n")
    path = entry.claim_name("s1")
    entry.move_built_to(path)
    git_dir = _git_dir(tmp_path) if isolation == "worktree" else os.path.join(path, ".git")
    os.makedirs(git_dir, exist_ok=True)
    entry.mark_created(git_dir=git_dir, filled_at=100.0)
    return entry


def _pooled(tmp_path: Path, isolation: str = "worktree") -> tuple[str, str]:
    """(root, token) of a checkout released to the pool, its lock free."""
    entry = _live(tmp_path, isolation)
    entry.move_to_pool(index_id=(1, 2), restored_at=200.0, checked_out=False)
    entry.close()
    return entry.root, entry.token


def _take(root: str, token: str) -> store.Entry:
    entry = store.take_entry(root, token)
    assert entry is not None
    return entry


def test_a_new_entry_is_recorded_as_creating_before_anything_exists(tmp_path: Path) -> None:
    entry = _new(tmp_path)
    data = _on_disk(entry)
    assert data == {
        "token": entry.token,
        "state": "creating",
        "sessionId": "s1",
        "repoRoot": str(tmp_path / "repo"),
        "commonDir": str(tmp_path / "repo" / ".git"),
        "objectFormat": "sha1",
        "isolation": "worktree",
        "commit": COMMIT,
        "createdAt": data["createdAt"],
        "pid": os.getpid(),
        "host": data["host"],
        "settled": False,
        "stamped": False,
    }
    assert isinstance(data["createdAt"], float)
    assert data["host"]
    assert entry.trusted
    assert not os.path.exists(entry.build_dir)
    assert _states(entry.root) == ["live"]  # its lock is held: nobody else touches it


def test_a_fresh_checkout_goes_from_creating_to_live(tmp_path: Path) -> None:
    entry = _new(tmp_path)
    build = entry.make_build_dir()
    st = os.lstat(build)
    data = _on_disk(entry)
    assert (data["state"], data["path"], data["ino"], data["dev"]) == (
        "creating",
        build,
        st.st_ino,
        st.st_dev,
    )

    before = boot_ticks()
    entry.git_started(4242)
    pid, started = _on_disk(entry)["gitSession"]
    assert pid == 4242
    assert before <= started <= boot_ticks()

    path = entry.claim_name("s1")
    assert path == os.path.join(entry.root, "s1")
    assert os.listdir(path) == []
    assert (_on_disk(entry)["claim"], _on_disk(entry)["path"]) == (path, build)

    Path(build, "file.txt").write_text("content\n")
    entry.move_built_to(path)
    assert not os.path.exists(build)
    assert Path(path, "file.txt").read_text() == "content\n"
    assert os.lstat(path).st_ino == st.st_ino  # the recorded inode proves it ours
    assert entry.directory_is_ours(path)
    data = _on_disk(entry)
    assert (data["state"], data["path"], data["claim"]) == ("creating", path, path)

    git_dir = _git_dir(tmp_path)
    entry.mark_created(git_dir=git_dir, filled_at=100.0)
    data = _on_disk(entry)
    assert "claim" not in data
    assert (data["state"], data["gitDir"], data["filledAt"], data["settled"]) == (
        "live",
        git_dir,
        100.0,
        False,
    )
    assert data["handedAt"] > 100.0
    assert tuple(data["indexId"]) == index_identity(git_dir) != ()
    assert data["pid"] == os.getpid()


def test_a_claim_never_reuses_a_name_that_exists(tmp_path: Path) -> None:
    entry = _new(tmp_path)
    os.mkdir(os.path.join(entry.root, "s1"))  # another lease of the same session id
    path = entry.claim_name("s1")
    assert path == os.path.join(entry.root, "s1-2")
    assert _on_disk(entry)["claim"] == path


def test_a_released_checkout_is_moved_to_the_pool_and_recorded_pooled(tmp_path: Path) -> None:
    entry = _live(tmp_path)
    path = str(entry.record.path)
    entry.move_to_pool(index_id=(7, 8), restored_at=300.0, checked_out=True)
    data = _on_disk(entry)
    assert not os.path.exists(path)  # R/<name> is free for the next session at once
    assert Path(entry.pooled_dir, "file.txt").read_text() == "content\n"
    assert (data["state"], data["path"], data["indexId"], data["stamped"]) == (
        "pooled",
        entry.pooled_dir,
        [7, 8],
        False,
    )
    # The index changed: git wrote the files when the restore began; a checkout settled it.
    assert (data["filledAt"], data["settled"]) == (300.0, True)
    assert data["releasedAt"] >= 300.0
    entry.close()
    assert _states(entry.root) == ["pooled"]


def test_a_restore_that_rewrote_nothing_keeps_when_the_files_were_written(
    tmp_path: Path,
) -> None:
    entry = _live(tmp_path)
    index_id = entry.record.index_id
    assert index_id is not None
    entry.move_to_pool(index_id=index_id, restored_at=300.0, checked_out=False)
    data = _on_disk(entry)
    assert (data["filledAt"], data["settled"]) == (100.0, False)


def test_a_settled_index_stays_settled_across_leases(tmp_path: Path) -> None:
    """Once a restore's checkout rewrote the index in a later second, no lease unsettles it
    (only a reuse that switches commits or lays a working state on it does)."""
    entry = _live(tmp_path)
    entry.move_to_pool(index_id=(7, 8), restored_at=300.0, checked_out=True)
    entry.close()
    entry = _take(entry.root, entry.token)
    entry.mark_reused(_info(tmp_path), "s2")
    entry.move_pooled_to(entry.claim_name("s2"))
    entry.move_to_pool(index_id=(7, 8), restored_at=400.0, checked_out=False)
    data = _on_disk(entry)
    assert (data["settled"], data["filledAt"]) == (True, 300.0)


def test_the_pooled_record_has_the_keys_and_types_the_previous_version_wrote(
    tmp_path: Path,
) -> None:
    """Old and new code read each other's records: same keys, same JSON types."""
    entry = _new(tmp_path)
    build = entry.make_build_dir()
    entry.git_started(4242)
    path = entry.claim_name("s1")
    entry.move_built_to(path)
    entry.mark_created(git_dir=_git_dir(tmp_path), filled_at=100.0)
    entry.move_to_pool(index_id=(1, 2), restored_at=200.0, checked_out=True)
    assert build != path
    data = _on_disk(entry)
    previous = {key: value for key, value in PREVIOUS_POOLED.items() if value is not None}
    assert sorted(data) == sorted(previous)
    assert {key: type(value) for key, value in data.items()} == {
        key: type(value) for key, value in previous.items()
    }


def test_a_pooled_checkout_is_reused_switched_and_kept(tmp_path: Path) -> None:
    root, token = _pooled(tmp_path)
    entry = _take(root, token)
    assert not entry.trusted
    first = _on_disk(entry)

    other = str(tmp_path / "other")
    info = RepoInfo(repo_root=other, common_dir="/ignored", object_format="sha256")
    entry.mark_reused(info, "s2")
    data = _on_disk(entry)
    assert entry.trusted
    assert os.path.isfile(entry.stamp)
    assert (data["state"], data["stamped"], data["sessionId"], data["pid"]) == (
        "live",
        True,
        "s2",
        os.getpid(),
    )
    assert (data["repoRoot"], data["objectFormat"]) == (other, "sha256")
    assert data["commonDir"] == first["commonDir"]  # the pool key is the checkout's
    assert data["createdAt"] >= first["createdAt"]
    assert data["handedAt"] >= first["handedAt"]

    path = entry.claim_name("s2")
    entry.move_pooled_to(path)
    data = _on_disk(entry)
    assert not os.path.exists(entry.pooled_dir)
    assert Path(path, "file.txt").read_text() == "content\n"
    assert (data["path"], data["gitDir"], "claim" in data) == (path, first["gitDir"], False)

    entry.mark_switched(OTHER_COMMIT)
    data = _on_disk(entry)
    assert (data["commit"], data["stamped"], data["settled"]) == (OTHER_COMMIT, False, False)
    assert data["filledAt"] == data["handedAt"] >= first["releasedAt"]
    assert tuple(data["indexId"]) == index_identity(first["gitDir"])

    entry.mark_working_state()
    data = _on_disk(entry)
    assert "indexId" not in data  # the next restore runs a full checkout
    assert data["filledAt"] == data["handedAt"]
    assert data["settled"] is False

    entry.keep()
    data = json.loads(Path(entry.record_path).read_text(encoding="utf-8"))
    assert (data["state"], data["path"]) == ("kept", path)
    assert data["keptAt"] >= data["handedAt"]
    assert _states(root) == ["kept"]  # the lock is free: kept, not live, not orphaned
    assert store.take_entry(root, token) is not None


def test_a_clones_git_dir_moves_with_it(tmp_path: Path) -> None:
    entry = _live(tmp_path, "clone")
    path = str(entry.record.path)
    assert entry.record.git_dir == os.path.join(path, ".git")
    entry.move_to_pool(index_id=(), restored_at=200.0, checked_out=False)
    assert _on_disk(entry)["gitDir"] == os.path.join(entry.pooled_dir, ".git")
    entry.close()
    entry = _take(entry.root, entry.token)
    entry.mark_reused(_info(tmp_path), "s2")
    path = entry.claim_name("s2")
    entry.move_pooled_to(path)
    assert _on_disk(entry)["gitDir"] == os.path.join(path, ".git")
    assert os.path.isdir(os.path.join(path, ".git"))


def test_a_reused_record_keeps_the_keys_another_version_added(tmp_path: Path) -> None:
    root, token = _pooled(tmp_path)
    record_path = Path(root, ".pytest-aiops", f"{token}.json")
    data = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**data, "futureKey": {"a": [1]}}))
    entry = _take(root, token)
    entry.mark_reused(_info(tmp_path), "s2")
    entry.move_pooled_to(entry.claim_name("s2"))
    entry.keep()
    assert json.loads(record_path.read_text())["futureKey"] == {"a": [1]}


#: Each lifecycle method, and the states it may start from (the store docstring's table).
METHODS: dict[str, tuple[set[str], Callable[[store.Entry, Path], object]]] = {
    "make_build_dir": ({"creating"}, lambda e, _: e.make_build_dir()),
    "git_started": ({"creating", "live"}, lambda e, _: e.git_started(4242)),
    "claim_name": ({"creating", "live"}, lambda e, _: e.claim_name("s9")),
    "move_built_to": ({"creating"}, lambda e, _: e.move_built_to(os.path.join(e.root, "s9"))),
    "mark_created": (
        {"creating"},
        lambda e, tmp: e.mark_created(git_dir=str(tmp / "git"), filled_at=1.0),
    ),
    "mark_reused": ({"pooled"}, lambda e, tmp: e.mark_reused(_info(tmp), "s9")),
    "move_pooled_to": ({"live"}, lambda e, _: e.move_pooled_to(os.path.join(e.root, "s9"))),
    "mark_switched": ({"live"}, lambda e, _: e.mark_switched(OTHER_COMMIT)),
    "mark_working_state": ({"live"}, lambda e, _: e.mark_working_state()),
    "move_to_pool": (
        {"live"},
        lambda e, _: e.move_to_pool(index_id=(), restored_at=1.0, checked_out=False),
    ),
    "keep": ({"live"}, lambda e, _: e.keep()),
}

#: The states a record on disk may be in; "restoring" stands for a newer version's state.
STATES = ("creating", "live", "pooled", "kept", "restoring")


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every path under ``path`` with a file's content (what a refused change must not touch)."""
    found: dict[str, bytes | None] = {}
    for directory, dirs, files in os.walk(path):
        for name in dirs:
            found[os.path.join(directory, name)] = None
        for name in files:
            found[os.path.join(directory, name)] = Path(directory, name).read_bytes()
    return found


@pytest.mark.parametrize(
    ("method", "state"),
    [(m, s) for m, (starts, _) in METHODS.items() for s in STATES if s not in starts],
)
def test_a_change_the_lifecycle_does_not_allow_changes_nothing(
    tmp_path: Path, method: str, state: str
) -> None:
    root, token = _pooled(tmp_path)
    record_path = Path(root, ".pytest-aiops", f"{token}.json")
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "state": state}))
    entry = _take(root, token)
    assert entry.record.state == (None if state == "restoring" else State(state))
    before = _tree(tmp_path)
    found = "in no known state" if state == "restoring" else repr(state)
    with pytest.raises(AssertionError, match=f"{token}.json' is {found}, not '"):
        METHODS[method][1](entry, tmp_path)
    assert _tree(tmp_path) == before
    assert entry.record == CheckoutRecord.from_json(json.loads(record_path.read_text()))


def test_every_change_of_a_record_is_in_the_table_and_tested() -> None:
    """The methods that write a record are the ones the docstring's table lists and the
    refusal test covers: a new state change cannot bypass either."""
    tree = ast.parse(Path(store.__file__).read_text(encoding="utf-8"))
    [entry] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Entry"]
    writers = {
        method.name
        for method in entry.body
        if isinstance(method, ast.FunctionDef)
        and method.name != "_write"
        and any(
            isinstance(node, ast.Attribute) and node.attr == "_write" for node in ast.walk(method)
        )
    }
    assert writers == set(METHODS)
    table = (store.__doc__ or "").split("what happened", 1)[1].split("A record leaves", 1)[0]
    listed = {word.strip(",") for word in table.split()}
    assert set(METHODS) | {"new_entry"} <= listed
