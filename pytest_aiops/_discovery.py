"""The discovery snapshot (JSON file other tools read), prompt preamble and atomic writes.

The JSON layout is the reference's, key for key::

    {"sessionId", "workspaceRoot", "workingDirectory",
     "hardConstraints": [{"kind", "allocation"}],
     "softConstraints": {"env", "promptSections", "metadata"}}
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._types import JsonDict

PROMPT_HEADER = "Runtime resource constraints are already enforced by the orchestrator:"
DEFAULT_DISCOVERY_FILE = ".agent-context/resources.json"


@dataclass(frozen=True)
class HardConstraint:
    """One lease's allocation as recorded in the snapshot."""

    kind: str
    allocation: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocation", MappingProxyType(dict(self.allocation)))

    def to_dict(self) -> JsonDict:
        return {"kind": self.kind, "allocation": _plain(self.allocation)}


@dataclass(frozen=True)
class DiscoverySnapshot:
    """Everything a process needs to find its session's resources."""

    session_id: str
    workspace_root: str
    working_directory: str
    hard_constraints: Sequence[HardConstraint] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    prompt_sections: Sequence[str] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hard_constraints", tuple(self.hard_constraints))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "prompt_sections", tuple(self.prompt_sections))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    def allocation(self, kind: str) -> Mapping[str, Any] | None:
        """The first allocation of ``kind`` (as the reference's ``getHardConstraint``)."""
        for constraint in self.hard_constraints:
            if constraint.kind == kind:
                return constraint.allocation
        return None

    def to_dict(self) -> JsonDict:
        """The reference's JSON layout (camelCase keys)."""
        return {
            "sessionId": self.session_id,
            "workspaceRoot": self.workspace_root,
            "workingDirectory": self.working_directory,
            "hardConstraints": [c.to_dict() for c in self.hard_constraints],
            "softConstraints": {
                "env": dict(self.env),
                "promptSections": list(self.prompt_sections),
                "metadata": _plain(self.metadata),
            },
        }

    def to_json(self) -> str:
        """Pretty JSON with a trailing newline, byte-for-byte what the reference writes."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscoverySnapshot:
        """Parse the reference's layout; a missing or mistyped key is a ``ValueError``."""
        try:
            soft = data.get("softConstraints") or {}
            hard = data["hardConstraints"]
            if not isinstance(hard, list) or not isinstance(soft, Mapping):
                raise TypeError("hardConstraints must be a list and softConstraints an object")
            return cls(
                session_id=str(data["sessionId"]),
                workspace_root=str(data["workspaceRoot"]),
                working_directory=str(data["workingDirectory"]),
                hard_constraints=[
                    HardConstraint(str(c["kind"]), dict(c["allocation"])) for c in hard
                ],
                env={str(k): str(v) for k, v in dict(soft.get("env") or {}).items()},
                prompt_sections=[str(s) for s in soft.get("promptSections") or ()],
                metadata=dict(soft.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a discovery snapshot: {e!r}") from e

    @classmethod
    def from_json(cls, text: str) -> DiscoverySnapshot:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DiscoverySnapshot:
        """Read a discovery file written by this package or by the reference."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def compose_prompt(prompt: str, sections: Iterable[str], extra_sections: Iterable[str] = ()) -> str:
    """The reference's preamble: a header, ``- section`` lines, a blank line, the prompt."""
    all_sections = [*sections, *extra_sections]
    if not all_sections:
        return prompt
    return "\n".join([PROMPT_HEADER, *(f"- {s}" for s in all_sections), "", prompt])


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` so readers see the old file or the new one, never half of one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _plain(value: Any) -> Any:
    """Deep-copy mappings/sequences into JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
