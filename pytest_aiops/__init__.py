"""pytest-aiops: isolated git worktrees and collision-free port ranges, per session.

The core (everything here) works without pytest; :mod:`pytest_aiops.plugin` is the pytest
glue. Everything not listed in ``__all__`` is private. PYTEST_DONT_REWRITE: no assert here is
worth pytest's rewriting, which every pytest run would otherwise pay for.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public names, in one list: each resolves on first use (PEP 562), from its module. The
# pytest plugin imports this package in every pytest run, and a run that never uses
# pytest-aiops should not pay for importing it all.
_EXPORTS: dict[str, str] = {
    "AiopsError": "._errors",
    "AiopsWarning": "._errors",
    "AiopsWorker": "._plugin.worker",
    "ChildSplitError": "._errors",
    "ClosedError": "._errors",
    "CommandLineError": "._errors",
    "DiscoveryError": "._errors",
    "DiscoverySnapshot": "._core.discovery",
    "GitError": "._errors",
    "GitWorktree": "._plugin.worker",
    "GitWorktreeProvider": "._worktrees.provider",
    "GitWorktreeProviderConfig": "._worktrees.provider",
    "HardConstraint": "._core.discovery",
    "InvalidArgumentError": "._errors",
    "KernelPorts": "._ports.pool",
    "LockError": "._errors",
    "NoSpaceError": "._errors",
    "OptionError": "._errors",
    "ParentGoneError": "._errors",
    "PortFactory": "._ports.pool",
    "PortRange": "._ports.pool",
    "PortRangeProvider": "._ports.provider",
    "PortRangeProviderConfig": "._ports.provider",
    "PortsExhaustedError": "._errors",
    "ProviderRegistry": "._core.registry",
    "ProvisionedResources": "._core.session",
    "ProvisioningError": "._errors",
    "RegistrationError": "._errors",
    "ReleaseError": "._errors",
    "ResourceContextPatch": "._core.types",
    "ResourceLease": "._core.types",
    "ResourceProvider": "._core.types",
    "ResourceProvisioningOrchestrator": "._core.orchestrator",
    "ResourceRequest": "._core.types",
    "RuntimeInjection": "._core.types",
    "UnknownKindError": "._errors",
    "UnsafeDirectoryError": "._errors",
    "UnsupportedPlatformError": "._errors",
    "WorkerSession": "._plugin.worker",
    "WorktreeFactory": "._plugin.worker",
    "WorktreeNameError": "._errors",
    "WorktreeRecord": "._worktrees.provider",
    "build_child_resource_requests": "._core.children",
    "build_scoped_name": "._core.hashing",
    "child_port_slice": "._core.children",
    "create_default_orchestrator": "._builtins",
    "create_git_worktree_provider": "._worktrees.provider",
    "create_port_range_provider": "._ports.provider",
    "default_lock_directory": "._ports.provider",
    "default_worktree_root": "._worktrees.provider",
    "give_back_port": "._ports.pool",
    "hash_to_unsigned_int": "._core.hashing",
    "list_worktrees": "._worktrees.provider",
    "reclaim_orphans": "._worktrees.provider",
    "take_port": "._ports.pool",
    "worktree_env": "._worktrees.provider",
}

#: Made from the one list above (the version is the only name defined here).
__all__ = list(_EXPORTS)
__all__.append("__version__")


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
