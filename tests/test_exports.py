"""The public names: one list in ``pytest_aiops/__init__.py``, one lazy ``__getattr__``.

``_EXPORTS`` (name -> module) is the list; ``__all__`` is made from it; the imports of the
stub ``__init__.pyi`` repeat it for type checkers, which cannot run code; ``pytest_aiops.plugin``
resolves its own lazy names through the package's.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import pytest_aiops
import pytest_aiops._plugin.declarations
import pytest_aiops.plugin

from .helpers import child_env

INIT = Path(pytest_aiops.__file__)
#: What type checkers read for the package (``__init__.py`` stays small: issue 23).
STUB = INIT.with_suffix(".pyi")


def _type_checking_imports() -> dict[str, str]:
    """``{name: module}`` of the stub's re-exports (``X as X``)."""
    tree = ast.parse(STUB.read_text())
    found: dict[str, str] = {}
    for statement in tree.body:
        if not isinstance(statement, ast.ImportFrom):
            continue
        for alias in statement.names:
            assert alias.asname == alias.name, f"{alias.name} is not re-exported as itself"
            assert alias.name not in found, f"{alias.name} is imported twice"
            found[alias.name] = "." * statement.level + (statement.module or "")
    return found


def test_type_checkers_see_exactly_the_one_list() -> None:
    assert _type_checking_imports() == pytest_aiops._EXPORTS


def test_all_is_the_list_and_the_version() -> None:
    assert pytest_aiops.__all__ == [*pytest_aiops._EXPORTS, "__version__"]
    assert list(pytest_aiops._EXPORTS) == sorted(pytest_aiops._EXPORTS)
    assert set(dir(pytest_aiops)) >= set(pytest_aiops.__all__)


def test_the_plugins_lazy_names_are_the_packages() -> None:
    lazy = [name for name in pytest_aiops.plugin.__all__ if name != "SETTINGS_KEY"]
    assert lazy
    for name in lazy:
        assert name in pytest_aiops._EXPORTS
        assert getattr(pytest_aiops.plugin, name) is getattr(pytest_aiops, name)
    with pytest.raises(
        AttributeError, match=r"'pytest_aiops\.plugin' has no attribute 'take_port'"
    ):
        _ = pytest_aiops.plugin.take_port  # public, but not one of the plugin's names


def test_importing_the_package_loads_nothing_else() -> None:
    probe = (
        "import sys, pytest_aiops; "
        "print(sorted(m for m in sys.modules if m.startswith('pytest_aiops')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=child_env(), check=True
    ).stdout
    assert out.strip() == "['pytest_aiops']"


@pytest.mark.parametrize(
    "module", [pytest_aiops.plugin, pytest_aiops._plugin.declarations], ids=lambda m: m.__name__
)
def test_dir_shows_every_hook_and_fixture_pytest_must_find(module: ModuleType) -> None:
    """Both plugin modules narrow ``dir()`` to what pluggy and pytest scan (issue 23): a
    hook or fixture missing from it would silently not exist."""
    found = {
        name
        for name, value in vars(module).items()
        if name.startswith("pytest_")
        or type(value).__name__ == "FixtureFunctionDefinition"
        or hasattr(value, "_pytestfixturefunction")
    }
    assert found, module
    assert found <= set(dir(module))
    assert len(dir(module)) < len(vars(module)) / 2  # the narrowing is in place


def test_the_plugins_fixtures_and_hooks_are_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "def test_one(request):\n"
        "    hook = request.config.pluginmanager.hook.pytest_runtest_makereport\n"
        "    assert 'aiops' in {impl.plugin_name for impl in hook.get_hookimpls()}\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error")
    result.assert_outcomes(passed=1)
    listed = pytester.runpytest_subprocess("--fixtures", "-p", "no:randomly", "-W", "error")
    text = listed.stdout.str()
    for name in (
        "aiops_port",
        "aiops_udp_port",
        "port_range",
        "git_worktree",
        "provisioned_session",
        "aiops_worker",
        "aiops_port_factory",
        "aiops_worktree_factory",
    ):
        assert f"{name} -- " in text or f"{name} [" in text, name
