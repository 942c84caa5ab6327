"""pytest-aiops: isolated git worktrees and collision-free port ranges, per session.

The core (everything here) works without pytest; :mod:`pytest_aiops.plugin` is the pytest
glue. Everything not listed in ``__all__`` is private. PYTEST_DONT_REWRITE: no assert here is
worth pytest's rewriting, which every pytest run would otherwise pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names resolve on first use (PEP 562): the pytest plugin imports this package in every
# pytest run, and a run that never uses pytest-aiops should not pay for importing it all.
_EXPORTS: dict[str, str] = {
    "AiopsError": "._errors",
    "UnknownKindError": "._errors",
    "WorktreeNameError": "._errors",
    "ClosedError": "._errors",
    "CommandLineError": "._errors",
    "DiscoveryError": "._errors",
    "InvalidArgumentError": "._errors",
    "UnsafeDirectoryError": "._errors",
    "UnsupportedPlatformError": "._errors",
    "AiopsWarning": "._errors",
    "AiopsWorker": "._plugin.worker",
    "ChildSplitError": "._errors",
    "DiscoverySnapshot": "._core.discovery",
    "GitError": "._errors",
    "GitWorktree": "._plugin.worker",
    "GitWorktreeProvider": "._worktrees.provider",
    "GitWorktreeProviderConfig": "._worktrees.provider",
    "HardConstraint": "._core.discovery",
    "LockError": "._errors",
    "NoSpaceError": "._errors",
    "OptionError": "._errors",
    "ParentGoneError": "._errors",
    "KernelPorts": "._ports.pool",
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
    "WorktreeFactory": "._plugin.worker",
    "WorkerSession": "._plugin.worker",
    "WorktreeRecord": "._worktrees.provider",
    "build_child_resource_requests": "._core.children",
    "build_scoped_name": "._core.hashing",
    "child_port_slice": "._core.children",
    "create_default_orchestrator": "._builtins",
    "create_git_worktree_provider": "._worktrees.provider",
    "create_port_range_provider": "._ports.provider",
    "default_lock_directory": "._ports.provider",
    "default_worktree_root": "._worktrees.provider",
    "hash_to_unsigned_int": "._core.hashing",
    "list_worktrees": "._worktrees.provider",
    "reclaim_orphans": "._worktrees.provider",
    "worktree_env": "._worktrees.provider",
    "give_back_port": "._ports.pool",
    "take_port": "._ports.pool",
}

__all__ = [
    "AiopsError",
    "AiopsWarning",
    "AiopsWorker",
    "ChildSplitError",
    "ClosedError",
    "CommandLineError",
    "DiscoveryError",
    "DiscoverySnapshot",
    "GitError",
    "GitWorktree",
    "GitWorktreeProvider",
    "GitWorktreeProviderConfig",
    "HardConstraint",
    "InvalidArgumentError",
    "KernelPorts",
    "LockError",
    "NoSpaceError",
    "OptionError",
    "ParentGoneError",
    "PortFactory",
    "PortRange",
    "PortRangeProvider",
    "PortRangeProviderConfig",
    "PortsExhaustedError",
    "ProviderRegistry",
    "ProvisionedResources",
    "ProvisioningError",
    "RegistrationError",
    "ReleaseError",
    "ResourceContextPatch",
    "ResourceLease",
    "ResourceProvider",
    "ResourceProvisioningOrchestrator",
    "ResourceRequest",
    "RuntimeInjection",
    "UnknownKindError",
    "UnsafeDirectoryError",
    "UnsupportedPlatformError",
    "WorkerSession",
    "WorktreeFactory",
    "WorktreeNameError",
    "WorktreeRecord",
    "__version__",
    "build_child_resource_requests",
    "build_scoped_name",
    "child_port_slice",
    "create_default_orchestrator",
    "create_git_worktree_provider",
    "create_port_range_provider",
    "default_lock_directory",
    "default_worktree_root",
    "give_back_port",
    "hash_to_unsigned_int",
    "list_worktrees",
    "reclaim_orphans",
    "take_port",
    "worktree_env",
]


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
    from ._builtins import (
        create_default_orchestrator,
    )
    from ._core.children import (
        build_child_resource_requests,
        child_port_slice,
    )
    from ._core.discovery import (
        DiscoverySnapshot,
        HardConstraint,
    )
    from ._core.hashing import (
        build_scoped_name,
        hash_to_unsigned_int,
    )
    from ._core.orchestrator import (
        ResourceProvisioningOrchestrator,
    )
    from ._core.registry import (
        ProviderRegistry,
    )
    from ._core.session import (
        ProvisionedResources,
    )
    from ._core.types import (
        ResourceContextPatch,
        ResourceLease,
        ResourceProvider,
        ResourceRequest,
        RuntimeInjection,
    )
    from ._errors import (
        AiopsError,
        AiopsWarning,
        ChildSplitError,
        ClosedError,
        CommandLineError,
        DiscoveryError,
        GitError,
        InvalidArgumentError,
        LockError,
        NoSpaceError,
        OptionError,
        ParentGoneError,
        PortsExhaustedError,
        ProvisioningError,
        RegistrationError,
        ReleaseError,
        UnknownKindError,
        UnsafeDirectoryError,
        UnsupportedPlatformError,
        WorktreeNameError,
    )
    from ._plugin.worker import (
        AiopsWorker,
        GitWorktree,
        WorkerSession,
        WorktreeFactory,
    )
    from ._ports.pool import (
        KernelPorts,
        PortFactory,
        PortRange,
        give_back_port,
        take_port,
    )
    from ._ports.provider import (
        PortRangeProvider,
        PortRangeProviderConfig,
        create_port_range_provider,
        default_lock_directory,
    )
    from ._worktrees.provider import (
        GitWorktreeProvider,
        GitWorktreeProviderConfig,
        WorktreeRecord,
        create_git_worktree_provider,
        default_worktree_root,
        list_worktrees,
        reclaim_orphans,
        worktree_env,
    )
