"""The object passed to ``pytest_aiops_register_providers``: collects providers by kind."""

from __future__ import annotations

from ._orchestrator import ResourceProvisioningOrchestrator
from ._types import ResourceProvider


class ProviderRegistry:
    """Callable registry: ``register(provider)`` adds a provider for ``provider.kind``.

    Built-ins and third-party providers are registered the same way; ``replace=True`` lets a
    plugin substitute its own provider for an already registered kind.
    """

    def __init__(self) -> None:
        self._providers: dict[str, ResourceProvider] = {}

    def __call__(self, provider: ResourceProvider, *, replace: bool = False) -> None:
        kind = getattr(provider, "kind", None)
        if (
            not isinstance(kind, str)
            or not kind
            or not callable(getattr(provider, "provision", None))
        ):
            raise TypeError(
                f"{provider!r} is not a resource provider: it needs a non-empty str `kind` "
                "and a `provision(session_id=, workspace_root=, options=)` method"
            )
        if kind in self._providers and not replace:
            raise ValueError(
                f'Resource provider "{kind}" is already registered '
                f"(by {self._providers[kind]!r}); pass replace=True to substitute it."
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
        """A fresh orchestrator over these providers (``overrides`` replace kinds)."""
        providers = dict(self._providers)
        providers.update(overrides or {})
        return ResourceProvisioningOrchestrator(providers.values())
