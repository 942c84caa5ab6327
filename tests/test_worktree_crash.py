"""Crash recovery and concurrency with real processes and real SIGKILL."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops._worktrees import create as _create
from pytest_aiops._worktrees.git import run_git, session_members
from pytest_aiops._worktrees.provider import list_worktrees, reclaim_orphans

from .git_helpers import MakeRepo, git
from .wait_helpers import wait_for
from .worktree_helpers import checkouts, registrations
from .worktree_helpers import worktree_lease as lease
from .worktree_helpers import worktree_provider as provider

_HOLDER = r"""
import json, sys, os
from pytest_aiops._worktrees.provider import (
    GitWorktreeProviderConfig, create_git_worktree_provider)
root, repo, specs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if os.environ.get("HOLDER_WAIT_FOR"):
    while not os.path.exists(os.environ["HOLDER_WAIT_FOR"]):
        pass
prov = create_git_worktree_provider(GitWorktreeProviderConfig(root_directory=root))
leases = [prov.provision(session_id=s["session"], workspace_root=repo,
                         options=s.get("options", {})) for s in specs]
print(json.dumps([dict(l.hard) for l in leases]), flush=True)
if os.environ.get("HOLDER_DIE_IN_RESTORE"):
    import signal
    from pytest_aiops._worktrees import restore as _restore
    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)
    _restore.remove_inside = die
    open(os.path.join(leases[0].hard["worktreePath"], "top.txt"), "w").write("dirty")
    leases[0].release()
sys.stdin.read()
for l in leases:
    l.release()
"""

Start = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Start]:
    """Factory: a process that provisions ``specs`` under ``root`` and holds them."""
    processes: list[subprocess.Popen[str]] = []

    def start(
        root: Path, repo: Path, specs: list[dict[str, Any]], **env: str
    ) -> subprocess.Popen[str]:
        errors = tmp_path / f"holder-{len(processes)}.stderr"
        with open(errors, "w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", _HOLDER, str(root), str(repo), json.dumps(specs)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, **env},
            )
        process.stderr_path = str(errors)  # type: ignore[attr-defined]
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def _stderr_of(process: subprocess.Popen[str]) -> str:
    path = getattr(process, "stderr_path", None)
    return Path(path).read_text() if path else ""


def read_leases(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
    assert line, f"holder died before provisioning: {_stderr_of(process)}"
    result: list[dict[str, Any]] = json.loads(line)
    return result


def test_sigkilled_holder_is_reclaimed_live_holder_is_not(
    repo: Path, tmp_path: Path, holder: Start
) -> None:
    root = tmp_path / "wt"
    victim = holder(
        root,
        repo,
        [{"session": "v1"}, {"session": "v2", "options": {"isolation": "clone"}}],
    )
    survivor = holder(root, repo, [{"session": "alive"}])
    dead = read_leases(victim)
    alive = read_leases(survivor)[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    states = {r.path: r.state for r in list_worktrees(str(root))}
    assert states == {
        dead[0]["worktreePath"]: "orphaned",
        dead[1]["worktreePath"]: "orphaned",
        alive["worktreePath"]: "live",
    }
    assert reclaim_orphans(str(root), dry_run=True) != []
    assert len(list_worktrees(str(root))) == 3  # dry run changed nothing
    # The next provisioning through the same root removes the orphans, and only them.
    mine = lease(provider(root), repo, "next")
    assert not os.path.exists(dead[0]["worktreePath"])
    assert not os.path.exists(dead[1]["worktreePath"])
    assert (Path(alive["worktreePath"]) / "top.txt").is_file()
    listed = git(repo, "worktree", "list", "--porcelain")
    assert dead[0]["worktreePath"] not in listed
    assert alive["worktreePath"] in listed
    assert reclaim_orphans(str(root)) == []  # the live one is never an orphan
    mine.release()
    assert survivor.stdin is not None
    survivor.stdin.close()
    assert survivor.wait() == 0
    reclaim_orphans(str(root), include_pooled=True)
    assert git(repo, "worktree", "list").count("\n") == 0
    assert registrations(repo) == []


def _fast_import_repo(make_repo: MakeRepo, count: int) -> Path:
    """A repository whose HEAD has ``count`` files, written straight into the object store."""
    repo = make_repo({})
    lines = ["commit refs/heads/main", "committer T <t@example.invalid> 0 +0000", "data 3", "big"]
    lines.append("from refs/heads/main^0")
    for i in range(count):
        lines += [f"M 100644 inline d{i % 40}/s{i % 7}/f{i}.txt", "data 8", f"{i:07d}"]
    subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
    )
    git(repo, "reset", "-q", "--hard", "main")
    return repo


def test_sigkill_in_the_middle_of_worktree_add(
    make_repo: MakeRepo, tmp_path: Path, holder: Start
) -> None:
    """SIGKILL mid `git worktree add`: git keeps writing in its own session and leaves a
    registration locked as "initializing"; the next provisioning ends that git, removes
    the half-made checkout and the locked registration, and works."""
    repo = _fast_import_repo(make_repo, 3000)
    root = tmp_path / "wt"
    victim = holder(root, repo, [{"session": "big"}])
    locked: list[str] = []
    for _ in range(30_000):  # a hang guard (about a minute of polls), not a timing check
        if victim.poll() is not None:
            break
        locked = glob.glob(str(repo / ".git" / "worktrees" / "aiops-*" / "locked"))
        builds = glob.glob(str(root / ".pytest-aiops" / "aiops-*" / "d*"))
        if locked and builds:
            break
        time.sleep(0.002)
    assert locked, "never caught git worktree add in progress"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    [record_file] = glob.glob(str(root / ".pytest-aiops" / "aiops-*.json"))
    with open(record_file) as handle:
        git_session = json.load(handle)["gitSession"][0]
    assert Path(locked[0]).read_text().startswith("initializing") or not Path(locked[0]).exists()
    [orphan] = list_worktrees(str(root))
    assert orphan.state == "orphaned"

    mine = lease(provider(root), repo, "after")
    assert session_members(git_session) == []  # the killed owner's git was ended
    assert [r.state for r in list_worktrees(str(root))] == ["live"]
    names = registrations(repo)
    assert len(names) == 1  # only the new lease's; the locked one is gone
    assert os.listdir(root / ".pytest-aiops") == [
        n for n in os.listdir(root / ".pytest-aiops") if names[0] in n
    ]
    assert git(repo, "worktree", "list").count("\n") == 1
    mine.release()
    reclaim_orphans(str(root), include_pooled=True)
    assert registrations(repo) == []
    assert checkouts(root) == []


def test_sigkill_while_restoring_for_the_pool_leaves_an_orphan_not_a_pooled_checkout(
    repo: Path, tmp_path: Path, holder: Start
) -> None:
    root = tmp_path / "wt"
    victim = holder(root, repo, [{"session": "r"}], HOLDER_DIE_IN_RESTORE="1")
    [hard] = read_leases(victim)
    assert victim.wait() == -signal.SIGKILL
    [record] = list_worktrees(str(root))
    assert record.state == "orphaned"
    fresh = lease(provider(root), repo, "r")
    path = fresh.hard["worktreePath"]
    assert path == hard["worktreePath"]  # the name is free again
    assert (Path(path) / "top.txt").read_text() == "top\n"
    assert [r.state for r in list_worktrees(str(root))] == ["live"]
    fresh.release()


def test_many_processes_provision_one_repository_at_once(
    repo: Path, tmp_path: Path, holder: Start
) -> None:
    root = tmp_path / "wt"
    go = tmp_path / "go"
    specs = [
        {"session": "same"},
        {"session": "other", "options": {"isolation": "clone"}},
        {"session": "sparse", "options": {"targetPath": "pkg"}},
    ]
    processes = [holder(root, repo, specs, HOLDER_WAIT_FOR=str(go)) for _ in range(6)]
    time.sleep(0.3)
    go.touch()
    results = [read_leases(p) for p in processes]
    paths = [hard["worktreePath"] for result in results for hard in result]
    assert len(set(paths)) == 18
    assert all((Path(p) / "top.txt").is_file() for p in paths)
    assert git(repo, "worktree", "list").count("\n") == 12
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
    assert [p.wait() for p in processes] == [0] * 6
    assert git(repo, "worktree", "list").count("\n") == 0
    assert {r.state for r in list_worktrees(str(root))} == {"pooled"}
    reclaim_orphans(str(root), include_pooled=True)
    assert registrations(repo) == []
    assert os.listdir(root / ".pytest-aiops") == []


def test_transient_lock_errors_are_retried(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another git holding a lock is a race we cannot schedule reliably: inject its error."""
    calls: list[list[str]] = []
    real = run_git

    def flaky(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if "add" in args and not calls:
            calls.append(list(args))
            # What a concurrent git leaves: a half-made dir and the registration.
            path = args[-2]
            Path(path, "partial").write_text("x")
            reg = repo / ".git" / "worktrees" / os.path.basename(path)
            reg.mkdir(parents=True)
            (reg / "locked").write_text("initializing")
            return subprocess.CompletedProcess(
                args, 128, "", "fatal: Unable to create '/x/index.lock': File exists.\n"
            )
        return real(args, **kwargs)

    monkeypatch.setattr(_create, "run_git", flaky)
    held = lease(provider(tmp_path / "wt", pool=False), repo)
    assert calls
    assert sorted(os.listdir(held.hard["worktreePath"])) == [".git", "pkg", "top.txt"]
    held.release()
    assert registrations(repo) == []


def test_a_killed_git_takes_its_children_along(tmp_path: Path) -> None:
    started: list[int] = []
    with pytest.raises(subprocess.TimeoutExpired):
        run_git(
            ["-c", "alias.slow=!sh -c 'sleep 30 & sleep 30'", "slow"],
            cwd=str(tmp_path),
            timeout=0.5,
            on_start=started.append,
        )
    wait_for(lambda: not session_members(started[0]), "the git session to end", timeout=5)
    assert session_members(started[0]) == []


@pytest.mark.parametrize("right_start", [True, False])
def test_a_left_git_session_is_ended_without_proc(
    monkeypatch: pytest.MonkeyPatch, right_start: bool
) -> None:
    """The macOS/BSD path (``ps`` + ``killpg``), run here with ``sys.platform`` faked:
    the session of a git that outlived its owner ends, children included, only if the
    recorded start time is that git's."""
    from pytest_aiops._worktrees import git as _git

    leader = subprocess.Popen(["sh", "-c", "sleep 60 & exec sleep 60"], start_new_session=True)
    try:
        monkeypatch.setattr(sys, "platform", "darwin")
        started = _git.boot_ticks()
        wait_for(lambda: len(_git._ps_group_members(leader.pid)) == 2, "sh to start its child")
        assert _git.process_start_time(leader.pid) is not None
        _git.end_session(leader.pid, started if right_start else started - 60 * 100, wait=5)
        members = _git._ps_group_members(leader.pid)
        monkeypatch.undo()
        assert (members == []) is right_start
        assert (session_members(leader.pid) == []) is right_start  # asked of /proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_an_orphaned_parent_is_kept_while_a_child_session_lives_inside_it(
    repo: Path, tmp_path: Path, holder: Start
) -> None:
    """The child's checkout is nested in the parent's: reclaiming the SIGKILLed parent must
    wait until the child is released, then take both apart (registrations included)."""
    root = tmp_path / "wt"
    parent = holder(root, repo, [{"session": "parent"}])
    (parent_hard,) = read_leases(parent)
    parent_path = Path(parent_hard["worktreePath"])
    child_root = parent_path / ".ai_ops" / "child-worktrees" / "parent"
    child = lease(provider(child_root), repo, "child")
    child_path = Path(child.hard["worktreePath"])
    parent.kill()
    parent.wait()
    reclaim_orphans(str(root))
    lease(provider(root, pool=False), repo, "other").release()  # also reclaims under root
    assert (child_path / "top.txt").read_text() == "top\n"
    assert [r.state for r in list_worktrees(str(root))] == ["orphaned"]
    child.release()
    removed = reclaim_orphans(str(root))
    assert [r.path for r in removed] == [str(parent_path)]
    assert not parent_path.exists()
    assert registrations(repo) == []


def test_releasing_a_parent_leaves_a_live_child_session_alone(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "wt"
    parent = lease(provider(root), repo, "parent")
    parent_path = Path(parent.hard["worktreePath"])
    child = lease(provider(parent_path / ".ai_ops" / "child-worktrees" / "p"), repo, "child")
    child_path = Path(child.hard["worktreePath"])
    parent.release()  # the child is still in use
    assert (child_path / "top.txt").read_text() == "top\n"
    assert parent_path.is_dir()
    child.release()
    reclaim_orphans(str(root))
    assert not parent_path.exists()
    assert registrations(repo) == []


def test_a_kept_worktree_the_user_moved_keeps_its_registration(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "wt"
    keeper = provider(root)
    held = lease(keeper, repo, "kept")
    assert keeper.keep(held.hard["worktreePath"])
    mine = tmp_path / "my-work"
    git(repo, "worktree", "move", held.hard["worktreePath"], str(mine))
    lease(provider(root, pool=False), repo, "later").release()  # a later run reclaims
    reclaim_orphans(str(root), include_kept=True)
    assert git(mine, "status", "--porcelain") == ""  # still a working worktree
    assert str(mine) in git(repo, "worktree", "list")
    git(repo, "worktree", "remove", "--force", str(mine))
