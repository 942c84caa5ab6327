"""The built-in providers, wired in one place: their lazy registrations and the default
orchestrator (the reference's default factory).

This module is imported in every pytest run (the plugin registers the built-ins); the
providers' own modules (git, locks, worktree store) are imported only on first use.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._core.registry import LazyProvider
from ._errors import OptionError

if TYPE_CHECKING:
    from ._core.orchestrator import ResourceProvisioningOrchestrator
    from ._ports.provider import PortRangeProviderConfig
    from ._worktrees.provider import GitWorktreeProviderConfig

#: Each built-in kind's factory, ``module:function`` called without arguments.
BUILTIN_FACTORIES = {
    "git-worktree": "pytest_aiops._worktrees.provider:create_git_worktree_provider",
    "port-range": "pytest_aiops._ports.provider:create_port_range_provider",
}

_Config = TypeVar("_Config", "GitWorktreeProviderConfig", "PortRangeProviderConfig")


def lazy_builtin_providers() -> list[LazyProvider]:
    """The built-ins as providers that import their module on first ``provision``."""
    return [LazyProvider(kind, factory) for kind, factory in BUILTIN_FACTORIES.items()]


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _override(default: _Config, value: _Config | Mapping[str, Any] | None) -> _Config:
    """``value`` itself, or ``default`` with a partial override in camelCase or snake_case keys.

    Partial mappings mirror the reference's ``{ ...DEFAULT_CONFIG, ...input.portRange }``.
    """
    if value is None:
        return default
    if not isinstance(value, Mapping):
        return value
    names = {f.name for f in dataclasses.fields(default)}
    changes: dict[str, Any] = {}
    for key, item in value.items():
        name = _CAMEL.sub("_", str(key)).lower()
        if name not in names:
            allowed = ", ".join(sorted(names))
            raise OptionError(str(key), f"Unknown option {key!r}; allowed: {allowed}.")
        changes[name] = item
    return dataclasses.replace(default, **changes)


def create_default_orchestrator(
    git_worktree: GitWorktreeProviderConfig | Mapping[str, Any] | None = None,
    port_range: PortRangeProviderConfig | Mapping[str, Any] | None = None,
) -> ResourceProvisioningOrchestrator:
    """An orchestrator with ``git-worktree`` and ``port-range`` registered.

    Each argument is a full config, or a partial override of the defaults as a mapping
    (``{"baseRef": "main"}`` or ``{"base_ref": "main"}``); request options still override
    these per request.
    """
    from ._core.orchestrator import ResourceProvisioningOrchestrator
    from ._ports.provider import PortRangeProviderConfig, create_port_range_provider
    from ._worktrees.provider import GitWorktreeProviderConfig, create_git_worktree_provider

    git_config = _override(GitWorktreeProviderConfig(), git_worktree)
    port_config = _override(PortRangeProviderConfig(), port_range)
    return ResourceProvisioningOrchestrator(
        [create_git_worktree_provider(git_config), create_port_range_provider(port_config)]
    )
