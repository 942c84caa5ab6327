"""The object passed to ``pytest_aiops_register_providers``: collects providers by kind."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import RegistrationError
from .types import provider_kind

if TYPE_CHECKING:
    from .orchestrator import ResourceProvisioningOrchestrator
    from .types import ResourceLease, ResourceProvider


class LazyProvider:
    """A provider that imports and builds the real one on its first ``provision``.

    The built-ins are registered in every pytest run; importing their modules (git, locking,
    worktree store) costs more than the rest of the plugin's start-up, and most runs never
    provision anything.
    """

    def __init__(self, kind: str, factory: str) -> None:
        self.kind = kind
        self._factory = factory  # "module:function", called without arguments
        self._provider: ResourceProvider | None = None

    def resolve(self) -> ResourceProvider:
        if self._provider is None:
            module, _, name = self._factory.partition(":")
            provider: ResourceProvider = getattr(importlib.import_module(module), name)()
            self._provider = provider
        return self._provider

    def provision(
        self, *, session_id: str, workspace_root: str, options: Mapping[str, Any]
    ) -> ResourceLease:
        return self.resolve().provision(
            session_id=session_id, workspace_root=workspace_root, options=options
        )

    def __repr__(self) -> str:
        return f"<LazyProvider {self.kind!r} from {self._factory}>"


class ProviderRegistry:
    """Callable registry: ``register(provider)`` adds a provider for ``provider.kind``.

    Built-ins and third-party providers are registered the same way; ``replace=True`` lets a
    plugin substitute its own provider for an already registered kind. The one place that
    checks a provider and refuses a duplicate kind, for the plugin's hook and for
    :class:`~pytest_aiops.ResourceProvisioningOrchestrator` alike.
    """

    def __init__(self, *, replaceable: bool = True) -> None:
        # The orchestrator keeps its providers in one of these with replaceable=False: a
        # kind, once registered there, is never substituted (the reference's rule and text).
        self.replaceable = replaceable
        self._providers: dict[str, ResourceProvider] = {}

    def __call__(self, provider: ResourceProvider, *, replace: bool = False) -> None:
        if replace and not self.replaceable:
            raise RegistrationError("this registry does not substitute providers (replace=True)")
        kind = provider_kind(provider)
        if kind in self._providers and not replace:
            raise RegistrationError(
                f'Resource provider "{kind}" is already registered '
                f"(by {self._providers[kind]!r}); pass replace=True to substitute it."
                if self.replaceable
                else f'Resource provider "{kind}" is already registered.'
            )
        self._providers[kind] = provider

    register = __call__

    @property
    def kinds(self) -> tuple[str, ...]:
        """Registered kinds, in registration order."""
        return tuple(self._providers)

    def get(self, kind: str) -> ResourceProvider | None:
        return self._providers.get(kind)

    def orchestrator(
        self, overrides: dict[str, ResourceProvider] | None = None
    ) -> ResourceProvisioningOrchestrator:
        """A fresh orchestrator over these providers (``overrides`` replace kinds).

        Every orchestrator made here holds this registry's provider instances themselves,
        not copies: what a provider remembers between calls is the same whichever of them
        provisioned: ``GitWorktreeProvider.keep(path)``, which finds the checkout among its
        provider's leases by path, keeps a worktree provisioned through one orchestrator
        through another (tests/test_state_sharing.py). The plugin no longer needs it: its
        worktree handle keeps through the lease that made it (tests/test_keep_handle.py).
        """
        from .orchestrator import ResourceProvisioningOrchestrator

        providers = dict(self._providers)
        providers.update(overrides or {})
        return ResourceProvisioningOrchestrator(providers.values())
