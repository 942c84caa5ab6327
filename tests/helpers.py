"""The names the test modules once imported from here, re-exported from the topic modules.

The helpers live by topic in ``tests/<topic>_helpers.py``: ``process_helpers`` (children that
import this checkout, drivers, private mount namespaces), ``git_helpers``, ``snapshot_helpers``
(a repository or checkout before and after), ``worktree_helpers`` (providers, leases, a
messy checkout), ``port_helpers`` (lease records, TIME_WAIT), ``wait_helpers`` and
``inner_run_helpers`` (every inner pytest run warning-free). Import from those; this module
only keeps ``from .helpers import ...`` working.
"""

from __future__ import annotations

from .git_helpers import GIT_IDENTITY, MakeRepo, git, record_git_calls, run
from .inner_run_helpers import allowed_inner_warnings, check_inner_warnings, inner_warnings
from .port_helpers import Holder, live_leases, make_time_wait
from .process_helpers import (
    REPO_ROOT,
    checkout_pythonpath,
    child_env,
    namespace_problem,
    run_driver,
)
from .snapshot_helpers import checkout_state, clone_state, git_dir_listing, repo_state, tree_state
from .wait_helpers import wait_for
from .worktree_helpers import (
    builtin_registry,
    checkouts,
    make_a_mess,
    registrations,
    worktree_lease,
    worktree_provider,
)

__all__ = [
    "GIT_IDENTITY",
    "REPO_ROOT",
    "Holder",
    "MakeRepo",
    "allowed_inner_warnings",
    "builtin_registry",
    "check_inner_warnings",
    "checkout_pythonpath",
    "checkout_state",
    "checkouts",
    "child_env",
    "clone_state",
    "git",
    "git_dir_listing",
    "inner_warnings",
    "live_leases",
    "make_a_mess",
    "make_time_wait",
    "namespace_problem",
    "record_git_calls",
    "registrations",
    "repo_state",
    "run",
    "run_driver",
    "tree_state",
    "wait_for",
    "worktree_lease",
    "worktree_provider",
]
