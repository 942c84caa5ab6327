"""pytest-aiops: isolated git worktrees and collision-free port ranges, per session.

The core (everything here) works without pytest; :mod:`pytest_aiops.plugin` is the pytest
glue. Everything not listed in ``__all__`` is private.
"""

from __future__ import annotations

from ._children import build_child_resource_requests, child_port_slice
from ._defaults import create_default_orchestrator
from ._discovery import DiscoverySnapshot, HardConstraint
from ._errors import (
    AiopsError,
    AiopsWarning,
    ChildSplitError,
    GitError,
    LockError,
    OptionError,
    PortsExhaustedError,
    ProvisioningError,
    RegistrationError,
    ReleaseError,
)
from ._hashing import build_scoped_name, hash_to_unsigned_int
from ._locking import ParentGoneError
from ._orchestrator import ResourceProvisioningOrchestrator
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
from ._session import ProvisionedResources
from ._types import (
    ResourceContextPatch,
    ResourceLease,
    ResourceProvider,
    ResourceRequest,
    RuntimeInjection,
)

__version__ = "0.1.0"

__all__ = [
    "AiopsError",
    "AiopsWarning",
    "ChildSplitError",
    "DiscoverySnapshot",
    "GitError",
    "GitWorktreeProvider",
    "GitWorktreeProviderConfig",
    "HardConstraint",
    "LockError",
    "OptionError",
    "ParentGoneError",
    "PortRangeProvider",
    "PortRangeProviderConfig",
    "PortsExhaustedError",
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
    "hash_to_unsigned_int",
    "list_worktrees",
    "reclaim_orphans",
    "worktree_env",
]
