"""A repository holding every kind of working state, and a byte-level fingerprint of it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .git_helpers import git

#: ``git status --porcelain --untracked-files=all`` of :func:`dirty_repo` (test module aside).
EXPECTED_STATUS = [" D gone.txt", " M a.txt", "A  staged.txt", "AM staged_then_edited.txt"]
#: An untracked, not ignored file of :func:`dirty_repo`.
UNTRACKED = "notes/untracked.txt"


def dirty_repo(repo: Path) -> str:
    """Make ``repo`` (an empty directory) a repository with one commit and, on top of it,
    every kind of working state. Returns the commit.

    Unstaged edit (``a.txt``), staged new file (``staged.txt``), a staged file edited again
    (``staged_then_edited.txt``), a deleted file (``gone.txt``), an untracked file
    (:data:`UNTRACKED`), an ignored file named by the include list (``.env``) and one that is
    not (``debug.log``), plus an ignored build output directory (``build/ext.so``).
    """
    git(repo, "init", "-q", "-b", "main")
    files = {
        "a.txt": "a1\n",
        "gone.txt": "gone\n",
        "pkg/mod.py": "VALUE = 1\n",
        ".gitignore": ".env\n*.log\nbuild/\n__pycache__/\n",
    }
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    (repo / "a.txt").write_text("a2 unstaged\n")
    (repo / "staged.txt").write_text("staged\n")
    (repo / "staged_then_edited.txt").write_text("first\n")
    git(repo, "add", "staged.txt", "staged_then_edited.txt")
    (repo / "staged_then_edited.txt").write_text("second\n")
    (repo / "gone.txt").unlink()
    (repo / UNTRACKED).parent.mkdir()
    (repo / UNTRACKED).write_text("untracked\n")
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "debug.log").write_text("log\n")
    (repo / "build").mkdir()
    (repo / "build" / "ext.so").write_bytes(b"\x7fELF")
    return git(repo, "rev-parse", "HEAD")


def fingerprint(repo: Path) -> dict[str, tuple[str, ...]]:
    """Every entry under ``repo`` (its ``.git`` included) with type, mode and content hash.

    Only ``.git/worktrees/`` is left out: the registrations of linked worktrees, which a
    checkout of isolation ``worktree`` documents (docs/how-it-works.md). Computed without
    running git, which would refresh the index.
    """
    found: dict[str, tuple[str, ...]] = {}
    skip = os.path.join(str(repo), ".git", "worktrees")
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != skip]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, repo)
            st = os.lstat(full)
            mode = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", mode)
            else:
                digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                found[rel] = ("file", mode, digest, str(st.st_mtime_ns))
    return found
