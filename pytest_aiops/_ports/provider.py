"""The ``port-range`` provider: a block of TCP ports no other live lease or process uses.

Blocks are chosen as the reference does (preferred block = hash of the session id modulo
``blockCount``, then the next blocks in turn) but leased with kernel byte-range locks in a
machine-wide lock directory (see :mod:`pytest_aiops._ports.locks`) and probed before use.
A top-level lease takes the first *clean* block in that order (every port binds now);
``acceptTimeWait`` lets a caller that keeps busy ports back (the plugin's pool) take a block
whose busy ports are only in TIME_WAIT, and only when no block of the range is clean. The
contract is in the docs, "What a lease guarantees".
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._core.hashing import preferred_block
from .._core.options import (
    read_boolean,
    read_integer,
    read_string,
    resolve_path,
    warn_unknown,
)
from .._core.types import ResourceContextPatch, ResourceLease
from .._errors import AiopsWarning, LockError, OptionError, PortsExhaustedError
from .defaults import (
    DEFAULT_BASE_PORT,
    DEFAULT_BLOCK_COUNT,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_END_PORT,
    LOCK_DIR_CLI_OPTION,
    LOCK_DIR_ENV,
    LOCK_DIR_PLUGIN_OPTION,
    default_lock_directory,
    machine_root,
)
from .locks import (
    MAX_LEASE_ID,
    PORTS_FILE,
    RangeClaim,
    TopLevelScanner,
    claim_child,
    ensure_directory,
    ensure_shared_directory,
)
from .probe import busy_ports, ephemeral_range, only_in_time_wait, overlaps_ephemeral
from .records import LeaseRecord, clear_record, holders_of, read_records, reap_stale, write_record

# This module is _ports' interface: what other folders use of port leasing comes from here
# (the lease records too, for the CLI's status and gc and the plugin's "who holds the port").
__all__ = [
    "KIND",
    "LeaseRecord",
    "PortRangeProvider",
    "PortRangeProviderConfig",
    "create_port_range_provider",
    "default_lock_directory",
    "holders_of",
    "read_records",
    "reap_stale",
]

KIND = "port-range"
MAX_PORT = 65535


def _prepare_lock_directory(workspace_root: str, configured: str | None) -> str:
    """The lock directory for a request, created if needed (see :mod:`.locks`)."""
    if configured:
        return ensure_directory(resolve_path(workspace_root, configured))
    path = default_lock_directory()
    root = machine_root()
    if os.environ.get(LOCK_DIR_ENV, "").strip() or os.path.dirname(
        os.path.dirname(path)
    ) != os.path.normpath(root):
        return ensure_directory(path)
    return ensure_shared_directory(path, root)


@dataclass(frozen=True)
class PortRangeProviderConfig:
    """Defaults for ``port-range`` requests (each overridable by its camelCase option)."""

    base_port: int = DEFAULT_BASE_PORT
    block_size: int = DEFAULT_BLOCK_SIZE
    block_count: int = DEFAULT_BLOCK_COUNT
    primary_port_offset: int = 0
    lock_directory: str | None = None  # None: default_lock_directory()
    probe: bool = True  # skip blocks with ports some process already uses

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PortRangeProviderConfig:
        """Build from the reference's camelCase keys, validated like request options."""
        parsed = _parse(options, cls())
        return cls(
            base_port=parsed.base_port,
            block_size=parsed.block_size,
            block_count=parsed.block_count,
            primary_port_offset=parsed.primary_port_offset,
            lock_directory=parsed.lock_directory,
        )


@dataclass(frozen=True)
class _Parsed:
    base_port: int
    block_size: int
    block_count: int
    primary_port_offset: int
    lock_directory: str | None
    parent: tuple[int, int] | None
    parent_lease_id: int | None
    accept_time_wait: bool = False


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


def _parse(options: Mapping[str, Any], config: PortRangeProviderConfig) -> _Parsed:
    warn_unknown(options, KNOWN_OPTIONS, KIND)
    base_port = read_integer(options, "basePort", config.base_port, minimum=1)
    block_size = read_integer(options, "blockSize", config.block_size, minimum=1)
    block_count = read_integer(options, "blockCount", config.block_count, minimum=1)
    offset = read_integer(options, "primaryPortOffset", config.primary_port_offset, minimum=0)
    lock_directory: str | None = config.lock_directory
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
                f"a child slice {base_port}-{max_port} (blockCount={block_count}) must be one "
                f"block inside its parent range {parent_start}-{parent_end}.",
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
    return _Parsed(
        base_port,
        block_size,
        block_count,
        offset,
        lock_directory,
        parent,
        parent_lease_id,
        read_boolean(options, "acceptTimeWait", False),
    )


def _only_time_wait(busy: list[int], size: int) -> bool:
    """Whether a block of ``size`` ports whose ``busy`` ports are these may still be leased by
    a caller that accepts TIME_WAIT: every busy port only in TIME_WAIT (free again within
    about a minute; never a listener or a bound socket) and at least one port free now, so
    that the primary port binds. Where TIME_WAIT cannot be told apart (outside Linux) every
    busy port counts as held."""
    return len(busy) < size and only_in_time_wait(busy)


def _primary(start: int, end: int, offset: int, busy: list[int]) -> int:
    """The primary port: the first port at or after ``start + offset`` (wrapping round to
    ``start``) that is not busy, so ``primaryPort`` always binds at lease time."""
    taken = set(busy)
    first: int = start + offset
    order: list[int] = [*range(first, end + 1), *range(start, first)]
    # Every port busy: such a block is never leased (see _only_time_wait).
    return next((port for port in order if port not in taken), first)


def _warn_if_ephemeral(start: int, end: int, warned: set[tuple[int, int]]) -> None:
    if (start, end) in warned or not overlaps_ephemeral(start, end):
        return
    warned.add((start, end))  # once per provider and range, not on every lease
    low, high = ephemeral_range()
    warnings.warn(
        f"port range {start}-{end} overlaps the OS ephemeral port range {low}-{high}: the "
        "kernel may hand those ports to outgoing connections at any time; choose a basePort "
        f"and size that end below {low} (the default range is {DEFAULT_BASE_PORT}-"
        f"{DEFAULT_END_PORT})",
        AiopsWarning,
        stacklevel=4,
    )


class PortRangeProvider:
    """Leases port blocks; the guarantees are in the docs, "How port leasing works"."""

    kind = KIND

    def __init__(self, config: PortRangeProviderConfig | None = None) -> None:
        self.config = config or PortRangeProviderConfig()
        self._warned: set[tuple[int, int]] = set()
        self._warned_lock = threading.Lock()

    def provision(
        self, *, session_id: str, workspace_root: str, options: Mapping[str, Any]
    ) -> ResourceLease:
        parsed = _parse(options, self.config)
        lock_directory = _prepare_lock_directory(workspace_root, parsed.lock_directory)
        skipped: list[int] = []
        if parsed.parent is not None:
            start, claim, busy = self._claim_child(lock_directory, parsed)
            block_index = 0
        else:
            with self._warned_lock:
                _warn_if_ephemeral(
                    parsed.base_port,
                    parsed.base_port + parsed.block_size * parsed.block_count - 1,
                    self._warned,
                )
            block_index, start, claim, skipped, busy = self._claim_block(
                session_id, lock_directory, parsed
            )
        end = start + parsed.block_size - 1
        primary = _primary(start, end, parsed.primary_port_offset, busy)
        record: str | None = None
        try:
            record = write_record(
                lock_directory,
                session_id=session_id,
                start=start,
                end=end,
                role="child" if parsed.parent else "top-level",
                lease_id=claim.lease_id,
            )
        except LockError as error:
            # Records only inform (status, failure reports); the kernel lock is the lease.
            # A record name planted by someone else must not cost us the block.
            warnings.warn(
                f"port lease {start}-{end} holds, but its record could not be written "
                f"({error}); 'pytest-aiops status' will not list it",
                AiopsWarning,
                stacklevel=3,
            )
        except BaseException:
            claim.release()
            raise
        released = threading.Lock()

        def release() -> None:
            # Once only: a second call must not put aside the record of the range's next
            # lease. Record first, lock second: we still hold the range, so nobody else
            # writes that record meanwhile.
            if not released.acquire(blocking=False):
                return
            if record is not None:
                clear_record(record)
            claim.release()

        hard: dict[str, Any] = {
            "basePort": parsed.base_port,
            "blockSize": parsed.block_size,
            "blockCount": parsed.block_count,
            "blockIndex": block_index,
            "startPort": start,
            "endPort": end,
            "primaryPort": primary,
            "lockPath": os.path.join(lock_directory, PORTS_FILE),
            "leaseId": claim.lease_id,
        }
        if parsed.accept_time_wait:
            # Carried to children split from this lease (child slices may then hold
            # TIME_WAIT ports too); absent otherwise, as the reference's allocation is.
            hard["acceptTimeWait"] = True
        if skipped:
            hard["skippedBusyPorts"] = skipped
        if busy:
            hard["busyPorts"] = busy
        soft = ResourceContextPatch(
            env={
                "AGENT_PORT_RANGE_START": str(start),
                "AGENT_PORT_RANGE_END": str(end),
                "AGENT_PORT_PRIMARY": str(primary),
            },
            prompt_sections=[
                f"Assigned deterministic port range: {start}-{end}",
                f"Primary port: {primary}",
            ],
            metadata={
                "port_range_start": start,
                "port_range_end": end,
                "port_primary": primary,
                "port_block_index": block_index,
            },
        )
        return ResourceLease(KIND, hard, release, soft)

    def _claim_block(
        self, session_id: str, lock_directory: str, parsed: _Parsed
    ) -> tuple[int, int, RangeClaim, list[int], list[int]]:
        size, count = parsed.block_size, parsed.block_count
        first = preferred_block(session_id, count)
        skipped: list[int] = []
        held = 0
        dirty: list[int] = []  # blocks (indices) with busy ports, in the order tried
        scanner = TopLevelScanner(lock_directory)
        try:
            # First pass: the first clean block, the preferred one if it is clean.
            for step in range(count):
                index = (first + step) % count
                start = parsed.base_port + index * size
                end = start + size - 1
                if not scanner.try_block(start, end):
                    held += 1
                    continue
                # Probe only once the block is ours (exclusively: no child can join yet), so
                # two leasers never probe the same ports and busy ports are not someone
                # else's freshly bound servers.
                busy = busy_ports(start, end) if self.config.probe else []
                if not busy:
                    return index, start, scanner.finish(start, end), skipped, busy
                scanner.give_back(start, end)
                skipped.extend(busy)
                dirty.append(index)
            # Second pass, only for a caller that keeps busy ports back and only now that no
            # block is clean: the first block whose busy ports are all in TIME_WAIT (probed
            # again: things changed since). Never a block with a listener in it.
            for index in dirty if parsed.accept_time_wait else ():
                start = parsed.base_port + index * size
                end = start + size - 1
                if not scanner.try_block(start, end):
                    continue
                busy = busy_ports(start, end)
                if _only_time_wait(busy, size):
                    skipped = [port for port in skipped if not start <= port <= end]
                    return index, start, scanner.finish(start, end), skipped, busy
                scanner.give_back(start, end)
        except BaseException:
            scanner.close()
            raise
        scanner.close()
        unexplained = _unrecorded_blocks(lock_directory, parsed) if held else 0
        if unexplained:
            # Locks that no lease record explains: a process that is no pytest-aiops lease
            # (possibly another user, who can lock any byte of the shared ports.lock).
            raise PortsExhaustedError(
                f"No free deterministic port block is available: {unexplained} of {count} "
                f"blocks of {size} ports from {parsed.base_port} are locked by processes that "
                f"left no lease record (possibly another user locking {PORTS_FILE}) "
                f"[lock directory {lock_directory}]; set {LOCK_DIR_PLUGIN_OPTION} or "
                f"${LOCK_DIR_ENV} (CLI: {LOCK_DIR_CLI_OPTION}) to a directory of your own."
            )
        busy_kind = (
            "ports held by other processes (listeners, or every port in TIME_WAIT)"
            if parsed.accept_time_wait
            else "ports other processes use (listeners or TIME_WAIT)"
        )
        elsewhere = min(scanner.elsewhere, held)
        where = (
            f"; {elsewhere} by runs of this network namespace with another lock directory, "
            "which 'pytest-aiops status' does not list"
            if elsewhere
            else ""
        )
        raise PortsExhaustedError(
            f"No free deterministic port block is available: all {count} blocks of {size} "
            f"ports from {parsed.base_port} are leased ({held}{where}) or have {busy_kind} "
            f"({count - held}) [lock directory {lock_directory}]; raise blockCount, "
            "pick another basePort, or end the runs holding them (pytest-aiops status)."
        )

    def _claim_child(
        self, lock_directory: str, parsed: _Parsed
    ) -> tuple[int, RangeClaim, list[int]]:
        assert parsed.parent is not None
        start, end = parsed.base_port, parsed.base_port + parsed.block_size - 1
        claim = claim_child(
            lock_directory,
            start,
            end,
            parent=parsed.parent,
            parent_lease_id=parsed.parent_lease_id,
        )
        if claim is None:
            reason = (
                f"child port slice {start}-{end} of parent range "
                f"{parsed.parent[0]}-{parsed.parent[1]} is already held by another live child"
            )
            raise PortsExhaustedError(
                f"{reason} [lock directory {lock_directory}]; use another childIndex (a child "
                "session cannot itself be split: nested children are not supported)",
                reason=reason,
            )
        # A child cannot move out of its slice: a slice with busy ports is refused (the
        # caller takes another slice or its own block), except ports only in TIME_WAIT
        # when the parent lease accepted those (its acceptTimeWait is carried here).
        try:
            busy = busy_ports(start, end) if self.config.probe else []
            if busy and not (parsed.accept_time_wait and _only_time_wait(busy, parsed.block_size)):
                shown = ", ".join(map(str, busy[:5])) + (" ..." if len(busy) > 5 else "")
                reason = (
                    f"child port slice {start}-{end} of parent range "
                    f"{parsed.parent[0]}-{parsed.parent[1]} has {len(busy)} port(s) another "
                    f"process uses ({shown})"
                )
                raise PortsExhaustedError(
                    f"{reason} [lock directory {lock_directory}]; use another childIndex, or "
                    "lease a top-level block instead",
                    reason=reason,
                )
        except BaseException:
            claim.release()
            raise
        return start, claim, busy


def _unrecorded_blocks(lock_directory: str, parsed: _Parsed) -> int:
    """How many blocks are locked although no live lease record covers any of their ports
    (only computed once leasing has failed: it reads every record)."""
    from .locks import range_is_leased
    from .records import read_records

    try:
        live = [r for r in read_records(lock_directory) if r.holder_alive()]
    except (OSError, LockError):
        live = []
    count = 0
    for index in range(parsed.block_count):
        start = parsed.base_port + index * parsed.block_size
        end = start + parsed.block_size - 1
        if any(r.start_port <= end and start <= r.end_port for r in live):
            continue
        try:
            if range_is_leased(lock_directory, start, end):
                count += 1
        except (OSError, LockError):
            continue
    return count


def create_port_range_provider(
    config: PortRangeProviderConfig | Mapping[str, Any] | None = None,
) -> PortRangeProvider:
    """A ``port-range`` provider; ``config`` may use the reference's camelCase keys."""
    if isinstance(config, Mapping):
        config = PortRangeProviderConfig.from_options(config)
    return PortRangeProvider(config)
