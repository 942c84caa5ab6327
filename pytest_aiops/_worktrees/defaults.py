"""The git-worktree defaults, in one place: the ref checked out and the isolation levels.

Imports nothing, so the plugin's settings can validate and show these values without
importing git or the provider (the plugin loads on every pytest start).
"""

from __future__ import annotations

#: The commit-ish checked out when a request names none.
DEFAULT_BASE_REF = "HEAD"
#: ``git worktree add --detach``: shares objects, refs and config with the user's repository.
WORKTREE = "worktree"
#: A repository of its own borrowing the user's objects (``objects/info/alternates``).
CLONE = "clone"
ISOLATIONS = (WORKTREE, CLONE)
DEFAULT_ISOLATION = WORKTREE
#: How many released checkouts a worktree root keeps for reuse (all repositories' states
#: together; the least recently released is deleted first). 0: none.
DEFAULT_POOL_SIZE = 8
