"""The ``port-range`` request and allocation as typed values (``_core/ports.py``): one
conversion each way between them and the reference's camelCase JSON, every bad option
refused in one line naming it, and the provider's typed entry point leasing what the spec
says (real locks in a private lock directory)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import InvalidArgumentError, OptionError, ResourceRequest
from pytest_aiops._core.ports import MAX_LEASE_ID, PortAllocation, PortSpec
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig

#: Ports no other test of the suite uses (and below the OS ephemeral range).
BASE = 27100
DEFAULTS = PortRangeProviderConfig()


def test_a_spec_read_from_options_writes_the_same_options_back() -> None:
    options: dict[str, Any] = {
        "basePort": BASE,
        "blockSize": 8,
        "blockCount": 4,
        "primaryPortOffset": 3,
        "lockDirectory": "/somewhere/locks",
        "acceptTimeWait": True,
    }
    spec = PortSpec.from_options(options, DEFAULTS)
    assert spec == PortSpec(BASE, 8, 4, 3, "/somewhere/locks", accept_time_wait=True)
    assert spec.to_options() == options
    assert PortSpec.from_options(spec.to_options(), DEFAULTS) == spec
    assert (spec.end_port, spec.block(2)) == (BASE + 31, (BASE + 16, BASE + 23))


def test_a_child_spec_round_trips_with_its_parent_and_lease_id() -> None:
    options: dict[str, Any] = {
        "basePort": BASE + 8,
        "blockSize": 8,
        "blockCount": 1,
        "primaryPortOffset": 0,
        "lockDirectory": "/locks",
        "parentStartPort": BASE,
        "parentEndPort": BASE + 31,
        "parentLeaseId": 7,
    }
    spec = PortSpec.from_options(options, DEFAULTS)
    assert (spec.parent, spec.parent_lease_id, spec.accept_time_wait) == (
        (BASE, BASE + 31),
        7,
        False,
    )
    assert spec.to_options() == options


def test_absent_options_are_the_configs_and_a_spec_built_in_code_leaves_them_out() -> None:
    config = PortRangeProviderConfig(
        base_port=BASE, block_size=16, block_count=2, primary_port_offset=4, lock_directory="/l"
    )
    assert PortSpec.from_options({}, config) == PortSpec(BASE, 16, 2, 4, "/l")
    # None: the provider's default, decided where the request is provisioned.
    assert PortSpec(BASE, 16, 2).to_options() == {
        "basePort": BASE,
        "blockSize": 16,
        "blockCount": 2,
    }


def test_the_plugins_request_is_written_by_the_spec() -> None:
    from pytest_aiops._plugin.settings import Settings

    settings = Settings(port_range=(BASE, BASE + 127), ports_per_worker=16, lock_dir="/l")
    assert settings.port_request(2) == ResourceRequest(
        "port-range", settings.port_spec(2).to_options()
    )
    assert settings.port_spec(2) == PortSpec(BASE, 32, 4, None, "/l", accept_time_wait=True)
    unset = Settings(port_range=(BASE, BASE + 127))
    assert unset.port_spec().lock_directory is None
    assert "lockDirectory" not in dict(unset.port_request().options or {})


@pytest.mark.parametrize(
    ("options", "option", "message"),
    [
        ({"basePort": 0}, "basePort", 'Option "basePort" must be an integer >= 1, not 0.'),
        ({"blockSize": True}, "blockSize", 'Option "blockSize" must be an integer >= 1, not True.'),
        (
            {"blockCount": 1.5},
            "blockCount",
            'Option "blockCount" must be an integer >= 1, not 1.5.',
        ),
        (
            {"primaryPortOffset": -1},
            "primaryPortOffset",
            'Option "primaryPortOffset" must be an integer >= 0, not -1.',
        ),
        (
            {"lockDirectory": " "},
            "lockDirectory",
            "Option \"lockDirectory\" must be a non-empty string, not ' '.",
        ),
        (
            {"blockSize": 4, "primaryPortOffset": 4},
            "primaryPortOffset",
            "primaryPortOffset must be smaller than blockSize (4 >= 4).",
        ),
        (
            {"basePort": 65000, "blockSize": 32, "blockCount": 20},
            "basePort",
            "Port range exceeds 65535 (basePort=65000, blockSize=32, blockCount=20); "
            "lower basePort, blockSize or blockCount.",
        ),
        (
            {"basePort": BASE, "blockSize": 8, "blockCount": 1, "parentStartPort": 0},
            "parentStartPort",
            'Option "parentStartPort" must be an integer >= 1, not 0.',
        ),
        (
            {
                "basePort": BASE,
                "blockSize": 8,
                "blockCount": 2,
                "parentStartPort": BASE,
                "parentEndPort": BASE + 31,
            },
            "parentStartPort",
            f"a child slice {BASE}-{BASE + 15} (blockCount=2) must be one block inside its "
            f"parent range {BASE}-{BASE + 31}.",
        ),
        (
            {"parentLeaseId": MAX_LEASE_ID},
            "parentLeaseId",
            f'Option "parentLeaseId" must be a lease id below {MAX_LEASE_ID}, not {MAX_LEASE_ID}.',
        ),
        (
            {"acceptTimeWait": "yes"},
            "acceptTimeWait",
            "Option \"acceptTimeWait\" must be true or false, not 'yes'.",
        ),
    ],
)
def test_each_bad_option_is_refused_in_one_line_naming_it(
    options: dict[str, Any], option: str, message: str
) -> None:
    with pytest.raises(OptionError) as info:
        PortSpec.from_options(options, DEFAULTS)
    assert (info.value.option, str(info.value)) == (option, message)


def test_an_unknown_option_warns_and_is_ignored() -> None:
    from pytest_aiops import AiopsWarning

    with pytest.warns(AiopsWarning, match="port-range ignores unknown option"):
        spec = PortSpec.from_options({"blocksize": 8}, DEFAULTS)
    assert spec.block_size == DEFAULTS.block_size


def _allocation() -> PortAllocation:
    return PortAllocation(
        start_port=BASE + 32,
        end_port=BASE + 63,
        primary_port=BASE + 33,
        lock_path="/locks/ports.lock",
        lease_id=12,
        base_port=BASE,
        block_size=32,
        block_count=4,
        block_index=1,
        accept_time_wait=True,
        skipped_busy_ports=(BASE + 1,),
        busy_ports=(BASE + 32,),
    )


def test_an_allocation_writes_the_references_json_and_reads_it_back() -> None:
    allocation = _allocation()
    data = allocation.to_json()
    assert list(data) == [
        "basePort",
        "blockSize",
        "blockCount",
        "blockIndex",
        "startPort",
        "endPort",
        "primaryPort",
        "lockPath",
        "leaseId",
        "acceptTimeWait",
        "skippedBusyPorts",
        "busyPorts",
    ]
    assert PortAllocation.from_json(data) == allocation
    assert allocation.lock_directory == "/locks"


def test_a_reference_allocation_reads_with_what_it_lacks_left_empty() -> None:
    data = {"startPort": BASE, "endPort": BASE + 31, "primaryPort": BASE, "lockPath": "/l/x"}
    allocation = PortAllocation.from_json({**data, "leaseId": True})  # not a lease id
    assert (allocation.lease_id, allocation.base_port, allocation.busy_ports) == (None, None, ())
    assert not allocation.accept_time_wait
    assert allocation.to_json() == data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"startPort": None}, 'Allocation field "startPort" must be an integer, not None.'),
        ({"endPort": "x"}, "Allocation field \"endPort\" must be an integer, not 'x'."),
        ({"primaryPort": False}, 'Allocation field "primaryPort" must be an integer, not False.'),
        ({"lockPath": ""}, 'Allocation field "lockPath" must be a non-empty string.'),
    ],
)
def test_a_bad_allocation_field_is_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        PortAllocation.from_json({**_allocation().to_json(), **change})
    assert str(info.value) == message


@pytest.mark.parametrize(
    "change",
    [
        {"busyPorts": 5},
        {"busyPorts": ["a"]},
        {"skippedBusyPorts": "1,2"},
        {"blockIndex": "3"},
        {"basePort": 1.5},
        {"blockSize": None},
    ],
)
def test_a_malformed_field_the_reference_does_not_read_is_left_out(change: dict[str, Any]) -> None:
    """The reference reads start, end, primary port and lock path alone (its child split
    too): a parent snapshot it would split, with this project's extra fields malformed (a
    replacement provider's, a hand-written one), still reads and still splits."""
    from pytest_aiops import build_child_resource_requests

    data = {**_allocation().to_json(), **change}
    allocation = PortAllocation.from_json(data)
    field = {
        "busyPorts": "busy_ports",
        "skippedBusyPorts": "skipped_busy_ports",
        "blockIndex": "block_index",
        "basePort": "base_port",
        "blockSize": "block_size",
    }[next(iter(change))]
    assert getattr(allocation, field) in (None, ())
    assert (
        dataclasses.replace(allocation, **{field: getattr(_allocation(), field)}) == _allocation()
    )
    (request,) = build_child_resource_requests(_parent(data), 1, 2)
    assert (request.options or {})["parentStartPort"] == allocation.start_port


@pytest.mark.parametrize(
    ("spec", "option", "message"),
    [
        (
            PortSpec(65530, 10, 1),
            "basePort",
            "Port range exceeds 65535 (basePort=65530, blockSize=10, blockCount=1); lower "
            "basePort, blockSize or blockCount.",
        ),
        (PortSpec(0, 0, 0), "basePort", None),
        (PortSpec(BASE, 8, 1, primary_port_offset=8), "primaryPortOffset", None),
    ],
)
def test_the_typed_lease_checks_a_spec_built_in_code_as_the_options(
    lock_dir: Path, spec: PortSpec, option: str, message: str | None
) -> None:
    """``lease(spec)`` refuses what ``provision(options)`` refuses, in the same words (a spec
    past 65535 would otherwise lease ports that do not exist), and leases nothing."""
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir), probe=False))
    with pytest.raises(OptionError) as typed:
        provider.lease(spec, session_id="bad", workspace_root=str(lock_dir))
    with pytest.raises(OptionError) as options:
        provider.provision(
            session_id="bad", workspace_root=str(lock_dir), options=spec.to_options()
        )
    assert (typed.value.option, str(typed.value)) == (options.value.option, str(options.value))
    assert typed.value.option == option
    if message is not None:
        assert str(typed.value) == message
    assert not list((lock_dir / "leases").glob("*")) if (lock_dir / "leases").is_dir() else True


def test_the_typed_lease_takes_the_specs_block_and_primary_port(lock_dir: Path) -> None:
    """Through :meth:`lease` and through :meth:`provision`, the primary port is the block's
    start plus the offset (a wrong offset was caught only indirectly before)."""
    provider = PortRangeProvider(PortRangeProviderConfig(lock_directory=str(lock_dir), probe=False))
    spec = PortSpec(BASE, 8, 1, primary_port_offset=5)
    held = provider.lease(spec, session_id="typed", workspace_root=str(lock_dir))
    try:
        allocation = held.allocation
        assert (allocation.start_port, allocation.end_port) == (BASE, BASE + 7)
        assert allocation.primary_port == BASE + 5
        assert allocation.lock_path == os.path.join(str(lock_dir), "ports.lock")
        assert allocation.lock_directory == str(lock_dir)
        assert (allocation.base_port, allocation.block_count, allocation.block_index) == (
            BASE,
            1,
            0,
        )
    finally:
        held.release()
        held.release()  # once only
    lease = provider.provision(
        session_id="typed", workspace_root=str(lock_dir), options=spec.to_options()
    )
    try:
        again = PortAllocation.from_json(lease.hard)
        assert again.lease_id != allocation.lease_id  # a new lease of the same block
        assert dataclasses.replace(again, lease_id=allocation.lease_id) == allocation
        assert lease.hard == again.to_json()
    finally:
        lease.release()


def test_a_spec_without_offset_or_lock_directory_takes_the_configs(lock_dir: Path) -> None:
    config = PortRangeProviderConfig(
        lock_directory=str(lock_dir), primary_port_offset=2, probe=False
    )
    held = PortRangeProvider(config).lease(
        PortSpec(BASE + 64, 4, 1), session_id="s", workspace_root="/"
    )
    try:
        assert held.allocation.primary_port == BASE + 66
        assert held.allocation.lock_directory == str(lock_dir)
    finally:
        held.release()


def test_a_pool_is_built_from_the_typed_allocation_or_its_json() -> None:
    from pytest_aiops import PortRange

    allocation = _allocation()
    for given in (allocation, allocation.to_json()):
        pool = PortRange.from_allocation(given, owner="gw0", session_id="s", probe=False)
        assert (pool.start, pool.end, pool.primary) == (BASE + 32, BASE + 63, BASE + 33)
        assert (pool.lock_directory, pool.busy_at_lease) == ("/locks", [BASE + 32])
        assert pool.next_port() == BASE + 33  # the primary port first, busy ones last


def _parent(allocation: dict[str, Any]) -> Any:
    from pytest_aiops import DiscoverySnapshot, HardConstraint

    return DiscoverySnapshot(
        session_id="parent",
        workspace_root="/ws",
        working_directory="/ws",
        hard_constraints=[HardConstraint("port-range", allocation)],
    )


def test_a_childs_request_is_the_spec_of_its_slice_of_the_parents_allocation() -> None:
    from pytest_aiops import build_child_resource_requests

    (request,) = build_child_resource_requests(_parent(_allocation().to_json()), 1, 2)
    child = PortSpec.from_options(request.options or {}, DEFAULTS)
    assert child == PortSpec(
        base_port=BASE + 48,
        block_size=16,
        block_count=1,
        primary_port_offset=0,  # the parent's primary port, clamped into the slice
        lock_directory="/locks",
        parent=(BASE + 32, BASE + 63),
        parent_lease_id=12,
        accept_time_wait=True,
    )
    assert dict(request.options or {}) == child.to_options()


def test_a_parent_allocation_field_that_cannot_be_read_is_a_child_split_error() -> None:
    from pytest_aiops import ChildSplitError, build_child_resource_requests

    with pytest.raises(ChildSplitError) as info:
        build_child_resource_requests(_parent({**_allocation().to_json(), "endPort": "x"}), 0, 2)
    assert str(info.value) == "Allocation field \"endPort\" must be an integer, not 'x'."
