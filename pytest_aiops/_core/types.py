"""Frozen value types shared by the orchestrator, the providers and the plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from .._errors import InvalidArgumentError, RegistrationError
from .values import dataclass

#: JSON-compatible option / allocation mapping (the reference's ``Record<string, any>``).
JsonDict = dict[str, Any]


def _frozen_copy(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class ResourceRequest:
    """A request for one resource of ``kind``.

    ``options`` use the reference's camelCase keys (``basePort``, ``blockSize``,
    ``blockCount``, ``primaryPortOffset``, ``lockDirectory``, ``rootDirectory``,
    ``baseRef``, ``targetPath``, ...) so requests written as JSON for the reference work
    unchanged.
    """

    kind: str
    options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind.strip():
            raise InvalidArgumentError(
                f"ResourceRequest.kind must be a non-empty string, not {self.kind!r}"
            )
        object.__setattr__(self, "options", _frozen_copy(self.options))

    def to_dict(self) -> JsonDict:
        """The reference's JSON shape: ``{"kind": ..., "options": {...}}``."""
        return {"kind": self.kind, "options": dict(self.options or {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceRequest:
        """Build a request from the reference's JSON shape."""
        options = data.get("options")
        if options is not None and not isinstance(options, Mapping):
            raise InvalidArgumentError(
                f"resource request options must be an object, not {options!r}"
            )
        return cls(str(data["kind"]), options)


@dataclass(frozen=True)
class ResourceContextPatch:
    """What a lease adds to the session's soft context (the reference's ``soft``)."""

    env: Mapping[str, str] = field(default_factory=dict)
    prompt_sections: Sequence[str] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    preferred_working_directory: str | None = None

    def __post_init__(self) -> None:
        # One update of the fields (as values.dataclass's __init__ fills them), not a
        # frozen-bypassing __setattr__ call each: a port lease makes one of these.
        vars(self).update(
            env=MappingProxyType(dict(self.env or {})),
            prompt_sections=tuple(self.prompt_sections),
            metadata=MappingProxyType(dict(self.metadata or {})),
        )

    @classmethod
    def coerce(cls, value: ResourceContextPatch | Mapping[str, Any] | None) -> ResourceContextPatch:
        """Accept a patch, ``None``, or a mapping with the reference's camelCase keys."""
        if value is None:
            return cls()
        if isinstance(value, ResourceContextPatch):
            return value
        if isinstance(value, Mapping):
            return cls(
                env=dict(value.get("env") or {}),
                prompt_sections=tuple(value.get("promptSections") or ()),
                metadata=dict(value.get("metadata") or {}),
                preferred_working_directory=value.get("preferredWorkingDirectory"),
            )
        raise InvalidArgumentError(
            f"lease soft patch must be a ResourceContextPatch or mapping, not {value!r}"
        )


@dataclass(frozen=True)
class ResourceLease:
    """One provisioned resource.

    ``hard`` is the allocation recorded in the discovery snapshot, ``soft`` what the lease
    adds to env / prompt / metadata / working directory, and ``release`` gives it back.
    """

    kind: str
    hard: Mapping[str, Any]
    release: Callable[[], object]
    soft: ResourceContextPatch | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        vars(self).update(
            hard=MappingProxyType(dict(self.hard or {})),
            soft=ResourceContextPatch.coerce(self.soft),
        )

    @property
    def patch(self) -> ResourceContextPatch:
        """``soft`` as a :class:`ResourceContextPatch` (never ``None``)."""
        assert isinstance(self.soft, ResourceContextPatch)
        return self.soft


@runtime_checkable
class ResourceProvider(Protocol):
    """Turns resource requests of one ``kind`` into leases.

    Any object with these two members is a provider; the built-ins are no different.
    ``provision`` must either return a lease or raise having leased nothing.
    """

    @property
    def kind(self) -> str: ...

    def provision(
        self, *, session_id: str, workspace_root: str, options: Mapping[str, Any]
    ) -> ResourceLease: ...


def provider_kind(provider: object) -> str:
    """``provider.kind``, after checking it is a provider (a :class:`RegistrationError` if not)."""
    kind = getattr(provider, "kind", None)
    if not isinstance(kind, str) or not kind or not callable(getattr(provider, "provision", None)):
        raise RegistrationError(
            f"{provider!r} is not a resource provider: it needs a non-empty str `kind` "
            "and a `provision(session_id=, workspace_root=, options=)` method"
        )
    return kind


@dataclass(frozen=True)
class RuntimeInjection:
    """Where and how to start a process inside a provisioned session."""

    working_directory: str
    env: Mapping[str, str]
    discovery_file_path: str
