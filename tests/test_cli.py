"""The ``pytest-aiops`` command line, run as a real script on real repositories and signals.

Every test starts the CLI in a subprocess (``python -m pytest_aiops``; the installed
``pytest-aiops`` entry point once) with a private lock directory and worktree root, and
checks what is left on disk and in ``git worktree list`` afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import DiscoverySnapshot, default_worktree_root

from .git_helpers import git
from .process_helpers import child_env
from .wait_helpers import wait_for

DEADLINE = 60.0  # generous upper bound for a subprocess to get somewhere; never asserted


class Cli:
    """Runs ``pytest-aiops`` in a repository with a private lock dir and worktree root."""

    def __init__(self, repo: Path, lock_dir: Path, worktree_root: Path) -> None:
        self.repo = repo
        self.lock_dir = lock_dir
        self.worktree_root = worktree_root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_AIOPS_")}
        self.started: list[subprocess.Popen[str]] = []

    @property
    def locations(self) -> list[str]:
        return ["--lock-dir", str(self.lock_dir), "--worktree-root", str(self.worktree_root)]

    def argv(self, command: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "pytest_aiops", command, *self.locations, *args]

    def __call__(
        self, command: str, *args: str, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command, *args),
            cwd=cwd or self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``run ARGS`` in the background (ended by the fixture if a test fails)."""
        return self.popen(self.argv("run", *args))

    def popen(self, argv: list[str]) -> subprocess.Popen[str]:
        """Start ``argv`` in the repository, piped, ended by the fixture if a test fails."""
        process = subprocess.Popen(
            argv,
            cwd=self.repo,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(process)
        return process

    def status(self) -> dict[str, Any]:
        result = self("status", "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def lease_records(self) -> list[str]:
        """Visible lease records (a released one is kept hidden, as ``.<name>``, for reuse)."""
        leases = self.lock_dir / "leases"
        if not leases.is_dir():
            return []
        return sorted(p.name for p in leases.glob("*.json") if not p.name.startswith("."))

    def registered_worktrees(self) -> list[str]:
        """``git worktree list`` paths other than the main checkout."""
        lines = git(self.repo, "worktree", "list", "--porcelain").splitlines()
        paths = [line.split(" ", 1)[1] for line in lines if line.startswith("worktree ")]
        return [p for p in paths if Path(p) != self.repo]


@pytest.fixture
def cli(repo: Path, lock_dir: Path, tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(repo, lock_dir, tmp_path / "worktrees")
    yield runner
    for process in runner.started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def waiting_command(ready: Path) -> list[str]:
    """A COMMAND that says it is ready, then waits; on a forwarded signal it records the
    signal's name in ``<ready>.got`` and exits 3."""
    script = (
        "import pathlib, signal, sys, time\n"
        "def got(signum, frame):\n"
        "    pathlib.Path(sys.argv[1] + '.got').write_text(signal.Signals(signum).name)\n"
        "    sys.exit(3)\n"
        "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
        "    signal.signal(s, got)\n"
        "pathlib.Path(sys.argv[1]).write_text('ready')\n"
        "while True:\n"
        "    time.sleep(1)\n"
    )
    return [sys.executable, "-c", script, str(ready)]


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pytest-aiops: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]


def assert_nothing_left(cli: Cli) -> None:
    assert cli.lease_records() == []
    assert cli.registered_worktrees() == []
    assert not cli.worktree_root.exists() or not [
        p for p in cli.worktree_root.iterdir() if not p.name.startswith(".")
    ]
    status = cli.status()
    assert status["leases"] == []
    assert status["staleLeases"] == []
    assert status["worktrees"] == []


DUMP = (
    "import json, os\n"
    "path = os.environ['AGENT_DISCOVERY_FILE']\n"
    "print(json.dumps({'env': {k: v for k, v in os.environ.items() if k.startswith('AGENT_')},\n"
    "                  'cwd': os.getcwd(), 'discovery': open(path).read()}))\n"
)


def test_run_injects_agent_env_and_writes_the_discovery_file(cli: Cli) -> None:
    result = cli("run", "--session-id", "cli-env", "--", sys.executable, "-c", DUMP)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    env: dict[str, str] = seen["env"]
    snapshot = DiscoverySnapshot.from_json(seen["discovery"])

    assert set(env) == {
        "AGENT_REPO_ROOT",
        "AGENT_WORKTREE_PATH",
        "AGENT_WORKTREE_BASE_REF",
        "AGENT_PORT_RANGE_START",
        "AGENT_PORT_RANGE_END",
        "AGENT_PORT_PRIMARY",
        "AGENT_DISCOVERY_FILE",
    }
    # The file is the snapshot, byte for byte, and agrees with the environment.
    assert seen["discovery"] == snapshot.to_json()
    assert snapshot.session_id == "cli-env"
    assert snapshot.workspace_root == str(cli.repo)
    assert {k: v for k, v in env.items() if k != "AGENT_DISCOVERY_FILE"} == dict(snapshot.env)
    assert [c.kind for c in snapshot.hard_constraints] == ["git-worktree", "port-range"]
    ports = snapshot.allocation("port-range")
    assert ports is not None
    assert env["AGENT_PORT_RANGE_START"] == str(ports["startPort"])
    assert env["AGENT_PORT_RANGE_END"] == str(ports["endPort"])
    assert ports["lockPath"].startswith(str(cli.lock_dir))
    # COMMAND ran inside its worktree, under the root we chose, where the file was written.
    assert seen["cwd"] == snapshot.working_directory == env["AGENT_WORKTREE_PATH"]
    assert Path(seen["cwd"]).parent == cli.worktree_root
    assert env["AGENT_DISCOVERY_FILE"] == os.path.join(
        seen["cwd"], ".agent-context", "resources.json"
    )
    assert_nothing_left(cli)


def test_run_writes_the_discovery_file_where_asked_and_removes_it(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "out" / "agent.json"
    result = cli(
        "run",
        "--resource",
        'port-range:{"blockSize": 4}',
        "--discovery-file",
        str(target),
        "--",
        sys.executable,
        "-c",
        DUMP,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["env"]["AGENT_DISCOVERY_FILE"] == str(target)
    assert "AGENT_WORKTREE_PATH" not in seen["env"]  # only the resources asked for
    assert seen["cwd"] == str(cli.repo)
    snapshot = DiscoverySnapshot.from_json(seen["discovery"])
    assert re.fullmatch(r"agent-.+-\d+", snapshot.session_id)  # the default session id
    allocation = snapshot.allocation("port-range")
    assert allocation is not None
    assert allocation["endPort"] - allocation["startPort"] == 3
    assert not target.exists()
    assert_nothing_left(cli)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["sh", "-c", "exit 0"], 0),
        (["sh", "-c", "exit 7"], 7),
        (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
    ],
)
def test_run_exits_with_the_command_status(cli: Cli, command: list[str], expected: int) -> None:
    result = cli("run", "--", *command)
    assert result.returncode == expected, result.stderr
    assert_nothing_left(cli)


def test_the_console_script_runs_too(cli: Cli) -> None:
    script = shutil.which("pytest-aiops", path=os.path.dirname(sys.executable))
    script = script or shutil.which("pytest-aiops")
    assert script is not None, "pytest-aiops console script is not installed"
    result = subprocess.run(
        [script, "run", *cli.locations, "--", "sh", "-c", 'test -n "$AGENT_PORT_PRIMARY"'],
        cwd=cli.repo,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert_nothing_left(cli)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_cli_reaches_the_command_and_everything_is_released(
    cli: Cli, tmp_path: Path, signum: signal.Signals
) -> None:
    ready = tmp_path / "ready"
    process = cli.start("--session-id", f"cli-{signum.name}", "--", *waiting_command(ready))
    wait_for(ready.exists, "COMMAND to start")
    assert len(cli.lease_records()) == 1
    assert len(cli.registered_worktrees()) == 1

    process.send_signal(signum)
    _, stderr = process.communicate(timeout=DEADLINE)

    assert process.returncode == 3, stderr  # COMMAND's own status, after its handler ran
    assert Path(f"{ready}.got").read_text() == signum.name
    assert_nothing_left(cli)


def test_sigterm_to_the_cli_ends_a_plain_command_and_releases(cli: Cli, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = cli.start("--", "sh", "-c", f'echo > "{ready}"; exec sleep 600')
    wait_for(ready.exists, "COMMAND to start")

    os.kill(process.pid, signal.SIGTERM)
    process.communicate(timeout=DEADLINE)

    assert process.returncode == 128 + signal.SIGTERM
    assert_nothing_left(cli)


def test_status_and_gc_tell_live_holders_from_dead_ones(cli: Cli, tmp_path: Path) -> None:
    live_ready, dead_ready = tmp_path / "live", tmp_path / "dead"
    live = cli.start("--session-id", "cli-live", "--", *waiting_command(live_ready))
    dead = cli.start("--session-id", "cli-dead", "--", *waiting_command(dead_ready))
    wait_for(lambda: live_ready.exists() and dead_ready.exists(), "both sessions to start")
    dead.kill()  # SIGKILL: no release runs; its COMMAND gets SIGTERM from the kernel
    dead.communicate(timeout=DEADLINE)

    status = cli.status()
    assert [lease["sessionId"] for lease in status["leases"]] == ["cli-live"]
    assert status["leases"][0]["pid"] == live.pid
    assert [lease["sessionId"] for lease in status["staleLeases"]] == ["cli-dead"]
    states = {w["sessionId"]: w["state"] for w in status["worktrees"]}
    assert states == {"cli-live": "live", "cli-dead": "orphaned"}

    table = cli("status")
    assert table.returncode == 0, table.stderr
    leases_section = table.stdout.split("\n\n")[0]
    assert "cli-live" in leases_section
    assert "cli-dead" not in leases_section
    assert "1 stale lease record" in leases_section

    dry = cli("gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove stale lease" in dry.stdout
    assert "would remove orphaned worktree" in dry.stdout
    assert "cli-live" not in dry.stdout
    assert len(cli.lease_records()) == 2
    assert len(cli.registered_worktrees()) == 2

    gc = cli("gc")
    assert gc.returncode == 0, gc.stderr
    removed = gc.stdout.splitlines()
    assert len(removed) == 2, gc.stdout
    assert all(line.startswith("removed ") and "cli-dead" in line for line in removed)
    status = cli.status()
    assert [lease["sessionId"] for lease in status["leases"]] == ["cli-live"]
    assert status["staleLeases"] == []
    assert [w["sessionId"] for w in status["worktrees"]] == ["cli-live"]
    assert len(cli.registered_worktrees()) == 1  # the live one is untouched

    live.terminate()
    live.communicate(timeout=DEADLINE)
    assert live.returncode == 3
    assert_nothing_left(cli)
    again = cli("gc")
    assert again.stdout.startswith("nothing to reclaim"), again.stdout


def test_pooled_checkouts_are_kept_by_gc_unless_asked(cli: Cli) -> None:
    result = cli("run", "--resource", 'git-worktree:{"pool": true}', "--", "true")
    assert result.returncode == 0, result.stderr
    assert cli.registered_worktrees() == []  # a pooled checkout is not a git worktree
    assert [w["state"] for w in cli.status()["worktrees"]] == ["pooled"]
    assert "1 pooled for reuse" in cli("status").stdout

    assert cli("gc").stdout.startswith("nothing to reclaim")
    assert [w["state"] for w in cli.status()["worktrees"]] == ["pooled"]
    gc = cli("gc", "--pooled")
    assert gc.returncode == 0, gc.stderr
    assert gc.stdout.startswith("removed pooled worktree "), gc.stdout
    assert_nothing_left(cli)


def test_status_prints_aligned_tables(cli: Cli, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    cli.start("--session-id", "cli-table", "--", *waiting_command(ready))
    wait_for(ready.exists, "COMMAND to start")
    result = cli("status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Port leases in {cli.lock_dir}:"
    header, row = lines[1], lines[2]
    assert header.split() == ["PORTS", "SESSION", "PID", "HOST", "AGE", "ROLE"]
    assert row.index("cli-table") == header.index("SESSION")
    assert f"Worktrees in {cli.worktree_root}:" in lines
    wt_header = lines[lines.index(f"Worktrees in {cli.worktree_root}:") + 1]
    assert wt_header.split() == ["STATE", "SESSION", "PID", "HOST", "AGE", "PATH"]


@pytest.mark.parametrize(
    ("args", "status", "fragments"),
    [
        (["run"], 2, ["COMMAND is missing"]),
        (["run", "--resource", "port-range:{oops", "--", "true"], 2, ["JSON object"]),
        (["run", "--resource", "port-range:[1]", "--", "true"], 2, ["JSON object"]),
        (["run", "--resource", "nope", "--", "true"], 1, ['resource kind "nope"']),
        (
            ["run", "--resource", 'port-range:{"blockSize": 0}', "--", "true"],
            1,
            ['"blockSize" must be an integer >= 1'],
        ),
        (["run", "--", "no-such-command-xyz"], 127, ["command not found: no-such-command-xyz"]),
        (["frobnicate"], 2, ["invalid choice: 'frobnicate'"]),
        (["status", "--bogus"], 2, ["unrecognized arguments: --bogus"]),
    ],
)
def test_errors_are_one_line_and_leave_nothing(
    cli: Cli, args: Sequence[str], status: int, fragments: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_aiops", *args[:1], *cli.locations[:2], *args[1:]]
        if args[0] in ("run", "status", "gc")
        else [sys.executable, "-m", "pytest_aiops", *args],
        cwd=cli.repo,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == status
    assert_one_error_line(result.stderr, *fragments)
    assert cli.lease_records() == []
    assert cli.registered_worktrees() == []


def test_run_outside_a_repository_explains_itself(cli: Cli, tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    result = cli("run", "--", "true", cwd=elsewhere)
    assert result.returncode == 1
    assert_one_error_line(result.stderr, "is not inside a git repository", "--resource")


def test_an_unusable_lock_directory_is_one_line(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cli.lock_dir = blocker
    result = cli("run", "--resource", "port-range", "--", "true")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, str(blocker))


@pytest.mark.parametrize("command", [[], ["run"], ["status"], ["gc"]])
def test_help_has_examples(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_aiops", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pytest-aiops")
    if command:
        assert "examples:" in result.stdout
        assert f"pytest-aiops {command[0]}" in result.stdout.split("examples:")[1]


@pytest.mark.parametrize("where", ["default", "tracked", "outside"])
def test_run_never_overwrites_or_deletes_an_existing_discovery_path(
    cli: Cli, tmp_path: Path, where: str
) -> None:
    if where == "default":
        target = cli.repo / ".agent-context" / "resources.json"
        target.parent.mkdir()
        args: list[str] = []
    elif where == "tracked":
        target = cli.repo / "top.txt"
        args = ["--discovery-file", str(target)]
    else:
        target = tmp_path / "precious.json"
        args = ["--discovery-file", str(target)]
    if where != "tracked":
        target.write_text('{"mine": 1}\n')
    before = target.read_text()
    result = cli("run", "--resource", "port-range", *args, "--", "true")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, str(target), "already exists")
    assert target.read_text() == before
    expected = "?? .agent-context/" if where == "default" else ""
    assert git(cli.repo, "status", "--porcelain") == expected
    assert_nothing_left(cli)


def test_run_removes_only_the_directories_it_created(cli: Cli, tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    target = kept / "new" / "deeper" / "agent.json"
    result = cli("run", "--resource", "port-range", "--discovery-file", str(target), "--", "true")
    assert result.returncode == 0, result.stderr
    assert kept.is_dir()
    assert list(kept.iterdir()) == []


def test_run_from_a_subdirectory_starts_in_the_same_one_in_the_worktree(cli: Cli) -> None:
    show = "import os; print(os.getcwd()); print(open('sub/f.txt').read())"
    result = cli("run", "--", sys.executable, "-c", show, cwd=cli.repo / "pkg")
    assert result.returncode == 0, result.stderr
    cwd, content = result.stdout.splitlines()[:2]
    assert Path(cwd).name == "pkg"
    assert Path(cwd).is_relative_to(cli.worktree_root)
    assert content == "f"


@pytest.mark.parametrize("command", ["status", "gc"])
def test_status_and_gc_refuse_a_lock_dir_that_is_a_file(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cli.lock_dir = blocker
    result = cli(command)
    assert result.returncode == 1
    assert_one_error_line(result.stderr, "--lock-dir must be a directory", str(blocker))


def test_status_inside_a_session_worktree_is_about_the_main_repository(cli: Cli) -> None:
    script = (
        "import subprocess, sys; "
        f"print(subprocess.run([sys.executable, '-m', 'pytest_aiops', 'status', '--json', "
        f"'--lock-dir', {str(cli.lock_dir)!r}], capture_output=True, text=True).stdout)"
    )
    result = cli("run", "--session-id", "inside", "--", sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    # Without --worktree-root it looks where the provider puts the main repository's
    # worktrees (not at a root for the worktree itself).
    assert status["worktreeRoot"] == default_worktree_root(str(cli.repo))


def test_a_discovery_file_under_a_regular_file_is_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    target = blocker / "deeper" / "agent.json"
    result = cli("run", "--resource", "port-range", "--discovery-file", str(target), "--", "true")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, f"{blocker} is not a directory", "--discovery-file")
    assert blocker.read_text() == "x"
    assert_nothing_left(cli)


_AS_MACOS = (
    "import sys\n"
    "from pytest_aiops._cli.main import main\n"
    "sys.platform = 'darwin'  # after import: the locks stay Linux's, the CLI takes macOS's path\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def start_as_macos(cli: Cli, *args: str) -> subprocess.Popen[str]:
    """``run ARGS`` on the code path of a system without prctl and sigwaitinfo."""
    argv = cli.argv("run", *args)
    return cli.popen([sys.executable, "-c", _AS_MACOS, *argv[3:]])


def test_without_prctl_a_watchdog_ends_command_when_the_cli_is_sigkilled(
    cli: Cli, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    process = start_as_macos(cli, "--session-id", "mac-kill", "--", *waiting_command(ready))
    wait_for(ready.exists, "COMMAND to start")
    process.kill()
    process.communicate(timeout=DEADLINE)
    wait_for(Path(f"{ready}.got").exists, "COMMAND to get SIGTERM from the watchdog")
    assert Path(f"{ready}.got").read_text() == "SIGTERM"
    gc = cli("gc")
    assert gc.returncode == 0, gc.stderr
    assert_nothing_left(cli)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_without_sigwaitinfo_signals_are_forwarded_and_the_watchdog_stays_quiet(
    cli: Cli, tmp_path: Path, signum: signal.Signals
) -> None:
    ready = tmp_path / "ready"
    process = start_as_macos(cli, "--session-id", "mac-sig", "--", *waiting_command(ready))
    wait_for(ready.exists, "COMMAND to start")
    process.send_signal(signum)  # no terminal here: some process sent it, so forwarded
    _, stderr = process.communicate(timeout=DEADLINE)
    assert process.returncode == 3, stderr
    assert Path(f"{ready}.got").read_text() == signum.name
    assert_nothing_left(cli)
    done = start_as_macos(cli, "--", sys.executable, "-c", "print('done')")
    out, err = done.communicate(timeout=DEADLINE)
    assert (done.returncode, out.strip()) == (0, "done"), err


def test_a_cli_warning_is_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_aiops",
            "run",
            "--lock-dir",
            str(tmp_path / "locks"),
            "--resource",
            # 64 blocks: the ephemeral range may hold outgoing connections' ports (and
            # their TIME_WAIT) at any time, and a lease takes only a clean block.
            'port-range:{"basePort": 40000, "blockCount": 64}',
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("pytest-aiops: warning: port range 40000-42047 overlaps")
