"""pytest-aiops: isolated git worktrees and collision-free port ranges, per session.

The core (everything here) works without pytest; :mod:`pytest_aiops.plugin` is the pytest
glue. Everything not listed in ``__all__`` is private. PYTEST_DONT_REWRITE: no assert here is
worth pytest's rewriting, which every pytest run would otherwise pay for.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

# The public names, in one list: each name and the module it comes from, resolved on first
# use (PEP 562). Text, split when first needed, rather than a dict literal: every pytest run
# imports this package through pytest's import hook, which reads it back from its cache one
# constant at a time (these 112 strings cost 0.5M instructions a run, issue 23), and a run
# that never uses pytest-aiops should not pay for importing it all.
_EXPORT_LINES = """
AiopsError                       ._errors
AiopsWarning                     ._errors
AiopsWorker                      ._plugin.worker
ChildSplitError                  ._errors
ClosedError                      ._errors
CommandLineError                 ._errors
DiscoveryError                   ._errors
DiscoverySnapshot                ._core.discovery
GitError                         ._errors
GitWorktree                      ._plugin.worker
GitWorktreeProvider              ._worktrees.provider
GitWorktreeProviderConfig        ._worktrees.provider
HardConstraint                   ._core.discovery
InvalidArgumentError             ._errors
KernelPorts                      ._ports.pool
LockError                        ._errors
NoSpaceError                     ._errors
OptionError                      ._errors
ParentGoneError                  ._errors
PortFactory                      ._ports.pool
PortRange                        ._ports.pool
PortRangeProvider                ._ports.provider
PortRangeProviderConfig          ._ports.provider
PortsExhaustedError              ._errors
ProviderRegistry                 ._core.registry
ProvisionedResources             ._core.session
ProvisioningError                ._errors
RegistrationError                ._errors
ReleaseError                     ._errors
ResourceContextPatch             ._core.types
ResourceLease                    ._core.types
ResourceProvider                 ._core.types
ResourceProvisioningOrchestrator ._core.orchestrator
ResourceRequest                  ._core.types
RuntimeInjection                 ._core.types
UnknownKindError                 ._errors
UnsafeDirectoryError             ._errors
UnsupportedPlatformError         ._errors
WorkerSession                    ._plugin.worker
WorktreeFactory                  ._plugin.worker
WorktreeNameError                ._errors
WorktreeRecord                   ._worktrees.provider
build_child_resource_requests    ._core.children
build_scoped_name                ._core.hashing
child_port_slice                 ._core.children
create_default_orchestrator      ._builtins
create_git_worktree_provider     ._worktrees.provider
create_port_range_provider       ._ports.provider
default_lock_directory           ._ports.provider
default_worktree_root            ._worktrees.provider
give_back_port                   ._ports.pool
hash_to_unsigned_int             ._core.hashing
list_worktrees                   ._worktrees.provider
reclaim_orphans                  ._worktrees.provider
take_port                        ._ports.pool
worktree_env                     ._worktrees.provider
"""

#: The public names, and the version (the only name defined here).
__all__ = list(_EXPORT_LINES.split()[::2])
__all__.append("__version__")

#: The ``pytest11`` entry points (pyproject.toml) and what each loads: see ``_entry.py``.
_ENTRY_POINTS = {"_plugin_entry": "plugin", "_declarations_entry": "declarations"}


def __getattr__(name: str) -> Any:
    entry = _ENTRY_POINTS.get(name)
    if entry is not None:
        return _load("pytest_aiops._entry").entry_point(entry)
    if name == "_EXPORTS":  # name -> module, made from the text above when first asked for
        words = _EXPORT_LINES.split()
        value: Any = dict(zip(words[::2], words[1::2], strict=True))
    else:
        module = _exports().get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def _exports() -> dict[str, str]:
    """``_EXPORTS``: each public name -> the module it comes from."""
    exports: dict[str, str] | None = globals().get("_EXPORTS")
    return exports if exports is not None else __getattr__("_EXPORTS")


#: The subpackages (their code is their ``__init__.py``), for :func:`_load`.
_PACKAGES = frozenset({"_core", "_ports", "_worktrees", "_plugin"})


def _load(name: str) -> ModuleType:
    """``import name`` from the file beside its parent's, past ``sys.meta_path`` (its
    parent is loaded), with Python's own loader; where that file does not exist (a zip, a
    frozen build) the usual import runs.

    pytest rewrites the asserts of every module of a distribution with a ``pytest11`` entry
    point and reads each back from its own cache one constant at a time (0.8M instructions
    for ``_entry.py`` alone, issue 23): the entry points load ``_entry.py`` with this
    function, and it loads the modules every run needs the same way. It is here because
    ``_entry.py`` is loaded by it. The spec is made from the path (a subpackage's
    ``__init__.py``, a module's ``.py``), not searched for along the parent's path (0.4M
    instructions a run); an empty ``__init__.py`` (every subpackage's) is not executed.
    """
    import os
    import sys

    module = sys.modules.get(name)
    if module is not None:
        return module
    parent, _, child = name.rpartition(".")
    directory = os.path.join(os.path.dirname(sys.modules[parent].__file__ or ""), child)
    if child in _PACKAGES:
        path, search = os.path.join(directory, "__init__.py"), [directory]
    else:
        path, search = directory + ".py", None
    try:
        size = os.stat(path).st_size
    except OSError:
        return importlib.import_module(name)
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location(name, path, submodule_search_locations=search)
    if spec is None or spec.loader is None:
        return importlib.import_module(name)
    module = module_from_spec(spec)
    sys.modules[name] = module
    try:
        if size or search is None:
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    setattr(sys.modules[parent], child, module)
    return module


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
