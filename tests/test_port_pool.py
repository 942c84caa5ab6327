"""Ports as a pool, end to end: a real server project's suite, any scope, any code, asyncio."""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

#: Shaped like a real server project's suite: every test takes a port, starts a TCP server
#: (half with SO_REUSEADDR, half without, as socketserver.TCPServer defaults to), connects a
#: client, and the server closes first, leaving the port in TIME_WAIT.
SERVER_SUITE = """
import socket
import socketserver
import threading

import pytest


class Hello(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"hi")


@pytest.mark.parametrize("i", range({tests}))
def test_server(aiops_port, i):
    class Server(socketserver.TCPServer):
        allow_reuse_address = i % 2 == 0

    with Server(("127.0.0.1", aiops_port), Hello) as server:
        thread = threading.Thread(target=server.handle_request)
        thread.start()
        with socket.create_connection(("127.0.0.1", aiops_port)) as client:
            assert client.recv(2) == b"hi"
            assert client.recv(1) == b""  # the server closed first
        thread.join()
"""


pytestmark = pytest.mark.usefixtures("private_lock_dir")


def first_leases(output: str) -> list[str]:
    """The first-lease lines of a run: the xdist parent range and each worker's range."""
    lines = re.findall(r"^aiops: ports \d+-\d+ for \d+ workers", output, re.MULTILINE)
    lines += sorted(re.findall(r"^aiops \w+: ports \d+-\d+(?: \(slice \d+\))?", output, re.M))
    return lines


#: One range per variant, each as large as a run of this suite needs on its own: three runs
#: of 800 servers that close first leave up to 2,400 ports in TIME_WAIT for about a minute.
#: Disjoint from each other (the variants run side by side under -n) and from the fixed ports
#: other tests of this suite bind (below 12024, 19400-19499, 20000-26399).
SERVER_SUITE_RANGES = {"0": "12100-15299", "2": "15300-18499", "4": "26400-32767"}


@pytest.mark.parametrize("workers", ["0", "2", "4"])
def test_800_server_tests_at_the_default_settings_three_runs_the_same_ports(
    pytester: pytest.Pytester,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
) -> None:
    """Default pool settings (ports per worker, growth bound); only the range is moved, one
    per variant (SERVER_SUITE_RANGES). The variants share one lock directory, as runs on one
    machine do."""
    shared = tmp_path_factory.getbasetemp().parent / "server-suite-locks"
    shared.mkdir(exist_ok=True)
    monkeypatch.setenv("PYTEST_AIOPS_LOCK_DIR", str(shared))
    pytester.makepyfile(test_servers=SERVER_SUITE.replace("{tests}", "800"))
    seen = []
    for _ in range(3):  # back to back: each run starts amid the last one's TIME_WAIT
        result = pytester.runpytest_subprocess(
            "-p",
            "no:benchmark",
            "-q",
            "-n",
            workers,
            f"--aiops-port-range={SERVER_SUITE_RANGES[workers]}",
        )
        result.assert_outcomes(passed=800)
        leases = first_leases(result.stdout.str())
        assert leases, result.stdout.str()
        seen.append(leases)
    assert seen[0] == seen[1] == seen[2]


ANY_SCOPE = """
import socket
import unittest

import pytest

import pytest_aiops


def serve(port):
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen()
    return server


@pytest.fixture(scope="session")
def session_server(aiops_port_factory):
    with serve(aiops_port_factory()) as server:
        yield server.getsockname()[1]


@pytest.fixture(scope="module")
def module_server(port_range):
    with serve(port_range.next_port()) as server:
        yield server.getsockname()[1]


class Helper:
    '''A helper class that gets its own port, with no fixture threaded into it.'''

    def __init__(self):
        self.port = pytest_aiops.take_port()

    def close(self):
        assert pytest_aiops.give_back_port(self.port)


@pytest.mark.parametrize("i", range(40))
def test_many(session_server, module_server, aiops_port, aiops_udp_port, i):
    helper = Helper()
    ports = {session_server, module_server, aiops_port, helper.port}
    assert len(ports) == 4  # a longer-lived fixture's port is never handed out again
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", aiops_udp_port))
    with serve(aiops_port), serve(helper.port):
        pass
    helper.close()


class TestUnittest(unittest.TestCase):
    def test_takes_a_port(self):
        port = pytest_aiops.take_port()
        with serve(port):
            pass
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_ports_for_any_scope_and_any_code(pytester: pytest.Pytester, workers: str) -> None:
    pytester.makepyfile(test_scopes=ANY_SCOPE)
    # Few ports, so reuse (and any hand-out of a port still held) would show.
    result = pytester.runpytest_subprocess(
        "-p", "no:benchmark", "-n", workers, "--aiops-ports-per-worker=8", "-W", "error"
    )
    result.assert_outcomes(passed=41)


def test_a_module_scoped_port_fixture_is_a_scope_mismatch_the_docs_cover(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture(scope="module")
        def server(aiops_port):
            return aiops_port

        def test_x(server): pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ScopeMismatch*aiops_port*"])
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "ScopeMismatch" in readme
    assert "aiops_port_factory" in readme


ASYNCIO_SUITE = """
import socket

def test_ports(unused_tcp_port, unused_udp_port, unused_tcp_port_factory,
               unused_udp_port_factory, port_range):
    tcp = [unused_tcp_port, unused_tcp_port_factory(), unused_tcp_port_factory()]
    udp = [unused_udp_port, unused_udp_port_factory()]
    assert len(set(tcp)) == 3
    assert len(set(udp)) == 2
    for port in tcp:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
    served = all(port in port_range for port in tcp + udp)
    print("SERVED_FROM_POOL", served)
"""


@pytest.mark.skipif(
    importlib.util.find_spec("pytest_asyncio") is None, reason="pytest-asyncio is not installed"
)
@pytest.mark.parametrize("setting", [False, True], ids=["asyncio-ports-off", "asyncio-ports-on"])
def test_pytest_asyncio_port_fixtures_with_and_without_the_setting(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, setting: bool
) -> None:
    monkeypatch.delenv("PYTEST_ADDOPTS")  # pytest-asyncio loaded, as in its users' projects
    version = tuple(int(part) for part in metadata.version("pytest-asyncio").split(".")[:2])
    if version >= (0, 24):  # the option (and the warning when it is unset) came in 0.24
        pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_asyncio_ports=ASYNCIO_SUITE)
    args = ["-p", "no:benchmark", "-s", "-W", "error"]
    if setting:
        args.append("--aiops-asyncio-ports")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*SERVED_FROM_POOL {setting}*"])
