"""Where a repository's worktrees may be, found without git: cheap enough for every pytest run.

:func:`find_repository` walks up for ``.git`` with a few ``stat`` calls;
:func:`default_root_candidates` names a repository's default worktree roots (no I/O);
:func:`may_hold_orphans` looks, with a few ``listdir``/``read``/``flock`` calls, whether a
root has a record only the store can judge; :func:`reclaim_dead_runs`, the plugin's
end-of-run reclaim, is built on them. The plugin's report header and that reclaim run in
every pytest run, so this module imports only the standard library and is loaded at
start-up; git's answer (:mod:`.locate`) and the store (:mod:`.store`) load when a
worktree is first asked for (issue 23).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import warnings


def find_repository(start: str) -> str | None:
    """The nearest directory at or above ``start`` holding ``.git``, without running git.

    Cheap enough for every pytest start (no process, a few ``stat`` calls). ``.git`` may be
    a directory (a repository) or a gitfile (a linked worktree, a submodule); either makes
    its directory the work tree root git would find (ignoring ``GIT_DIR`` and
    ``GIT_CEILING_DIRECTORIES``, which the provider clears for its own git anyway).
    """
    current = os.path.abspath(start)
    while True:
        if os.path.exists(os.path.join(current, ".git")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


#: A worktree root's control directory: owner locks and records (see :mod:`.store`).
CONTROL = ".pytest-aiops"


def default_root_candidates(repo_root: str) -> list[str]:
    """Where the default worktree root of ``repo_root`` may be, the preferred first:
    ``/dev/shm/pytest-aiops-<uid>/worktrees/<repo>-<hash>``, then the same under the temp
    dir. :func:`.store.default_worktree_root` picks one; this only names them (no I/O)."""
    real = os.path.realpath(repo_root)
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    leaf = f"{os.path.basename(real)[:32] or 'repo'}-{digest}"
    bases = [tempfile.gettempdir()]
    if os.path.isdir("/dev/shm"):
        bases.insert(0, "/dev/shm")
    return [os.path.join(base, f"pytest-aiops-{os.geteuid()}", "worktrees", leaf) for base in bases]


#: Record states that never make an orphan while their directory exists (see :mod:`.store`).
_RESTING = ("pooled", "kept")


def may_hold_orphans(root: str) -> bool:
    """Whether ``root`` has a record that is neither pooled nor kept and whose owner lock
    nobody holds (only such a record can be an orphan): a few ``listdir``/``read``/``flock``
    calls, no git, nothing imported.

    A cheap filter for the end of every pytest run: a record whose owner lock a live process
    holds (another run, an agent session) is skipped with one ``flock`` probe. ``True`` only
    says the store must look (:func:`.store.reclaim_orphans` decides, taking the locks).
    """
    control = os.path.join(root, CONTROL)
    try:
        names = os.listdir(control)
    except OSError:
        return False
    for name in names:
        if not (name.startswith("aiops-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(control, name), "rb") as handle:
                data = json.loads(handle.read(1 << 20))
        except (OSError, ValueError):
            return True
        resting = isinstance(data, dict) and data.get("state") in _RESTING
        if not resting and not _held(os.path.join(control, name[: -len(".json")] + ".lock")):
            return True  # its owner is gone (or never locked it): the store must look
    return False


def lock_held_elsewhere(path: str) -> bool:
    """Whether another open file holds the ``flock`` on ``path``: a *shared* probe would not
    be granted. Held for an instant and dropped; two such probes never conflict. (The one
    implementation: :meth:`.store.OwnerLock.held_elsewhere` is this.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no owner locks, nothing provisioned
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        raise
    finally:
        os.close(fd)  # drops our probe's lock with it
    return False


def _held(lock_path: str) -> bool:
    """Whether a live process holds the owner lock (an unexpected error: taken as held,
    so the store looks and decides under the lock itself)."""
    try:
        return lock_held_elsewhere(lock_path)
    except OSError:
        return True


def roots_of(repo_hint: str, worktree_root: str | None) -> list[str]:
    """The worktree roots the plugin uses for the repository around ``repo_hint``: the
    configured one, else where the default one may be (none outside a repository)."""
    if worktree_root:
        return [worktree_root]
    repo = find_repository(repo_hint)
    return default_root_candidates(repo) if repo is not None else []


def reclaim_dead_runs(repo_hint: str, worktree_root: str | None) -> int:
    """Reclaim what dead runs left in the worktree roots of the repository around
    ``repo_hint`` (``worktree_root`` if set); how many checkouts were removed.

    A run killed by ``os._exit`` (pytest-timeout's thread method), SIGKILL or a crashed
    xdist worker leaves its checkouts registered in the user's repository until something
    reclaims them: the plugin calls this at the end of every run (ports-only ones and runs
    that use no fixture included), and in the xdist controller as soon as a worker crashes.
    A run with nothing to reclaim pays a few ``stat``/``listdir`` calls and no import of the
    worktree machinery (:func:`may_hold_orphans` filters; the store decides, touching only
    what provably belongs to the plugin and is dead; pooled and kept checkouts stay).

    Never fails the run: an unreadable or unsafe root, or a record the store refuses to act
    on, is left for the next provisioning or ``pytest-aiops gc`` to report (they warn).
    """
    roots = [root for root in roots_of(repo_hint, worktree_root) if may_hold_orphans(root)]
    if not roots:
        return 0
    from .._errors import AiopsError  # only when there is something to do
    from .provider import reclaim_orphans

    removed = 0
    for root in roots:
        with warnings.catch_warnings():
            # The end of a run has no test to attribute a warning to, and a suite with
            # filterwarnings=error must not fail at exit for a record it never made.
            warnings.simplefilter("ignore")
            try:
                removed += len(reclaim_orphans(root))
            except (AiopsError, OSError):
                continue
    return removed
