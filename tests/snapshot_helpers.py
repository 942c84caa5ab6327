"""Snapshots of a repository or a checkout, compared before and after to prove nothing changed."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from .git_helpers import run


def tree_state(path: Path | str, *, skip_git: bool = True) -> dict[str, Any]:
    """Every entry under ``path``: type, permission bits and content (symlinks not followed)."""
    root = str(path)
    found: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        names = dirnames + filenames
        if skip_git and dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".git"]
            names = [n for n in names if n != ".git"]
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", oct(mode))
                if name in dirnames and not os.access(full, os.R_OK | os.X_OK):
                    found[rel] = ("dir-unreadable", oct(mode))
            else:
                with open(full, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()[:16]
                found[rel] = ("file", oct(mode), digest)
    return found


def _file(path: Path) -> str:
    try:
        return path.read_bytes().hex()
    except FileNotFoundError:
        return "<missing>"


def repo_state(repo: Path) -> dict[str, Any]:
    """Everything of the user's repository a provider must never change."""
    git_dir = repo / ".git"
    return {
        "HEAD": _file(git_dir / "HEAD"),
        "refs": run(repo, "for-each-ref", "--format=%(refname) %(objectname)").stdout,
        "stash": run(repo, "stash", "list").stdout,
        "config": _file(git_dir / "config"),
        "index": _file(git_dir / "index"),
        "packed-refs": _file(git_dir / "packed-refs"),
        "hooks": sorted(os.listdir(git_dir / "hooks")) if (git_dir / "hooks").is_dir() else [],
        "status": run(repo, "status", "--porcelain", "--ignored").stdout,
        "files": tree_state(repo),
        "worktrees": run(repo, "worktree", "list", "--porcelain").stdout,
    }


def git_dir_listing(git_dir: Path) -> list[str]:
    """Names under a checkout's git dir (contents of the index and objects left out)."""
    names = []
    for dirpath, dirnames, filenames in os.walk(git_dir):
        for name in dirnames + filenames:
            names.append(os.path.relpath(os.path.join(dirpath, name), git_dir))
    return sorted(names)


def checkout_state(path: Path | str) -> dict[str, Any]:
    """What a test could observe of a checkout, independent of where it lives."""
    path = Path(path)
    git_dir = Path(run(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    return {
        "files": tree_state(path),
        "status": run(path, "status", "--porcelain", "--ignored", "--untracked-files=all").stdout,
        "HEAD": run(path, "rev-parse", "HEAD").stdout,
        "detached": run(path, "symbolic-ref", "-q", "HEAD", check=False).returncode,
        "git_dir": git_dir_listing(git_dir),
        "reflog_lines": len(run(path, "reflog").stdout.splitlines()),
        "stash": run(path, "stash", "list").stdout,
        "sparse": _file(git_dir / "info" / "sparse-checkout"),
    }


def clone_state(path: Path | str) -> dict[str, Any]:
    """The repository-level state of a clone (its own refs, tags, config, hooks)."""
    path = Path(path)
    return {
        "refs": run(path, "for-each-ref", "--format=%(refname)").stdout,
        "config": _file(path / ".git" / "config"),
        "objects": git_dir_listing(path / ".git" / "objects"),
    }
