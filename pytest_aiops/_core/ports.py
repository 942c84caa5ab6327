"""The ``port-range`` request and allocation as typed values, the reference's JSON at the edges.

:class:`PortSpec` is what a ``port-range`` request asks for; :meth:`PortSpec.from_options`
reads the reference's camelCase options once, validating every value and limit with one-line
errors that name the option as written; :meth:`PortSpec.to_options` writes them back.
:class:`PortAllocation` is what a lease holds; :meth:`PortAllocation.to_json` is the lease's
``hard`` allocation (the discovery snapshot's), :meth:`PortAllocation.from_json` its one
parse. They live in the core because the child split (:mod:`.children`) reads a parent's
allocation and writes a child's request; the provider (``_ports/provider.py``) leases them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from .._errors import InvalidArgumentError, OptionError
from .options import read_boolean, read_integer, read_string, warn_unknown
from .values import dataclass

KIND = "port-range"
MAX_PORT = 65535
#: Lease ids are byte offsets in ports.lock past 2**48; keep them clear of off_t's limit.
MAX_LEASE_ID = 2**47

#: The options a ``port-range`` request may carry (others are warned about and ignored).
KNOWN_OPTIONS = frozenset(
    {
        "basePort",
        "blockSize",
        "blockCount",
        "primaryPortOffset",
        "lockDirectory",
        "parentStartPort",
        "parentEndPort",
        "parentLeaseId",
        "acceptTimeWait",
    }
)


class PortDefaults(Protocol):
    """What a request leaves out: the provider config's values (``PortRangeProviderConfig``)."""

    @property
    def base_port(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def block_count(self) -> int: ...
    @property
    def primary_port_offset(self) -> int: ...
    @property
    def lock_directory(self) -> str | None: ...


@dataclass(frozen=True)
class PortSpec:
    """A ``port-range`` request: ``block_count`` blocks of ``block_size`` ports from
    ``base_port``, one of which is leased.

    ``primary_port_offset`` and ``lock_directory`` may be ``None``: the provider's default
    (its config's, else the machine-wide lock directory). ``parent`` (``parentStartPort``,
    ``parentEndPort``) makes it a child slice of that live parent range, tied to the parent
    lease ``parent_lease_id`` when known. ``accept_time_wait`` lets a caller that keeps busy
    ports back take a block whose busy ports are only in TIME_WAIT.

    :meth:`from_options` is the one validator; a provider's ``lease()`` checks a spec built
    in code through it (``to_options`` and back).
    """

    base_port: int
    block_size: int
    block_count: int
    primary_port_offset: int | None = None
    lock_directory: str | None = None
    parent: tuple[int, int] | None = None
    parent_lease_id: int | None = None
    accept_time_wait: bool = False

    @property
    def end_port(self) -> int:
        """The last port of the last block."""
        return self.base_port + self.block_size * self.block_count - 1

    def block(self, index: int) -> tuple[int, int]:
        """``(start, end)`` of block ``index``, inclusive."""
        start = self.base_port + index * self.block_size
        return start, start + self.block_size - 1

    @classmethod
    def from_options(cls, options: Mapping[str, Any], defaults: PortDefaults) -> PortSpec:
        """Read a request's camelCase options; absent ones are ``defaults``' values.

        Raises :class:`~pytest_aiops.OptionError` naming the option; unknown keys warn (the
        reference ignores them).
        """
        warn_unknown(options, KNOWN_OPTIONS, KIND)
        base_port = read_integer(options, "basePort", defaults.base_port, minimum=1)
        block_size = read_integer(options, "blockSize", defaults.block_size, minimum=1)
        block_count = read_integer(options, "blockCount", defaults.block_count, minimum=1)
        offset = read_integer(options, "primaryPortOffset", defaults.primary_port_offset, minimum=0)
        lock_directory = defaults.lock_directory
        if "lockDirectory" in options:
            lock_directory = read_string(options, "lockDirectory", "")
        if offset >= block_size:
            raise OptionError(
                "primaryPortOffset",
                f"primaryPortOffset must be smaller than blockSize ({offset} >= {block_size}).",
            )
        max_port = base_port + block_size * block_count - 1
        if max_port > MAX_PORT:
            raise OptionError(
                "basePort",
                f"Port range exceeds {MAX_PORT} (basePort={base_port}, blockSize={block_size}, "
                f"blockCount={block_count}); lower basePort, blockSize or blockCount.",
            )
        parent: tuple[int, int] | None = None
        if "parentStartPort" in options or "parentEndPort" in options:
            parent_start = read_integer(options, "parentStartPort", 0, minimum=1)
            parent_end = read_integer(options, "parentEndPort", 0, minimum=1)
            if (
                block_count != 1
                or parent_end > MAX_PORT
                or not parent_start <= base_port <= max_port <= parent_end
            ):
                raise OptionError(
                    "parentStartPort",
                    f"a child slice {base_port}-{max_port} (blockCount={block_count}) must be "
                    f"one block inside its parent range {parent_start}-{parent_end}.",
                )
            parent = (parent_start, parent_end)
        parent_lease_id: int | None = None
        if options.get("parentLeaseId") is not None:
            parent_lease_id = read_integer(options, "parentLeaseId", 0, minimum=0)
            if parent_lease_id >= MAX_LEASE_ID:
                raise OptionError(
                    "parentLeaseId",
                    f'Option "parentLeaseId" must be a lease id below {MAX_LEASE_ID}, '
                    f"not {parent_lease_id}.",
                )
        return cls(
            base_port,
            block_size,
            block_count,
            offset,
            lock_directory,
            parent,
            parent_lease_id,
            read_boolean(options, "acceptTimeWait", False),
        )

    def to_options(self) -> dict[str, Any]:
        """The reference's camelCase options (``None`` fields and a false
        ``acceptTimeWait`` left out: the provider's defaults)."""
        options: dict[str, Any] = {
            "basePort": self.base_port,
            "blockSize": self.block_size,
            "blockCount": self.block_count,
        }
        if self.primary_port_offset is not None:
            options["primaryPortOffset"] = self.primary_port_offset
        if self.lock_directory is not None:
            options["lockDirectory"] = self.lock_directory
        if self.parent is not None:
            options["parentStartPort"], options["parentEndPort"] = self.parent
        if self.accept_time_wait:
            options["acceptTimeWait"] = True
        if self.parent_lease_id is not None:
            options["parentLeaseId"] = self.parent_lease_id
        return options


def _integer(allocation: Mapping[str, Any], key: str) -> int:
    value = allocation.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f'Allocation field "{key}" must be an integer, not {value!r}.')
    return value


def _optional_integer(allocation: Mapping[str, Any], key: str) -> int | None:
    """A field the reference does not read: ``None`` when absent or not an integer."""
    try:
        return None if allocation.get(key) is None else _integer(allocation, key)
    except InvalidArgumentError:
        return None


def _ports(allocation: Mapping[str, Any], key: str) -> tuple[int, ...]:
    """A list of ports the reference does not read: ``()`` unless a list of integers."""
    value = allocation.get(key) or ()
    if not isinstance(value, (list, tuple)):
        return ()
    try:
        return tuple(_integer({key: port}, key) for port in value)
    except InvalidArgumentError:
        return ()


@dataclass(frozen=True)
class PortAllocation:
    """A ``port-range`` lease: ports ``start_port`` to ``end_port`` (inclusive), locked in
    ``lock_path`` (the lock directory's ``ports.lock``) as lease ``lease_id``.

    ``primary_port`` bound when the lease was taken. ``busy_ports`` were busy then (only in
    TIME_WAIT, when ``accept_time_wait`` let the lease take such a block, which child slices
    inherit); ``skipped_busy_ports`` are the busy ports of blocks passed over. The
    ``base_port`` / ``block_size`` / ``block_count`` / ``block_index`` of the request are
    ``None`` in an allocation written without them (a hand-made parent snapshot).
    """

    start_port: int
    end_port: int
    primary_port: int
    lock_path: str
    lease_id: int | None = None
    base_port: int | None = None
    block_size: int | None = None
    block_count: int | None = None
    block_index: int | None = None
    accept_time_wait: bool = False
    skipped_busy_ports: tuple[int, ...] = ()
    busy_ports: tuple[int, ...] = ()

    @property
    def lock_directory(self) -> str:
        """The lock directory the lease is held in (where children lease their slices)."""
        return os.path.dirname(self.lock_path)

    def to_json(self) -> dict[str, Any]:
        """The reference's allocation (camelCase), plus ``leaseId`` and the busy ports."""
        allocation: dict[str, Any] = {
            "basePort": self.base_port,
            "blockSize": self.block_size,
            "blockCount": self.block_count,
            "blockIndex": self.block_index,
            "startPort": self.start_port,
            "endPort": self.end_port,
            "primaryPort": self.primary_port,
            "lockPath": self.lock_path,
            "leaseId": self.lease_id,
        }
        if None in allocation.values():  # an allocation written without some of them
            allocation = {key: value for key, value in allocation.items() if value is not None}
        if self.accept_time_wait:
            # Carried to children split from this lease (child slices may then hold
            # TIME_WAIT ports too); absent otherwise, as the reference's allocation is.
            allocation["acceptTimeWait"] = True
        if self.skipped_busy_ports:
            allocation["skippedBusyPorts"] = list(self.skipped_busy_ports)
        if self.busy_ports:
            allocation["busyPorts"] = list(self.busy_ports)
        return allocation

    @classmethod
    def from_json(cls, allocation: Mapping[str, Any]) -> PortAllocation:
        """Read a ``port-range`` allocation (a lease's ``hard``, or a snapshot's).

        ``startPort``, ``endPort``, ``primaryPort`` and ``lockPath`` are required: the
        reference writes them and its child split reads them. The other fields are this
        project's additions, read when well-formed and otherwise left out (``None``, ``()``),
        as the reference's allocations (and a replacement provider's) may not have them. Raises
        :class:`~pytest_aiops.InvalidArgumentError` naming the field.
        """
        start_port = _integer(allocation, "startPort")
        end_port = _integer(allocation, "endPort")
        primary_port = _integer(allocation, "primaryPort")
        lock_path = allocation.get("lockPath")
        if not isinstance(lock_path, str) or not lock_path.strip():
            raise InvalidArgumentError('Allocation field "lockPath" must be a non-empty string.')
        lease_id = allocation.get("leaseId")
        if isinstance(lease_id, bool) or not isinstance(lease_id, int):
            lease_id = None
        return cls(
            start_port=start_port,
            end_port=end_port,
            primary_port=primary_port,
            lock_path=lock_path,
            lease_id=lease_id,
            base_port=_optional_integer(allocation, "basePort"),
            block_size=_optional_integer(allocation, "blockSize"),
            block_count=_optional_integer(allocation, "blockCount"),
            block_index=_optional_integer(allocation, "blockIndex"),
            accept_time_wait=allocation.get("acceptTimeWait") is True,
            skipped_busy_ports=_ports(allocation, "skippedBusyPorts"),
            busy_ports=_ports(allocation, "busyPorts"),
        )
