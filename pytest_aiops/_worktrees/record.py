"""The record of one checkout, typed; JSON only at the edge (:meth:`CheckoutRecord.from_json`).

A record on disk is a claim, not an order (it may be a previous run's, or planted):
:meth:`CheckoutRecord.from_json` keeps a value only if it has the type this code writes,
and keeps the JSON it was read from (:attr:`CheckoutRecord.raw`) so that what it did not
accept can be named in a warning, and keys it does not know (another version's) survive
a rewrite. The JSON keys are the on-disk format shared with other versions: never rename
one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .defaults import WORKTREE
from .restore import RestorePlan, Sweep


class State(enum.Enum):
    """What the owner of a record last said about its checkout (``"state"`` on disk)."""

    #: The record exists, the checkout is being built (``aiops-<token>`` build dir).
    CREATING = "creating"
    #: Handed to a session; its owner holds the lock while it lives.
    LIVE = "live"
    #: Restored to its commit and parked in the control dir, waiting for its next lease.
    POOLED = "pooled"
    #: Left for the user (``--aiops-keep``): nothing deletes it but ``gc --kept``.
    KEPT = "kept"


@dataclass(frozen=True)
class PoolKey:
    """What a pooled checkout must match to serve a request; ``commit`` only ranks."""

    common_dir: str
    isolation: str
    target_path: str | None
    commit: str


# python field name -> JSON key, in the order records have always been written.
_KEYS = {
    "token": "token",
    "state": "state",
    "session_id": "sessionId",
    "repo_root": "repoRoot",
    "common_dir": "commonDir",
    "object_format": "objectFormat",
    "isolation": "isolation",
    "commit": "commit",
    "target_path": "targetPath",
    "created_at": "createdAt",
    "pid": "pid",
    "host": "host",
    "path": "path",
    "claim": "claim",
    "ino": "ino",
    "dev": "dev",
    "git_dir": "gitDir",
    "git_session": "gitSession",
    "filled_at": "filledAt",
    "handed_at": "handedAt",
    "settled": "settled",
    "index_id": "indexId",
    "stamped": "stamped",
    "released_at": "releasedAt",
    "kept_at": "keptAt",
}


@dataclass(frozen=True)
class CheckoutRecord:
    """One checkout's record: who made it, where it is, and what its last lease did.

    The lease fields decide how the next restore works (:meth:`restore_plan`):
    ``filled_at`` (when git last wrote the files), ``handed_at`` (when the lease began),
    ``settled`` (git has rewritten the index since a later second than it wrote the files,
    so no entry is "racily clean"), ``index_id`` (the index's identity after git last
    wrote it) and ``stamped`` (the lease began on a checkout restored and untouched since,
    with a stamp made: the stamp sweep sees every change of the lease).
    """

    token: str = ""
    state: State | None = None  # None: no state, or one this version does not know
    session_id: str = ""
    repo_root: str = ""
    common_dir: str = ""
    object_format: str = ""
    isolation: str = WORKTREE
    commit: str = ""
    target_path: str | None = None
    created_at: float = 0.0
    pid: int = 0
    host: str = ""
    path: str | None = None
    claim: str | None = None
    ino: int | None = None
    dev: int | None = None
    git_dir: str | None = None
    git_session: tuple[int, int] | None = None  # (pid, boot_ticks()) of git, pid > 1
    filled_at: float | None = None
    handed_at: float | None = None
    settled: bool = False
    index_id: tuple[int, ...] | None = None
    stamped: bool = False
    released_at: float | None = None
    kept_at: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckoutRecord:
        """The record in ``data`` (a parsed JSON object); values of the wrong type are
        dropped (left at their default), and stay visible in :attr:`raw`."""
        states = {state.value: state for state in State}
        state = data.get("state")
        git_session: tuple[int, int] | None = None
        session = data.get("gitSession")
        if isinstance(session, list) and len(session) == 2:
            pid, started = (_integer(item) for item in session)
            if pid is not None and started is not None and pid > 1:
                git_session = (pid, started)
        index_id: tuple[int, ...] | None = None
        index = data.get("indexId")
        if isinstance(index, list) and all(_integer(item) is not None for item in index):
            index_id = tuple(index)
        return cls(
            token=_text(data.get("token")),
            state=states.get(state) if isinstance(state, str) else None,
            session_id=_text(data.get("sessionId")),
            repo_root=_text(data.get("repoRoot")),
            common_dir=_text(data.get("commonDir")),
            object_format=_text(data.get("objectFormat")),
            isolation=_text(data.get("isolation"), WORKTREE),
            commit=_text(data.get("commit")),
            target_path=_text(data.get("targetPath")) or None,
            created_at=_number(data.get("createdAt")) or 0.0,
            pid=_integer(data.get("pid")) or 0,
            host=_text(data.get("host")),
            path=_text(data.get("path")) or None,
            claim=_text(data.get("claim")) or None,
            ino=_integer(data.get("ino")),
            dev=_integer(data.get("dev")),
            git_dir=_text(data.get("gitDir")) or None,
            git_session=git_session,
            filled_at=_number(data.get("filledAt")),
            handed_at=_number(data.get("handedAt")),
            settled=data.get("settled") is True,
            index_id=index_id,
            stamped=data.get("stamped") is True,
            released_at=_number(data.get("releasedAt")),
            kept_at=_number(data.get("keptAt")),
            raw=dict(data),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object to write: :attr:`raw` with every field this record sets laid
        over it (a field that is ``None`` is left out, as readers take absent for unset)."""
        data = dict(self.raw)
        for name, key in _KEYS.items():
            value = getattr(self, name)
            if isinstance(value, State):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return data

    def matches(self, key: PoolKey, *, commit: bool) -> bool:
        """Whether this record serves requests for ``key`` (same commit too if ``commit``)."""
        return (
            self.common_dir == key.common_dir
            and self.isolation == key.isolation
            and self.target_path == key.target_path
            and (not commit or self.commit == key.commit)
        )

    def restore_plan(self, *, stamp: str, tree_cache: str, now: float) -> RestorePlan:
        """How to restore this checkout after its lease, from what the record knows of it.

        Until git rewrites the index in a later second than the files were written, its
        entries are "racily clean" and every git command re-reads those files; the first
        restore after that point runs a checkout (which rewrites the index) to settle it.
        File modes need find(1) only if the test may have changed one in the same (whole)
        second as git last wrote files (git's ctime check compares whole seconds).
        """
        filled = self.filled_at or 0.0
        handed = self.handed_at or 0.0
        settle = not self.settled and now - filled > 1.0
        check_files = handed - filled < 1.0 or int(handed) == int(filled)
        sweep = Sweep.GIT if check_files else Sweep.GIT_DIRECTORIES
        if self.stamped and not settle:
            sweep = Sweep.SINCE_STAMP
        return RestorePlan(
            commit=self.commit,
            target=self.target_path,
            sweep=sweep,
            checkout=settle,
            index_id=self.index_id,
            stamp=stamp if self.stamped else None,
            tree_cache=tree_cache,
        )


def _text(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
