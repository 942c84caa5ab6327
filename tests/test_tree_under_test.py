"""Child processes of this suite import ``pytest_aiops`` from this checkout, not another copy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .process_helpers import REPO_ROOT, checkout_pythonpath, child_env

WHERE = "import pytest_aiops.plugin as p; print(p.__file__)"


@pytest.fixture
def decoy(tmp_path: Path) -> Path:
    """A directory holding another, empty copy of ``pytest_aiops``: the package's
    ``_plugin_entry`` and ``_declarations_entry`` the ``pytest11`` entry points name, and the
    ``plugin`` and ``_plugin.declarations`` modules they hand out, so the decoy loads
    whole whether the tree under test is installed editable or not (as from the sdist)."""
    package = tmp_path / "decoy" / "pytest_aiops"
    (package / "_plugin").mkdir(parents=True)
    # The entry points name pytest_aiops:_plugin_entry and :_declarations_entry.
    (package / "__init__.py").write_text(
        '"""A decoy."""\nfrom . import plugin as _plugin_entry\n'
        "from ._plugin import declarations as _declarations_entry\n"
    )
    (package / "plugin.py").write_text('"""A decoy plugin: no hooks."""\n')
    (package / "_plugin" / "__init__.py").write_text("")
    (package / "_plugin" / "declarations.py").write_text('"""A decoy: no hooks."""\n')
    return package.parent


def _where(env: dict[str, str], cwd: Path) -> Path:
    out = subprocess.run(
        [sys.executable, "-c", WHERE], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def test_a_child_imports_this_checkout_even_when_another_copy_is_importable(
    decoy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(decoy))
    assert _where(dict(os.environ), tmp_path) == decoy / "pytest_aiops" / "plugin.py"  # control
    assert _where(child_env(), tmp_path) == REPO_ROOT / "pytest_aiops" / "plugin.py"


def test_the_suite_puts_this_checkout_first_for_every_child(tmp_path: Path) -> None:
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT)
    assert _where(dict(os.environ), tmp_path) == REPO_ROOT / "pytest_aiops" / "plugin.py"


@pytest.mark.parametrize("first", ["checkout", "decoy"])
def test_an_inner_pytest_loads_the_entry_point_plugin_from_the_first_copy_on_pythonpath(
    pytester: pytest.Pytester, decoy: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """The ``pytest11`` entry point names a module; PYTHONPATH decides which copy it is."""
    pythonpath = checkout_pythonpath(str(decoy)) if first == "checkout" else str(decoy)
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    pytester.makepyfile(
        test_where="""
        def test_where(pytestconfig):
            print("AIOPS-PLUGIN", pytestconfig.pluginmanager.get_plugin("aiops").__file__)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:benchmark", "-s")
    result.assert_outcomes(passed=1)
    [where] = re.findall(r"AIOPS-PLUGIN (\S+)", result.stdout.str())
    expected = REPO_ROOT if first == "checkout" else decoy
    assert Path(where) == expected / "pytest_aiops" / "plugin.py"
