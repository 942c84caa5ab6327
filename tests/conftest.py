"""Shared fixtures for pytest-aiops's own tests: real git repositories and lock dirs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
}


def git(repo: Path | str, *args: str) -> str:
    """Run git in ``repo`` as a user would (with an identity); return stripped stdout."""
    env = {**os.environ, **GIT_IDENTITY}
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


MakeRepo = Callable[..., Path]


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """Factory: a real git repository with ``files`` committed on branch ``main``."""
    counter = iter(range(1000))

    def make(files: Mapping[str, str] | None = None, name: str | None = None) -> Path:
        repo = tmp_path / (name or f"repo{next(counter)}")
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        contents = files if files is not None else {"top.txt": "top\n", "pkg/sub/f.txt": "f\n"}
        for rel, text in contents.items():
            path = repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "initial", "--allow-empty")
        return repo

    return make


@pytest.fixture
def repo(make_repo: MakeRepo) -> Path:
    """A repository holding ``top.txt`` and ``pkg/sub/f.txt`` (as the reference vectors)."""
    return make_repo()


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """A private lock directory, so tests never contend with the machine-wide one."""
    path = tmp_path / "locks"
    path.mkdir()
    return path
