"""Nothing is left after SIGTERM, ``os._exit`` or a crashed xdist worker: real ``pytest`` and
``pytest -n 2`` subprocesses in real repositories, real signals, a real git stuck in a filter.

Each inner test says it is running by writing a file and then waits for one that never comes,
so the signal always lands mid-test; nothing here measures time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_aiops._plugin.interrupt import MESSAGE
from pytest_aiops._ports.records import read_records
from pytest_aiops._worktrees.provider import list_worktrees
from pytest_aiops._worktrees.roots import may_hold_orphans
from pytest_aiops._worktrees.roots import reclaim_dead_runs as reclaim

from .git_helpers import MakeRepo, git
from .inner_run_helpers import check_inner_warnings
from .interrupt_helpers import (
    InnerRun,
    inner_env,
    kill_run,
    process_gone,
    start_pytest,
    wait_ready,
    worktree_list,
)
from .process_helpers import child_env
from .wait_helpers import wait_for
from .worktree_helpers import registrations, worktree_lease, worktree_provider

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

WAITING = """
import os, time
from pathlib import Path

def test_waits(git_worktree, aiops_port):
    signals = Path(os.environ["SIGNAL_DIR"])
    (signals / f"tmp-{os.getpid()}").write_text(str(git_worktree.path))
    (signals / f"tmp-{os.getpid()}").rename(signals / f"ready-{os.getpid()}")  # appears whole
    while not (signals / "never").exists():
        time.sleep(0.02)
"""

STUCK = """
def test_stuck(git_worktree):
    raise AssertionError("the checkout's smudge filter never returns")
"""


def _write(repo: Path, **modules: str) -> None:
    for name, source in modules.items():
        (repo / f"{name}.py").write_text(source)


def _end(run: InnerRun, how: str) -> int:
    """SIGTERM the run: its main process only (``kill PID``), or its whole process group
    (a terminal's job control, ``timeout``, CI runners)."""
    try:
        if how == "group":
            os.killpg(run.process.pid, signal.SIGTERM)
        else:
            run.process.send_signal(signal.SIGTERM)
        return run.wait()
    finally:
        kill_run(run)


def _assert_nothing_left(repo: Path, tmp_path: Path, run: InnerRun) -> None:
    out, err = run.output()
    assert worktree_list(repo) == [str(repo)], out + err
    assert list(read_records(str(tmp_path / "locks"))) == [], out + err  # every lease released
    states = {record.state for record in list_worktrees(str(tmp_path / "wt"))}
    assert states <= {"pooled"}, states  # released (pooled, hidden from git), none live
    check_inner_warnings(out, err, [])


@pytest.fixture
def smudge_blocks(tmp_path: Path) -> Iterator[Path]:
    """A smudge filter that writes ``filter-<pid>`` and then blocks forever (as Git LFS
    against a remote that never answers); returns the script. Any left running is killed."""
    script = tmp_path / "smudge.sh"
    signals = tmp_path / "signals"
    script.write_text(f'#!/bin/sh\n: > "{signals}/filter-$$"\nexec sleep 3600\n')
    yield script
    for marker in signals.glob("filter-*") if signals.is_dir() else ():
        pid = int(marker.name.split("-", 1)[1])
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_ends_a_plain_run_as_ctrl_c_does(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo()
    _write(repo, test_wait=WAITING)
    run = start_pytest(repo, ["test_wait.py"], inner_env(tmp_path))
    (ready,) = wait_ready(run, tmp_path / "signals", 1)
    assert ready.read_text() in worktree_list(repo)  # registered while the test runs
    assert _end(run, "process") == 2  # pytest's "interrupted", as after Ctrl-C
    out, _ = run.output()
    assert MESSAGE in out
    _assert_nothing_left(repo, tmp_path, run)


@pytest.mark.parametrize("how", ["process", "group"])
def test_sigterm_ends_an_xdist_run_with_nothing_left(
    make_repo: MakeRepo, tmp_path: Path, how: str
) -> None:
    """``process``: only the controller gets SIGTERM; xdist then stops its workers (they
    interrupt themselves). ``group``: every worker gets it too and tears down at once."""
    repo = make_repo()
    _write(repo, test_a=WAITING, test_b=WAITING)
    args = ["-n", "2", "--dist", "loadfile", "test_a.py", "test_b.py"]
    run = start_pytest(repo, args, inner_env(tmp_path), own_group=True)
    ready = wait_ready(run, tmp_path / "signals", 2)
    assert len(worktree_list(repo)) == 3
    assert {path.read_text() for path in ready} <= set(worktree_list(repo))
    assert _end(run, how) == 2
    _assert_nothing_left(repo, tmp_path, run)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_git_stuck_in_a_filter_dies_with_the_run(
    make_repo: MakeRepo, tmp_path: Path, smudge_blocks: Path, workers: int
) -> None:
    repo = make_repo({"top.txt": "top\n", "blocked.txt": "data\n", ".gitattributes": ""})
    (repo / ".gitattributes").write_text("blocked.txt filter=block\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "filter")
    git(repo, "config", "filter.block.smudge", f"sh {smudge_blocks}")
    modules = {f"test_{i}": STUCK for i in range(max(1, workers))}
    _write(repo, **modules)
    args = ["-n", str(workers), "--dist", "loadfile"] if workers else []
    run = start_pytest(repo, [*args, *(f"{m}.py" for m in modules)], inner_env(tmp_path))
    stuck = wait_ready(run, tmp_path / "signals", max(1, workers), prefix="filter-")
    pids = [int(path.name.split("-", 1)[1]) for path in stuck]
    assert not any(process_gone(pid) for pid in pids)
    assert _end(run, "process") == 2
    # Killed with its git (the plugin's git leads its own process group), not left to init.
    wait_for(lambda: all(process_gone(pid) for pid in pids), "the filter processes to die")
    out, err = run.output()
    assert worktree_list(repo) == [str(repo)], out + err
    assert registrations(repo) == []
    assert list_worktrees(str(tmp_path / "wt")) == []
    check_inner_warnings(out, err, [])


EXITING = """
import os
from pathlib import Path

def test_dies(git_worktree):
    signals = Path(os.environ["SIGNAL_DIR"])
    (signals / f"tmp-{os.getpid()}").write_text(str(git_worktree.path))
    (signals / f"tmp-{os.getpid()}").rename(signals / "ready-exit")  # appears whole
    os._exit(3)  # as pytest-timeout's thread method does
"""

PORTS_ONLY = """
def test_port(aiops_port):
    assert aiops_port > 0
"""

NOTHING = """
def test_nothing():
    pass
"""


@pytest.mark.parametrize("later", ["ports", "nothing"])
def test_a_later_run_reclaims_what_os_exit_left(
    make_repo: MakeRepo, tmp_path: Path, later: str
) -> None:
    repo = make_repo()
    _write(repo, test_dies=EXITING, test_wait=WAITING, test_later=PORTS_ONLY)
    if later == "nothing":
        _write(repo, test_later=NOTHING)
    env = inner_env(tmp_path)
    # A live run's worktree must survive the later run's reclaim: it is not dead.
    holder = start_pytest(repo, ["test_wait.py"], env)
    try:
        (live,) = wait_ready(holder, tmp_path / "signals", 1)
        dying = start_pytest(repo, ["test_dies.py"], env)
        assert dying.wait() == 3
        left = (tmp_path / "signals" / "ready-exit").read_text()
        assert set(worktree_list(repo)) == {str(repo), live.read_text(), left}
        later_run = start_pytest(repo, ["test_later.py"], env)
        assert later_run.wait() == 0, later_run.output()
        check_inner_warnings(*later_run.output(), [])
        assert set(worktree_list(repo)) == {str(repo), live.read_text()}
        assert not os.path.exists(left)
        assert os.path.isdir(live.read_text())
        states = sorted(r.state for r in list_worktrees(str(tmp_path / "wt")))
        assert states == ["live"]
    finally:
        assert _end(holder, "process") == 2
    assert worktree_list(repo) == [str(repo)]


CRASHING = """
import os
from pathlib import Path

def test_crash(git_worktree, aiops_port):
    signals = Path(os.environ["SIGNAL_DIR"])
    (signals / f"tmp-{os.getpid()}").write_text(str(git_worktree.path))
    (signals / f"tmp-{os.getpid()}").rename(signals / "crashed")  # appears whole
    os._exit(3)
"""

WATCHING = """
import os, subprocess, time
from pathlib import Path

def test_watch():
    crashed = Path(os.environ["SIGNAL_DIR"], "crashed")
    for _ in range(6000):  # a hang guard: two minutes of polls
        if crashed.exists():
            break
        time.sleep(0.02)
    path = crashed.read_text()
    for _ in range(6000):
        listed = subprocess.run(
            ["git", "worktree", "list", "--porcelain"], capture_output=True, text=True,
            check=True).stdout
        if path not in listed:
            return  # reclaimed while this run still goes on
        time.sleep(0.02)
    raise AssertionError(f"{path} is still registered")
"""


def test_the_controller_reclaims_what_a_crashed_worker_held_at_once(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = make_repo()
    _write(repo, test_a_crash=CRASHING, test_b_watch=WATCHING)
    args = ["-n", "2", "--dist", "loadfile", "test_a_crash.py", "test_b_watch.py", "-rA"]
    run = start_pytest(repo, args, inner_env(tmp_path), own_group=True)
    try:
        assert run.wait() == 1
    finally:
        kill_run(run)
    out, err = run.output()
    assert "PASSED test_b_watch.py::test_watch" in out, out + err
    assert "crashed while running" in out
    assert worktree_list(repo) == [str(repo)]
    assert list_worktrees(str(tmp_path / "wt")) == []
    # Its port record too: the controller removes the dead worker's record in its range.
    assert list(read_records(str(tmp_path / "locks"))) == [], out + err
    check_inner_warnings(out, err, [])


HANDLER = """
import signal
from pathlib import Path

def test_handler(pytestconfig):
    handler = signal.getsignal(signal.SIGTERM)
    described = "default"
    if handler is not signal.SIG_DFL:
        described = f"{handler.__module__} {handler.__name__}"
    Path(pytestconfig.rootpath, "handler.txt").write_text(described.strip())
"""

OWN_HANDLER = """
import signal

def mine(signum, frame):
    pass

signal.signal(signal.SIGTERM, mine)
"""


@pytest.mark.parametrize(
    ("conftest", "args", "expected"),
    [
        ("", [], "pytest_aiops._plugin.interrupt _interrupt"),
        (OWN_HANDLER, [], "conftest mine"),
        ("", ["--aiops-disable"], "default"),
        ("", ["-n", "1"], "pytest_aiops._plugin.interrupt _interrupt"),
    ],
    ids=["installed", "users-own-kept", "disabled", "xdist-worker"],
)
def test_only_the_default_sigterm_handler_is_replaced(
    pytester: pytest.Pytester, conftest: str, args: list[str], expected: str
) -> None:
    if conftest:
        pytester.makeconftest(conftest)
    pytester.makepyfile(test_handler=HANDLER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "handler.txt").read_text() == expected


EDITS_THEN_WAITS = """
import os, time
from pathlib import Path

def test_edits(git_worktree):
    signals = Path(os.environ["SIGNAL_DIR"])
    (git_worktree.path / "blocked.txt").write_text("changed\\n")  # restore must rewrite it
    (signals / "arm").write_text("")  # from now on the smudge filter blocks
    (signals / f"tmp-{os.getpid()}").write_text(str(git_worktree.path))
    (signals / f"tmp-{os.getpid()}").rename(signals / f"ready-{os.getpid()}")  # appears whole
    while not (signals / "never").exists():
        time.sleep(0.02)
"""


def test_a_second_sigterm_during_teardown_still_leaves_nothing(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    """The first SIGTERM starts teardown; the restore for the pool runs git, whose smudge
    filter blocks; a second SIGTERM interrupts that git: the checkout is deleted, not left
    registered until some later run."""
    signals = tmp_path / "signals"
    script = tmp_path / "smudge.sh"
    script.write_text(
        f'#!/bin/sh\nif [ -e "{signals}/arm" ]; then : > "{signals}/filter-$$"; '
        "exec sleep 3600; fi\nexec cat\n"
    )
    repo = make_repo({"top.txt": "top\n", "blocked.txt": "data\n"})
    (repo / ".gitattributes").write_text("blocked.txt filter=block\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "filter")
    git(repo, "config", "filter.block.smudge", f"sh {script}")
    _write(repo, test_edits=EDITS_THEN_WAITS)
    run = start_pytest(repo, ["test_edits.py"], inner_env(tmp_path))
    pids: list[int] = []
    try:
        wait_ready(run, signals, 1)
        run.process.send_signal(signal.SIGTERM)
        (stuck,) = wait_ready(run, signals, 1, prefix="filter-")
        pids.append(int(stuck.name.split("-", 1)[1]))
        run.process.send_signal(signal.SIGTERM)
        # As after a second Ctrl-C: the interrupt escapes pytest's teardown, so Python ends
        # by SIGINT (or pytest catches it and exits 2, depending on where it landed).
        assert run.wait() in (2, -signal.SIGINT)
    finally:
        kill_run(run)
        for pid in pids:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(process_gone(pid) for pid in pids), "the filter process to die")
    out, err = run.output()
    assert worktree_list(repo) == [str(repo)], out + err
    assert registrations(repo) == []
    assert list_worktrees(str(tmp_path / "wt")) == []


DIES_HOLDING = """
import os, sys
from pytest_aiops._worktrees.provider import GitWorktreeProvider, GitWorktreeProviderConfig
provider = GitWorktreeProvider(GitWorktreeProviderConfig(root_directory=sys.argv[2]))
provider.provision(session_id="dies", workspace_root=sys.argv[1], options={"pool": False})
os._exit(3)
"""


def test_the_end_of_run_filter_looks_only_when_a_dead_owners_record_exists(
    repo: Path, tmp_path: Path
) -> None:
    """The filter every run ends with: pooled records and live ones (their owner lock held,
    here by this very process) need no look; a dead owner's record does."""
    root = tmp_path / "wt"
    assert not may_hold_orphans(str(root))  # no root at all
    prov = worktree_provider(root)
    live = worktree_lease(prov, repo, "live")
    worktree_lease(prov, repo, "pooled").release()
    assert sorted(r.state for r in list_worktrees(str(root))) == ["live", "pooled"]
    assert not may_hold_orphans(str(root))
    died = subprocess.run(
        [sys.executable, "-c", DIES_HOLDING, str(repo), str(root)], check=False, env=child_env()
    )
    assert died.returncode == 3
    assert may_hold_orphans(str(root))
    assert reclaim(str(repo), str(root)) == 1
    assert not may_hold_orphans(str(root))
    assert sorted(r.state for r in list_worktrees(str(root))) == ["live", "pooled"]
    live.release()


FORKS = """
import multiprocessing, signal, time

def sleep_forever():
    while True:
        time.sleep(0.05)

def test_a_forked_child_still_dies_of_sigterm():
    for _ in range(20):  # terminate() right after start(): the signal lands during the fork
        child = multiprocessing.get_context("fork").Process(target=sleep_forever)
        child.start()
        try:
            child.terminate()  # SIGTERM
            child.join(60)
            assert child.exitcode == -signal.SIGTERM
        finally:
            if child.is_alive():
                child.kill()
                child.join()
"""


def test_a_process_forked_by_a_test_still_dies_of_sigterm(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_forks=FORKS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    assert "KeyboardInterrupt" not in result.stdout.str() + result.stderr.str()
