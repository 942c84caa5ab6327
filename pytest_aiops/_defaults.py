"""The orchestrator with both built-in providers, as the reference's default factory."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from ._errors import OptionError
from ._orchestrator import ResourceProvisioningOrchestrator
from ._providers.git_worktree import GitWorktreeProviderConfig, create_git_worktree_provider
from ._providers.port_range import PortRangeProviderConfig, create_port_range_provider

_Config = TypeVar("_Config", GitWorktreeProviderConfig, PortRangeProviderConfig)
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
    git_config = _override(GitWorktreeProviderConfig(), git_worktree)
    port_config = _override(PortRangeProviderConfig(), port_range)
    return ResourceProvisioningOrchestrator(
        [create_git_worktree_provider(git_config), create_port_range_provider(port_config)]
    )
