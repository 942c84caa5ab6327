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
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .._core.hashing import preferred_block
from .._core.options import resolve_path
from .._core.ports import KIND, PortAllocation, PortSpec
from .._core.types import ResourceContextPatch, ResourceLease
from .._core.values import dataclass
from .._errors import AiopsWarning, LockError, PortsExhaustedError
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
    "PortAllocation",
    "PortLease",
    "PortRangeProvider",
    "PortRangeProviderConfig",
    "PortSpec",
    "create_port_range_provider",
    "default_lock_directory",
    "holders_of",
    "read_records",
    "reap_stale",
]


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
        spec = PortSpec.from_options(options, cls())
        return cls(
            base_port=spec.base_port,
            block_size=spec.block_size,
            block_count=spec.block_count,
            primary_port_offset=spec.primary_port_offset or 0,
            lock_directory=spec.lock_directory,
        )


class PortLease(NamedTuple):
    """What :meth:`PortRangeProvider.lease` returns: the allocation and how to give it back
    (once; later calls do nothing)."""

    allocation: PortAllocation
    release: Callable[[], None]


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
    first: int = start + offset
    if not busy:
        return first  # the usual case: a clean block
    taken = set(busy)
    order: list[int] = [*range(first, end + 1), *range(start, first)]
    # Every port busy: such a block is never leased (see _only_time_wait).
    return next((port for port in order if port not in taken), first)


def _warn_if_ephemeral(start: int, end: int, checked: set[tuple[int, int]]) -> None:
    if (start, end) in checked:
        return
    # Once per provider and range, not on every lease (the ephemeral range is read once
    # per process: a range that did not overlap it never will).
    checked.add((start, end))
    if not overlaps_ephemeral(start, end):
        return
    low, high = ephemeral_range()
    warnings.warn(
        f"port range {start}-{end} overlaps the OS ephemeral port range {low}-{high}: the "
        "kernel may hand those ports to outgoing connections at any time; choose a basePort "
        f"and size that end below {low} (the default range is {DEFAULT_BASE_PORT}-"
        f"{DEFAULT_END_PORT})",
        AiopsWarning,
        stacklevel=5,
    )


def _context(allocation: PortAllocation) -> ResourceContextPatch:
    """What a port lease adds to the session: the reference's variables, prompt lines and
    metadata."""
    start, end, primary = allocation.start_port, allocation.end_port, allocation.primary_port
    return ResourceContextPatch(
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
            "port_block_index": allocation.block_index,
        },
    )


class PortRangeProvider:
    """Leases port blocks; the guarantees are in the docs, "How port leasing works"."""

    kind = KIND

    def __init__(self, config: PortRangeProviderConfig | None = None) -> None:
        self.config = config or PortRangeProviderConfig()
        self._checked: set[tuple[int, int]] = set()  # ranges checked by _warn_if_ephemeral
        self._checked_lock = threading.Lock()

    def provision(
        self, *, session_id: str, workspace_root: str, options: Mapping[str, Any]
    ) -> ResourceLease:
        """The reference's entry point: :meth:`lease` of the request's options, as a
        :class:`~pytest_aiops.ResourceLease` (the allocation as camelCase JSON)."""
        spec = PortSpec.from_options(options, self.config)
        held = self._lease(spec, session_id=session_id, workspace_root=workspace_root)
        return ResourceLease(
            KIND, held.allocation.to_json(), held.release, _context(held.allocation)
        )

    def lease(self, spec: PortSpec, *, session_id: str, workspace_root: str) -> PortLease:
        """Lease one block of ``spec`` (its child slice, when it names a parent) in the lock
        directory, which a relative ``lock_directory`` is resolved against
        ``workspace_root`` for; ``session_id`` seeds the preferred block.

        ``spec`` is checked as a request's options are (:meth:`PortSpec.from_options`, the
        one validator): a spec built in code gets the same one-line
        :class:`~pytest_aiops.OptionError` as the options it stands for.
        """
        checked = PortSpec.from_options(spec.to_options(), self.config)
        return self._lease(checked, session_id=session_id, workspace_root=workspace_root)

    def _lease(self, spec: PortSpec, *, session_id: str, workspace_root: str) -> PortLease:
        """:meth:`lease` of a checked spec."""
        # None in a spec built in code: the config's (from_options fills both in).
        offset = spec.primary_port_offset
        offset = self.config.primary_port_offset if offset is None else offset
        configured = spec.lock_directory
        configured = self.config.lock_directory if configured is None else configured
        lock_directory = _prepare_lock_directory(workspace_root, configured)
        skipped: list[int] = []
        if spec.parent is not None:
            start, claim, busy = self._claim_child(lock_directory, spec)
            block_index = 0
        else:
            if (spec.base_port, spec.end_port) not in self._checked:
                with self._checked_lock:
                    _warn_if_ephemeral(spec.base_port, spec.end_port, self._checked)
            block_index, start, claim, skipped, busy = self._claim_block(
                session_id, lock_directory, spec
            )
        end = start + spec.block_size - 1
        primary = _primary(start, end, offset, busy)
        record: str | None = None
        try:
            record = write_record(
                lock_directory,
                session_id=session_id,
                start=start,
                end=end,
                role="child" if spec.parent else "top-level",
                lease_id=claim.lease_id,
            )
        except LockError as error:
            # Records only inform (status, failure reports); the kernel lock is the lease.
            # A record name planted by someone else must not cost us the block.
            warnings.warn(
                f"port lease {start}-{end} holds, but its record could not be written "
                f"({error}); 'pytest-aiops status' will not list it",
                AiopsWarning,
                stacklevel=4,
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

        allocation = PortAllocation(
            start_port=start,
            end_port=end,
            primary_port=primary,
            lock_path=claim.handle.path,  # <lock_directory>/ports.lock
            lease_id=claim.lease_id,
            base_port=spec.base_port,
            block_size=spec.block_size,
            block_count=spec.block_count,
            block_index=block_index,
            accept_time_wait=spec.accept_time_wait,
            skipped_busy_ports=tuple(skipped),
            busy_ports=tuple(busy),
        )
        return PortLease(allocation, release)

    def _claim_block(
        self, session_id: str, lock_directory: str, spec: PortSpec
    ) -> tuple[int, int, RangeClaim, list[int], list[int]]:
        size, count = spec.block_size, spec.block_count
        first = preferred_block(session_id, count)
        skipped: list[int] = []
        held = 0
        dirty: list[int] = []  # blocks (indices) with busy ports, in the order tried
        scanner = TopLevelScanner(lock_directory)
        try:
            # First pass: the first clean block, the preferred one if it is clean.
            for step in range(count):
                index = (first + step) % count
                start, end = spec.block(index)
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
            for index in dirty if spec.accept_time_wait else ():
                start, end = spec.block(index)
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
        unexplained = _unrecorded_blocks(lock_directory, spec) if held else 0
        if unexplained:
            # Locks that no lease record explains: a process that is no pytest-aiops lease
            # (possibly another user, who can lock any byte of the shared ports.lock).
            raise PortsExhaustedError(
                f"No free deterministic port block is available: {unexplained} of {count} "
                f"blocks of {size} ports from {spec.base_port} are locked by processes that "
                f"left no lease record (possibly another user locking {PORTS_FILE}) "
                f"[lock directory {lock_directory}]; set {LOCK_DIR_PLUGIN_OPTION} or "
                f"${LOCK_DIR_ENV} (CLI: {LOCK_DIR_CLI_OPTION}) to a directory of your own."
            )
        busy_kind = (
            "ports held by other processes (listeners, or every port in TIME_WAIT)"
            if spec.accept_time_wait
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
            f"ports from {spec.base_port} are leased ({held}{where}) or have {busy_kind} "
            f"({count - held}) [lock directory {lock_directory}]; raise blockCount, "
            "pick another basePort, or end the runs holding them (pytest-aiops status)."
        )

    def _claim_child(
        self, lock_directory: str, spec: PortSpec
    ) -> tuple[int, RangeClaim, list[int]]:
        assert spec.parent is not None
        start, end = spec.base_port, spec.base_port + spec.block_size - 1
        claim = claim_child(
            lock_directory,
            start,
            end,
            parent=spec.parent,
            parent_lease_id=spec.parent_lease_id,
        )
        if claim is None:
            reason = (
                f"child port slice {start}-{end} of parent range "
                f"{spec.parent[0]}-{spec.parent[1]} is already held by another live child"
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
            if busy and not (spec.accept_time_wait and _only_time_wait(busy, spec.block_size)):
                shown = ", ".join(map(str, busy[:5])) + (" ..." if len(busy) > 5 else "")
                reason = (
                    f"child port slice {start}-{end} of parent range "
                    f"{spec.parent[0]}-{spec.parent[1]} has {len(busy)} port(s) another "
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


def _unrecorded_blocks(lock_directory: str, spec: PortSpec) -> int:
    """How many blocks are locked although no live lease record covers any of their ports
    (only computed once leasing has failed: it reads every record)."""
    from .locks import range_is_leased
    from .records import read_records

    try:
        live = [r for r in read_records(lock_directory) if r.holder_alive()]
    except (OSError, LockError):
        live = []
    count = 0
    for index in range(spec.block_count):
        start, end = spec.block(index)
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
