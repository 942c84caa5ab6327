"""The exception tree: one base class to catch, subclasses that also are the matching builtin.

::

    AiopsError
    ├── OptionError(AiopsError, ValueError)          .option -- a bad provider/plugin/CLI option
    │   ├── UnsafeDirectoryError                   .path, .problem -- a directory not ours alone
    │   └── CommandLineError                       -- the pytest-aiops command line (exit 2)
    ├── InvalidArgumentError(AiopsError, ValueError, TypeError) -- an API called with a value
    │                                                 of the wrong type or shape (caller's bug)
    ├── DiscoveryError(AiopsError, ValueError)      -- not a discovery snapshot (JSON, dict, file)
    ├── ProvisioningError(AiopsError, RuntimeError) .session_id, .kind -- failed, rolled back
    ├── ReleaseError(AiopsError, RuntimeError)      .failures -- one or more releases failed
    ├── ClosedError(AiopsError, RuntimeError)       -- used after its resources were released
    ├── GitError(AiopsError, RuntimeError)          .command, .returncode, .stderr
    ├── LockError(AiopsError, OSError)              .lock_path -- a lock directory/file is unusable
    │   ├── ParentGoneError                        -- a child's parent lease has ended
    │   └── UnsupportedPlatformError               -- no lock backend on this platform (Windows)
    ├── NoSpaceError(AiopsError, OSError)          .path, .setting -- the filesystem is full
    ├── WorktreeNameError(AiopsError, FileExistsError) -- every checkout name under a root is taken
    ├── PortsExhaustedError(AiopsError, RuntimeError) -- no free block / no port left in a lease
    ├── ChildSplitError(AiopsError, ValueError)     -- a parent range cannot be split as asked
    └── RegistrationError(AiopsError, ValueError, TypeError) -- not a provider, duplicate kind
        └── UnknownKindError(RegistrationError, LookupError) -- no provider for a kind

    AiopsWarning(pytest.PytestWarning)             -- works, but risky (e.g. ephemeral ports);
                                                      a UserWarning where pytest is absent

Every error pytest-aiops raises on purpose is one of these, and each pickles (for process
pools); a builtin error escaping a private module is a bug. :func:`escape` is here too: every
message that quotes a field read from disk (possibly another user's) goes through it, and this
module is the bottom layer.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING


def escape(value: object) -> str:
    """``value`` as text with control characters escaped (``\\x1b``, ``\\n``): a field read
    from a file another user may have written never moves the cursor or forges a line."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class AiopsError(Exception):
    """Base class of every error pytest-aiops raises on purpose.

    Every subclass pickles (a core-API user's process pool sends errors back across
    processes): :meth:`__reduce__` rebuilds one from its ``args`` and attributes without
    calling the subclass's ``__init__``, whose signature differs from ``args``.
    """

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        state = dict(self.__dict__)
        if isinstance(self, OSError):  # not in args once OSError has parsed them
            for name in ("filename", "filename2"):
                if getattr(self, name) is not None:
                    state[name] = getattr(self, name)
        return (_rebuild, (type(self), self.args, state))


def _rebuild(
    cls: type[AiopsError], args: tuple[object, ...], state: dict[str, object]
) -> AiopsError:
    """An instance of ``cls`` as :meth:`AiopsError.__reduce__` described it."""
    error = cls.__new__(cls, *args)
    # OSError's errno and strerror come from its own __init__ over the same args.
    (OSError if issubclass(cls, OSError) else Exception).__init__(error, *args)
    for name, value in state.items():
        setattr(error, name, value)
    return error


class OptionError(AiopsError, ValueError):
    """A resource option (or plugin setting) has a value outside what is allowed."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class UnsafeDirectoryError(OptionError):
    """A directory we would keep private state in is not safe (someone else's, a symlink,
    writable by others). The message names the setting of the entry point in use:
    :meth:`for_setting` rewrites it for the plugin's or the CLI's spelling."""

    def __init__(self, path: str, problem: str, *, option: str = "rootDirectory") -> None:
        self.path = path
        self.problem = problem
        super().__init__(option, self.for_setting(option, f"the {option} option"))

    def for_setting(self, name: str, setting: str | None = None) -> str:
        """The one line, naming the setting as the entry point in use spells it: ``name``
        (``--worktree-root``) opens it, ``setting`` (default ``name``) is what to change."""
        return (
            f"{name} must be a writable directory, not {self.path!r} ({escape(self.problem)}); "
            "it must be this user's alone, since another user could steer or read what is "
            f"written there: remove it, or set {setting or name} to a directory of your own"
        )


class CommandLineError(OptionError):
    """The ``pytest-aiops`` command line itself is wrong (exit status 2)."""

    def __init__(self, message: str, option: str = "") -> None:
        super().__init__(option, message)


class InvalidArgumentError(AiopsError, ValueError, TypeError):
    """An API was called with a value of the wrong type or shape: the caller's bug, not a
    setting (a non-string session id, a provider returning something that is no lease)."""


class DiscoveryError(AiopsError, ValueError):
    """A JSON text, mapping or file is not a discovery snapshot; the message says why."""


class ProvisioningError(AiopsError, RuntimeError):
    """Provisioning a session failed; everything it had leased was released again.

    The message starts with "Resource provisioning failed:" (the reference's wording)
    and the original exception is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, session_id: str, kind: str | None) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.kind = kind


class ReleaseError(AiopsError, RuntimeError):
    """Releasing a session failed for one or more leases; all releases were still attempted."""

    def __init__(self, failures: Sequence[tuple[str, BaseException]]) -> None:
        self.failures = list(failures)
        detail = " | ".join(f"{kind}: {error}" for kind, error in self.failures)
        super().__init__(f"Failed to release provisioned resources: {detail}")


class ClosedError(AiopsError, RuntimeError):
    """An object was used after its resources were released (a worker after the session)."""


class GitError(AiopsError, RuntimeError):
    """A git command failed; carries git's own stderr so the user sees git's reason."""

    def __init__(
        self, message: str, *, command: Sequence[str], returncode: int | None, stderr: str
    ) -> None:
        super().__init__(message)
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr


class LockError(AiopsError, OSError):
    """A lock directory or lock file cannot be created, opened or locked."""

    def __init__(self, message: str, *, lock_path: str) -> None:
        super().__init__(message)
        self.lock_path = lock_path

    def __str__(self) -> str:  # OSError.__str__ would render "[Errno ...]" from args
        return str(self.args[0])


class ParentGoneError(LockError):
    """A child slice was requested but its parent lease no longer exists."""


class UnsupportedPlatformError(LockError):
    """This platform has no lock backend (Windows): one line saying what is missing, a
    :class:`LockError` so the port fixtures fall back to kernel-chosen ports."""

    def __init__(self, what: str, needs: str) -> None:
        import sys

        super().__init__(
            f"pytest-aiops {what} is not supported on {sys.platform} yet (it needs {needs})",
            lock_path="",
        )


class NoSpaceError(AiopsError, OSError):
    """A checkout or record could not be written: no space (or no inodes) left there.

    ``errno`` is ``ENOSPC``; the message says ``No space left on device`` and names the
    path, so neither git's per-file complaints nor a traceback is what the user reads.
    ``setting`` is the option that moves the work elsewhere (``rootDirectory``);
    :meth:`for_setting` names it as the entry point in use spells it.
    """

    def __init__(self, path: str, detail: str = "", *, setting: str = "rootDirectory") -> None:
        super().__init__(errno.ENOSPC, "No space left on device", path)
        self.path = path
        self.detail = detail
        self.setting = setting

    def for_setting(self, setting: str) -> str:
        """The one line, naming ``setting`` as what to change."""
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"No space left on device: {self.path!r}{detail}; free space there, or set "
            f"{setting} to a directory on a filesystem with room"
        )

    def __str__(self) -> str:
        return self.for_setting(f"the {self.setting} option")


class WorktreeNameError(AiopsError, FileExistsError):
    """No name is left for a checkout under its root (``<name>``, ``<name>-2`` ... all
    taken by directories that are not ours to reuse). Built like the ``OSError`` it is:
    ``WorktreeNameError(errno.EEXIST, message, path)``."""


class PortsExhaustedError(AiopsError, RuntimeError):
    """No free port block could be leased, or a lease has no unused port left.

    ``reason`` is what was held, without the advice (the whole message when none was given):
    what a caller that goes on anyway reports, such as a worker taking another slice.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class ChildSplitError(AiopsError, ValueError):
    """A parent session's resources cannot be split among the requested children."""


class RegistrationError(AiopsError, ValueError, TypeError):
    """A provider cannot be registered: not a provider, or its kind is taken."""


class UnknownKindError(RegistrationError, LookupError):
    """A request names a resource kind no provider is registered for."""


if TYPE_CHECKING:
    from _pytest.warning_types import PytestWarning as _WarningBase
else:
    try:
        # The class ``pytest.PytestWarning`` is, from the one small module that defines it:
        # importing all of pytest would cost the command line and core users ~0.3 s.
        from _pytest.warning_types import PytestWarning as _WarningBase
    except ImportError:  # the core used where pytest is not installed
        _WarningBase = UserWarning


class AiopsWarning(_WarningBase):
    """Something works but is risky, e.g. a port range inside the OS ephemeral range.

    A ``pytest.PytestWarning`` (so ``-W ignore::pytest.PytestWarning`` and pytest's docs on
    plugin warnings cover it), and so a ``UserWarning``; only a ``UserWarning`` where pytest
    is not installed, since the core works without it.
    """
