"""Reclaim what dead runs left in this repository's worktree root: at the end of every run,
and in the xdist controller as soon as a worker crashes.

A run killed by ``os._exit`` (pytest-timeout's thread method), SIGKILL or a crashed xdist
worker leaves its checkouts registered in the user's repository (``git worktree list`` shows
them) until something reclaims them. Every run of the plugin, ports-only ones and runs that
use no fixture at all included, ends by reclaiming its repository's orphans, so nothing
stays past the next run. It must cost a run that has nothing to reclaim next to nothing: a
few ``stat``/``listdir`` calls and no import of the worktree machinery
(:func:`~pytest_aiops._worktrees.roots.may_hold_orphans` filters; the store decides).

Only what provably belongs to the plugin and is dead is touched: the store's owner locks
(a checkout whose lock another process holds is live), records in a root private to us
(see :mod:`pytest_aiops._worktrees.store`). Pooled and kept checkouts are left alone.
"""

from __future__ import annotations

import warnings

from .._worktrees.roots import default_root_candidates, find_repository, may_hold_orphans


def roots_of(repo_hint: str, worktree_root: str | None) -> list[str]:
    """The worktree roots the plugin uses for the repository around ``repo_hint``: the
    configured one, else where the default one may be (none outside a repository)."""
    if worktree_root:
        return [worktree_root]
    repo = find_repository(repo_hint)
    return default_root_candidates(repo) if repo is not None else []


def reclaim(repo_hint: str, worktree_root: str | None) -> int:
    """Reclaim the orphans of the repository's worktree roots; how many were removed.

    Never fails the run: an unreadable or unsafe root, or a record the store refuses to act
    on, is left for the next provisioning or ``pytest-aiops gc`` to report (they warn).
    """
    roots = [root for root in roots_of(repo_hint, worktree_root) if may_hold_orphans(root)]
    if not roots:
        return 0
    from .._errors import AiopsError  # only when there is something to do
    from .._worktrees.provider import reclaim_orphans

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
