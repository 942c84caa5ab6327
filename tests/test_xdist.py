"""Real ``pytest -n`` runs in subprocesses: slices, --dist modes, crashes, concurrency, hooks."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .git_helpers import record_git_calls
from .inner_run_helpers import check_inner_warnings
from .port_helpers import live_leases

pytest_plugins = ["pytester"]

#: Plugins that are not ours and only slow the inner runs down (or warn under xdist).
QUIET = ("-p", "no:benchmark", "-p", "no:hypothesispytest", "-p", "no:cacheprovider")

RECORDER = """
import json, os, uuid
from pathlib import Path

import pytest


@pytest.fixture
def record(port_range):
    def write(**extra):
        data = {"worker": port_range.owner, "pid": os.getpid(), "run": os.environ.get("RUN_ID", ""),
                "start": port_range.start, "end": port_range.end, **extra}
        path = Path(os.environ["RECORD_DIR"]) / f"{uuid.uuid4().hex}.json"
        tmp = path.with_suffix(".tmp")  # readers glob *.json: never see half a record
        tmp.write_text(json.dumps(data))
        tmp.rename(path)
    return write
"""

TAKE_PORTS = """
import socket
import pytest

@pytest.mark.parametrize("i", range(4))
def test_take(record, port_range, i):
    port = port_range.next_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    record(port=port)
"""


@pytest.fixture(autouse=True)
def environment(private_lock_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private lock directory and a directory the inner tests record their ranges in."""
    for key in list(os.environ):
        if key.startswith("PYTEST_XDIST_"):
            monkeypatch.delenv(key)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("RECORD_DIR", str(records))
    return records


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*QUIET, *args, timeout=120)


def records(directory: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def ranges_by_holder(recs: list[dict[str, object]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(run, worker) -> its range; a worker that reported two different ranges fails."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for rec in recs:
        key = (str(rec["run"]), str(rec["worker"]))
        value = (int(str(rec["start"])), int(str(rec["end"])))
        assert found.setdefault(key, value) == value, (key, found[key], value)
    return found


def assert_disjoint(ranges: list[tuple[int, int]]) -> None:
    ordered = sorted(ranges)
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert end < start, f"overlapping port ranges: {ordered}"


def parent_range(result: pytest.RunResult) -> tuple[int, int]:
    for line in result.outlines:
        match = re.match(r"aiops: ports (\d+)-(\d+) for \d+ workers x \d+;", line)
        if match:
            return int(match.group(1)), int(match.group(2))
    raise AssertionError("no aiops header line:\n" + result.stdout.str())


def test_four_workers_get_disjoint_slices_of_one_parent_range(
    pytester: pytest.Pytester, environment: Path
) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(**{f"test_m{i}": TAKE_PORTS for i in range(4)})
    # 16 ports each: under --dist load one worker may run all 16 tests.
    result = run(pytester, "-n", "4", "--aiops-ports-per-worker=16", "-rA")
    result.assert_outcomes(passed=16)
    low, high = parent_range(result)
    assert high - low + 1 == 64
    found = ranges_by_holder(records(environment))
    assert len(found) >= 2
    for start, end in found.values():
        assert end - start + 1 == 16
        assert low <= start <= end <= high
        assert (start - low) % 16 == 0
    assert_disjoint(list(found.values()))
    ports = [int(str(r["port"])) for r in records(environment)]
    assert len(set(ports)) == len(ports)
    result.stdout.fnmatch_lines(["aiops gw*: ports * (slice *)"])


@pytest.mark.parametrize("dist", ["load", "loadscope", "loadfile", "loadgroup"])
def test_every_dist_mode(pytester: pytest.Pytester, environment: Path, dist: str) -> None:
    pytester.makeconftest(RECORDER)
    grouped = TAKE_PORTS.replace(
        '@pytest.mark.parametrize("i", range(4))',
        '@pytest.mark.xdist_group("g{n}")\n@pytest.mark.parametrize("i", range(4))',
    )
    pytester.makepyfile(test_a=grouped.format(n=1), test_b=grouped.format(n=2))
    result = run(pytester, "-n", "2", f"--dist={dist}", "--aiops-ports-per-worker=8")
    result.assert_outcomes(passed=8)
    found = ranges_by_holder(records(environment))
    assert_disjoint(list(found.values()))
    low, high = parent_range(result)
    assert all(low <= s <= e <= high for s, e in found.values())


CRASHING = """
import os, stat, time
from pathlib import Path

def test_crash_once(record, port_range, worker_id):
    record()
    marker = Path(os.environ["RECORD_DIR"]) / "crashed"
    if marker.exists():
        return
    marker.write_text(worker_id)
    pid = os.fork()
    if pid == 0:
        # The orphan keeps the worker's slice lock (an inherited lock descriptor) after the
        # worker dies, but closes the pipes, so xdist still sees the worker go down.
        for name in os.listdir("/proc/self/fd"):
            try:
                mode = os.fstat(int(name)).st_mode
            except OSError:
                continue
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode):
                os.close(int(name))
        time.sleep(120)
        os._exit(0)
    (marker.parent / "orphan.pid").write_text(str(pid))
    os._exit(1)
"""

SLOW = """
import os, time
from pathlib import Path
import pytest

@pytest.mark.parametrize("i", range(6))
def test_slow(record, i):
    directory = Path(os.environ["RECORD_DIR"])
    if (directory / "crashed").exists():
        # After the crash, hold the surviving worker until the replacement (gw2) has started:
        # the survivor then holds at most the two tests xdist queued for it, and the rest go
        # to the replacement, which must lease. Without this, a fast survivor sometimes ran
        # every test before the replacement came up (the test's old flake).
        for _ in range(2400):  # a hang guard (about two minutes of polls), no timing asserted
            if (directory / "started-gw2").exists():
                break
            time.sleep(0.05)
    time.sleep(0.3)
    record()
"""

#: Each worker marks its start (the replacement's is what SLOW waits for).
STARTED = """

def pytest_configure(config):
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        (Path(os.environ["RECORD_DIR"]) / f"started-{worker}").touch()
"""


@pytest.fixture
def reap_orphan(environment: Path) -> Iterator[None]:
    yield
    pid_file = environment / "orphan.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.usefixtures("reap_orphan")
def test_replacement_of_a_crashed_worker_overlaps_no_live_lease(
    pytester: pytest.Pytester, environment: Path
) -> None:
    pytester.makeconftest(RECORDER + STARTED)
    pytester.makepyfile(test_a_crash=CRASHING, test_b_slow=SLOW, test_c_crash_again=CRASHING)
    result = run(pytester, "-n", "2", "--max-worker-restart=1", "--aiops-ports-per-worker=4")
    result.stdout.fnmatch_lines(["*replacing crashed worker gw*"])
    result.assert_outcomes(passed=7, failed=1)  # test_c skips its crash
    crashed = (environment / "crashed").read_text()
    found = ranges_by_holder(records(environment))
    workers = {worker for _, worker in found}
    assert crashed in workers
    assert len(workers) == 3  # gw0, gw1 and the replacement gw2
    # The orphan still holds the crashed worker's slice, so the replacement (given that
    # free index) had to take a block of its own: all three ranges are disjoint.
    assert_disjoint(list(found.values()))
    result.stdout.fnmatch_lines(["aiops gw2: ports *; own block because child port slice *"])


BARRIER = """
import json, os, time
from pathlib import Path
import pytest

@pytest.mark.parametrize("i", range(4))
def test_wait_for_the_other_run(record, i):
    record()
    directory = Path(os.environ["RECORD_DIR"])
    for _ in range(1200):  # a hang guard (about a minute of polls)
        runs = {json.loads(p.read_text())["run"] for p in directory.glob("*.json")}
        if len(runs) == 2:
            return
        time.sleep(0.05)
    raise AssertionError("the other run never started")
"""


def test_two_concurrent_runs_of_one_project(pytester: pytest.Pytester, environment: Path) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_barrier=BARRIER)
    command = [sys.executable, "-m", "pytest", *QUIET, "-n", "2", "--aiops-ports-per-worker=4"]
    processes = [
        subprocess.Popen(
            command,
            cwd=pytester.path,
            env={**os.environ, "RUN_ID": run_id},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for run_id in ("one", "two")
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0] + outputs[1]
    for output in outputs:
        check_inner_warnings(output, "", ())
    parents = [re.search(r"aiops: ports (\d+)-(\d+) for 2 workers", out) for out in outputs]
    assert all(parents), outputs
    found = ranges_by_holder(records(environment))
    assert {run for run, _ in found} == {"one", "two"}
    assert_disjoint(list(found.values()))
    spans = [(int(m.group(1)), int(m.group(2))) for m in parents if m]
    assert_disjoint(spans)  # the second run moved to the next free block


def test_unused_fixtures_under_xdist_run_no_git_and_leave_no_lease(
    pytester: pytest.Pytester, tmp_path: Path, lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["git", "init", "-q", str(pytester.path)], check=True)
    calls = record_git_calls(tmp_path, monkeypatch)
    pytester.makepyfile(
        "import pytest\n@pytest.mark.parametrize('i', range(6))\ndef test_x(i): pass"
    )
    first = run(pytester, "-n", "2")
    first.assert_outcomes(passed=6)
    second = run(pytester, "-n", "2")
    second.assert_outcomes(passed=6)
    assert not calls.exists()
    assert live_leases(lock_dir) == []
    # Same project, same ports, run after run (the controller's parent block is seeded by it).
    assert parent_range(first) == parent_range(second)


CUSTOM_PROVIDER = """
import json, os
from pathlib import Path
from pytest_aiops import ResourceLease

class Sandbox:
    kind = "sandbox"

    def provision(self, *, session_id, workspace_root, options):
        directory = Path(os.environ["RECORD_DIR"]) / session_id.replace("/", "_").replace(":", "_")
        directory.mkdir()
        def release():
            (directory / "released").touch()
        hard = {"directory": str(directory), "flavour": options["flavour"]}
        return ResourceLease("sandbox", hard, release, {"env": {"SANDBOX_DIR": str(directory)}})

def pytest_aiops_register_providers(register):
    register(Sandbox())

def pytest_aiops_session_resources(config, worker_id):
    return [{"kind": "sandbox", "options": {"flavour": f"for-{worker_id}"}}]
"""

USES_CUSTOM = """
import os, subprocess, sys
import pytest

@pytest.mark.parametrize("i", range(4))
def test_sandbox(provisioned_session, port_range, worker_id, i):
    allocation = provisioned_session.allocation("sandbox")
    assert allocation["flavour"] == f"for-{worker_id}"
    env = provisioned_session.injected_env()
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ['SANDBOX_DIR'], "
                          "os.environ['AGENT_PORT_RANGE_START'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == [allocation["directory"], str(port_range.start)]
"""


def test_custom_provider_end_to_end_under_xdist(
    pytester: pytest.Pytester, environment: Path
) -> None:
    pytester.makeconftest(CUSTOM_PROVIDER)
    pytester.makepyfile(test_custom=USES_CUSTOM)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=4)
    sandboxes = [p for p in environment.iterdir() if p.is_dir()]
    assert 1 <= len(sandboxes) <= 2
    assert all((p / "released").exists() for p in sandboxes)


def test_too_many_ports_for_the_range_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = run(pytester, "-n", "2", "--aiops-port-range=20000-20009")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --aiops-ports-per-worker (32) x 2 workers = 64 ports do not fit in "
            "--aiops-port-range 20000-20009 (10 ports); lower --aiops-ports-per-worker or -n, "
            "or widen --aiops-port-range (default)"
        ]
    )


def test_without_xdist_a_worker_leases_its_own_block(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(TAKE_PORTS)
    result = run(pytester, "-p", "no:xdist", "--aiops-ports-per-worker=4", "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["aiops: 4 ports per worker from 20000-26399, leased on first use; *", "aiops master: *"]
    )


@pytest.mark.inner_warnings("*AiopsWarning: port range * overlaps the OS ephemeral port range *")
def test_ephemeral_range_warning_goes_to_the_warnings_summary(pytester: pytest.Pytester) -> None:
    from pytest_aiops._ports.probe import ephemeral_range

    low, high = ephemeral_range()
    start = max(low, high - 63) if high - low >= 15 else low
    pytester.makepyfile("def test_x(port_range): pass\ndef test_y(port_range): pass")
    result = run(
        pytester, "-n", "2", f"--aiops-port-range={start}-{high}", "--aiops-ports-per-worker=4"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*= warnings summary =*",
            "*AiopsWarning: port range * overlaps the OS ephemeral port range "
            f"{low}-{high}: the kernel may hand those ports to outgoing connections at any time*",
        ]
    )
    assert "AiopsWarning" not in result.stderr.str()


def test_unusable_lock_dir_under_xdist_is_the_same_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(port_range): pass")
    result = run(pytester, "-n", "2", "--aiops-lock-dir=/etc/passwd")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --aiops-lock-dir must be a directory this user can create or write to, not "
            "'/etc/passwd': /etc/passwd is not a directory (from --aiops-lock-dir)"
        ]
    )
