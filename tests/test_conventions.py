"""The conventions of pytest plugins: quiet when all is well, a leak fails the run, warnings
are ``pytest.PytestWarning``s pointing at the user's code, booleans are ``bool`` ini values."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import pytest_aiops.plugin
from pytest_aiops import AiopsWarning
from pytest_aiops._plugin.settings import OPTIONS
from pytest_aiops._ports.defaults import DEFAULT_PORT_RANGE, PORT_FALLBACK_ENV
from pytest_aiops._ports.pool import KernelPorts, PortRange

from .git_helpers import git
from .process_helpers import REPO_ROOT, child_env

pytest_plugins = ["pytester"]

QUIET = ("-p", "no:benchmark", "-p", "no:cacheprovider")

USES_PORTS = """
import socket

def test_port(aiops_port, port_range):
    with socket.create_server(("127.0.0.1", aiops_port)):
        pass
    assert port_range.next_port()
"""

#: A third-party provider whose release fails, as one of a user's could: the fault is real
#: (the release callable raises), nothing in pytest-aiops is patched.
FAILING_RELEASE = """
from pytest_aiops import ResourceLease

class Leaky:
    kind = "leaky"

    def provision(self, *, session_id, workspace_root, options):
        def release():
            raise OSError("the leaky resource would not go")
        return ResourceLease("leaky", {}, release, {})

def pytest_aiops_register_providers(register):
    register(Leaky())

def pytest_aiops_session_resources(config, worker_id):
    return [{"kind": "leaky", "options": {}}]
"""

USES_SESSION = """
def test_session(provisioned_session):
    assert provisioned_session.allocation("leaky") == {}
"""


@pytest.fixture(autouse=True)
def environment(private_lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("PYTEST_XDIST_"):
            monkeypatch.delenv(key)
    return private_lock_dir


def _aiops_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("aiops")]


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "n2"])
def test_a_quiet_successful_run_prints_nothing_extra(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    pytester.makepyfile(test_ports=USES_PORTS)
    quiet = pytester.runpytest_subprocess(*QUIET, "-q", *xdist, "--aiops-port-range=28000-28999")
    quiet.assert_outcomes(passed=1)
    assert _aiops_lines(quiet) == []
    # Asked for, the same run says what it leased (so the assertion above can fail).
    for flag in ("-v", "-rA"):
        told = pytester.runpytest_subprocess(*QUIET, flag, *xdist, "--aiops-port-range=28000-28999")
        told.assert_outcomes(passed=1)
        told.stdout.fnmatch_lines(["aiops * ports 28*-28*"])


def test_a_failed_run_says_what_it_leased(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ports=USES_PORTS + "\n\ndef test_fails():\n    assert False\n")
    result = pytester.runpytest_subprocess(*QUIET, "-q", "--aiops-port-range=28000-28999")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["aiops master: ports 28*-28*"])


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "n2"])
def test_a_failed_release_fails_the_run(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makeconftest(FAILING_RELEASE)
    pytester.makepyfile(test_session=USES_SESSION)
    git(pytester.path, "init", "-q", "-b", "main")
    git(pytester.path, "add", "-A")
    git(pytester.path, "commit", "-q", "-m", "snapshot")
    result = pytester.runpytest_subprocess(
        *QUIET, "-q", *xdist, "--aiops-resources=port-range", "--aiops-port-range=28000-28999"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["aiops *: release failed: ReleaseError: *the leaky resource would not go*"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_quiet_successful_run_still_says_what_it_left(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_tree="def test_tree(git_worktree):\n    assert git_worktree.path\n")
    git(pytester.path, "init", "-q", "-b", "main")
    git(pytester.path, "add", "-A")
    git(pytester.path, "commit", "-q", "-m", "snapshot")
    result = pytester.runpytest_subprocess(*QUIET, "-q", "--aiops-keep=all")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["aiops master: *kept worktree *", "aiops: worktrees kept by *"])
    kept = next(line for line in result.outlines if "kept worktree " in line)
    git(pytester.path, "worktree", "remove", "--force", kept.split("kept worktree ")[1])


# -- warnings ---------------------------------------------------------------------------------


def test_aiops_warning_is_a_pytest_warning_and_a_user_warning() -> None:
    from pytest_aiops import AiopsWarning

    assert issubclass(AiopsWarning, pytest.PytestWarning)
    assert issubclass(AiopsWarning, UserWarning)


def test_without_pytest_aiops_warning_is_a_user_warning_and_the_core_works(
    tmp_path: Path, lock_dir: Path
) -> None:
    # pytest made unimportable in a child, as where the core is used without it installed.
    script = (
        "import sys\n"
        "sys.modules['pytest'] = sys.modules['_pytest'] = None\n"
        "from pytest_aiops import AiopsWarning, ResourceRequest, create_default_orchestrator\n"
        "assert AiopsWarning.__mro__[1:] == (UserWarning, Warning, Exception, BaseException,"
        " object), AiopsWarning.__mro__\n"
        "with create_default_orchestrator().provision_session(session_id='s', resources=["
        "ResourceRequest('port-range', {'blockSize': 2})], workspace_root=sys.argv[1]) as s:\n"
        "    print(s.allocation('port-range')['startPort'])\n"
    )
    env = child_env(PYTEST_AIOPS_LOCK_DIR=str(lock_dir))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()


def test_filtering_pytest_warnings_silences_the_plugins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_port="def test_port(aiops_port):\n    assert aiops_port\n")
    result = pytester.runpytest_subprocess(
        *QUIET, "--aiops-disable", "-W", "error", "-W", "ignore::pytest.PytestWarning"
    )
    result.assert_outcomes(passed=1)
    error = pytester.runpytest_subprocess(*QUIET, "--aiops-disable", "-W", "error")
    error.assert_outcomes(errors=1)  # so the run above can fail
    error.stdout.fnmatch_lines(["*AiopsWarning: pytest-aiops is disabled*"])


def test_kernel_port_warnings_point_at_the_callers_code() -> None:
    stand_in = KernelPorts("pytest-aiops is disabled (for this test)")
    full = PortRange(28990, 28990, probe=False, fallback="kernel")
    full.next_port()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stand_in.next_port()
        full.next_port()
    assert [Path(w.filename) for w in caught] == [Path(__file__)] * 2
    assert all(issubclass(w.category, AiopsWarning) for w in caught)


TAKE_OUTSIDE = """
import warnings
from pytest_aiops import take_port

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    port = take_port()
[warning] = caught
print(warning.filename)
print(warning.message)
"""


def test_take_port_outside_pytest_warns_at_the_caller_and_names_the_variable(
    tmp_path: Path,
) -> None:
    script = tmp_path / "helper.py"
    script.write_text(TAKE_OUTSIDE)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=child_env(), check=True
    ).stdout.splitlines()
    assert out[0] == str(script)
    assert out[1] == (
        "no pytest-aiops worker runs in this process: ports come from the kernel (bind to port "
        "0) instead, so nothing keeps other runs off them and they differ run after run; set "
        "PYTEST_AIOPS_PORT_FALLBACK=error to fail instead"
    )
    assert "--aiops" not in out[1]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (
            "error",
            "PortsExhaustedError: no pytest-aiops worker runs in this process and "
            "PYTEST_AIOPS_PORT_FALLBACK=error asks to fail rather than hand out kernel-chosen "
            "ports; take ports inside a pytest run with pytest-aiops, or unset "
            "PYTEST_AIOPS_PORT_FALLBACK",
        ),
        (
            "never",
            "OptionError: PYTEST_AIOPS_PORT_FALLBACK must be one of kernel, error, not 'never'; "
            "set it to one of those or unset it",
        ),
    ],
)
def test_take_port_outside_pytest_honours_the_fallback_variable(value: str, error: str) -> None:
    script = (
        "from pytest_aiops import take_port\n"
        "try:\n"
        "    take_port()\n"
        "except Exception as e:\n"
        "    print(f'{type(e).__name__}: {e}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        env=child_env(PYTEST_AIOPS_PORT_FALLBACK=value),
        check=True,
    ).stdout
    assert out == error + "\n"


def test_the_fallback_variable_is_the_settings_one() -> None:
    option = next(o for o in OPTIONS if o.cli == "--aiops-port-fallback")
    assert option.env == PORT_FALLBACK_ENV


@pytest.mark.inner_warnings("*AiopsWarning: pytest-aiops is disabled*")
def test_a_port_fixtures_warning_points_at_the_fixture_not_pytest(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_port="def test_port(aiops_port):\n    assert aiops_port\n")
    result = pytester.runpytest_subprocess(*QUIET, "--aiops-disable")
    result.assert_outcomes(passed=1, warnings=1)
    [line] = [line for line in result.outlines if "AiopsWarning: " in line]
    assert line.strip().startswith(str(Path(pytest_aiops.plugin.__file__)) + ":"), line


# -- options ----------------------------------------------------------------------------------


def test_switches_are_bool_ini_values_and_help_matches_the_docs(
    pytester: pytest.Pytester,
) -> None:
    result = pytester.runpytest_subprocess(*QUIET, "--help")
    result.stdout.fnmatch_lines(["  aiops_disable (bool):*", "  aiops_asyncio_ports (bool):*"])
    text = " ".join(result.stdout.str().split())
    assert "the port fixtures hand out kernel-chosen ports with one warning" in text
    assert "its fixtures raise" not in text
    page = (Path(__file__).parent.parent / "docs" / "fixtures.md").read_text()
    assert "the port fixtures fall back to kernel-chosen ports with one warning" in " ".join(
        page.split()
    )


@pytest.mark.inner_warnings("*AiopsWarning: pytest-aiops is disabled (from ini aiops_disable)*")
@pytest.mark.parametrize("value", ["y", "True", "on"])
def test_a_bool_ini_switch_takes_what_pytest_reads_as_true(
    pytester: pytest.Pytester, value: str
) -> None:
    pytester.makeini(f"[pytest]\naiops_disable = {value}\n")
    pytester.makepyfile(test_port="def test_port(aiops_port):\n    assert aiops_port\n")
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=1, warnings=1)


def test_a_bad_bool_ini_switch_is_one_usage_line(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naiops_disable = maybe\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(*QUIET)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --aiops-disable must be one of 1, true, yes, on, 0, false, no, off, "
            "not 'maybe' (from ini aiops_disable)"
        ]
    )
    assert "Traceback" not in result.stderr.str()


#: Where this suite writes a port of the plugin's default range, and why no socket is bound
#: and no lease taken there at a fixed port: (module, top-level name) -> reason. A run at the
#: default settings may lease there (a lease excludes other runs of the network namespace);
#: a fixed port there may be leased and bound by another run on the machine at any moment.
DEFAULT_RANGE_WRITTEN: dict[tuple[str, str], str] = {
    ("test_edges.py", "big_repo"): "a file size, not a port",
    ("test_conventions.py", "test_the_port_scan_finds_ports_in_code_and_in_strings"): (
        "source text the scan is tested on, never run"
    ),
    **{
        (module, name): "the default range in an assertion or a message; nothing bound"
        for module, name in [
            ("test_plugin.py", "test_defaults"),
            ("test_plugin.py", "test_bad_values_are_one_line_usage_errors"),
            ("test_plugin.py", "test_header_is_pastable"),
            ("test_ports.py", "test_ephemeral_overlap_warns_once_per_provider"),
            ("test_ports.py", "test_default_range_is_clear_of_ephemeral_and_common_ports"),
            ("test_settings.py", "<module>"),
            ("test_settings.py", "test_nothing_given_is_the_defaults"),
            ("test_xdist.py", "test_without_xdist_a_worker_leases_its_own_block"),
        ]
    },
    **{
        (module, name): "a range refused before anything is leased"
        for module, name in [
            ("test_plugin.py", "test_ports_per_worker_must_fit_the_range_without_xdist"),
            ("test_xdist.py", "test_too_many_ports_for_the_range_is_a_usage_error"),
        ]
    },
    **{
        ("test_port_pool.py", name): "PortRange(probe=False): bookkeeping, nothing leased or bound"
        for name in [
            "test_port_range_is_a_sized_iterable_container",
            "test_next_port_hands_out_primary_first_then_says_how_to_get_more",
            "test_given_back_ports_are_handed_out_again_least_recently_used_first",
            "test_the_pool_grows_by_a_block_when_nothing_is_clean_up_to_its_bound",
            "test_past_its_bound_the_kernel_fallback_hands_out_bind_0_ports_with_one_warning",
            "test_next_ports_is_all_or_nothing",
            "test_next_port_is_unique_across_threads",
            "test_ports_are_attributed_to_the_running_test",
        ]
    },
}

#: A port range written in a string: "--aiops-port-range=28000-28999", "10600-10855".
_PORT_RANGE_TEXT = re.compile(r"(?<!\d)(\d{4,5})\s*-\s*(\d{4,5})(?!\d)")


def _default_range_ports(node: ast.AST) -> list[str]:
    """Integers in the default range, and ranges in strings that overlap it, under ``node``."""
    low, high = DEFAULT_PORT_RANGE
    found = []
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Constant):
            continue
        if isinstance(sub.value, int) and not isinstance(sub.value, bool):
            if low <= sub.value <= high:
                found.append(f"line {sub.lineno}: {sub.value}")
        elif isinstance(sub.value, str):
            for match in _PORT_RANGE_TEXT.finditer(sub.value):
                if int(match.group(1)) <= high and int(match.group(2)) >= low:
                    found.append(f"line {sub.lineno}: {match.group(0)!r}")
    return found


def test_the_suites_fixed_ports_are_outside_the_plugins_default_range() -> None:
    """Other runs on the machine lease in the default range and bind what they lease: a test
    that binds or leases a fixed port there fails with ``Errno 98`` (or gets another block)
    whenever one does. Every port literal of the default range in this suite must be in a
    place listed, with its reason, in ``DEFAULT_RANGE_WRITTEN``; a new one fails here, to be
    moved to a range no other test uses (grep tests/ for the numbers) or listed."""
    unexplained = []
    for path in sorted([*(REPO_ROOT / "tests").glob("*.py"), REPO_ROOT / "conftest.py"]):
        for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
            name = getattr(node, "name", "<module>")
            found = _default_range_ports(node)
            if found and (path.name, name) not in DEFAULT_RANGE_WRITTEN:
                unexplained.append(f"{path.name} {name}: {', '.join(found)}")
    assert unexplained == [], (
        f"ports of the default range {DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]}:\n"
        + "\n".join(unexplained)
    )


#: Port-like numbers inside the 800-server suite's ranges that bind or lease nothing, and why.
SERVER_RANGES_WRITTEN = {
    ("test_core_ports.py", 65000): "a spec refused for passing 65535",
    ("test_core_ports.py", 65530): "a spec refused for passing 65535",
    ("test_lock_backends.py", 12345): "a lease id that is not live",
    ("test_user_errors.py", 12345): "a uid",
    ("test_locking.py", 65534): "a uid",
    ("test_shared_lock_dir.py", 65534): "a uid",
    ("test_locking.py", 65535): "the end of the port space, in a lock query",
    ("test_ports.py", 65535): "the end of the port space",
    ("test_port_pool.py", 65535): "the end of the port space",
    ("test_settings_rows.py", 12190): "a pool that does not probe: it binds nothing",
}


def test_no_other_test_uses_the_server_suites_ranges() -> None:
    """``test_port_pool``'s 800-server suite leaves up to 1,600 ports of its ranges in
    TIME_WAIT for a minute: a test binding or leasing a fixed port there fails whenever it
    runs in that minute (test_edges did, in CI). Every port-like number in those ranges in
    the suite is its own range or listed, with its reason, in ``SERVER_RANGES_WRITTEN``."""
    from .test_port_pool import SERVER_SUITE_RANGES

    ranges = [tuple(map(int, text.split("-"))) for text in SERVER_SUITE_RANGES.values()]
    unexplained = []
    for path in sorted((REPO_ROOT / "tests").glob("*.py")):
        if path.name == "test_conventions.py":
            continue  # the list above, and the scans' own examples
        for sub in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(sub, ast.Constant):
                continue
            spans: list[tuple[int, int]] = []
            if isinstance(sub.value, int) and not isinstance(sub.value, bool):
                spans = [(sub.value, sub.value)]
            elif isinstance(sub.value, str) and sub.value not in SERVER_SUITE_RANGES.values():
                spans = [(int(a), int(b)) for a, b in _PORT_RANGE_TEXT.findall(sub.value)]
            for low, high in spans:
                inside = any(low <= end and high >= start for start, end in ranges)
                if inside and (path.name, low) not in SERVER_RANGES_WRITTEN:
                    unexplained.append(f"{path.name} line {sub.lineno}: {low}-{high}")
    assert unexplained == []


def test_the_port_scan_finds_ports_in_code_and_in_strings() -> None:
    """The scan above sees what a test would write: it cannot pass by finding nothing."""
    code = 'BASE = 21000\nRANGE = "--aiops-port-range=26000-26999"\nOK = ("19000-19999", 5000)\n'
    found = [f for node in ast.parse(code).body for f in _default_range_ports(node)]
    assert found == ["line 1: 21000", "line 2: '26000-26999'"]
