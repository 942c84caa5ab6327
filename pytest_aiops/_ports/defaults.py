"""The port-range defaults, in one place: the range, its blocks, and the lock directory.

Imports nothing but the standard library, so the plugin's settings and the CLI can show these
values in their help without importing the provider.
"""

from __future__ import annotations

import os
import sys
import tempfile

#: Default range 20000-26399: above the well-known (<1024) and common development ports
#: (3000-9999: 3000, 5432, 6379, 8000, 8080, 9000, ...), below MongoDB's 27017, the
#: Kubernetes NodePort range (30000-32767) and Linux's ephemeral range (32768-60999).
DEFAULT_BASE_PORT = 20000
#: Ports per block, so per session (and per xdist worker) by default.
DEFAULT_BLOCK_SIZE = 32
DEFAULT_BLOCK_COUNT = 200
DEFAULT_END_PORT = DEFAULT_BASE_PORT + DEFAULT_BLOCK_SIZE * DEFAULT_BLOCK_COUNT - 1
#: ``(first, last)`` port of the default range, inclusive: 20000-26399.
DEFAULT_PORT_RANGE = (DEFAULT_BASE_PORT, DEFAULT_END_PORT)
#: A worker's first lease: one block.
DEFAULT_PORTS_PER_WORKER = DEFAULT_BLOCK_SIZE

#: How far a worker's pool may grow when every port it has is out or in TIME_WAIT (about a
#: minute on Linux): 128 blocks of 32 serve 4,096 server tests a minute per worker.
DEFAULT_MAX_PORTS_PER_WORKER = 4096
#: What a pool does where it cannot lease (or is at its bound): hand out ports the kernel
#: picks, with one warning, or fail.
PORT_FALLBACKS = ("kernel", "error")
DEFAULT_PORT_FALLBACK = "kernel"
#: The setting's environment variable: what take_port() reads outside a pytest run too.
PORT_FALLBACK_ENV = "PYTEST_AIOPS_PORT_FALLBACK"

LOCK_DIR_ENV = "PYTEST_AIOPS_LOCK_DIR"
#: The lock directory as the plugin's option and the ``pytest-aiops`` command spell it. A
#: lease fails below every entry point (plugin, command, core API), so the errors about an
#: unusable lock directory name each spelling (docs/security.md); the plugin's settings row
#: is checked to agree (tests/test_settings_rows.py). Nothing else here knows the plugin.
LOCK_DIR_PLUGIN_OPTION = "--aiops-lock-dir"
LOCK_DIR_CLI_OPTION = "--lock-dir"
#: The machine-wide lock directory as help texts and docs show it (POSIX; on Windows the
#: same two directories under the temporary directory).
_LOCK_DIRECTORY = ("pytest-aiops", "locks")  # below machine_root()
DEFAULT_LOCK_DIRECTORY_TEXT = "/".join(("/tmp", *_LOCK_DIRECTORY))


def machine_root() -> str:
    """Where the machine-wide lock directory lives: ``/tmp``, else (Windows) the temp dir.

    ``/tmp`` rather than ``$TMPDIR``: runs with different ``TMPDIR`` (pytest sets it for its
    own children, CI systems set it per job) must still see each other's leases.
    """
    return "/tmp" if sys.platform != "win32" else tempfile.gettempdir()


def default_lock_directory() -> str:
    """``$PYTEST_AIOPS_LOCK_DIR``, else one directory per machine shared by every user
    (:data:`DEFAULT_LOCK_DIRECTORY_TEXT`)."""
    configured = os.environ.get(LOCK_DIR_ENV, "").strip()
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.join(machine_root(), *_LOCK_DIRECTORY)
