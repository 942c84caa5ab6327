"""The public types as a user's ``mypy --strict`` sees them (mypy is a test dependency)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .process_helpers import REPO_ROOT, child_env

USER_TESTS = """
from __future__ import annotations

import pytest

from pytest_aiops import PortFactory, PortRange


@pytest.fixture(scope="module")
def server_port(aiops_port_factory: PortFactory) -> int:
    return aiops_port_factory()


def test_ports(server_port: int, aiops_port_factory: PortFactory, port_range: PortRange) -> None:
    udp: int = aiops_port_factory(protocol="udp")
    tcp: int = aiops_port_factory("tcp")
    assert {server_port, udp, tcp} <= set(port_range)
"""

MISUSE = """
from __future__ import annotations

from pytest_aiops import PortFactory


def test_misuse(aiops_port_factory: PortFactory) -> None:
    name: str = aiops_port_factory()
    aiops_port_factory(protocol=6)
    aiops_port_factory(count=2)
"""


def test_port_factory_annotates_aiops_port_factory_under_mypy_strict(
    pytester: pytest.Pytester, tmp_path: Path, private_lock_dir: Path
) -> None:
    pytester.makepyfile(test_user=USER_TESTS, test_misuse=MISUSE)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir",
         str(tmp_path / "mypy-cache"), "test_user.py", "test_misuse.py"],
        cwd=pytester.path, env=child_env(MYPYPATH=str(REPO_ROOT)), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert checked.stderr == ""
    lines = checked.stdout.splitlines()
    errors = [line.split(": error: ")[0] for line in lines if ": error: " in line]
    # The user's annotated fixture and test are clean; each misuse is one error, on its line.
    assert errors == ["test_misuse.py:7", "test_misuse.py:8", "test_misuse.py:9"], checked.stdout
    assert "incompatible types in assignment" in checked.stdout.lower()
    # And the annotated suite runs as annotated.
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-W", "error", "test_user.py")
    result.assert_outcomes(passed=1)
