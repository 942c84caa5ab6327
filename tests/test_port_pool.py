"""Ports as a pool: the PortRange object on real sockets, then real server suites end to end."""

from __future__ import annotations

import importlib.util
import re
import socket
import threading
import warnings
from importlib import metadata
from pathlib import Path

import pytest

from pytest_aiops import AiopsWarning, PortsExhaustedError
from pytest_aiops._plugin.settings import spellings
from pytest_aiops._ports.pool import KernelPorts, PortRange
from pytest_aiops._ports.probe import host_has_ipv6

from .port_helpers import make_time_wait

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


#: One range per variant, each as large as a run of this suite needs on its own: two runs
#: of 800 servers that close first leave up to 1,600 ports in TIME_WAIT for about a minute.
#: Disjoint from each other (the variants run side by side under -n) and from every port
#: another test of this suite binds or leases: their TIME_WAIT lasts a minute, so a test
#: whose own block lay inside one (test_edges' 13000, test_core's 13200, test_interrupt's
#: 28400 once did) failed whenever it ran in that minute. "4" lies above Linux's ephemeral
#: range (32768-60999). No other test binds in 12100-18499 or 61000-65535 (grep tests/).
SERVER_SUITE_RANGES = {"0": "12100-15299", "2": "15300-18499", "4": "61000-65535"}


@pytest.mark.parametrize("workers", ["0", "2", "4"])
def test_800_server_tests_at_the_default_settings_twice_back_to_back(
    pytester: pytest.Pytester,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    workers: str,
) -> None:
    """Default pool settings (ports per worker, growth bound); only the range is moved, one
    per variant (SERVER_SUITE_RANGES). The variants share one lock directory, as runs on one
    machine do. The second run starts amid the first one's TIME_WAIT: its blocks are not
    clean, so it leases others (or, with none clean left, TIME_WAIT-only ones it keeps back)
    and never falls back to kernel-picked ports."""
    shared = tmp_path_factory.getbasetemp().parent / "server-suite-locks"
    shared.mkdir(exist_ok=True)
    monkeypatch.setenv("PYTEST_AIOPS_LOCK_DIR", str(shared))
    pytester.makepyfile(test_servers=SERVER_SUITE.replace("{tests}", "800"))
    seen = []
    for _ in range(2):  # back to back: the second run starts amid the first one's TIME_WAIT
        result = pytester.runpytest_subprocess(
            "-p",
            "no:benchmark",
            "-q",
            "-rA",  # the end-of-run lines (a run that went well prints them only when asked)
            "-n",
            workers,
            f"--aiops-port-range={SERVER_SUITE_RANGES[workers]}",
        )
        result.assert_outcomes(passed=800)
        assert "kernel-chosen" not in result.stdout.str()
        leases = first_leases(result.stdout.str())
        assert leases, result.stdout.str()
        seen.append(leases)
    assert seen[0][0] != seen[1][0]  # the first run's blocks were in TIME_WAIT: moved on


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


NESTED_RUN = """
import pytest
from pytest_aiops import take_port

pytest_plugins = ["pytester"]

def test_an_inner_run_leaves_the_outer_pool_in_place(aiops_port, port_range, pytester):
    pytester.makepyfile(test_inner="def test_x(aiops_port): pass")
    inner = pytester.runpytest(
        "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:asyncio", "-p", "no:aiohttp"
    )
    inner.assert_outcomes(passed=1)
    # The inner run configured and unconfigured pytest-aiops in this process: the outer
    # run's pool must still be the one take_port() and aiops_port take from.
    assert take_port() in port_range
    # Also after an inner run that stopped at a usage error, before wiring a pool of its own.
    refused = pytester.runpytest(
        "-p", "no:xdist", "-p", "no:asyncio", "-p", "no:aiohttp", "--aiops-ports-per-worker=0"
    )
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert take_port() in port_range
"""


def test_a_pytest_run_inside_a_test_leaves_its_pool_in_place(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nested=NESTED_RUN)
    result = pytester.runpytest_subprocess("-p", "no:benchmark", "-n", "0", "-W", "error")
    result.assert_outcomes(passed=1)


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


# -- the PortRange object itself, without pytest ---------------------------------------------


def test_port_range_is_a_sized_iterable_container() -> None:
    ports = PortRange(21000, 21003, 21002, probe=False)
    assert (ports.start, ports.end, ports.primary) == (21000, 21003, 21002)
    assert len(ports) == 4
    assert list(ports) == [21000, 21001, 21002, 21003]
    assert ports.ports == range(21000, 21004)
    assert 21001 in ports
    assert 21004 not in ports
    assert "21001" not in ports
    assert ports.env == {
        "AGENT_PORT_RANGE_START": "21000",
        "AGENT_PORT_RANGE_END": "21003",
        "AGENT_PORT_PRIMARY": "21002",
    }


def test_next_port_hands_out_primary_first_then_says_how_to_get_more() -> None:
    # Spelled as the plugin's worker spells its bound (the pool's default: ``max_ports``).
    bound = spellings("max_ports_per_worker")
    ports = PortRange(21000, 21002, 21001, owner="gw3", probe=False, max_ports_setting=bound)
    assert [ports.next_port() for _ in range(3)] == [21001, 21002, 21000]
    with pytest.raises(PortsExhaustedError) as excinfo:
        ports.next_port()
    assert str(excinfo.value) == (
        "port_range 21000-21002 of worker gw3 has no tcp port to hand out: 3 of its 3 ports "
        "are out, 0 are in use by other sockets (TIME_WAIT included), and the pool cannot "
        "grow; raise --aiops-max-ports-per-worker (ini aiops_max_ports_per_worker, env "
        "PYTEST_AIOPS_MAX_PORTS_PER_WORKER) (now 3)"
    )


def test_given_back_ports_are_handed_out_again_least_recently_used_first() -> None:
    ports = PortRange(21000, 21003, probe=False)
    first = ports.next_ports(4)
    assert first == [21000, 21001, 21002, 21003]
    ports.give_back(21002)
    ports.give_back(21000)
    assert ports.next_port() == 21002  # returned first, so least recently used
    assert ports.next_port() == 21000
    assert not ports.give_back(21000, holder=object())  # someone else's: refused
    assert ports.give_back_all(ports.holder()) == [21001, 21003, 21002, 21000]
    assert ports.remaining == 4


def test_a_port_in_time_wait_is_not_handed_out_until_it_clears() -> None:
    base = 19400
    ports = PortRange(base, base + 1)
    make_time_wait(base)  # what a test server that closed first leaves behind
    assert ports.next_port() == base + 1
    with pytest.raises(PortsExhaustedError, match=r"1 of its 2 ports are out, 1 are in use"):
        ports.next_port()


def test_the_pool_grows_by_a_block_when_nothing_is_clean_up_to_its_bound() -> None:
    grown: list[tuple[int, int]] = []

    def grow() -> tuple[int, int, list[int]]:
        start = 21100 + 2 * len(grown)
        grown.append((start, start + 1))
        return start, start + 1, []

    ports = PortRange(21000, 21001, probe=False, grow=grow, max_ports=6)
    taken = ports.next_ports(6)
    assert taken == [21000, 21001, 21100, 21101, 21102, 21103]
    assert ports.blocks == [(21000, 21001), (21100, 21101), (21102, 21103)]
    assert len(ports) == 6
    assert 21103 in ports
    with pytest.raises(PortsExhaustedError, match="reached its bound of 6 ports"):
        ports.next_port()
    assert ports.summary()["blocks"] == [[21000, 21001], [21100, 21101], [21102, 21103]]


def test_past_its_bound_the_kernel_fallback_hands_out_bind_0_ports_with_one_warning() -> None:
    ports = PortRange(21000, 21000, probe=False, fallback="kernel")
    assert ports.next_port() == 21000
    with pytest.warns(AiopsWarning, match="handing out ports the kernel picks instead"):
        extra = ports.next_port()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        another = ports.next_port()  # warned once only
    assert extra not in ports
    assert another not in ports
    assert ports.kernel_ports == 2


def test_kernel_ports_stand_in_warns_once_and_leases_nothing() -> None:
    stand_in = KernelPorts("pytest-aiops is disabled (from --aiops-disable)")
    with pytest.warns(AiopsWarning, match=r"is disabled \(from --aiops-disable\): ports come"):
        port = stand_in.next_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
    assert port not in stand_in
    assert not stand_in.leased


@pytest.mark.parametrize(
    ("family", "host", "kind", "protocol"),
    [
        (socket.AF_INET6, "::1", socket.SOCK_STREAM, "tcp"),
        (socket.AF_INET, "0.0.0.0", socket.SOCK_STREAM, "tcp"),
        (socket.AF_INET, "127.0.0.1", socket.SOCK_DGRAM, "udp"),
        (socket.AF_INET6, "::1", socket.SOCK_DGRAM, "udp"),
    ],
    ids=["tcp-[::1]", "tcp-0.0.0.0", "udp-127.0.0.1", "udp-[::1]"],
)
def test_a_port_taken_in_any_family_is_never_handed_out_for_it(
    family: socket.AddressFamily, host: str, kind: socket.SocketKind, protocol: str
) -> None:
    if family == socket.AF_INET6 and not host_has_ipv6():
        pytest.skip("this host has no IPv6")
    base = 19410
    with socket.socket(family, kind) as other:
        other.bind((host, base))
        if kind == socket.SOCK_STREAM:
            other.listen()
        ports = PortRange(base, base + 1)
        port = ports.next_port(protocol=protocol)
        assert port == base + 1
        for bind_family, bind_host in ((socket.AF_INET, "127.0.0.1"), (family, host)):
            with socket.socket(bind_family, kind) as mine:  # what the test was given binds
                mine.bind((bind_host, port))


def test_a_udp_user_does_not_keep_a_port_from_tcp() -> None:
    base = 19420
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", base))
        ports = PortRange(base, base)
        assert ports.next_port() == base  # TCP and UDP ports are separate namespaces
        ports.give_back(base)
        with pytest.raises(PortsExhaustedError, match="no udp port to hand out"):
            ports.next_port(protocol="udp")


def test_next_ports_is_all_or_nothing() -> None:
    ports = PortRange(21000, 21002, probe=False)
    with pytest.raises(PortsExhaustedError):
        ports.next_ports(4)
    assert ports.next_ports(3) == [21000, 21001, 21002]


def test_next_port_is_unique_across_threads() -> None:
    ports = PortRange(21000, 21199, probe=False)
    taken: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(25):
            port = ports.next_port()
            with lock:
                taken.append(port)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == list(range(21000, 21200))


def test_next_port_skips_a_port_another_process_listens_on() -> None:
    from pytest_aiops._ports.probe import port_is_free

    for _ in range(20):  # a listener whose next port nothing else uses right now (CI met one)
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            busy = server.getsockname()[1]
            if busy == 65535 or not port_is_free(busy + 1):
                continue
            ports = PortRange(busy, busy + 1, busy)
            assert ports.next_port() == busy + 1
            return
    pytest.skip("no listening port with a free neighbour in 20 tries")


def test_ports_are_attributed_to_the_running_test() -> None:
    ports = PortRange(21000, 21009, probe=False)
    ports.current_user = "t1"
    first = ports.next_port()
    ports.current_user = "t2"
    second = ports.next_port()
    assert ports.ports_of("t1") == [first]
    assert ports.ports_of("t2") == [second]
