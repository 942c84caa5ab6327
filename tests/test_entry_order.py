"""The modules ``_entry.py`` loads past pytest's import hook come after what they import.

``load()`` executes a module with Python's own loader; an import it makes of a module not yet
loaded goes through ``sys.meta_path`` (pytest's hook first) as usual, which costs but works.
So a wrong order is a cost, not a failure, and nothing else would notice it: this test reads
each module's top-level imports and checks every list, and a real run checks that the first
port a test takes loads no module of the package through pytest's hook (issue 23).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytest_aiops
from pytest_aiops import _entry

pytest_plugins = ["pytester"]

PACKAGE = Path(pytest_aiops.__file__).parent


def _source(name: str) -> Path:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _top_level_imports(name: str) -> set[str]:
    """The package's modules ``name`` imports when it is executed (not under TYPE_CHECKING,
    not inside functions), parents included."""
    source = _source(name)
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(statement.test):
                    visit(statement.body)
                    visit(statement.orelse)
            elif isinstance(statement, ast.Try):
                visit(statement.body)
                visit(statement.orelse)
                visit(statement.finalbody)
                for handler in statement.handlers:
                    visit(handler.body)
            elif isinstance(statement, ast.ImportFrom) and statement.level:
                parts = package.split(".")[: len(package.split(".")) - statement.level + 1]
                module = ".".join(parts + ([statement.module] if statement.module else []))
                found.add(module)
                for alias in statement.names:
                    if _source(f"{module}.{alias.name}").exists():
                        found.add(f"{module}.{alias.name}")
            elif isinstance(statement, ast.Import | ast.ImportFrom):
                names = (
                    [alias.name for alias in statement.names]
                    if isinstance(statement, ast.Import)
                    else [statement.module or ""]
                )
                found.update(n for n in names if n.startswith("pytest_aiops."))

    visit(ast.parse(source.read_text(encoding="utf-8")).body)
    with_parents: set[str] = set()
    for module in found:
        parts = module.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return with_parents - {name}


@pytest.mark.parametrize(
    "modules",
    [
        _entry.DECLARATIONS,
        _entry.PLUGIN,
        (*_entry.PLUGIN, *_entry.WORKER, *_entry.PORTS),
        (*_entry.PLUGIN, *_entry.CONTROLLER),
    ],
    ids=["declarations", "plugin", "first-use", "controller"],
)
def test_each_module_comes_after_what_it_imports(modules: tuple[str, ...]) -> None:
    for index, name in enumerate(modules):
        missing = _top_level_imports(name) - set(modules[:index])
        assert not missing, f"{name} imports {sorted(missing)}, not loaded before it"


FIRST_PORT = """
import sys


def test_takes_a_port(aiops_port):
    from _pytest.assertion.rewrite import AssertionRewritingHook

    hooked = sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("pytest_aiops") and isinstance(
            getattr(module, "__loader__", None), AssertionRewritingHook
        )
    )
    # The package itself is imported by pytest's entry-point loading, and loads the rest.
    assert hooked == ["pytest_aiops"]
"""


def test_the_first_port_loads_no_module_through_pytests_import_hook(
    pytester: pytest.Pytester, private_lock_dir: Path
) -> None:
    pytester.makepyfile(test_first_port=FIRST_PORT)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "0", "-W", "error")
    result.assert_outcomes(passed=1)


def test_the_loader_knows_which_modules_are_packages() -> None:
    """``load()`` makes each spec from its path, a subpackage's ``__init__.py`` or a
    module's ``.py``, by ``_PACKAGES``: a list naming a package it does not know (or the
    other way round) would load the wrong file."""
    names = {*_entry.PLUGIN, *_entry.WORKER, *_entry.PORTS, *_entry.CONTROLLER}
    packages = {name.rpartition(".")[2] for name in names if _source(name).name == "__init__.py"}
    assert packages == set(pytest_aiops._PACKAGES)
    for name in names:
        module = _entry.load(name)
        assert Path(module.__file__ or "") == _source(name), name
        assert module.__spec__ is not None
        assert module.__spec__.name == name
