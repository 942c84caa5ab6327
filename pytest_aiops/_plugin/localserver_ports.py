"""pytest-localserver's servers on ports from the worker's pool (``--aiops-localserver-ports``).

pytest-localserver's ``httpserver``, ``httpsserver`` and ``smtpserver`` construct their server
with no port (so the kernel picks one) and take no setting, so they cannot be wrapped: these
are the same fixtures (same names, function scope, server classes and hosts, stopped at teardown)
constructing the server with a port from :func:`~pytest_aiops._ports.pool.current_pool`.
Registered by :mod:`pytest_aiops.plugin` only when the setting is on, after every
entry-point plugin, so these win. pytest-httpserver also names a fixture ``httpserver``:
with this setting on, ``httpserver`` is pytest-localserver's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .._ports.pool import current_pool


@pytest.fixture
def httpserver() -> Iterator[Any]:
    """pytest-localserver's threaded HTTP ``ContentServer``, on a pool port."""
    from pytest_localserver import http

    server = http.ContentServer(port=current_pool().next_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def httpsserver() -> Iterator[Any]:
    """pytest-localserver's HTTPS ``SecureContentServer``, on a pool port."""
    from pytest_localserver import https

    server = https.SecureContentServer(port=current_pool().next_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtpserver() -> Iterator[Any]:
    """pytest-localserver's SMTP server, on a pool port."""
    from pytest_localserver import smtp

    server = smtp.Server(port=current_pool().next_port())
    server.start()
    yield server
    server.stop()
