"""Plain helpers shared by the test modules: git repos, snapshots, child processes, leases."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import ResourceLease
from pytest_aiops._core.registry import ProviderRegistry
from pytest_aiops._ports.provider import create_port_range_provider
from pytest_aiops._ports.records import read_records
from pytest_aiops._worktrees.provider import (
    GitWorktreeProvider,
    GitWorktreeProviderConfig,
    create_git_worktree_provider,
)

# -- the tree under test, in child processes ------------------------------------------------

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


# -- git ------------------------------------------------------------------------------------

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
}

MakeRepo = Callable[..., Path]


def run(repo: Path | str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """git in ``repo`` as a user would (with an identity); returns the completed process."""
    env = {**os.environ, **GIT_IDENTITY}
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result


def git(repo: Path | str, *args: str) -> str:
    """Run git in ``repo`` as a user would (with an identity); return stripped stdout."""
    return run(repo, *args).stdout.strip()


def record_git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a fake ``git`` first on PATH that records its arguments and fails.

    Returns the file it appends to: it never exists if no git command ran.
    """
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "git-calls"
    fake = bin_dir / "git"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


# -- snapshots of a repository / checkout to compare ----------------------------------------


def tree_state(path: Path | str, *, skip_git: bool = True) -> dict[str, Any]:
    """Every entry under ``path``: type, permission bits and content (symlinks not followed)."""
    root = str(path)
    found: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        names = dirnames + filenames
        if skip_git and dirpath == root:
            dirnames[:] = [d for d in dirnames if d != ".git"]
            names = [n for n in names if n != ".git"]
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", oct(mode))
                if name in dirnames and not os.access(full, os.R_OK | os.X_OK):
                    found[rel] = ("dir-unreadable", oct(mode))
            else:
                with open(full, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()[:16]
                found[rel] = ("file", oct(mode), digest)
    return found


def _file(path: Path) -> str:
    try:
        return path.read_bytes().hex()
    except FileNotFoundError:
        return "<missing>"


def repo_state(repo: Path) -> dict[str, Any]:
    """Everything of the user's repository a provider must never change."""
    git_dir = repo / ".git"
    return {
        "HEAD": _file(git_dir / "HEAD"),
        "refs": run(repo, "for-each-ref", "--format=%(refname) %(objectname)").stdout,
        "stash": run(repo, "stash", "list").stdout,
        "config": _file(git_dir / "config"),
        "index": _file(git_dir / "index"),
        "packed-refs": _file(git_dir / "packed-refs"),
        "hooks": sorted(os.listdir(git_dir / "hooks")) if (git_dir / "hooks").is_dir() else [],
        "status": run(repo, "status", "--porcelain", "--ignored").stdout,
        "files": tree_state(repo),
        "worktrees": run(repo, "worktree", "list", "--porcelain").stdout,
    }


def git_dir_listing(git_dir: Path) -> list[str]:
    """Names under a checkout's git dir (contents of the index and objects left out)."""
    names = []
    for dirpath, dirnames, filenames in os.walk(git_dir):
        for name in dirnames + filenames:
            names.append(os.path.relpath(os.path.join(dirpath, name), git_dir))
    return sorted(names)


def checkout_state(path: Path | str) -> dict[str, Any]:
    """What a test could observe of a checkout, independent of where it lives."""
    path = Path(path)
    git_dir = Path(run(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    return {
        "files": tree_state(path),
        "status": run(path, "status", "--porcelain", "--ignored", "--untracked-files=all").stdout,
        "HEAD": run(path, "rev-parse", "HEAD").stdout,
        "detached": run(path, "symbolic-ref", "-q", "HEAD", check=False).returncode,
        "git_dir": git_dir_listing(git_dir),
        "reflog_lines": len(run(path, "reflog").stdout.splitlines()),
        "stash": run(path, "stash", "list").stdout,
        "sparse": _file(git_dir / "info" / "sparse-checkout"),
    }


def clone_state(path: Path | str) -> dict[str, Any]:
    """The repository-level state of a clone (its own refs, tags, config, hooks)."""
    path = Path(path)
    return {
        "refs": run(path, "for-each-ref", "--format=%(refname)").stdout,
        "config": _file(path / ".git" / "config"),
        "objects": git_dir_listing(path / ".git" / "objects"),
    }


# -- providers and leases -------------------------------------------------------------------


def builtin_registry() -> ProviderRegistry:
    """A registry holding the two built-in providers, with their default configuration."""
    registry = ProviderRegistry()
    registry(create_git_worktree_provider())
    registry(create_port_range_provider())
    return registry


# -- git-worktree leases --------------------------------------------------------------------


def worktree_provider(root: Path | None, **config: Any) -> GitWorktreeProvider:
    """A git-worktree provider whose checkouts live under ``root`` (None: the default root)."""
    return create_git_worktree_provider(
        GitWorktreeProviderConfig(root_directory=str(root) if root else None, **config)
    )


def worktree_lease(
    prov: GitWorktreeProvider, repo: Path, session_id: str = "s", **options: Any
) -> ResourceLease:
    """A checkout of ``repo`` from ``prov`` for ``session_id``, with request ``options``."""
    return prov.provision(session_id=session_id, workspace_root=str(repo), options=options)


def registrations(repo: Path) -> list[str]:
    """The linked-worktree registrations under ``repo/.git/worktrees``."""
    base = repo / ".git" / "worktrees"
    return sorted(os.listdir(base)) if base.is_dir() else []


def checkouts(root: Path) -> list[str]:
    """The visible checkouts under a worktree root (its control dir left out)."""
    return sorted(p for p in os.listdir(root) if not p.startswith(".")) if root.is_dir() else []


def make_a_mess(path: Path, isolation: str, outside: Path) -> None:
    """Everything a test module might do to its checkout, and leave behind.

    Dirty, deleted, untracked, ignored, staged and committed files; read-only files and
    directories, an unreadable directory, symlinks pointing outside; half a merge; for a
    clone also branches, tags, a stash, config, sparse-checkout and hooks. Files of the
    reference layout that ``path`` lacks are skipped.
    """
    git_dir = Path(run(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    if isolation == "clone":  # in a linked worktree these would change the user's repo
        run(path, "checkout", "-q", "-b", "topic")
        run(path, "tag", "t1")
        (path / "top.txt").write_text("stashed\n")
        run(path, "stash")
        run(path, "config", "test.key", "value")
        run(path, "sparse-checkout", "set", "pkg", "o")
        (git_dir / "hooks").mkdir(exist_ok=True)
        (git_dir / "hooks" / "post-checkout").write_text("#!/bin/sh\nexit 1\n")
    (path / "top.txt").write_text("modified\n")
    if (path / "pkg" / "g.txt").exists():
        (path / "pkg" / "g.txt").unlink()
    (path / "untracked.txt").write_text("u\n")
    (path / "empty-dir").mkdir()
    (path / "x.pyc").write_text("ignored\n")
    (path / "pkg" / "__pycache__").mkdir(exist_ok=True)
    (path / "pkg" / "__pycache__" / "m.pyc").write_text("ignored\n")
    for rel, mode in (("pkg/a.txt", 0o444), ("run.sh", 0o755), ("pkg/sub/f.txt", 0o444)):
        if (path / rel).exists():
            (path / rel).chmod(mode)  # same content, only the mode changed
    if (path / "o").exists():
        (path / "o" / "x.txt").unlink()
        (path / "o").rmdir()
        (path / "o").symlink_to(outside)  # a tracked dir replaced by a symlink outward
    (path / "staged.txt").write_text("s\n")
    run(path, "add", "staged.txt")
    run(path, "commit", "-q", "-m", "commit made inside")
    (path / "staged-too.txt").write_text("s\n")
    run(path, "add", "staged-too.txt")
    (git_dir / "MERGE_MSG").write_text("half a merge\n")
    (git_dir / "rebase-merge").mkdir()
    (git_dir / "info").mkdir(exist_ok=True)
    (git_dir / "info" / "exclude").write_text("secret\n")
    ro = path / "ro-dir"
    ro.mkdir()
    (ro / "inner.txt").write_text("x")
    (ro / "inner.txt").chmod(0o400)
    ro.chmod(0o500)
    closed = path / "closed"
    closed.mkdir()
    (closed / "secret").write_text("s")
    closed.chmod(0o000)
    (path / "link-out").symlink_to(outside)
    (path / "link-file").symlink_to(outside / "keep.txt")
    (path / "pkg" / "sub").chmod(0o555)


# -- port leases ----------------------------------------------------------------------------

#: A holder process's result: the process and its hard allocation (or its error).
Holder = tuple["subprocess.Popen[str]", dict[str, Any]]


def live_leases(lock_dir: Path) -> list[tuple[int, int, str]]:
    """(start, end, session id) of each live lease record in ``lock_dir``."""
    return [
        (r.start_port, r.end_port, r.session_id)
        for r in read_records(str(lock_dir))
        if r.holder_alive()
    ]


def make_time_wait(port: int, host: str = "127.0.0.1") -> None:
    """Leave ``port`` in TIME_WAIT for real, as a test server that closes first does.

    A listener on ``port`` accepts one connection and closes its side first (the active
    close), then the client and the listener close: the server's socket stays in TIME_WAIT
    (about a minute on Linux), so a server without SO_REUSEADDR cannot bind ``port``.
    """
    with socket.socket() as server:
        # SO_REUSEADDR on this side only so that a TIME_WAIT left by an earlier call (a test
        # run a moment ago) does not stop it; a server without the option still cannot bind.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen()
        client = socket.create_connection((host, port))
        accepted, _ = server.accept()
        accepted.close()
        client.recv(1)  # the server's FIN arrived
        client.close()


# -- waiting --------------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], object], what: str, *, timeout: float = 60.0, interval: float = 0.02
) -> None:
    """Poll ``condition()`` until it is true; fail after about ``timeout`` seconds.

    A guard against hanging forever, not a timing assertion: it counts polls rather than
    reading a clock, and a slow machine only makes it wait longer.
    """
    for _ in range(max(1, int(timeout / interval))):
        if condition():
            return
        time.sleep(interval)
    pytest.fail(f"gave up waiting for {what}")


# -- every inner pytest run must be warning-free ---------------------------------------------

#: A warning entry in pytest's "warnings summary", or a raw one on stderr: "XxxWarning: text".
_WARNING_LINE = re.compile(r"\b\w*Warning: ")


def inner_warnings(stdout: str, stderr: str = "") -> list[str]:
    """The warnings an inner pytest run reported: its summary's entries and raw stderr ones."""
    found: list[str] = []
    in_summary = False
    for line in stdout.splitlines():
        if re.match(r"^=+ warnings summary", line):
            in_summary = True
            continue
        if in_summary and re.match(r"^(=+ |-- Docs: )", line):
            in_summary = False
        if in_summary and _WARNING_LINE.search(line):
            found.append(line.strip())
    found += [line.strip() for line in stderr.splitlines() if _WARNING_LINE.search(line)]
    summary = [line for line in stdout.splitlines() if re.match(r"^=+ .* in [\d.]+s", line)]
    if summary and re.search(r"\b\d+ warnings?\b", summary[-1]) and not found:
        found.append(summary[-1].strip("= "))  # counted, yet not shown (e.g. -p no:warnings)
    return found


def check_inner_warnings(stdout: str, stderr: str, allowed: Sequence[str]) -> None:
    """Fail if an inner run emitted a warning no pattern in ``allowed`` (fnmatch) expects.

    A plugin runs inside other people's suites, many with ``filterwarnings = error``: a
    warning from it is a failure there, so it is one here.
    """
    unexpected = [
        text
        for text in inner_warnings(stdout, stderr)
        if not any(fnmatch.fnmatch(text, pattern) for pattern in allowed)
    ]
    if unexpected:
        pytest.fail(
            "the inner pytest run emitted unexpected warnings (mark the test with "
            "@pytest.mark.inner_warnings(pattern, ...) if they are expected):\n  "
            + "\n  ".join(unexpected)
            + f"\n--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-2000:]}"
        )


def allowed_inner_warnings(request: pytest.FixtureRequest) -> list[str]:
    """The fnmatch patterns of the test's ``inner_warnings`` markers."""
    return [
        str(pattern)
        for marker in request.node.iter_markers("inner_warnings")
        for pattern in marker.args
    ]


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
