"""Windows (no such machine here): importing works, leases fail with one line (issue 13).

The interpreter is made to look like Windows before pytest-aiops is imported: no ``fcntl``,
``pwd`` or ``termios``, no ``os.geteuid``/``os.fork``, ``sys.platform == "win32"``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_AS_WINDOWS = """
import json, os, sys, tempfile
for name in ("fcntl", "pwd", "termios"):
    sys.modules[name] = None  # ImportError, as on Windows
for name in ("geteuid", "getuid", "fork", "register_at_fork"):
    if hasattr(os, name):
        delattr(os, name)
sys.platform = "win32"
import pytest_aiops, pytest_aiops.plugin, pytest_aiops._cli.main  # noqa: F401 - must import
from pytest_aiops import LockError
from pytest_aiops._worktrees.provider import GitWorktreeProvider
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
d = tempfile.mkdtemp()
out = {}
for kind, provider in (
    ("port-range", PortRangeProvider(PortRangeProviderConfig(lock_directory=d))),
    ("git-worktree", GitWorktreeProvider()),
):
    try:
        provider.provision(session_id="s", workspace_root=sys.argv[1], options={})
    except LockError as error:  # what sends the port fixtures to kernel-chosen ports
        out[kind] = str(error)
print(json.dumps(out))
"""


def test_on_windows_importing_works_and_leases_say_unsupported(repo: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _AS_WINDOWS, str(repo)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout)
    assert errors == {
        "port-range": "pytest-aiops port leasing is not supported on win32 yet (it needs "
        "POSIX fcntl byte-range locks)",
        "git-worktree": "pytest-aiops git-worktree leasing is not supported on win32 yet (it "
        "needs POSIX flock owner locks)",
    }
