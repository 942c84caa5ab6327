"""The Core API example (README and docs/api.md) runs as written, in a fresh repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import child_env, git

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@pytest.mark.parametrize("page", [README, ROOT / "docs" / "api.md"], ids=lambda p: p.name)
def test_core_api_example_runs(repo: Path, lock_dir: Path, page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    heading = re.search(r"^#+ Core API$", text, re.MULTILINE)
    assert heading is not None
    match = re.search(r"```python\n(.*?)```", text[heading.end() :], re.DOTALL)
    assert match is not None
    env = child_env(
        {
            "PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent),
            "PYTEST_AIOPS_LOCK_DIR": str(lock_dir),
            "HOME": str(repo.parent),
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", match.group(1)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    port = re.search(r"serving on (\d+)", result.stdout)
    assert port is not None
    assert "- Primary port: " + port.group(1) in result.stdout
    assert result.stdout.rstrip().endswith("Fix the failing test.")
    # Released: the user's repository has no extra worktree left.
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "status", "--porcelain") == ""
