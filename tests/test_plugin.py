"""The plugin in-process with pytester: options and their exact errors, header, fixtures, hooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_aiops.plugin import SETTINGS_KEY

from .git_helpers import git, record_git_calls
from .port_helpers import live_leases

pytest_plugins = ["pytester"]


pytestmark = pytest.mark.usefixtures("private_lock_dir")


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
def test_bad_values_are_one_line_usage_errors(
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
    # The declarations stay (see the next test); blocking them too unloads every name.
    pytester.runpytest("-p", "no:aiops", "--aiops-keep=all").assert_outcomes(passed=1, errors=1)
    blocked = pytester.runpytest(
        "-p", "no:aiops", "-p", "no:aiops-declarations", "--aiops-keep=all"
    )
    assert blocked.ret == pytest.ExitCode.USAGE_ERROR


def test_the_plugin_alone_still_declares_its_options_marker_and_hooks(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    """With the declarations plugin blocked, the plugin registers that module itself under
    another name: its options, ini keys, marker (under --strict-markers) and hook
    specifications stay declared, and nothing warns."""
    pytester.makeini(
        """
        [pytest]
        filterwarnings = error
        aiops_base_ref = HEAD
        """
    )
    pytester.makeconftest("def pytest_aiops_register_providers(register): pass\n")
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.aiops(base_ref="HEAD")
        def test_ports(port_range):
            assert len(port_range) == 8
        def test_names(pytestconfig):
            manager = pytestconfig.pluginmanager
            assert manager.get_plugin("aiops-declarations") is None
            assert manager.get_plugin("aiops-declarations-of-aiops") is not None
        """
    )
    result = pytester.runpytest(
        "-p", "no:aiops-declarations", "--strict-markers", "--aiops-ports-per-worker=8"
    )
    result.assert_outcomes(passed=2)
    assert "warning" not in result.stdout.str().lower()
    # Loaded by its own entry point, the module is the one registered under its name.
    names = pytester.runpytest("--aiops-ports-per-worker=8", "-k", "test_ports")
    names.assert_outcomes(passed=1, deselected=1)


def test_a_conftests_trylast_session_end_sees_the_resources_released(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    """The release runs in the plugin's own ``trylast`` ``pytest_sessionfinish``, registered
    at start-up: a conftest's ``trylast`` one (registered later, so called later) sees the
    worker closed, whenever the worker was first used."""
    pytester.makeconftest(
        """
        import pytest
        from pytest_aiops.plugin import _STATE_KEY

        @pytest.hookimpl(trylast=True)
        def pytest_sessionfinish(session):
            worker = session.config.stash[_STATE_KEY].worker_built
            print(f"AIOPS-CLOSED {worker._closed}")
        """
    )
    pytester.makepyfile("def test_uses_it(aiops_worker): assert aiops_worker.worker_id")
    result = pytester.runpytest("-s", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*AIOPS-CLOSED True*"])


def test_the_snapshot_looks_at_the_tests_left_after_every_deselection(
    pytester: pytest.Pytester, lock_dir: Path
) -> None:
    """A plugin or conftest deselecting in its own ``trylast`` hook (a sharding plugin)
    runs before the plugin decides on the working-state snapshot: a worktree test it
    deselected does not make this process build its worker (and snapshot the checkout)."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(items):
            items[:] = [item for item in items if item.name == "test_plain"]
        """
    )
    pytester.makepyfile(
        """
        from pytest_aiops.plugin import _STATE_KEY

        def test_worktree(git_worktree):
            pass

        def test_plain(request):
            assert request.config.stash[_STATE_KEY].worker_built is None
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("switch", [("-p", "no:aiops"), ("--aiops-disable",)])
def test_turned_off_in_a_project_that_names_its_options(
    pytester: pytest.Pytester, switch: tuple[str, ...]
) -> None:
    """ini keys, addopts, a marker under --strict-markers and a hook implementation all stay
    valid with the plugin off, under filterwarnings = error (no unknown-key warning)."""
    pytester.makeini(
        """
        [pytest]
        addopts = --strict-markers --aiops-keep=failed
        filterwarnings = error
        aiops_ports_per_worker = 8
        aiops_base_ref = HEAD
        """
    )
    pytester.makeconftest("def pytest_aiops_register_providers(register): pass\n")
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.aiops(base_ref="HEAD")
        def test_plain(): pass
        """
    )
    result = pytester.runpytest(*switch)
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("aiops:*")


@pytest.mark.inner_warnings(
    "*AiopsWarning: pytest-aiops is disabled (from ini aiops_disable): ports come from the "
    "kernel (bind to port 0) instead*"
)
def test_disable_switch_makes_the_fixtures_say_so(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naiops_disable = true\n")
    pytester.makepyfile(
        """
        import socket
        def test_plain(): pass
        def test_wants_ports(aiops_port, port_range):
            with socket.socket() as server:
                server.bind(("127.0.0.1", aiops_port))
            assert not port_range.leased
        def test_wants_a_worktree(git_worktree): pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:benchmark")  # own warning filters
    result.assert_outcomes(passed=2, errors=1)
    message = (
        "pytest-aiops is disabled (from ini aiops_disable), so its fixtures (port_range, "
        "git_worktree, provisioned_session, aiops_*) are unavailable; drop --aiops-disable "
        "/ aiops_disable / PYTEST_AIOPS_DISABLE to use them"
    )
    result.stdout.fnmatch_lines([message])
    result.stdout.no_fnmatch_line("aiops: *")
    strict = pytester.runpytest_subprocess("-p", "no:benchmark", "--aiops-port-fallback=error")
    strict.assert_outcomes(passed=1, errors=2)
    strict.stdout.fnmatch_lines([message])


def test_a_run_that_never_uses_the_fixtures_runs_no_git_and_leases_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lock_dir: Path, tmp_path: Path
) -> None:
    commit_all(pytester.path)
    calls = record_git_calls(tmp_path, monkeypatch)
    pytester.makepyfile("def test_x(): pass\ndef test_y(): pass")
    # pytest-benchmark, when installed, runs git describe itself at start-up.
    result = pytester.runpytest("-p", "no:benchmark")
    result.assert_outcomes(passed=2)
    assert not calls.exists()
    assert live_leases(lock_dir) == []
    assert not (lock_dir / "leases").exists()


# -- fixtures -------------------------------------------------------------------------------------


def test_port_range_fixture_gives_a_tests_ports_back_then_a_clear_error_at_its_bound(
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
            pair = port_range.next_ports(2)
            assert len(set(pair)) == 2 and all(p in port_range for p in pair)
            seen.append(sorted(pair))
            assert seen.count(seen[0]) == len(seen)  # the same two, given back each time

        def test_more_than_the_pool_may_hold(port_range):
            port_range.next_ports(3)
        """
    )
    result = pytester.runpytest(
        "--aiops-ports-per-worker=2",
        "--aiops-max-ports-per-worker=2",
        "--aiops-port-fallback=error",
        "--aiops-port-range=8100-8199",
    )
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * pytest_aiops._errors.PortsExhaustedError: port_range 81*-81* of worker master "
            "has no tcp port to hand out: 2 of its 2 ports are out, 0 are in use by other "
            "sockets (TIME_WAIT included), and the pool reached its bound of 2 ports; raise "
            "--aiops-max-ports-per-worker (ini aiops_max_ports_per_worker, env "
            "PYTEST_AIOPS_MAX_PORTS_PER_WORKER) (now 2)",
            "aiops master: ports 81*-81*",
        ]
    )


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
            f"git_worktree needs a git repository, but {pytester.path} is not inside one; set "
            "--aiops-repo (ini aiops_repo) to the repository under test"
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


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
            assert "PYTEST_CURRENT_TEST" not in aiops_worker.runtime.env
            assert env["AGENT_DISCOVERY_FILE"] == discovery == provisioned_session.discovery_file
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


ONE_TEST_PER_FIXTURE = """
import socket

def test_port_range(port_range):
    assert len(port_range) >= 1

def test_aiops_port(aiops_port):
    with socket.socket() as server:
        server.bind(("127.0.0.1", aiops_port))

def test_git_worktree(git_worktree):
    (git_worktree.path / "scratch.txt").write_text("mine")

def test_provisioned_session(provisioned_session):
    assert provisioned_session.injected_env()["AGENT_DISCOVERY_FILE"]

def test_aiops_worktree_factory(aiops_worktree_factory):
    with aiops_worktree_factory.worktree() as worktree:
        assert worktree.path.is_dir()
"""


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["plain", "n2"])
def test_a_user_project_runs_warning_free_under_w_error(
    pytester: pytest.Pytester, xdist: tuple[str, ...]
) -> None:
    """What a new user does first: one test per fixture, ``-W error``, plain and under xdist.

    A fresh interpreter (subprocess), so import-time and configure-time warnings count too.
    """
    pytester.makepyfile(test_user=ONE_TEST_PER_FIXTURE)
    commit_all(pytester.path)
    result = pytester.runpytest_subprocess("-p", "no:benchmark", "-W", "error", *xdist)
    result.assert_outcomes(passed=5)
    assert result.parseoutcomes().get("warnings", 0) == 0


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
            "git_worktree: pytest.mark.aiops got unknown option 'branch' "
            "(allowed: base_ref, isolation, target_path, working_state)"
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


# -- regressions from the QA review ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--aiops-port-range=20000-20009", "--aiops-ports-per-worker=16"],
            "--aiops-ports-per-worker (16 ports) do not fit in --aiops-port-range 20000-20009 "
            "(10 ports); lower --aiops-ports-per-worker, or widen --aiops-port-range "
            "(from --aiops-ports-per-worker)",
        ),
        (
            ["--aiops-ports-per-worker=40000"],
            "--aiops-ports-per-worker (40000 ports) do not fit in --aiops-port-range "
            "20000-26399 (6400 ports); lower --aiops-ports-per-worker, or widen "
            "--aiops-port-range (from --aiops-ports-per-worker)",
        ),
    ],
)
def test_ports_per_worker_must_fit_the_range_without_xdist(
    pytester: pytest.Pytester, lock_dir: Path, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_x(port_range): pass")
    result = pytester.runpytest("-p", "no:xdist", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: {message}" in result.stderr.lines
    assert live_leases(lock_dir) == []


def test_kept_worktree_survives_later_runs_and_gc_until_removed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fails="def test_f(git_worktree):\n    (git_worktree.path / 'evidence').touch()\n"
        "    assert False\n",
    )
    commit_all(pytester.path)
    first = pytester.runpytest_subprocess("-p", "no:benchmark", "--aiops-keep=failed")
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(
        [
            "aiops master: *kept worktree *",
            "aiops: worktrees kept by --aiops-keep stay until you remove them: `git worktree "
            "remove --force PATH` (or `rm -r` a clone), or `pytest-aiops gc --kept`",
        ]
    )
    kept_line = next(line for line in first.outlines if "kept worktree " in line)
    kept = Path(kept_line.split("kept worktree ", 1)[1])
    # A later run provisions through the same root (which reclaims orphans): the kept one stays.
    (pytester.path / "test_fails.py").unlink()
    pytester.makepyfile(test_passes="def test_p(git_worktree):\n    pass\n")
    pytester.runpytest_subprocess("-p", "no:benchmark").assert_outcomes(passed=1)
    assert (kept / "evidence").exists()

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "pytest_aiops", *args],
            cwd=pytester.path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    states = {w["path"]: w["state"] for w in json.loads(cli("status", "--json"))["worktrees"]}
    assert states[str(kept)] == "kept"
    assert "orphaned" not in states.values()
    assert "'git worktree remove --force PATH' or 'pytest-aiops gc --kept' removes them" in cli(
        "status"
    )
    assert str(kept) not in cli("gc")
    assert (kept / "evidence").exists()
    assert str(kept) in git(pytester.path, "worktree", "list")
    assert f"removed kept worktree {kept} " in cli("gc", "--kept")
    assert not kept.exists()
    assert git(pytester.path, "worktree", "list").count("\n") == 0


def test_kept_worktree_removed_with_git_is_forgotten(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_keep="def test_k(git_worktree):\n    pass\n")
    commit_all(pytester.path)
    result = pytester.runpytest_subprocess("-p", "no:benchmark", "--aiops-keep=all")
    result.assert_outcomes(passed=1)
    kept_line = next(line for line in result.outlines if "kept worktree " in line)
    kept = kept_line.split("kept worktree ", 1)[1]
    git(pytester.path, "worktree", "remove", "--force", kept)
    out = subprocess.run(
        [sys.executable, "-m", "pytest_aiops", "gc"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"removed orphaned worktree {kept} " in out  # only its record was left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--aiops-lock-dir=/etc/passwd"],
            "ERROR: --aiops-lock-dir must be a directory this user can create or write to, not "
            "'/etc/passwd': /etc/passwd is not a directory (from --aiops-lock-dir)",
        ),
        (
            ["--aiops-lock-dir=/etc/passwd/locks"],
            "ERROR: --aiops-lock-dir must be a directory this user can create or write to, not "
            "'/etc/passwd/locks': /etc/passwd is not a directory (from --aiops-lock-dir)",
        ),
    ],
)
def test_unusable_lock_dir_is_a_usage_error_at_start(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_x(port_range): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == message


def test_bad_repo_or_base_ref_is_a_one_line_fixture_error(pytester: pytest.Pytester) -> None:
    commit_all(pytester.path)
    pytester.makepyfile("def test_wt(git_worktree): pass")
    missing = pytester.path / "nonexist"
    result = pytester.runpytest(f"--aiops-repo={missing}")
    result.assert_outcomes(errors=1)
    lines = result.stdout.lines
    start = lines.index(next(line for line in lines if "ERROR at setup of test_wt" in line))
    assert lines[start + 1] == (
        f"git_worktree needs a git repository, but {missing} is not a directory; set "
        "--aiops-repo (ini aiops_repo) to the repository under test"
    )
    assert "Traceback" not in result.stdout.str()

    result = pytester.runpytest("--aiops-base-ref=nosuchref")
    result.assert_outcomes(errors=1)
    lines = result.stdout.lines
    start = lines.index(next(line for line in lines if "ERROR at setup of test_wt" in line))
    assert lines[start + 1] == (
        f'git_worktree: Option "baseRef" must name a commit in {pytester.path}, not '
        "'nosuchref' (git rev-parse found no such commit); set --aiops-base-ref (ini "
        "aiops_base_ref) or the module's pytest.mark.aiops(base_ref=...) to an existing commit"
    )
    assert "worker.py" not in result.stdout.str()  # no trace through the plugin


def test_provisioned_session_env_names_the_discovery_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json, subprocess, sys

        def test_child_finds_the_discovery_file(provisioned_session, port_range):
            code = ("import json, os; "
                    "print(json.load(open(os.environ['AGENT_DISCOVERY_FILE']))['sessionId'])")
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True, env=provisioned_session.injected_env()).stdout
            assert out.strip() == provisioned_session.session_id
            assert provisioned_session.env["AGENT_DISCOVERY_FILE"] == (
                provisioned_session.discovery_file)
            assert provisioned_session.runtime.discovery_file_path == (
                provisioned_session.discovery_file)
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
