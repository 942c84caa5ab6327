"""The user's working state in the worktree: staged, unstaged, deleted, untracked, included.

Real repositories with every kind of change; the user's repository (``.git`` included) is
compared byte for byte before and after, leaving out only the linked-worktree registrations
under ``.git/worktrees/`` that isolation ``worktree`` documents.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import ResourceRequest, create_default_orchestrator
from pytest_aiops._worktrees.provider import SnapshotRun, reclaim_orphans
from pytest_aiops._worktrees.snapshot import snapshot_base

from .git_helpers import git, run
from .process_helpers import child_env
from .test_security import needs_namespace, run_attack
from .working_state_helpers import EXPECTED_STATUS, UNTRACKED, dirty_repo, fingerprint

QUIET = ("-p", "no:benchmark", "-p", "no:hypothesispytest", "-p", "no:cacheprovider")

#: What the inner tests report of their worktree, one JSON file per module.
REPORTER = """
import json, os, subprocess
from pathlib import Path

NAMES = ["a.txt", "gone.txt", "staged.txt", "staged_then_edited.txt", "notes/untracked.txt",
         ".env", "debug.log", "build/ext.so", "pkg/mod.py"]


def report(worktree, name):
    path = worktree.path
    def git(*args):
        return subprocess.run(["git", *args], cwd=path, env=worktree.env(), check=True,
                              capture_output=True, text=True).stdout
    data = {
        "status": sorted(git("status", "--porcelain", "--untracked-files=all").splitlines()),
        "head": git("rev-parse", "HEAD").strip(),
        "working_state": worktree.working_state,
        "files": {n: (path / n).read_text(errors="replace") if (path / n).exists() else None
                  for n in NAMES},
        "own_module": (path / name).is_file(),
    }
    out = Path(os.environ["REPORT_DIR"]) / (name + ".json")
    out.write_text(json.dumps(data))
"""


def module(name: str, marker: str = "") -> str:
    return (
        "import os\nimport pytest\nfrom reporter_lib import report\n"
        + (f"pytestmark = pytest.mark.aiops({marker})\n" if marker else "")
        + f"def test_state(git_worktree):\n    report(git_worktree, {name!r})\n"
    )


@pytest.fixture
def user_repo(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dirty repository under pytester's directory (pytest's basetemp stays outside it),
    with a reporter module outside it on ``PYTHONPATH``."""
    repo = pytester.path / "repo"
    repo.mkdir()
    dirty_repo(repo)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "reporter_lib.py").write_text(REPORTER)
    reports = tmp_path / "reports"
    reports.mkdir()
    monkeypatch.setenv("REPORT_DIR", str(reports))
    monkeypatch.setenv("PYTHONPATH", f"{lib}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # no __pycache__ in the user's tree
    for key in list(os.environ):
        if key.startswith(("PYTEST_XDIST_", "PYTEST_AIOPS_")):
            monkeypatch.delenv(key)
    return repo


def inner(pytester: pytest.Pytester, repo: Path, tmp_path: Path, *args: str) -> pytest.RunResult:
    root = tmp_path / "worktrees"
    return pytester.runpytest_subprocess(
        *QUIET,
        str(repo),
        f"--rootdir={repo}",
        f"--aiops-worktree-root={root}",
        f"--aiops-lock-dir={tmp_path / 'locks'}",
        *args,
        timeout=180,
    )


def reports(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "reports").glob("*.json")}


def expected_status(*untracked: str) -> list[str]:
    return sorted([*EXPECTED_STATUS, f"?? {UNTRACKED}", *(f"?? {u}" for u in untracked)])


def test_the_worktree_holds_the_working_state_and_the_user_repo_is_untouched(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path
) -> None:
    (user_repo / "test_one.py").write_text(module("test_one.py"))
    (user_repo / ".worktreeinclude").write_text("# built in place\nbuild/\n")
    head = git(user_repo, "rev-parse", "HEAD")
    before = fingerprint(user_repo)
    result = inner(pytester, user_repo, tmp_path, "--aiops-worktree-include=.env")
    result.assert_outcomes(passed=1)
    assert fingerprint(user_repo) == before
    report = reports(tmp_path)["test_one.py"]
    assert report["head"] == head
    assert report["working_state"] is True
    assert report["own_module"] is True
    assert report["status"] == expected_status(".worktreeinclude", "test_one.py")
    files = report["files"]
    assert files["a.txt"] == "a2 unstaged\n"
    assert files["gone.txt"] is None
    assert files["staged.txt"] == "staged\n"
    assert files["staged_then_edited.txt"] == "second\n"
    assert files[UNTRACKED] == "untracked\n"
    assert files[".env"] == "SECRET=1\n"  # ignored, named by --aiops-worktree-include
    assert files["build/ext.so"] is not None  # ignored, named by .worktreeinclude
    assert files["debug.log"] is None  # ignored, named by nothing
    # The user's own view is unchanged too (asked only now: git status refreshes the index).
    assert sorted(run(user_repo, "status", "--porcelain").stdout.splitlines()) == sorted(
        [*EXPECTED_STATUS, "?? .worktreeinclude", "?? notes/", "?? test_one.py"]
    )


def test_every_xdist_worker_sees_the_same_working_state(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["test_one.py", "test_two.py", "test_three.py", "test_four.py"]
    for name in names:
        (user_repo / name).write_text(module(name))
    # git as found on PATH, logging each command: how many snapshots the run took.
    log = tmp_path / "git-log"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    real = shutil.which("git")
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    before = fingerprint(user_repo)
    result = inner(pytester, user_repo, tmp_path, "-n", "2", "--aiops-worktree-include=.env")
    result.assert_outcomes(passed=4)
    assert fingerprint(user_repo) == before
    snapshots = [line for line in log.read_text().splitlines() if " add -A" in line]
    assert len(snapshots) == 1, snapshots  # one per run, shared by both workers
    # Made in the explicit worktree root's control dir (the one setting that moves
    # checkouts moves it too), deleted at the end of the run.
    control = tmp_path / "worktrees" / ".pytest-aiops"
    assert control.is_dir()
    assert [name for name in os.listdir(control) if name.startswith(("run-", "one-"))] == []
    found = reports(tmp_path)
    assert sorted(found) == sorted(names)
    for name, report in found.items():
        assert report["status"] == expected_status(*names), name
        assert report["files"]["a.txt"] == "a2 unstaged\n", name
        assert report["files"][".env"] == "SECRET=1\n", name
        assert report["own_module"] is True, name


@pytest.mark.parametrize(
    "how",
    ["--aiops-working-state=false", "env", "marker"],
)
def test_the_setting_off_gives_head_alone(
    pytester: pytest.Pytester,
    user_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    marker = "working_state=False" if how == "marker" else ""
    (user_repo / "test_one.py").write_text(module("test_one.py", marker))
    if how == "env":
        monkeypatch.setenv("PYTEST_AIOPS_WORKING_STATE", "0")
    args = [how] if how.startswith("--") else []
    before = fingerprint(user_repo)
    inner(pytester, user_repo, tmp_path, *args).assert_outcomes(passed=1)
    assert fingerprint(user_repo) == before
    report = reports(tmp_path)["test_one.py"]
    assert report["working_state"] is False
    assert report["status"] == []
    assert report["files"]["a.txt"] == "a1\n"
    assert report["files"]["gone.txt"] == "gone\n"
    assert report["files"]["staged.txt"] is None
    assert report["own_module"] is False


def test_an_explicit_base_ref_is_that_commit_alone(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path
) -> None:
    head = git(user_repo, "rev-parse", "HEAD")
    (user_repo / "test_one.py").write_text(module("test_one.py"))
    inner(pytester, user_repo, tmp_path, f"--aiops-base-ref={head}").assert_outcomes(passed=1)
    report = reports(tmp_path)["test_one.py"]
    assert report["working_state"] is False
    assert report["status"] == []
    assert report["files"]["staged.txt"] is None


def test_the_factory_gives_the_state_unless_asked_not_to(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path
) -> None:
    (user_repo / "test_factory.py").write_text(
        "def test_factory(aiops_worktree_factory):\n"
        "    with aiops_worktree_factory.worktree() as wt:\n"
        "        assert wt.working_state and (wt.path / 'staged.txt').is_file()\n"
        "        assert (wt.path / 'test_factory.py').is_file()\n"
        "    with aiops_worktree_factory.worktree(working_state=False) as wt:\n"
        "        assert not wt.working_state and not (wt.path / 'staged.txt').exists()\n"
        "        assert (wt.path / 'gone.txt').is_file()\n"
    )
    before = fingerprint(user_repo)
    inner(pytester, user_repo, tmp_path).assert_outcomes(passed=1)
    assert fingerprint(user_repo) == before


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_the_snapshot_is_the_state_the_run_started_with(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path, workers: list[str]
) -> None:
    """A test that changes the user's checkout before the first worktree is provisioned
    (here: the first module) does not change what the worktrees hold."""
    (user_repo / "test_a_writes.py").write_text(
        "import os\n"
        "def test_writes():\n"
        f"    with open({str(user_repo / 'late.txt')!r}, 'w') as handle:\n"
        "        handle.write('late')\n"
    )
    (user_repo / "test_b_uses.py").write_text(
        "import os, time\n"
        f"LATE = {str(user_repo / 'late.txt')!r}\n"
        "def test_uses(git_worktree):\n"
        "    for _ in range(1200):  # a hang guard counting polls, not a clock\n"
        "        if os.path.exists(LATE):\n"
        "            break\n"
        "        time.sleep(0.05)  # under -n 2 the other worker writes it\n"
        "    assert os.path.exists(LATE)\n"
        "    assert (git_worktree.path / 'staged.txt').is_file()\n"
        "    assert not (git_worktree.path / 'late.txt').exists()\n"
    )
    args = [*workers, "--dist=loadfile"] if workers else []
    inner(pytester, user_repo, tmp_path, *args).assert_outcomes(passed=2)


def test_provisioned_session_with_a_worktree_holds_the_state(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path
) -> None:
    (user_repo / "test_session.py").write_text(
        "from pathlib import Path\n"
        "def test_session(provisioned_session):\n"
        "    allocation = provisioned_session.allocation('git-worktree')\n"
        "    assert allocation['workingState'] is True\n"
        "    path = Path(allocation['worktreePath'])\n"
        "    assert (path / 'staged.txt').is_file() and not (path / 'gone.txt').exists()\n"
    )
    before = fingerprint(user_repo)
    result = inner(pytester, user_repo, tmp_path, "--aiops-resources=git-worktree")
    result.assert_outcomes(passed=1)
    assert fingerprint(user_repo) == before


def test_a_bad_setting_is_one_line(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path
) -> None:
    (user_repo / "test_one.py").write_text(module("test_one.py"))
    result = inner(pytester, user_repo, tmp_path, "--aiops-working-state=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --aiops-working-state must be one of 1, true, yes, on, 0, false, no, off, "
            "not 'maybe' (from --aiops-working-state)"
        ]
    )


def test_a_marker_value_that_is_no_bool_is_one_line(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path
) -> None:
    (user_repo / "test_one.py").write_text(module("test_one.py", "working_state='no'"))
    result = inner(pytester, user_repo, tmp_path)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*git_worktree: pytest.mark.aiops(working_state=...) must be True or False, not 'no'"]
    )


# --- the core API --------------------------------------------------------------------------


def _status(path: str) -> list[str]:
    return sorted(run(path, "status", "--porcelain", "--untracked-files=all").stdout.splitlines())


def test_core_option_default_off_then_on_pooled_and_restored(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    head = dirty_repo(repo)
    root = tmp_path / "worktrees"
    before = fingerprint(repo)
    plain = create_default_orchestrator(git_worktree={"rootDirectory": str(root)})
    session = plain.provision_session(
        session_id="s", resources=[ResourceRequest("git-worktree")], workspace_root=str(repo)
    )
    allocation = session.allocation("git-worktree") or {}
    assert allocation["workingState"] is False  # the reference's behaviour by default
    assert _status(allocation["worktreePath"]) == []
    session.release()

    orchestrator = create_default_orchestrator(
        git_worktree={"rootDirectory": str(root), "workingState": True}
    )
    for _ in range(2):  # fresh, then the pooled checkout restored and given the state again
        session = orchestrator.provision_session(
            session_id="s",
            resources=[ResourceRequest("git-worktree", {"worktreeInclude": [".env"]})],
            workspace_root=str(repo),
        )
        allocation = session.allocation("git-worktree") or {}
        path = allocation["worktreePath"]
        assert allocation["workingState"] is True
        assert allocation["commit"] == head
        assert _status(path) == expected_status()
        assert Path(path, ".env").read_text() == "SECRET=1\n"
        assert not Path(path, "build").exists()
        session.release()
    assert fingerprint(repo) == before

    # The pooled checkout went back to HEAD exactly: a lease without the state sees none.
    session = plain.provision_session(
        session_id="s", resources=[ResourceRequest("git-worktree")], workspace_root=str(repo)
    )
    path = (session.allocation("git-worktree") or {})["worktreePath"]
    assert _status(path) == []
    assert sorted(os.listdir(path)) == [".git", ".gitignore", "a.txt", "gone.txt", "pkg"]
    session.release()
    assert fingerprint(repo) == before
    reclaim_orphans(str(root), include_pooled=True)


@pytest.mark.parametrize(
    "options",
    [{"isolation": "clone"}, {"targetPath": "pkg"}, {"isolation": "clone", "targetPath": "pkg"}],
    ids=["clone", "sparse", "sparse-clone"],
)
def test_core_working_state_in_a_clone_and_a_sparse_checkout(
    tmp_path: Path, options: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    dirty_repo(repo)
    (repo / "pkg" / "mod.py").write_text("VALUE = 2\n")
    before = fingerprint(repo)
    orchestrator = create_default_orchestrator(
        git_worktree={"rootDirectory": str(tmp_path / "wt"), "workingState": True}
    )
    for _ in range(2):  # fresh, then pooled
        session = orchestrator.provision_session(
            session_id="s",
            resources=[ResourceRequest("git-worktree", options)],
            workspace_root=str(repo),
        )
        path = Path((session.allocation("git-worktree") or {})["worktreePath"])
        assert (path / "pkg" / "mod.py").read_text() == "VALUE = 2\n"
        expected = [*expected_status(), " M pkg/mod.py"]
        if "targetPath" in options:
            # Root files are in the cone (as `git sparse-checkout set --cone` has them),
            # notes/ is not: its untracked file stays out, as its tracked ones would.
            expected.remove(f"?? {UNTRACKED}")
            assert not (path / "notes").exists()
        assert _status(str(path)) == sorted(expected)
        session.release()
    assert fingerprint(repo) == before


def test_a_racily_clean_edit_is_in_the_snapshot(tmp_path: Path) -> None:
    """A file rewritten (same size) in the second its index entry was written looks clean by
    its stat data; git finds it only because the index is no older than the file. The
    snapshot's copy of the index must keep that mtime, or the edit is lost."""
    repo = tmp_path / "repo"
    repo.mkdir()
    dirty_repo(repo)
    git(repo, "config", "core.trustctime", "false")  # ctime must not give the edit away
    target = repo / "pkg" / "mod.py"
    mtime = target.stat().st_mtime_ns
    target.write_text("VALUE = 2\n")  # same size as "VALUE = 1\n"
    os.utime(target, ns=(mtime, mtime))
    os.utime(repo / ".git" / "index", ns=(mtime, mtime))
    time.sleep(1.1)  # a copy made now, with a new mtime, would be a second younger
    orchestrator = create_default_orchestrator(
        git_worktree={"rootDirectory": str(tmp_path / "wt"), "workingState": True, "pool": False}
    )
    session = orchestrator.provision_session(
        session_id="s", resources=[ResourceRequest("git-worktree")], workspace_root=str(repo)
    )
    path = Path((session.allocation("git-worktree") or {})["worktreePath"])
    assert (path / "pkg" / "mod.py").read_text() == "VALUE = 2\n"
    session.release()


def test_explicit_base_ref_in_the_core_is_that_commit_alone(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    head = dirty_repo(repo)
    orchestrator = create_default_orchestrator(
        git_worktree={"rootDirectory": str(tmp_path / "wt"), "workingState": True, "pool": False}
    )
    session = orchestrator.provision_session(
        session_id="s",
        resources=[ResourceRequest("git-worktree", {"baseRef": head})],
        workspace_root=str(repo),
    )
    allocation = session.allocation("git-worktree") or {}
    assert allocation["workingState"] is False
    assert _status(allocation["worktreePath"]) == []
    session.release()


def test_a_commit_made_in_the_worktree_is_whole(tmp_path: Path) -> None:
    """The index laid from the snapshot names trees only the snapshot held: a commit in the
    worktree must write its own (git checks its cache-tree's objects exist)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    dirty_repo(repo)
    orchestrator = create_default_orchestrator(
        git_worktree={"rootDirectory": str(tmp_path / "wt"), "workingState": True, "pool": False}
    )
    session = orchestrator.provision_session(
        session_id="s", resources=[ResourceRequest("git-worktree")], workspace_root=str(repo)
    )
    path = (session.allocation("git-worktree") or {})["worktreePath"]
    git(path, "commit", "-q", "-m", "in the worktree")
    assert run(repo, "fsck", "--full", "--no-dangling").returncode == 0
    assert git(path, "show", "HEAD:staged.txt") == "staged"
    session.release()


def test_bad_core_options_are_one_line(tmp_path: Path, repo: Path) -> None:
    from pytest_aiops import OptionError, ProvisioningError

    orchestrator = create_default_orchestrator(git_worktree={"rootDirectory": str(tmp_path)})
    for options, needle in (
        ({"workingState": "yes"}, 'Option "workingState" must be true or false'),
        ({"worktreeInclude": ".env"}, 'Option "worktreeInclude" must be a list of gitignore'),
    ):
        with pytest.raises(ProvisioningError) as caught:
            orchestrator.provision_session(
                session_id="s",
                resources=[ResourceRequest("git-worktree", options)],
                workspace_root=str(repo),
            )
        assert isinstance(caught.value.__cause__, OptionError)
        assert needle in str(caught.value.__cause__)
    for config, needle in (
        ({"workingState": "yes"}, 'Option "workingState" must be true or false'),
        ({"worktreeInclude": ".env"}, 'Option "worktreeInclude" must be a list of gitignore'),
    ):
        with pytest.raises(OptionError, match=needle):
            create_default_orchestrator(git_worktree=config)


# --- the CLI -----------------------------------------------------------------------------


def test_cli_run_working_state(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    dirty_repo(repo)
    before = fingerprint(repo)
    show = "import subprocess; print(subprocess.run(['git','status','--porcelain','--ignored'], capture_output=True, text=True).stdout)"  # noqa: E501
    command = [sys.executable, "-m", "pytest_aiops", "run", "--resource", "git-worktree"]
    common = ["--worktree-root", str(tmp_path / "wt"), "--", sys.executable, "-c", show]
    on = subprocess.run(
        [*command, "--working-state", "--worktree-include", ".env", *common],
        cwd=repo,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert on.returncode == 0, on.stderr
    assert sorted(on.stdout.strip("\n").splitlines()) == sorted(
        [*EXPECTED_STATUS, "?? .agent-context/", "?? notes/", "!! .env"]
    )
    off = subprocess.run(
        [*command, *common],
        cwd=repo,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip() == "?? .agent-context/"  # the discovery file alone
    assert fingerprint(repo) == before


# --- the run's snapshot directory --------------------------------------------------------


def test_a_dead_runs_snapshot_is_reclaimed_and_a_live_one_is_not(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pytest_aiops._worktrees.provider import SnapshotRun; "
            "run = SnapshotRun.create(); print(run.path, flush=True); sys.stdin.read()",
        ],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    dead = holder.stdout.readline().strip()
    live = SnapshotRun.create()
    try:
        assert os.path.isdir(dead)
        assert os.stat(dead).st_mode & 0o777 == 0o700
        assert os.path.dirname(dead) == snapshot_base()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        SnapshotRun.create().close()  # the next run reclaims the dead one's, not ours
        assert not os.path.exists(dead)
        assert not os.path.exists(dead + ".lock")
        assert os.path.isdir(live.path)
    finally:
        live.close()
        holder.kill()
        holder.communicate()
    assert not os.path.exists(live.path)


def test_a_killed_checkouts_own_snapshot_is_reclaimed(tmp_path: Path) -> None:
    """The core API's per-checkout snapshot of a SIGKILLed process is deleted by the next."""
    repo = tmp_path / "repo"
    repo.mkdir()
    head = dirty_repo(repo)
    root = tmp_path / "wt"
    code = (
        "import sys; from pytest_aiops._worktrees.locate import locate_repository; "
        "from pytest_aiops._worktrees.snapshot import private_snapshot; "
        "from pytest_aiops._worktrees.store import control_dir, ensure_root; "
        f"base = control_dir(ensure_root({str(root)!r})); "
        f"snap = private_snapshot(locate_repository({str(repo)!r}), {head!r}, [], base); "
        "print(snap.path, flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    left = holder.stdout.readline().strip()
    try:
        assert os.path.isdir(os.path.join(left, "objects"))
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert os.path.dirname(left) == str(root / ".pytest-aiops")
        orchestrator = create_default_orchestrator(
            git_worktree={"rootDirectory": str(root), "workingState": True}
        )
        orchestrator.provision_session(
            session_id="s", resources=[ResourceRequest("git-worktree")], workspace_root=str(repo)
        ).release()
        assert not os.path.exists(left)
    finally:
        holder.kill()
        holder.communicate()


def test_a_snapshot_git_cannot_take_is_one_line_naming_the_setting(
    pytester: pytest.Pytester, user_repo: Path, tmp_path: Path
) -> None:
    """``git add -A`` fails, e.g. for a required clean filter that is not installed (Git
    LFS's, on a machine without it): one line, naming the setting that avoids it."""
    (user_repo / "test_one.py").write_text(module("test_one.py"))
    (user_repo / ".gitattributes").write_text("a.txt filter=missing\n")
    git(user_repo, "config", "filter.missing.clean", "false")
    git(user_repo, "config", "filter.missing.required", "true")
    result = inner(pytester, user_repo, tmp_path)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "git_worktree: could not snapshot the working state of *add -A*; "
            'set the "workingState" option to false to check out the base ref alone; or set '
            "--aiops-working-state=false (ini aiops_working_state, env "
            "PYTEST_AIOPS_WORKING_STATE) or the module's pytest.mark.aiops(working_state=False)"
        ]
    )


# --- another local user ------------------------------------------------------------------


@needs_namespace
def test_a_planted_default_is_refused_and_the_root_setting_moves_the_snapshot_too() -> None:
    """uid 65534 plants ``/dev/shm/pytest-aiops-0``: the run refuses it, naming
    --aiops-worktree-root, and with that setting (plain and -n 2) the working state is in
    the worktree and nothing was written into the attacker's directory."""
    result = run_attack(
        """
        attacker('mkdir /tmp/evil && chmod 777 /tmp/evil && ln -s /tmp/evil "$1"',
                 "/dev/shm/pytest-aiops-0")
        repo = make_repo("/tmp/proj")
        with open("/tmp/proj/a.txt", "w") as handle:
            handle.write("changed\\n")
        with open("/tmp/proj/test_x.py", "w") as handle:
            handle.write(
                "def test_x(git_worktree):\\n"
                "    assert (git_worktree.path / 'a.txt').read_text() == 'changed\\\\n'\\n"
                "    assert (git_worktree.path / 'test_x.py').is_file()\\n"
            )
        base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark",
                "-p", "no:asyncio", "-p", "no:aiohttp", "--rootdir", "/tmp/proj", "/tmp/proj"]
        runs = {}
        for name, extra in (("refused", ["-n", "0"]),
                            ("plain", ["-n", "0", "--aiops-worktree-root", "/tmp/wt"]),
                            ("xdist", ["-n", "2", "--aiops-worktree-root", "/tmp/wt"])):
            run = sh(*base, *extra, cwd="/tmp/proj", env={**os.environ,
                                                          "PYTHONDONTWRITEBYTECODE": "1"})
            runs[name] = {"rc": run.returncode, "out": run.stdout}
        print(json.dumps({"runs": runs, "evil": os.listdir("/tmp/evil"),
                          "control": sorted(os.listdir("/tmp/wt/.pytest-aiops"))}))
        """
    )
    assert result["evil"] == []
    runs = result["runs"]
    refused = [line for line in runs["refused"]["out"].splitlines() if "must be a writable" in line]
    assert refused, runs["refused"]["out"]
    assert "--aiops-worktree-root" in refused[0]
    for name in ("plain", "xdist"):
        assert runs[name]["rc"] == 0, runs[name]["out"]
        assert "1 passed" in runs[name]["out"], runs[name]["out"]
    assert [n for n in result["control"] if n.startswith(("run-", "one-"))] == []
