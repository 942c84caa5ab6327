"""pytest-aiohttp's server fixtures on ports from the worker's pool (``--aiops-aiohttp-ports``).

Registered by :mod:`pytest_aiops.plugin` only when that setting is on, after every entry-point
plugin: each fixture here requests pytest-aiohttp's fixture of the same name and wraps the
factory it returns, adding ``port=`` (a port from :func:`~pytest_aiops._ports.pool.current_pool`,
as ``take_port()`` gives) only where the caller gave none. Servers, clients and their closing
stay pytest-aiohttp's. The port belongs to the fixture or test that called the factory and goes
back to the pool when that one ends. With the setting off nothing here is loaded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web

from .._ports.pool import current_pool

_Factory = Callable[..., Awaitable[Any]]


def _with_port(factory: _Factory) -> _Factory:
    """``factory(x, port=..., **kwargs)`` with a pool port when ``port`` is absent or None."""

    async def go(target: Any, *, port: int | None = None, **kwargs: Any) -> Any:
        if port is None:
            port = current_pool().next_port()
        return await factory(target, port=port, **kwargs)

    return go


@pytest.fixture
def aiohttp_server(aiohttp_server: _Factory) -> _Factory:
    """pytest-aiohttp's ``aiohttp_server(app, *, port=None, **kwargs)``, on a pool port."""
    return _with_port(aiohttp_server)


@pytest.fixture
def aiohttp_raw_server(aiohttp_raw_server: _Factory) -> _Factory:
    """pytest-aiohttp's ``aiohttp_raw_server(handler, *, port=None, **kwargs)``, on a pool
    port."""
    return _with_port(aiohttp_raw_server)


@pytest.fixture
def aiohttp_client(aiohttp_client: _Factory) -> _Factory:
    """pytest-aiohttp's ``aiohttp_client(app_or_server, *, server_kwargs=None, **kwargs)``.

    Given an ``Application`` it starts a server for it, on a pool port unless
    ``server_kwargs`` names a port; given a server it uses that server's port as is.
    """

    async def go(
        target: Any, *, server_kwargs: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        if isinstance(target, web.Application):
            server_kwargs = dict(server_kwargs or {})
            if server_kwargs.get("port") is None:
                server_kwargs["port"] = current_pool().next_port()
        return await aiohttp_client(target, server_kwargs=server_kwargs, **kwargs)

    return go
