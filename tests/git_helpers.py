"""git as a user runs it in the suite's repositories (with an identity), and a fake git."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
}

MakeRepo = Callable[..., Path]


def run(repo: Path | str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """git in ``repo`` as a user would (with an identity); returns the completed process."""
    env = {**os.environ, **GIT_IDENTITY}
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result


def git(repo: Path | str, *args: str) -> str:
    """Run git in ``repo`` as a user would (with an identity); return stripped stdout."""
    return run(repo, *args).stdout.strip()


def record_git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a fake ``git`` first on PATH that records its arguments and fails.

    Returns the file it appends to: it never exists if no git command ran.
    """
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "git-calls"
    fake = bin_dir / "git"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls
