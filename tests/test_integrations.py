"""Other plugins' servers on pool ports: --aiops-{aiohttp,httpserver,localserver}-ports.

Each against the real plugin, in a real ``pytest -n 2`` run: the inner tests serve and fetch
over loopback and check the served port against their worker's ``port_range`` (in it with the
setting on; a kernel-chosen port, outside it, with the setting off, when pytest-aiops loads
none of its wrappers). Ports 29000-29899 and 29991 are this module's (no other test uses
them): room for several inner runs at once, each growing its pool past ports left in
TIME_WAIT by the one before.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import import_module, metadata
from pathlib import Path

import pytest

from .inner_run_helpers import check_inner_warnings
from .process_helpers import child_env

RANGE = ["--aiops-port-range=29000-29899", "--aiops-ports-per-worker=16"]
#: Where a fixed port outside the pool's range is chosen, for PYTEST_HTTPSERVER_PORT: the
#: first one free now (an earlier run's connection may have left one in TIME_WAIT, which
#: pytest-httpserver's server, binding without SO_REUSEADDR, cannot take; seen in CI).
FIXED_PORTS = range(29900, 30000)


def _fixed_port() -> int:
    from pytest_aiops._ports.probe import port_is_free

    return next(port for port in FIXED_PORTS if port_is_free(port))


COMMON = """
import os, sys

EXPECT_POOL = os.environ["EXPECT_POOL"] == "1"


def check(port, port_range, module):
    assert (port in port_range) is EXPECT_POOL, (port, port_range)
    # With the setting off pytest-aiops loads nothing of the integration, so defines none
    # of its fixture names.
    assert (f"pytest_aiops._plugin.{module}" in sys.modules) is EXPECT_POOL
"""

AIOHTTP_SUITE = """
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer
from common import check


async def hello(request):
    return web.Response(text="hello")


def make_app():
    app = web.Application()
    app.router.add_get("/", hello)
    return app


@pytest.mark.parametrize("n", range(2))
async def test_server(aiohttp_server, aiohttp_client, port_range, n):
    server = await aiohttp_server(make_app())
    check(server.port, port_range, "aiohttp_ports")
    client = await aiohttp_client(server)
    assert client.port == server.port
    assert await (await client.get("/")).text() == "hello"


async def test_raw_server(aiohttp_raw_server, aiohttp_client, port_range):
    server = await aiohttp_raw_server(hello)
    assert isinstance(server, RawTestServer)
    check(server.port, port_range, "aiohttp_ports")
    client = await aiohttp_client(server)
    assert await (await client.get("/")).text() == "hello"


@pytest.mark.parametrize("n", range(2))
async def test_client_of_an_app(aiohttp_client, port_range, n):
    client = await aiohttp_client(make_app())
    check(client.port, port_range, "aiohttp_ports")
    assert await (await client.get("/")).text() == "hello"


async def test_a_port_the_caller_gives_is_kept(aiohttp_server, aiohttp_client, aiops_port,
                                               port_range):
    server = await aiohttp_server(make_app(), port=aiops_port)
    assert server.port == aiops_port
    client = await aiohttp_client(make_app(), server_kwargs={"port": port_range.next_port()})
    assert client.port in port_range and client.port != aiops_port
    assert await (await client.get("/")).text() == "hello"
"""

HTTPSERVER_SUITE = """
import urllib.request

import pytest
from common import check


@pytest.mark.parametrize("n", range(4))
def test_httpserver(httpserver, port_range, n):
    httpserver.expect_request("/x").respond_with_data(f"ok {n}")
    with urllib.request.urlopen(httpserver.url_for("/x")) as response:
        assert response.read() == f"ok {n}".encode()
    check(httpserver.port, port_range, "httpserver_ports")
"""

HTTPSERVER_IPV4 = """
import urllib.request

from common import check


def test_httpserver_ipv4(httpserver_ipv4, port_range):
    httpserver_ipv4.expect_request("/v4").respond_with_data("four")
    with urllib.request.urlopen(httpserver_ipv4.url_for("/v4")) as response:
        assert response.read() == b"four"
    check(httpserver_ipv4.port, port_range, "httpserver_ports")
"""

LOCALSERVER_SUITE = """
import smtplib
import ssl
import urllib.request

import pytest
from common import check


@pytest.mark.parametrize("n", range(2))
def test_httpserver(httpserver, port_range, n):
    httpserver.serve_content(f"ok {n}")
    with urllib.request.urlopen(httpserver.url) as response:
        assert response.read() == f"ok {n}".encode()
    check(httpserver.server_address[1], port_range, "localserver_ports")


def test_httpsserver(httpsserver, port_range):
    httpsserver.serve_content("secret")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # pytest-localserver's own self-signed certificate
    with urllib.request.urlopen(httpsserver.url, context=context) as response:
        assert response.read() == b"secret"
    check(httpsserver.server_address[1], port_range, "localserver_ports")


def test_smtpserver(smtpserver, port_range):
    host, port = smtpserver.addr
    with smtplib.SMTP(host, port) as client:
        client.sendmail("a@example.invalid", ["b@example.invalid"], "Subject: hi\\n\\nbody")
    assert len(smtpserver.outbox) == 1
    check(port, port_range, "localserver_ports")
"""


def _asyncio_ini(pytester: pytest.Pytester) -> None:
    """asyncio_mode = auto, and the loop scope where pytest-asyncio warns without it."""
    lines = ["[pytest]", "asyncio_mode = auto"]
    version = tuple(int(part) for part in metadata.version("pytest-asyncio").split(".")[:2])
    if version >= (0, 24):  # the option (and the warning when it is unset) came in 0.24
        lines.append("asyncio_default_fixture_loop_scope = function")
    pytester.makeini("\n".join(lines) + "\n")


@pytest.fixture
def shared_lock_dir(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    pytestconfig: pytest.Config,
) -> Path:
    """One lock directory for every inner run of this module, whichever outer worker runs it.

    The inner runs lease from the same range at once (this suite runs under xdist too), so
    they must see each other's leases, as runs sharing the machine-wide directory do; private
    directories would let two of them hand out the same port.
    """
    base = tmp_path_factory.getbasetemp()
    if hasattr(pytestconfig, "workerinput"):  # not the environment: pytester clears it
        base = base.parent  # shared by this run's workers
    path = base / "integration-locks"
    path.mkdir(exist_ok=True)
    for key in list(os.environ):
        if key.startswith("PYTEST_AIOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PYTEST_AIOPS_LOCK_DIR", str(path))
    return path


@pytest.fixture
def inner(pytester: pytest.Pytester, shared_lock_dir: Path) -> pytest.Pytester:
    pytester.makepyfile(common=COMMON)
    return pytester


def run_suite(pytester: pytest.Pytester, setting: str | None, *args: str) -> pytest.RunResult:
    """``pytest -n 2`` in a subprocess, with ``setting`` on (or none), warnings as errors."""
    os.environ["EXPECT_POOL"] = "1" if setting else "0"  # undone by _expect_pool_env
    extra = [setting] if setting else []
    return pytester.runpytest_subprocess(
        "-n", "2", "-p", "no:benchmark", "-p", "no:cacheprovider", "-W", "error", "-rfE",
        *RANGE, *extra, *args,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _expect_pool_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPECT_POOL", "0")  # so run_suite's change is undone after the test


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_pytest_aiohttp_servers_and_clients_on_pool_ports(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, on: bool
) -> None:
    monkeypatch.delenv("PYTEST_ADDOPTS")  # pytest-asyncio and pytest-aiohttp loaded
    _asyncio_ini(inner)
    inner.makepyfile(test_aiohttp=AIOHTTP_SUITE)
    result = run_suite(inner, "--aiops-aiohttp-ports" if on else None, "-p", "no:localserver")
    result.assert_outcomes(passed=6)


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_pytest_httpserver_listens_on_a_pool_port(inner: pytest.Pytester, on: bool) -> None:
    inner.makepyfile(test_httpserver=HTTPSERVER_SUITE)
    expected = 4
    if hasattr(import_module("pytest_httpserver.pytest_plugin"), "make_httpserver_ipv4"):
        inner.makepyfile(test_ipv4=HTTPSERVER_IPV4)
        expected += 1
    result = run_suite(inner, "--aiops-httpserver-ports" if on else None, "-p", "no:localserver")
    result.assert_outcomes(passed=expected)


def test_pytest_httpserver_port_set_by_its_own_variable_wins(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_HTTPSERVER_PORT", str(_fixed_port()))
    inner.makepyfile(
        """
        def test_port(httpserver, port_range):
            assert httpserver.port == int(__import__("os").environ["PYTEST_HTTPSERVER_PORT"])
            assert httpserver.port not in port_range
        """
    )
    result = inner.runpytest_subprocess(
        "-n", "0", "-p", "no:localserver", "-W", "error", *RANGE, "--aiops-httpserver-ports"
    )
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_pytest_localserver_servers_on_pool_ports(inner: pytest.Pytester, on: bool) -> None:
    inner.makepyfile(test_localserver=LOCALSERVER_SUITE)
    setting = "--aiops-localserver-ports" if on else None
    result = run_suite(inner, setting, "-p", "no:pytest_httpserver")
    result.assert_outcomes(passed=4)


# -- a real-world case: a library's default port ----------------------------------------------

APP = """
import os
from aiohttp import web

DEFAULT_PORT = int(os.environ["APP_DEFAULT_PORT"])  # what 8080 is to web.run_app


async def hello(request):
    return web.Response(text="hello")


def make_app():
    app = web.Application()
    app.router.add_get("/", hello)
    return app


async def run_app(app, port=DEFAULT_PORT):
    \"\"\"web.run_app's start, without blocking: on the library's default port.\"\"\"
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
"""

APP_TESTS = """
import aiohttp
import pytest
from app import make_app, run_app
from common import check


@pytest.mark.parametrize("n", range(3))
async def test_on_the_default_port(n):
    runner = await run_app(make_app())
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{runner.addresses[0][1]}/") as response:
                assert await response.text() == "hello"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("n", range(3))
async def test_on_aiohttp_server(aiohttp_server, aiohttp_client, port_range, n):
    server = await aiohttp_server(make_app())
    check(server.port, port_range, "aiohttp_ports")
    client = await aiohttp_client(server)
    assert await (await client.get("/")).text() == "hello"
"""


@pytest.fixture
def default_port_taken() -> Iterator[int]:
    """A "library default" port (8080 to web.run_app), held as another worker's server or
    another run would hold it: one the kernel picked, outside the pool's range."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_library_default_port_collides_and_pool_ports_do_not(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, default_port_taken: int
) -> None:
    monkeypatch.delenv("PYTEST_ADDOPTS")
    monkeypatch.setenv("APP_DEFAULT_PORT", str(default_port_taken))
    _asyncio_ini(inner)
    inner.makepyfile(app=APP, test_app=APP_TESTS)
    result = run_suite(inner, "--aiops-aiohttp-ports", "-p", "no:localserver")
    # Every test on the default port fails while anything holds it (under -n 4, that is the
    # other workers' servers: the failures the issue saw); every one on the pool passes.
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(["FAILED *test_on_the_default_port*"])
    assert "test_on_aiohttp_server" not in "".join(
        line for line in result.stdout.lines if line.startswith("FAILED")
    )
    assert "address already in use" in result.stdout.str().lower()


# -- a setting on without its plugin ------------------------------------------------------------

PLUGINS = [
    ("--aiops-aiohttp-ports", "pytest-aiohttp", "aiohttp", "pytest_aiohttp"),
    ("--aiops-httpserver-ports", "pytest-httpserver", "pytest_httpserver", "pytest_httpserver"),
    ("--aiops-localserver-ports", "pytest-localserver", "localserver", "pytest_localserver"),
]


@pytest.mark.parametrize(("setting", "package", "name", "module"), PLUGINS)
def test_a_setting_whose_plugin_is_not_loaded_is_one_line(
    inner: pytest.Pytester, setting: str, package: str, name: str, module: str
) -> None:
    inner.makepyfile("def test_x(): pass")
    result = inner.runpytest_subprocess("-n", "2", "-p", f"no:{name}", setting)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert errors == [
        f"ERROR: {setting} is on (from {setting}) to serve {package}'s fixtures from the port "
        f"pool, but {package} is installed but not loaded: load it (drop -p no:{name}, or add "
        f"-p {name}), or turn {setting} off"
    ]


@pytest.mark.parametrize(("setting", "package", "name", "module"), PLUGINS)
def test_a_setting_whose_plugin_is_not_installed_is_one_line(
    tmp_path: Path, shared_lock_dir: Path, setting: str, package: str, name: str, module: str
) -> None:
    # An environment without the package: this interpreter's site-packages, less the
    # package and its metadata, as the only path entries (python -S: no site-packages).
    site = tmp_path / "site"
    site.mkdir()
    packages = Path(pytest.__file__).resolve().parents[1]  # site-packages
    for entry in packages.iterdir():
        if entry.name == module or entry.name.lower().startswith(f"{module}-"):
            continue
        (site / entry.name).symlink_to(entry)
    (tmp_path / "test_x.py").write_text("def test_x(): pass\n")
    env = child_env(PYTHONPATH="", PYTEST_ADDOPTS="-p no:asyncio -p no:aiohttp")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), str(site)])
    env.pop("EXPECT_POOL", None)
    key = "aiops_" + setting.removeprefix("--aiops-").replace("-", "_")
    (tmp_path / "pytest.ini").write_text(f"[pytest]\n{key} = true\n")
    result = subprocess.run(
        [sys.executable, "-S", "-m", "pytest", "-p", "no:cacheprovider", "-n", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    check_inner_warnings(result.stdout, result.stderr, [])
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ERROR: {setting} is on (from ini {key}) to serve {package}'s fixtures from the "
        f"port pool, but {package} is not installed: pip install {package}, or turn {setting} off"
    ]
