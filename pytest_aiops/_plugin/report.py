"""What the plugin says about tests: who took which port, who holds a port a test could not
bind, which modules failed, and why a fixture could not provision.

:class:`Reporter` is registered on first use of a port or worktree fixture (a run that
never uses them pays nothing). It tells the worker's pool which test or fixture is taking
ports (so they come back when that one ends) and records which modules had a failing test
(for ``--aiops-keep=failed``). :func:`describe_port_holders` writes the "aiops: who holds the
port" section the plugin adds to any test that failed with "address already in use": for the
ports the test really used (its failed bind's, from :mod:`.binds`, and those the pool handed
it), the process holding each (``_ports/sockets.py``), the pytest-aiops lease it lies in, and
how to move a test that chose its own port onto the pool; :class:`PortHolderNotes` adds it
to the report. :class:`FailedModules` records failing modules for ``--aiops-keep=failed``.
:func:`provisioning_failure` is the one line a fixture fails with when it cannot provision.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Generator
from types import FrameType
from typing import TYPE_CHECKING

import pytest

from .._errors import AiopsError
from .._ports.current import TEST
from .._ports.pool import SESSION
from .settings import cli, spellings

if TYPE_CHECKING:
    from typing import Protocol

    from .._ports.pool import PortRange
    from .._ports.provider import LeaseRecord
    from .settings import Settings
    from .worker import AiopsWorker

    class _State(Protocol):
        """What :class:`PortHolderNotes` reads of the plugin's per-process state."""

        settings: Settings
        session_id: str

        @property
        def worker_built(self) -> AiopsWorker | None: ...


#: pytest's module whose ``pytest_fixture_setup`` runs every fixture's setup.
_FIXTURES = os.path.join("_pytest", "fixtures.py")
#: pytest's module whose ``runtestprotocol`` runs each test (its ``item`` is the test).
_RUNNER = os.path.join("_pytest", "runner.py")


def _running_item(frame: FrameType | None) -> pytest.Item | None:
    """The test whose ``runtestprotocol`` is on the stack from ``frame`` up."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "runtestprotocol" and code.co_filename.endswith(_RUNNER):
            item = frame.f_locals.get("item")
            return item if isinstance(item, pytest.Item) else None
        frame = frame.f_back
    return None


def running_item() -> pytest.Item | None:
    """The running test, its item read from pytest's stack (this thread's, else the main
    thread's, where pytest runs the tests); ``None`` between tests. The fallback of
    :func:`running_test`: walking the stack costs about 40,000 instructions."""
    found = _running_item(sys._getframe(1))
    if found is None:
        main = threading.main_thread().ident
        found = _running_item(sys._current_frames().get(main)) if main is not None else None
    return found


def running_test(session: pytest.Session | None) -> pytest.Item | None:
    """The test pytest is running (from any thread), ``None`` between tests: its item (an
    item's ``nodeid`` costs about 7,000 instructions a call on pytest 9, so the item is
    kept and its id built only if needed).

    The item on top of the session's setup stack: pytest pushes an item there before
    setting up its fixtures and pops it before its finalizers run. That stack
    (``Session._setupstate.stack``, a dict in setup order since pytest 7) is private, so
    it is read defensively, and where it is not as expected the stack of frames is walked
    instead (:func:`running_item`). Asked once per test that takes a port.
    """
    stack = getattr(getattr(session, "_setupstate", None), "stack", None)
    top = next(reversed(stack), None) if isinstance(stack, dict) else None
    if isinstance(top, pytest.Item):
        return top
    # Not set up, or being torn down (pytest pops the item before its finalizers run), or
    # no test at all: the stack of frames says, at its cost, only in those rarer cases.
    return running_item()


class Reporter:
    """Made on first use of the port or worktree fixtures (so unused runs pay nothing).

    Owns who takes a port: the running test (read from pytest's stack when a test first
    takes a port, :meth:`attribute`), the stack of holders pushed by hand (:attr:`holders`),
    and the fixture being set up (found on the caller's stack, its ports back when it is
    finalized). The worker's pool asks through one callable, :meth:`attribute`, only when a
    port is taken, and gets a test's ports back when it ends: its one hook,
    :meth:`pytest_runtest_logfinish` (it had one per phase, and one per fixture, which cost
    a run of 2,000 tests taking a port 5% more instructions, issue 23). Also records which
    modules had a failing test (for ``--aiops-keep=failed``).
    """

    def __init__(self, worker: AiopsWorker, session: pytest.Session | None = None) -> None:
        self.worker = worker
        #: The pytest session whose running test takes ports (:func:`running_test`).
        self.session = session
        self.failed_modules: set[str] = set()
        #: Holders pushed by hand, innermost last: a port taken outside a fixture's setup
        #: goes to the last one before the running test.
        self.holders: list[object] = []
        #: The running test (its item), once a port was taken in it (``None`` between tests).
        self.running: pytest.Item | None = None
        #: Fixtures that hold ports now: each gets one finalizer that gives them back.
        self._watched: set[object] = set()
        self._session = SESSION
        self._wired: PortRange | None = None

    def _pool(self) -> PortRange | None:
        return self.worker.leased_port_range

    def wire(self, pool: PortRange) -> None:
        """Make ``pool`` ask this reporter who takes a port (the pool whose ports a test
        can hold: it gives them back at the test's end)."""
        if pool.attribution is None:
            pool.attribution = self.attribute
        self._wired = pool

    def attribute(self, holder: object) -> tuple[object, object]:
        """Who holds a port taken now, and the running test (:data:`.pool.Attribution`):
        the test if the caller named :data:`~.pool.TEST`, else ``holder`` if it named
        one, else the fixture being set up, else the last holder pushed by hand, else the
        running test, else the session. The running test is read from pytest's stack once
        per test that takes a port (:func:`running_test`), and forgotten when it ends."""
        test = self.running
        if test is None:
            test = self.running = running_test(self.session)
        if holder is TEST:
            if test is not None:
                return test, test
            holder = None  # no test runs: as if none was named
        if holder is None:
            holder = self.running_fixture()
            if holder is None:
                holder = self.holders[-1] if self.holders else test or self._session
        return holder, test

    def running_fixture(self) -> object | None:
        """The innermost fixture being set up on this thread's stack (pytest's own
        ``pytest_fixture_setup`` frame holds it), its ports given back when it is
        finalized; ``None`` outside a fixture's setup."""
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_name == "pytest_fixture_setup" and code.co_filename.endswith(_FIXTURES):
                fixturedef = frame.f_locals.get("fixturedef")
                if fixturedef is not None and fixturedef not in self._watched:
                    self._watched.add(fixturedef)
                    fixturedef.addfinalizer(functools.partial(self._finalized, fixturedef))
                return fixturedef
            frame = frame.f_back
        return None

    def _finalized(self, fixturedef: object) -> None:
        # Registered while the fixture was set up, so it runs after the fixture's own
        # teardown (finalizers run last in, first out).
        self._watched.discard(fixturedef)
        pool = self._pool()
        if pool is not None:
            pool.give_back_all(fixturedef)

    @pytest.hookimpl
    def pytest_runtest_logfinish(self) -> None:
        """The running test and its function-scoped fixtures are done: its own ports come
        back (the reporter's one hook; pytest calls it once per test, whatever plugin makes
        the reports or when they are logged)."""
        running, self.running = self.running, None
        pool = self._wired  # only a wired pool hands a port to a test (attribute())
        if pool is not None and running is not None:  # a test that took none: nothing
            pool.give_back_all(running)

    def note_failure(self, nodeid: str) -> None:
        """The test ``nodeid`` failed: its module is one --aiops-keep=failed keeps."""
        self.failed_modules.add(nodeid.split("::", 1)[0])


NOTE_TITLE = "aiops: who holds the port"
#: How a test moves a server's port onto the pool (said when it chose a port itself).
MOVE_TO_POOL = (
    "take the server's port from the pool instead: the `aiops_port` fixture (one test), "
    "`aiops_port_factory()` (a fixture of any scope) or `pytest_aiops.take_port()` (any "
    "code, e.g. a helper that starts the server), and pass it to the server"
)
#: At most this many ports are described in one note.
MAX_PORTS = 8


class Whose:
    """Whom a note is written for: the failed test, this worker, its run, its ports (a
    plain class: the reporter's module is loaded by every run that takes a port, and a
    dataclass compiles its methods at import, issue 23)."""

    def __init__(
        self,
        nodeid: str,
        worker_id: str,
        session_id: str,
        run_session_id: str,
        lock_directory: str,
        pool: PortRange | None = None,
        rootdir: str | None = None,
    ) -> None:
        self.nodeid = nodeid
        self.worker_id = worker_id
        #: This worker's session id (its lease; grown blocks ``+N``; ``:session:<pid>``).
        self.session_id = session_id
        #: The run's: the xdist controller's parent lease; its workers' are
        #: ``<it>/<worker id>``.
        self.run_session_id = run_session_id
        self.lock_directory = lock_directory
        self.pool = pool
        self.rootdir = rootdir


def _relation(record: LeaseRecord, whose: Whose) -> str:
    """``own``, ``run`` (this run's xdist parent range), ``sibling`` (another worker of this
    run), ``project`` (a run of the same rootdir, not known to be this one) or ``other``.

    Two runs of one project use the same session ids, so the pid decides what is this
    process's own; a sibling worker is a child of the same xdist controller.
    """
    from .._ports.sockets import parent_pid

    own, run, pid, parent = whose.session_id, whose.run_session_id, os.getpid(), os.getppid()
    session = record.session_id
    if record.pid == pid and (session == own or session.startswith((own + "+", own + ":session:"))):
        return "own"
    if own.startswith(session + "/") and record.pid in (pid, parent):
        return "run"
    if session == run or session.startswith(run + "/"):
        if parent > 1 and parent_pid(record.pid) == parent:
            return "sibling"
        return "project"
    return "other"


def _lease_line(port: int, leases: list[LeaseRecord], whose: Whose) -> str:
    """Which pytest-aiops lease ``port`` lies in, said from this worker's point of view."""
    relations = [(_relation(record, whose), record) for record in leases]
    texts = []
    for how, record in relations:
        holder = (
            f"pid {record.pid} on {record.host}, session {record.session_id!r}, "
            f"{record.role} lease {record.start_port}-{record.end_port}"
        )
        if how == "sibling":
            texts.append(f"leased by another worker of this run ({holder})")
        elif how == "project":
            texts.append(f"leased by another pytest-aiops run of this project ({holder})")
        elif how == "other":
            texts.append(f"leased by another pytest-aiops run ({holder})")
    if texts:
        return f"port {port}: " + "; ".join(texts)
    own = [record for how, record in relations if how == "own"]
    if own:
        record = own[0]
        grown = record.session_id.startswith(whose.session_id + "+")
        return (
            f"port {port}: in this worker's own lease {record.start_port}-{record.end_port}"
            f"{' (a block its pool grew by)' if grown else ''}, so no other pytest-aiops run "
            "holds it"
        )
    if relations:
        return f"port {port}: in this run's port range, so no other pytest-aiops run holds it"
    return f"port {port}: in no pytest-aiops lease, so nothing kept other processes off it"


def _socket_lines(port: int, protocol: str, records: list[LeaseRecord]) -> list[str]:
    """Who holds ``port`` on this machine: processes (pid, user, command line), sockets of
    processes this user cannot see, TIME_WAIT; without /proc, the command to ask."""
    from .._ports.sockets import port_holders, user_name

    found = port_holders(port, (protocol,))
    if not found.readable:
        return [
            f"port {port}: which process holds it cannot be read here (no /proc): run "
            f"`lsof -nP -i :{port}` (macOS, BSD) or `netstat -ano | findstr :{port}` (Windows)"
        ]
    lines = []
    sessions = {record.pid: record.session_id for record in records}
    for holder in found.processes:
        sockets = f"[{'/'.join(holder.states)} on {', '.join(holder.addresses)}]"
        if holder.pid == os.getpid():
            lines.append(
                f"port {port}: held by this test process itself (pid {holder.pid}) {sockets}: "
                "a server this test or an earlier one started is still open (close it when "
                "its test or fixture ends)"
            )
            continue
        who = f"pid {holder.pid} ({user_name(holder.uid)})"
        if holder.pid in sessions:
            who += f", pytest-aiops session {sessions[holder.pid]!r}"
        command = f": {holder.command}" if holder.command else ""
        lines.append(f"port {port}: held by {who} {sockets}{command}")
    for uid, state in found.hidden:
        lines.append(
            f"port {port}: a {state} socket of {user_name(uid)} whose process this user cannot "
            f"see (as root: `ss -tulpn 'sport = :{port}'`)"
        )
    if not lines and found.time_wait:
        lines.append(
            f"port {port}: no process holds it; {found.time_wait} socket(s) in TIME_WAIT (a "
            "connection on it closed within the last minute) keep a server without "
            "SO_REUSEADDR off it until they expire"
        )
    if not lines:
        lines.append(
            f"port {port}: no socket on it is listed now (its holder has closed it since, or "
            "holds it bound without listening)"
        )
    return lines


def describe_port_holders(error: BaseException, whose: Whose) -> str:
    """The note for a test that failed with "address already in use".

    Names only the ports the test really used: its failed bind's (read from the exception's
    frames, :func:`.binds.failed_binds`) and those the pool handed it; never a number from
    the failure's text. For each: who holds it, which pytest-aiops lease it lies in; for a
    port the test chose itself, how to move the test onto the pool.
    """
    from .._ports.provider import read_records
    from .binds import failed_binds, short_location

    pool = whose.pool if whose.pool is not None and whose.pool.leased else None
    handed = pool.ports_of(whose.nodeid) if pool is not None else []
    binds = failed_binds(error)
    leased = " and ".join(f"{start}-{end}" for start, end in pool.blocks) if pool else "no ports"
    lines = [
        f"this worker ({whose.worker_id}, pid {os.getpid()}) leases {leased}; "
        f"lock dir {whose.lock_directory}"
    ]
    ports: dict[int, str] = {}
    for bind in binds:
        ports.setdefault(bind.port, bind.protocol)
        given = "the pool handed it to this test" if bind.port in handed else "not from the pool"
        lines.append(
            f"port {bind.port}: the failed bind, {bind.address} at "
            f"{short_location(bind.where, whose.rootdir)}; {given}"
        )
    for port in handed:
        if port not in ports:
            ports[port] = "tcp"
            lines.append(f"port {port}: handed to this test by the pool")
    if not ports:
        lines.append(
            "no port to name: the failed bind's address is not in the exception's frames (a "
            "server in another thread or process?) and the pool gave this test no port; "
            f"{MOVE_TO_POOL}, so this note can name who holds it"
        )
        return "\n".join(lines)
    try:
        records = [record for record in read_records(whose.lock_directory)]
        records = [record for record in records if record.holder_alive()]
    except (OSError, AiopsError):  # an unusable lock directory must not hide the rest
        records = []
    for port, protocol in list(ports.items())[:MAX_PORTS]:
        lines += _socket_lines(port, protocol, records)
        lines.append(_lease_line(port, [r for r in records if port in r.ports], whose))
    chosen = [str(bind.port) for bind in binds if bind.port not in handed]
    if chosen:
        lines.append(
            f"port {', '.join(chosen)} was chosen by the test (or is a library's default), "
            f"not by pytest-aiops: {MOVE_TO_POOL}"
        )
    return "\n".join(lines)


def add_port_holder_note(
    item: pytest.Item,
    report: pytest.TestReport,
    error: BaseException,
    worker: AiopsWorker | None,
    run: str,
    lock_dir: str | None,
) -> None:
    """Add the note of :func:`describe_port_holders` to ``report`` of ``item``, which failed
    with "address already in use": ``worker`` is this process's if one was built, ``run``
    the run's session id, ``lock_dir`` the configured lock directory (if any)."""
    from .._ports.defaults import default_lock_directory

    pool = worker.leased_port_range if worker is not None else None
    workerinput = getattr(item.config, "workerinput", None) or {}
    worker_id = worker.worker_id if worker is not None else workerinput.get("workerid", "master")
    whose = Whose(
        nodeid=item.nodeid,
        worker_id=str(worker_id),
        session_id=worker.session_id if worker is not None else f"{run}/{worker_id}",
        run_session_id=run,
        lock_directory=(pool.lock_directory if pool is not None else None)
        or lock_dir
        or default_lock_directory(),
        pool=pool,
        rootdir=str(item.config.rootpath),
    )
    try:
        note = describe_port_holders(error, whose)
    except Exception as failure:  # a note must never break the report it is added to
        note = f"could not say who holds the port: {type(failure).__name__}: {failure}"
    report.sections.append((NOTE_TITLE, note))


class PortHolderNotes:
    """Sees each report as it is logged, first (``tryfirst``: before pytest-xdist sends it
    to the controller or junitxml writes it). Adds the note of who holds the port to a
    failure the plugin's ``pytest_runtest_makereport`` saw raise "address already in use".
    Registered at the first such raise, so a run whose tests pass has no hook more per
    report (issue 23)."""

    def __init__(self, state: _State) -> None:
        self.state = state
        #: ``(nodeid, phase)`` -> the item and the "address in use" error it raised.
        self.pending: dict[tuple[str, str | None], tuple[pytest.Item, BaseException]] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.pending:
            return
        # Taken whatever the outcome: a rerun or an xfail must not leave it for a later report.
        found = self.pending.pop((report.nodeid, report.when), None)
        if found is not None and report.failed:
            state = self.state
            item, error = found
            worker, lock_dir = state.worker_built, state.settings.lock_dir
            add_port_holder_note(item, report, error, worker, state.session_id, lock_dir)


class FailedModules:
    """For ``--aiops-keep=failed`` once a fixture is used: notes each module with a failed
    report as the report is made (a wrapper sees the final one, a strict xpass included),
    before the module's worktree is released, even where pytest-rerunfailures logs its
    reports only after the teardown. Only such runs pay for the wrapper (issue 23)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed:
            self.reporter.note_failure(item.nodeid)
        return report


#: What to add to a provider's complaint about an option the plugin sets for it.
OPTION_HINTS = {
    "baseRef": f"set {spellings('base_ref', env=False)} or the module's "
    "pytest.mark.aiops(base_ref=...) to an existing commit",
    "targetPath": "fix the module's pytest.mark.aiops(target_path=...)",
    "workingState": f"or set {spellings('working_state', '=false')} or the module's "
    "pytest.mark.aiops(working_state=False)",
}


def provisioning_failure(fixture: str, error: AiopsError) -> str:
    """One line for a fixture that could not provision: a bad setting is no bug to trace.

    The orchestrator's wrapper ("Resource provisioning failed: ...") is unwrapped to the
    provider's own error, which names the option and value. The caller fails the test with
    it outside its ``except`` block, so no chained traceback is shown either.
    """
    from .._errors import NoSpaceError, ProvisioningError, UnsafeDirectoryError

    cause: BaseException = error
    if isinstance(error, ProvisioningError) and isinstance(error.__cause__, AiopsError):
        cause = error.__cause__
    message = " ".join(str(cause).split())
    setting = spellings("worktree_root")
    if isinstance(cause, UnsafeDirectoryError):  # name the plugin's setting, not the core's
        message = cause.for_setting(cli("worktree_root"), setting)
    elif isinstance(cause, NoSpaceError):
        message = cause.for_setting(setting)
    hint = OPTION_HINTS.get(getattr(cause, "option", ""))
    if hint:
        message = f"{message.rstrip('.')}; {hint}"
    from .._core.orchestrator import rollback_notes

    message += "".join(f"; {note}" for note in rollback_notes(error))  # what may be left
    return message if message.startswith(f"{fixture} ") else f"{fixture}: {message}"
