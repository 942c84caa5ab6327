"""Where ``provisioned_session`` writes its discovery file: under pytest's basetemp, never in
the user's checkout (docs/how-it-works.md, "Where things live").

The inner run is a plain ``python -m pytest`` in a committed git repository (its rootdir),
with ``--basetemp`` outside it and nothing else that writes there (no cache, no bytecode), so
"the checkout is untouched" is checked byte for byte: its files and ``git status``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .git_helpers import git
from .inner_run_helpers import check_inner_warnings
from .process_helpers import child_env
from .snapshot_helpers import tree_state

#: The inner test: the worker's discovery file, its basetemp and what the file holds.
RECORDS_ITS_DISCOVERY_FILE = """
import json, os

def test_session(provisioned_session, tmp_path_factory, aiops_worker):
    path = provisioned_session.discovery_file
    with open(path) as handle:
        session_id = json.load(handle)["sessionId"]
    out = os.path.join(os.environ["DISCOVERY_OUT"], aiops_worker.worker_id + ".json")
    with open(out, "w") as handle:
        json.dump({"file": str(path), "basetemp": str(tmp_path_factory.getbasetemp()),
                   "worker": aiops_worker.worker_id, "sessionId": session_id,
                   "expected": provisioned_session.session_id}, handle)
"""


@pytest.mark.parametrize(("xdist", "workers"), [((), ["master"]), (("-n", "2"), ["gw0", "gw1"])])
def test_the_discovery_file_is_under_basetemp_and_the_checkout_is_untouched(
    private_lock_dir: Path, tmp_path: Path, xdist: tuple[str, ...], workers: list[str]
) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "pytest.ini").write_text("[pytest]\n")
    # One test per worker under -n 2, so each worker opens its own session.
    for worker in workers:
        (repo / f"test_session_{worker}.py").write_text(RECORDS_ITS_DISCOVERY_FILE)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project")
    out = tmp_path / "out"
    out.mkdir()
    basetemp = tmp_path / "basetemp"
    # .git left out: git status itself may refresh the index.
    before = (tree_state(repo), git(repo, "status", "--porcelain", "--ignored"))

    env = child_env(
        DISCOVERY_OUT=str(out),
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ in the checkout: it must stay as it was
        PYTEST_ADDOPTS="-p no:asyncio -p no:aiohttp -p no:benchmark",
    )
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_XDIST_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--basetemp={basetemp}",
            *xdist,
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check_inner_warnings(result.stdout, result.stderr, ())

    after = (tree_state(repo), git(repo, "status", "--porcelain", "--ignored"))
    assert after == before  # not a file added, changed or removed in the user's checkout
    assert before[1] == ""
    seen = {}
    for path in out.iterdir():
        data = json.loads(path.read_text())
        seen[data["worker"]] = data
    if xdist:  # xdist may hand both tests to one worker: check every worker that ran one
        assert seen
        assert set(seen) <= set(workers)
    else:
        assert set(seen) == {"master"}
    for worker, data in seen.items():
        worker_basetemp = Path(data["basetemp"])
        # xdist gives each worker its own basetemp below the run's: <basetemp>/popen-<worker>.
        assert worker_basetemp == (basetemp / f"popen-{worker}" if xdist else basetemp)
        assert Path(data["file"]) == worker_basetemp / f"aiops-{worker}" / "resources.json"
        assert data["sessionId"] == data["expected"]
        assert not Path(data["file"]).resolve().is_relative_to(repo.resolve())
