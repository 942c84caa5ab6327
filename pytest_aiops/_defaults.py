"""The orchestrator with both built-in providers, as the reference's default factory."""

from __future__ import annotations

from ._orchestrator import ResourceProvisioningOrchestrator
from ._providers.git_worktree import GitWorktreeProviderConfig, create_git_worktree_provider
from ._providers.port_range import PortRangeProviderConfig, create_port_range_provider


def create_default_orchestrator(
    git_worktree: GitWorktreeProviderConfig | None = None,
    port_range: PortRangeProviderConfig | None = None,
) -> ResourceProvisioningOrchestrator:
    """An orchestrator with ``git-worktree`` and ``port-range`` registered.

    Pass a config to override that provider's defaults; build partial overrides with
    ``dataclasses.replace(GitWorktreeProviderConfig(), base_ref="main")``.
    """
    return ResourceProvisioningOrchestrator(
        [create_git_worktree_provider(git_worktree), create_port_range_provider(port_range)]
    )
