"""The plugin in-process with pytester: options and their exact errors, header, fixtures, hooks."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from pytest_aiops.plugin import SETTINGS_KEY

from .conftest import git
from .test_plugin_objects import live_leases

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def private_lock_dir(lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every inner run leases from a private lock directory; no PYTEST_AIOPS_* leaks in."""
    for key in list(os.environ):
        if key.startswith("PYTEST_AIOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PYTEST_AIOPS_LOCK_DIR", str(lock_dir))
    return lock_dir


def commit_all(path: Path) -> None:
    """Make ``path`` (pytester's directory) a git repository with everything committed."""
    if not (path / ".git").exists():
        git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "snapshot", "--allow-empty")


# -- settings ---------------------------------------------------------------------------------


def test_defaults(pytester: pytest.Pytester, lock_dir: Path) -> None:
    settings = pytester.parseconfigure().stash[SETTINGS_KEY]
    assert settings.ports_per_worker == 32
    assert settings.port_range == (20000, 26399)
    assert settings.keep == "none"
    assert settings.isolation == "worktree"
    assert settings.resources == ("port-range",)
    assert settings.base_ref == "HEAD"
    assert settings.lock_dir == str(lock_dir)
    assert settings.source("lock_dir") == "from env PYTEST_AIOPS_LOCK_DIR"
    assert settings.source("ports_per_worker") == "default"


def test_precedence_cli_over_env_over_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\naiops_ports_per_worker = 8\naiops_base_ref = main\n")
    assert pytester.parseconfigure().stash[SETTINGS_KEY].ports_per_worker == 8
    monkeypatch.setenv("PYTEST_AIOPS_PORTS_PER_WORKER", "16")
    settings = pytester.parseconfigure().stash[SETTINGS_KEY]
    assert (settings.ports_per_worker, settings.base_ref) == (16, "main")
    assert settings.source("ports_per_worker") == "from env PYTEST_AIOPS_PORTS_PER_WORKER"
    settings = pytester.parseconfigure("--aiops-ports-per-worker=4").stash[SETTINGS_KEY]
    assert settings.ports_per_worker == 4
    assert settings.source("base_ref") == "from ini aiops_base_ref"


@pytest.mark.parametrize(
    ("args", "env", "ini", "message"),
    [
        (
            [],
            {},
            "aiops_ports_per_worker = x",
            "--aiops-ports-per-worker must be an integer >= 1, not 'x' "
            "(from ini aiops_ports_per_worker)",
        ),
        (
            ["--aiops-ports-per-worker=0"],
            {},
            "",
            "--aiops-ports-per-worker must be an integer >= 1, not '0' "
            "(from --aiops-ports-per-worker)",
        ),
        (
            [],
            {"PYTEST_AIOPS_PORT_RANGE": "30000-20000"},
            "",
            "--aiops-port-range must be START-END with 1 <= START <= END <= 65535 "
            "(e.g. 20000-26399), not '30000-20000' (from env PYTEST_AIOPS_PORT_RANGE)",
        ),
        (
            [],
            {},
            "aiops_keep = sometimes",
            "--aiops-keep must be one of none, failed, all, not 'sometimes' (from ini aiops_keep)",
        ),
        (
            ["--aiops-isolation=chroot"],
            {},
            "",
            "--aiops-isolation must be one of worktree, clone, not 'chroot' "
            "(from --aiops-isolation)",
        ),
        (
            [],
            {"PYTEST_AIOPS_DISABLE": "maybe"},
            "",
            "--aiops-disable must be one of 1, true, yes, on, 0, false, no, off, not 'maybe' "
            "(from env PYTEST_AIOPS_DISABLE)",
        ),
        (
            ["--aiops-base-ref=--upload-pack=x"],
            {},
            "",
            "--aiops-base-ref must be a git commit-ish without spaces that does not start with "
            "'-', not '--upload-pack=x' (from --aiops-base-ref)",
        ),
        (
            ["--aiops-resources=port-range,nope"],
            {},
            "",
            "--aiops-resources names unknown resource kind 'nope' (registered kinds: "
            "git-worktree, port-range) (from --aiops-resources)",
        ),
    ],
)
def test_bad_values_are_one_line_usage_errors(  # noqa: PLR0917 - parametrized
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    ini: str,
    message: str,
) -> None:
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: {message}" in result.stderr.lines


def test_help_lists_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    for name in (
        "--aiops-disable",
        "--aiops-ports-per-worker=N",
        "--aiops-port-range=START-END",
        "--aiops-lock-dir=DIR",
        "--aiops-repo=PATH",
        "--aiops-worktree-root=DIR",
        "--aiops-base-ref=REF",
        "--aiops-isolation=LEVEL",
        "--aiops-resources=KINDS",
        "--aiops-keep=POLICY",
        "aiops_ports_per_worker (string):",
    ):
        assert name in text


# -- header, disabling, laziness ----------------------------------------------------------------


def test_header_is_pastable(pytester: pytest.Pytester, lock_dir: Path) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--aiops-ports-per-worker=8")
    result.stdout.fnmatch_lines(
        [
            "aiops: 8 ports per worker from 20000-26399, leased on first use; "
            f"lock dir {lock_dir}; *",
            "aiops: reproduce with --aiops-port-range=20000-26399 --aiops-ports-per-worker=8 "
            f"--aiops-lock-dir={lock_dir}",
        ]
    )


def test_no_aiops_unloads_everything(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_plain(): pass
        def test_wants_ports(port_range): pass
        """
    )
    result = pytester.runpytest("-p", "no:aiops")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'port_range' not found*"])
    result.stdout.no_fnmatch_line("aiops:*")
    assert pytester.runpytest("-p", "no:aiops", "--aiops-keep=all").ret == 4


def test_disable_switch_makes_the_fixtures_say_so(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naiops_disable = true\n")
    pytester.makepyfile(
        """
        def test_plain(): pass
        def test_wants_ports(port_range): pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "pytest-aiops is disabled (from ini aiops_disable), so its fixtures (port_range, "
            "git_worktree, provisioned_session, aiops_*) are unavailable; drop --aiops-disable "
            "/ aiops_disable / PYTEST_AIOPS_DISABLE to use them"
        ]
    )
    result.stdout.no_fnmatch_line("aiops: *")


def test_a_run_that_never_uses_the_fixtures_runs_no_git_and_leases_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lock_dir: Path, tmp_path: Path
) -> None:
    commit_all(pytester.path)
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "git-calls"
    fake = bin_dir / "git"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pytester.makepyfile("def test_x(): pass\ndef test_y(): pass")
    # pytest-benchmark, when installed, runs git describe itself at start-up.
    result = pytester.runpytest("-p", "no:benchmark")
    result.assert_outcomes(passed=2)
    assert not calls.exists()
    assert live_leases(lock_dir) == []
    assert not (lock_dir / "leases").exists()


# -- fixtures -------------------------------------------------------------------------------------


def test_port_range_fixture_hands_out_distinct_ports_then_a_clear_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest
        seen = []

        @pytest.mark.parametrize("i", range(3))
        def test_take(port_range, i):
            assert len(port_range) == 2 and port_range.primary == port_range.start
            assert list(port_range) == list(port_range.ports)
            seen.append(port_range.next_port())
            assert len(set(seen)) == len(seen) and all(p in port_range for p in seen)
        """
    )
    result = pytester.runpytest("--aiops-ports-per-worker=2", "--aiops-port-range=24000-24099")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * pytest_aiops._errors.PortsExhaustedError: port_range 240*-240* of worker master "
            "has no unused port left: all 2 were handed out by next_port() or are in use by "
            "other processes; raise --aiops-ports-per-worker (ini aiops_ports_per_worker, env "
            "PYTEST_AIOPS_PORTS_PER_WORKER) (now 2)",
            "aiops master: ports 240*-240*",
        ]
    )


def test_address_in_use_failure_names_the_holder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket

        def test_bind_twice(port_range, aiops_port):
            first = socket.socket()
            first.bind(("127.0.0.1", aiops_port))
            first.listen()
            second = socket.socket()
            try:
                second.bind(("127.0.0.1", aiops_port))
            finally:
                first.close()
                second.close()
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- aiops: who holds the port -*",
            f"this worker (master, pid {os.getpid()}) leases *; lock dir *",
            "port *: inside this worker's own lease, so no other pytest-aiops run holds it: a "
            "server this worker started (in this or an earlier test) is still listening, or a "
            "process outside pytest-aiops is; see `ss -ltnp 'sport = :*'`",
        ]
    )


def test_address_in_use_names_another_runs_lease(pytester: pytest.Pytester, lock_dir: Path) -> None:
    from pytest_aiops import create_port_range_provider

    lease = create_port_range_provider().provision(
        session_id="the-other-run",
        workspace_root=str(pytester.path),
        options={"basePort": 25000, "blockSize": 4, "blockCount": 1},
    )
    try:
        pytester.makepyfile(
            """
            import socket

            def test_hardcoded_port(port_range):
                with socket.socket() as a, socket.socket() as b:
                    a.bind(("127.0.0.1", 25001))
                    try:
                        b.bind(("127.0.0.1", 25001))
                    except OSError as e:
                        raise OSError(e.errno, f"{e.strerror}: port 25001") from None
            """
        )
        result = pytester.runpytest("--aiops-port-range=24000-24999")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            [
                f"port 25001: leased by pid {os.getpid()} on * (session 'the-other-run', "
                "top-level lease 25000-25003)"
            ]
        )
    finally:
        lease.release()


def test_git_worktree_per_module_isolated_and_marker_base_ref(pytester: pytest.Pytester) -> None:
    (pytester.path / "data.py").write_text("original\n")
    commit_all(pytester.path)
    git(pytester.path, "tag", "v1")
    (pytester.path / "data.py").write_text("second\n")
    commit_all(pytester.path)
    pytester.makepyfile(
        test_a="""
        def test_edit(git_worktree):
            path = git_worktree.path / "data.py"
            assert path.read_text() == "second\\n"
            path.write_text("edited in a\\n")
            (git_worktree.path / "untracked.txt").write_text("x")
            assert git_worktree.base_ref == "HEAD"

        def test_same_module_same_worktree(git_worktree):
            assert (git_worktree.path / "data.py").read_text() == "edited in a\\n"
        """,
        test_b="""
        import pytest
        pytestmark = pytest.mark.aiops(base_ref="v1")

        def test_pristine_at_v1(git_worktree):
            assert (git_worktree.path / "data.py").read_text() == "original\\n"
            assert not (git_worktree.path / "untracked.txt").exists()
            assert git_worktree.base_ref == "v1"
        """,
    )
    (pytester.path / "test_c.py").write_text(
        "import os, subprocess, sys\n"
        "import pytest\n"
        "pytestmark = pytest.mark.aiops(isolation='clone')\n"
        "def test_clone(git_worktree):\n"
        "    assert git_worktree.isolation == 'clone'\n"
        "    env = git_worktree.env()\n"
        "    assert env['PYTHONPATH'].split(os.pathsep)[0] == str(git_worktree.path)\n"
        "    assert env['AGENT_WORKTREE_PATH'] == str(git_worktree.path)\n"
        "    code = 'import importlib.util; print(importlib.util.find_spec(\"data\").origin)'\n"
        "    out = subprocess.run([sys.executable, '-c', code], cwd='/',\n"
        "                         env=env, capture_output=True, text=True, check=True).stdout\n"
        "    assert out.strip() == str(git_worktree.path / 'data.py')\n"
    )
    before = git(pytester.path, "status", "--porcelain", "--untracked-files=no")
    result = pytester.runpytest_subprocess("-p", "no:benchmark")
    result.assert_outcomes(passed=4)
    assert (pytester.path / "data.py").read_text() == "second\n"
    assert git(pytester.path, "status", "--porcelain", "--untracked-files=no") == before == ""
    assert git(pytester.path, "worktree", "list").count("\n") == 0  # only the main one left


def test_git_worktree_outside_a_repository_fails_only_where_requested(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        def test_plain(): pass
        def test_wt(git_worktree): pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            f"E   *ProvisioningError: git_worktree needs a git repository, but {pytester.path} is "
            "not inside one; set --aiops-repo (ini aiops_repo) to the repository under test"
        ]
    )


def test_keep_failed_keeps_only_failing_modules_worktrees(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fails="def test_f(git_worktree):\n    (git_worktree.path / 'evidence').touch()\n"
        "    assert False\n",
        test_passes="def test_p(git_worktree):\n    pass\n",
    )
    commit_all(pytester.path)
    result = pytester.runpytest_subprocess("-p", "no:benchmark", "--aiops-keep=failed")
    result.assert_outcomes(passed=1, failed=1)
    kept = [line for line in result.outlines if "kept worktree" in line]
    assert len(kept) == 1
    path = Path(kept[0].split("kept worktree ", 1)[1])
    assert (path / "evidence").exists()
    listed = git(pytester.path, "worktree", "list")
    assert str(path) in listed
    assert listed.count("\n") == 1
    git(pytester.path, "worktree", "remove", "--force", str(path))


def test_provisioned_session_with_a_custom_provider_and_worktree(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        from pytest_aiops import ResourceLease

        class Counter:
            kind = "counter"
            released = []

            def provision(self, *, session_id, workspace_root, options):
                return ResourceLease(
                    "counter", {"start": options.get("start", 0)},
                    lambda: Counter.released.append(session_id),
                    {"env": {"COUNTER_START": str(options.get("start", 0))}},
                )

        def pytest_aiops_register_providers(register):
            register(Counter())

        def pytest_aiops_session_resources(config, worker_id):
            return [{"kind": "counter", "options": {"start": 7}}]

        def pytest_unconfigure(config):
            assert len(Counter.released) == 1, Counter.released
        """
    )
    pytester.makepyfile(
        """
        import json, os

        def test_session(provisioned_session, aiops_worker, port_range):
            assert provisioned_session.allocation("counter") == {"start": 7}
            assert provisioned_session.allocation("port-range")["startPort"] == port_range.start
            assert provisioned_session.allocation("git-worktree")["worktreePath"]
            env = provisioned_session.injected_env()
            assert env["COUNTER_START"] == "7"
            assert env["AGENT_PORT_RANGE_START"] == str(port_range.start)
            discovery = aiops_worker.runtime.discovery_file_path
            assert aiops_worker.runtime.env["AGENT_DISCOVERY_FILE"] == discovery
            data = json.load(open(discovery))
            assert [c["kind"] for c in data["hardConstraints"]] == [
                "port-range", "git-worktree", "counter"]
            assert not os.path.exists(".agent-context")
        """
    )
    commit_all(pytester.path)
    result = pytester.runpytest_subprocess(
        "-p", "no:benchmark", "--aiops-resources=port-range,git-worktree"
    )
    result.assert_outcomes(passed=1)
    assert git(pytester.path, "worktree", "list").count("\n") == 0


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    text = result.stdout.str()
    for name in (
        "port_range [session scope]",
        "git_worktree [module scope]",
        "provisioned_session [session scope]",
        "aiops_worktree_factory [session scope]",
        "aiops_worker [session scope]",
        "aiops_port",
    ):
        assert name in text
    assert "This worker's block of TCP ports no other live process leases" in text


def test_marker_is_registered_and_validated(pytester: pytest.Pytester) -> None:
    commit_all(pytester.path)
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.aiops(branch="main")
        def test_wt(git_worktree): pass
        """
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "E * pytest_aiops._errors.OptionError: pytest.mark.aiops got unknown option 'branch' "
            "(allowed: base_ref, isolation, target_path)"
        ]
    )


def test_worktree_factory_for_function_scope(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_two_worktrees(aiops_worktree_factory, git_worktree):
            with aiops_worktree_factory.worktree() as first:
                with aiops_worktree_factory.worktree() as second:
                    assert len({first.path, second.path, git_worktree.path}) == 3
                    (first.path / "f").touch()
                    assert not (second.path / "f").exists()
        """
    )
    commit_all(pytester.path)
    pytester.runpytest_subprocess("-p", "no:benchmark").assert_outcomes(passed=1)
    out = subprocess.run(
        ["git", "worktree", "list"], cwd=pytester.path, capture_output=True, text=True, check=True
    ).stdout
    assert out.count("\n") == 1
