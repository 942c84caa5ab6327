"""The repository-binding variables hidden from the test process while worktrees are out.

pytest run from a git hook inherits what git exports to it: ``GIT_INDEX_FILE`` (pre-commit
during ``git commit -a``: the user's commit index), ``GIT_DIR``, ``GIT_OBJECT_DIRECTORY`` and
``GIT_ALTERNATE_OBJECT_DIRECTORIES`` (pre-receive's quarantine)... A test that runs git in its
worktree without ``env=`` passes them on, and git then acts on the *user's* repository: the
test's ``git add`` lands in the user's commit. So from the moment the first worktree fixture
is provisioned until the last one is released, these variables are removed from
``os.environ`` (the whole process: every thread and subprocess sees the same environment),
and put back afterwards. Nested and concurrent worktrees share one hiding (a count).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


class HiddenVariables:
    """Removes ``names`` from ``os.environ`` while at least one worktree is out; counted.

    The first :meth:`hide` takes the variables out (remembering their values); the matching
    last :meth:`restore` puts back each one that nobody set again meanwhile (a value set
    while hidden, by the test or a ``monkeypatch``, is left as it is).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._lock = threading.Lock()
        self._worktrees_out = 0
        self._saved: dict[str, str] = {}

    @property
    def worktrees_out(self) -> int:
        """How many worktrees are out (each :meth:`hide` not yet restored)."""
        return self._worktrees_out

    def hide(self) -> None:
        """One more worktree out; the first takes the variables out of ``os.environ``."""
        with self._lock:
            if self._worktrees_out == 0:
                self._saved = {
                    name: os.environ.pop(name) for name in self.names if name in os.environ
                }
            self._worktrees_out += 1

    def restore(self) -> None:
        """One worktree back; the last puts the variables back. Extra calls do nothing."""
        with self._lock:
            if self._worktrees_out == 0:
                return
            self._worktrees_out -= 1
            if self._worktrees_out:
                return
            for name, value in self._saved.items():
                os.environ.setdefault(name, value)
            self._saved = {}

    @contextmanager
    def hidden(self) -> Iterator[None]:
        """``with variables.hidden():`` -- hidden inside, restored on the way out."""
        self.hide()
        try:
            yield
        finally:
            self.restore()


_shared: HiddenVariables | None = None
_shared_lock = threading.Lock()


def repo_variables() -> HiddenVariables:
    """The process's one :class:`HiddenVariables` of the repository-binding variables
    (``REPO_ENV``, the set the plugin's own git and ``GitWorktree.env()`` drop)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            from .._worktrees.provider import REPO_ENV

            _shared = HiddenVariables(REPO_ENV)
        return _shared
