"""Ordered provisioning with rollback, and child sessions split from a parent snapshot."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._errors import InvalidArgumentError, ProvisioningError, UnknownKindError
from .children import build_child_resource_requests, check_parent_lock_path
from .discovery import DiscoverySnapshot, HardConstraint
from .options import refuse_nul
from .registry import ProviderRegistry
from .session import ProvisionedResources, Releaser, release_in_reverse
from .types import ResourceLease, ResourceProvider, ResourceRequest

PROVISIONING_FAILED = "Resource provisioning failed: "

RequestLike = ResourceRequest | Mapping[str, Any]


class ResourceProvisioningOrchestrator:
    """Registry of providers by kind; provisions sessions from lists of requests.

    Provisioning goes in request order. If a provider raises, the leases already made are
    released in reverse and a :class:`ProvisioningError` is raised, chained to the
    original error (rollback errors are attached as notes, never hiding it).
    """

    def __init__(self, providers: Iterable[ResourceProvider] = ()) -> None:
        self._providers = ProviderRegistry(replaceable=False)
        self._lock = threading.Lock()
        for provider in providers:
            self.register_provider(provider)

    def register_provider(self, provider: ResourceProvider) -> None:
        """Add a provider; a second provider for the same kind is refused."""
        with self._lock:
            self._providers(provider)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The registered kinds, in registration order."""
        return self._providers.kinds

    def get_provider(self, kind: str) -> ResourceProvider | None:
        return self._providers.get(kind)

    def provision_session(
        self,
        *,
        session_id: str,
        resources: Sequence[RequestLike],
        workspace_root: str | os.PathLike[str],
    ) -> ProvisionedResources:
        """Provision ``resources`` in order for ``session_id``; all or nothing."""
        if not isinstance(session_id, str):
            raise InvalidArgumentError(f"session_id must be a str, not {session_id!r}")
        refuse_nul("workspace_root", os.fspath(workspace_root), "Argument")
        root = os.path.abspath(os.fspath(workspace_root))
        hard: list[HardConstraint] = []
        releases: list[Releaser] = []
        env: dict[str, str] = {}
        sections: list[str] = []
        metadata: dict[str, Any] = {}
        working_directory = root
        kind: str | None = None
        try:
            for raw in resources:
                request = (
                    raw if isinstance(raw, ResourceRequest) else ResourceRequest.from_dict(raw)
                )
                kind = request.kind
                provider = self._providers.get(kind)
                if provider is None:
                    known = ", ".join(sorted(self._providers.kinds)) or "none"
                    raise UnknownKindError(
                        f'No provider registered for resource kind "{kind}" (registered: {known}).'
                    )
                lease = provider.provision(
                    session_id=session_id, workspace_root=root, options=request.options or {}
                )
                if not isinstance(lease, ResourceLease):
                    lease = _coerce_lease(lease, kind)
                releases.append((lease.kind, lease.release))
                hard.append(HardConstraint(lease.kind, lease.hard))
                patch = lease.patch
                env.update({str(k): str(v) for k, v in patch.env.items()})
                sections.extend(patch.prompt_sections)
                metadata.update(patch.metadata)
                if patch.preferred_working_directory:
                    working_directory = os.path.abspath(patch.preferred_working_directory)
        except Exception as error:
            failures = release_in_reverse(releases)
            raised = ProvisioningError(
                f"{PROVISIONING_FAILED}{error}", session_id=session_id, kind=kind
            )
            if kind is not None:
                _add_note(raised, f"while provisioning {kind!r} for session {session_id!r}")
            for failed_kind, failure in failures:
                _add_note(raised, f"{ROLLBACK_FAILED}{failed_kind} also failed: {failure!r}")
            raise raised from error
        snapshot = DiscoverySnapshot(
            session_id=session_id,
            workspace_root=root,
            working_directory=working_directory,
            hard_constraints=hard,
            env=env,
            prompt_sections=sections,
            metadata=metadata,
        )
        return ProvisionedResources.from_snapshot(snapshot, releases)

    def provision_child_session(
        self,
        *,
        parent_snapshot: DiscoverySnapshot | Mapping[str, Any],
        child_session_id: str,
        child_index: int,
        child_count: int,
    ) -> ProvisionedResources:
        """Provision child ``child_index`` of ``child_count`` from a parent's snapshot.

        The child gets its slice of the parent's port range and a worktree under the
        parent's worktree (see :func:`build_child_resource_requests`).
        """
        snapshot = (
            parent_snapshot
            if isinstance(parent_snapshot, DiscoverySnapshot)
            else DiscoverySnapshot.from_dict(parent_snapshot)
        )
        try:
            requests = build_child_resource_requests(
                snapshot, child_index, child_count, child_session_id=child_session_id
            )
            check_parent_lock_path(snapshot)
        except Exception as error:
            raise ProvisioningError(
                f"{PROVISIONING_FAILED}{error}", session_id=child_session_id, kind=None
            ) from error
        return self.provision_session(
            session_id=child_session_id,
            resources=requests,
            workspace_root=snapshot.workspace_root,
        )


def _coerce_lease(value: object, kind: str) -> ResourceLease:
    """Accept a duck-typed lease (an object or mapping with kind/hard/release/soft)."""

    def get(key: str) -> Any:
        if isinstance(value, Mapping):
            return value.get(key)
        return getattr(value, key, None)

    release = get("release")
    hard = get("hard")
    if not callable(release) or not isinstance(hard, Mapping):
        raise InvalidArgumentError(
            f"provider for {kind!r} returned {value!r}, not a ResourceLease "
            "(needs `hard` mapping and callable `release`)"
        )
    return ResourceLease(str(get("kind") or kind), hard, release, get("soft"))


ROLLBACK_FAILED = "rollback of "


def rollback_notes(error: BaseException) -> list[str]:
    """The notes :meth:`ResourceProvisioningOrchestrator.provision_session` added on
    releases that failed during rollback, each as one line: a one-line error must keep them,
    they say what may have been left behind."""
    notes = getattr(error, "__notes__", None) or []
    return [" ".join(str(n).split()) for n in notes if str(n).startswith(ROLLBACK_FAILED)]


def _add_note(error: BaseException, note: str) -> None:
    """``BaseException.add_note`` on 3.11+; the same attribute by hand on 3.10."""
    notes = list(getattr(error, "__notes__", []))
    notes.append(note)
    setattr(error, "__notes__", notes)  # noqa: B010 - mypy targets 3.10, which lacks it
