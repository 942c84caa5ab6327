"""pytest-aiops: isolated git worktrees and collision-free port ranges, per session.

The core (everything here) works without pytest; :mod:`pytest_aiops.plugin` is the pytest
glue. Everything not listed in ``__all__`` is private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names resolve on first use (PEP 562): the pytest plugin imports this package in every
# pytest run, and a run that never uses pytest-aiops should not pay for importing it all.
_EXPORTS: dict[str, str] = {
    "AiopsError": "._errors",
    "AiopsWarning": "._errors",
    "AiopsWorker": "._resources",
    "ChildSplitError": "._errors",
    "DiscoverySnapshot": "._discovery",
    "GitError": "._errors",
    "GitWorktree": "._resources",
    "GitWorktreeProvider": "._providers.git_worktree",
    "GitWorktreeProviderConfig": "._providers.git_worktree",
    "HardConstraint": "._discovery",
    "LockError": "._errors",
    "NoSpaceError": "._errors",
    "OptionError": "._errors",
    "ParentGoneError": "._locking",
    "KernelPorts": "._port_pool",
    "PortRange": "._port_pool",
    "PortRangeProvider": "._providers.port_range",
    "PortRangeProviderConfig": "._providers.port_range",
    "PortsExhaustedError": "._errors",
    "ProviderRegistry": "._registry",
    "ProvisionedResources": "._session",
    "ProvisioningError": "._errors",
    "RegistrationError": "._errors",
    "ReleaseError": "._errors",
    "ResourceContextPatch": "._types",
    "ResourceLease": "._types",
    "ResourceProvider": "._types",
    "ResourceProvisioningOrchestrator": "._orchestrator",
    "ResourceRequest": "._types",
    "RuntimeInjection": "._types",
    "WorktreeFactory": "._resources",
    "WorkerSession": "._resources",
    "WorktreeRecord": "._providers.git_worktree",
    "build_child_resource_requests": "._children",
    "build_scoped_name": "._hashing",
    "child_port_slice": "._children",
    "create_default_orchestrator": "._defaults",
    "create_git_worktree_provider": "._providers.git_worktree",
    "create_port_range_provider": "._providers.port_range",
    "default_lock_directory": "._providers.port_range",
    "default_worktree_root": "._providers.git_worktree",
    "hash_to_unsigned_int": "._hashing",
    "list_worktrees": "._providers.git_worktree",
    "reclaim_orphans": "._providers.git_worktree",
    "worktree_env": "._providers.git_worktree",
    "give_back_port": "._port_pool",
    "take_port": "._port_pool",
}

__all__ = [
    "AiopsError",
    "AiopsWarning",
    "AiopsWorker",
    "ChildSplitError",
    "DiscoverySnapshot",
    "GitError",
    "GitWorktree",
    "GitWorktreeProvider",
    "GitWorktreeProviderConfig",
    "HardConstraint",
    "KernelPorts",
    "LockError",
    "NoSpaceError",
    "OptionError",
    "ParentGoneError",
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
    "WorkerSession",
    "WorktreeFactory",
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
    from ._children import (
        build_child_resource_requests,
        child_port_slice,
    )
    from ._defaults import (
        create_default_orchestrator,
    )
    from ._discovery import (
        DiscoverySnapshot,
        HardConstraint,
    )
    from ._errors import (
        AiopsError,
        AiopsWarning,
        ChildSplitError,
        GitError,
        LockError,
        NoSpaceError,
        OptionError,
        PortsExhaustedError,
        ProvisioningError,
        RegistrationError,
        ReleaseError,
    )
    from ._hashing import (
        build_scoped_name,
        hash_to_unsigned_int,
    )
    from ._locking import (
        ParentGoneError,
    )
    from ._orchestrator import (
        ResourceProvisioningOrchestrator,
    )
    from ._port_pool import (
        KernelPorts,
        PortRange,
        give_back_port,
        take_port,
    )
    from ._providers.git_worktree import (
        GitWorktreeProvider,
        GitWorktreeProviderConfig,
        WorktreeRecord,
        create_git_worktree_provider,
        default_worktree_root,
        list_worktrees,
        reclaim_orphans,
        worktree_env,
    )
    from ._providers.port_range import (
        PortRangeProvider,
        PortRangeProviderConfig,
        create_port_range_provider,
        default_lock_directory,
    )
    from ._registry import (
        ProviderRegistry,
    )
    from ._resources import (
        AiopsWorker,
        GitWorktree,
        WorkerSession,
        WorktreeFactory,
    )
    from ._session import (
        ProvisionedResources,
    )
    from ._types import (
        ResourceContextPatch,
        ResourceLease,
        ResourceProvider,
        ResourceRequest,
        RuntimeInjection,
    )
