"""Per-test tracking for the pool, and the report of who holds a port a test could not bind.

:class:`Reporter` is registered on first use of a port or worktree fixture (a run that
never uses them pays nothing). It tells the worker's pool which test or fixture is taking
ports (so they come back when that one ends), records which modules had a failing test (for
``--aiops-keep=failed``), and adds an "aiops: who holds the port" section to a test that
failed with "address already in use".
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .._ports.pool import PortRange
    from .worker import AiopsWorker

_ADDRESS_IN_USE = "address already in use"
PORT_FIXTURES = frozenset(
    {
        "port_range",
        "aiops_port",
        "aiops_udp_port",
        "aiops_port_factory",
        "provisioned_session",
        "unused_tcp_port",
        "unused_udp_port",
        "unused_tcp_port_factory",
        "unused_udp_port_factory",
    }
)


class Reporter:
    """Registered on first use of the port or worktree fixtures (so unused runs pay nothing).

    Tracks the running test (ports handed out are attributed to it), which modules had a
    failing test (for ``--aiops-keep=failed``), and adds a report section naming the holder
    of the port when a test using ``port_range`` fails with "address already in use".
    """

    def __init__(self, worker: AiopsWorker) -> None:
        self.worker = worker
        self.failed_modules: set[str] = set()
        # Who holds the ports taken now: the fixtures being set up, innermost last. Shared
        # with the pool (PortRange.holders); see _activate_reporter for the first one.
        self.holders: list[object] = []

    def _pool(self) -> PortRange | None:
        return self.worker.leased_port_range

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        pool = self._pool()
        if pool is not None:
            pool.current_user = nodeid

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, object, object]:
        # Ports a fixture takes while it is set up are its own, back when it is finalized.
        self.holders.append(fixturedef)
        try:
            return (yield)
        finally:
            self.holders.remove(fixturedef)

    @pytest.hookimpl
    def pytest_fixture_post_finalizer(self, fixturedef: Any) -> None:
        pool = self._pool()
        if pool is not None:
            pool.give_back_all(fixturedef)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self) -> None:
        if SETUP_GUARD in self.holders:
            self.holders.remove(SETUP_GUARD)

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        # The test and its function-scoped fixtures are done: its own ports come back.
        if SETUP_GUARD in self.holders:
            self.holders.remove(SETUP_GUARD)
        pool = self._pool()
        if pool is not None:
            pool.give_back_all(nodeid)
            pool.current_user = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if not report.failed:
            return report
        module = item.getparent(pytest.Module)
        if module is not None:
            self.failed_modules.add(module.nodeid)
        uses_ports = PORT_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses_ports and self.worker.port_range_leased and _is_address_in_use(call, report):
            text = describe_port_holders(self.worker.port_range(), item.nodeid, report.longreprtext)
            report.sections.append(("aiops: who holds the port", text))
        return report


def _is_address_in_use(call: pytest.CallInfo[None], report: pytest.TestReport) -> bool:
    excinfo = call.excinfo
    if (
        excinfo is not None
        and isinstance(excinfo.value, OSError)
        and excinfo.value.errno == errno.EADDRINUSE
    ):
        return True
    return _ADDRESS_IN_USE in report.longreprtext.lower()


#: Where a failure's text plausibly names a TCP port: ``127.0.0.1:26144``,
#: ``localhost:26144``, ``[::1]:26144``, ``('127.0.0.1', 26144)``, ``port 26144``,
#: ``port=26144``. Never ``file.py:12`` (a traceback location) or ``[Errno 98]``.
_PORT_MENTIONS = (
    re.compile(
        r"(?:(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}|\blocalhost|\])"
        r":(\d{1,5})(?![\w.])",
        re.IGNORECASE,
    ),
    re.compile(r"\(\s*(?:b?['\"][^'\"\n]*['\"])\s*,\s*(\d{1,5})\s*[,)]"),
    re.compile(
        r"(?<![\w.])ports?(?![\w.])\s*(?:number\s*)?[:=]?\s*['\"]?(\d{1,5})(?![\w.])", re.IGNORECASE
    ),
)


def mentioned_ports(text: str) -> list[int]:
    """Port numbers ``text`` plausibly names (see ``_PORT_MENTIONS``), in order, once each."""
    found: list[tuple[int, int]] = []
    for pattern in _PORT_MENTIONS:
        found += [(m.start(1), int(m.group(1))) for m in pattern.finditer(text)]
    ports: list[int] = []
    for _, number in sorted(found):
        if 0 < number <= 65535 and number not in ports:
            ports.append(number)
    return ports


def describe_port_holders(port_range: PortRange, nodeid: str, text: str) -> str:
    """Which lease (process, session) holds the ports a failing test probably wanted.

    The ports considered are those ``next_port()`` gave the test and those the failure text
    plausibly names; with none, the live leases overlapping the worker's range instead.
    """
    from .._ports.provider import default_lock_directory, holders_of, read_records

    def ours(session_id: str) -> bool:
        # This worker's lease, or (under xdist) the controller's parent lease around it.
        own = port_range.session_id
        return session_id == own or own.startswith(session_id + "/")

    candidates = port_range.ports_of(nodeid)
    candidates += [port for port in mentioned_ports(text) if port not in candidates]
    lock_dir = port_range.lock_directory or default_lock_directory()
    lines = [
        f"this worker ({port_range.owner}, pid {os.getpid()}) leases {port_range.start}-"
        f"{port_range.end}; lock dir {lock_dir}"
    ]
    if not candidates:
        lines.append(
            "no port number in the failure and next_port() gave this test none; take ports "
            "from port_range.next_port() (or aiops_port) so a failure can name them"
        )
        overlapping = [
            record
            for record in read_records(lock_dir)
            if record.start_port <= port_range.end
            and port_range.start <= record.end_port
            and not ours(record.session_id)
            and record.holder_alive()
        ]
        for holder in overlapping:
            lines.append(
                f"{port_range.start}-{port_range.end} overlaps a lease of pid {holder.pid} on "
                f"{holder.host} (session {holder.session_id!r}, {holder.role} lease "
                f"{holder.start_port}-{holder.end_port})"
            )
        return "\n".join(lines)
    for port in candidates[:8]:
        others = [h for h in holders_of(lock_dir, port) if not ours(h.session_id)]
        if others:
            for holder in others:
                lines.append(
                    f"port {port}: leased by pid {holder.pid} on {holder.host} "
                    f"(session {holder.session_id!r}, {holder.role} lease "
                    f"{holder.start_port}-{holder.end_port})"
                )
        elif port in port_range:
            lines.append(
                f"port {port}: inside this worker's own lease, so no other pytest-aiops run "
                "holds it: a server this worker started (in this or an earlier test) is still "
                f"listening, or a process outside pytest-aiops is; see `ss -ltnp 'sport = :{port}'`"
            )
        else:
            lines.append(
                f"port {port}: outside this worker's range {port_range.start}-{port_range.end} "
                "and no pytest-aiops lease holds it; take ports from port_range.next_port() "
                f"instead (holder: `ss -ltnp 'sport = :{port}'`)"
            )
    return "\n".join(lines)


#: Holds the ports taken by a fixture whose setup began before the reporter was registered
#: (so no pytest_fixture_setup wrapper saw it start): its scope is unknown, so they are kept
#: for the session rather than given back after a test that may not own them.
SETUP_GUARD = "<session: taken during a setup the pool did not see begin>"
