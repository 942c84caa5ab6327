"""What the pytest entry points load, past pytest's assertion rewriting (PYTEST_DONT_REWRITE).

pytest rewrites the asserts of every module of a distribution with a ``pytest11`` entry
point, and reads each rewritten module back from its own cache with ``marshal.load`` on an
open file: for the dozen modules every pytest run loads, about 20 million instructions a run
(2.5% of a one-test run), and ten times that with ``PYTHONDONTWRITEBYTECODE=1``, where it
parses and compiles them afresh each run (issue 23), for modules with no assert worth
rewriting. The entry points name the package's ``_plugin_entry`` and
``_declarations_entry``, which load this module with the package's ``_load`` (Python's own
loader, from the file's path) and call :func:`entry_point`; it loads its modules the same
way, dependencies first, so pytest's import hook (first on ``sys.meta_path``) sees only the
package's ``__init__.py``. The lists below say what each stage loads; a module imported
otherwise goes through the hook as usual, and anything already imported is not loaded again.
"""

from __future__ import annotations

import sys
from types import ModuleType

from . import _load

#: Loads a module past pytest's import hook (the package's, which loads this module too).
load = _load

#: What ``pytest11: aiops-declarations`` loads, dependencies first.
DECLARATIONS = (
    "pytest_aiops._ports",
    "pytest_aiops._ports.defaults",
    "pytest_aiops._worktrees",
    "pytest_aiops._worktrees.defaults",
    "pytest_aiops.hookspecs",
    "pytest_aiops._plugin",
    "pytest_aiops._plugin.settings",
    "pytest_aiops._plugin.declarations",
)
#: What ``pytest11: aiops`` loads besides, dependencies first (``_ports/current.py`` and
#: ``_plugin/interrupt.py`` are imported at configure, ``_worktrees/roots.py`` for the report
#: header and at the end of every run).
PLUGIN = (
    *DECLARATIONS,
    "pytest_aiops._ports.current",
    "pytest_aiops._plugin.interrupt",
    "pytest_aiops._plugin.xdist",
    "pytest_aiops.plugin",
    "pytest_aiops._worktrees.roots",
)

#: What an xdist controller loads at configure, and any run with a report to print at its
#: end (the controller's side of the xdist hand-off, and the end-of-run lines).
CONTROLLER = ("pytest_aiops._plugin.controller", "pytest_aiops._plugin.session_end")

#: What the first use of a fixture loads (the worker, the orchestrator, the reporter and the
#: pool the worker's module names), dependencies first, loaded the same way: through
#: pytest's import hook each would be read back with ``marshal.load`` on an open file (or,
#: with ``PYTHONDONTWRITEBYTECODE=1``, parsed and compiled) in every run that uses the
#: plugin. ``tests/test_layout.py`` checks that each comes after what it imports.
WORKER = (
    "pytest_aiops._errors",
    "pytest_aiops._core",
    "pytest_aiops._core.values",
    "pytest_aiops._plugin.remote",
    "pytest_aiops._core.types",
    "pytest_aiops._core.discovery",
    "pytest_aiops._core.hashing",
    "pytest_aiops._core.options",
    "pytest_aiops._core.ports",
    "pytest_aiops._core.worktrees",
    "pytest_aiops._core.children",
    "pytest_aiops._core.registry",
    "pytest_aiops._core.session",
    "pytest_aiops._core.orchestrator",
    "pytest_aiops._ports.probe",
    "pytest_aiops._ports.pool",
    "pytest_aiops._plugin.hook_env",
    "pytest_aiops._plugin.worker",
    "pytest_aiops._builtins",
    "pytest_aiops._plugin.report",
    "pytest_aiops._plugin.markers",
    "pytest_aiops._plugin.session_end",
)
#: What the first port lease loads besides (the port-range provider), dependencies first.
PORTS = (
    "pytest_aiops._core.trust",
    "pytest_aiops._ports.netns",
    "pytest_aiops._ports.locks",
    "pytest_aiops._ports.records",
    "pytest_aiops._ports.provider",
)


def load_all(names: tuple[str, ...]) -> None:
    """:func:`load` each of ``names`` (dependencies first), as the entry points do."""
    for name in names:
        load(name)


def entry_point(name: str) -> ModuleType:
    """The plugin module of ``pytest11`` entry point ``name`` (``plugin`` or
    ``declarations``), with only what it needs loaded, on first access."""
    modules: tuple[str, ...]
    if name == "plugin":
        modules, entry = PLUGIN, "pytest_aiops.plugin"
    elif name == "declarations":
        modules, entry = DECLARATIONS, "pytest_aiops._plugin.declarations"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in modules:
        load(module)
    return sys.modules[entry]


def __getattr__(name: str) -> ModuleType:
    """``plugin`` or ``declarations``: the entry points as they were named before they moved
    to the package (metadata of an install made then still names them here)."""
    return entry_point(name)
