"""Split a parent session's resources into one child's requests (the reference's arithmetic).

A parent port range of ``size`` ports is cut into ``child_count`` slices of
``size // child_count`` ports; the last child also takes the remainder. A child's primary
port is the parent's primary clamped into the child's slice. A child worktree lives under
the parent's, in ``.ai_ops/child-worktrees/<scoped parent session name>``.
"""

from __future__ import annotations

import os
from typing import TypeVar

from .._errors import ChildSplitError, InvalidArgumentError
from .discovery import DiscoverySnapshot
from .hashing import build_scoped_name
from .ports import PortAllocation, PortSpec
from .types import ResourceRequest
from .worktrees import WorktreeAllocation, WorktreeSpec

CHILD_WORKTREES_DIR = os.path.join(".ai_ops", "child-worktrees")


_Allocation = TypeVar("_Allocation", PortAllocation, WorktreeAllocation)


def _parent_allocation(
    snapshot: DiscoverySnapshot, kind: str, typed: type[_Allocation]
) -> _Allocation | None:
    """The parent's allocation of ``kind``, read into its typed form (``None``: no lease of
    that kind); a field it cannot read is a :class:`ChildSplitError` naming it."""
    allocation = snapshot.allocation(kind)
    try:
        return None if allocation is None else typed.from_json(allocation)
    except InvalidArgumentError as error:
        raise ChildSplitError(str(error)) from error


def child_port_slice(
    parent_start: int, parent_end: int, parent_primary: int, child_index: int, child_count: int
) -> tuple[int, int, int]:
    """``(start, end, primary)`` of child ``child_index`` of ``child_count``."""
    _check_index(child_index, child_count)
    size = parent_end - parent_start + 1
    per_child = size // child_count
    if per_child < 1:
        raise ChildSplitError(
            f"Cannot suballocate {child_count} child port blocks from parent range "
            f"{parent_start}-{parent_end}."
        )
    start = parent_start + per_child * child_index
    end = parent_end if child_index == child_count - 1 else start + per_child - 1
    primary = min(max(parent_primary, start), end)
    return start, end, primary


def _check_index(child_index: int, child_count: int) -> None:
    if isinstance(child_count, bool) or not isinstance(child_count, int) or child_count < 1:
        raise ChildSplitError(f"childCount must be a positive integer, not {child_count!r}.")
    if (
        isinstance(child_index, bool)
        or not isinstance(child_index, int)
        or not 0 <= child_index < child_count
    ):
        raise ChildSplitError(
            f"childIndex must be an integer in [0, childCount), not {child_index!r} "
            f"(childCount={child_count})."
        )


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _check_parent_worktree(snapshot: DiscoverySnapshot, git: WorktreeAllocation) -> str:
    """The parent's ``worktreePath``, if child roots under it stay out of the user's checkout.

    Children get ``<worktreePath>/.ai_ops/child-worktrees/...``: a relative path (resolved
    against the user's repository) or the user's repository itself would put ``.ai_ops/``
    into the user's checkout. Refused, before anything is created.
    """
    path = git.worktree_path
    if not os.path.isabs(path):
        raise ChildSplitError(
            f'Allocation field "worktreePath" of the parent snapshot must be an absolute '
            f"path, not {path!r}: child worktrees would be created relative to the user's "
            "repository; pass the snapshot the parent session wrote"
        )
    for checkout in (git.repo_root, snapshot.workspace_root):
        if checkout and _same_path(path, checkout):
            raise ChildSplitError(
                f'Allocation field "worktreePath" of the parent snapshot is the user\'s '
                f"checkout {path!r}, not a worktree of the parent session: child worktrees "
                f"would be created inside it ({CHILD_WORKTREES_DIR}); pass the snapshot of "
                "a session that holds a git-worktree lease"
            )
    return path


def check_parent_lock_path(snapshot: DiscoverySnapshot) -> None:
    """Refuse a parent ``lockPath`` whose directory does not exist (or that is relative).

    The parent holds its lease there; a fresh directory would lease the child's slice with
    nobody to share it with (a stale snapshot, or one from another machine). Checked by
    :meth:`~.orchestrator.ResourceProvisioningOrchestrator.provision_child_session`
    before anything is provisioned; :func:`build_child_resource_requests` itself stays the
    reference's pure arithmetic.
    """
    ports = _parent_allocation(snapshot, "port-range", PortAllocation)
    if ports is None:
        return
    lock_path, directory = ports.lock_path, ports.lock_directory
    if not os.path.isabs(lock_path) or not os.path.isdir(directory):
        why = "is not absolute" if not os.path.isabs(lock_path) else "is in no directory"
        raise ChildSplitError(
            f'Allocation field "lockPath" of the parent snapshot {why}: {lock_path!r} '
            f"({directory or '.'} does not exist), so the parent's lease cannot be held "
            "there; pass the snapshot of a live parent session on this machine"
        )


def build_child_resource_requests(
    parent_snapshot: DiscoverySnapshot,
    child_index: int,
    child_count: int,
    *,
    child_session_id: str | None = None,
) -> list[ResourceRequest]:
    """The requests that give child ``child_index`` its share of the parent's resources.

    The port-range request carries the reference's options plus ``parentStartPort`` /
    ``parentEndPort`` and, when the parent lease has one, ``parentLeaseId`` (all ignored by
    the reference) so the provider leases the slice as a child of that live parent lease
    rather than as a top-level block, and ``acceptTimeWait`` when the parent lease had it.
    ``child_session_id`` is accepted as the reference's
    input carries it (``childSessionId``); like the reference, the requests do not depend
    on it. A parent ``worktreePath`` that is relative or the user's checkout is refused
    (:class:`ChildSplitError`); see also :func:`check_parent_lock_path`.
    """
    _check_index(child_index, child_count)
    if child_session_id is not None and not isinstance(child_session_id, str):
        raise ChildSplitError(f"childSessionId must be a string, not {child_session_id!r}.")
    requests: list[ResourceRequest] = []
    git = _parent_allocation(parent_snapshot, "git-worktree", WorktreeAllocation)
    if git is not None:
        parent_worktree = _check_parent_worktree(parent_snapshot, git)
        root = os.path.join(
            parent_worktree, CHILD_WORKTREES_DIR, build_scoped_name(parent_snapshot.session_id)
        )
        child_worktree = WorktreeSpec(
            root_directory=os.path.normpath(root),
            base_ref=git.base_ref,
            target_path=(git.target_path or "").strip() or None,
        )
        requests.append(ResourceRequest("git-worktree", child_worktree.to_options()))
    ports = _parent_allocation(parent_snapshot, "port-range", PortAllocation)
    if ports is not None:
        parent = (ports.start_port, ports.end_port)
        start, end, primary = child_port_slice(
            *parent, ports.primary_port, child_index, child_count
        )
        child_ports = PortSpec(
            base_port=start,
            block_size=end - start + 1,
            block_count=1,
            primary_port_offset=primary - start,
            lock_directory=ports.lock_directory,
            parent=parent,
            # Ties the child to this very parent lease, not just to whoever holds its range.
            parent_lease_id=ports.lease_id,
            # The parent's caller keeps busy ports back: its children's slices may hold
            # ports in TIME_WAIT too (never a listener).
            accept_time_wait=ports.accept_time_wait,
        )
        requests.append(ResourceRequest("port-range", child_ports.to_options()))
    return requests
