"""One row per setting: the declarations, the parsing, the defaults and every hint agree.

``pytest_aiops._plugin.settings.OPTIONS`` holds each setting once (parser, default, kind,
help); the ``--aiops-*`` options and ``aiops_*`` ini keys pytest declares, the
:class:`Settings` fields and defaults, and each "--aiops-x (ini ..., env ...)" hint are made
from it. These tests check that what is made matches the row and that no other module spells
a plugin option by hand (tests/test_docs.py checks each row against the docs' options table).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pytest_aiops import PortsExhaustedError
from pytest_aiops._plugin.settings import (
    FLAG,
    OPTIONS,
    OPTIONS_BY_DEST,
    SWITCH,
    Settings,
    _Invalid,
    _Option,
    cli,
    spellings,
)
from pytest_aiops._ports.defaults import LOCK_DIR_PLUGIN_OPTION, PORT_FALLBACK_ENV
from pytest_aiops._ports.pool import KernelPorts, PortRange

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_aiops"

pytest_plugins = ["pytester"]


def _as_text(value: object) -> str:
    """A default as a user would write it on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}-{value[1]}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def test_each_row_spells_its_setting_one_way_in_each_place() -> None:
    assert len(OPTIONS_BY_DEST) == len(OPTIONS)
    for option in OPTIONS:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", option.dest), option.dest
        assert option.cli == "--aiops-" + option.dest.replace("_", "-")
        assert option.ini == "aiops_" + option.dest
        assert option.env == "PYTEST_AIOPS_" + option.dest.upper()
        assert cli(option.dest) == option.cli
        assert spellings(option.dest) == f"{option.cli} (ini {option.ini}, env {option.env})"
        assert spellings(option.dest, "=x", env=False) == f"{option.cli}=x (ini {option.ini})"


def test_settings_fields_and_defaults_are_the_rows() -> None:
    settings = Settings()
    annotated = {name for name in Settings.__annotations__ if name != "sources"}
    assert annotated == set(OPTIONS_BY_DEST)
    assert set(Settings.__slots__) == {*OPTIONS_BY_DEST, "sources"}
    for option in OPTIONS:
        assert getattr(settings, option.dest) == option.default, option.dest
    assert settings.sources is None
    assert Settings(keep="all").keep == "all"
    with pytest.raises(TypeError, match="unexpected keyword argument 'kep'"):
        Settings(kep="all")


@pytest.mark.parametrize(
    "option", [o for o in OPTIONS if o.default is not None], ids=lambda o: o.dest
)
def test_each_rows_parser_reads_back_its_default(option: _Option) -> None:
    """The default, written as text, parses to itself: the parser and default agree."""
    assert option.parse(_as_text(option.default), None) == option.default


def test_switches_and_flags_parse_as_booleans() -> None:
    for option in OPTIONS:
        if option.kind in (FLAG, SWITCH):
            assert isinstance(option.default, bool), option.dest
            assert option.parse("yes", None) is True
            assert option.parse("off", None) is False
            with pytest.raises(_Invalid):
                option.parse("maybe", None)


def test_help_texts_name_only_settings_that_exist() -> None:
    for option in OPTIONS:
        for named in re.findall(r"--aiops-[a-z-]*[a-z]", option.help):
            assert named in {o.cli for o in OPTIONS}, (option.dest, named)


def test_every_row_is_declared_to_pytest_with_its_spellings(pytester: pytest.Pytester) -> None:
    """``--help`` shows each row's option, its env variable and ini key, and each ini key
    with its type: a flag's as ``bool``, the others' as ``string``."""
    result = pytester.runpytest("--help")
    assert result.ret == 0
    text = " ".join(result.stdout.str().split())  # help lines are wrapped
    for option in OPTIONS:
        shown = option.cli if option.kind == FLAG else f"{option.cli}={option.metavar}"
        if option.kind == SWITCH:
            shown = f"{option.cli}=[{option.metavar}]"
        assert shown in text, option.dest
        assert f"[env {option.env}, ini {option.ini}]" in text, option.dest
        kind = "bool" if option.kind == FLAG else "string"
        assert f"{option.ini} ({kind}):" in text, option.dest


def test_the_spellings_lower_layers_need_are_the_rows() -> None:
    """The two plugin spellings below the plugin, each defined once in ``_ports/defaults``."""
    assert cli("lock_dir") == LOCK_DIR_PLUGIN_OPTION
    assert OPTIONS_BY_DEST["port_fallback"].env == PORT_FALLBACK_ENV


def _literals(path: Path) -> list[tuple[int, str]]:
    """The string constants of ``path`` that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_only_the_rows_spell_a_plugin_option() -> None:
    """Below the plugin (``_core``, ``_ports``, ``_worktrees``, the errors) and in the plugin
    outside its settings, no message spells ``--aiops-x`` or ``aiops_x`` by hand: the
    plugin's come from the rows, and lower layers take the spelling from their caller
    (``_ports/defaults.py`` holds the one exception, the lock directory's, for errors raised
    below every entry point)."""
    spelled = re.compile(r"--aiops-[a-z]|\(ini aiops_|\bPYTEST_AIOPS_[A-Z_]+\)")
    files = [
        *(PACKAGE / "_core").glob("*.py"),
        *(PACKAGE / "_ports").glob("*.py"),
        *(PACKAGE / "_worktrees").glob("*.py"),
        *(PACKAGE / "_plugin").glob("*.py"),
        PACKAGE / "_errors.py",
        PACKAGE / "plugin.py",
    ]
    allowed = {PACKAGE / "_plugin" / "settings.py", PACKAGE / "_ports" / "defaults.py"}
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in sorted(files)
        if path not in allowed
        for line, text in _literals(path)
        if spelled.search(text)
    ]
    assert found == []


def test_the_pool_names_its_own_parameters_unless_told_otherwise() -> None:
    """By default the pool's hints name its parameters (``max_ports``, ``fallback``); the
    plugin's worker passes its options, which the plugin's tests see in every message."""
    ports = PortRange(12190, 12190, probe=False)
    ports.next_port()
    with pytest.raises(PortsExhaustedError, match=r"; raise max_ports \(now 1\)$"):
        ports.next_port()
    told = PortRange(12190, 12190, probe=False, max_ports_setting=spellings("max_ports_per_worker"))
    told.next_port()
    with pytest.raises(PortsExhaustedError) as caught:
        told.next_port()
    assert str(caught.value).endswith(
        "; raise --aiops-max-ports-per-worker (ini aiops_max_ports_per_worker, env "
        "PYTEST_AIOPS_MAX_PORTS_PER_WORKER) (now 1)"
    )
    assert KernelPorts("r").fallback_hint == "set fallback=error to fail instead"
    plugin = KernelPorts("r", fallback_setting=cli("port_fallback"))
    assert plugin.fallback_hint == "set --aiops-port-fallback=error to fail instead"
