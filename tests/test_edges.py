"""Issue 12, items 7-8: errors at the edges -- a full disk, non-UTF-8 paths, NUL characters,
and the notes of a rollback that failed too.

A full disk is real: a 2 MiB tmpfs mounted in a private mount namespace (``unshare -m``,
as root), so the machine's own mounts are never touched. Non-UTF-8 paths are real
directories with bytes names (``b"\\xff"``), as ``os.fsdecode`` hands them to Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import (
    DiscoverySnapshot,
    OptionError,
    ProvisioningError,
    ResourceRequest,
    create_default_orchestrator,
)

from .git_helpers import git
from .inner_run_helpers import check_inner_warnings
from .process_helpers import child_env, namespace_problem, run_driver

PROBLEM = namespace_problem(
    tools=("unshare",),
    mount_point="/mnt",
    root_for="a tmpfs is mounted in a private mount namespace",
)
needs_namespace = pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))

PRELUDE = r"""
import json, os, subprocess, sys
FULL, REPO = sys.argv[1], sys.argv[2]

def sh(*args, **kw):
    run = subprocess.run(list(args), capture_output=True, text=True, **kw)
    return {"rc": run.returncode, "out": run.stdout, "err": run.stderr}

def leftovers():
    '''Everything under the tmpfs except the (empty) root and control dir we made.'''
    found = []
    for top, dirs, files in os.walk(FULL):
        found += [os.path.join(top, n) for n in files]
        found += [os.path.join(top, d) for d in dirs if d != ".pytest-aiops" and top != FULL]
    return found

def repo_state():
    listing = sh("git", "-C", REPO, "worktree", "list", "--porcelain")["out"]
    return {"worktrees": listing.count("worktree "),
            "registrations": os.listdir(os.path.join(REPO, ".git", "worktrees"))
            if os.path.isdir(os.path.join(REPO, ".git", "worktrees")) else [],
            "status": sh("git", "-C", REPO, "status", "--porcelain")["out"]}
"""


def run_on_full_disk(tmp_path: Path, repo: Path, script: str, size: str = "2m") -> dict[str, Any]:
    """Run ``script`` (as root) with a ``size`` tmpfs at ``FULL``; return its last JSON line."""
    full = tmp_path / "full"
    full.mkdir()
    code = PRELUDE + textwrap.dedent(script)
    shell = f'mount -t tmpfs -o size={size} tmpfs "$2" && exec "$0" -c "$1" "$2" "$3"'
    env = child_env()
    for key in ("PYTEST_ADDOPTS", "PYTEST_AIOPS_WORKTREE_ROOT", "PYTEST_AIOPS_LOCK_DIR"):
        env.pop(key, None)
    namespace = ["unshare", "-m", "--propagation", "private", "sh", "-c", shell]
    return run_driver([*namespace, sys.executable, code, str(full), str(repo)], env)


@pytest.fixture
def big_repo(make_repo: Any) -> Path:
    """300 files of 20 kB: about 6 MiB checked out, three times what the tmpfs holds."""
    return Path(make_repo({f"f{i:03}.txt": "x" * 20_000 + str(i) for i in range(300)}))


def _assert_no_space_line(line: str, root: str) -> None:
    assert "No space left on device" in line, line
    assert root in line, line
    assert "unable to write file" not in line, line


# ------------------------------------------------------------------------------- full disk


@needs_namespace
@pytest.mark.parametrize("isolation", ["worktree", "clone"])
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing(
    tmp_path: Path, big_repo: Path, isolation: str
) -> None:
    result = run_on_full_disk(
        tmp_path,
        big_repo,
        f"""
        from pytest_aiops import NoSpaceError, ResourceRequest, create_default_orchestrator
        root = os.path.join(FULL, "root")
        request = ResourceRequest("git-worktree", {{"rootDirectory": root,
                                                   "isolation": {isolation!r}}})
        try:
            create_default_orchestrator().provision_session(
                session_id="s", resources=[request], workspace_root=REPO)
            error = None
        except Exception as caught:
            error = {{"message": str(caught), "cause": type(caught.__cause__).__name__,
                      "errno": getattr(caught.__cause__, "errno", None)}}
        print(json.dumps({{"error": error, "left": leftovers(), "repo": repo_state()}}))
        """,
    )
    error = result["error"]
    assert error is not None
    assert error["cause"] == "NoSpaceError"
    assert error["errno"] == 28  # ENOSPC: also an OSError, as the builtin would be
    [line] = error["message"].splitlines()
    _assert_no_space_line(line, str(tmp_path / "full" / "root"))
    assert "set the rootDirectory option" in line
    assert result["left"] == []
    assert result["repo"] == {"worktrees": 1, "registrations": [], "status": ""}


@needs_namespace
def test_an_already_full_disk_fails_on_our_own_record_and_leaves_nothing(
    tmp_path: Path, repo: Path
) -> None:
    result = run_on_full_disk(
        tmp_path,
        repo,
        """
        from pytest_aiops import ResourceRequest, create_default_orchestrator
        root = os.path.join(FULL, "root")
        os.makedirs(os.path.join(root, ".pytest-aiops"), mode=0o700)
        os.chmod(root, 0o700)
        with open(os.path.join(FULL, "ballast"), "wb") as handle:
            try:
                while True:
                    handle.write(b"x" * 65536)
                    handle.flush()
            except OSError:
                pass
        try:
            create_default_orchestrator().provision_session(
                session_id="s",
                resources=[ResourceRequest("git-worktree", {"rootDirectory": root})],
                workspace_root=REPO)
            error = None
        except Exception as caught:
            error = {"message": str(caught), "cause": type(caught.__cause__).__name__}
        os.unlink(os.path.join(FULL, "ballast"))
        print(json.dumps({"error": error, "left": leftovers(), "repo": repo_state()}))
        """,
    )
    assert result["error"] is not None
    assert result["error"]["cause"] == "NoSpaceError"
    [line] = result["error"]["message"].splitlines()
    _assert_no_space_line(line, str(tmp_path / "full" / "root"))
    assert result["left"] == []
    assert result["repo"] == {"worktrees": 1, "registrations": [], "status": ""}


@needs_namespace
def test_a_full_disk_in_the_fixture_and_the_cli_is_one_line_with_their_setting(
    tmp_path: Path, big_repo: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_full.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', range(3))\n"
        "def test_x(git_worktree, n):\n    pass\n"
    )
    result = run_on_full_disk(
        tmp_path,
        big_repo,
        f"""
        root = os.path.join(FULL, "root")
        plugin = sh(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
                    "no:benchmark", "-p", "no:asyncio", "-p", "no:aiohttp", "-n", "0", "-q",
                    "-rE",
                    "--aiops-repo", REPO, "--aiops-worktree-root", root, {str(project)!r},
                    cwd={str(project)!r})
        cli = sh(sys.executable, "-m", "pytest_aiops", "run", "--worktree-root", root,
                 "--lock-dir", os.path.join(FULL, "locks"), "--", "true", cwd=REPO)
        print(json.dumps({{"plugin": plugin, "cli": cli, "left": leftovers(),
                          "repo": repo_state()}}))
        """,
    )
    root = str(tmp_path / "full" / "root")
    out = result["plugin"]["out"]
    assert result["plugin"]["rc"] == 1, out
    assert "3 errors" in out, out
    assert "unable to write file" not in out
    errors = [line for line in out.splitlines() if line.startswith("git_worktree: ")]
    assert len(errors) == 3, out  # one line per test, not git's per-file complaints
    for line in errors:
        _assert_no_space_line(line, root)
        assert "--aiops-worktree-root" in line
        assert "rootDirectory" not in line
    cli = result["cli"]
    assert cli["rc"] == 1, cli
    [line] = cli["err"].splitlines()
    assert line.startswith("pytest-aiops: error: ")
    _assert_no_space_line(line, root)
    assert "--worktree-root" in line
    assert "rootDirectory" not in line
    assert [p for p in result["left"] if "/root/" in p] == []
    assert result["repo"] == {"worktrees": 1, "registrations": [], "status": ""}


def test_a_git_failure_message_is_cut_to_a_few_lines() -> None:
    from pytest_aiops._worktrees.git import summarize

    text = "\n".join(f"error: unable to write file f{i}" for i in range(2000)) + "\nfatal: x"
    summary = summarize(text)
    assert summary.splitlines() == [
        "error: unable to write file f0",
        "error: unable to write file f1",
        "error: unable to write file f2",
        "... (1997 more lines)",
        "fatal: x",
    ]


# -------------------------------------------------------------------------- non-UTF-8 paths


@pytest.fixture
def bytes_repo(tmp_path: Path) -> str:
    """A repository whose path is not valid UTF-8 (``r\\xff\\xfe``), as ``os.fsdecode`` gives."""
    path = os.fsencode(tmp_path) + b"/r\xff\xfe"
    os.mkdir(path)
    with open(path + b"/a.txt", "w") as handle:
        handle.write("a\n")
    (Path(os.fsdecode(path)) / "pkg").mkdir()
    (Path(os.fsdecode(path)) / "pkg" / "b.txt").write_text("b\n")
    repo = os.fsdecode(path)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


@pytest.mark.parametrize(
    "options",
    [{}, {"isolation": "clone"}, {"targetPath": "pkg"}, {"root": True}],
    ids=["worktree", "clone", "sparse", "default-root"],
)
def test_a_non_utf8_repository_and_root_work(
    bytes_repo: str, tmp_path: Path, lock_dir: Path, options: dict[str, Any]
) -> None:
    request_options = {k: v for k, v in options.items() if k != "root"}
    if "root" not in options:
        request_options["rootDirectory"] = os.fsdecode(os.fsencode(tmp_path) + b"/root\xfe")
    locks = os.fsdecode(os.fsencode(lock_dir) + b"/l\xff")
    orchestrator = create_default_orchestrator()
    for _ in range(2):  # the second one comes from the pool
        session = orchestrator.provision_session(
            session_id="s",
            resources=[
                ResourceRequest("git-worktree", request_options),
                # Its own ports (31000-31127), not the default range: leases of one network
                # namespace exclude each other whatever their lock directory, so concurrent
                # runs on the machine could hold all four default blocks (seen in CI).
                ResourceRequest(
                    "port-range",
                    {"lockDirectory": locks, "basePort": 31000, "blockSize": 32, "blockCount": 4},
                ),
            ],
            workspace_root=bytes_repo,
        )
        try:
            worktree = session.allocation("git-worktree")
            assert worktree is not None
            assert os.path.isfile(os.path.join(worktree["worktreePath"], "pkg", "b.txt"))
            assert git(worktree["worktreePath"], "status", "--porcelain") == ""
            injection = session.build_runtime_injection()
            loaded = DiscoverySnapshot.load(injection.discovery_file_path)
            assert loaded.allocation("git-worktree") == worktree
            ports = loaded.allocation("port-range")
            assert ports is not None
            assert os.path.isdir(os.path.dirname(ports["lockPath"]))
        finally:
            session.release()
    assert git(bytes_repo, "status", "--porcelain") == ""


def test_a_non_utf8_lock_dir_works_under_xdist_and_is_refused_on_its_command_line(
    tmp_path: Path, lock_dir: Path
) -> None:
    (tmp_path / "test_port.py").write_text(
        "def test_port(port_range):\n    assert port_range.start\n"
    )
    locks = os.fsdecode(os.fsencode(lock_dir) + b"/l\xff")
    env = child_env(PYTEST_ADDOPTS="-p no:asyncio -p no:aiohttp")
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_XDIST_")}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", *args]
        command[3:3] = ["-p", "no:benchmark"]
        result = subprocess.run(
            [*command, "test_port.py"],
            capture_output=True,
            encoding="utf-8",
            # The header names the lock dir, bytes and all; escaped, since a report with a
            # lone surrogate cannot travel back through this suite's own xdist.
            errors="backslashreplace",
            cwd=tmp_path,
            env={**env, **extra},
            check=False,
        )
        assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
        check_inner_warnings(result.stdout, result.stderr, [])
        return result

    passed = run(PYTEST_AIOPS_LOCK_DIR=locks)
    assert passed.returncode == 0, passed.stdout
    assert "1 passed" in passed.stdout
    assert os.path.exists(os.path.join(locks, "ports.lock"))
    refused = run(f"--aiops-lock-dir={locks}")
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR
    [line] = [line for line in refused.stderr.splitlines() if line.strip()]
    assert line.startswith("ERROR: --aiops-lock-dir must be valid UTF-8 with pytest-xdist")
    assert "PYTEST_AIOPS_LOCK_DIR" in line


# ------------------------------------------------------------------------------------ NUL


@pytest.mark.parametrize(
    ("kind", "option"),
    [
        ("git-worktree", "baseRef"),
        ("git-worktree", "targetPath"),
        ("git-worktree", "rootDirectory"),
        ("port-range", "lockDirectory"),
    ],
)
def test_a_nul_in_an_option_is_named(repo: Path, tmp_path: Path, kind: str, option: str) -> None:
    with pytest.raises(ProvisioningError) as info:
        create_default_orchestrator().provision_session(
            session_id="s",
            resources=[ResourceRequest(kind, {option: "ma\0in"})],
            workspace_root=repo,
        )
    cause = info.value.__cause__
    assert isinstance(cause, OptionError)
    assert cause.option == option
    assert f'Option "{option}" contains a NUL character' in str(cause)
    assert os.listdir(tmp_path) == ["repo0"]  # nothing created


def test_a_nul_in_the_workspace_root_is_named(repo: Path) -> None:
    with pytest.raises(OptionError, match='"workspace_root" contains a NUL character'):
        create_default_orchestrator().provision_session(
            session_id="s", resources=[], workspace_root=f"{repo}\0x"
        )


def test_a_nul_in_a_plugin_setting_and_a_cli_resource_is_named(
    pytester: pytest.Pytester, repo: Path
) -> None:
    pytester.makeini("[pytest]\naiops_base_ref = ma\0in\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-n", "0", f"--aiops-repo={repo}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "ERROR: --aiops-base-ref contains a NUL character (\\0) at index 2: 'ma\\x00in' "
        "(from ini aiops_base_ref)" in result.stderr.str()
    )
    resource = 'git-worktree:{"baseRef": "ma\\u0000in"}'
    run = subprocess.run(
        [sys.executable, "-m", "pytest_aiops", "run", "--resource", resource, "--", "true"],
        capture_output=True,
        text=True,
        cwd=repo,
        env=child_env(),
        check=False,
    )
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    assert 'Option "baseRef" contains a NUL character' in line


# ------------------------------------------------------------- rollback notes (item 8)


_PROVIDERS = """
from pytest_aiops import OptionError, ResourceLease

class LeakyRelease:
    kind = "leaky"
    def provision(self, *, session_id, workspace_root, options):
        def release():
            raise OSError(16, "Device or resource busy", "/srv/leaky")
        return ResourceLease("leaky", {"id": 1}, release)

class Broken:
    kind = "broken"
    def provision(self, *, session_id, workspace_root, options):
        raise OptionError("size", 'Option "size" must be small, not "huge".')
"""


def test_the_fixture_and_cli_errors_keep_the_rollback_notes(
    pytester: pytest.Pytester, repo: Path
) -> None:
    pytester.makeconftest(
        _PROVIDERS
        + "\ndef pytest_aiops_register_providers(register):\n"
        + "    register(LeakyRelease())\n    register(Broken())\n"
        + "\ndef pytest_aiops_session_resources(config, worker_id):\n"
        + "    return [{'kind': 'leaky'}, {'kind': 'broken'}]\n"
    )
    pytester.makepyfile("def test_x(provisioned_session):\n    pass\n")
    result = pytester.runpytest_inprocess("-n", "0", f"--aiops-repo={repo}")
    result.assert_outcomes(errors=1)
    [line] = [ln for ln in result.outlines if ln.startswith("provisioned_session: ")]
    assert 'Option "size" must be small' in line
    assert "; rollback of leaky also failed: OSError(16, 'Device or resource busy')" in line

    from pytest_aiops import ResourceProvisioningOrchestrator
    from pytest_aiops._cli.output import one_line

    namespace: dict[str, Any] = {}
    exec(_PROVIDERS, namespace)  # the same providers, in the core
    orchestrator = ResourceProvisioningOrchestrator(
        [namespace["LeakyRelease"](), namespace["Broken"]()]
    )
    with pytest.raises(ProvisioningError) as info:
        orchestrator.provision_session(
            session_id="s", resources=[{"kind": "leaky"}, {"kind": "broken"}], workspace_root=repo
        )
    [cli_line] = one_line(info.value).splitlines()
    assert cli_line.startswith('Resource provisioning failed: Option "size" must be small')
    assert cli_line.endswith(
        "; rollback of leaky also failed: OSError(16, 'Device or resource busy')"
    )
