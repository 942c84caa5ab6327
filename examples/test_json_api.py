"""A threaded JSON API on this worker's ports that reads and writes files in the worktree."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pytest_aiops.plugin import GitWorktree, PortRange


def _handler(root: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            (root / self.path.lstrip("/")).write_bytes(body)
            self.send_response(204)
            self.end_headers()

        def do_GET(self) -> None:
            payload = json.dumps({"text": (root / self.path.lstrip("/")).read_text()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def api(port_range: PortRange, git_worktree: GitWorktree) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", port_range.next_port()), _handler(git_worktree.path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("name", ["notes.txt", "more-notes.txt", "final.txt"])
def test_put_then_get(api: str, git_worktree: GitWorktree, name: str) -> None:
    request = urllib.request.Request(f"{api}/{name}", data=name.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 204
    with urllib.request.urlopen(f"{api}/{name}", timeout=5) as response:
        assert json.loads(response.read()) == {"text": name}
    assert not (git_worktree.repo_root / name).exists()


def test_git_sees_the_edits_in_the_worktree_only(api: str, git_worktree: GitWorktree) -> None:
    (git_worktree.path / "conftest.py").write_text("# rewritten in the worktree\n")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "conftest.py"],
        cwd=git_worktree.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert status.strip() == "M conftest.py"
    assert (git_worktree.repo_root / "conftest.py").read_text() != "# rewritten in the worktree\n"
