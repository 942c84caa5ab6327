"""Serve this module's worktree over HTTP from a subprocess and edit pages in it."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from pytest_aiops.plugin import GitWorktree, PortRange


def _wait_for(url: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def site(port_range: PortRange, git_worktree: GitWorktree) -> Iterator[str]:
    """``python -m http.server`` serving the worktree on one of this worker's ports."""
    port = port_range.next_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=git_worktree.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("page", ["pyproject.toml", "conftest.py", "tox.ini"])
def test_edited_page_is_served_from_the_worktree_only(
    site: str, git_worktree: GitWorktree, page: str
) -> None:
    original = (git_worktree.repo_root / page).read_bytes()
    edited = (git_worktree.path / page).read_bytes() + f"# edited by {page}\n".encode()
    (git_worktree.path / page).write_bytes(edited)
    with urllib.request.urlopen(f"{site}/{page}", timeout=5) as response:
        assert response.read() == edited
    assert (git_worktree.repo_root / page).read_bytes() == original


def test_new_page_exists_only_in_the_worktree(site: str, git_worktree: GitWorktree) -> None:
    (git_worktree.path / "demo.html").write_text("<h1>demo</h1>\n")
    with urllib.request.urlopen(f"{site}/demo.html", timeout=5) as response:
        assert b"demo" in response.read()
    assert not (git_worktree.repo_root / "demo.html").exists()
