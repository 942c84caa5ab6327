"""``pytest-aiops status`` and ``gc``: show what is held, reclaim what dead processes left."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._errors import escape
from .._ports.provider import LeaseRecord, read_records, reap_stale
from .._worktrees.defaults import DEFAULT_POOL_SIZE
from .._worktrees.provider import WorktreeRecord, list_worktrees, reclaim_orphans
from .locations import lock_directory, worktree_root
from .output import EXIT_OK, PROG

#: The worktree states ``status`` counts under its table, and what to do about them.
_WORKTREE_ADVICE = (
    ("orphaned", f"orphaned; '{PROG} gc' reclaims them"),
    (
        "pooled",
        f"pooled for reuse (at most {DEFAULT_POOL_SIZE} per root unless pytest "
        "--aiops-pool-size / poolSize says otherwise; the least recently used is deleted "
        f"first); '{PROG} gc --pooled' frees them",
    ),
    (
        "kept",
        f"kept by --aiops-keep; 'git worktree remove --force PATH' or '{PROG} gc --kept' "
        "removes them",
    ),
)


def format_age(seconds: float) -> str:
    """A short human age: ``42s``, ``5m07s``, ``3h02m``, ``2d04h``."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return [
        "  ".join(
            cell if i == len(row) - 1 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in table
    ]


def _indented_table(header: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> list[str]:
    """A section's table indented under its title, or ``(empty)`` when it has no rows."""
    if not rows:
        return [f"  ({empty})"]
    return [f"  {line}" for line in format_table(header, rows)]


def lease_is_live(record: LeaseRecord) -> bool:
    """Whether the lease still exists: the kernel's answer (its lease id's lock), else its pid."""
    return record.holder_alive()


def record_json(record: LeaseRecord | WorktreeRecord, now: float) -> dict[str, Any]:
    """A lease or worktree record as ``status --json`` shows it: its fields and its age."""
    return {**record.to_dict(), "ageSeconds": round(now - record.created_at, 3)}


def collect_status(lock_dir: str, root: str | None) -> dict[str, Any]:
    """Everything ``status`` shows, as the JSON document ``status --json`` prints."""
    now = time.time()
    live: list[dict[str, Any]] = []
    stale: list[dict[str, Any]] = []
    for record in read_records(lock_dir):
        (live if lease_is_live(record) else stale).append(record_json(record, now))
    worktrees = (
        [
            record_json(w, now)
            for w in sorted(list_worktrees(root), key=lambda w: (w.created_at, w.path))
        ]
        if root
        else []
    )
    return {
        "lockDirectory": lock_dir,
        "leases": live,
        "staleLeases": stale,
        "worktreeRoot": root,
        "worktrees": worktrees,
    }


def render_status(status: Mapping[str, Any]) -> str:
    """The human-readable tables of :func:`collect_status`'s document."""
    lines = [f"Port leases in {status['lockDirectory']}:"]
    lease_rows = [
        (
            f"{lease['startPort']}-{lease['endPort']}",
            escape(lease["sessionId"]),
            str(lease["pid"]),
            escape(lease["host"]),
            format_age(lease["ageSeconds"]),
            escape(lease["role"]),
        )
        for lease in status["leases"]
    ]
    header = ("PORTS", "SESSION", "PID", "HOST", "AGE", "ROLE")
    lines.extend(_indented_table(header, lease_rows, "no live leases"))
    stale = status["staleLeases"]
    if stale:
        lines.append(
            f"  + {len(stale)} stale lease record(s) left by dead processes; "
            f"'{PROG} gc' removes them"
        )
    lines.append("")
    root = status["worktreeRoot"]
    if root is None:
        lines.append("Worktrees: not in a git repository; pass --worktree-root to show them")
        return "\n".join(lines) + "\n"
    lines.append(f"Worktrees in {root}:")
    worktrees = status["worktrees"]
    worktree_rows = [
        (
            w["state"],
            escape(w["sessionId"] or "-"),
            str(w["pid"]) if w["pid"] else "-",
            escape(w["host"] or "-"),
            format_age(w["ageSeconds"]),
            escape(w["path"]),
        )
        for w in worktrees
    ]
    header = ("STATE", "SESSION", "PID", "HOST", "AGE", "PATH")
    lines.extend(_indented_table(header, worktree_rows, "no worktrees"))
    for state, advice in _WORKTREE_ADVICE:
        count = sum(1 for w in worktrees if w["state"] == state)
        if count:
            lines.append(f"  + {count} {advice}")
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: live leases and worktrees, as tables or ``--json``."""
    status = collect_status(lock_directory(args.lock_dir), worktree_root(args.worktree_root))
    if args.json:
        sys.stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_status(status))
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    """``gc``: remove stale lease records and orphaned worktrees; say what (would be) removed."""
    lock_dir = lock_directory(args.lock_dir)
    root = worktree_root(args.worktree_root)
    verb = "would remove" if args.dry_run else "removed"
    removed = 0
    for record in reap_stale(lock_dir, dry_run=args.dry_run):
        removed += 1
        print(
            f"{verb} stale lease {record.start_port}-{record.end_port} (session "
            f"{escape(record.session_id)}, pid {record.pid} on {escape(record.host)}): "
            f"{escape(record.path)}"
        )
    if root is not None:
        found = reclaim_orphans(
            root, dry_run=args.dry_run, include_pooled=args.pooled, include_kept=args.kept
        )
        for worktree in found:
            removed += 1
            owner = (
                f"session {escape(worktree.session_id)}, pid {worktree.pid} on "
                f"{escape(worktree.host)}"
            )
            print(f"{verb} {worktree.state} worktree {escape(worktree.path)} ({owner})")
    if not removed:
        where = lock_dir if root is None else f"{lock_dir} and {root}"
        print(f"nothing to reclaim in {where}")
    return EXIT_OK
