"""Built-in resource providers: ``git-worktree`` and ``port-range``."""
