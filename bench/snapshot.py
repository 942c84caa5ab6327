"""Benchmark: what the working state costs, on a 20,000-file repository with a few changes.

Run: ``python bench/snapshot.py [--files 20000] [--rounds 7]``

A repository of generated files (committed with ``git fast-import``, in the temp dir as a
user's would be) gets a typical working state: 5 files edited, 2 new files staged, 1 file
deleted, 3 untracked files. Median time of one "provide a checkout + give it back" cycle:

- ``plain git``: ``git worktree add --detach`` + ``git worktree remove --force`` (baseline)
- ``fresh, HEAD alone`` / ``fresh, working state``: the provider with ``pool=False``
- ``pooled, HEAD alone`` / ``pooled, working state``: the pool, after warm-up
- ``pooled, run's snapshot``: the plugin's case, the pool and one snapshot for the whole
  run (``snapshotDirectory``), so per checkout only the apply and the restore
- ``snapshot alone``: taking the snapshot (copy of the index, ``add -A``, two
  ``write-tree``) into a private directory on the snapshot's filesystem, and deleting it

Ratios are to ``plain git`` in the same run (rounds interleaved, so load hits all alike).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_aiops._worktrees.locate import locate_repository
from pytest_aiops._worktrees.provider import (
    GitWorktreeProviderConfig,
    create_git_worktree_provider,
    default_worktree_root,
    reclaim_orphans,
)
from pytest_aiops._worktrees.snapshot import (
    SnapshotRun,
    discard_snapshot,
    private_snapshot,
    snapshot_base,
)

ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid"}
ENV.update(GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.invalid")


def git(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, input=stdin, text=True, check=True,
                          stdout=subprocess.PIPE).stdout  # fmt: skip


def make_repo(base: Path, count: int) -> Path:
    repo = base / f"repo-{count}"
    git("init", "-q", "-b", "main", str(repo))
    lines = ["commit refs/heads/main", "committer b <b@example.invalid> 0 +0000", "data 4", "gen"]
    for i in range(count):
        body = f"file {i}\n" * 4
        lines += [f"M 100644 inline src/d{i % 50}/s{i % 9}/f{i}.py", f"data {len(body)}", body]
    git("fast-import", "--quiet", cwd=repo, stdin="\n".join(lines) + "\n")
    git("reset", "-q", "--hard", "main", cwd=repo)
    # A few changes, as a user in the middle of work has.
    for i in range(5):
        Path(repo, f"src/d{i}/s{i % 9}/f{i}.py").write_text("edited\n")
    for name in ("new_a.py", "new_b.py"):
        Path(repo, name).write_text("new\n")
        git("add", name, cwd=repo)
    Path(repo, "src/d7/s7/f7.py").unlink()
    for name in ("scratch.txt", "tests/test_new.py", "notes.md"):
        Path(repo, name).parent.mkdir(exist_ok=True)
        Path(repo, name).write_text("untracked\n")
    time.sleep(1.1)  # the index out of git's "racily clean" second, as a user's usually is
    git("status", "--porcelain", cwd=repo)  # refresh the index once, as a user's has been
    return repo


def filesystem_of(path: str) -> str:
    best = ("", "?")
    with open("/proc/mounts") as handle:
        for line in handle:
            _, mount, fstype, *_ = line.split()
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
                best[0]
            ):
                best = (mount, fstype)
    return f"{best[1]} (mounted at {best[0]})"


def bench(repo: Path, rounds: int) -> dict[str, float]:
    root = default_worktree_root(str(repo))
    plain_dir = os.path.join(os.path.dirname(root), "plain-" + os.path.basename(root))
    os.makedirs(plain_dir, exist_ok=True)
    target = os.path.join(plain_dir, "wt")
    info = locate_repository(str(repo))
    assert info is not None
    head = git("rev-parse", "HEAD", cwd=repo).strip()

    def plain() -> None:
        git("-C", str(repo), "worktree", "add", "-q", "--detach", target, "HEAD")
        git("-C", str(repo), "worktree", "remove", "--force", target)

    run_snapshot = SnapshotRun.create()

    def cycle(pool: bool, state: bool, shared: bool = False) -> Callable[[], None]:
        provider = create_git_worktree_provider(GitWorktreeProviderConfig(pool=pool))
        options: dict[str, object] = {"workingState": state}
        if shared:
            options["snapshotDirectory"] = run_snapshot.path

        def run() -> None:
            provider.provision(session_id="b", workspace_root=str(repo), options=options).release()

        return run

    def snapshot() -> None:
        discard_snapshot(private_snapshot(info, head, [], snapshot_base()))

    variants: dict[str, Callable[[], None]] = {
        "plain git": plain,
        "fresh, HEAD alone": cycle(False, False),
        "fresh, working state": cycle(False, True),
        "pooled, HEAD alone": cycle(True, False),
        "pooled, working state": cycle(True, True),
        "pooled, run's snapshot": cycle(True, True, shared=True),
        "snapshot alone": snapshot,
    }
    for name in ("pooled, HEAD alone", "pooled, working state", "pooled, run's snapshot"):
        variants[name]()
    time.sleep(1.1)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, action in variants.items():
            start = time.perf_counter()
            action()
            samples[name].append(time.perf_counter() - start)
    run_snapshot.close()
    reclaim_orphans(root, include_pooled=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(plain_dir, ignore_errors=True)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[20000])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiops-bench-") as base:
        for count in args.files:
            repo = make_repo(Path(base), count)
            root = default_worktree_root(str(repo))
            print(f"\n{count} files, 5 edited, 2 staged, 1 deleted, 3 untracked; "
                  f"repository in {filesystem_of(str(repo))}")  # fmt: skip
            print(f"checkouts in {filesystem_of(root)}, snapshots in "
                  f"{filesystem_of(snapshot_base())}; median of {args.rounds}")  # fmt: skip
            results = bench(repo, args.rounds)
            base_ms = results["plain git"]
            for name, value in results.items():
                print(f"  {name:<24} {value:8.1f} ms   {value / base_ms:5.2f}x plain git")
            fresh = results["fresh, working state"] / results["fresh, HEAD alone"]
            pooled = results["pooled, working state"] / results["pooled, HEAD alone"]
            shared = results["pooled, run's snapshot"] / results["pooled, HEAD alone"]
            print(
                f"  working state / HEAD alone: fresh {fresh:.2f}x, pooled {pooled:.2f}x, "
                f"pooled with the run's snapshot (the plugin) {shared:.2f}x"
            )


if __name__ == "__main__":
    main()
