"""SIGTERM ends a pytest run as Ctrl-C does, so its teardown runs and nothing is left behind.

PYTEST_DONT_REWRITE

Python's default for SIGTERM is to die at once: no fixture teardown, no ``pytest_sessionfinish``,
so worktrees stay registered in the user's repository and a git stuck in a filter keeps
running. CI cancellations, ``timeout`` and IDE stop buttons all send SIGTERM. Installed by
:mod:`pytest_aiops.plugin` at configure, in every process of a run (an xdist worker too): the
handler raises :class:`KeyboardInterrupt`, which pytest handles as Ctrl-C (teardown runs, exit
status 2), and a git the plugin is waiting for is killed with its process group
(``_worktrees/git.py`` kills the group on any exception). Only Python's default handler is
replaced: a handler the user's code or another plugin set is left alone. The config's cleanup
puts the default back.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

#: The KeyboardInterrupt's text, shown by pytest's "KeyboardInterrupt" summary line.
MESSAGE = "pytest-aiops: SIGTERM received; the run stops as after Ctrl-C (teardown runs)"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Raise in the main thread, where pytest catches Ctrl-C."""
    raise KeyboardInterrupt(MESSAGE)


def install(config: pytest.Config) -> bool:
    """Make SIGTERM a KeyboardInterrupt for this config's lifetime; ``False`` if not done.

    Not done off the main thread (``signal.signal`` must run there), on a platform without
    SIGTERM handlers, or when the current handler is not Python's default (the user's code,
    another plugin, or an enclosing pytest run of pytester already installed one).
    """
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(sigterm) is not signal.SIG_DFL:
        return False
    try:
        signal.signal(sigterm, _interrupt)
    except (ValueError, OSError):  # pragma: no cover - main thread checked above
        return False

    def restore() -> None:
        # Only our own handler is taken back: one installed since (by a test) stays.
        if signal.getsignal(sigterm) is _interrupt:
            signal.signal(sigterm, signal.SIG_DFL)

    config.add_cleanup(restore)
    return True
