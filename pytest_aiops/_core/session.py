"""ProvisionedResources: a live session's leases, its context, and their release."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from .._errors import ReleaseError
from .discovery import (
    DEFAULT_DISCOVERY_FILE,
    DiscoverySnapshot,
    compose_prompt,
    write_atomic,
)
from .types import RuntimeInjection

Releaser = tuple[str, Callable[[], object]]
_R = TypeVar("_R", bound="ProvisionedResources")


def release_in_reverse(releases: Sequence[Releaser]) -> list[tuple[str, BaseException]]:
    """Call every release, last first; return the failures instead of stopping at one."""
    failures: list[tuple[str, BaseException]] = []
    for kind, release in reversed(releases):
        try:
            release()
        except Exception as error:  # every release must be attempted
            failures.append((kind, error))
    return failures


class ProvisionedResources:
    """A provisioned session: its leases, env, prompt sections and working directory.

    Use it as a context manager, or call :meth:`release` (idempotent, thread-safe).
    """

    def __init__(self, snapshot: DiscoverySnapshot, releases: Sequence[Releaser]) -> None:
        """A session whose context is ``snapshot`` and whose leases ``releases`` give back."""
        self.session_id = snapshot.session_id
        self.workspace_root = snapshot.workspace_root
        self.working_directory = snapshot.working_directory
        self._snapshot = snapshot
        self._releases = list(releases)
        self._lock = threading.Lock()
        self._released = False

    @classmethod
    def from_snapshot(
        cls: type[_R], snapshot: DiscoverySnapshot, releases: Sequence[Releaser]
    ) -> _R:
        """A session whose context is ``snapshot`` and whose leases ``releases`` give back
        (of the class it is called on: a subclass gets one of its own)."""
        return cls(snapshot, releases)

    @property
    def released(self) -> bool:
        return self._released

    @property
    def env(self) -> Mapping[str, str]:
        """The session's own variables (``AGENT_*``), without any base environment."""
        return self._snapshot.env

    def allocation(self, kind: str) -> Mapping[str, Any] | None:
        """The hard allocation of the first lease of ``kind``, or ``None``."""
        return self._snapshot.allocation(kind)

    def _release_of(self, kind: str) -> Callable[[], object] | None:
        """The release of the first live lease of ``kind`` as its provider returned it (a
        typed one may carry more, e.g. the worktree provider's keep), or ``None``."""
        with self._lock:
            return next((release for k, release in self._releases if k == kind), None)

    def injected_env(self, base_env: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """``base_env`` (default ``os.environ``) with the session's variables on top."""
        base = os.environ if base_env is None else base_env
        merged = {k: v for k, v in base.items() if v is not None}
        merged.update(self._snapshot.env)
        return merged

    def compose_prompt(self, prompt: str, extra_sections: Iterable[str] = ()) -> str:
        """The prompt with the session's constraints as a preamble (the reference's text)."""
        return compose_prompt(prompt, self._snapshot.prompt_sections, extra_sections)

    def to_discovery_snapshot(self) -> DiscoverySnapshot:
        return self._snapshot

    def build_runtime_injection(
        self,
        discovery_file_relative_path: str | None = None,
        base_env: Mapping[str, str | None] | None = None,
    ) -> RuntimeInjection:
        """Write the discovery file (atomically) and return cwd + env for a subprocess.

        The file goes to ``.agent-context/resources.json`` under the working directory
        unless another (relative or absolute) path is given; ``AGENT_DISCOVERY_FILE``
        points at it.
        """
        relative = (discovery_file_relative_path or "").strip() or DEFAULT_DISCOVERY_FILE
        path = os.path.normpath(os.path.join(self.working_directory, relative))
        write_atomic(path, self._snapshot.to_json())
        env = self.injected_env(base_env)
        env["AGENT_DISCOVERY_FILE"] = path
        return RuntimeInjection(self.working_directory, env, path)

    def release(self) -> None:
        """Release every lease in reverse order, once; raise :class:`ReleaseError` if any failed.

        Every release is attempted even when an earlier one fails.
        """
        with self._lock:
            if self._released:
                return
            self._released = True
            failures = release_in_reverse(self._releases)
            self._releases.clear()
        if failures:
            error = ReleaseError(failures)
            raise error from failures[0][1]

    def __enter__(self) -> ProvisionedResources:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        kinds = ", ".join(c.kind for c in self._snapshot.hard_constraints)
        state = "released" if self._released else "live"
        return f"<ProvisionedResources {self.session_id!r} [{kinds}] {state}>"
