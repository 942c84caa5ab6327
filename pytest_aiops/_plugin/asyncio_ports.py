"""pytest-asyncio's port fixtures, served from the worker's port pool (``--aiops-asyncio-ports``).

Registered by :mod:`pytest_aiops.plugin` only when that setting is on, and only after every
entry-point plugin, so these definitions win over pytest-asyncio's (a ``conftest.py`` that
defines the names still wins over both). With the setting off nothing here is loaded and the
names stay pytest-asyncio's. Same names, scopes and call signatures as pytest-asyncio's:
``unused_tcp_port`` / ``unused_udp_port`` per test, the ``_factory`` variants per session
(each call a port nobody else holds, back in the pool when the fixture or test that called
it ends).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .._ports.pool import PortRange, current_pool, hold_port


@pytest.fixture
def unused_tcp_port() -> Iterator[int]:
    """A TCP port from this worker's pytest-aiops pool (pytest-asyncio's name)."""
    yield from hold_port(current_pool())  # as aiops_port: no fixture to resolve per test


@pytest.fixture
def unused_udp_port() -> Iterator[int]:
    """A UDP port from this worker's pytest-aiops pool (pytest-asyncio's name)."""
    yield from hold_port(current_pool(), "udp")


@pytest.fixture(scope="session")
def unused_tcp_port_factory(port_range: PortRange) -> Callable[[], int]:
    """Makes TCP ports from this worker's pytest-aiops pool (pytest-asyncio's name)."""
    return port_range.next_port


@pytest.fixture(scope="session")
def unused_udp_port_factory(port_range: PortRange) -> Callable[[], int]:
    """Makes UDP ports from this worker's pytest-aiops pool (pytest-asyncio's name)."""
    return lambda: port_range.next_port(protocol="udp")
