"""The plain objects behind the fixtures, without pytest: PortRange, WorktreeFactory, workers."""

from __future__ import annotations

import socket
import threading
import warnings
from pathlib import Path

import pytest

from pytest_aiops import AiopsWarning, PortsExhaustedError, ProvisioningError
from pytest_aiops._core.registry import ProviderRegistry
from pytest_aiops._plugin.settings import Settings
from pytest_aiops._plugin.worker import AiopsWorker, WorktreeFactory
from pytest_aiops._ports.pool import KernelPorts, PortRange
from pytest_aiops._ports.probe import host_has_ipv6
from pytest_aiops._ports.provider import create_port_range_provider
from pytest_aiops._ports.records import read_records
from pytest_aiops._worktrees.provider import create_git_worktree_provider

from .conftest import MakeRepo, make_time_wait


def live_leases(lock_dir: Path) -> list[tuple[int, int, str]]:
    """(start, end, session id) of each live lease record in ``lock_dir``."""
    return [
        (r.start_port, r.end_port, r.session_id)
        for r in read_records(str(lock_dir))
        if r.holder_alive()
    ]


def _registry() -> ProviderRegistry:
    registry = ProviderRegistry()
    registry(create_git_worktree_provider())
    registry(create_port_range_provider())
    return registry


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
    ports = PortRange(21000, 21002, 21001, owner="gw3", probe=False)
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
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        busy = server.getsockname()[1]
        ports = PortRange(busy, busy + 1 if busy < 65535 else busy, busy)
        if len(ports) == 1:
            pytest.skip("kernel gave us port 65535")
        assert ports.next_port() == busy + 1


def test_ports_are_attributed_to_the_running_test() -> None:
    ports = PortRange(21000, 21009, probe=False)
    ports.current_user = "t1"
    first = ports.next_port()
    ports.current_user = "t2"
    second = ports.next_port()
    assert ports.ports_of("t1") == [first]
    assert ports.ports_of("t2") == [second]


def test_worker_leases_nothing_until_asked_and_releases_on_close(
    lock_dir: Path, tmp_path: Path
) -> None:
    worker = AiopsWorker(
        Settings(ports_per_worker=8, port_range=(23000, 23799), lock_dir=str(lock_dir)),
        registry=_registry(),
        worker_id="master",
        session_id="objects-test",
        workspace_root=str(tmp_path),
    )
    assert not worker.port_range_leased
    assert live_leases(lock_dir) == []
    ports = worker.port_range()
    assert len(ports) == 8
    assert 23000 <= ports.start <= ports.end <= 23799
    assert worker.port_range() is ports
    assert live_leases(lock_dir) == [(ports.start, ports.end, "objects-test")]
    assert worker.close() == []
    assert live_leases(lock_dir) == []


def test_worktree_factory_isolates_and_keeps_by_policy(make_repo: MakeRepo) -> None:
    repo = make_repo({"a.txt": "original\n"})
    registry = _registry()
    factory = WorktreeFactory(
        registry.orchestrator, Settings(keep="failed"), repo=str(repo), session_prefix="objects"
    )
    with factory.worktree() as worktree:
        assert worktree.repo_root == repo
        assert worktree.base_ref == "HEAD"
        (worktree.path / "a.txt").write_text("edited\n")
        released_path = worktree.path
    assert (repo / "a.txt").read_text() == "original\n"
    assert factory.kept == []
    kept = factory.provision()
    assert not factory.release(kept, failed=True)
    assert factory.kept == [kept]
    assert kept.path.is_dir()
    if released_path == kept.path:  # the pool handed the same checkout out again: restored
        assert (kept.path / "a.txt").read_text() == "original\n"
    assert kept.resources is not None
    kept.resources.release()


def test_worktree_factory_outside_a_repository_says_so(tmp_path: Path) -> None:
    factory = WorktreeFactory(
        _registry().orchestrator, Settings(), repo=str(tmp_path), session_prefix="objects"
    )
    with pytest.raises(ProvisioningError) as excinfo:
        factory.provision()
    assert str(excinfo.value) == (
        f"git_worktree needs a git repository, but {tmp_path} is not inside one; set "
        "--aiops-repo (ini aiops_repo) to the repository under test"
    )


def test_registry_refuses_duplicates_unless_replacing() -> None:
    registry = _registry()
    assert registry.kinds == ("git-worktree", "port-range")
    with pytest.raises(ValueError, match='"port-range" is already registered'):
        registry(create_port_range_provider())
    replacement = create_port_range_provider()
    registry(replacement, replace=True)
    assert registry.get("port-range") is replacement
    with pytest.raises(TypeError, match="is not a resource provider"):
        registry(object())  # type: ignore[arg-type]
