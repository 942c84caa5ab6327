"""pytest-httpserver's server on a port from the worker's pool (``--aiops-httpserver-ports``).

pytest-httpserver starts its session-wide server on ``httpserver_listen_address`` (host, port),
which by default reads ``PYTEST_HTTPSERVER_HOST``/``PYTEST_HTTPSERVER_PORT`` and otherwise
takes port 0's kernel-chosen port. Registered by :mod:`pytest_aiops.plugin` only when the
setting is on, after every entry-point plugin: this ``httpserver_listen_address`` requests
pytest-httpserver's and fills in a pool port where it has none (an explicit
``PYTEST_HTTPSERVER_PORT``, or a conftest's own ``httpserver_listen_address``, still wins).
The IPv4/IPv6 variants (``httpserver_ipv4``/``httpserver_ipv6``, where the plugin has them),
which always bind port 0, are made the same way on pool ports. The ports are held by these
session fixtures for the whole session, as the server is.
"""

from __future__ import annotations

from collections.abc import Iterator
from ssl import SSLContext

import pytest
import pytest_httpserver.pytest_plugin as _served
from pytest_httpserver import HTTPServer

from .._ports.pool import current_pool


@pytest.fixture(scope="session")
def httpserver_listen_address(
    httpserver_listen_address: tuple[str | None, int | None],
) -> tuple[str | None, int | None]:
    """pytest-httpserver's (host, port), the port from this worker's pool unless set."""
    host, port = httpserver_listen_address
    return host, port or current_pool().next_port()


def _serve(host: str, ssl_context: SSLContext | None) -> Iterator[HTTPServer]:
    """pytest-httpserver's ``make_httpserver_ipv4``/``_ipv6`` body, on a pool port."""
    server = HTTPServer(host=host, port=current_pool().next_port(), ssl_context=ssl_context)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


if hasattr(_served, "make_httpserver_ipv4"):  # the names exist only where the plugin has them

    @pytest.fixture(scope="session")
    def make_httpserver_ipv4(httpserver_ssl_context: SSLContext | None) -> Iterator[HTTPServer]:
        """pytest-httpserver's IPv4 server (127.0.0.1), on a pool port."""
        yield from _serve("127.0.0.1", httpserver_ssl_context)

    @pytest.fixture(scope="session")
    def make_httpserver_ipv6(httpserver_ssl_context: SSLContext | None) -> Iterator[HTTPServer]:
        """pytest-httpserver's IPv6 server (::1), on a pool port."""
        yield from _serve("::1", httpserver_ssl_context)
