"""pytest-aiops: isolated git worktrees and collision-free port ranges, per session.

The core (everything here) works without pytest; :mod:`pytest_aiops.plugin` is the pytest
glue. Everything not listed in ``__all__`` is private. PYTEST_DONT_REWRITE: no assert here is
worth pytest's rewriting, which every pytest run would otherwise pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


if TYPE_CHECKING:
    # What type checkers read: each name of _EXPORTS imported from its module and
    # re-exported (``X as X``); tests/test_exports.py checks that the two agree. One
    # statement a module (isort would split the ``as`` imports: more to compile at start-up).
    from ._builtins import (  # noqa: I001
        create_default_orchestrator as create_default_orchestrator,
    )
    from ._core.children import (
        build_child_resource_requests as build_child_resource_requests,
        child_port_slice as child_port_slice,
    )
    from ._core.discovery import (
        DiscoverySnapshot as DiscoverySnapshot,
        HardConstraint as HardConstraint,
    )
    from ._core.hashing import (
        build_scoped_name as build_scoped_name,
        hash_to_unsigned_int as hash_to_unsigned_int,
    )
    from ._core.orchestrator import (
        ResourceProvisioningOrchestrator as ResourceProvisioningOrchestrator,
    )
    from ._core.registry import (
        ProviderRegistry as ProviderRegistry,
    )
    from ._core.session import (
        ProvisionedResources as ProvisionedResources,
    )
    from ._core.types import (
        ResourceContextPatch as ResourceContextPatch,
        ResourceLease as ResourceLease,
        ResourceProvider as ResourceProvider,
        ResourceRequest as ResourceRequest,
        RuntimeInjection as RuntimeInjection,
    )
    from ._errors import (
        AiopsError as AiopsError,
        AiopsWarning as AiopsWarning,
        ChildSplitError as ChildSplitError,
        ClosedError as ClosedError,
        CommandLineError as CommandLineError,
        DiscoveryError as DiscoveryError,
        GitError as GitError,
        InvalidArgumentError as InvalidArgumentError,
        LockError as LockError,
        NoSpaceError as NoSpaceError,
        OptionError as OptionError,
        ParentGoneError as ParentGoneError,
        PortsExhaustedError as PortsExhaustedError,
        ProvisioningError as ProvisioningError,
        RegistrationError as RegistrationError,
        ReleaseError as ReleaseError,
        UnknownKindError as UnknownKindError,
        UnsafeDirectoryError as UnsafeDirectoryError,
        UnsupportedPlatformError as UnsupportedPlatformError,
        WorktreeNameError as WorktreeNameError,
    )
    from ._plugin.worker import (
        AiopsWorker as AiopsWorker,
        GitWorktree as GitWorktree,
        WorkerSession as WorkerSession,
        WorktreeFactory as WorktreeFactory,
    )
    from ._ports.pool import (
        KernelPorts as KernelPorts,
        PortFactory as PortFactory,
        PortRange as PortRange,
        give_back_port as give_back_port,
        take_port as take_port,
    )
    from ._ports.provider import (
        PortRangeProvider as PortRangeProvider,
        PortRangeProviderConfig as PortRangeProviderConfig,
        create_port_range_provider as create_port_range_provider,
        default_lock_directory as default_lock_directory,
    )
    from ._worktrees.provider import (
        GitWorktreeProvider as GitWorktreeProvider,
        GitWorktreeProviderConfig as GitWorktreeProviderConfig,
        WorktreeRecord as WorktreeRecord,
        create_git_worktree_provider as create_git_worktree_provider,
        default_worktree_root as default_worktree_root,
        list_worktrees as list_worktrees,
        reclaim_orphans as reclaim_orphans,
        worktree_env as worktree_env,
    )
