"""Benchmark: an isolated checkout of HEAD, fresh and from the pool, against plain git.

Run: ``python bench/worktrees.py [--files 1000 10000] [--rounds 11]``

For generated repositories of 1,000 and 10,000 files (committed with ``git fast-import``,
the user's repository in the temp dir as usual), it measures the median time of one
"provide a checkout + give it back" cycle:

- ``plain git``: ``git worktree add --detach <p> HEAD`` + ``git worktree remove --force <p>``
- ``fresh``: the provider with ``pool=False`` (provision + release)
- ``pooled``: the provider with the pool, after warm-up (provision from the pool + release,
  which restores the checkout), untouched and after the "test" wrote a few files
  (a tracked file changed, an untracked file and a ``__pycache__`` added)

All checkouts go to the provider's default root (and plain git's into a sibling directory
on the same filesystem), which is named in the output with its filesystem type.
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

from pytest_aiops._worktrees.provider import (
    GitWorktreeProviderConfig,
    create_git_worktree_provider,
    default_worktree_root,
    reclaim_orphans,
)

ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid"}
ENV.update(GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.invalid")


def git(*args: str, cwd: Path | None = None, stdin: str | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=ENV, input=stdin, text=True, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def make_repo(base: Path, count: int) -> Path:
    repo = base / f"repo-{count}"
    git("init", "-q", "-b", "main", str(repo))
    lines = ["commit refs/heads/main", "committer b <b@example.invalid> 0 +0000", "data 4", "gen"]
    for i in range(count):
        body = f"file {i}\n" * 4
        lines += [f"M 100644 inline src/d{i % 50}/s{i % 9}/f{i}.py", f"data {len(body)}", body]
    git("fast-import", "--quiet", cwd=repo, stdin="\n".join(lines) + "\n")
    git("reset", "-q", "--hard", "main", cwd=repo)
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


def scribble(path: str) -> None:
    """What a typical test module leaves: one tracked file changed, two new files."""
    first = next(Path(path, "src", "d0", "s0").iterdir())
    first.write_text("changed\n")
    Path(path, "new_output.txt").write_text("x\n")
    cache = Path(path, "src", "__pycache__")
    cache.mkdir(exist_ok=True)
    (cache / "m.cpython.pyc").write_bytes(b"\0" * 64)


def bench(repo: Path, rounds: int) -> dict[str, float]:
    root = default_worktree_root(str(repo))
    plain_dir = os.path.join(os.path.dirname(root), "plain-" + os.path.basename(root))
    os.makedirs(plain_dir, exist_ok=True)
    target = os.path.join(plain_dir, "wt")

    def plain() -> None:
        git("-C", str(repo), "worktree", "add", "-q", "--detach", target, "HEAD")
        git("-C", str(repo), "worktree", "remove", "--force", target)

    fresh_provider = create_git_worktree_provider(GitWorktreeProviderConfig(pool=False))
    pooled_provider = create_git_worktree_provider(GitWorktreeProviderConfig(pool=True))

    def cycle(provider_: object, touch: bool = False) -> Callable[[], None]:
        def run() -> None:
            lease = provider_.provision(  # type: ignore[attr-defined]
                session_id="bench", workspace_root=str(repo), options={}
            )
            if touch:
                scribble(lease.hard["worktreePath"])
            lease.release()

        return run

    provide_only: list[float] = []

    def pooled_provide() -> None:
        start = time.perf_counter()
        lease = pooled_provider.provision(session_id="bench", workspace_root=str(repo), options={})
        provide_only.append(time.perf_counter() - start)
        lease.release()

    cycle(pooled_provider)()  # first lease: a fresh checkout, then pooled
    time.sleep(1.1)  # let the index leave git's "racily clean" second (see docs)
    cycle(pooled_provider)()
    # Interleaved rounds: on a shared machine every variant sees the same load.
    variants: dict[str, Callable[[], None]] = {
        "plain git": plain,
        "fresh": cycle(fresh_provider),
        "pooled": pooled_provide,
        "pooled, test wrote files": cycle(pooled_provider, touch=True),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, action in variants.items():
            start = time.perf_counter()
            action()
            samples[name].append(time.perf_counter() - start)
    results = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    results["pooled, provision only"] = statistics.median(provide_only) * 1000
    reclaim_orphans(root, include_pooled=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(plain_dir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiops-bench-") as base:
        for count in args.files:
            repo = make_repo(Path(base), count)
            root = default_worktree_root(str(repo))
            print(f"\n{count} files; repository in {filesystem_of(str(repo))}")
            print(f"checkouts in {root}: {filesystem_of(root)}; median of {args.rounds}")
            results = bench(repo, args.rounds)
            base_ms = results["plain git"]
            for name, value in results.items():
                print(f"  {name:<28} {value:8.1f} ms   {value / base_ms:5.2f}x plain git")


if __name__ == "__main__":
    main()
