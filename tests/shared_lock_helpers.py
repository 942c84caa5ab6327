"""Several real users on one lock directory: root and two unprivileged uids in a private
mount namespace (``unshare -m``, fresh tmpfs on ``/tmp`` and ``/dev/shm``), as
``tests/test_security.py`` runs its attacker. The machine's own ``/tmp`` is never touched.

A driver script runs as root inside the namespace; it runs ``pytest-aiops init-lock-dir`` and
real inner pytest runs as the users (``setpriv``) and prints one JSON document at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from functools import cache
from typing import Any

from .process_helpers import REPO_ROOT, child_env, namespace_problem, run_driver

#: Two unprivileged users with no entry in /etc/passwd (named ``uid 1801`` in messages).
USERS = (1801, 1802)
#: Ports no other test uses, below Linux's ephemeral range and outside the plugin's default.
PORT_RANGE = "10600-10855"  # no other test uses it (the 800-server test owns 26400-32767)

AS_FIRST_USER = ("setpriv", f"--reuid={USERS[0]}", f"--regid={USERS[0]}", "--clear-groups")
#: This interpreter's packages (pytest, xdist), for an interpreter the users can run.
SITE_PACKAGES = sysconfig.get_paths()["purelib"]


@cache
def user_python() -> str | None:
    """An interpreter the users can ``exec`` (xdist starts its workers with it) that imports
    pytest, xdist and this checkout: this one, or the system's of the same version when this
    one lives where other users cannot reach (pyenv under a private ``/root``)."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], SITE_PACKAGES])
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    probe = f"import sys, pytest, xdist, pytest_aiops; assert sys.version.startswith('{version}.')"
    for candidate in (sys.executable, f"/usr/bin/python{version}", shutil.which("python3")):
        if not candidate or not os.path.exists(candidate):
            continue
        run = subprocess.run(
            [*AS_FIRST_USER, "sh", "-c", 'exec "$0" -c "$1"', candidate, probe],
            capture_output=True,
            env=env,
            cwd="/",
            check=False,
        )
        if run.returncode == 0:
            return candidate
    system = f"/usr/bin/python{version}"
    if os.path.exists(system) and _site_unreachable():
        # This interpreter's packages live where the users cannot reach them (pyenv's under a
        # private /root, as on CI): the namespace binds them at BOUND_SITE for the system's
        # interpreter of the same version (run_as_root_in_namespace).
        return system
    return None


#: Where the namespace binds this interpreter's site-packages when the users cannot reach it.
BOUND_SITE = "/mnt/site"


@cache
def _site_unreachable() -> bool:
    """Whether another uid cannot list this interpreter's site-packages."""
    run = subprocess.run(
        [*AS_FIRST_USER, "ls", SITE_PACKAGES], capture_output=True, cwd="/", check=False
    )
    return run.returncode != 0


def _problem() -> str | None:
    found = namespace_problem(
        tools=("unshare", "setpriv", "mount", "install"),
        mount_point="/tmp",
        root_for="root prepares the directory and two other uids use it, with setpriv",
    )
    if found is None and user_python() is None:
        return "no interpreter another uid can run that imports pytest, xdist and pytest_aiops"
    return found


PROBLEM = _problem()

#: The inner test each user runs: binds ports of its pool, says which it holds in /tmp/sync,
#: and (for the concurrent case) keeps holding them until the other user said the same.
INNER_TEST = r"""
import json, os, socket, time

import pytest

SYNC = "/tmp/sync"


def _wait_for(prefix):
    for _ in range(6000):  # a hang guard counting polls (about a minute), not a clock
        if any(n.startswith(prefix) and n.endswith(".json") for n in os.listdir(SYNC)):
            return
        time.sleep(0.01)
    raise AssertionError(f"no {prefix}* in {SYNC}: {os.listdir(SYNC)}")


@pytest.mark.parametrize("n", [1, 2])
def test_lease(port_range, n):
    ports = port_range.next_ports(4)
    servers = [socket.create_server(("127.0.0.1", port)) for port in ports]
    name = f"{os.environ['SHARED_TEST_NAME']}.{os.getpid()}.{n}.json"
    with open(os.path.join(SYNC, name + ".tmp"), "w") as handle:
        json.dump({"uid": os.geteuid(), "start": port_range.start, "end": port_range.end,
                   "ports": ports}, handle)
    os.rename(os.path.join(SYNC, name + ".tmp"), os.path.join(SYNC, name))
    other = os.environ.get("SHARED_TEST_WAIT_FOR")
    if other:
        _wait_for(other + ".")
    for server in servers:
        server.close()
"""

PRELUDE = r"""
import json, os, stat, subprocess, sys
USERS = %(users)r
USER_PY = %(user_py)r
PORT_RANGE = %(port_range)r
INNER_TEST = %(inner_test)r

def sh(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, **kw)

def as_user(uid):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]

def user_sh(uid, script, *args):
    run = sh(*as_user(uid), "sh", "-c", script, "sh", *args)
    assert run.returncode == 0, run.stderr
    return run

def cli(*args, uid=0):
    prefix = as_user(uid) if uid else []
    run = sh(*prefix, USER_PY if uid else sys.executable, "-m", "pytest_aiops", *args, cwd="/")
    return {"rc": run.returncode, "out": run.stdout, "err": run.stderr}

os.makedirs("/tmp/sync", mode=0o1777)
os.chmod("/tmp/sync", 0o1777)

def project(uid):
    path = f"/tmp/u{uid}"
    if not os.path.isdir(path):
        os.makedirs(path)
        with open(os.path.join(path, "test_shared.py"), "w") as handle:
            handle.write(INNER_TEST)
        os.chown(path, uid, uid)
        os.chown(os.path.join(path, "test_shared.py"), uid, uid)
    return path

def start(uid, *args, name, wait_for=None, env=None):
    # No passwd entry: pytest names its temporary directory after $USER (pytest-of-<user>).
    environ = {**os.environ, "USER": f"user{uid}", "LOGNAME": f"user{uid}",
               "SHARED_TEST_NAME": name, **(env or {})}
    if wait_for:
        environ["SHARED_TEST_WAIT_FOR"] = wait_for
    argv = [*as_user(uid), USER_PY, "-m", "pytest", "-p", "no:cacheprovider",
            "-p", "no:benchmark", "-p", "no:asyncio", "-p", "no:aiohttp", "-q", "-rA",
            f"--aiops-port-range={PORT_RANGE}", *args, project(uid)]
    return subprocess.Popen(argv, cwd=project(uid), env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

def finish(proc):
    out, err = proc.communicate(timeout=240)
    return {"rc": proc.returncode, "out": out, "err": err}

def held(name):
    found = []
    for entry in sorted(os.listdir("/tmp/sync")):
        if entry.startswith(name + ".") and entry.endswith(".json"):
            with open(os.path.join("/tmp/sync", entry)) as handle:
                found.append(json.load(handle))
    return found

def state(path):
    found = {}
    for name in ("", "leases", "ports.lock"):
        try:
            info = os.lstat(os.path.join(path, name) if name else path)
        except FileNotFoundError:
            continue
        found[name or "."] = [info.st_uid, f"{stat.S_IMODE(info.st_mode):04o}"]
    return found
"""


def _hidden_paths() -> list[str]:
    """The tree under test and the interpreter's prefix where a fresh tmpfs would hide them."""
    found: list[str] = []
    for path in sorted({str(REPO_ROOT), os.path.realpath(sys.prefix)}):
        if path.startswith(("/tmp/", "/dev/shm/")) and not any(
            path.startswith(kept + "/") for kept in found
        ):
            found.append(path)
    return found


def run_as_root_in_namespace(script: str) -> dict[str, Any]:
    """Run the Python ``script`` as root in a fresh mount namespace; the JSON it printed last."""
    prelude = PRELUDE % {
        "users": USERS,
        "user_py": user_python(),
        "port_range": PORT_RANGE,
        "inner_test": INNER_TEST,
    }
    hidden = _hidden_paths()
    site = SITE_PACKAGES
    bind_site = ""
    if _site_unreachable():
        site = BOUND_SITE
        bind_site = (
            f"mkdir {BOUND_SITE} && mount --bind {shlex.quote(SITE_PACKAGES)} {BOUND_SITE} && "
        )
    before = "".join(
        f"mkdir /mnt/keep{i} && mount --bind {shlex.quote(p)} /mnt/keep{i} && "
        for i, p in enumerate(hidden)
    )
    after = "".join(
        f"&& mkdir -p {shlex.quote(p)} && mount --bind /mnt/keep{i} {shlex.quote(p)} "
        for i, p in enumerate(hidden)
    )
    shell = (
        ("mount -t tmpfs tmpfs /mnt && " + bind_site + before if hidden or bind_site else "")
        + "mount -t tmpfs -o mode=1777 tmpfs /tmp && mount -t tmpfs -o mode=1777 tmpfs /dev/shm "
        + f'{after}&& exec "$0" -c "$1"'
    )
    env = child_env(TMPDIR="/tmp")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], site])
    for name in list(env):
        # an inner run is a run of its own, not part of this suite's xdist worker
        if name.startswith("PYTEST_XDIST_") or name in ("PYTEST_AIOPS_LOCK_DIR", "PYTEST_ADDOPTS"):
            env.pop(name)
    code = prelude + textwrap.dedent(script)
    return run_driver(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, sys.executable, code], env
    )
