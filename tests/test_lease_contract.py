"""What a lease guarantees, kept by the core API, the CLI and the plugin (issue 18).

Every port of a leased range binds at lease time (TCP, IPv4 and IPv6, without
``SO_REUSEADDR``); a lease keeps its preferred block only when that is clean; only a caller
that accepts TIME_WAIT (the plugin's pool) may take a block whose busy ports are all in
TIME_WAIT, and only when no block is clean; never one with a listener. Real listeners in
other processes, real TIME_WAIT (a server that closed first), real second processes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import PortsExhaustedError, ProvisioningError
from pytest_aiops._core.hashing import preferred_block
from pytest_aiops._core.types import ResourceContextPatch
from pytest_aiops._ports.probe import host_has_ipv6
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig

from .git_helpers import git
from .inner_run_helpers import check_inner_warnings
from .lease_contract_helpers import (
    leased_blocks,
    ports_that_do_not_bind,
    start_foreign_listener,
)
from .port_helpers import Holder, make_time_wait
from .worktree_helpers import builtin_registry

pytest_plugins = ["pytester"]

#: Ranges no other test binds (see the numbers in tests/): one per test that asserts which
#: block is leased, so tests running side by side under xdist do not disturb each other.
TOLD_APART = 18712  # 2 ports
RELEASE_LISTENER = 18720  # 8 blocks of 16
RELEASE_TIME_WAIT = 18848  # 8 blocks of 16
ACCEPT = 18976  # 3 blocks of 8
CHILDREN = 19000  # 4 blocks of 32 per parametrization
CLI = 19256  # 4 blocks of 16
PLUGIN = "19320-19399"
DEMO = "19500-19999"


@pytest.fixture
def foreign() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Factory: a foreign listener in another process, killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(port: int, host: str = "0.0.0.0") -> subprocess.Popen[str]:
        started.append(start_foreign_listener(port, host))
        return started[-1]

    yield start
    for process in started:
        process.kill()
        process.communicate()


def _provider(lock_dir: Path) -> PortRangeProvider:
    return PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir)))


def _lease_in_another_process(
    hold_lease: Callable[..., Holder], options: dict[str, Any], session_id: str
) -> dict[str, Any]:
    """Lease and release ``session_id`` in a real second process: last run's block."""
    process, hard = hold_lease(options, session_id)
    assert "error" not in hard, hard
    process.kill()
    process.communicate()
    return hard


def _assert_whole(hard: dict[str, Any]) -> None:
    """Every port of the lease binds now, the primary port included; none reported busy."""
    assert "busyPorts" not in hard
    assert ports_that_do_not_bind(hard["startPort"], hard["endPort"]) == []
    assert hard["startPort"] <= hard["primaryPort"] <= hard["endPort"]


@pytest.mark.parametrize("where", ["primary", "other", "ipv6"])
def test_core_release_moves_off_a_foreign_listener_in_last_runs_block(
    lock_dir: Path,
    hold_lease: Callable[..., Holder],
    foreign: Callable[..., subprocess.Popen[str]],
    where: str,
) -> None:
    """Lease ``x``, release it, a foreign process listens in its block (on the primary port,
    on another port, on IPv6 loopback), lease ``x`` again: the next clean block, whole."""
    options = {
        "basePort": RELEASE_LISTENER,
        "blockSize": 16,
        "blockCount": 8,
        "lockDirectory": str(lock_dir),
    }
    last = _lease_in_another_process(hold_lease, options, "x")
    squatted = {
        "primary": (last["primaryPort"], "0.0.0.0"),
        "other": (last["startPort"] + 9, "127.0.0.1"),
        "ipv6": (last["startPort"] + 3, "::1"),
    }[where]
    if ":" in squatted[1] and not host_has_ipv6():
        pytest.skip("this host cannot bind IPv6 sockets")
    foreign(*squatted)
    lease = _provider(lock_dir).provision(
        session_id="x", workspace_root=str(lock_dir), options=options
    )
    try:
        assert lease.hard["startPort"] == last["startPort"] + 16 or (
            last["blockIndex"] == 7 and lease.hard["startPort"] == RELEASE_LISTENER
        )
        assert lease.hard["skippedBusyPorts"] == [squatted[0]]
        assert lease.hard["primaryPort"] != squatted[0]
        _assert_whole(dict(lease.hard))
    finally:
        lease.release()


def test_core_release_moves_off_time_wait_in_last_runs_block(
    lock_dir: Path, hold_lease: Callable[..., Holder]
) -> None:
    """A server in last run's block closed first (its port in TIME_WAIT): not clean, so
    ``x`` gets the next block, which binds whole without SO_REUSEADDR."""
    options = {
        "basePort": RELEASE_TIME_WAIT,
        "blockSize": 16,
        "blockCount": 8,
        "lockDirectory": str(lock_dir),
    }
    last = _lease_in_another_process(hold_lease, options, "x")
    make_time_wait(last["primaryPort"])
    assert ports_that_do_not_bind(last["primaryPort"], last["primaryPort"]) != []
    lease = _provider(lock_dir).provision(
        session_id="x", workspace_root=str(lock_dir), options=options
    )
    try:
        assert lease.hard["startPort"] != last["startPort"]
        assert lease.hard["skippedBusyPorts"] == [last["primaryPort"]]
        _assert_whole(dict(lease.hard))
    finally:
        lease.release()


def test_accept_time_wait_only_when_no_block_is_clean_and_never_a_listener(
    lock_dir: Path,
    hold_lease: Callable[..., Holder],
    foreign: Callable[..., subprocess.Popen[str]],
) -> None:
    """Three blocks: one held by another live lease, one with a port in TIME_WAIT, one with
    a listener. Without acceptTimeWait: exhausted. With it: the TIME_WAIT block, its busy
    port reported and its primary port moved to the next port that binds."""
    options: dict[str, Any] = {"basePort": ACCEPT, "blockSize": 8, "blockCount": 3}
    preferred = preferred_block("tw", 3)
    waiting = ACCEPT + preferred * 8  # the preferred block: its primary port in TIME_WAIT
    listening = ACCEPT + (preferred + 1) % 3 * 8
    held = ACCEPT + (preferred + 2) % 3 * 8
    holder, hard = hold_lease(
        {"basePort": held, "blockSize": 8, "blockCount": 1, "lockDirectory": str(lock_dir)},
        "holder",
    )
    assert hard["startPort"] == held
    make_time_wait(waiting)
    foreign(listening + 5)
    provider = _provider(lock_dir)
    with pytest.raises(PortsExhaustedError) as caught:
        provider.provision(session_id="tw", workspace_root=str(lock_dir), options=options)
    assert "are leased (1) or have ports other processes use" in str(caught.value)
    lease = provider.provision(
        session_id="tw", workspace_root=str(lock_dir), options={**options, "acceptTimeWait": True}
    )
    try:
        assert lease.hard["startPort"] == waiting
        assert lease.hard["busyPorts"] == [waiting]
        assert lease.hard["primaryPort"] == waiting + 1
        assert lease.hard["acceptTimeWait"] is True
        assert ports_that_do_not_bind(waiting, waiting + 7) == [waiting]
        assert isinstance(lease.soft, ResourceContextPatch)
        assert lease.soft.env["AGENT_PORT_PRIMARY"] == str(waiting + 1)
    finally:
        lease.release()
    # With a listener in the TIME_WAIT block as well, nothing is acceptable.
    foreign(waiting + 6)
    with pytest.raises(PortsExhaustedError):
        provider.provision(
            session_id="tw",
            workspace_root=str(lock_dir),
            options={**options, "acceptTimeWait": True},
        )
    holder.kill()
    holder.communicate()


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_accept_time_wait_must_be_a_boolean(lock_dir: Path, value: object) -> None:
    from pytest_aiops import OptionError

    with pytest.raises(OptionError) as caught:
        _provider(lock_dir).provision(
            session_id="b",
            workspace_root=str(lock_dir),
            options={"basePort": ACCEPT, "blockSize": 8, "blockCount": 3, "acceptTimeWait": value},
        )
    assert str(caught.value) == f'Option "acceptTimeWait" must be true or false, not {value!r}.'


@pytest.mark.parametrize("accept", [False, True])
def test_child_slice_in_time_wait_only_when_the_parent_accepted_it(
    lock_dir: Path, accept: bool
) -> None:
    """The parent's acceptTimeWait travels in its allocation to its children's requests."""
    orchestrator = builtin_registry().orchestrator()
    parent = orchestrator.provision_session(
        session_id="parent",
        resources=[
            {
                "kind": "port-range",
                "options": {
                    "basePort": CHILDREN + 128 * accept,
                    "blockSize": 32,
                    "blockCount": 4,  # a re-run within a minute moves off this one's TIME_WAIT
                    "lockDirectory": str(lock_dir),
                    "acceptTimeWait": accept,
                },
            }
        ],
        workspace_root=str(lock_dir),
    )
    base = (parent.allocation("port-range") or {})["startPort"]
    try:
        make_time_wait(base + 16)  # child 1's primary port, after the parent's probe
        snapshot = parent.to_discovery_snapshot()

        def child() -> Any:
            return orchestrator.provision_child_session(
                parent_snapshot=snapshot, child_session_id="c", child_index=1, child_count=2
            )

        if accept:
            session = child()
            allocation = session.allocation("port-range") or {}
            assert allocation["busyPorts"] == [base + 16]
            assert allocation["primaryPort"] == base + 17  # the next port that binds
            session.release()
        else:
            with pytest.raises(ProvisioningError) as caught:
                child()
            cause = caught.value.__cause__
            assert isinstance(cause, PortsExhaustedError)
            assert cause.reason == (
                f"child port slice {base + 16}-{base + 31} of parent range "
                f"{base}-{base + 31} has 1 port(s) another process uses ({base + 16})"
            )
    finally:
        parent.release()


SERVE = """
import json, os, socket
start = int(os.environ["AGENT_PORT_RANGE_START"])
end = int(os.environ["AGENT_PORT_RANGE_END"])
primary = int(os.environ["AGENT_PORT_PRIMARY"])
servers = []
for port in [primary, *range(start, end + 1)]:
    if port == primary and servers:
        continue
    server = socket.socket()  # no SO_REUSEADDR, as socketserver.TCPServer
    server.bind(("0.0.0.0", port))
    server.listen()
    servers.append(server)
print(json.dumps({"start": start, "end": end, "primary": primary}))
"""


def test_cli_run_gives_another_clean_block_when_last_runs_primary_is_taken(
    repo: Path, lock_dir: Path, tmp_path: Path, foreign: Callable[..., subprocess.Popen[str]]
) -> None:
    """``pytest-aiops run`` twice for one agent; between the runs a foreign process takes
    the first run's ``AGENT_PORT_PRIMARY``: the second run's server binds every port of its
    range (the primary first), so the agent got another clean block."""
    serve = tmp_path / "serve.py"
    serve.write_text(SERVE)
    resource = "port-range:" + json.dumps({"basePort": CLI, "blockSize": 16, "blockCount": 4})
    argv = [
        sys.executable,
        "-m",
        "pytest_aiops",
        "run",
        "--lock-dir",
        str(lock_dir),
        "--worktree-root",
        str(tmp_path / "worktrees"),
        "--session-id",
        "agent-x",
        "--resource",
        resource,
        "--",
        sys.executable,
        str(serve),
    ]

    def run() -> dict[str, int]:
        result = subprocess.run(
            argv, check=False, cwd=repo, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        data: dict[str, int] = json.loads(result.stdout.splitlines()[-1])
        return data

    first = run()
    foreign(first["primary"])
    second = run()
    assert second["primary"] != first["primary"]
    assert not second["start"] <= first["primary"] <= second["end"]


BIND_EVERY_PORT = """
import socket

def test_binds_every_port_of_its_range(port_range):
    servers = []
    for port in port_range:
        server = socket.socket()  # no SO_REUSEADDR
        server.bind(("0.0.0.0", port))
        server.listen()
        servers.append(server)
    for server in servers:
        server.close()
    assert port_range.primary in port_range
"""


def test_plugin_under_xdist_moves_off_a_foreign_listener_in_last_runs_gw0_block(
    pytester: pytest.Pytester,
    private_lock_dir: Path,
    foreign: Callable[..., subprocess.Popen[str]],
) -> None:
    """``-n 2`` twice; between the runs a foreign process listens on one port of the first
    run's gw0 block: the second run's tests bind every port of their ``port_range``."""
    pytester.makepyfile(test_bind=BIND_EVERY_PORT)
    # -rA: the end-of-run lines (which name gw0's block) print only when asked for.
    args = ["-p", "no:benchmark", "-p", "no:randomly", "-q", "-rA", "-n", "2"]
    args += [f"--aiops-port-range={PLUGIN}", "--aiops-ports-per-worker=8"]
    first = pytester.runpytest_subprocess(*args, "-k", "binds")
    first.assert_outcomes(passed=1)
    # Two tests so that both workers lease; one for the first run is enough to find gw0.
    gw0 = re.search(r"^aiops gw0: ports (\d+)-(\d+)", first.stdout.str(), re.MULTILINE)
    if gw0 is None:  # the one test ran on gw1: gw0 never leased; take gw1's block
        gw0 = re.search(r"^aiops gw\d: ports (\d+)-(\d+)", first.stdout.str(), re.MULTILINE)
    assert gw0 is not None, first.stdout.str()
    squatted = int(gw0.group(1)) + 3
    foreign(squatted)
    pytester.makepyfile(
        test_more="\n".join(
            BIND_EVERY_PORT.replace("test_binds_every_port_of_its_range", f"test_binds_{n}")
            for n in range(4)
        )
    )
    second = pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=5)
    blocks = leased_blocks(second.stdout.str())
    assert blocks, second.stdout.str()
    assert not any(start <= squatted <= end for start, end in blocks)
    assert "busy at lease" not in second.stdout.str()


def test_demo_passes_again_with_every_port_of_its_last_ranges_in_time_wait(
    tmp_path: Path, private_lock_dir: Path
) -> None:
    """The README's demo (``python -m pytest -n 4 examples``) in a copy of the project,
    run once; every port of every block it leased is then left in TIME_WAIT (as the user's
    own servers that close first do); it passes again."""
    project = tmp_path / "project"
    checkout = Path(__file__).parent.parent
    for name in git(checkout, "ls-files").splitlines():  # the project as a user has it
        if (checkout / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / name, project / name)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "the demo")
    argv = [sys.executable, "-m", "pytest", "-n", "4", "-rA", "examples"]  # -rA: the ranges
    argv += [f"--aiops-port-range={DEMO}", f"--aiops-worktree-root={tmp_path / 'worktrees'}"]

    def run() -> str:
        result = subprocess.run(
            argv, check=False, cwd=project, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        check_inner_warnings(result.stdout, result.stderr, ())
        return result.stdout

    blocks = leased_blocks(run())
    assert blocks
    for start, end in blocks:
        for port in range(start, end + 1):
            make_time_wait(port)
    assert all(ports_that_do_not_bind(start, end) for start, end in blocks)
    run()


def test_time_wait_is_told_from_a_listener_only_where_the_kernel_says_it(
    foreign: Callable[..., subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux reads /proc/net/tcp{,6}: a port in TIME_WAIT only is told apart from one with a
    listener. Elsewhere (the platform faked: it cannot be caused here) no busy port counts
    as TIME_WAIT only, so acceptTimeWait never takes a busy block there."""
    from pytest_aiops._ports import probe

    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/net/tcp is Linux's")
    waiting, listening = TOLD_APART, TOLD_APART + 1
    make_time_wait(waiting)
    foreign(listening)
    assert probe.only_in_time_wait([waiting])
    assert not probe.only_in_time_wait([listening])
    assert not probe.only_in_time_wait([waiting, listening])
    monkeypatch.setattr(sys, "platform", "darwin")  # the module object probe reads
    assert not probe.only_in_time_wait([waiting])
