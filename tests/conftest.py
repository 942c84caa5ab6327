"""Shared fixtures for pytest-aiops's own tests: real git repositories, lock dirs, children.

Plain helper functions live in ``tests/<topic>_helpers.py``; this module holds only fixtures and
hooks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .git_helpers import MakeRepo, git
from .inner_run_helpers import allowed_inner_warnings, check_inner_warnings
from .port_helpers import Holder
from .process_helpers import checkout_pythonpath


@pytest.fixture(scope="session", autouse=True)
def children_import_this_checkout() -> Iterator[None]:
    """Every child process of this suite imports ``pytest_aiops`` from this checkout.

    Puts the checkout first on ``PYTHONPATH`` for the whole session, so each child that
    inherits the environment -- ``subprocess`` runs of ``python -c`` / ``-m pytest`` /
    ``-m pytest_aiops``, pytester's ``runpytest_subprocess``, and their own children --
    tests this tree rather than a copy installed in site-packages. Children given an
    environment of their own build it with :func:`tests.process_helpers.child_env`.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", checkout_pythonpath(os.environ.get("PYTHONPATH")))
        yield


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
def root(tmp_path: Path) -> Path:
    """Where a test's git-worktree provider puts its checkouts (not created yet)."""
    return tmp_path / "wt"


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """A private lock directory, so tests never contend with the machine-wide one."""
    path = tmp_path / "locks"
    path.mkdir()
    return path


@pytest.fixture
def private_lock_dir(lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every inner run leases from a private lock directory; no PYTEST_AIOPS_* leaks in."""
    for key in list(os.environ):
        if key.startswith("PYTEST_AIOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PYTEST_AIOPS_LOCK_DIR", str(lock_dir))
    return lock_dir


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
    removed: an inner run is a run of its own, not part of an xdist worker. A subprocess run
    imports this checkout (``children_import_this_checkout`` set ``PYTHONPATH``).
    """
    for key in list(os.environ):
        if key.startswith("PYTEST_XDIST_"):
            monkeypatch.delenv(key)
    # pytest-asyncio (a test dependency) warns in every run of a project that has not set
    # its loop scope; inner runs leave it out unless a test asks for it (-p asyncio), and
    # pytest-aiohttp with it (it fails to configure without pytest-asyncio's options); and
    # pytest-benchmark, where the interpreter has it, warns under xdist.
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio -p no:aiohttp -p no:benchmark")
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:  # the wrapper's generator; typed loosely for pluggy
    """A failure whose text holds a non-UTF-8 path (``test_edges.py`` makes such paths)
    cannot be sent from an xdist worker (execnet refuses surrogates): the worker would crash
    and the failure never be shown. Its text is kept, with such characters escaped."""
    report: Any = yield
    if report.failed and report.longrepr is not None:
        text = str(report.longrepr)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            report.longrepr = text.encode("utf-8", "backslashreplace").decode("utf-8")
            report.sections = [
                (title, body.encode("utf-8", "backslashreplace").decode("utf-8"))
                for title, body in report.sections
            ]
    return report  # type: ignore[no-any-return]
