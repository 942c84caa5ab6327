"""The ``git-worktree`` request and allocation as typed values, the reference's JSON at the edges.

:class:`WorktreeSpec` is what a ``git-worktree`` request asks for; :meth:`WorktreeSpec.from_options`
reads the reference's camelCase options once, validating each with a one-line error naming
the option as written; :meth:`WorktreeSpec.to_options` writes them back. A field left
``None`` is the provider's default (its config's). :class:`WorktreeAllocation` is what a
lease holds: :meth:`~WorktreeAllocation.to_json` is the lease's ``hard`` allocation,
:meth:`~WorktreeAllocation.from_json` its one parse. They live in the core because the
child split (:mod:`.children`) reads a parent's allocation and writes a child's request;
the provider (``_worktrees/provider.py``) leases them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import InvalidArgumentError, OptionError
from .options import (
    normalize_target_path,
    read_boolean,
    read_optional_string,
    read_string,
    warn_unknown,
)
from .values import dataclass

KIND = "git-worktree"
#: The isolation levels (``_worktrees/defaults.py`` names them for the plugin's settings,
#: which load without the core): a linked worktree, the reference's, or a private clone.
ISOLATIONS = ("worktree", "clone")
#: What an allocation without ``baseRef`` / ``isolation`` means (the reference's defaults).
HEAD = "HEAD"
LINKED = "worktree"

#: The options a ``git-worktree`` request may carry (others are warned about and ignored).
KNOWN_OPTIONS = frozenset(
    {
        "rootDirectory",
        "baseRef",
        "targetPath",
        "isolation",
        "pool",
        "poolSize",
        "workingState",
        "worktreeInclude",
        "snapshotDirectory",
    }
)


def check_isolation(value: object) -> str:
    """``value`` if it is an isolation level, else the option's one-line error."""
    if value not in ISOLATIONS:
        raise OptionError(
            "isolation", f'Option "isolation" must be "worktree" or "clone", not {value!r}.'
        )
    return str(value)


def check_pool_size(value: object) -> int:
    """``value`` if it is a pool size (an integer >= 0), else the option's one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionError(
            "poolSize",
            f'Option "poolSize" must be an integer >= 0 (0 keeps no checkout for reuse), '
            f"not {value!r}.",
        )
    return value


def check_patterns(value: object, key: str = "worktreeInclude") -> tuple[str, ...]:
    """The non-blank gitignore patterns of ``value``, a list of strings without newlines,
    else the option's one-line error (a bare string would be split into letters)."""
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, str) and "\0" not in item and "\n" not in item for item in value
    ):
        raise OptionError(
            key,
            f'Option "{key}" must be a list of gitignore patterns (strings without newlines), '
            f"not {value!r}.",
        )
    return tuple(item for item in value if item.strip())


def _optional_boolean(options: Mapping[str, Any], key: str) -> bool | None:
    return None if options.get(key) is None else read_boolean(options, key, False)


@dataclass(frozen=True)
class WorktreeSpec:
    """A ``git-worktree`` request: a detached checkout of ``base_ref``.

    ``root_directory`` is where checkouts live (relative: to the repository root);
    ``target_path`` a directory the checkout is sparse to; ``isolation`` ``"worktree"`` or
    ``"clone"``; ``pool`` / ``pool_size`` whether and how many released checkouts are kept
    for reuse; ``working_state`` lays the user's working state on ``HEAD``, with the ignored
    paths ``worktree_include`` matches; ``snapshot_directory`` is a run's shared snapshot.
    ``None``: the provider's default. :meth:`from_options` is the one validator
    (``lease()`` checks a spec built in code through it).
    """

    root_directory: str | None = None
    base_ref: str | None = None
    target_path: str | None = None
    isolation: str | None = None
    pool: bool | None = None
    pool_size: int | None = None
    working_state: bool | None = None
    worktree_include: tuple[str, ...] | None = None
    snapshot_directory: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> WorktreeSpec:
        """Read a request's camelCase options (validated before anything is created).

        Raises :class:`~pytest_aiops.OptionError` naming the option; unknown keys warn (the
        reference ignores them).
        """
        warn_unknown(options, KNOWN_OPTIONS, KIND)
        root = read_optional_string(options, "rootDirectory")
        if root is None and "rootDirectory" in options:
            raise OptionError(
                "rootDirectory",
                f'Option "rootDirectory" must be a non-empty string, not '
                f"{options['rootDirectory']!r}.",
            )
        base_ref = read_string(options, "baseRef", "") or None
        target = normalize_target_path(read_optional_string(options, "targetPath"))
        isolation = check_isolation(options["isolation"]) if "isolation" in options else None
        pool = _optional_boolean(options, "pool")
        working_state = _optional_boolean(options, "workingState")
        include = options.get("worktreeInclude")
        patterns = None if include is None else check_patterns(include)
        snapshot_directory = read_optional_string(options, "snapshotDirectory")
        size = options.get("poolSize")
        pool_size = None if size is None else check_pool_size(size)
        return cls(
            root_directory=root,
            base_ref=base_ref,
            target_path=target,
            isolation=isolation,
            pool=pool,
            pool_size=pool_size,
            working_state=working_state,
            worktree_include=patterns,
            snapshot_directory=snapshot_directory,
        )

    def to_options(self) -> dict[str, Any]:
        """The reference's camelCase options; ``None`` fields left out."""
        options: dict[str, Any] = {
            "rootDirectory": self.root_directory,
            "baseRef": self.base_ref,
            "targetPath": self.target_path,
            "isolation": self.isolation,
            "pool": self.pool,
            "poolSize": self.pool_size,
            "workingState": self.working_state,
            "worktreeInclude": None
            if self.worktree_include is None
            else list(self.worktree_include),
            "snapshotDirectory": self.snapshot_directory,
        }
        return {key: value for key, value in options.items() if value is not None}


def _path(allocation: Mapping[str, Any], key: str) -> str:
    value = allocation.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f'Allocation field "{key}" must be a non-empty string.')
    return value


def _text(allocation: Mapping[str, Any], key: str) -> str | None:
    """A string field; anything else (absent, blank, not a string) reads as ``None``."""
    value = allocation.get(key)
    return value if isinstance(value, str) and value.strip() else None


@dataclass(frozen=True)
class WorktreeAllocation:
    """A ``git-worktree`` lease: a checkout at ``worktree_path`` (under ``worktree_root``) of
    the repository ``repo_root``, at ``base_ref`` (``commit``), sparse to ``target_path``.

    ``isolation`` and ``working_state`` say what kind of checkout it is and whether it holds
    the user's working state on top of ``base_ref``. ``worktree_root`` and ``commit`` are
    ``None`` in an allocation written without them (a hand-made parent snapshot).
    """

    repo_root: str | None  # None: an allocation written without it (see from_json)
    worktree_path: str
    base_ref: str = HEAD
    worktree_root: str | None = None
    target_path: str | None = None
    commit: str | None = None
    isolation: str = LINKED
    working_state: bool = False

    def to_json(self) -> dict[str, Any]:
        """The reference's allocation (camelCase), plus ``commit``, ``isolation`` and
        ``workingState``."""
        allocation: dict[str, Any] = {}
        if self.repo_root is not None:
            allocation["repoRoot"] = self.repo_root
        if self.worktree_root is not None:
            allocation["worktreeRoot"] = self.worktree_root
        allocation["worktreePath"] = self.worktree_path
        allocation["baseRef"] = self.base_ref
        if self.target_path:
            allocation["targetPath"] = self.target_path
        if self.commit is not None:
            allocation["commit"] = self.commit
        allocation["isolation"] = self.isolation
        allocation["workingState"] = self.working_state
        return allocation

    @classmethod
    def from_json(cls, allocation: Mapping[str, Any]) -> WorktreeAllocation:
        """Read a ``git-worktree`` allocation (a lease's ``hard``, or a snapshot's).

        ``worktreePath`` is required; ``repoRoot`` is read when present (the reference
        writes both, but its child split reads only ``worktreePath``, ``baseRef`` and
        ``targetPath``, so a parent snapshot without ``repoRoot`` still splits); a
        missing or blank ``baseRef`` reads as ``HEAD`` and a missing ``isolation`` as a
        linked worktree, as the reference's allocations mean. Raises
        :class:`~pytest_aiops.InvalidArgumentError` naming the field.
        """
        worktree_path = _path(allocation, "worktreePath")
        return cls(
            repo_root=None if allocation.get("repoRoot") is None else _path(allocation, "repoRoot"),
            worktree_path=worktree_path,
            base_ref=_text(allocation, "baseRef") or HEAD,
            worktree_root=_text(allocation, "worktreeRoot"),
            target_path=_text(allocation, "targetPath"),
            commit=_text(allocation, "commit"),
            isolation=_text(allocation, "isolation") or LINKED,
            working_state=allocation.get("workingState") is True,
        )
