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
    # re-exported (``X as X``); tests/test_exports.py checks that the two agree.
    from ._builtins import create_default_orchestrator as create_default_orchestrator
    from ._core.children import build_child_resource_requests as build_child_resource_requests
    from ._core.children import child_port_slice as child_port_slice
    from ._core.discovery import DiscoverySnapshot as DiscoverySnapshot
    from ._core.discovery import HardConstraint as HardConstraint
    from ._core.hashing import build_scoped_name as build_scoped_name
    from ._core.hashing import hash_to_unsigned_int as hash_to_unsigned_int
    from ._core.orchestrator import (
        ResourceProvisioningOrchestrator as ResourceProvisioningOrchestrator,
    )
    from ._core.registry import ProviderRegistry as ProviderRegistry
    from ._core.session import ProvisionedResources as ProvisionedResources
    from ._core.types import ResourceContextPatch as ResourceContextPatch
    from ._core.types import ResourceLease as ResourceLease
    from ._core.types import ResourceProvider as ResourceProvider
    from ._core.types import ResourceRequest as ResourceRequest
    from ._core.types import RuntimeInjection as RuntimeInjection
    from ._errors import AiopsError as AiopsError
    from ._errors import AiopsWarning as AiopsWarning
    from ._errors import ChildSplitError as ChildSplitError
    from ._errors import ClosedError as ClosedError
    from ._errors import CommandLineError as CommandLineError
    from ._errors import DiscoveryError as DiscoveryError
    from ._errors import GitError as GitError
    from ._errors import InvalidArgumentError as InvalidArgumentError
    from ._errors import LockError as LockError
    from ._errors import NoSpaceError as NoSpaceError
    from ._errors import OptionError as OptionError
    from ._errors import ParentGoneError as ParentGoneError
    from ._errors import PortsExhaustedError as PortsExhaustedError
    from ._errors import ProvisioningError as ProvisioningError
    from ._errors import RegistrationError as RegistrationError
    from ._errors import ReleaseError as ReleaseError
    from ._errors import UnknownKindError as UnknownKindError
    from ._errors import UnsafeDirectoryError as UnsafeDirectoryError
    from ._errors import UnsupportedPlatformError as UnsupportedPlatformError
    from ._errors import WorktreeNameError as WorktreeNameError
    from ._plugin.worker import AiopsWorker as AiopsWorker
    from ._plugin.worker import GitWorktree as GitWorktree
    from ._plugin.worker import WorkerSession as WorkerSession
    from ._plugin.worker import WorktreeFactory as WorktreeFactory
    from ._ports.pool import KernelPorts as KernelPorts
    from ._ports.pool import PortFactory as PortFactory
    from ._ports.pool import PortRange as PortRange
    from ._ports.pool import give_back_port as give_back_port
    from ._ports.pool import take_port as take_port
    from ._ports.provider import PortRangeProvider as PortRangeProvider
    from ._ports.provider import PortRangeProviderConfig as PortRangeProviderConfig
    from ._ports.provider import create_port_range_provider as create_port_range_provider
    from ._ports.provider import default_lock_directory as default_lock_directory
    from ._worktrees.provider import GitWorktreeProvider as GitWorktreeProvider
    from ._worktrees.provider import GitWorktreeProviderConfig as GitWorktreeProviderConfig
    from ._worktrees.provider import WorktreeRecord as WorktreeRecord
    from ._worktrees.provider import create_git_worktree_provider as create_git_worktree_provider
    from ._worktrees.provider import default_worktree_root as default_worktree_root
    from ._worktrees.provider import list_worktrees as list_worktrees
    from ._worktrees.provider import reclaim_orphans as reclaim_orphans
    from ._worktrees.provider import worktree_env as worktree_env
