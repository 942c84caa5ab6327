"""The port-range provider with real sockets: probing, determinism, warnings, records, parity."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import (
    AiopsWarning,
    PortRangeProviderConfig,
    PortsExhaustedError,
    create_port_range_provider,
    default_lock_directory,
)
from pytest_aiops._core.hashing import preferred_block
from pytest_aiops._core.types import ResourceLease
from pytest_aiops._ports.probe import (
    busy_ports,
    dual_stack_probe,
    host_has_ipv6,
    port_is_free,
    read_ephemeral_range,
)
from pytest_aiops._ports.provider import PortRangeProvider
from pytest_aiops._ports.records import holders_of, read_records, reap_stale

from .port_helpers import Holder, make_time_wait

BASE = 6400  # 6400-7999: no default-range run leases there (leases are per network namespace)
#: Ranges of their own (no other test binds there) for tests that assert which block is
#: leased next: sibling tests under xdist bind ports around BASE.
OWN_BASE = {"busy": 18500, "tw": 18640, "child": 18680}
VECTORS = json.loads((Path(__file__).parent / "data" / "vectors.json").read_text("utf-8"))


def provider(lock_dir: Path, *, probe: bool = True) -> PortRangeProvider:
    return PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir), probe=probe))


def provision(
    target: PortRangeProvider, session_id: str, lock_dir: Path, **options: Any
) -> ResourceLease:
    return target.provision(session_id=session_id, workspace_root=str(lock_dir), options=options)


@pytest.fixture
def listen() -> Iterator[Callable[[str, int], socket.socket]]:
    """Factory: a foreign TCP listener (no SO_REUSEADDR) closed at teardown."""
    sockets: list[socket.socket] = []

    def make(host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sockets.append(sock)
        sock.bind((host, port))
        sock.listen(1)
        return sock

    yield make
    for sock in sockets:
        sock.close()


def test_probe_sees_listeners_on_loopback_and_wildcard(
    listen: Callable[[str, int], socket.socket],
) -> None:
    listen("127.0.0.1", BASE + 3)
    listen("0.0.0.0", BASE + 5)
    assert busy_ports(BASE, BASE + 7) == [BASE + 3, BASE + 5]
    assert port_is_free(BASE + 4)


def test_block_with_a_few_busy_ports_is_skipped_for_the_next_clean_one(
    lock_dir: Path, listen: Callable[[str, int], socket.socket]
) -> None:
    """Two listeners in a 16-port block: not clean, so the next block is leased, whole."""
    base = OWN_BASE["busy"]
    options = {"basePort": base, "blockSize": 16, "blockCount": 8}
    index = preferred_block("busy", 8)
    start = base + index * 16
    listen("127.0.0.1", start + 2)
    listen("127.0.0.1", start + 9)
    lease = provision(provider(lock_dir), "busy", lock_dir, **options)
    assert lease.hard["blockIndex"] == (index + 1) % 8
    assert lease.hard["skippedBusyPorts"] == [start + 2, start + 9]
    assert "busyPorts" not in lease.hard
    lease.release()


def test_block_mostly_held_by_listeners_is_skipped_and_reported(
    lock_dir: Path, listen: Callable[[str, int], socket.socket]
) -> None:
    options = {"basePort": BASE, "blockSize": 8, "blockCount": 8}
    index = preferred_block("busy", 8)
    start = BASE + index * 8
    for offset in (1, 3, 5):  # 3 of 8: more than a quarter
        listen("127.0.0.1", start + offset)
    lease = provision(provider(lock_dir), "busy", lock_dir, **options)
    assert lease.hard["blockIndex"] == (index + 1) % 8  # the next block, as the reference moves
    assert lease.hard["skippedBusyPorts"] == [start + 1, start + 3, start + 5]
    lease.release()


def test_block_whose_ports_are_in_time_wait_is_skipped_even_with_accept_time_wait(
    lock_dir: Path,
) -> None:
    """A previous run's servers closed first: its block is not clean, and while another
    block is, even a caller that accepts TIME_WAIT gets the clean one."""
    base = OWN_BASE["tw"]
    start = base + preferred_block("tw", 8) * 4
    for port in range(start, start + 3):
        make_time_wait(port)
    for accept in (False, True):
        options = {"basePort": base, "blockSize": 4, "blockCount": 8, "acceptTimeWait": accept}
        lease = provision(provider(lock_dir), "tw", lock_dir, **options)
        assert lease.hard["startPort"] == base + (start - base + 4) % 32
        assert "busyPorts" not in lease.hard
        assert lease.hard["skippedBusyPorts"] == list(range(start, start + 3))
        lease.release()


def test_free_block_has_no_busy_keys(lock_dir: Path) -> None:
    lease = provision(provider(lock_dir), "quiet", lock_dir, basePort=BASE, blockCount=4)
    assert "skippedBusyPorts" not in lease.hard
    assert "busyPorts" not in lease.hard
    lease.release()


def test_child_slice_with_a_listener_is_refused(
    lock_dir: Path, listen: Callable[[str, int], socket.socket]
) -> None:
    target = provider(lock_dir)
    base = OWN_BASE["child"]
    parent = provision(target, "p", lock_dir, basePort=base, blockSize=32, blockCount=1)
    listen("127.0.0.1", base + 17)
    with pytest.raises(PortsExhaustedError):
        provision(
            target,
            "c",
            lock_dir,
            basePort=base + 16,
            blockSize=16,
            blockCount=1,
            parentStartPort=base,
            parentEndPort=base + 31,
        )
    with pytest.raises(PortsExhaustedError) as caught:
        provision(
            target,
            "c",
            lock_dir,
            basePort=base + 16,
            blockSize=16,
            blockCount=1,
            parentStartPort=base,
            parentEndPort=base + 31,
            acceptTimeWait=True,  # a listener is never accepted
        )
    assert caught.value.reason == (
        f"child port slice {base + 16}-{base + 31} of parent range {base}-{base + 31} has 1 "
        f"port(s) another process uses ({base + 17})"
    )
    # Refused without keeping the slice: the free half is still a child's to take.
    provision(
        target,
        "c",
        lock_dir,
        basePort=base,
        blockSize=16,
        blockCount=1,
        parentStartPort=base,
        parentEndPort=base + 31,
    ).release()
    parent.release()


def test_all_blocks_busy_or_held_is_exhaustion(
    lock_dir: Path, listen: Callable[[str, int], socket.socket]
) -> None:
    target = provider(lock_dir)
    held = provision(target, "a", lock_dir, basePort=BASE, blockSize=4, blockCount=2)
    other = BASE + 4 if held.hard["startPort"] == BASE else BASE
    listen("127.0.0.1", other + 1)
    listen("127.0.0.1", other + 2)
    with pytest.raises(PortsExhaustedError) as caught:
        provision(target, "b", lock_dir, basePort=BASE, blockSize=4, blockCount=2)
    assert str(caught.value) == (
        f"No free deterministic port block is available: all 2 blocks of 4 ports from {BASE} "
        "are leased (1) or have ports other processes use (listeners or TIME_WAIT) (1) "
        f"[lock directory {lock_dir}]; raise blockCount, pick another basePort, or end the runs "
        "holding them (pytest-aiops status)."
    )
    held.release()


def test_same_session_gets_same_ports_on_every_run(
    lock_dir: Path, hold_lease: Callable[..., Holder]
) -> None:
    options = {"basePort": BASE, "blockCount": 50, "lockDirectory": str(lock_dir)}
    seen = []
    for _ in range(2):  # two separate runs (processes), one after the other
        process, hard = hold_lease(options, "agent-7")
        seen.append(hard["startPort"])
        process.kill()
        process.communicate()
    expected = BASE + preferred_block("agent-7", 50) * 32
    assert seen == [expected, expected]


def test_ephemeral_overlap_warns_once_per_provider(lock_dir: Path) -> None:
    low, high = read_ephemeral_range() or (49152, 65535)
    target = provider(lock_dir, probe=False)
    options = {"basePort": low - 32, "blockSize": 32, "blockCount": 4}
    end = low - 32 + 4 * 32 - 1
    with pytest.warns(AiopsWarning) as caught:
        provision(target, "e", lock_dir, **options).release()
    assert [str(w.message) for w in caught] == [
        f"port range {low - 32}-{end} overlaps the OS ephemeral port range {low}-{high}: the "
        "kernel may hand those ports to outgoing connections at any time; choose a basePort "
        f"and size that end below {low} (the default range is 20000-26399)"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        provision(target, "e", lock_dir, **options).release()  # already warned: silent


def test_default_range_is_clear_of_ephemeral_and_common_ports(lock_dir: Path) -> None:
    low, _ = read_ephemeral_range() or (49152, 65535)
    config = PortRangeProviderConfig()
    start, end = config.base_port, config.base_port + config.block_size * config.block_count - 1
    assert (start, end) == (20000, 26399)
    assert end < low
    assert not {3000, 5432, 6379, 8000, 8080, 9000, 27017} & set(range(start, end + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        provision(provider(lock_dir), "d", lock_dir).release()


def test_read_ephemeral_range_parses_proc_format(tmp_path: Path) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text("32768\t60999\n")
    assert read_ephemeral_range(str(path)) == (32768, 60999)
    path.write_text("garbage")
    assert read_ephemeral_range(str(path)) is None
    assert read_ephemeral_range(str(tmp_path / "missing")) is None


def test_default_lock_directory_is_machine_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_AIOPS_LOCK_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", "/somewhere/else")  # per-job TMPDIR must not split machines
    assert default_lock_directory() == "/tmp/pytest-aiops/locks"
    monkeypatch.setenv("PYTEST_AIOPS_LOCK_DIR", "/var/lib/ci-locks")
    assert default_lock_directory() == "/var/lib/ci-locks"


def test_env_lock_directory_is_used_and_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_AIOPS_LOCK_DIR", str(tmp_path / "env" / "locks"))
    lease = create_port_range_provider({"basePort": BASE, "blockCount": 2}).provision(
        session_id="x", workspace_root=str(tmp_path), options={}
    )
    assert lease.hard["lockPath"] == str(tmp_path / "env" / "locks" / "ports.lock")
    lease.release()


def test_records_tell_who_holds_a_port(lock_dir: Path) -> None:
    lease = provision(provider(lock_dir), "who", lock_dir, basePort=BASE, blockCount=2)
    (record,) = holders_of(str(lock_dir), lease.hard["startPort"] + 5)
    assert (record.session_id, record.pid, record.role) == ("who", os.getpid(), "top-level")
    assert (record.start_port, record.end_port) == (lease.hard["startPort"], lease.hard["endPort"])
    assert record.lease_id == lease.hard["leaseId"]
    assert record.to_dict()["alive"] is True
    assert holders_of(str(lock_dir), lease.hard["endPort"] + 1) == []
    assert reap_stale(str(lock_dir), dry_run=True) == []
    lease.release()
    assert list(read_records(str(lock_dir))) == []


def test_a_record_file_is_its_fields_as_json_dumps_writes_them(lock_dir: Path) -> None:
    # write_record encodes a record's own fields with one C encoder made at import, not
    # json.dumps per lease: the bytes on disk must stay exactly what json.dumps gives.
    from pytest_aiops._ports.records import write_record

    text = 'sess\u00e9 "q" \\ \n\u2603'
    lease = provision(provider(lock_dir), text, lock_dir, basePort=BASE, blockCount=2)
    (record,) = read_records(str(lock_dir))
    fields = record.record_json()
    assert fields["sessionId"] == text
    assert fields["leaseId"] == lease.hard["leaseId"]
    written = Path(record.path).read_bytes()
    assert written == (json.dumps(fields, sort_keys=True) + "\n").encode("utf-8")
    lease.release()
    # extra fields (overriding the record's own) go through json.dumps itself
    path = write_record(
        str(lock_dir),
        session_id="s",
        start=BASE,
        end=BASE + 3,
        role="child",
        lease_id=7,
        extra={"pid": 1, "more": [1, {"a": None}]},
    )
    written = Path(path).read_bytes().rstrip(b" ")
    payload = json.loads(written)
    assert payload["pid"] == 1
    assert payload["more"] == [1, {"a": None}]
    assert written == (json.dumps(payload, sort_keys=True) + "\n").encode("utf-8")


def test_records_of_killed_holders_are_stale(
    lock_dir: Path, hold_lease: Callable[..., Holder]
) -> None:
    process, hard = hold_lease({"basePort": BASE, "blockCount": 2, "lockDirectory": str(lock_dir)})
    (record,) = read_records(str(lock_dir))
    assert record.alive is True
    process.kill()
    process.communicate()
    (record,) = read_records(str(lock_dir))
    assert record.alive is False
    assert holders_of(str(lock_dir), hard["startPort"]) == []
    assert [r.pid for r in reap_stale(str(lock_dir), dry_run=True)] == [process.pid]
    assert list(read_records(str(lock_dir))) != []  # dry run removed nothing
    assert [r.pid for r in reap_stale(str(lock_dir))] == [process.pid]
    assert list(read_records(str(lock_dir))) == []


@pytest.mark.filterwarnings("ignore::pytest_aiops.AiopsWarning")  # some vectors reach 35999
def test_vectors_blocks_through_the_real_provider(lock_dir: Path) -> None:
    target = provider(lock_dir)
    for entry in VECTORS["blocks"]:
        want = {k: entry[k] for k in ("blockIndex", "startPort", "endPort")}
        for _ in range(50):
            lease = provision(
                target,
                entry["sessionId"],
                lock_dir,
                basePort=entry["basePort"],
                blockSize=entry["blockSize"],
                blockCount=entry["blockCount"],
            )
            got = {k: lease.hard[k] for k in ("blockIndex", "startPort", "endPort")}
            lease.release()
            if got == want or lease.hard.get("skippedBusyPorts"):
                break  # a busy port of the preferred block: moving is correct
            # A lease of another lock directory in this network namespace (this suite's own
            # run, an inner run of another test) holds the preferred block: moving is
            # correct then too. Seen no more: it may have just ended, try again.
            if _held_in_network(want["startPort"], want["endPort"]):
                break
            time.sleep(0.1)
        if not lease.hard.get("skippedBusyPorts") and not _held_in_network(
            want["startPort"], want["endPort"]
        ):
            assert got == want, entry


def _held_in_network(start: int, end: int) -> bool:
    """Whether a live lease of this network namespace, any lock directory, holds a port of
    ``start..end`` (Linux; elsewhere only the test's own lock directory counts)."""
    from pytest_aiops._ports import netns

    return netns.available() and any(n.overlaps(start, end) for n in netns.held_names())


def test_macos_and_bsd_ephemeral_range_comes_from_sysctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_aiops._ports import probe as _ports

    # No macOS here: a stand-in sysctl prints what macOS's prints for the two names, and
    # sys.platform says darwin. The real Linux sysctl has no such names: None.
    assert _ports.read_sysctl_range() is None
    fake = tmp_path / "bin" / "sysctl"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\n[ "$*" = "-n net.inet.ip.portrange.first net.inet.ip.portrange.last" ]'
        " && printf '50000\\n60000\\n'\n"
    )
    fake.chmod(0o755)
    assert _ports.read_sysctl_range(str(fake)) == (50000, 60000)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "platform", "darwin")
    _ports.ephemeral_range.cache_clear()
    try:
        assert _ports.ephemeral_range() == (50000, 60000)
        fake.write_text("#!/bin/sh\nexit 1\n")
        _ports.ephemeral_range.cache_clear()
        assert _ports.ephemeral_range() == (49152, 65535)  # the BSD/macOS default
    finally:
        _ports.ephemeral_range.cache_clear()


def _time_wait_anywhere(family: socket.AddressFamily, host: str) -> int:
    """A kernel-picked port on ``host`` left in TIME_WAIT for real (the server closed first)."""
    with socket.socket(family, socket.SOCK_STREAM) as server:
        if family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        server.bind((host, 0))
        server.listen()
        port = int(server.getsockname()[1])
        with socket.create_connection((host, port)) as client:
            accepted, _ = server.accept()
            accepted.close()
            client.recv(1)  # the server's FIN arrived
    return port


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the dual-stack probe is Linux's")
@pytest.mark.parametrize(
    ("family", "host", "kind"),
    [
        (socket.AF_INET, "127.0.0.1", socket.SOCK_STREAM),
        (socket.AF_INET, "0.0.0.0", socket.SOCK_STREAM),
        (socket.AF_INET6, "::1", socket.SOCK_STREAM),
        (socket.AF_INET6, "::", socket.SOCK_STREAM),
        (socket.AF_INET, "127.0.0.1", socket.SOCK_DGRAM),
        (socket.AF_INET6, "::1", socket.SOCK_DGRAM),
    ],
    ids=[
        "tcp-127.0.0.1",
        "tcp-0.0.0.0",
        "tcp-[::1]",
        "tcp-[::]-v6only",
        "udp-127.0.0.1",
        "udp-[::1]",
    ],
)
def test_dual_stack_probe_sees_a_socket_of_either_family(
    family: socket.AddressFamily, host: str, kind: socket.SocketKind
) -> None:
    """One dual-stack bind stands for the IPv4 and IPv6 wildcard binds: an IPv4-only and an
    IPv6-only socket (IPV6_V6ONLY) both make the port busy, and it is free once closed."""
    if not host_has_ipv6():
        pytest.skip("no IPv6 on this host: the probe binds IPv4 only")
    assert dual_stack_probe()
    protocol = "udp" if kind == socket.SOCK_DGRAM else "tcp"
    with socket.socket(family, kind) as holder:
        if family == socket.AF_INET6:
            holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        holder.bind((host, 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = int(holder.getsockname()[1])
        assert not port_is_free(port, protocol=protocol)
    assert port_is_free(port, protocol=protocol)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the dual-stack probe is Linux's")
@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["v4", "v6"]
)
def test_dual_stack_probe_sees_time_wait_of_either_family(
    family: socket.AddressFamily, host: str
) -> None:
    if not host_has_ipv6():
        pytest.skip("no IPv6 on this host: the probe binds IPv4 only")
    assert dual_stack_probe()
    port = _time_wait_anywhere(family, host)
    with socket.socket(family, socket.SOCK_STREAM) as server:  # really in TIME_WAIT
        with pytest.raises(OSError, match="in use") as error:
            server.bind((host, port))
        assert error.value.errno == errno.EADDRINUSE
    assert not port_is_free(port)
