"""The package layout's rules, checked from the source (docs/development.md, "Layout").

Each rule here is one a newcomer could break without noticing: a layer importing upwards, a
private name crossing a folder, a subpackage ``__init__`` that loads code, the plugin's
start-up loading more than it needs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .process_helpers import REPO_ROOT, child_env

PACKAGE = REPO_ROOT / "pytest_aiops"
SUBPACKAGES = ("_core", "_ports", "_worktrees", "_plugin", "_cli")
#: What each layer may import from the package (besides itself): lower layers only.
ALLOWED = {
    "_core": {"_errors"},
    "_ports": {"_errors", "_core"},
    "_worktrees": {"_errors", "_core"},
    "_plugin": {"_errors", "_core", "_ports", "_worktrees", "hookspecs", "_builtins"},
    "_cli": {"_errors", "_core", "_ports", "_worktrees", "_builtins"},
}


#: The modules through which other folders reach a subpackage: its small interface.
INTERFACES = {
    "_ports": {"provider", "pool", "current", "defaults", "sockets", "admin"},
    "_worktrees": {"provider", "locate", "roots", "defaults"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import of this package in ``path``."""
    module_parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if module_parts[-1] == "__init__":
        module_parts.pop()
    else:
        module_parts.pop()  # the package the module is in
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                base = module_parts[: len(module_parts) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "pytest_aiops" or target.startswith("pytest_aiops."):
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pytest_aiops"):
                    found.append((alias.name, [], node.lineno))
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def test_every_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for path in _modules():
        layer = _layer(path)
        if layer not in ALLOWED:
            continue
        for module, names, line in _imports(path):
            targets = [_top(module)] if _top(module) else [_top(f"pytest_aiops.{n}") for n in names]
            for target in targets:
                if target != layer and target not in ALLOWED[layer]:
                    wrong.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    assert wrong == []


def test_other_folders_reach_ports_and_worktrees_only_through_their_interface() -> None:
    wrong = []
    for path in _modules():
        layer = _layer(path)
        for module, names, line in _imports(path):
            target = _top(module)
            if target not in INTERFACES or target == layer:
                continue
            parts = module.split(".")
            used = [parts[2]] if len(parts) > 2 else names  # `from .._ports import provider`
            wrong += [
                f"{path.relative_to(REPO_ROOT)}:{line}: {target}.{name}"
                for name in used
                if name not in INTERFACES[target]
            ]
    assert wrong == []


def test_no_private_name_crosses_a_folder() -> None:
    wrong = []
    for path in _modules():
        layer = _layer(path)
        for module, names, line in _imports(path):
            target = _top(module)
            if not target or target == layer or module.count(".") < 2:
                continue  # same folder, or a top-level module of the package
            for name in names:
                if name.startswith("_"):
                    wrong.append(f"{path.relative_to(REPO_ROOT)}:{line}: {module}.{name}")
    assert wrong == []


def test_the_core_imports_nothing_from_pytest() -> None:
    plugin_world = {"pytest", "_pytest", "xdist", "pluggy"}
    wrong = []
    for path in (PACKAGE / "_core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            wrong += [f"{path.name}: {n}" for n in names if n.split(".")[0] in plugin_world]
    assert wrong == []


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_subpackage_init_files_are_empty(subpackage: str) -> None:
    assert (PACKAGE / subpackage / "__init__.py").read_text().strip() == ""


def test_loading_the_plugin_loads_only_its_start_up_modules() -> None:
    probe = (
        "import sys, pytest, pytest_aiops._entry; pytest_aiops._entry.plugin; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('pytest_aiops'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=child_env()
    ).stdout.split()
    assert out == [
        "pytest_aiops",
        "pytest_aiops._entry",
        "pytest_aiops._plugin",
        "pytest_aiops._plugin.declarations",
        "pytest_aiops._plugin.interrupt",
        "pytest_aiops._plugin.settings",
        "pytest_aiops._plugin.xdist",
        "pytest_aiops._ports",
        "pytest_aiops._ports.current",
        "pytest_aiops._ports.defaults",
        "pytest_aiops._worktrees",
        "pytest_aiops._worktrees.defaults",
        "pytest_aiops._worktrees.roots",
        "pytest_aiops.hookspecs",
        "pytest_aiops.plugin",
    ]


def test_a_run_that_uses_no_fixture_loads_only_the_start_up_modules(tmp_path: Path) -> None:
    """A real one-test pytest run, the plugin active: at the end of the session the package
    has loaded what the entry points load plus ``_ports/current.py`` (configure), nothing
    of the pool, the providers or the errors (issue 23: start-up cost)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "import sys\n\n"
        "def pytest_unconfigure(config):\n"
        "    loaded = sorted(m for m in sys.modules if m.startswith('pytest_aiops'))\n"
        "    (config.rootpath / 'loaded.txt').write_text(' '.join(loaded))\n"
    )
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    env = child_env()
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stdout.lower()
    from pytest_aiops import _entry

    assert _entry.plugin is sys.modules["pytest_aiops.plugin"]
    assert _entry.declarations is sys.modules["pytest_aiops._plugin.declarations"]
    assert (tmp_path / "loaded.txt").read_text().split() == sorted(
        {"pytest_aiops", "pytest_aiops._entry", *_entry.PLUGIN}
    )
