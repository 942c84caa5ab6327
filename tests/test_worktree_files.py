"""Reading, writing and deleting a checkout's files (``_worktrees/files.py``) on real trees.

Deleting is the dangerous part: a test leaves read-only files, mode-000 directories and
symlinks pointing anywhere, and a deletion must neither fail on them nor follow them out of
the tree it was asked to delete. Each test builds such a tree in ``tmp_path`` beside an
``outside`` directory that must come through untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_aiops._worktrees.files import (
    empty_directory,
    read_bytes,
    read_text,
    remove_inside,
    remove_tree,
    write_text,
)

from .snapshot_helpers import tree_state


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory of the user's that symlinks in the doomed trees point at."""
    path = tmp_path / "outside"
    (path / "sub").mkdir(parents=True)
    (path / "keep.txt").write_text("keep\n")
    (path / "sub" / "deep.txt").write_text("deep\n")
    return path


def _messy_tree(path: Path, outside: Path) -> Path:
    """What a test might leave: read-only files and dirs, a mode-000 dir, outward symlinks."""
    (path / "a" / "b").mkdir(parents=True)
    (path / "a" / "b" / "f.txt").write_text("f")
    (path / "a" / "b" / "f.txt").chmod(0o400)
    (path / "a" / "b").chmod(0o500)
    closed = path / "closed"
    (closed / "inner").mkdir(parents=True)
    (closed / "inner" / "secret").write_text("s")
    closed.chmod(0o000)
    (path / "link-dir").symlink_to(outside)
    (path / "link-file").symlink_to(outside / "keep.txt")
    (path / "dangling").symlink_to(path / "nowhere")
    (path / "a" / "up").symlink_to("../../outside")  # relative, outward
    os.mkfifo(path / "fifo")
    return path


def test_read_text_and_bytes_of_missing_files_are_empty(tmp_path: Path) -> None:
    assert read_text(str(tmp_path / "missing")) == ""
    assert read_bytes(str(tmp_path / "missing")) == b""


def test_read_text_reads_at_most_4_kib(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_text("x" * 10000)
    assert read_text(str(path)) == "x" * 4096
    assert read_bytes(str(path)) == b"x" * 10000


def test_write_text_creates_the_directory_and_round_trips_a_non_utf8_path(
    tmp_path: Path,
) -> None:
    name = os.fsdecode(b"caf\xe9")  # not UTF-8: a surrogate-escaped str, as os.fsdecode gives
    target = tmp_path / "new" / "dir" / "gitdir"
    write_text(str(target), str(tmp_path / name) + "\n")
    assert target.read_bytes() == os.fsencode(str(tmp_path / name)) + b"\n"
    assert read_text(str(target)) == str(tmp_path / name) + "\n"


@pytest.mark.parametrize("fast", [False, True], ids=["rmtree", "fast"])
def test_remove_tree_deletes_everything_and_follows_no_symlink(
    tmp_path: Path, outside: Path, fast: bool
) -> None:
    tree = _messy_tree(tmp_path / "tree", outside)
    before = tree_state(outside)
    remove_tree(str(tree), fast=fast)
    assert not os.path.lexists(tree)
    assert tree_state(outside) == before


def test_remove_tree_of_a_missing_path_a_file_and_a_symlink(tmp_path: Path, outside: Path) -> None:
    remove_tree(str(tmp_path / "missing"))  # nothing to do, no error
    plain = tmp_path / "plain.txt"
    plain.write_text("p")
    plain.chmod(0o400)
    remove_tree(str(plain))
    assert not plain.exists()
    link = tmp_path / "link"
    link.symlink_to(outside)
    before = tree_state(outside)
    remove_tree(str(link), fast=True)  # the link goes, not what it points at
    assert not os.path.lexists(link)
    assert tree_state(outside) == before


def test_empty_directory_keeps_the_directory(tmp_path: Path, outside: Path) -> None:
    tree = _messy_tree(tmp_path / "tree", outside)
    tree.chmod(0o755)
    before = tree_state(outside)
    empty_directory(str(tree))
    assert tree.is_dir()
    assert os.listdir(tree) == []
    assert tree_state(outside) == before


def test_remove_inside_deletes_the_named_file(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "sub" / "f.txt").write_text("f")
    (root / "pkg" / "g.txt").write_text("g")
    remove_inside(str(root), "pkg/sub/f.txt")
    assert sorted(os.listdir(root / "pkg")) == ["g.txt", "sub"]
    assert os.listdir(root / "pkg" / "sub") == []
    remove_inside(str(root), "pkg/sub")  # a directory named last goes whole
    assert os.listdir(root / "pkg") == ["g.txt"]
    remove_inside(str(root), "pkg/missing/x.txt")  # nothing there: nothing done


def test_remove_inside_stops_at_a_symlinked_directory(tmp_path: Path, outside: Path) -> None:
    """A tracked ``pkg/`` replaced by a symlink outward: git lists ``pkg/sub/deep.txt`` as
    changed, and the link is what goes, never the file it leads to."""
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "pkg").symlink_to(outside)
    (root / "file").write_text("a file, not a directory")
    before = tree_state(outside)
    remove_inside(str(root), "pkg/sub/deep.txt")
    assert not os.path.lexists(root / "pkg")
    assert tree_state(outside) == before
    remove_inside(str(root), "file/under/it")  # a file on the way: the file goes
    assert os.listdir(root) == []


@pytest.mark.parametrize("rel", ["", "/", "../outside/keep.txt", "a/../../outside/keep.txt", "."])
def test_remove_inside_refuses_paths_that_leave_the_root(
    tmp_path: Path, outside: Path, rel: str
) -> None:
    root = tmp_path / "checkout"
    (root / "a").mkdir(parents=True)
    before = (tree_state(outside), tree_state(root))
    remove_inside(str(root), rel)
    assert (tree_state(outside), tree_state(root)) == before
