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
puts the default back. A process forked from the run (multiprocessing's ``fork`` start
method) inherits the handler but still dies of SIGTERM, as ``Process.terminate()`` expects.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

#: The KeyboardInterrupt's text, shown by pytest's "KeyboardInterrupt" summary line.
MESSAGE = "pytest-aiops: SIGTERM received; the run stops as after Ctrl-C (teardown runs)"


#: The process that installed the handler: a forked child (multiprocessing's ``fork``
#: start method) inherits it, but is no pytest run and must die of SIGTERM as before.
_installed_in: int | None = None


_fork_hooks = False
#: Whether ``_before_fork`` put the default back for the fork in progress.
_suspended = False


def _before_fork() -> None:
    """Fork with the default disposition, so the child starts with it at the kernel level.

    CPython drops signals that arrive in a child between ``fork()`` and its after-fork
    reset of the signal state: with a Python handler inherited, a ``Process.terminate()``
    right after ``start()`` would be lost and the child would run on. The parent is without
    the handler only for the fork itself (a SIGTERM then ends it as before this plugin).
    """
    global _suspended
    _suspended = False
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works only there; the handler's pid check covers the child
    if signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _suspended = True


def _after_fork_in_parent() -> None:
    global _suspended
    if _suspended:
        _suspended = False
        signal.signal(signal.SIGTERM, _interrupt)


def _forked() -> None:
    global _suspended
    _suspended = False  # the child keeps the default disposition it was forked with


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Raise in the main thread, where pytest catches Ctrl-C; in a forked child, die."""
    if os.getpid() != _installed_in:
        # ``Process.terminate()`` / ``Pool.terminate()`` send SIGTERM and expect the child
        # to end by it (exit code -15), not to print a KeyboardInterrupt traceback.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
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
    global _installed_in, _fork_hooks
    _installed_in = os.getpid()
    if not _fork_hooks and hasattr(os, "register_at_fork"):
        _fork_hooks = True  # once per process: at-fork hooks cannot be unregistered
        os.register_at_fork(
            before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_forked
        )
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
