"""The ``git-worktree`` provider: an isolated checkout of the repository under test.

Options (camelCase, as the reference; each defaults to the provider config):

- ``rootDirectory`` (str): where checkouts live; relative to the repository root. Default:
  :func:`default_worktree_root` (outside the user's work tree, on tmpfs when possible).
- ``baseRef`` (str, default ``"HEAD"``): the commit to check out, detached.
- ``targetPath`` (str): a directory at ``baseRef``; the checkout is sparse (cone) to it and
  the session's working directory is ``<worktree>/<targetPath>``.
- ``isolation`` (``"worktree"`` | ``"clone"``): a linked worktree (shares refs, config,
  stash and hooks with the user's repository; the reference's behaviour) or a private
  clone borrowing the user's objects (shares nothing writable).
- ``pool`` (bool, default ``True``): return released checkouts to a per-root pool and hand
  them out again, restored to exactly ``baseRef``'s tree.
- ``workingState`` (bool, default ``False``): with ``baseRef`` ``"HEAD"``, the checkout also
  holds the user's working state (staged and unstaged changes, deletions, untracked files
  that are not ignored; see :mod:`.snapshot`). Any other ``baseRef`` means that commit alone.
- ``worktreeInclude`` (list of gitignore patterns): ignored paths copied too with
  ``workingState`` (``.env``, extension modules built in place), besides the lines of the
  repository's ``.worktreeinclude``.
- ``snapshotDirectory`` (str): a :class:`SnapshotRun`'s directory; every request naming it
  gets the run's one snapshot, taken by the first (the plugin's xdist workers share it).
- ``poolSize`` (int >= 0, default 8): how many released checkouts the root keeps for reuse,
  in all; the least recently released is deleted first. ``0`` keeps none.

:meth:`GitWorktreeProvider.provision` reads them into a
:class:`~pytest_aiops._core.worktrees.WorktreeSpec` (validated before anything is created)
and :meth:`GitWorktreeProvider.lease` checks it out. See "How worktrees work" in
docs/how-it-works.md for the design. Ownership, the pool and crash
recovery live in :mod:`.store` (records: :mod:`.record`); the user's repository in
:mod:`.repository`; making, restoring and deleting checkouts in :mod:`.create`,
:mod:`.restore` and :mod:`.files`.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .._core.hashing import build_scoped_name
from .._core.options import normalize_target_path, resolve_path
from .._core.types import ResourceContextPatch, ResourceLease
from .._core.values import dataclass
from .._core.worktrees import (
    KIND,
    WorktreeAllocation,
    WorktreeSpec,
    check_isolation,
    check_patterns,
    check_pool_size,
)
from .._errors import AiopsWarning, GitError, OptionError, UnsupportedPlatformError, escape
from . import store
from .create import create_clone, create_worktree, no_space
from .defaults import CLONE, DEFAULT_BASE_REF, DEFAULT_POOL_SIZE, WORKTREE
from .git import REPO_ENV, without_repo_env
from .locate import RepoInfo
from .record import PoolKey
from .repository import (
    check_target,
    inspect_repo,
    park_registration,
    point_registration,
    unpark_registration,
)
from .restore import CheckoutDir, RestorePlan, Sweep, index_identity, restore
from .snapshot import (
    Snapshot,
    SnapshotRun,
    apply_snapshot,
    discard_snapshot,
    include_patterns,
    private_snapshot,
    shared_snapshot,
)
from .store import (
    WorktreeRecord,
    default_worktree_root,
    list_worktrees,
    reclaim_orphans,
)

__all__ = [
    "KIND",
    "REPO_ENV",
    "GitWorktreeProvider",
    "GitWorktreeProviderConfig",
    "SnapshotRun",
    "WorktreeAllocation",
    "WorktreeLease",
    "WorktreeRecord",
    "WorktreeSpec",
    "create_git_worktree_provider",
    "default_worktree_root",
    "list_worktrees",
    "reclaim_orphans",
    "take_run_snapshot",
    "worktree_env",
    "worktree_import_roots",
]


@dataclass(frozen=True)
class GitWorktreeProviderConfig:
    """Defaults for ``git-worktree`` requests (each overridable per request by its option).

    ``root_directory=None`` means :func:`default_worktree_root` of the repository.
    ``pool_size`` caps how many released checkouts one root keeps for reuse, in all (the
    least recently released is deleted first).
    ``working_state`` / ``worktree_include``: the ``workingState`` / ``worktreeInclude``
    defaults (off: a checkout of ``baseRef`` alone, as the reference).
    """

    root_directory: str | None = None
    base_ref: str = DEFAULT_BASE_REF
    target_path: str | None = None
    isolation: str = WORKTREE
    pool: bool = True
    pool_size: int = DEFAULT_POOL_SIZE
    working_state: bool = False
    worktree_include: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Checked as the request options are (a bare string would be split into letters).
        check_isolation(self.isolation)
        check_pool_size(self.pool_size)
        if not isinstance(self.working_state, bool):
            raise OptionError(
                "workingState",
                f'Option "workingState" must be true or false, not {self.working_state!r}.',
            )
        check_patterns(self.worktree_include)


class WorktreeLease(NamedTuple):
    """What :meth:`GitWorktreeProvider.lease` returns: the allocation, how to give the
    checkout back (to the pool, or deleted; once) and how to keep it on disk instead
    (``False`` if it was given back already)."""

    allocation: WorktreeAllocation
    release: Callable[[], None]
    keep: Callable[[], bool]


class WorktreeRelease:
    """The ``release`` of the :class:`~pytest_aiops.ResourceLease` that :meth:`provision`
    returns: calling it releases the checkout; :meth:`keep` keeps it instead. It carries
    keep to whoever holds the session (the plugin's handle), so nobody has to find the
    provider, or the checkout by path, again."""

    __slots__ = ("keep", "release")

    def __init__(self, lease: WorktreeLease) -> None:
        self.release = lease.release
        self.keep = lease.keep

    def __call__(self) -> None:
        self.release()


class GitWorktreeProvider:
    """Provides a detached checkout of ``baseRef`` per request; releases or pools it."""

    kind = KIND

    def __init__(self, config: GitWorktreeProviderConfig | None = None) -> None:
        self.config = config or GitWorktreeProviderConfig()
        # The checkouts this provider's leases hold, by path: what keep() finds them by.
        self._held: dict[str, _Checkout] = {}
        self._held_lock = threading.Lock()

    def keep(self, path: str | os.PathLike[str]) -> bool:
        """Keep a checkout one of this provider's leases holds, instead of releasing it.

        Its record says ``kept``: later runs and ``pytest-aiops gc`` leave it alone
        (``status`` lists it as kept) until the user removes it with ``git worktree remove
        --force PATH`` (or deletes a clone) or runs ``pytest-aiops gc --kept``. ``False`` if
        no lease of this provider holds a checkout at ``path`` (released already, or made by
        another provider). The lease's ``release`` is then a no-op.
        """
        with self._held_lock:
            checkout = self._held.get(os.fspath(path))
        return checkout.keep() if checkout is not None else False

    def _forget(self, path: str) -> None:
        with self._held_lock:
            self._held.pop(path, None)

    def provision(
        self, *, session_id: str, workspace_root: str, options: Mapping[str, Any]
    ) -> ResourceLease:
        """The reference's entry point: :meth:`lease` of the request's options, as a
        :class:`~pytest_aiops.ResourceLease` (the allocation as camelCase JSON)."""
        _refuse_windows()
        # Validate everything before creating anything: a refused request leaves nothing.
        spec = WorktreeSpec.from_options(options)
        held = self._lease(spec, session_id=session_id, workspace_root=workspace_root)
        return ResourceLease(
            KIND, held.allocation.to_json(), WorktreeRelease(held), _context(held.allocation)
        )

    def lease(self, spec: WorktreeSpec, *, session_id: str, workspace_root: str) -> WorktreeLease:
        """A checkout of ``spec`` in the repository at ``workspace_root`` (the fields
        ``spec`` leaves ``None`` are this provider's config's); ``session_id`` names it.

        ``spec`` is checked as a request's options are (:meth:`WorktreeSpec.from_options`,
        the one validator), before anything is created.
        """
        _refuse_windows()
        checked = WorktreeSpec.from_options(spec.to_options())
        return self._lease(checked, session_id=session_id, workspace_root=workspace_root)

    def _lease(self, spec: WorktreeSpec, *, session_id: str, workspace_root: str) -> WorktreeLease:
        """:meth:`lease` of a checked spec."""
        _refuse_windows()
        config = self.config
        root_option = spec.root_directory or config.root_directory
        base_ref = spec.base_ref or config.base_ref
        target = spec.target_path or normalize_target_path(config.target_path)
        isolation = spec.isolation or config.isolation
        pool = config.pool if spec.pool is None else spec.pool
        working_state = config.working_state if spec.working_state is None else spec.working_state
        include = (
            config.worktree_include if spec.worktree_include is None else spec.worktree_include
        )
        pool_size = config.pool_size if spec.pool_size is None else spec.pool_size
        snapshot_dir = spec.snapshot_directory
        info, commit = inspect_repo(workspace_root, base_ref)
        # Only HEAD has a working state: an explicit other ref means that commit alone.
        working_state = working_state and base_ref == DEFAULT_BASE_REF
        if target:
            check_target(info.repo_root, commit, target, base_ref)
        if root_option is None:
            worktree_root = default_worktree_root(info.repo_root)
            worktree_root = store.ensure_root(
                worktree_root, private_base=os.path.dirname(worktree_root)
            )
            store.sweep_deleted_repositories(os.path.dirname(worktree_root))
        else:
            worktree_root = resolve_path(info.repo_root, root_option)
            worktree_root = store.ensure_root(worktree_root)

        snapshot: Snapshot | None = None
        if working_state:
            patterns = include_patterns(info.repo_root, include)
            try:
                if snapshot_dir is not None:
                    snapshot = shared_snapshot(snapshot_dir, info, commit, patterns)
                    commit = snapshot.head  # every checkout of the run: same HEAD and state
                else:
                    base = store.control_dir(worktree_root)
                    snapshot = private_snapshot(info, commit, patterns, base)
            except GitError as error:
                # The remedy is the option: say so, with git's reason (e.g. a required
                # clean filter that is not installed, which `git add -A` must run).
                reason = " ".join(str(error).split())
                raise OptionError(
                    "workingState",
                    f"could not snapshot the working state of {info.repo_root} ({reason}); "
                    'set the "workingState" option to false to check out the base ref alone',
                ) from error
        try:
            checkout = _Checkout.provide(
                root=worktree_root,
                info=info,
                commit=commit,
                target=target,
                isolation=str(isolation),
                session_id=session_id,
                pool=pool,
                pool_size=pool_size,
            )
            if snapshot is not None:
                checkout.apply(snapshot)
        finally:
            if snapshot is not None:
                discard_snapshot(snapshot)
        worktree_path = checkout.path
        with self._held_lock:
            self._held[worktree_path] = checkout
        checkout.forget = functools.partial(self._forget, worktree_path)
        working = os.path.join(worktree_path, target) if target else worktree_path
        if not os.path.isdir(working):  # the reference's last check; cannot fail after ours
            checkout.release()
            raise OptionError(
                "targetPath",
                f'Provisioned worktree path "{working}" does not exist.',
            )
        allocation = WorktreeAllocation(
            repo_root=info.repo_root,
            worktree_path=worktree_path,
            base_ref=base_ref,
            worktree_root=worktree_root,
            target_path=target,
            commit=commit,
            isolation=isolation,
            working_state=snapshot is not None,
        )
        return WorktreeLease(allocation, checkout.release, checkout.keep)


def _refuse_windows() -> None:
    if sys.platform == "win32":
        raise UnsupportedPlatformError("git-worktree leasing", "POSIX flock owner locks")


def _context(allocation: WorktreeAllocation) -> ResourceContextPatch:
    """What a worktree lease adds to the session: the reference's variables, prompt lines
    and metadata, and its working directory (``targetPath`` inside the checkout)."""
    path, base_ref, target = allocation.worktree_path, allocation.base_ref, allocation.target_path
    metadata: dict[str, Any] = {"git_worktree_path": path, "git_worktree_base_ref": base_ref}
    sections = [f"Git worktree: {path}", f"Worktree base ref: {base_ref}"]
    if target:
        metadata["git_worktree_target_path"] = target
        sections.append(f"Worktree target path: {target} (sparse-checkout enabled)")
    if allocation.working_state:
        metadata["git_worktree_working_state"] = True
        sections.append(
            f"Worktree holds the working state of {allocation.repo_root} (its uncommitted "
            "changes and untracked files) on top of the base ref"
        )
    return ResourceContextPatch(
        env={
            "AGENT_REPO_ROOT": allocation.repo_root or "",  # always set by this provider
            "AGENT_WORKTREE_PATH": path,
            "AGENT_WORKTREE_BASE_REF": base_ref,
        },
        prompt_sections=sections,
        metadata=metadata,
        preferred_working_directory=os.path.join(path, target) if target else path,
    )


class _Checkout:
    """One held checkout: how it was provided and how to give it back."""

    def __init__(
        self,
        entry: store.Entry,
        info: RepoInfo,
        *,
        target: str | None,
        pool: bool,
        pool_size: int,
        key: PoolKey,
    ) -> None:
        self.entry = entry
        self.info = info
        self.target = target
        self.pool = pool
        self.pool_size = pool_size
        self.key = key
        self._released = False
        self._lock = threading.Lock()
        #: Called once given back (kept or released): the provider stops finding it.
        self.forget: Callable[[], None] = lambda: None

    @property
    def path(self) -> str:
        return str(self.entry.record.path)

    @classmethod
    def provide(
        cls,
        *,
        root: str,
        info: RepoInfo,
        commit: str,
        target: str | None,
        isolation: str,
        session_id: str,
        pool: bool,
        pool_size: int,
    ) -> _Checkout:
        key = PoolKey(
            common_dir=info.common_dir, isolation=isolation, target_path=target, commit=commit
        )
        name = build_scoped_name(session_id)
        # Every provisioning through a root first reclaims its orphans (scan_pool does);
        # with pool=False it neither takes from the pool nor gives back to it.
        entry = store.scan_pool(root, key, take=pool)
        if entry is not None and cls._reuse(
            entry, info=info, commit=commit, target=target, name=name, session_id=session_id
        ):
            return cls(entry, info, target=target, pool=pool, pool_size=pool_size, key=key)
        try:
            entry = store.new_entry(root, key, info, session_id)
        except OSError as error:
            full = no_space(error, root, info, commit, target)
            if full is None:
                raise
            raise full from error
        try:
            cls._create(
                entry, info=info, commit=commit, target=target, isolation=isolation, name=name
            )
        except BaseException as error:
            # Measured before discarding: what git left shows how full the filesystem is.
            full = no_space(error, root, info, commit, target)
            entry.discard()
            if full is not None:
                raise full from error
            raise
        return cls(entry, info, target=target, pool=pool, pool_size=pool_size, key=key)

    @staticmethod
    def _create(
        entry: store.Entry,
        *,
        info: RepoInfo,
        commit: str,
        target: str | None,
        isolation: str,
        name: str,
    ) -> None:
        build = entry.make_build_dir()
        if isolation == CLONE:
            git_dir = create_clone(info, commit, build, target, entry.git_started)
        else:
            git_dir = create_worktree(info, commit, build, target, entry.git_started)
        filled_at = time.time()
        path = entry.claim_name(name)
        entry.move_built_to(path)
        if isolation == WORKTREE:
            point_registration(git_dir, path)
        else:
            git_dir = os.path.join(path, ".git")  # moved with the clone
        entry.mark_created(git_dir=git_dir, filled_at=filled_at)

    @staticmethod
    def _reuse(
        entry: store.Entry,
        *,
        info: RepoInfo,
        commit: str,
        target: str | None,
        name: str,
        session_id: str,
    ) -> bool:
        """Move a pooled checkout to ``name``; switch commits if needed. ``False``: discarded."""
        if entry.record.isolation == WORKTREE and not os.path.isdir(str(entry.record.git_dir)):
            # Its registration is gone from the repository (deleted and cloned again at the
            # same path, or `git worktree prune`): it is no worktree of this repository any
            # more. Nothing failed, so no warning (suites run with filterwarnings = error):
            # drop it and make a fresh one.
            entry.discard()
            return False
        try:
            entry.mark_reused(info, session_id)
            path = entry.claim_name(name)
            entry.move_pooled_to(path)
            if entry.record.isolation == WORKTREE:
                unpark_registration(str(entry.record.git_dir), path)
            if entry.record.commit != commit:
                # Another commit: ask git what the last lease left (the stamp predates the
                # switch) and check the whole tree out.
                restore(
                    _located(entry, info),
                    RestorePlan(
                        commit=commit,
                        target=target,
                        sweep=Sweep.GIT,
                        checkout=True,
                        tree_cache=entry.tree_cache,
                    ),
                    on_start=entry.git_started,
                )
                entry.mark_switched(commit)
        except _EXPECTED as error:
            # git failed or the filesystem did (full, or a test left something we cannot
            # remove): a fresh checkout serves the session instead; anything else is a bug.
            _fallback_warning("reuse", entry, error, "creating a fresh checkout instead")
            entry.discard()
            return False
        return True

    def apply(self, snapshot: Snapshot) -> None:
        """Lay the user's working state on the checkout (released again if that fails).

        The record's index identity is cleared: the index now differs from the commit's, so
        the restore at release runs a full ``git checkout`` back to the commit.
        """
        entry = self.entry
        try:
            apply_snapshot(snapshot, self.path, self.target, entry.git_started)
            entry.mark_working_state()
        except BaseException:
            self.release()
            raise

    def _hand_back(self) -> bool:
        """Mark the checkout given back (kept or released) and forget it as held; ``False``
        if that already happened (release is idempotent, keep after release a no-op)."""
        with self._lock:
            if self._released:
                return False
            self._released = True
        self.forget()
        return True

    def keep(self) -> bool:
        """Leave the checkout on disk for the user instead; ``False`` if already released."""
        if not self._hand_back():
            return False
        self.entry.keep()
        return True

    def release(self) -> None:
        """Pool the checkout (restored) or remove it; idempotent."""
        if not self._hand_back():
            return
        entry = self.entry
        # Child sessions' checkouts live inside ours; take theirs apart properly first
        # (their registrations are in the user's repository), never just delete the files.
        for child_root in store.iter_child_roots(self.path):
            store.reclaim_orphans(child_root, include_pooled=True, include_kept=True)
        if store.has_live_descendants(self.path):
            # A live child session still works inside: neither restore nor delete under it.
            # Our record stays "live" with its lock free, i.e. an orphan that every scan
            # skips until the children are gone, and then reclaims like any other.
            entry.close()
            return
        try:
            pooled = self.pool and self._restore_for_pool()
        except BaseException:
            # Interrupted mid-restore (a second SIGTERM or Ctrl-C during teardown; its git
            # was killed with its group): delete it now. Left to a later reclaim, it would
            # stay registered until then, since this process holds its lock till it exits.
            entry.discard()
            raise
        if pooled:
            entry.close()
            return
        entry.discard()

    def _restore_for_pool(self) -> bool:
        entry = self.entry
        if self.pool_size == 0:
            return False
        # The bound is the whole root's (RAM on /dev/shm): make room for this one first.
        store.evict_pooled(entry.root, keep=self.pool_size - 1)
        record = entry.record
        git_dir = str(record.git_dir)
        started = time.time()
        plan = record.restore_plan(stamp=entry.stamp, tree_cache=entry.tree_cache, now=started)
        try:
            restore(_located(entry, self.info), plan, on_start=entry.git_started)
            index_id = index_identity(git_dir)
            if record.isolation == WORKTREE:
                # Hidden from the user's repository while pooled: `git worktree list` shows
                # only checkouts in use. The state is saved last: a crash in between leaves
                # an orphan whose registration is found by its token name.
                park_registration(git_dir, f"pytest-aiops: pooled checkout, see {entry.root}")
            entry.move_to_pool(index_id=index_id, restored_at=started, checked_out=plan.checkout)
        except _EXPECTED as error:
            _fallback_warning("restore", entry, error, "removing it instead of pooling it")
            return False
        return True


#: What restoring or reusing a pooled checkout is expected to fail with: git failing or
#: hanging, and the filesystem (full, read-only, a test's unremovable file). Then the pool
#: is bypassed with a warning; any other exception is a bug and propagates.
_EXPECTED = (GitError, OSError, subprocess.SubprocessError)


def _fallback_warning(what: str, entry: store.Entry, error: BaseException, then: str) -> None:
    """Say that the pool was bypassed, and why: a silent fallback hides a slow or broken pool."""
    reason = " ".join(str(error).split()) or type(error).__name__
    warnings.warn(
        f"pytest-aiops: could not {what} pooled checkout {escape(entry.record.path)!r} "
        f"({escape(reason)}); {then}",
        AiopsWarning,
        stacklevel=3,
    )


def _located(entry: store.Entry, info: RepoInfo) -> CheckoutDir:
    """Where the checkout of ``entry`` is now, for :func:`.restore.restore`."""
    record = entry.record
    return CheckoutDir(info, record.isolation, str(record.path), str(record.git_dir))


def worktree_import_roots(worktree_path: str, repo_root: str | None = None) -> list[str]:
    """Where Python should import the project from when running code of ``worktree_path``.

    With an editable install, ``import yourpkg`` resolves to the user's main checkout (a
    ``.pth`` path or a setuptools ``__editable__`` finder pointing there), not the worktree.
    Each import location of this interpreter that lies inside ``repo_root`` is mapped to the
    same place inside the worktree; without any, ``<worktree>/src`` if it exists, else the
    worktree itself.
    """
    roots: list[str] = []
    if repo_root:
        real_repo = os.path.realpath(repo_root)
        locations = [p for p in sys.path if p]
        for name, module in list(sys.modules.items()):
            mapping = getattr(module, "MAPPING", None)
            if name.startswith("__editable__") and isinstance(mapping, dict):
                locations += [os.path.dirname(str(p)) for p in mapping.values()]
        for location in locations:
            real = os.path.realpath(location)
            if real == real_repo or real.startswith(real_repo + os.sep):
                mapped = os.path.join(worktree_path, os.path.relpath(real, real_repo))
                mapped = os.path.normpath(mapped)
                if os.path.isdir(mapped) and mapped not in roots:
                    roots.append(mapped)
    if not roots:
        src = os.path.join(worktree_path, "src")
        roots.append(src if os.path.isdir(src) else worktree_path)
    return roots


def worktree_env(
    worktree_path: str,
    base_env: Mapping[str, str] | None = None,
    *,
    repo_root: str | None = None,
) -> dict[str, str]:
    """An environment for subprocesses that run the worktree's code, not the main checkout's.

    ``PYTHONPATH`` starts with :func:`worktree_import_roots` (entries on ``PYTHONPATH`` come
    before site-packages and before editable-install finders, which are appended to
    ``sys.meta_path``), and the variables that bind git to a repository (:data:`REPO_ENV`,
    the set the plugin's own git drops) are removed.
    """
    env = without_repo_env(os.environ if base_env is None else base_env)
    roots = worktree_import_roots(worktree_path, repo_root)
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in roots]
    env["PYTHONPATH"] = os.pathsep.join([*roots, *existing])
    return env


def take_run_snapshot(
    snapshot_directory: str, workspace_root: str, include: Sequence[str] = ()
) -> None:
    """Take the run's snapshot of the working state now, if nobody has yet.

    What a ``snapshotDirectory`` request would do on first use, done at the start of a run
    instead: the state captured is the one the run started with, not whatever the tests
    that ran before the first worktree left in the user's checkout.
    """
    info, commit = inspect_repo(workspace_root, DEFAULT_BASE_REF)
    patterns = include_patterns(info.repo_root, include)
    shared_snapshot(snapshot_directory, info, commit, patterns)


def create_git_worktree_provider(
    config: GitWorktreeProviderConfig | None = None,
) -> GitWorktreeProvider:
    """A ``git-worktree`` provider with ``config`` as its defaults."""
    return GitWorktreeProvider(config)
