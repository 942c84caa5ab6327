"""What the end-of-run reclaim of orphaned worktrees costs a pytest run, as ratios in one run.

Every run of the plugin ends by reclaiming its repository's orphans (``_worktrees/roots.py``).
Each case is timed in a fresh Python process that has already imported pytest and the plugin
(as a run's ``pytest_unconfigure`` has), and compared with the baseline: the wall time of a
whole one-test ``pytest -p no:aiops`` run in the same repository.

1. ``no repository``: the run is not in a git repository (the walk up for ``.git``).
2. ``N pooled``: the repository's root holds N pooled checkouts and nothing else (the usual
   state after runs): the cheap filter reads N records and imports nothing more.
3. ``1 orphan``: a run died by ``os._exit`` holding a checkout: the worktree code is imported
   and the orphan (directory and registration) deleted.

Runs alternate between the cases so drift in machine load hits all alike; medians are
compared. Usage::

    python bench/reclaim.py [--repeat 9] [--pooled 8] [--files 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
for _key in [k for k in ENV if k.startswith(("GIT_", "PYTEST_"))]:
    del ENV[_key]

TIMED = """
import sys, time
import pytest, pytest_aiops.plugin
from pytest_aiops._worktrees.roots import reclaim_dead_runs as reclaim
start = time.perf_counter()
removed = reclaim(sys.argv[1], sys.argv[2] if sys.argv[2] != "-" else None)
print(time.perf_counter() - start, removed)
"""

DIES = """
import os, sys
from pytest_aiops._worktrees.provider import GitWorktreeProviderConfig, GitWorktreeProvider
provider = GitWorktreeProvider(GitWorktreeProviderConfig(root_directory=sys.argv[2]))
provider.provision(session_id="dies", workspace_root=sys.argv[1], options={})
os._exit(3)
"""

POOL = """
import sys
from pytest_aiops._worktrees.provider import GitWorktreeProviderConfig, GitWorktreeProvider
provider = GitWorktreeProvider(GitWorktreeProviderConfig(root_directory=sys.argv[2]))
held = [provider.provision(session_id=f"p{i}", workspace_root=sys.argv[1], options={})
        for i in range(int(sys.argv[3]))]
for lease in held:
    lease.release()
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=ENV)


def make_repo(path: Path, files: int) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for i in range(files):
        target = path / f"d{i % 20}" / f"f{i}.txt"
        target.parent.mkdir(exist_ok=True)
        target.write_text(f"{i}\n")
    (path / "test_one.py").write_text("def test_one():\n    pass\n")
    git(path, "add", "-A")
    git(path, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench")
    return path


def timed(repo: Path, root: str, removed: int = 0) -> float:
    out = subprocess.run(
        [sys.executable, "-c", TIMED, str(repo), root],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
    ).stdout.split()
    assert int(out[1]) == removed, f"expected {removed} reclaimed, not {out[1]}"
    return float(out[0])


def baseline(repo: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:aiops",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "test_one.py",
        ],
        cwd=repo,
        check=True,
        capture_output=True,
        env=ENV,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--pooled", type=int, default=8)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiops-bench-reclaim-") as tmp:
        base = Path(tmp)
        outside = base / "not-a-repo"
        outside.mkdir()
        repo = make_repo(base / "repo", args.files)
        pooled_root = str(base / "pooled-root")
        orphan_root = str(base / "orphan-root")
        subprocess.run(
            [sys.executable, "-c", POOL, str(repo), pooled_root, str(args.pooled)],
            check=True,
            env=ENV,
        )
        results: dict[str, list[float]] = {"baseline": [], "none": [], "pooled": [], "orphan": []}
        for _ in range(args.repeat):
            results["baseline"].append(baseline(repo))
            results["none"].append(timed(outside, "-"))
            results["pooled"].append(timed(repo, pooled_root))
            subprocess.run(
                [sys.executable, "-c", DIES, str(repo), orphan_root], check=False, env=ENV
            )
            results["orphan"].append(timed(repo, orphan_root, removed=1))
        base_median = statistics.median(results["baseline"])
        print(f"baseline: a one-test pytest -p no:aiops run, median {base_median * 1000:.1f} ms")
        for key, label in (
            ("none", "no repository"),
            ("pooled", f"{args.pooled} pooled"),
            ("orphan", f"1 orphan ({args.files} files)"),
        ):
            median = statistics.median(results[key])
            print(
                f"{label:>26}: median {median * 1000:7.2f} ms = "
                f"{median / base_median:.4f}x of the baseline run"
            )


if __name__ == "__main__":
    main()
