"""The pytest entry points, loaded past pytest's assertion rewriting (PYTEST_DONT_REWRITE).

pytest rewrites the asserts of every module of a distribution with a ``pytest11`` entry
point, and reads each rewritten module back from its own cache with ``marshal.load`` on an
open file: for the dozen modules every pytest run loads, about 20 million instructions a run
(2.5% of a one-test run), and ten times that with ``PYTHONDONTWRITEBYTECODE=1``, where it
parses and compiles them afresh each run (issue 23), for modules with no assert worth
rewriting. The entry points name this module's attributes (``plugin``, ``declarations``);
each imports its modules with Python's own path finder and loader, dependencies first, so
pytest's import hook (first on ``sys.meta_path``) never sees them. Modules imported later (on
first use of a fixture) go through it as usual; so does anything already imported.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from importlib.util import module_from_spec, spec_from_file_location
from types import ModuleType

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
#: ``_plugin/interrupt.py`` are imported at configure, ``_plugin/orphans.py`` at the end of
#: every run).
PLUGIN = (
    *DECLARATIONS,
    "pytest_aiops._ports.current",
    "pytest_aiops._plugin.interrupt",
    "pytest_aiops._plugin.xdist",
    "pytest_aiops.plugin",
    "pytest_aiops._worktrees.locate",
    "pytest_aiops._plugin.orphans",
)

#: What an xdist controller loads at configure, and any run with a report to print at its
#: end (the controller's side of the xdist hand-off, and the end-of-run lines).
CONTROLLER = ("pytest_aiops._plugin.controller",)

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
)
#: What the first port lease loads besides (the port-range provider), dependencies first.
PORTS = (
    "pytest_aiops._core.trust",
    "pytest_aiops._ports.netns",
    "pytest_aiops._ports.locks",
    "pytest_aiops._ports.records",
    "pytest_aiops._ports.provider",
)


#: The subpackages among the modules above (their code is their ``__init__.py``).
_PACKAGES = frozenset({"_core", "_ports", "_worktrees", "_plugin"})


def load_all(names: tuple[str, ...]) -> None:
    """:func:`load` each of ``names`` (dependencies first), as the entry points do."""
    for name in names:
        load(name)


def load(name: str) -> ModuleType:
    """``import name`` from the file beside its parent's, past ``sys.meta_path`` (its
    parent is loaded). The spec is made from the path (a subpackage's ``__init__.py``, a
    module's ``.py``), not searched for along the parent's path by the path finder (0.4M
    instructions a run, issue 23); where that file does not exist (a zip, a frozen build)
    the usual import runs."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    parent, _, child = name.rpartition(".")
    directory = os.path.join(os.path.dirname(sys.modules[parent].__file__ or ""), child)
    if child in _PACKAGES:
        path, search = os.path.join(directory, "__init__.py"), [directory]
    else:
        path, search = directory + ".py", None
    spec = spec_from_file_location(name, path, submodule_search_locations=search)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        return import_module(name)
    module = module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    setattr(sys.modules[parent], child, module)
    return module


def __getattr__(name: str) -> ModuleType:
    """``plugin`` or ``declarations``: each loads only what it needs, on first access."""
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
