"""Issue 18, item 4: a lock directory several users share, made as the docs say.

Root prepares it once with ``pytest-aiops init-lock-dir``; then two unprivileged users lease
ports in it with real inner pytest runs (``-W error``), at the same time and one after the
other. A directory made any other way (the old ``install -d -m 1777`` recipe, or by a user)
is refused with one line naming that command. The namespace tests run as root in a private
mount namespace (see :mod:`tests.shared_lock_helpers`); the command's own tests run as root
on ``tmp_path``.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_aiops._cli.main import build_parser, main
from pytest_aiops._ports.admin import init_lock_directory, shell_commands
from pytest_aiops._ports.locks import range_is_leased
from pytest_aiops._ports.provider import create_port_range_provider

from .inner_run_helpers import inner_warnings
from .process_helpers import child_env
from .shared_lock_helpers import (
    AS_FIRST_USER,
    PROBLEM,
    SITE_PACKAGES,
    USERS,
    run_as_root_in_namespace,
    user_python,
)

needs_namespace = pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="init-lock-dir runs as root")
FIRST, SECOND = USERS
#: A port range for the command's own tests, used by no other test.
BASE_PORT = 10900  # 10900-10999: no other test uses it


def _mode(path: Path) -> tuple[int, str]:
    info = os.lstat(path)
    return info.st_uid, f"{stat.S_IMODE(info.st_mode):04o}"


def _ranges_overlap(held: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """Pairs of leases by *different* users whose blocks share a port."""
    return [
        (one, two)
        for one, two in itertools.combinations(held, 2)
        if one["uid"] != two["uid"] and one["start"] <= two["end"] and two["start"] <= one["end"]
    ]


def _clean_run(run: dict[str, Any], passed: int) -> None:
    assert run["rc"] == 0, run["out"][-3000:] + run["err"][-2000:]
    assert f"{passed} passed" in run["out"], run["out"][-3000:]
    assert inner_warnings(run["out"], run["err"]) == [], run["out"][-3000:]


def _flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------- two users share a prepared directory


@needs_namespace
def test_two_users_lease_in_the_default_directory_root_prepared_once() -> None:
    result = run_as_root_in_namespace(
        """
        prep = cli("init-lock-dir")
        # At the same time: each user's tests keep their ports until the other's say theirs.
        a = start(USERS[0], "-n", "2", "-W", "error", name="a", wait_for="b")
        b = start(USERS[1], "-W", "error", name="b", wait_for="a")
        together = [finish(a), finish(b)]
        # One after the other, each leaving records and put-aside files behind.
        after = [finish(start(USERS[0], "-W", "error", name="c")),
                 finish(start(USERS[1], "-n", "2", "-W", "error", name="d"))]
        locks = "/tmp/pytest-aiops/locks"
        again = cli("init-lock-dir")
        owners = sorted({os.lstat(os.path.join(locks, "leases", n)).st_uid
                         for n in os.listdir(os.path.join(locks, "leases"))})
        print(json.dumps({"prep": prep, "together": together, "after": after,
                          "held": held("a") + held("b"), "state": state(locks),
                          "parent": state("/tmp/pytest-aiops"), "again": again,
                          "owners": owners}))
        """
    )
    prep = result["prep"]
    assert prep["rc"] == 0, prep["err"]
    assert prep["out"].splitlines() == [
        "created /tmp/pytest-aiops (root, mode 0755)",
        "created /tmp/pytest-aiops/locks (root, mode 0755)",
        "created /tmp/pytest-aiops/locks/leases (root, mode 1777)",
        "created /tmp/pytest-aiops/locks/ports.lock (root, mode 0666)",
        "every user can now lease ports in /tmp/pytest-aiops/locks",
    ]
    for run in (*result["together"], *result["after"]):
        _clean_run(run, passed=2)
    held = result["held"]
    assert sorted({entry["uid"] for entry in held}) == list(USERS)
    assert len(held) == 4, held
    assert _ranges_overlap(held) == [], "two users' live leases share ports"
    ports = [port for entry in held for port in entry["ports"]]
    assert len(ports) == len(set(ports)) == 16
    # Nothing the users did changed what root made, and records are each user's own.
    assert result["state"] == {
        ".": [0, "0755"],
        "leases": [0, "1777"],
        "ports.lock": [0, "0666"],
    }
    assert result["parent"] == {".": [0, "0755"]}
    assert result["owners"] == list(USERS)
    assert result["again"]["rc"] == 0
    assert "is prepared already (nothing changed)" in result["again"]["out"]


# ---------------------------------------------------- the old recipe, and its migration


@needs_namespace
@pytest.mark.parametrize("first_user_was_here", [False, True], ids=["untouched", "used"])
def test_the_old_install_recipe_is_refused_naming_the_command(first_user_was_here: bool) -> None:
    """``install -d -m 1777 DIR`` (the old docs): no user creates ``ports.lock`` or ``leases/``
    there any more (they would be that user's alone); each is told the command. A directory
    an older version let the first user fill is refused by the command too, until the admin
    removes what that user made; then both users share it."""
    result = run_as_root_in_namespace(
        f"""
        locks = "/tmp/shared/locks"
        sh("install", "-d", "-m", "1777", "/tmp/shared", locks, check=True)
        if {first_user_was_here!r}:  # what an older version left: the first user's files
            user_sh(USERS[0], ': > "$1/ports.lock" && chmod 666 "$1/ports.lock" '
                              '&& mkdir -m 1777 "$1/leases"', locks)
        env = {{"PYTEST_AIOPS_LOCK_DIR": locks}}
        refused = {{uid: finish(start(uid, "--aiops-port-fallback=error", name=f"r{{uid}}",
                                      env=env)) for uid in USERS}}
        listing = sorted(os.listdir(locks))
        first = cli("init-lock-dir", locks)
        removed = None
        if first["rc"]:  # the admin does as told: no run uses the directory now
            removed = sorted(os.listdir(locks))
            sh("rm", "-r", locks + "/ports.lock", locks + "/leases", check=True)
        second = cli("init-lock-dir", locks)
        a = start(USERS[0], "-W", "error", name="a", wait_for="b", env=env)
        b = start(USERS[1], "-W", "error", f"--aiops-lock-dir={{locks}}", name="b",
                  wait_for="a")
        print(json.dumps({{"refused": refused, "listing": listing, "first": first,
                          "removed": removed, "second": second,
                          "shared": [finish(a), finish(b)], "held": held("a") + held("b"),
                          "state": state(locks)}}))
        """
    )
    locks = "/tmp/shared/locks"
    refused_users = [SECOND] if first_user_was_here else list(USERS)
    for uid in USERS:
        run = result["refused"][str(uid)]
        if uid not in refused_users:
            _clean_run(run, passed=2)  # the first user trusts its own files
            continue
        assert run["rc"] == 1, run["out"][-3000:]
        text = _flat(run["out"])
        assert f"pytest-aiops init-lock-dir {locks}" in text, run["out"][-3000:]
        for option in ("--aiops-lock-dir", "$PYTEST_AIOPS_LOCK_DIR", "--lock-dir"):
            assert option in text
        if first_user_was_here:
            assert f"owned by uid {FIRST}" in text
        else:
            assert "belongs to uid 0 (root) and has no ports.lock: one made by this user" in text
    first = result["first"]
    if first_user_was_here:
        assert result["listing"] == ["leases", "ports.lock"]
        assert first["rc"] == 1
        [line] = first["err"].splitlines()
        assert line.startswith(f"pytest-aiops: error: cannot prepare lock directory '{locks}': ")
        assert f"is owned by uid {FIRST}, not root" in line
        assert "remove it once no pytest-aiops run uses it" in line
        assert result["second"]["rc"] == 0, result["second"]["err"]
    else:
        assert result["listing"] == [], "a refused user created something in root's directory"
        assert first["rc"] == 0, first["err"]
        assert first["out"].splitlines()[:3] == [
            f"changed {locks} from mode 1777 to 0755",
            f"created {locks}/leases (root, mode 1777)",
            f"created {locks}/ports.lock (root, mode 0666)",
        ]
    for run in result["shared"]:
        _clean_run(run, passed=2)
    assert _ranges_overlap(result["held"]) == []
    assert result["state"] == {
        ".": [0, "0755"],
        "leases": [0, "1777"],
        "ports.lock": [0, "0666"],
    }


@needs_namespace
def test_a_directory_a_user_made_is_refused_to_others_and_to_init_lock_dir() -> None:
    """The symptom of the issue: a user made the shared directory; the next user's suite gets
    kernel ports and one warning naming the command; root's command will not adopt it."""
    result = run_as_root_in_namespace(
        """
        locks = "/tmp/shared/locks"
        user_sh(USERS[0], 'install -d -m 1777 /tmp/shared "$1"', locks)
        env = {"PYTEST_AIOPS_LOCK_DIR": locks}
        maker = finish(start(USERS[0], "-W", "error", name="m", env=env))
        other = finish(start(USERS[1], name="o", env=env))
        strict = finish(start(USERS[1], "-W", "error", name="s", env=env))
        init = cli("init-lock-dir", locks)
        sh("install", "-d", "-m", "0755", "/tmp/closed", check=True)  # root's, nothing in it
        closed = finish(start(USERS[1], "--aiops-lock-dir=/tmp/closed", name="x"))
        print(json.dumps({"maker": maker, "other": other, "strict": strict, "init": init,
                          "state": state(locks), "closed": closed}))
        """
    )
    locks = "/tmp/shared/locks"
    _clean_run(result["maker"], passed=2)
    other = result["other"]
    assert other["rc"] == 0, other["out"][-3000:]
    [warning] = inner_warnings(other["out"], other["err"])
    assert "pytest-aiops could not lease ports" in warning
    assert "ports come from the kernel" in _flat(other["out"])
    text = _flat(other["out"])
    assert f"owned by uid {FIRST}, not by root or this user" in text
    assert f"pytest-aiops init-lock-dir {locks}" in text
    assert result["strict"]["rc"] == 1  # what filterwarnings=error makes of it
    init = result["init"]
    assert init["rc"] == 1
    [line] = init["err"].splitlines()
    assert line.startswith(f"pytest-aiops: error: cannot prepare lock directory '{locks}': ")
    assert f"'/tmp/shared' is owned by uid {FIRST}, not root" in line
    assert result["state"]["."] == [FIRST, "1777"], "root changed a directory it refused"
    # An explicit lock directory root made but did not prepare is found at start.
    closed = result["closed"]
    assert closed["rc"] == 4, closed["out"] + closed["err"]
    assert _flat(closed["err"]) == (
        "ERROR: --aiops-lock-dir must be a directory this user can create or write to, not "
        "'/tmp/closed': /tmp/closed is not writable; for a directory every user shares, have "
        "root run 'pytest-aiops init-lock-dir /tmp/closed' once (from --aiops-lock-dir)"
    )


# ---------------------------------------------------------------- the command itself


@needs_root
def test_init_lock_dir_makes_each_part_roots_and_changes_nothing_the_second_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locks = tmp_path / "a" / "locks"
    assert main(["init-lock-dir", str(locks)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"created {tmp_path / 'a'} (root, mode 0755)",
        f"created {locks} (root, mode 0755)",
        f"created {locks / 'leases'} (root, mode 1777)",
        f"created {locks / 'ports.lock'} (root, mode 0666)",
    ]
    # pytest's own base directory is 0700: said, instead of "every user can now lease".
    [warning] = err.splitlines()
    assert warning.startswith(f"pytest-aiops: warning: {locks}: other users cannot reach it: ")
    assert "(others may not search it)" in warning
    assert _mode(locks) == (0, "0755")
    assert _mode(locks / "leases") == (0, "1777")
    assert _mode(locks / "ports.lock") == (0, "0666")
    assert (locks / "ports.lock").stat().st_size == 0
    inode = (locks / "ports.lock").stat().st_ino
    lease = create_port_range_provider().provision(
        session_id="s",
        workspace_root=str(tmp_path),
        options={"lockDirectory": str(locks), "basePort": BASE_PORT, "blockSize": 4},
    )
    start, end = lease.hard["startPort"], lease.hard["endPort"]
    try:
        assert main(["init-lock-dir", str(locks)]) == 0
        assert capsys.readouterr().out.splitlines() == [
            f"{locks} is prepared already (nothing changed)",
        ]
        # The same file: a live lease's locks are still where every new lease looks.
        assert (locks / "ports.lock").stat().st_ino == inode
        assert range_is_leased(str(locks), start, end)
    finally:
        lease.release()
    assert not range_is_leased(str(locks), start, end)


@needs_root
def test_init_lock_dir_sets_safe_but_wrong_modes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locks = tmp_path / "locks"
    (locks / "leases").mkdir(parents=True)
    (locks / "ports.lock").write_text("")
    os.chmod(locks, 0o1777)  # the old recipe
    os.chmod(locks / "leases", 0o755)  # users could not write their records
    os.chmod(locks / "ports.lock", 0o644)  # users could not lock it
    assert main(["init-lock-dir", str(locks)]) == 0
    assert capsys.readouterr().out.splitlines()[:3] == [
        f"changed {locks} from mode 1777 to 0755",
        f"changed {locks / 'leases'} from mode 0755 to 1777",
        f"changed {locks / 'ports.lock'} from mode 0644 to 0666",
    ]
    assert [_mode(p)[1] for p in (locks, locks / "leases", locks / "ports.lock")] == [
        "0755",
        "1777",
        "0666",
    ]


def _foreign_ports_file(locks: Path) -> None:
    os.chown(locks / "ports.lock", 65534, 65534)


def _foreign_leases(locks: Path) -> None:
    os.chown(locks / "leases", 65534, 65534)


def _open_leases(locks: Path) -> None:
    os.chmod(locks / "leases", 0o777)


def _linked_ports_file(locks: Path) -> None:
    os.link(locks / "ports.lock", locks / "other")


def _fifo_ports_file(locks: Path) -> None:
    (locks / "ports.lock").unlink()
    os.mkfifo(locks / "ports.lock")


def _symlinked_leases(locks: Path) -> None:
    (locks / "leases").rmdir()
    (locks / "leases").symlink_to(locks.parent)


def _foreign_directory(locks: Path) -> None:
    os.chown(locks, 65534, 65534)


def _open_directory(locks: Path) -> None:
    os.chmod(locks, 0o777)


@needs_root
@pytest.mark.parametrize(
    ("spoil", "part", "problem"),
    [
        (_foreign_ports_file, "ports.lock", "is owned by uid 65534 (nobody), not root"),
        (_foreign_leases, "leases", "is owned by uid 65534 (nobody), not root"),
        (
            _open_leases,
            "leases",
            "is writable by group or others without the sticky bit (mode 0777)",
        ),
        (_linked_ports_file, "ports.lock", "is not a regular file with one link (2 links)"),
        (_fifo_ports_file, "ports.lock", "is not a regular file (owned by uid 0 (root))"),
        (_symlinked_leases, "leases", "is a symlink (owned by uid 0 (root))"),
        (_foreign_directory, "", "is owned by uid 65534 (nobody), not root"),
        (_open_directory, "", "is writable by group or others without the sticky bit (mode 0777)"),
    ],
)
def test_init_lock_dir_refuses_what_it_cannot_trust_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil: Any, part: str, problem: str
) -> None:
    locks = tmp_path / "locks"
    init_lock_directory(str(locks))
    spoil(locks)
    before = {p.name: os.lstat(p) for p in (locks, *locks.iterdir())}
    assert main(["init-lock-dir", str(locks)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    what = str(locks / part) if part else str(locks)
    assert line.startswith(
        f"pytest-aiops: error: cannot prepare lock directory '{locks}': '{what}' {problem}"
    ), line
    assert line.endswith("then run pytest-aiops init-lock-dir again"), line
    after = {p.name: os.lstat(p) for p in (locks, *locks.iterdir())}
    assert {n: (s.st_uid, s.st_mode) for n, s in after.items()} == {
        n: (s.st_uid, s.st_mode) for n, s in before.items()
    }


@needs_root
def test_init_lock_dir_refuses_a_symlink_another_user_owns_and_follows_roots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    planted = tmp_path / "planted"
    planted.symlink_to(real)
    os.lchown(planted, 65534, 65534)
    assert main(["init-lock-dir", str(planted / "locks")]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert f"'{planted}' is a symlink owned by uid 65534 (nobody)" in line
    assert list(real.iterdir()) == []
    os.lchown(planted, 0, 0)  # root's own symlink: root chose it
    assert main(["init-lock-dir", str(planted / "locks")]) == 0
    assert f"created {real / 'locks'} (root, mode 0755)" in capsys.readouterr().out
    assert _mode(real / "locks" / "ports.lock") == (0, "0666")


def test_init_lock_dir_must_run_as_root(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "pytest_aiops", "init-lock-dir", "/nonexistent/locks"]
    env = child_env()
    if os.geteuid() == 0:
        # As another uid, with an interpreter that uid can run (pyenv's under a private
        # /root cannot even load its libpython there).
        python = user_python()
        if python is None:
            pytest.skip("no interpreter another uid can run that imports pytest_aiops")
        argv = [*AS_FIRST_USER, python, *argv[1:]]
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], SITE_PACKAGES])
    run = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", check=False)
    assert run.returncode == 1, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("pytest-aiops: error: pytest-aiops init-lock-dir must run as root")
    assert "--aiops-lock-dir" in line
    assert not os.path.exists("/nonexistent")


def test_init_lock_dir_is_listed_and_takes_only_a_directory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "init-lock-dir" in build_parser().format_help()
    assert main(["init-lock-dir", "--lock-dir", "/x"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "unrecognized arguments: --lock-dir" in line


def test_the_documented_shell_commands_are_the_ones_the_code_states() -> None:
    """docs/troubleshooting.md shows these lines; the modes are the ones the command sets."""
    text = (Path(__file__).parents[1] / "docs" / "troubleshooting.md").read_text()
    for line in shell_commands("/tmp/pytest-aiops/locks"):
        assert line in text, line
    assert json.dumps(shell_commands("D")) == json.dumps(
        [
            "install -d -o root -g root -m 0755 D",
            "install -d -o root -g root -m 1777 D/leases",
            "install -o root -g root -m 0666 /dev/null D/ports.lock",
        ]
    )


def test_init_lock_dir_on_windows_says_it_is_unsupported() -> None:
    """As tests/test_platforms.py does: the interpreter made to look like Windows."""
    code = (
        # shutil (through tempfile) imports _winapi when it sees win32 at import (3.13): load
        # it first, as the real Windows would have it.
        "import os, shutil, sys, tempfile\n"
        "for name in ('fcntl', 'pwd', 'termios'):\n"
        "    sys.modules[name] = None\n"
        "for name in ('geteuid', 'getuid', 'fork', 'register_at_fork'):\n"
        "    if hasattr(os, name):\n"
        "        delattr(os, name)\n"
        "sys.platform = 'win32'\n"
        "from pytest_aiops._cli.main import main\n"
        "sys.exit(main(['init-lock-dir', 'C:/locks']))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=False
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr == (
        "pytest-aiops: error: pytest-aiops init-lock-dir is not supported on win32 yet (it "
        "needs POSIX owners and modes)\n"
    )
