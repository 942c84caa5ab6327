"""Plain objects behind the fixtures: a worker's ports, its worktrees, its provisioned session.

Nothing here imports pytest (objects usable without it, as pytest's ``TempPathFactory`` is):
:mod:`pytest_aiops.plugin` builds one :class:`AiopsWorker` per process from the frozen
:class:`~pytest_aiops._plugin.settings.Settings` (passed down whole, never spread into
arguments) and the fixtures hand out what it makes.
Everything is lazy: constructing these objects leases nothing and runs no git command.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core.discovery import DiscoverySnapshot
from .._core.orchestrator import RequestLike, ResourceProvisioningOrchestrator
from .._core.ports import PortAllocation
from .._core.registry import ProviderRegistry
from .._core.session import ProvisionedResources
from .._core.types import ResourceContextPatch, ResourceLease, ResourceRequest, RuntimeInjection
from .._core.values import dataclass
from .._core.worktrees import WorktreeAllocation, WorktreeSpec
from .._errors import (
    AiopsError,
    ClosedError,
    LockError,
    PortsExhaustedError,
    ProvisioningError,
)
from .._ports.pool import KernelPorts, PortRange
from .._worktrees.defaults import DEFAULT_ISOLATION
from .._worktrees.roots import find_repository
from .hook_env import repo_variables
from .settings import Settings, cli, spellings

if TYPE_CHECKING:
    from .._worktrees.provider import SnapshotRun
    from .remote import PinnedBase


@dataclass(frozen=True)
class GitWorktree:
    """An isolated checkout of the repository under test, made by :class:`WorktreeFactory`."""

    path: Path
    base_ref: str
    repo_root: Path
    working_directory: Path
    target_path: str | None = None
    isolation: str = DEFAULT_ISOLATION
    session_id: str = ""
    #: Whether the checkout holds the user's working state on top of ``base_ref``.
    working_state: bool = False
    resources: ProvisionedResources | None = field(default=None, compare=False, repr=False)
    #: Keeps the checkout on disk instead of releasing it (``False`` if given back already);
    #: ``None`` if its provider (a user's replacement) cannot keep.
    keep_checkout: Callable[[], bool] | None = field(default=None, compare=False, repr=False)

    def env(self, base_env: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """An environment for subprocesses that run this worktree's code.

        ``base_env`` (default ``os.environ``) with ``AGENT_WORKTREE_PATH`` and friends, the
        worktree's import roots first on ``PYTHONPATH`` (so an editable install of the
        project resolves to the worktree, not the main checkout) and the variables that bind
        git to a repository removed (``GIT_DIR``, ``GIT_INDEX_FILE``, ``GIT_OBJECT_DIRECTORY``...:
        the set the plugin's own git drops, see docs/how-it-works.md "Run from a git hook").
        """
        from .._worktrees.provider import worktree_env

        base = os.environ if base_env is None else base_env
        merged = {k: v for k, v in base.items() if v is not None}
        if self.resources is not None:
            merged = self.resources.injected_env(merged)
        return worktree_env(str(self.path), merged, repo_root=str(self.repo_root))


def _keep_of(resources: ProvisionedResources) -> Callable[[], bool] | None:
    """The keep of the session's worktree lease, if its provider's release carries one."""
    from .._worktrees.provider import WorktreeRelease

    release = resources._release_of("git-worktree")
    return release.keep if isinstance(release, WorktreeRelease) else None


class WorktreeFactory:
    """Makes worktrees of one repository, as ``tmp_path_factory`` makes directories.

    :meth:`provision` returns a :class:`GitWorktree`; :meth:`release` gives it back (to the
    provider's pool), unless the keep policy says to leave it on disk for debugging.
    :meth:`close` releases whatever is still out. Thread-safe. While any worktree is out the
    repository-binding variables a git hook exports are hidden from ``os.environ``
    (:mod:`.hook_env`).
    """

    def __init__(
        self,
        orchestrator: Callable[[], ResourceProvisioningOrchestrator],
        settings: Settings,
        *,
        repo: str,
        session_prefix: str,
        repo_hint: str = f"set {spellings('repo', env=False)} to the repository under test",
        snapshot_directory: Callable[[], str | None] = lambda: None,
        pinned: PinnedBase | None = None,
    ) -> None:
        self._orchestrator = orchestrator
        self._snapshot_directory = snapshot_directory
        self.settings = settings
        self.repo = repo
        self.session_prefix = session_prefix
        self.repo_hint = repo_hint
        #: On another host than the xdist controller: the commit to check out by default.
        self.pinned = pinned
        self._lock = threading.Lock()
        self._counter = 0
        self._live: dict[int, GitWorktree] = {}
        self.kept: list[GitWorktree] = []

    def request(
        self,
        *,
        base_ref: str | None = None,
        target_path: str | None = None,
        isolation: str | None = None,
        working_state: bool | None = None,
    ) -> ResourceRequest:
        """The ``git-worktree`` request :meth:`provision` would make."""
        return ResourceRequest(
            "git-worktree",
            self.spec(
                base_ref=base_ref,
                target_path=target_path,
                isolation=isolation,
                working_state=working_state,
            ).to_options(),
        )

    def spec(
        self,
        *,
        base_ref: str | None = None,
        target_path: str | None = None,
        isolation: str | None = None,
        working_state: bool | None = None,
    ) -> WorktreeSpec:
        """What :meth:`provision` asks the provider for: the arguments over the settings;
        what neither says is left to the provider's defaults."""
        settings = self.settings
        if self.pinned is not None and base_ref is None:
            # The controller's commit; its working state is not on this host.
            base_ref = self.pinned.commit or settings.base_ref
            working_state = False if working_state is None else working_state
        with_state = settings.working_state if working_state is None else working_state
        return WorktreeSpec(
            root_directory=settings.worktree_root or None,
            base_ref=base_ref or settings.base_ref,
            target_path=target_path or None,
            isolation=isolation or settings.isolation,
            # Else the provider's default.
            pool_size=settings.pool_size if "pool_size" in (settings.sources or {}) else None,
            working_state=True if with_state else None,
            worktree_include=(settings.worktree_include or None) if with_state else None,
            snapshot_directory=self._snapshot_directory() if with_state else None,
        )

    def provision(
        self,
        *,
        base_ref: str | None = None,
        target_path: str | None = None,
        isolation: str | None = None,
        working_state: bool | None = None,
    ) -> GitWorktree:
        """A new worktree at ``base_ref`` (default: the configured one).

        ``working_state`` (default: the setting) lays the user's working state on ``HEAD``.
        """
        is_dir = os.path.isdir(self.repo)
        repo = find_repository(self.repo) if is_dir else None
        with self._lock:
            self._counter += 1
            number = self._counter
        session_id = f"{self.session_prefix}:wt{number}:{os.getpid()}"
        if repo is None:
            where = "inside one" if is_dir else "a directory"
            raise ProvisioningError(
                f"git_worktree needs a git repository, but {self.repo} is not {where}; "
                f"{self.repo_hint}",
                session_id=session_id,
                kind="git-worktree",
            )
        if self.pinned is not None and base_ref is None:
            self._check_pinned(repo, session_id)
        request = self.request(
            base_ref=base_ref,
            target_path=target_path,
            isolation=isolation,
            working_state=working_state,
        )
        resources = self._orchestrator().provision_session(
            session_id=session_id, resources=[request], workspace_root=self.repo
        )
        allocation = WorktreeAllocation.from_json(resources.allocation("git-worktree") or {})
        worktree = GitWorktree(
            path=Path(allocation.worktree_path),
            base_ref=allocation.base_ref,
            repo_root=Path(allocation.repo_root or repo),  # a replacement provider may omit it
            working_directory=Path(resources.working_directory),
            target_path=allocation.target_path,
            isolation=allocation.isolation,
            session_id=session_id,
            working_state=allocation.working_state,
            resources=resources,
            keep_checkout=_keep_of(resources),
        )
        with self._lock:
            self._live[id(worktree)] = worktree
        # Until it is released, git run by the test (in the worktree, without env=) must not
        # see a hook's GIT_INDEX_FILE & co.: they would point it at the user's repository.
        repo_variables().hide()
        return worktree

    def check_pinned(self, session_id: str) -> None:
        """Fail in one line if this host lacks the controller's commit (a remote xdist worker
        about to check it out; a missing repository is left to the provider to report)."""
        if self.pinned is None or not os.path.isdir(self.repo):
            return
        repo = find_repository(self.repo)
        if repo is not None:
            self._check_pinned(repo, session_id)

    def _check_pinned(self, repo: str, session_id: str) -> None:
        """Fail in one line if the controller's commit cannot be checked out on this host."""
        pinned = self.pinned
        assert pinned is not None
        if pinned.commit is None:
            message = pinned.unresolved()
        else:
            from .._worktrees.locate import resolve_commit

            try:
                resolve_commit(repo, pinned.commit)
                return
            except AiopsError:
                message = pinned.missing(repo)
        raise ProvisioningError(message, session_id=session_id, kind="git-worktree")

    def release(self, worktree: GitWorktree, *, failed: bool = False) -> bool:
        """Give ``worktree`` back; keep it instead if the policy says so. True if released."""
        with self._lock:
            if self._live.pop(id(worktree), None) is None:
                return False
            repo_variables().restore()
            policy = self.settings.keep
            keep = policy == "all" or (policy == "failed" and failed)
            if keep:
                self.kept.append(worktree)
        if keep:
            # Recorded as kept, so no later run or `pytest-aiops gc` takes it for an orphan
            # once this process (its owner) has exited. The handle carries the keep of the
            # lease that made it (a replacement provider without one just leaves the
            # checkout held until the process ends).
            if worktree.keep_checkout is not None:
                worktree.keep_checkout()
            return False
        if worktree.resources is not None:
            worktree.resources.release()
        return True

    @contextmanager
    def worktree(
        self,
        *,
        base_ref: str | None = None,
        target_path: str | None = None,
        isolation: str | None = None,
        working_state: bool | None = None,
    ) -> Iterator[GitWorktree]:
        """``with factory.worktree() as wt:`` -- provisioned on entry, released on exit."""
        worktree = self.provision(
            base_ref=base_ref,
            target_path=target_path,
            isolation=isolation,
            working_state=working_state,
        )
        failed = True
        try:
            yield worktree
            failed = False
        finally:
            self.release(worktree, failed=failed)

    def close(self) -> list[BaseException]:
        """Release every worktree still out; return the errors instead of stopping at one."""
        with self._lock:
            live = list(self._live.values())
        errors: list[BaseException] = []
        for worktree in reversed(live):
            try:
                self.release(worktree)
            except Exception as error:
                errors.append(error)
        return errors


class _HeldLease:
    """A provider that re-issues an already held lease without leasing again.

    ``provisioned_session`` includes the worker's port range; the range is leased once (by
    ``port_range`` or by the session, whichever comes first) and owned by the worker, so the
    session's copy must not release it.
    """

    def __init__(self, kind: str, allocation: Mapping[str, Any], patch: ResourceContextPatch):
        self.kind = kind
        self._allocation = allocation
        self._patch = patch

    def provision(
        self, *, session_id: str, workspace_root: str, options: Mapping[str, Any]
    ) -> ResourceLease:
        return ResourceLease(self.kind, self._allocation, lambda: None, self._patch)


class WorkerSession(ProvisionedResources):
    """What ``provisioned_session`` returns: the worker's session, discovery file included.

    A :class:`ProvisionedResources` over the same leases (releasing it releases them) whose
    :meth:`injected_env` and :attr:`env` also carry ``AGENT_DISCOVERY_FILE``, the discovery
    file written for it, as ``pytest-aiops run`` gives its command. ``runtime`` is the
    :class:`RuntimeInjection` (working directory, env, discovery file path). Made by
    :meth:`over`.
    """

    runtime: RuntimeInjection

    @classmethod
    def over(cls, session: ProvisionedResources, runtime: RuntimeInjection) -> WorkerSession:
        """The worker's session over ``session``'s leases, with ``runtime`` written for it."""
        snapshot = session.to_discovery_snapshot()
        worker_session = cls.from_snapshot(snapshot, [("session", session.release)])
        worker_session.runtime = runtime
        return worker_session

    @property
    def discovery_file(self) -> str:
        """Path of the discovery file (also ``AGENT_DISCOVERY_FILE``)."""
        return self.runtime.discovery_file_path

    @property
    def env(self) -> Mapping[str, str]:
        """The session's own variables (``AGENT_*``), ``AGENT_DISCOVERY_FILE`` included."""
        return {**super().env, "AGENT_DISCOVERY_FILE": self.discovery_file}

    def injected_env(self, base_env: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """``base_env`` (default ``os.environ``) with the session's variables on top,
        ``AGENT_DISCOVERY_FILE`` included."""
        env = super().injected_env(base_env)
        env["AGENT_DISCOVERY_FILE"] = self.discovery_file
        return env


@dataclass(frozen=True)
class XdistSlice:
    """What the xdist controller gave a worker: the parent range's snapshot, the slice index
    assigned to it (of ``count``), and the other free indices to try if that one is held."""

    parent: DiscoverySnapshot
    index: int | None
    count: int
    spares: tuple[int, ...] = ()


class AiopsWorker:
    """One process's resources: its port range, worktrees and provisioned session.

    ``settings`` is the run's frozen configuration. With ``xdist`` (the controller's parent
    snapshot and this worker's slice) the worker leases its slice of the parent range;
    without, its own top-level block seeded by ``session_id``. ``repo`` defaults to
    ``settings.repo`` or ``workspace_root``. Nothing is leased until first asked for.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ProviderRegistry,
        worker_id: str,
        session_id: str,
        workspace_root: str,
        xdist: XdistSlice | None = None,
        extra_requests: Callable[[], Sequence[RequestLike]] = tuple,
        snapshot_directory: str | None = None,
        pinned: PinnedBase | None = None,
        host: str | None = None,
        repo_hint: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.worker_id = worker_id
        self.session_id = session_id
        self.workspace_root = workspace_root
        self.repo = settings.repo or workspace_root
        self.xdist = xdist
        #: The host this worker runs on when it is not the xdist controller's (for reports).
        self.host = host
        #: The slice this worker holds (starts as the assigned one; may move to a spare).
        self.child_index = xdist.index if xdist is not None else None
        self.resource_kinds = settings.resources
        self._extra_requests = extra_requests
        self.fallback_reason: str | None = None
        self.runtime: RuntimeInjection | None = None
        self._lock = threading.RLock()
        self._ports_session: ProvisionedResources | None = None
        self._pool: PortRange | None = None
        self._grown: list[ProvisionedResources] = []
        self._session: WorkerSession | None = None
        self._session_hides = False
        self._closed = False
        #: The run's snapshot directory: the xdist controller's, else made here on first use.
        self._snapshot_directory = snapshot_directory
        self._snapshot_run: SnapshotRun | None = None
        self.worktrees = WorktreeFactory(
            self._orchestrator,
            settings,
            repo=self.repo,
            session_prefix=session_id,
            snapshot_directory=self.snapshot_directory,
            pinned=pinned,
            **({"repo_hint": repo_hint} if repo_hint else {}),
        )
        self._cached_orchestrator: ResourceProvisioningOrchestrator | None = None

    def snapshot_directory(self) -> str | None:
        """Where the run's one snapshot of the working state is (made on first call when
        this process is the whole run). ``None`` if it cannot be made: then each checkout
        snapshots for itself, and reports in one line what keeps it from doing so."""
        with self._lock:
            if self._snapshot_directory is None and self._snapshot_run is None:
                from .._worktrees.provider import SnapshotRun

                try:
                    self._snapshot_run = SnapshotRun.create(self.settings.worktree_root)
                except (AiopsError, OSError):
                    return None
                self._snapshot_directory = self._snapshot_run.path
            return self._snapshot_directory

    def snapshot_working_state(self) -> None:
        """Take the run's snapshot of the working state now (at the start of the run), if
        the settings ask for one and nobody has taken it yet. A failure is left for the
        first worktree to report, where it is requested."""
        settings = self.settings
        if not settings.working_state or settings.base_ref != "HEAD":
            return
        if self.worktrees.pinned is not None:
            return  # on another host: the controller's commit alone
        from .._worktrees.provider import take_run_snapshot

        try:
            directory = self.snapshot_directory()
            if directory is not None:
                take_run_snapshot(directory, self.repo, settings.worktree_include)
        except (AiopsError, OSError):
            pass

    @property
    def child_count(self) -> int | None:
        """How many slices the xdist parent range is split into (``None`` outside xdist)."""
        return self.xdist.count if self.xdist is not None else None

    def _orchestrator(self) -> ResourceProvisioningOrchestrator:
        with self._lock:
            if self._cached_orchestrator is None:
                self._cached_orchestrator = self.registry.orchestrator()
            return self._cached_orchestrator

    @property
    def ports_leased(self) -> bool:
        """Whether this worker's port lease is taken (its pool may not be made yet)."""
        return self._ports_session is not None

    @property
    def leased_port_range(self) -> PortRange | None:
        """The :class:`PortRange` if already made, without leasing (no lock taken)."""
        return self._pool

    def ports_session(self) -> ProvisionedResources:
        """The session holding only this worker's port lease (leased on first call)."""
        with self._lock:
            self._check_open()
            if self._ports_session is None:
                self._ports_session = self._lease_ports()
            return self._ports_session

    def _lease_ports(self) -> ProvisionedResources:
        orchestrator = self._orchestrator()
        xdist = self.xdist
        if xdist is not None and self.child_index is not None and xdist.count:
            reasons: list[str] = []
            for index in [self.child_index, *xdist.spares]:
                try:
                    session = orchestrator.provision_child_session(
                        parent_snapshot=xdist.parent,
                        child_session_id=f"{xdist.parent.session_id}/{self.worker_id}",
                        child_index=index,
                        child_count=xdist.count,
                    )
                except ProvisioningError as error:
                    if not isinstance(error.__cause__, PortsExhaustedError):
                        raise
                    reasons.append(error.__cause__.reason)
                    continue
                self.child_index = index
                self.fallback_reason = "; ".join(reasons) or None
                return session
            # Every candidate slice is still held (a crashed predecessor's orphan, say): a
            # top-level block is just as exclusive, only outside the parent range.
            self.fallback_reason = "; ".join(reasons)
            self.child_index = None
        return orchestrator.provision_session(
            session_id=self.session_id,
            resources=[self.settings.port_request()],
            workspace_root=self.workspace_root,
        )

    def port_range(self) -> PortRange:
        """This worker's port pool (leased on first call).

        Where leasing is unavailable (the lock directory cannot be used, every block is
        held) and ``port_fallback`` is ``"kernel"``, a :class:`KernelPorts` stand-in that
        warns once, so a suite keeps running without the guarantees.
        """
        with self._lock:
            if self._pool is None:
                try:
                    session = self.ports_session()
                except AiopsError as error:
                    cause = error.__cause__ if isinstance(error, ProvisioningError) else error
                    if self.settings.port_fallback != "kernel" or not isinstance(
                        cause, (LockError, PortsExhaustedError)
                    ):
                        raise
                    self._pool = KernelPorts(
                        f"pytest-aiops could not lease ports ({' '.join(str(cause).split())})",
                        owner=self.worker_id,
                        fallback_setting=cli("port_fallback"),
                    )
                    return self._pool
                self._pool = PortRange.from_allocation(
                    _port_allocation(session),
                    owner=self.worker_id,
                    session_id=session.session_id,
                    grow=self._grow_pool,
                    max_ports=self.settings.max_ports_per_worker,
                    fallback=self.settings.port_fallback,
                    max_ports_setting=spellings("max_ports_per_worker"),
                    fallback_setting=cli("port_fallback"),
                )
            return self._pool

    def _grow_pool(self) -> tuple[int, int, Sequence[int]]:
        """Lease one more block of ``settings.ports_per_worker`` for the pool (a top-level lease,
        seeded by the worker's session id and the block's number: the same run after run)."""
        with self._lock:
            self._check_open()
            number = len(self._grown) + 1
            try:
                session = self._orchestrator().provision_session(
                    session_id=f"{self.session_id}+{number}",
                    resources=[self.settings.port_request()],
                    workspace_root=self.workspace_root,
                )
            except ProvisioningError as error:
                if isinstance(error.__cause__, (PortsExhaustedError, LockError)):
                    raise PortsExhaustedError(str(error.__cause__)) from error
                raise
            self._grown.append(session)
            grown = _port_allocation(session)
            return grown.start_port, grown.end_port, grown.busy_ports

    def session(self, discovery_file: str | os.PathLike[str]) -> WorkerSession:
        """The worker's full provisioned session (once); its discovery file written.

        Its ``injected_env()`` includes ``AGENT_DISCOVERY_FILE``.
        """
        with self._lock:
            self._check_open()
            if self._session is not None:
                return self._session
            requests: list[RequestLike] = []
            overrides = {}
            for kind in self.resource_kinds:
                if kind == "port-range":
                    ports = self.ports_session()
                    snapshot = ports.to_discovery_snapshot()
                    overrides[kind] = _HeldLease(
                        kind,
                        ports.allocation(kind) or {},
                        ResourceContextPatch(
                            env=snapshot.env,
                            prompt_sections=snapshot.prompt_sections,
                            metadata=snapshot.metadata,
                        ),
                    )
                    requests.append(ResourceRequest(kind))
                elif kind == "git-worktree":
                    self.worktrees.check_pinned(f"{self.session_id}:session:{os.getpid()}")
                    requests.append(self.worktrees.request())
                else:
                    requests.append(ResourceRequest(kind))
            requests.extend(self._extra_requests())
            orchestrator = self.registry.orchestrator(overrides)  # type: ignore[arg-type]
            session = orchestrator.provision_session(
                session_id=f"{self.session_id}:session:{os.getpid()}",
                resources=requests,
                workspace_root=self.repo,
            )
            try:
                # Not the environment of whichever test happened to ask first.
                base = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
                self.runtime = session.build_runtime_injection(
                    os.fspath(discovery_file), base_env=base
                )
            except BaseException:
                session.release()
                raise
            self._session = WorkerSession.over(session, self.runtime)
            if session.allocation("git-worktree") is not None:
                # A worktree out for the session: hidden as for WorktreeFactory's.
                repo_variables().hide()
                self._session_hides = True
            return self._session

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"pytest-aiops resources of {self.worker_id} are already released")

    def close(self) -> list[BaseException]:
        """Release everything (session, worktrees, then ports); return the errors."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            errors: list[BaseException] = []
            if self._session is not None:
                errors.extend(_release(self._session))
            if self._session_hides:
                repo_variables().restore()
            errors.extend(self.worktrees.close())
            for grown in reversed(self._grown):
                errors.extend(_release(grown))
            if self._ports_session is not None:
                errors.extend(_release(self._ports_session))
            if self._snapshot_run is not None:
                try:
                    self._snapshot_run.close()
                except OSError as error:
                    errors.append(error)
            return errors

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for the controller's report (sent through ``workeroutput``)."""
        pool = self._pool
        return {
            "workerId": self.worker_id,
            "range": [pool.start, pool.end] if pool else None,
            "leased": pool.leased if pool else None,
            "pool": pool.summary() if pool else None,
            "childIndex": self.child_index if self.xdist is not None else None,
            "fallback": self.fallback_reason,
            "kept": [str(w.path) for w in self.worktrees.kept],
            **({"host": self.host} if self.host else {}),
        }


def _port_allocation(session: ProvisionedResources) -> PortAllocation:
    """The session's ``port-range`` allocation, read once into its typed form."""
    allocation = session.allocation("port-range")
    if allocation is None:
        raise ProvisioningError(
            "the port-range provider returned no port-range allocation",
            session_id=session.session_id,
            kind="port-range",
        )
    return PortAllocation.from_json(allocation)


def _release(resources: ProvisionedResources) -> list[BaseException]:
    try:
        resources.release()
    except Exception as error:
        return [error]
    return []
