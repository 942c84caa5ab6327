"""The "who holds the port" note: any "address already in use", on any port, names its holder.

Real listeners in real second processes, real leases in a private lock directory, real
``pytest`` runs (in-process and ``-n 2``). Ports: 10000-10263 (``address_in_use_helpers``),
used by no other test of this suite.
"""

from __future__ import annotations

import errno
import fnmatch
import http.server
import os
import socket
import socketserver
import sys
from pathlib import Path

import pytest

from pytest_aiops._plugin.binds import failed_binds, is_address_in_use
from pytest_aiops._ports.probe import host_has_ipv6
from pytest_aiops._ports.sockets import port_holders

from .address_in_use_helpers import OTHER_RUN_BLOCK, OWN_RANGE, foreign_listener, notes, port_lines
from .port_helpers import make_time_wait

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("private_lock_dir")

MOVE = (
    "take the server's port from the pool instead: the `aiops_port` fixture (one test), "
    "`aiops_port_factory()` (a fixture of any scope) or `pytest_aiops.take_port()` (any "
    "code, e.g. a helper that starts the server), and pass it to the server"
)

#: A library whose server listens on a default port of its own (as uvicorn's 8000 and
#: aiohttp's 8080 do), bound where the plugin never sees it.
LIBRARY = '''
import socket

DEFAULT_PORT = {port}


def serve(port=DEFAULT_PORT):
    """Listen on 127.0.0.1:``port``."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock
'''


def held_by(port: int, pid: int) -> str:
    """The fnmatch pattern of the line naming a foreign listener (see foreign_listener)."""
    return f"port {port}: held by pid {pid} (*) [[]LISTEN on 127.0.0.1]: {sys.executable} -c *"


def assert_lines(note: list[str], patterns: list[str]) -> None:
    for pattern in patterns:
        assert any(fnmatch.fnmatchcase(line, pattern) for line in note), (pattern, note)


def test_a_library_default_port_held_by_a_foreign_process_names_that_process(
    pytester: pytest.Pytester, private_lock_dir: Path
) -> None:
    port = 10001
    pytester.makepyfile(
        slowlib=LIBRARY.format(port=port),
        test_default="""
        import pytest
        from slowlib import serve

        def test_server():
            serve()

        @pytest.fixture
        def server():
            yield serve()

        def test_with_a_server_fixture(server):
            pass
        """,
    )
    with foreign_listener(port) as listener:
        result = pytester.runpytest()
    result.assert_outcomes(failed=1, errors=1)
    found = notes(result.stdout.str())
    assert len(found) == 2  # the test's failure and the fixture's setup error
    for note in found:
        assert note == [
            f"this worker (master, pid {os.getpid()}) leases no ports; lock dir {private_lock_dir}",
            f"port {port}: the failed bind, ('127.0.0.1', {port}) at slowlib.py:10; "
            "not from the pool",
            note[2],
            f"port {port}: in no pytest-aiops lease, so nothing kept other processes off it",
            f"port {port} was chosen by the test (or is a library's default), not by "
            f"pytest-aiops: {MOVE}",
        ]
        assert fnmatch.fnmatchcase(note[2], held_by(port, listener.pid)), note[2]


def test_tb_long_names_only_the_failed_bind_not_ports_in_library_source(
    pytester: pytest.Pytester,
) -> None:
    port = 10002
    pytester.makepyfile(
        f"""
        import socket

        def test_create_server(aiops_port):
            print("HANDED", aiops_port)
            socket.create_server(("127.0.0.1", {port}))
        """
    )
    with foreign_listener(port) as listener:
        result = pytester.runpytest("--tb=long", "-s")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    # --tb=long quotes socket.create_server's docstring, which mentions port 8000: the old
    # note took that for a port the test used.
    assert "8000" in text.split("aiops: who holds the port")[0]
    handed = int(text.split("HANDED ", 1)[1].split()[0])
    (note,) = notes(text)
    assert port_lines(note) == {port, handed}
    assert_lines(
        note,
        [
            f"port {port}: the failed bind, ('127.0.0.1', {port}) at socket.py:*; "
            "not from the pool",
            held_by(port, listener.pid),
        ],
    )


@pytest.mark.parametrize("same_project", [False, True], ids=["other-project", "same-project"])
def test_a_port_in_another_runs_lease_names_that_run(
    pytester: pytest.Pytester, private_lock_dir: Path, same_project: bool
) -> None:
    start, end = OTHER_RUN_BLOCK
    port = start + 1
    # Another project's run, or a second run of this very project (the same session ids as
    # this run, a different process): never this worker's own lease.
    session = (
        f"pytest-aiops:{os.path.realpath(pytester.path)}/master"
        if same_project
        else "the-other-run"
    )
    lease = {
        "session": session,
        "options": {"basePort": start, "blockSize": end - start + 1, "blockCount": 1},
    }
    pytester.makepyfile(
        f"""
        import socket

        def test_hardcoded_port():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", {port}))
        """
    )
    with foreign_listener(port, lock_dir=private_lock_dir, lease=lease, root=pytester.path) as (
        listener
    ):
        result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    (note,) = notes(result.stdout.str())
    whose = (
        "another pytest-aiops run of this project" if same_project else ("another pytest-aiops run")
    )
    assert_lines(
        note,
        [
            f"port {port}: held by pid {listener.pid} (*), pytest-aiops session {session!r} "
            f"[[]LISTEN on 127.0.0.1]: *",
            f"port {port}: leased by {whose} (pid {listener.pid} on *, session {session!r}, "
            f"top-level lease {start}-{end})",
        ],
    )
    assert not any("own lease" in line for line in note)


def test_a_port_in_this_workers_grown_block_is_named_as_its_own(
    pytester: pytest.Pytester,
) -> None:
    low, high = OWN_RANGE
    pytester.makepyfile(
        """
        import socket
        import pytest_aiops

        SERVERS = []

        def teardown_module():
            for server in SERVERS:
                server.close()

        def test_server_on_a_grown_block():
            ports = [pytest_aiops.take_port() for _ in range(3)]  # 2 a block: the pool grows
            SERVERS.append(socket.create_server(("127.0.0.1", ports[2])))
            print("HANDED", *ports)
            socket.create_server(("127.0.0.1", ports[2]))
        """
    )
    result = pytester.runpytest(
        f"--aiops-port-range={low}-{high}",
        "--aiops-ports-per-worker=2",
        "--aiops-max-ports-per-worker=8",
        "-s",
    )
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    handed = [int(port) for port in text.split("HANDED ", 1)[1].split()[:3]]
    port = handed[2]
    (note,) = notes(text)
    assert_lines(
        note,
        [
            f"this worker (master, pid {os.getpid()}) leases 10*-10* and 10*-10*; lock dir *",
            f"port {port}: the failed bind, ('127.0.0.1', {port}) at socket.py:*; "
            "the pool handed it to this test",
            f"port {port}: held by this test process itself (pid {os.getpid()}) "
            "[[]LISTEN on 127.0.0.1]: a server this test or an earlier one started is still open "
            "(close it when its test or fixture ends)",
            f"port {port}: in this worker's own lease *-* (a block its pool grew by), so no "
            "other pytest-aiops run holds it",
        ],
    )
    assert not any("another" in line or "chosen by the test" in line for line in note), note
    # The test's ports: the failed bind's and the two others the pool handed it, no more.
    assert port_lines(note) == set(handed)
    assert f"port {handed[0]}: handed to this test by the pool" in note


def test_asyncio_create_server_names_the_holder(pytester: pytest.Pytester) -> None:
    port = 10003
    pytester.makepyfile(
        f"""
        import asyncio

        def test_asyncio_server():
            async def main():
                loop = asyncio.get_running_loop()
                await loop.create_server(asyncio.Protocol, "127.0.0.1", {port})

            asyncio.run(main())
        """
    )
    with foreign_listener(port) as listener:
        result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E * error while attempting to bind on address *"])
    (note,) = notes(result.stdout.str())
    assert_lines(
        note,
        [
            f"port {port}: the failed bind, ('127.0.0.1', {port}) at "
            "asyncio/base_events.py:*; not from the pool",
            held_by(port, listener.pid),
            f"port {port} was chosen by the test (or is a library's default), not by "
            f"pytest-aiops: {MOVE}",
        ],
    )


def test_a_server_that_logs_and_exits_as_uvicorn_does_names_the_holder(
    pytester: pytest.Pytester,
) -> None:
    port = 10004
    pytester.makepyfile(
        f"""
        import logging
        import socket
        import sys


        class Config:
            def __init__(self):
                self.host = "127.0.0.1"
                self.port = {port}


        def bind_socket(config):
            sock = socket.socket()
            try:
                sock.bind((config.host, config.port))
            except OSError as exc:
                sock.close()
                logging.getLogger("server").error(exc)
                sys.exit(1)


        def test_server():
            bind_socket(Config())
        """
    )
    with foreign_listener(port) as listener:
        result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E * SystemExit: 1"])
    (note,) = notes(result.stdout.str())
    assert_lines(
        note,
        [
            f"port {port}: the failed bind, ('127.0.0.1', {port}) at test_*.py:15; "
            "not from the pool",
            held_by(port, listener.pid),
        ],
    )


def test_xdist_run_names_the_holder_in_each_worker(pytester: pytest.Pytester) -> None:
    port = 10005
    pytester.makepyfile(
        slowlib=LIBRARY.format(port=port),
        test_default="""
        import socket
        import pytest
        from slowlib import serve

        @pytest.mark.parametrize("i", range(2))
        def test_default_port(i):
            serve()

        def test_pool_port(aiops_port):
            with socket.create_server(("127.0.0.1", aiops_port)):
                pass
        """,
    )
    with foreign_listener(port) as listener:
        result = pytester.runpytest_subprocess(
            "-p", "no:benchmark", "-p", "no:cacheprovider", "-n", "2", timeout=120
        )
    result.assert_outcomes(failed=2, passed=1)
    found = notes(result.stdout.str())
    assert len(found) == 2
    for note in found:
        assert fnmatch.fnmatchcase(note[0], "this worker (gw[01], pid *) leases *; lock dir *")
        assert_lines(note, [held_by(port, listener.pid)])
        assert port_lines(note) == {port}


def test_a_port_in_another_workers_lease_names_that_worker(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """Under ``--dist=each`` both workers run the test: each leases its slice, waits for the
    other's, and binds (twice) the last port of the other worker's slice."""
    ranges = tmp_path / "ranges"
    ranges.mkdir()
    pytester.makepyfile(
        f"""
        import json, os, socket, time
        from pathlib import Path

        RANGES = Path({str(ranges)!r})
        SERVERS = []

        def wait_for_the_other(suffix):
            me = os.environ["PYTEST_XDIST_WORKER"]
            for _ in range(600):
                others = [p for p in RANGES.glob("*" + suffix) if p.name != me + suffix]
                if others:
                    return others[0]
                time.sleep(0.1)
            raise TimeoutError("the other worker did not come")

        def teardown_module():
            # After this worker's note is written; keep its lease until the other's is too.
            for server in SERVERS:
                server.close()
            (RANGES / (os.environ["PYTEST_XDIST_WORKER"] + ".done")).write_text("")
            wait_for_the_other(".done")

        def test_bind_in_the_other_workers_slice(port_range):
            me = os.environ["PYTEST_XDIST_WORKER"]
            written = RANGES / (me + ".tmp")  # renamed: the other never reads half a file
            written.write_text(json.dumps([port_range.start, port_range.end]))
            written.rename(RANGES / (me + ".json"))
            start, end = json.loads(wait_for_the_other(".json").read_text())
            SERVERS.append(socket.create_server(("127.0.0.1", end)))
            socket.create_server(("127.0.0.1", end))
        """
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:benchmark",
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "--dist=each",
        "-s",
        timeout=120,
    )
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    found = notes(text)
    assert len(found) == 2
    for note in found:
        worker = note[0].split("(", 1)[1].split(",", 1)[0]
        other = {"gw0": "gw1", "gw1": "gw0"}[worker]
        assert_lines(
            note,
            [
                "port *: held by this test process itself *",
                f"port *: leased by another worker of this run (pid * on *, session "
                f"'pytest-aiops:*/{other}', child lease *-*)",
            ],
        )
        assert not any("another pytest-aiops run" in line for line in note), note


def test_without_proc_the_note_says_what_to_run(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS, the BSDs and Windows have no /proc: the fault is injected by pointing the
    reader at an empty directory, the one thing a Linux machine cannot do for real."""
    from pytest_aiops._ports import sockets

    monkeypatch.setattr(sockets, "PROC", str(tmp_path))
    port = 10006
    pytester.makepyfile(
        f"""
        import socket

        def test_hardcoded_port():
            socket.create_server(("127.0.0.1", {port}))
        """
    )
    with foreign_listener(port):
        result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    (note,) = notes(result.stdout.str())
    assert f"port {port}: in no pytest-aiops lease, so nothing kept other processes off it" in note
    assert (
        f"port {port}: which process holds it cannot be read here (no /proc): run "
        f"`lsof -nP -i :{port}` (macOS, BSD) or `netstat -ano | findstr :{port}` (Windows)"
    ) in note


def test_a_port_held_only_by_time_wait_says_so(pytester: pytest.Pytester) -> None:
    port = 10009
    make_time_wait(port)
    pytester.makepyfile(
        f"""
        import socket

        def test_server_without_reuseaddr():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", {port}))
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    (note,) = notes(result.stdout.str())
    assert_lines(
        note,
        [
            f"port {port}: no process holds it; * socket(s) in TIME_WAIT (a connection on it "
            "closed within the last minute) keep a server without SO_REUSEADDR off it until "
            "they expire"
        ],
    )


def test_a_port_only_mentioned_in_the_message_is_not_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import errno

        def test_message_only():
            raise OSError(errno.EADDRINUSE, "Address already in use: ('127.0.0.1', 10050)")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    (note,) = notes(result.stdout.str())
    assert port_lines(note) == set()
    assert note[1] == (
        "no port to name: the failed bind's address is not in the exception's frames (a "
        "server in another thread or process?) and the pool gave this test no port; "
        f"{MOVE}, so this note can name who holds it"
    )


def test_other_failures_get_no_note(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket

        def test_refused():
            socket.create_connection(("127.0.0.1", 10007), timeout=5)

        def test_assertion():
            assert False
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    assert notes(result.stdout.str()) == []


# -- the pieces, on real sockets ---------------------------------------------------------------


class Server:
    """An address behind a property: reading it runs code, so the note must not."""

    reads = 0

    def __init__(self, port: int) -> None:
        self.host = "127.0.0.1"
        self._port = port

    @property
    def address(self) -> tuple[str, int]:
        Server.reads += 1
        return (self.host, self._port)


def test_the_failed_bind_is_read_from_frames_without_running_code() -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        server = Server(port)
        # Each its own names: a frame's variables are read as the frame left them.
        with pytest.raises(OSError, match="in use") as plain, socket.socket() as tcp_sock:
            tcp_sock.bind((server.host, port))
        with pytest.raises(OSError, match="in use") as behind_property, socket.socket() as other:
            other.bind(server.address)
        with socket.socket(type=socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            udp_port = taken.getsockname()[1]
            with (
                pytest.raises(OSError, match="in use") as udp_in_use,
                socket.socket(type=socket.SOCK_DGRAM) as u,
            ):
                u.bind(("127.0.0.1", udp_port))
    assert is_address_in_use(plain.value)
    (bind,) = failed_binds(plain.value)
    assert (bind.host, bind.port, bind.protocol) == ("127.0.0.1", port, "tcp")
    assert bind.where == f"{__file__}:{bind.where.rsplit(':', 1)[1]}"
    assert failed_binds(behind_property.value) == []
    assert Server.reads == 1  # the bind's own call; the note read nothing through it
    (udp,) = failed_binds(udp_in_use.value)
    assert (udp.port, udp.protocol) == (udp_port, "udp")


def test_address_in_use_is_read_from_the_whole_chain() -> None:
    def exit_as_uvicorn_does() -> None:
        try:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        except OSError:
            raise SystemExit(1) from None

    with pytest.raises(SystemExit) as exit_:
        exit_as_uvicorn_does()
    assert is_address_in_use(exit_.value)  # the context, though suppressed
    assert not is_address_in_use(OSError(errno.ECONNREFUSED, "Connection refused"))
    assert is_address_in_use(RuntimeError("bind failed: address already in use"))


def test_port_holders_names_a_real_listener_and_time_wait() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    with foreign_listener(10008) as listener:
        found = port_holders(10008)
    assert found.readable
    assert [(p.pid, p.states, p.addresses) for p in found.processes] == [
        (listener.pid, ("LISTEN",), ("127.0.0.1",))
    ]
    assert found.processes[0].command is not None
    assert found.processes[0].command.startswith(f"{sys.executable} -c import json, socket, sys")


def test_port_holders_reads_ipv6_and_udp_sockets() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    with socket.socket(type=socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        found = port_holders(udp.getsockname()[1], ("udp",))
    assert [(p.pid, p.states, p.addresses) for p in found.processes] == [
        (os.getpid(), ("UDP",), ("127.0.0.1",))
    ]
    if not host_has_ipv6():
        return
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as server:
        found = port_holders(server.getsockname()[1])
    assert [(p.pid, p.states, p.addresses) for p in found.processes] == [
        (os.getpid(), ("LISTEN",), ("::1",))
    ]


def test_socketserver_and_http_server_binds_are_found() -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(OSError, match="in use") as tcp_server:
            socketserver.TCPServer(("127.0.0.1", port), socketserver.BaseRequestHandler)
        with pytest.raises(OSError, match="in use") as http_server:
            http.server.HTTPServer(("127.0.0.1", port), http.server.BaseHTTPRequestHandler)
    for raised in (tcp_server, http_server):
        (bind,) = failed_binds(raised.value)
        assert (bind.host, bind.port) == ("127.0.0.1", port)
        assert bind.where.endswith(f"socketserver.py:{bind.where.rsplit(':', 1)[1]}")
