"""Shared fixtures for pytest-aiops's own tests: real git repositories and lock dirs."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
}


def git(repo: Path | str, *args: str) -> str:
    """Run git in ``repo`` as a user would (with an identity); return stripped stdout."""
    env = {**os.environ, **GIT_IDENTITY}
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


MakeRepo = Callable[..., Path]


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """Factory: a real git repository with ``files`` committed on branch ``main``."""
    counter = iter(range(1000))

    def make(files: Mapping[str, str] | None = None, name: str | None = None) -> Path:
        repo = tmp_path / (name or f"repo{next(counter)}")
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        contents = files if files is not None else {"top.txt": "top\n", "pkg/sub/f.txt": "f\n"}
        for rel, text in contents.items():
            path = repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "initial", "--allow-empty")
        return repo

    return make


@pytest.fixture
def repo(make_repo: MakeRepo) -> Path:
    """A repository holding ``top.txt`` and ``pkg/sub/f.txt`` (as the reference vectors)."""
    return make_repo()


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """A private lock directory, so tests never contend with the machine-wide one."""
    path = tmp_path / "locks"
    path.mkdir()
    return path


_HOLDER = """
import json, sys
from pytest_aiops._ports.provider import PortRangeProvider, PortRangeProviderConfig
options, session_id, root = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    lease = PortRangeProvider(PortRangeProviderConfig(probe=False)).provision(
        session_id=session_id, workspace_root=root, options=options
    )
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error)}), flush=True)
    sys.exit(1)
print(json.dumps(dict(lease.hard)), flush=True)
sys.stdin.read()
lease.release()
"""


Holder = tuple["subprocess.Popen[str]", dict[str, Any]]


@pytest.fixture
def hold_lease(tmp_path: Path) -> Iterator[Callable[..., Holder]]:
    """Factory: a subprocess that leases ports with ``options`` and holds them until killed.

    Returns ``(process, hard allocation)`` (or ``{"error", "message"}`` if leasing failed).
    Every process still running at teardown is SIGKILLed.
    """
    processes: list[subprocess.Popen[str]] = []

    def start(options: Mapping[str, Any], session_id: str = "holder") -> Holder:
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, json.dumps(dict(options)), session_id, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        return process, json.loads(line)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "inner_warnings(*patterns): warnings (fnmatch patterns of 'XxxWarning: text' lines) "
        "the test's inner pytest runs are expected to emit; any other fails the test",
    )


@pytest.fixture
def pytester(
    pytester: pytest.Pytester, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """pytest's ``pytester``, whose runs fail the test on any warning it did not expect.

    When this suite itself runs under xdist, its workers' ``PYTEST_XDIST_*`` variables are
    removed: an inner run is a run of its own, not part of an xdist worker.
    """
    for key in list(os.environ):
        if key.startswith("PYTEST_XDIST_"):
            monkeypatch.delenv(key)
    # pytest-asyncio (a test dependency) warns in every run of a project that has not set
    # its loop scope; inner runs leave it out unless a test asks for it (-p asyncio).
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio")
    allowed = allowed_inner_warnings(request)
    inprocess = pytester.runpytest_inprocess
    subprocess_run = pytester.runpytest_subprocess

    def checked(run: Callable[..., pytest.RunResult]) -> Callable[..., pytest.RunResult]:
        def wrapper(*args: Any, **kwargs: Any) -> pytest.RunResult:
            result = run(*args, **kwargs)
            check_inner_warnings(result.stdout.str(), result.stderr.str(), allowed)
            return result

        return wrapper

    pytester.runpytest_inprocess = checked(inprocess)  # type: ignore[method-assign]
    pytester.runpytest_subprocess = checked(subprocess_run)  # type: ignore[method-assign]
    return pytester


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
