"""Split a parent session's resources into one child's requests (the reference's arithmetic).

A parent port range of ``size`` ports is cut into ``child_count`` slices of
``size // child_count`` ports; the last child also takes the remainder. A child's primary
port is the parent's primary clamped into the child's slice. A child worktree lives under
the parent's, in ``.ai_ops/child-worktrees/<scoped parent session name>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._errors import ChildSplitError
from .discovery import DiscoverySnapshot
from .hashing import build_scoped_name
from .types import ResourceRequest

CHILD_WORKTREES_DIR = os.path.join(".ai_ops", "child-worktrees")


def _int_field(allocation: Mapping[str, Any], key: str) -> int:
    value = allocation.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChildSplitError(f'Allocation field "{key}" must be an integer, not {value!r}.')
    return value


def _str_field(allocation: Mapping[str, Any], key: str) -> str:
    value = allocation.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ChildSplitError(f'Allocation field "{key}" must be a non-empty string.')
    return value


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


def _check_parent_worktree(snapshot: DiscoverySnapshot, git: Mapping[str, Any]) -> str:
    """The parent's ``worktreePath``, if child roots under it stay out of the user's checkout.

    Children get ``<worktreePath>/.ai_ops/child-worktrees/...``: a relative path (resolved
    against the user's repository) or the user's repository itself would put ``.ai_ops/``
    into the user's checkout. Refused, before anything is created.
    """
    path = _str_field(git, "worktreePath")
    if not os.path.isabs(path):
        raise ChildSplitError(
            f'Allocation field "worktreePath" of the parent snapshot must be an absolute '
            f"path, not {path!r}: child worktrees would be created relative to the user's "
            "repository; pass the snapshot the parent session wrote"
        )
    user_checkouts = [git.get("repoRoot"), snapshot.workspace_root]
    for checkout in user_checkouts:
        if isinstance(checkout, str) and checkout and _same_path(path, checkout):
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
    ports = snapshot.allocation("port-range")
    if ports is None:
        return
    lock_path = _str_field(ports, "lockPath")
    directory = os.path.dirname(lock_path)
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
    git = parent_snapshot.allocation("git-worktree")
    if git is not None:
        parent_worktree = _check_parent_worktree(parent_snapshot, git)
        base_ref = git.get("baseRef")
        if not isinstance(base_ref, str) or not base_ref.strip():
            base_ref = "HEAD"
        target = git.get("targetPath")
        target = target.strip() if isinstance(target, str) else ""
        options: dict[str, Any] = {
            "rootDirectory": os.path.normpath(
                os.path.join(
                    parent_worktree,
                    CHILD_WORKTREES_DIR,
                    build_scoped_name(parent_snapshot.session_id),
                )
            ),
            "baseRef": base_ref,
        }
        if target:
            options["targetPath"] = target
        requests.append(ResourceRequest("git-worktree", options))
    ports = parent_snapshot.allocation("port-range")
    if ports is not None:
        parent_start = _int_field(ports, "startPort")
        parent_end = _int_field(ports, "endPort")
        parent_primary = _int_field(ports, "primaryPort")
        lock_directory = os.path.dirname(_str_field(ports, "lockPath"))
        start, end, primary = child_port_slice(
            parent_start, parent_end, parent_primary, child_index, child_count
        )
        port_options: dict[str, Any] = {
            "basePort": start,
            "blockSize": end - start + 1,
            "blockCount": 1,
            "primaryPortOffset": primary - start,
            "lockDirectory": lock_directory,
            "parentStartPort": parent_start,
            "parentEndPort": parent_end,
        }
        if ports.get("acceptTimeWait") is True:
            # The parent's caller keeps busy ports back: its children's slices may hold
            # ports in TIME_WAIT too (never a listener).
            port_options["acceptTimeWait"] = True
        lease_id = ports.get("leaseId")
        if isinstance(lease_id, int) and not isinstance(lease_id, bool):
            # Ties the child to this very parent lease, not just to whoever holds its range.
            port_options["parentLeaseId"] = lease_id
        requests.append(ResourceRequest("port-range", port_options))
    return requests
