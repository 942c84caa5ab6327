"""What a user meets first: the installed command's version, the licence, the package index's
metadata. (Building and installing the distributions is `.ci/run`'s packaging step: it needs
the network-free but slow ``python -m build`` in a throwaway environment.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_aiops

from .process_helpers import REPO_ROOT, child_env


def _script() -> str:
    script = shutil.which("pytest-aiops", path=str(Path(sys.executable).parent))
    script = script or shutil.which("pytest-aiops")
    assert script is not None, "pytest-aiops console script is not installed"
    return script


@pytest.mark.parametrize("how", ["script", "module"])
def test_version_prints_the_one_version(how: str) -> None:
    command = [_script()] if how == "script" else [sys.executable, "-m", "pytest_aiops"]
    result = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, env=child_env(), check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pytest-aiops {pytest_aiops.__version__}\n"


def test_the_version_and_the_licence_have_one_source() -> None:
    # Read as text: tomllib is 3.11+ and the minimum leg runs 3.10.
    text = (REPO_ROOT / "pyproject.toml").read_text()
    project = text.split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, re.M)
    assert 'dynamic = ["version"]' in project
    assert 'version = {attr = "pytest_aiops.__version__"}' in text
    assert 'license = "MIT"' in project
    assert 'license-files = ["LICENSE"]' in project
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert '"Development Status :: 3 - Alpha"' in project
    urls = text.split("\n[project.urls]\n", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"^(\w+) = \"https://", urls, re.M)) == {
        "Homepage",
        "Documentation",
        "Issues",
        "Changelog",
    }


def test_the_docs_install_the_released_package_and_say_each_thing_once() -> None:
    install = "```sh\npython -m pip install pytest-aiops\n```"
    readme = (REPO_ROOT / "README.md").read_text()
    page = (REPO_ROOT / "docs" / "getting-started.md").read_text()
    assert install in readme
    assert install in page
    assert page.count("| leg | Python | pytest |") == 1
    assert page.count("filterwarnings = error") == 1
    assert "(supported-versions)=" in page
    # The page opens with what a user needs, not the project's history.
    assert "it was declared" not in page
    assert page.index("## Install") < page.index("## Platforms")


def test_ci_installs_the_built_wheel_with_the_docs_install_line() -> None:
    package = (REPO_ROOT / ".ci" / "package").read_text()
    run = (REPO_ROOT / ".ci" / "run").read_text()
    assert '\n.ci/package "$WORK/package"\n' in run
    assert 'pip install -q --find-links "$DIST" pytest-aiops=="$VERSION"' in package
    assert "twine check --strict" in package
    assert "-W error" in package
