"""What every ``pytest-aiops`` command says back: one-line errors and warnings, exit statuses."""

from __future__ import annotations

import sys
from typing import Any

from .._core.orchestrator import rollback_notes
from .._errors import NoSpaceError, UnsafeDirectoryError, escape

PROG = "pytest-aiops"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


def report(message: str) -> None:
    """Write ``message`` as the one ``pytest-aiops: error: ...`` line on stderr."""
    sys.stderr.write(f"{PROG}: error: {escape(message)}\n")
    sys.stderr.flush()


def one_line(error: BaseException) -> str:
    """An error as one line; a worktree root refused for safety names ``--worktree-root``.

    The orchestrator's notes on rollbacks that failed too are kept (what was left behind).
    """
    line = " ".join(str(error).split("\n")[:1]) or type(error).__name__
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, (UnsafeDirectoryError, NoSpaceError)):
            line = cause.for_setting("--worktree-root")
            break
        cause = cause.__cause__
    return line + "".join(f"; {note}" for note in rollback_notes(error))


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A warning in the CLI is one ``pytest-aiops: warning: ...`` line, no source line
    (installed as :func:`warnings.showwarning`, whose signature this is)."""
    sys.stderr.write(f"{PROG}: warning: {escape(' '.join(str(message).split()))}\n")
    sys.stderr.flush()
