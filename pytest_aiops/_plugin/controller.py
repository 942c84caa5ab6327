"""The xdist controller's side: the parent port lease, slice indices, and the workers' reports.

Registered by :mod:`pytest_aiops.plugin` only when pytest-xdist is active and this process is
the controller, and only through xdist's documented hooks (``pytest_configure_node`` puts
data into ``node.workerinput``; ``pytest_testnodedown`` sees a worker finish or die). Slice
indices are tracked here, never parsed from ``gwN``: a worker replacing a crashed one gets a
new id and the lowest free index, which the dead worker no longer holds (its kernel locks died
with it). What every run reads at configure is :mod:`.xdist`.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from .xdist import WORKERINPUT_KEY

if TYPE_CHECKING:
    from .._core.ports import PortAllocation
    from .._core.registry import ProviderRegistry
    from .._core.session import ProvisionedResources
    from .settings import Settings


class XdistController:
    """Controller-side hooks; one instance per run, registered as ``aiops-xdist-controller``."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: ProviderRegistry,
        worker_count: int,
        session_id: str,
        workspace_root: str,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.worker_count = worker_count
        self.session_id = session_id
        self.workspace_root = workspace_root
        self.parent: ProvisionedResources | None = None
        self._free = list(range(worker_count))
        self._assigned: dict[str, int] = {}
        self.summaries: list[dict[str, Any]] = []
        #: Workers that died: (gateway id, the other host it ran on or None).
        self.crashed: list[tuple[str, str | None]] = []
        #: The run's snapshot directory (working state), shared by every worker.
        self.snapshot_run: Any = None
        #: Why the controller could not make it (each worker then snapshots for itself).
        self.snapshot_problem: str | None = None

    def start(self) -> None:
        """Lease the parent range (ports only: this never runs git).

        Warnings (an :class:`~pytest_aiops.AiopsWarning` for a range in the OS ephemeral
        range) are the caller's to route: the plugin re-issues them as config-time warnings.
        The caller has checked that the range fits (``Settings.check_ports_fit``).
        """
        from .._errors import AiopsError, AiopsWarning

        if self.settings.working_state:
            from .._worktrees.provider import SnapshotRun

            try:
                # A directory and a lock, no git: the first worker that collected a test
                # using a worktree takes the snapshot in it, under a lock, for all of them.
                self.snapshot_run = SnapshotRun.create(self.settings.worktree_root)
            except (AiopsError, OSError) as error:
                # No warning here: this runs for every -n run, ports-only ones and projects
                # outside git included, where it would fail a `filterwarnings = error` suite
                # for nothing. Each worker then snapshots for itself (the same state unless
                # the checkout changes during collection); the reason is kept for the record.
                self.snapshot_problem = f"{error}"
        if not self.worker_count:
            return  # every worker runs through another gateway: each leases on its host
        size = self.settings.ports_per_worker * self.worker_count
        try:
            self.parent = self.registry.orchestrator().provision_session(
                session_id=self.session_id,
                resources=[self.settings.port_request(self.worker_count)],
                workspace_root=self.workspace_root,
            )
        except AiopsError as error:
            # The machine's range is full or unusable (another user may lock every port of
            # the shared lock file): a suite that never asks for a port must not fail for
            # it. Go on without a parent: each worker leases its own block on first use,
            # and only tests that request a port fixture fail, with the provider's reason.
            self.parent = None
            warnings.warn(
                f"pytest-aiops could not lease {size} ports for {self.worker_count} workers "
                f"({' '.join(str(error).split())}); the run goes on and each worker leases "
                "its own ports when a test asks for them",
                AiopsWarning,
                stacklevel=2,
            )

    def reap_workers_records(self) -> None:
        """Remove the port records this run's dead workers left in the parent range.

        A worker ends without its teardown when it crashes, and under pytest-xdist < 3.6
        also when interrupted: its tests may run off the main thread there (an execnet race),
        where no Ctrl-C or SIGTERM reaches them, and execnet ends the process instead. Its
        kernel locks died with it, so its ports are free; only its record would stay, stale,
        until the slice is leased again. Only dead child records inside the range this run
        holds are touched: this run's, or an earlier crashed run's in the same range.
        """
        parent = self._parent_allocation()
        if parent is None:
            return
        from .._errors import AiopsError
        from .._ports.provider import reap_stale

        # On failure they stay for a later lease of the slice or `pytest-aiops status --reap`.
        with contextlib.suppress(AiopsError, OSError):
            reap_stale(parent.lock_directory, children_of=(parent.start_port, parent.end_port))

    def stop(self) -> None:
        if self.parent is not None:
            self.reap_workers_records()  # the workers are down: xdist's sessionfinish ended them
            self.parent.release()
        if self.snapshot_run is not None:
            self.snapshot_run.close()

    def _parent_allocation(self) -> PortAllocation | None:
        allocation = self.parent.allocation("port-range") if self.parent else None
        if allocation is None:
            return None
        from .._core.ports import PortAllocation  # not at start-up: only with a parent

        return PortAllocation.from_json(allocation)

    @property
    def parent_range(self) -> tuple[int, int] | None:
        parent = self._parent_allocation()
        return None if parent is None else (parent.start_port, parent.end_port)

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        """Give the new worker the parent snapshot and the lowest free slice index."""
        gateway_id = str(node.gateway.id)
        from .remote import is_local_spec

        # Only a worker on this host can join locks in this host's lock directory.
        local = is_local_spec(node.gateway.spec)
        data: dict[str, Any] = {"count": self.worker_count, "index": None, "parent": None}
        if local and self.snapshot_run is not None:
            data["snapshot"] = self.snapshot_run.path
        if local and self.parent is not None and self._free:
            index = min(self._free)
            self._free.remove(index)
            self._assigned[gateway_id] = index
            data["index"] = index
            # Other unassigned slices, tried if ours is still held (a crashed predecessor's
            # orphan): the kernel lock, not this list, is what keeps two holders apart.
            data["spares"] = sorted(self._free)
            # As JSON text: execnet carries only UTF-8 strings, and to_json escapes a
            # non-UTF-8 path (a lock directory under such a name) that a dict would carry raw.
            data["parent"] = self.parent.to_discovery_snapshot().to_json()
        node.workerinput.setdefault(WORKERINPUT_KEY, {}).update(data)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Free the worker's index (its locks are gone or going) and keep its report."""
        index = self._assigned.pop(str(node.gateway.id), None)
        if index is not None:
            self._free.append(index)
        sent = node.workerinput.get(WORKERINPUT_KEY) or {}
        host = str(sent["host"]) if sent.get("remote") else None
        if error is not None:
            self.crashed.append((str(node.gateway.id), host))
            if host is None:
                from .._worktrees.roots import reclaim_dead_runs

                # Its worktrees stay registered in the user's repository until reclaimed: now,
                # not at the end of the run (only what no live process holds is touched). On
                # another host they are out of reach: crash_lines() says so.
                reclaim_dead_runs(
                    self.settings.repo or self.workspace_root, self.settings.worktree_root
                )
                self.reap_workers_records()
        output = getattr(node, "workeroutput", None) or {}
        summary = output.get(WORKERINPUT_KEY)
        if isinstance(summary, dict):
            self.summaries.append(summary)

    def crash_lines(self) -> list[str]:
        """One line per worker that died on another host: what it may have left there.

        Its port leases died with its process (kernel locks); a worktree it held is an
        orphan that only a run or ``pytest-aiops gc`` on that host can reclaim.
        """
        return [
            f"aiops {worker} on {host}: crashed; its ports were freed on {host} when its "
            f"process died; a worktree it held stays there until a run or `pytest-aiops gc` "
            f"on {host} reclaims it"
            for worker, host in self.crashed
            if host is not None
        ]
