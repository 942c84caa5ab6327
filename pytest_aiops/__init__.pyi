"""Type information for :mod:`pytest_aiops` (whose names resolve lazily, PEP 562).

Each name of ``_EXPORTS`` in ``__init__.py``, imported from its module and re-exported
(``X as X``); ``tests/test_exports.py`` checks that the two agree. Kept out of
``__init__.py``, which every pytest run reads through pytest's assertion-rewriting import
hook, where each line costs (issue 23).
"""

import types

from ._builtins import (
    create_default_orchestrator as create_default_orchestrator,
)
from ._core.children import (
    build_child_resource_requests as build_child_resource_requests,
)
from ._core.children import (
    child_port_slice as child_port_slice,
)
from ._core.discovery import (
    DiscoverySnapshot as DiscoverySnapshot,
)
from ._core.discovery import (
    HardConstraint as HardConstraint,
)
from ._core.hashing import (
    build_scoped_name as build_scoped_name,
)
from ._core.hashing import (
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
)
from ._core.types import (
    ResourceLease as ResourceLease,
)
from ._core.types import (
    ResourceProvider as ResourceProvider,
)
from ._core.types import (
    ResourceRequest as ResourceRequest,
)
from ._core.types import (
    RuntimeInjection as RuntimeInjection,
)
from ._errors import (
    AiopsError as AiopsError,
)
from ._errors import (
    AiopsWarning as AiopsWarning,
)
from ._errors import (
    ChildSplitError as ChildSplitError,
)
from ._errors import (
    ClosedError as ClosedError,
)
from ._errors import (
    CommandLineError as CommandLineError,
)
from ._errors import (
    DiscoveryError as DiscoveryError,
)
from ._errors import (
    GitError as GitError,
)
from ._errors import (
    InvalidArgumentError as InvalidArgumentError,
)
from ._errors import (
    LockError as LockError,
)
from ._errors import (
    NoSpaceError as NoSpaceError,
)
from ._errors import (
    OptionError as OptionError,
)
from ._errors import (
    ParentGoneError as ParentGoneError,
)
from ._errors import (
    PortsExhaustedError as PortsExhaustedError,
)
from ._errors import (
    ProvisioningError as ProvisioningError,
)
from ._errors import (
    RegistrationError as RegistrationError,
)
from ._errors import (
    ReleaseError as ReleaseError,
)
from ._errors import (
    UnknownKindError as UnknownKindError,
)
from ._errors import (
    UnsafeDirectoryError as UnsafeDirectoryError,
)
from ._errors import (
    UnsupportedPlatformError as UnsupportedPlatformError,
)
from ._errors import (
    WorktreeNameError as WorktreeNameError,
)
from ._plugin.worker import (
    AiopsWorker as AiopsWorker,
)
from ._plugin.worker import (
    GitWorktree as GitWorktree,
)
from ._plugin.worker import (
    WorkerSession as WorkerSession,
)
from ._plugin.worker import (
    WorktreeFactory as WorktreeFactory,
)
from ._ports.pool import (
    KernelPorts as KernelPorts,
)
from ._ports.pool import (
    PortFactory as PortFactory,
)
from ._ports.pool import (
    PortRange as PortRange,
)
from ._ports.pool import (
    give_back_port as give_back_port,
)
from ._ports.pool import (
    take_port as take_port,
)
from ._ports.provider import (
    PortRangeProvider as PortRangeProvider,
)
from ._ports.provider import (
    PortRangeProviderConfig as PortRangeProviderConfig,
)
from ._ports.provider import (
    create_port_range_provider as create_port_range_provider,
)
from ._ports.provider import (
    default_lock_directory as default_lock_directory,
)
from ._worktrees.provider import (
    GitWorktreeProvider as GitWorktreeProvider,
)
from ._worktrees.provider import (
    GitWorktreeProviderConfig as GitWorktreeProviderConfig,
)
from ._worktrees.provider import (
    WorktreeRecord as WorktreeRecord,
)
from ._worktrees.provider import (
    create_git_worktree_provider as create_git_worktree_provider,
)
from ._worktrees.provider import (
    default_worktree_root as default_worktree_root,
)
from ._worktrees.provider import (
    list_worktrees as list_worktrees,
)
from ._worktrees.provider import (
    reclaim_orphans as reclaim_orphans,
)
from ._worktrees.provider import (
    worktree_env as worktree_env,
)

__version__: str
__all__: list[str]
_EXPORTS: dict[str, str]
_PACKAGES: frozenset[str]

def _load(name: str) -> types.ModuleType: ...
def __dir__() -> list[str]: ...
