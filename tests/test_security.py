"""Issue 12: another local user must not make pytest-aiops delete, kill, write or share.

Each attack runs for real: the attacker is uid 65534 (``setpriv``, we run as root), and
everything happens in a private mount namespace (``unshare -m``) with fresh tmpfs on ``/tmp``
and ``/dev/shm``, so the machine's own directories are never touched. A driver script runs
as root inside the namespace and prints one JSON document the test asserts on.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops import AiopsWarning
from pytest_aiops._worktrees import store

from .git_helpers import git
from .process_helpers import REPO_ROOT, child_env, namespace_problem, run_driver

ATTACKER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
PACKAGE_ROOT = str(REPO_ROOT)


def _attacker_python() -> str | None:
    """An interpreter uid 65534 can run (pyenv's often lives under a private /root)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate and os.path.exists(candidate):
            run = subprocess.run(
                [*ATTACKER, candidate, "-c", "import fcntl"], capture_output=True, check=False
            )
            if run.returncode == 0:
                return candidate
    return None


PROBLEM = namespace_problem(
    tools=("unshare", "setpriv", "mount"),
    mount_point="/tmp",
    root_for="the attacker is run as uid 65534 with setpriv",
)
needs_namespace = pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))

PRELUDE = r"""
import json, os, subprocess, sys, time
ATTACKER = %(attacker)r
ATTACKER_PY = %(attacker_py)r

def sh(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, **kw)

def attacker(script, *args):
    run = sh(*ATTACKER, "sh", "-c", script, "sh", *args)
    assert run.returncode == 0, run.stderr
    return run

def git(cwd, *args):
    return sh("git", "-C", cwd, "-c", "user.name=t", "-c", "user.email=t@t", *args, check=True)

def make_repo(path):
    os.makedirs(path)
    git(path, "init", "-q")
    with open(os.path.join(path, "a.txt"), "w") as handle:
        handle.write("a\n")
    git(path, "add", "a.txt")
    git(path, "commit", "-qm", "init")
    return path

def cli(*args, cwd):
    run = sh(sys.executable, "-m", "pytest_aiops", *args, cwd=cwd)
    return {"rc": run.returncode, "out": run.stdout, "err": run.stderr}

def plant_record(root, data, token="aiops-0123456789abcdef"):
    control = os.path.join(root, ".pytest-aiops")
    attacker('mkdir -p "$1" && printf %%s "$2" > "$1/$3.json" && : > "$1/$3.lock"',
             control, json.dumps({**data, "token": token}), token)
"""


def _hidden_paths() -> list[str]:
    """The tree under test and the interpreter's prefix, where the fresh tmpfs on /tmp or
    /dev/shm would hide them (a checkout or a virtual environment living under /tmp)."""
    found: list[str] = []
    for path in sorted({PACKAGE_ROOT, os.path.realpath(sys.prefix)}):
        if path.startswith(("/tmp/", "/dev/shm/")) and not any(
            path.startswith(kept + "/") for kept in found
        ):
            found.append(path)
    return found


def _keep_visible_before() -> str:
    """Shell that binds each hidden path to /mnt/keep<i> (on a namespace-private tmpfs)."""
    paths = _hidden_paths()
    if not paths:
        return ""
    binds = "".join(
        f"mkdir /mnt/keep{i} && mount --bind {shlex.quote(path)} /mnt/keep{i} && "
        for i, path in enumerate(paths)
    )
    return "mount -t tmpfs tmpfs /mnt && " + binds


def _keep_visible_after() -> str:
    """Shell that binds each hidden path back at its own place inside the fresh tmpfs."""
    return "".join(
        f"&& mkdir -p {shlex.quote(path)} && mount --bind /mnt/keep{i} {shlex.quote(path)} "
        for i, path in enumerate(_hidden_paths())
    )


def run_attack(script: str) -> dict[str, Any]:
    """Run ``script`` as root in a fresh mount namespace; return the JSON it printed last."""
    prelude = PRELUDE % {"attacker": ATTACKER, "attacker_py": _attacker_python()}
    code = prelude + textwrap.dedent(script)
    shell = (
        f"{_keep_visible_before()}"
        "mount -t tmpfs -o mode=1777 tmpfs /tmp && mount -t tmpfs -o mode=1777 tmpfs /dev/shm "
        f'{_keep_visible_after()}&& exec "$0" -c "$1"'
    )
    env = child_env(TMPDIR="/tmp")
    env.pop("PYTEST_AIOPS_LOCK_DIR", None)
    env.pop("PYTEST_ADDOPTS", None)
    return run_driver(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, sys.executable, code], env
    )


# --------------------------------------------------------------------- 1: gc deletes, kills


@needs_namespace
@pytest.mark.parametrize("where", ["/dev/shm", "/tmp"])
def test_gc_never_deletes_or_kills_for_a_planted_record(where: str) -> None:
    result = run_attack(
        f"""
        from pytest_aiops import default_worktree_root
        repo = make_repo("/tmp/repo")
        leaf = os.path.basename(default_worktree_root(repo))
        if {where!r} == "/tmp":
            os.makedirs("/dev/shm/pytest-aiops-0/worktrees", mode=0o700)  # root's real one
        root = os.path.join({where!r}, "pytest-aiops-0", "worktrees", leaf)
        os.makedirs("/tmp/victim")
        with open("/tmp/victim/precious", "w") as handle:
            handle.write("x")
        victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
        st = os.lstat("/tmp/victim")
        plant_record(root, {{
            "path": "/tmp/victim", "ino": st.st_ino, "dev": st.st_dev, "state": "live",
            "gitSession": [victim.pid, None], "commonDir": repo + "/.git",
            "isolation": "worktree", "sessionId": "forged-session", "pid": 1, "host": "h",
            "createdAt": 0,
        }})
        status = cli("status", cwd=repo)
        gc = cli("gc", cwd=repo)
        time.sleep(0.2)
        alive = victim.poll() is None
        victim.kill()
        print(json.dumps({{"status": status, "gc": gc, "alive": alive,
                          "victim": os.path.exists("/tmp/victim/precious")}}))
        """
    )
    assert result["victim"], result["gc"]
    assert result["alive"], "the victim's process session was signalled"
    assert "removed orphaned" not in result["gc"]["out"]
    assert "forged-session" not in result["status"]["out"]
    if where == "/dev/shm":  # refused, in one line naming the path, owner and CLI option
        for run in (result["status"], result["gc"]):
            assert run["rc"] == 1
            [line] = run["err"].splitlines()
            assert line.startswith("pytest-aiops: error: --worktree-root must be a writable")
            assert "/dev/shm/pytest-aiops-0" in line
            assert "uid 65534" in line


# --------------------------------------------------------- 2: gc unregisters a user worktree


@needs_namespace
def test_gc_never_unregisters_the_users_own_worktree() -> None:
    result = run_attack(
        """
        from pytest_aiops import default_worktree_root
        repo = make_repo("/tmp/repo")
        git(repo, "worktree", "add", "-q", "/tmp/mine")
        with open("/tmp/mine/work.txt", "w") as handle:
            handle.write("staged work\\n")
        git("/tmp/mine", "add", "work.txt")
        st = os.lstat("/tmp/mine")
        plant_record(default_worktree_root(repo), {
            "path": "/tmp/mine", "ino": st.st_ino, "dev": st.st_dev, "state": "live",
            "commonDir": repo + "/.git", "gitDir": repo + "/.git/worktrees/mine",
            "isolation": "worktree", "sessionId": "s", "pid": 1, "host": "h", "createdAt": 0,
        })
        gc = cli("gc", cwd=repo)
        staged = sh("git", "-C", "/tmp/mine", "diff", "--cached", "--name-only")
        print(json.dumps({"gc": gc, "staged": staged.stdout, "rc": staged.returncode,
                          "err": staged.stderr}))
        """
    )
    assert result["rc"] == 0, result["err"]
    assert result["staged"].split() == ["work.txt"]


def test_a_record_in_our_own_root_naming_elsewhere_is_ignored(repo: Path, tmp_path: Path) -> None:
    """Defence in depth: even a record in a verified root is a claim, not an order."""
    mine = tmp_path / "mine"
    git(repo, "worktree", "add", "-q", str(mine))
    (mine / "work.txt").write_text("staged\n")
    git(mine, "add", "work.txt")
    root = store.ensure_root(str(tmp_path / "root"))
    st = os.lstat(mine)
    token = "aiops-00000000000000aa"
    control = Path(root) / ".pytest-aiops"
    (control / f"{token}.lock").write_text("")
    record = {
        "path": str(mine),
        "ino": st.st_ino,
        "dev": st.st_dev,
        "state": "live",
        "commonDir": str(repo / ".git"),
        "gitDir": str(repo / ".git" / "worktrees" / "mine"),
        "isolation": "worktree",
        "gitSession": [os.getpid(), None],
        "token": token,
    }
    (control / f"{token}.json").write_text(json.dumps(record))
    with pytest.warns(AiopsWarning, match="ignoring worktree record"):
        store.reclaim_orphans(root)
    assert git(mine, "diff", "--cached", "--name-only").split() == ["work.txt"]
    assert (mine / "work.txt").exists()


# ------------------------------------------------------ 3: writes into the attacker's dir


@needs_namespace
def test_a_planted_per_user_directory_is_refused_and_never_written() -> None:
    result = run_attack(
        """
        from pytest_aiops import OptionError, ResourceRequest, create_default_orchestrator
        repo = make_repo("/tmp/repo")
        attacker('mkdir /tmp/evil && chmod 777 /tmp/evil && ln -s /tmp/evil "$1"',
                 "/dev/shm/pytest-aiops-0")
        try:
            with create_default_orchestrator().provision_session(
                session_id="s", resources=[ResourceRequest("git-worktree")],
                workspace_root=repo):
                error = None
        except Exception as caught:
            error = " ".join(str(caught.__cause__ or caught).split())
        os.makedirs("/tmp/proj")
        with open("/tmp/proj/test_x.py", "w") as handle:
            handle.write("def test_x(git_worktree):\\n    pass\\n")
        make_repo("/tmp/proj/r")
        run = sh(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
                 "no:benchmark", "-n", "0", "--aiops-repo", "/tmp/proj/r", "/tmp/proj",
                 cwd="/tmp/proj")
        print(json.dumps({"error": error, "evil": os.listdir("/tmp/evil"),
                          "out": run.stdout}))
        """
    )
    assert result["evil"] == []
    assert result["error"] is not None
    assert result["error"].startswith(
        "rootDirectory must be a writable directory, not '/dev/shm/pytest-aiops-0'"
    )
    assert "symlink (owned by uid 65534" in result["error"]
    assert "set the rootDirectory option" in result["error"]
    failure = [line for line in result["out"].splitlines() if "must be a writable" in line]
    assert failure, result["out"]
    assert "--aiops-worktree-root" in failure[0]
    assert "rootDirectory" not in failure[0]


# ------------------------------------------------------------ 4: two leases share ports


@needs_namespace
@pytest.mark.parametrize("planted", ["directory", "lock-file"])
def test_two_live_leases_never_share_ports(planted: str) -> None:
    result = run_attack(
        f"""
        from pytest_aiops import create_port_range_provider
        locks = "/tmp/pytest-aiops/locks"
        if {planted!r} == "directory":
            attacker('mkdir -p "$1" && chmod 1777 "$1" /tmp/pytest-aiops', locks)
        else:  # root's own directory, but the attacker was first to create ports.lock
            os.makedirs(locks)
            os.chmod("/tmp/pytest-aiops", 0o1777)
            os.chmod(locks, 0o1777)
            attacker(': > "$1/ports.lock" && chmod 666 "$1/ports.lock"', locks)
        provider = create_port_range_provider()
        held, errors = [], []
        for round in range(2):
            try:
                held.append(provider.provision(session_id="same", workspace_root="/tmp",
                                               options={{}}))
            except Exception as error:
                errors.append(" ".join(str(error).split()))
            # swap ports.lock for a fresh one while the first lease holds
            sh(*ATTACKER, "sh", "-c", 'mv "$1/ports.lock" "$1/old" && : > "$1/ports.lock"',
               "sh", locks)
        ranges = [(lease.hard["startPort"], lease.hard["endPort"]) for lease in held]
        print(json.dumps({{"ranges": ranges, "errors": errors}}))
        """
    )
    ranges = [tuple(r) for r in result["ranges"]]
    assert len(set(ranges)) == len(ranges), f"two live leases share ports: {ranges}"
    assert len(result["errors"]) == 2, result
    for error in result["errors"]:
        assert "uid 65534" in error
        assert "--aiops-lock-dir" in error
        assert "PYTEST_AIOPS_LOCK_DIR" in error


# ----------------------------------------------------------------- 5: denial of service

LOCK_EVERYTHING = r"""
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, 37, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))  # F_OFD_SETLK, all
print("locked", flush=True)
time.sleep(600)
"""


@needs_namespace
@pytest.mark.skipif(_attacker_python() is None, reason="no interpreter uid 65534 can run")
def test_a_locked_ports_file_is_named_and_spares_suites_without_ports() -> None:
    result = run_attack(
        f"""
        from pytest_aiops import create_port_range_provider
        provider = create_port_range_provider()
        provider.provision(session_id="s", workspace_root="/tmp", options={{}}).release()
        locker = subprocess.Popen([*ATTACKER, ATTACKER_PY, "-c", {LOCK_EVERYTHING!r},
                                   "/tmp/pytest-aiops/locks/ports.lock"],
                                  stdout=subprocess.PIPE, text=True)
        assert locker.stdout.readline().strip() == "locked"
        try:
            provider.provision(session_id="s", workspace_root="/tmp", options={{}})
            error = None
        except Exception as caught:
            error = str(caught)
        os.makedirs("/tmp/proj")
        with open("/tmp/proj/test_plain.py", "w") as handle:
            handle.write("def test_plain():\\n    pass\\n")
        plain = sh(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
                   "no:benchmark", "-n", "2", "/tmp/proj", cwd="/tmp/proj")
        with open("/tmp/proj/test_port.py", "w") as handle:
            handle.write("def test_port(port_range):\\n    port_range.next_port()\\n")
        ports = sh(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
                   "no:benchmark", "-n", "2", "/tmp/proj", cwd="/tmp/proj")
        strict = sh(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
                    "no:benchmark", "-n", "2", "--aiops-port-fallback=error", "/tmp/proj",
                    cwd="/tmp/proj")
        locker.kill()
        print(json.dumps({{"error": error, "plain": [plain.returncode, plain.stdout],
                          "ports": [ports.returncode, ports.stdout],
                          "strict": [strict.returncode, strict.stdout]}}))
        """
    )
    assert result["error"] is not None
    assert "locked by processes that left no lease record" in result["error"]
    assert "--aiops-lock-dir" in result["error"]
    assert "PYTEST_AIOPS_LOCK_DIR" in result["error"]
    rc, out = result["plain"]
    assert rc == 0, out
    assert "could not lease" in out  # the warning says so, in the warnings summary
    # By default a port test still runs, on kernel-chosen ports, warning why (issue 11's
    # fallback); with --aiops-port-fallback=error only the test that asked for ports fails.
    rc, out = result["ports"]
    assert rc == 0, out
    assert "2 passed, 2 warnings" in out
    assert "ports come from the kernel" in out
    assert "left no lease record" in out
    rc, out = result["strict"]
    assert rc == 1, out
    assert "1 passed, 1 warning, 1 error" in out
    assert "left no lease record" in out


# ---------------------------------------------------------------------- 6: status lies


@needs_namespace
@pytest.mark.skipif(_attacker_python() is None, reason="no interpreter uid 65534 can run")
def test_status_shows_our_lease_and_escapes_planted_fields() -> None:
    forge = r"""
import fcntl, json, os, struct, sys, time
locks = sys.argv[1]
fd = os.open(os.path.join(locks, "ports.lock"), os.O_RDWR)
lease_id = 12345
fcntl.fcntl(fd, 37, struct.pack("hhqqi", fcntl.F_WRLCK, 0, (1 << 48) + lease_id, 1, 0))
for block in range(200):  # squat on every name root's top-level records would get
    start = 20000 + 32 * block
    open(os.path.join(locks, "leases", f"{start}-{start + 31}.top.0.json"), "w").close()
record = {"sessionId": "\x1b[31mred\nFORGED  row", "pid": 1, "host": "h\x1b[0m",
          "createdAt": time.time(), "startPort": 30000, "endPort": 30001,
          "role": "top-level", "leaseId": lease_id}
with open(os.path.join(locks, "leases", "30000-30001.top.65534.json"), "w") as handle:
    json.dump(record, handle)
print("ready", flush=True)
time.sleep(600)
"""
    result = run_attack(
        f"""
        from pytest_aiops import create_port_range_provider
        provider = create_port_range_provider()
        provider.provision(session_id="warm", workspace_root="/tmp", options={{}}).release()
        for name in os.listdir("/tmp/pytest-aiops/locks/leases"):
            os.unlink(os.path.join("/tmp/pytest-aiops/locks/leases", name))
        forger = subprocess.Popen([*ATTACKER, ATTACKER_PY, "-c", {forge!r},
                                   "/tmp/pytest-aiops/locks"], stdout=subprocess.PIPE, text=True)
        assert forger.stdout.readline().strip() == "ready"
        held = provider.provision(session_id="root-session", workspace_root="/tmp",
                                  options={{}})
        status = cli("status", "--json", cwd="/tmp")
        text = cli("status", cwd="/tmp")
        forger.kill()
        print(json.dumps({{"json": json.loads(status["out"]), "text": text["out"]}}))
        """
    )
    sessions = [lease["sessionId"] for lease in result["json"]["leases"]]
    assert "root-session" in sessions
    assert "\x1b" not in result["text"]
    assert not any(line.lstrip().startswith("FORGED") for line in result["text"].splitlines())


# ------------------------------------------------------ 6: hostile or malformed discovery


_GOOD = {
    "sessionId": "s",
    "workspaceRoot": "/w",
    "workingDirectory": "/w",
    "hardConstraints": [{"kind": "port-range", "allocation": {"startPort": 1}}],
    "softConstraints": {"env": {"A": "1"}, "promptSections": ["x"], "metadata": {}},
}


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        "null",
        json.dumps({**_GOOD, "sessionId": 5}),
        json.dumps({**_GOOD, "softConstraints": {"env": {"A": 1}}}),
        json.dumps({**_GOOD, "hardConstraints": [{"kind": "k", "allocation": 3}]}),
        json.dumps({**_GOOD, "hardConstraints": ["port-range"]}),
    ],
)
def test_a_malformed_discovery_file_is_a_value_error_naming_the_file(
    tmp_path: Path, text: str
) -> None:
    from pytest_aiops import DiscoverySnapshot

    path = tmp_path / "resources.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="not a discovery snapshot") as info:
        DiscoverySnapshot.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert DiscoverySnapshot.from_json(json.dumps(_GOOD)).session_id == "s"
