"""Remote xdist workers: which gateways run on this host, and what the controller sends them.

A worker started through ``--tx popen`` (no ``via``) runs on the controller's host; any other
gateway (``ssh=``, ``socket=``, ``popen//via=``) may not. For those the controller asks the
gateway itself, once, before the worker starts: one ``remote_exec`` that sends back the
host's name and boot id. A different name or boot id is another host (a UTS namespace with
its own name counts as one: its processes may not see this host's ``/tmp``).

What every worker gets in ``workerinput`` (:class:`SettingsSender`, registered in the
controller even with ``--aiops-disable``): the controller's resolved settings (from the
command line, the environment or the ini file: a remote host sees none of the controller's
environment), whether it is on another host and that host's name, and, when some gateway may
be remote, the commit the base ref names in the controller's repository, so every host checks
out the same one. No pytest import: the controller's hooks are plain methods.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from .._core.values import dataclass
from .._errors import AiopsError
from .settings import cli

#: Sent to a gateway that may be remote: its host's name and boot id, as :func:`host_identity`.
PROBE_SOURCE = """
import socket
try:
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
except OSError:
    boot = ""
channel.send([socket.gethostname(), boot])
"""


def host_identity() -> tuple[str, str]:
    """This host's name and boot id ("" where the OS has none): what tells hosts apart."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return socket.gethostname(), boot


def is_local_spec(spec: Any) -> bool:
    """Whether an execnet gateway spec surely starts its worker on this host (plain popen)."""
    return bool(getattr(spec, "popen", False)) and not getattr(spec, "via", None)


def local_worker_count(specs: Iterable[object]) -> tuple[int, int]:
    """(workers on this host, workers through other gateways) of xdist's ``--tx`` specs."""
    import execnet

    local = remote = 0
    for text in specs:
        match = re.match(r"^(\d+)\*(.*)$", str(text))
        count, rest = (int(match.group(1)), match.group(2)) if match else (1, str(text))
        if is_local_spec(execnet.XSpec(rest)):
            local += count
        else:
            remote += count
    return local, remote


@dataclass(frozen=True)
class PinnedBase:
    """The base commit a remote worker checks out: what the controller resolved, or why not.

    ``ref`` is the base ref as configured, ``commit`` what it named in the controller's
    repository (``None``: ``error`` says why), ``controller`` the controller's host name and
    ``host`` this worker's.
    """

    ref: str
    commit: str | None
    error: str | None
    controller: str
    host: str

    def missing(self, repo: str) -> str:
        """One line: the commit is not in ``repo`` on this host, and what to do about it."""
        return (
            f"commit {self.commit} ({self.ref} on the controller's host "
            f"{self.controller}) is missing from {repo} on host {self.host}; push it from the "
            f"controller's repository and fetch it into {repo} on {self.host} (or pass "
            f"{cli('base_ref')}=REF for a commit both hosts have), then run again"
        )

    def unresolved(self) -> str:
        """One line: the controller could not resolve the base ref (so no host checks out)."""
        return (
            f"{cli('base_ref')} {self.ref} could not be resolved on the "
            f"controller's host {self.controller} ({self.error}), so this worker on host "
            f"{self.host} has no commit to check out; fix the base ref or the repository there"
        )


def resolve_base(repo: str, ref: str) -> tuple[str | None, str | None]:
    """(commit, None) for ``ref`` in the repository holding ``repo``, else (None, why)."""
    from .._worktrees.locate import resolve_commit
    from .._worktrees.roots import find_repository

    root = find_repository(repo) if os.path.isdir(repo) else None
    if root is None:
        return None, f"{repo} is not in a git repository"
    try:
        return resolve_commit(root, ref), None
    except AiopsError as error:
        return None, " ".join(str(error).split())


def remote_hint(host: str) -> str:
    """What ``git_worktree`` says on a remote host whose checkout holds no repository."""
    return (
        f"this worker runs on host {host}, whose copy has no .git (--rsyncdir copies none): "
        f"set {cli('repo')} to the path of a clone of the repository under test that exists "
        f"on {host} (the controller's settings apply on every host)"
    )


class SettingsSender:
    """Controller-side xdist hook: every worker's settings, host, and base commit.

    Registered as ``aiops-xdist-settings`` in every xdist controller, ``--aiops-disable``
    included (a remote worker must not lease because it cannot see ``PYTEST_AIOPS_DISABLE``).
    ``base`` is ``(commit, error)`` resolved once at configure time, or ``None`` when every
    gateway is plain popen (then no git runs here: local workers resolve it in the same
    repository). ``hosts`` maps gateway ids to the names of the other hosts they run on.
    """

    def __init__(
        self, settings_json: str, *, base_ref: str, base: tuple[str | None, str | None] | None
    ) -> None:
        self.settings_json = settings_json
        self.base_ref = base_ref
        self.base = base
        self.identity = host_identity()
        self.hosts: dict[str, str] = {}

    def probe(self, node: Any) -> tuple[str, str]:
        """The host identity of ``node``'s gateway (this host's for plain popen)."""
        if is_local_spec(node.gateway.spec):
            return self.identity
        channel = node.gateway.remote_exec(PROBE_SOURCE)
        try:
            name, boot = channel.receive(timeout=120)
        finally:
            channel.waitclose(timeout=120)
        return str(name), str(boot)

    def pytest_configure_node(self, node: Any) -> None:
        """Put the settings, the worker's host and the base commit into its workerinput."""
        from .xdist import WORKERINPUT_KEY

        name, boot = self.probe(node)
        remote = (name, boot) != self.identity
        data: dict[str, Any] = {
            "settings": self.settings_json,
            "remote": remote,
            "host": name,
            "controllerHost": self.identity[0],
        }
        if remote:
            self.hosts[str(node.gateway.id)] = name
        if self.base is not None:
            data["baseRef"] = self.base_ref
            data["baseCommit"], data["baseError"] = self.base
        node.workerinput.setdefault(WORKERINPUT_KEY, {}).update(data)


def pinned_base(data: Mapping[str, Any] | None) -> PinnedBase | None:
    """The base commit a remote worker must check out (``None``: a local worker)."""
    if not data or not data.get("remote") or "baseRef" not in data:
        return None
    return PinnedBase(
        ref=str(data["baseRef"]),
        commit=data.get("baseCommit"),
        error=data.get("baseError"),
        controller=str(data.get("controllerHost", "?")),
        host=str(data.get("host", "?")),
    )
