"""Hook specifications other plugins and ``conftest.py`` files implement to extend pytest-aiops.

Registered with the declarations plugin (``pytest_aiops._plugin.declarations``); implement
them like any pytest hook (a function with the same name and any subset of the arguments in
a ``conftest.py`` or plugin). Example, a
provider of a new resource kind that every worker's ``provisioned_session`` then includes::

    # conftest.py
    def pytest_aiops_register_providers(register):
        register(MyDatabaseProvider())          # any object with .kind and .provision(...)

    def pytest_aiops_session_resources(config, worker_id):
        return [{"kind": "my-database", "options": {"size": "small"}}]

The built-in ``port-range`` and ``git-worktree`` providers are registered through the same
hook, by a plugin named ``aiops-builtin-providers``. Both specifications are marked
``@pytest.hookspec`` (plain calls: every implementation runs, results collected).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._core.registry import ProviderRegistry
    from ._core.types import ResourceRequest


@pytest.hookspec
def pytest_aiops_register_providers(register: ProviderRegistry, config: pytest.Config) -> None:
    """Register resource providers: call ``register(provider)`` for each.

    Called once per process (controller and each xdist worker) in ``pytest_configure``, so it
    must be cheap: build the provider object, do not lease anything yet. ``register`` refuses a
    second provider for a kind unless called as ``register(provider, replace=True)``, which is
    how a plugin swaps out a built-in. ``provider`` is any object satisfying
    :class:`pytest_aiops.ResourceProvider` (``kind`` and ``provision(session_id=,
    workspace_root=, options=)``).
    """


@pytest.hookspec
def pytest_aiops_session_resources(
    config: pytest.Config, worker_id: str
) -> Sequence[ResourceRequest | Mapping[str, Any]] | None:
    """Return resource requests to add to this worker's ``provisioned_session``.

    Called in the worker (``worker_id`` is xdist's id such as ``gw0``, or ``master`` without
    xdist) the first time ``provisioned_session`` is requested. Requests are
    :class:`pytest_aiops.ResourceRequest` objects or the reference's JSON shape
    ``{"kind": ..., "options": {...}}``; the results of all implementations are provisioned
    in order after the kinds named by ``--aiops-resources``.
    """
