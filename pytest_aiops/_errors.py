"""The exception tree: one base class to catch, subclasses that also are the matching builtin.

::

    AiopsError
    ├── OptionError(AiopsError, ValueError)          .option  -- a bad provider/plugin option
    ├── ProvisioningError(AiopsError, RuntimeError) .session_id, .kind -- failed, rolled back
    ├── ReleaseError(AiopsError, RuntimeError)      .failures -- one or more releases failed
    ├── GitError(AiopsError, RuntimeError)          .command, .returncode, .stderr
    ├── LockError(AiopsError, OSError)              .lock_path -- a lock directory/file is unusable
    │   └── ParentGoneError (in _locking)          -- a child's parent lease has ended
    ├── NoSpaceError(AiopsError, OSError)          .path, .setting -- the filesystem is full
    ├── PortsExhaustedError(AiopsError, RuntimeError) -- no free block / no port left in a lease
    ├── ChildSplitError(AiopsError, ValueError)     -- a parent range cannot be split as asked
    └── RegistrationError(AiopsError, ValueError, TypeError) -- not a provider, duplicate kind

    AiopsWarning(UserWarning)                      -- works, but risky (e.g. ephemeral ports)
"""

from __future__ import annotations

import errno
from collections.abc import Sequence


class AiopsError(Exception):
    """Base class of every error pytest-aiops raises on purpose."""


class OptionError(AiopsError, ValueError):
    """A resource option (or plugin setting) has a value outside what is allowed."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class ProvisioningError(AiopsError, RuntimeError):
    """Provisioning a session failed; everything it had leased was released again.

    The message starts with ``Resource provisioning failed: `` (the reference's wording)
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


class PortsExhaustedError(AiopsError, RuntimeError):
    """No free port block could be leased, or a lease has no unused port left."""


class ChildSplitError(AiopsError, ValueError):
    """A parent session's resources cannot be split among the requested children."""


class RegistrationError(AiopsError, ValueError, TypeError):
    """A provider cannot be registered: not a provider, or its kind is taken."""


class AiopsWarning(UserWarning):
    """Something works but is risky, e.g. a port range inside the OS ephemeral range."""
