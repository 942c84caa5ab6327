"""``pytest-aiops init-lock-dir``: root prepares a lock directory every user shares, once."""

from __future__ import annotations

import argparse
import sys

from .._ports.admin import init_lock_directory
from .._ports.defaults import default_lock_directory
from .locations import lock_directory_default
from .output import EXIT_OK, PROG

INIT_EPILOG = """\
examples:
  sudo pytest-aiops init-lock-dir                 # the default, /tmp/pytest-aiops/locks
  sudo pytest-aiops init-lock-dir /srv/aiops-locks  # then every user sets
                                                  # PYTEST_AIOPS_LOCK_DIR=/srv/aiops-locks

It makes DIR (mode 0755), DIR/leases/ (1777, sticky) and DIR/ports.lock (0666), all
root's, and any missing parent (0755). Run again, it changes nothing that is right.
It refuses, in one line, anything another user owns, a symlink, or a directory
writable by others without the sticky bit, and warns when other users cannot
search a parent of DIR (e.g. /root). /tmp is emptied at boot: see the
troubleshooting page of the docs for the systemd-tmpfiles lines that recreate it.
"""


def add_init_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory",
        nargs="?",
        metavar="DIR",
        help=f"the lock directory to prepare (default: {lock_directory_default()})",
    )


def cmd_init_lock_dir(args: argparse.Namespace) -> int:
    """Prepare DIR; print one line per change, or that it was ready already."""
    directory: str = args.directory or default_lock_directory()
    prepared = init_lock_directory(directory)
    for change in prepared.changes:
        print(change)
    if not prepared.changes:
        print(f"{prepared.path} is prepared already (nothing changed)")
    if prepared.unreachable is not None:
        print(f"{PROG}: warning: {prepared.path}: {prepared.unreachable}", file=sys.stderr)
        return EXIT_OK
    print(f"every user can now lease ports in {prepared.path}")
    return EXIT_OK
