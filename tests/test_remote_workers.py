"""xdist workers through other gateways: ``--px``/``via``, ``--tx socket=`` on loopback.

Real ``pytest`` runs whose workers run through execnet's proxy gateways or its socket server
(a real process with a clean environment, in a UTS namespace of its own where the machine
allows it: "another host" that shares this machine's loopback and files). What the tests
check is what a remote worker gets: the controller's settings whatever their source, the
controller's commit, its host's name in the reports, one actionable line where it cannot work.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from .git_helpers import git
from .inner_run_helpers import check_inner_warnings
from .process_helpers import child_env
from .remote_helpers import (
    OTHER_HOST,
    SOCKET_SERVER,
    SocketServer,
    join_hosts,
    socket_server,
    start_host,
    two_host_problem,
    uts_problem,
)

pytest_plugins = ["pytester"]

#: Plugins that are not ours and only slow the inner runs down (or warn in a worker whose
#: environment lacks the PYTEST_ADDOPTS pytester sets: a remote one).
QUIET: tuple[str, ...] = ("-p", "no:benchmark", "-p", "no:hypothesispytest")
QUIET += ("-p", "no:cacheprovider")
QUIET += ("-p", "no:asyncio", "-p", "no:aiohttp")
#: A worker that dies is not replaced: a replacement through execnet's socket server would
#: wait for the server, which serves one gateway at a time, to finish with the dead one.
QUIET += ("--max-worker-restart=0",)

#: A range of ports no other test uses, given to the controller in its environment only.
RANGE = (28600, 29399)

RSYNC_DEPRECATED = "*DeprecationWarning: The --rsyncdir command line argument*"

#: execnet's socket gateway leaves its client socket to the garbage collector at the
#: controller's exit; pytest before 8.4 let Python print that at shutdown ("sys:1:"), 8.4 and
#: later do not. Seen with PYTEST_AIOPS_DISABLE=1 too, so not a socket of this plugin's.
SOCKET_GATEWAY_LEAK = "sys:1: ResourceWarning: unclosed <socket.socket fd=*laddr=('127.0.0.1', *)>"
SOCKET_RUN_ALLOWED = [RSYNC_DEPRECATED]
if tuple(int(part) for part in pytest.__version__.split(".")[:2]) < (8, 4):
    SOCKET_RUN_ALLOWED.append(SOCKET_GATEWAY_LEAK)

WHERE = """
import json, os, socket, subprocess, uuid
from pathlib import Path

RECORDS = Path({records!r})


def record(**data):
    data.update(host=socket.gethostname(), env=os.environ.get("PYTEST_AIOPS_PORT_RANGE"))
    (RECORDS / f"{{uuid.uuid4().hex}}.json").write_text(json.dumps(data))


def test_where(port_range, git_worktree):
    head = subprocess.run(
        ["git", "-C", str(git_worktree.path), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    record(worker=port_range.owner, start=port_range.start, end=port_range.end, head=head)
"""

needs_uts = pytest.mark.skipif(uts_problem() is not None, reason=str(uts_problem()))


@pytest.fixture
def project(pytester: pytest.Pytester, private_lock_dir: Path, tmp_path: Path) -> Path:
    """A git repository with ``tests/test_where.py`` committed, and its records directory."""
    records = tmp_path / "records"
    records.mkdir()
    tests = pytester.path / "tests"
    tests.mkdir()
    (tests / "test_where.py").write_text(WHERE.format(records=str(records)))
    git(pytester.path, "init", "-q", "-b", "main")
    git(pytester.path, "add", "tests")
    git(pytester.path, "commit", "-qm", "first")
    return records


def records(directory: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def run(
    pytester: pytest.Pytester, *args: str, server: SocketServer | None = None
) -> pytest.RunResult:
    """An inner run (in the socket server's network namespace, to reach it), warning-free."""
    # The test directory as an absolute path: xdist maps the arguments that are paths onto
    # the rsync roots for a remote worker, and fails on a relative one.
    tests = str(pytester.path / "tests")
    if server is None:
        return pytester.runpytest_subprocess(*QUIET, "-rA", tests, *args, timeout=180)
    basetemp = f"--basetemp={pytester.path / 'basetemp'}"
    command = [*server.enter(), sys.executable, "-m", "pytest", basetemp, *QUIET, "-rA", tests]
    result = pytester.run(*command, *args, timeout=180)
    check_inner_warnings(result.stdout.str(), result.stderr.str(), SOCKET_RUN_ALLOWED)
    return result


def in_range(record: dict[str, object]) -> bool:
    return RANGE[0] <= int(str(record["start"])) <= int(str(record["end"])) <= RANGE[1]


def _xdist_has_px() -> bool:
    """Whether this pytest-xdist declares ``--px`` (newer than the matrix's minimum, 3.3)."""
    import inspect

    import xdist.plugin

    return '"--px"' in inspect.getsource(xdist.plugin)


@pytest.mark.skipif(not _xdist_has_px(), reason="this pytest-xdist has no --px option")
def test_via_gateway_on_this_host_takes_the_settings_and_leases_here(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--px id=px//popen --tx popen//via=px``: a gateway that may be remote, found to be on
    this host; the parent range is for the plain popen worker alone."""
    monkeypatch.setenv("PYTEST_AIOPS_PORT_RANGE", "{}-{}".format(*RANGE))
    result = run(
        pytester, "--dist", "each", "--px", "id=px//popen", "--tx", "popen//via=px", "--tx", "popen"
    )
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines(
        [r"aiops: ports \d+-\d+ for 1 workers x 32; 1 worker\(s\) through other gateways .*"]
    )
    found = records(project)
    head = git(pytester.path, "rev-parse", "HEAD")
    assert len(found) == 2, found
    assert all(in_range(r) and r["head"] == head for r in found), found
    assert {r["host"] for r in found} == {socket.gethostname()}
    lines = [line for line in result.outlines if line.startswith("aiops gw")]
    assert len(lines) == 2, lines
    assert not any(" on " in line for line in lines), lines
    # The via worker leases a block of its own on this host; the popen one its slice.
    assert sorted("(slice 0)" in line for line in lines) == [False, True], lines


@needs_uts
def test_disable_in_the_controllers_environment_reaches_a_socket_worker(
    pytester: pytest.Pytester, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYTEST_AIOPS_DISABLE=1 on the controller: the socket server's worker, which never
    sees that variable, leases nothing either."""
    pytester.makepyfile(
        **{
            "tests/test_disabled.py": """
            import pytest

            def test_disabled(request):
                disabled = "disabled .from env PYTEST_AIOPS_DISABLE"
                with pytest.raises(pytest.fail.Exception, match=disabled):
                    request.getfixturevalue("aiops_worker")
            """
        }
    )
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    monkeypatch.setenv("PYTEST_AIOPS_DISABLE", "1")
    with socket_server(server_dir, hostname=None) as server:
        result = run(
            pytester,
            "-k",
            "disabled",
            "--tx",
            f"socket=127.0.0.1:{server.port}",
            "-d",
            f"--rsyncdir={pytester.path / 'tests'}",
            server=server,
        )
    result.assert_outcomes(passed=1)
    assert not any(line.startswith("aiops") for line in result.outlines)


@needs_uts
def test_socket_worker_on_another_host_checks_out_the_controllers_commit(
    pytester: pytest.Pytester, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other host has a clone whose HEAD is behind: its worker checks out the
    controller's HEAD once it has that commit, and says in one line when it has not."""
    clone = tmp_path / "other-host-clone"
    git(tmp_path, "clone", "-q", str(pytester.path), str(clone))
    (pytester.path / "README").write_text("newer\n")
    git(pytester.path, "add", "README")
    git(pytester.path, "commit", "-qm", "a commit the other host does not have")
    head = git(pytester.path, "rev-parse", "HEAD")
    assert git(clone, "rev-parse", "HEAD") != head
    pytester.makepyfile(
        **{
            "tests/test_session.py": """
            import subprocess

            def test_session(provisioned_session):
                path = provisioned_session.allocation("git-worktree")["worktreePath"]
                subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], check=True)
            """
        }
    )
    monkeypatch.setenv("PYTEST_AIOPS_PORT_RANGE", "{}-{}".format(*RANGE))
    monkeypatch.setenv("PYTEST_AIOPS_RESOURCES", "port-range,git-worktree")
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    args = (
        "--dist",
        "each",
        "--tx",
        "popen",
        f"--rsyncdir={pytester.path / 'tests'}",
    )
    with socket_server(server_dir, hostname=OTHER_HOST) as server:
        gateway = ("--tx", f"socket=127.0.0.1:{server.port}//chdir={clone}")
        missing = run(pytester, *gateway, *args, server=server)
        missing.assert_outcomes(passed=2, errors=2)
        for fixture in ("git_worktree", "provisioned_session"):
            missing.stdout.fnmatch_lines(
                [
                    f"{fixture}: commit {head} (HEAD on the controller's host "
                    f"{socket.gethostname()}) is missing from {clone} on host {OTHER_HOST}; "
                    f"push it from the controller's repository and fetch it into {clone} on "
                    f"{OTHER_HOST} *"
                ]
            )
        git(clone, "fetch", "-q", "origin")  # the commit is there now; the clone's HEAD is not
        assert git(clone, "rev-parse", "HEAD") != head
        for path in project.glob("*.json"):
            path.unlink()
        result = run(pytester, *gateway, *args, server=server)
    result.assert_outcomes(passed=4)
    found = records(project)
    assert sorted(str(r["host"]) for r in found) == sorted([OTHER_HOST, socket.gethostname()])
    assert all(in_range(r) and r["head"] == head for r in found), found
    remote = next(r for r in found if r["host"] == OTHER_HOST)
    assert remote["env"] is None  # not from its own environment: from the controller
    result.stdout.re_match_lines_random(
        [
            rf"aiops {remote['worker']} on {OTHER_HOST}: ports {remote['start']}-{remote['end']}$",
            r"aiops gw\d: ports \d+-\d+ \(slice 0\)$",
            r"aiops: .*1 worker\(s\) through other gateways lease on their own host.*"
            rf"\(on other hosts: commit {head[:12]} alone\)",
        ]
    )


@needs_uts
def test_rsynced_copy_without_git_says_what_to_do(
    pytester: pytest.Pytester, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only remote workers: no parent range is leased; --rsyncdir copies no .git, and
    git_worktree there says to point --aiops-repo at a clone on that host. A setting from
    the controller's ini file (which the copy does not hold) is honoured there too."""
    pytester.makeini("[pytest]\naiops_ports_per_worker = 16\n")
    pytester.makepyfile(
        **{
            "tests/test_ports_only.py": f"""
            import json, socket
            from pathlib import Path

            def test_ports_only(port_range):
                data = {{"host": socket.gethostname(), "start": port_range.start,
                        "end": port_range.end}}
                Path({str(tmp_path / "ports.json")!r}).write_text(json.dumps(data))
            """
        }
    )
    monkeypatch.setenv("PYTEST_AIOPS_PORT_RANGE", "{}-{}".format(*RANGE))
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with socket_server(server_dir, hostname=OTHER_HOST) as server:
        result = run(
            pytester,
            "--tx",
            f"socket=127.0.0.1:{server.port}",
            "-d",
            f"--rsyncdir={pytester.path / 'tests'}",
            server=server,
        )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.re_match_lines(
        [
            r"aiops: 16 ports per worker from 28600-29399, leased on first use; 1 worker\(s\) "
            r"through other gateways lease on their own host; .*"
        ]
    )
    copy = server_dir / "pyexecnetcache"  # the worker's rootdir: where the copy of tests/ is
    result.stdout.fnmatch_lines(
        [
            f"git_worktree needs a git repository, but {copy} is not inside one; this worker "
            f"runs on host {OTHER_HOST}, whose copy has no .git (--rsyncdir copies none): set "
            f"--aiops-repo to the path of a clone of the repository under test that exists on "
            f"{OTHER_HOST} *"
        ]
    )
    ports = json.loads((tmp_path / "ports.json").read_text())
    assert ports["host"] == OTHER_HOST, ports
    assert in_range(ports), ports
    assert int(ports["end"]) - int(ports["start"]) + 1 == 16, ports


@needs_uts
def test_crash_on_another_host_is_named(
    pytester: pytest.Pytester, project: Path, tmp_path: Path
) -> None:
    """A worker that dies on the other host: the controller's report says where."""
    pytester.makepyfile(
        **{
            "tests/test_crash.py": """
            import os

            def test_crash(port_range):
                os._exit(3)
            """
        }
    )
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with socket_server(server_dir, hostname=OTHER_HOST) as server:
        result = run(
            pytester,
            "-k",
            "crash",
            "--tx",
            f"socket=127.0.0.1:{server.port}",
            "-d",
            f"--rsyncdir={pytester.path / 'tests'}",
            server=server,
        )
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [f"aiops gw0 on {OTHER_HOST}: crashed; its ports were freed on {OTHER_HOST} *"]
    )
    assert os.path.isdir(pytester.path)


@pytest.mark.skipif(two_host_problem() is not None, reason=str(two_host_problem()))
@pytest.mark.inner_warnings(RSYNC_DEPRECATED)
def test_two_hosts_joined_by_veth(pytester: pytest.Pytester, project: Path, tmp_path: Path) -> None:
    """Two "hosts" built of namespaces: each its own network (joined by a veth pair the test
    makes), its own /tmp and /dev/shm (so its own default lock directory) and its own name.
    The controller on host A, with PYTEST_AIOPS_PORT_RANGE in its environment only, runs one
    local worker and one on host B (execnet's socket server there, in a clone whose HEAD is
    behind): both lease from that range, each on its host, at the controller's commit."""
    clone = tmp_path / "b-clone"
    git(tmp_path, "clone", "-q", str(pytester.path), str(clone))
    (pytester.path / "README").write_text("newer\n")
    git(pytester.path, "add", "README")
    git(pytester.path, "commit", "-qm", "newer than host B's HEAD")
    git(clone, "fetch", "-q", "origin")
    head = git(pytester.path, "rev-parse", "HEAD")
    assert git(clone, "rev-parse", "HEAD") != head
    share = Path(os.path.commonpath([pytester.path, tmp_path]))
    server_dir = tmp_path / "b-server"
    server_dir.mkdir()
    server_log = tmp_path / "b-server.log"
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    server = start_host(
        "aiops-host-b",
        share,
        "vb",
        "10.231.7.2",
        [sys.executable, "-u", *SOCKET_SERVER, "10.231.7.2:8888"],
        env=child_env(clean),
        cwd=server_dir,
        log=server_log,
    )
    env = child_env(PYTEST_AIOPS_PORT_RANGE="{}-{}".format(*RANGE), SERVER_LOG=str(server_log))
    for key in list(env):
        if key.startswith(("PYTEST_XDIST_", "PYTEST_AIOPS_LOCK_DIR", "PYTEST_ADDOPTS")):
            del env[key]
    wait = 'while ! grep -q "Entering Accept loop" "$SERVER_LOG"; do sleep 0.05; done; exec "$@"'
    controller_log = tmp_path / "a-controller.log"
    controller = start_host(
        "aiops-host-a",
        share,
        "va",
        "10.231.7.1",
        [
            "sh",
            "-c",
            wait,
            "wait",
            sys.executable,
            "-m",
            "pytest",
            *QUIET,
            "-rA",
            str(pytester.path / "tests"),
            "--dist",
            "each",
            "--tx",
            "popen",
            "--tx",
            f"socket=10.231.7.2:8888//chdir={clone}",
            f"--rsyncdir={pytester.path / 'tests'}",
        ],
        env=env,
        cwd=pytester.path,
        log=controller_log,
    )
    try:
        join_hosts(controller, server)
        controller.wait(timeout=300)
    finally:
        for process in (controller, server):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
    output = controller_log.read_text()
    assert controller.returncode == 0, output + server_log.read_text()
    check_inner_warnings(output, "", [RSYNC_DEPRECATED])
    found = records(project)
    assert sorted(str(r["host"]) for r in found) == ["aiops-host-a", "aiops-host-b"], found
    assert all(in_range(r) and r["head"] == head for r in found), found
    remote = next(r for r in found if r["host"] == "aiops-host-b")
    assert remote["env"] is None
    assert f"aiops {remote['worker']} on aiops-host-b: ports {remote['start']}-" in output


def test_gateway_specs_counted_for_the_parent_range() -> None:
    """Only plain popen gateways (``python=`` and ``chdir=`` included) are surely local."""
    from pytest_aiops._plugin.remote import local_worker_count

    specs = [
        "2*popen",
        "popen//python=python3",
        "popen//chdir=/somewhere",
        "popen//via=px",
        "3*popen//via=px",
        "socket=127.0.0.1:8888",
        "ssh=build-2//python=python3",
    ]
    assert local_worker_count(specs) == (4, 6)
    assert local_worker_count([]) == (0, 0)


def test_settings_travel_as_json_whatever_their_bytes() -> None:
    """What a worker gets equals what the controller resolved, a non-UTF-8 path (lone
    surrogates from the environment) included: the JSON is ASCII, which execnet carries."""
    from pytest_aiops._plugin.settings import Settings

    settings = Settings(
        disable=True,
        port_range=(28600, 29399),
        lock_dir="/srv/locks-\udcff",
        worktree_include=(".env", "*.so"),
        resources=("port-range", "git-worktree"),
        sources={"port_range": "from env PYTEST_AIOPS_PORT_RANGE"},
    )
    text = settings.to_json()
    assert text.isascii()
    assert Settings.from_json(text) == settings
    assert Settings.from_json(Settings().to_json()) == Settings(sources={})
