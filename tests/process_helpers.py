"""Child processes of the suite: the tree under test on their path, drivers, namespaces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: This checkout: the directory holding ``pytest_aiops/`` and ``tests/``.
REPO_ROOT = Path(__file__).resolve().parents[1]


def checkout_pythonpath(existing: str | None = None) -> str:
    """``PYTHONPATH`` for a child: this checkout first, then ``existing`` (without repeats).

    PYTHONPATH entries come before site-packages, so a child imports ``pytest_aiops`` (and
    pytest loads the ``pytest11`` entry point ``pytest_aiops.plugin``) from this checkout,
    not from whatever copy is installed.
    """
    rest = [p for p in (existing or "").split(os.pathsep) if p and p != str(REPO_ROOT)]
    return os.pathsep.join([str(REPO_ROOT), *rest])


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child process that must import the tree under test.

    A copy of ``base`` (default: this process's environment) with this checkout first on
    ``PYTHONPATH``, then ``extra`` set on top.
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = checkout_pythonpath(env.get("PYTHONPATH"))
    env.update(extra)
    return env


def namespace_problem(*, tools: Sequence[str], mount_point: str, root_for: str) -> str | None:
    """Why this machine cannot run a test in a private mount namespace (``None``: it can).

    Such a test mounts fresh tmpfs (on ``mount_point``) where only its own processes see it,
    so the machine's own ``/tmp`` and ``/dev/shm`` are never touched; it needs root (said
    with ``root_for``), the ``tools``, and a kernel that lets us make the namespace.
    """
    if os.geteuid() != 0:
        return f"needs root ({root_for})"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"mount -t tmpfs tmpfs {mount_point}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode:
        return f"cannot make a private mount namespace: {probe.stderr.strip()}"
    return None


def run_driver(argv: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
    """Run a driver script that prints one JSON object as its last line; that object.

    Fails the test with the driver's output if it exits non-zero (five minutes at most).
    """
    run = subprocess.run(
        list(argv), capture_output=True, text=True, env=dict(env), timeout=300, check=False
    )
    assert run.returncode == 0, f"driver failed:\n{run.stdout}\n{run.stderr}"
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))
