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
from dataclasses import field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._errors import DiscoveryError
from .types import JsonDict
from .values import dataclass

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
        """Pretty JSON with a trailing newline, byte-for-byte what the reference writes.

        A non-UTF-8 path (``os.fsdecode`` gives lone surrogates) cannot be written as UTF-8:
        then every non-ASCII character is escaped (``\\udcff``), which is valid JSON that
        reads back to the same ``str`` (and ``os.fsencode`` of it to the same bytes).
        """
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(self.to_dict(), indent=2, ensure_ascii=True) + "\n"
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscoverySnapshot:
        """Parse the reference's layout; a missing or mistyped key is a ``ValueError``.

        Types are checked, not coerced: a discovery file may come from anywhere, and
        ``sessionId: 5`` or ``env: {"A": 1}`` is not what the layout says.
        """
        if not isinstance(data, Mapping):
            raise DiscoveryError(
                f"not a discovery snapshot: a JSON object is needed, not {type(data).__name__}"
            )

        def text(mapping: Mapping[str, Any], key: str) -> str:
            value = mapping.get(key)
            if not isinstance(value, str):
                raise DiscoveryError(
                    f"not a discovery snapshot: {key} must be a string, not {value!r}"
                )
            return value

        soft = data.get("softConstraints") or {}
        hard = data.get("hardConstraints")
        if not isinstance(hard, list):
            raise DiscoveryError("not a discovery snapshot: hardConstraints must be a list")
        if not isinstance(soft, Mapping):
            raise DiscoveryError("not a discovery snapshot: softConstraints must be an object")
        constraints = []
        for item in hard:
            if not isinstance(item, Mapping) or not isinstance(item.get("allocation"), Mapping):
                raise DiscoveryError(
                    "not a discovery snapshot: hardConstraints entries must be "
                    f"{{kind, allocation}} objects, not {item!r}"
                )
            constraints.append(HardConstraint(text(item, "kind"), dict(item["allocation"])))
        env = soft.get("env") or {}
        sections = soft.get("promptSections") or []
        metadata = soft.get("metadata") or {}
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise DiscoveryError("not a discovery snapshot: softConstraints.env must map strings")
        if not isinstance(sections, list) or not all(isinstance(x, str) for x in sections):
            raise DiscoveryError("not a discovery snapshot: promptSections must be strings")
        if not isinstance(metadata, Mapping):
            raise DiscoveryError("not a discovery snapshot: metadata must be an object")
        return cls(
            session_id=text(data, "sessionId"),
            workspace_root=text(data, "workspaceRoot"),
            working_directory=text(data, "workingDirectory"),
            hard_constraints=constraints,
            env=dict(env),
            prompt_sections=list(sections),
            metadata=dict(metadata),
        )

    @classmethod
    def from_json(cls, text: str) -> DiscoverySnapshot:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DiscoverySnapshot:
        """Read a discovery file written by this package or by the reference; an error
        names the file."""
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DiscoveryError(f"{os.fspath(path)}: {error}") from error


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
