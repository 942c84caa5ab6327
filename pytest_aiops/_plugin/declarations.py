"""What a suite's own files may name, declared even when the plugin itself is off.

Entry point ``pytest11: aiops-declarations``. A project's ini file (``aiops_*`` keys,
``addopts = --aiops-keep=failed``), its modules (``pytest.mark.aiops``) and its conftest
files (``pytest_aiops_*`` hook implementations) keep working under ``-p no:aiops``: without
these declarations pytest would warn about unknown ini keys (an error under
``filterwarnings = error``), refuse the options, the marker under ``--strict-markers`` and
the hook implementations. :mod:`pytest_aiops.plugin` registers this module itself where
pytest has not (first in entry-point order, or under another name where ``-p
no:aiops-declarations`` blocked it), so its options are declared whenever it runs; the
declarations are idempotent.
"""

from __future__ import annotations

import weakref

import pytest

from .. import hookspecs
from .settings import add_options

MARKER = "aiops"
MARKER_HELP = (
    "aiops(base_ref=None, target_path=None, isolation=None, working_state=None): module-level "
    "options for this module's git_worktree (baseRef/targetPath/isolation/workingState; "
    "camelCase keys accepted too)."
)
_declared: weakref.WeakSet[pytest.Parser] = weakref.WeakSet()
_MARKED: pytest.StashKey[bool] = pytest.StashKey()  # annotated: no generic alias at import


def declare_options(parser: pytest.Parser) -> None:
    """The ``--aiops-*`` options and ``aiops_*`` ini keys, once per parser."""
    if parser in _declared:
        return
    _declared.add(parser)
    add_options(parser)


def declare_hooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """The ``pytest_aiops_*`` hook specifications, once per plugin manager."""
    caller = getattr(pluginmanager.hook, "pytest_aiops_register_providers", None)
    if caller is None or not caller.has_spec():
        pluginmanager.add_hookspecs(hookspecs)


def declare_marker(config: pytest.Config) -> None:
    """The ``aiops`` marker, once per config (so ``--strict-markers`` accepts it)."""
    if not config.stash.get(_MARKED, False):
        config.stash[_MARKED] = True
        config.addinivalue_line("markers", MARKER_HELP)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # The hook specifications here too, not in a pytest_addhooks of their own: both hooks
    # are historic, so each runs as this module is registered, and every hook
    # implementation costs every pytest run about 0.2M instructions to register (issue 23).
    declare_hooks(pluginmanager)
    declare_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    declare_marker(config)


def __dir__() -> list[str]:
    """Only the hooks: pluggy and pytest scan every name ``dir()`` gives when this module
    is registered (pytest 9 at about 30,000 instructions a name, issue 23)."""
    return ["pytest_addoption", "pytest_configure"]
