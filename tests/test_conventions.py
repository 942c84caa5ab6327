"""The conventions of pytest plugins: quiet when all is well, a leak fails the run, warnings
are ``pytest.PytestWarning``s pointing at the user's code, booleans are ``bool`` ini values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import git

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
