"""pytest glue: options, settings, the xdist hand-off, fixtures, report header and failure notes.

Entry point ``pytest11: aiops``; turn it off with ``-p no:aiops`` or ``--aiops-disable``. The
fixtures are thin: each hands out what one :class:`~pytest_aiops._plugin.worker.AiopsWorker` per
process makes lazily, so a run that never requests them runs no git command and leases
nothing (only an xdist controller leases its parent port range up front; that is a few
syscalls, never git).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Generator, Iterator
from importlib import import_module
from pathlib import Path
from types import FunctionType
from typing import TYPE_CHECKING, Any

import pytest

from ._plugin import declarations as _declarations
from ._plugin.declarations import MARKER, declare_marker
from ._plugin.settings import OPTIONS_BY_DEST, Settings, cli
from ._plugin.xdist import worker_input, worker_slice, xdist_worker_count
from ._ports import current as _current_ports
from ._ports.current import TEST

if TYPE_CHECKING:
    # Imported when first needed: a run that never uses the fixtures does not load them.
    from ._core.registry import ProviderRegistry
    from ._core.session import ProvisionedResources
    from ._plugin.controller import XdistController
    from ._plugin.report import PortHolderNotes, Reporter
    from ._plugin.worker import AiopsWorker, GitWorktree, WorkerSession, WorktreeFactory
    from ._ports.pool import PortFactory, PortRange


def __getattr__(name: str) -> Any:
    """The fixture return types of ``__all__``, importable from here without loading them at
    start-up: the package's own lazy exports (its one list) resolve them."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(__package__ or "pytest_aiops"), name)


__all__ = [
    "SETTINGS_KEY",
    "AiopsWorker",
    "GitWorktree",
    "PortRange",
    "ProvisionedResources",
    "WorkerSession",
    "WorktreeFactory",
]


class _State:
    """Per-process state, kept in ``config.stash`` (a plain class: a dataclass would compile
    its methods at import, in every pytest run)."""

    def __init__(
        self, settings: Settings, registry: ProviderRegistry | None, session_id: str
    ) -> None:
        self.settings = settings
        #: The providers, registered on first use (or at configure when a setting needs them).
        self.registry = registry
        self.session_id = session_id
        self.worker_factory: Callable[[], AiopsWorker] | None = None
        self._worker: AiopsWorker | None = None
        self.controller: XdistController | None = None
        self.reporter: Reporter | None = None
        #: Registered at the first "address already in use" raise, to note its report.
        self.reports: PortHolderNotes | None = None
        self.release_errors: list[str] = []
        #: Why this process's ports could not be leased: said again, not retried, per test.
        self.pool_failure: str | None = None

    @property
    def worker(self) -> AiopsWorker | None:
        """This process's AiopsWorker, built on first access (``None`` in a controller)."""
        if self._worker is None and self.worker_factory is not None:
            self._worker = self.worker_factory()
        return self._worker

    @property
    def worker_built(self) -> AiopsWorker | None:
        """The worker if something already used it, without building one."""
        return self._worker


# Typed by annotation, not by subscription: ``StashKey[X]()`` builds a generic alias through
# typing's cache at import, in every pytest run (issue 23).
SETTINGS_KEY: pytest.StashKey[Settings] = pytest.StashKey()
_STATE_KEY: pytest.StashKey[_State] = pytest.StashKey()
_KERNEL_PORTS_KEY: pytest.StashKey[PortRange] = pytest.StashKey()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register the declarations plugin if pytest has not: its hooks declare the options, ini
    keys, marker and hook specifications (:mod:`._plugin.declarations`).

    Under its entry point's name, so pytest then skips that entry point; under
    ``aiops-declarations-of-aiops`` where ``-p no:aiops-declarations`` blocked the name
    (this plugin still needs its options). One hook here rather than a copy of each of its
    hooks: every hook implementation costs every pytest run about 0.2M instructions to
    register (issue 23).
    """
    if pluginmanager.is_registered(_declarations):
        return
    name = "aiops-declarations"
    if pluginmanager.is_blocked(name) or pluginmanager.get_plugin(name) is not None:
        name = "aiops-declarations-of-aiops"
    pluginmanager.register(_declarations, name)


class BuiltinProviders:
    """Registers ``git-worktree`` and ``port-range`` through the public hook."""

    @pytest.hookimpl
    def pytest_aiops_register_providers(self, register: ProviderRegistry) -> None:
        from ._builtins import lazy_builtin_providers

        # Imported on first provision: a run that never uses them does not load them.
        for provider in lazy_builtin_providers():
            register(provider)


#: The kinds BuiltinProviders registers: --aiops-resources naming only these needs no check.
_BUILTIN_KINDS = frozenset({"git-worktree", "port-range"})


def _register_providers(config: pytest.Config, settings: Settings) -> ProviderRegistry:
    """The built-in providers and those of ``pytest_aiops_register_providers`` hooks; a kind
    in --aiops-resources that none of them provides is a usage error."""
    from ._core.registry import ProviderRegistry

    if not config.pluginmanager.has_plugin("aiops-builtin-providers"):
        config.pluginmanager.register(BuiltinProviders(), "aiops-builtin-providers")
    registry = ProviderRegistry()
    config.hook.pytest_aiops_register_providers(register=registry, config=config)
    settings.check_kinds(registry.kinds)
    return registry


def _registry(config: pytest.Config, state: _State) -> ProviderRegistry:
    if state.registry is None:
        state.registry = _register_providers(config, state.settings)
    return state.registry


def project_session_id(root: str) -> str:
    """Session id of a project: the same rootdir leases the same ports run after run."""
    return f"pytest-aiops:{os.path.realpath(root)}"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    declare_marker(config)
    data = worker_input(config)
    sent = (data or {}).get("settings")
    # An xdist worker uses the controller's settings (another host sees none of its
    # environment); a controller resolves them here and sends them (_plugin/remote.py).
    settings = Settings.from_json(sent) if isinstance(sent, str) else Settings.from_config(config)
    config.stash[SETTINGS_KEY] = settings
    if data is None and xdist_worker_count(config):
        _send_settings(config, settings)
    # take_port() and the per-test port fixtures take from here (disabled too: the kernel
    # fallback, or the error --aiops-port-fallback=error asks for), for as long as this
    # config lives: its cleanup puts back the pool it replaced (an enclosing run's, if any),
    # as pytest's own tmpdir plugin undoes what it set up.
    outer = _current_ports.set_current_pool(lambda: _pool(config))

    def put_back() -> None:
        _current_ports.set_current_pool(outer)

    config.add_cleanup(put_back)
    if settings.disable:
        return
    from ._plugin.interrupt import install as install_sigterm_handler

    install_sigterm_handler(config)  # SIGTERM tears down as Ctrl-C does (xdist workers too)
    # The providers are registered when first needed: at once only to check a kind
    # --aiops-resources names beyond the built-ins (or for an xdist controller, below).
    registry = None
    if not _BUILTIN_KINDS.issuperset(settings.resources):
        registry = _register_providers(config, settings)
    integrations = settings.integrations(config)  # other plugins' fixtures on pool ports
    root = str(config.rootpath)
    state = _State(settings, registry, project_session_id(root))
    config.stash[_STATE_KEY] = state
    config.add_cleanup(lambda: _end_of_run(config, state))
    workers = 0 if data is not None else xdist_worker_count(config)
    local = _local_workers(config) if workers else 0
    settings.check_ports_fit(local)
    if workers:
        from ._entry import CONTROLLER, load_all

        load_all(CONTROLLER)  # past pytest's import hook, as the entry points load the plugin
        from ._plugin.controller import XdistController

        controller = XdistController(
            settings=settings,
            registry=_registry(config, state),
            worker_count=local,  # the parent range is for the workers on this host only
            session_id=state.session_id,
            workspace_root=root,
        )
        # No test is running yet, so pytest's per-test warning capture is not active: route
        # the lease's warnings (ephemeral range) to the warnings summary, under -W filters.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            controller.start()
        state.controller = controller
        config.pluginmanager.register(controller, "aiops-xdist-controller")
        _register_session_end(config, state)
        for warning in caught:
            message = warning.message
            if not isinstance(message, Warning):
                message = UserWarning(str(message))
            config.issue_config_time_warning(message, stacklevel=2)
        return
    workerinput = getattr(config, "workerinput", None) or {}
    worker_id = str(workerinput.get("workerid", "master"))
    xdist = worker_slice(data)
    remote = bool((data or {}).get("remote"))

    def extra_requests() -> list[Any]:
        results = config.hook.pytest_aiops_session_resources(config=config, worker_id=worker_id)
        return [request for result in results for request in (result or ())]

    def build_worker() -> AiopsWorker:
        from ._entry import WORKER, load_all

        load_all(WORKER)  # past pytest's import hook, as the entry points load the plugin
        from ._plugin.remote import pinned_base, remote_hint  # on first use, as the worker
        from ._plugin.worker import AiopsWorker

        worker = AiopsWorker(
            settings,
            registry=_registry(config, state),
            worker_id=worker_id,
            session_id=f"{state.session_id}/{worker_id}",
            workspace_root=root,
            xdist=xdist,
            extra_requests=extra_requests,
            snapshot_directory=None if remote else (data or {}).get("snapshot") or None,
            pinned=pinned_base(data),
            host=str((data or {}).get("host")) if remote else None,
            repo_hint=remote_hint(str((data or {}).get("host"))) if remote else None,
        )
        _register_session_end(config, state)
        return worker

    state.worker_factory = build_worker
    for integration in integrations:
        # Registered after every entry-point plugin, the served one included, so these
        # definitions of its fixtures are the ones tests get (conftest ones still win).
        module = import_module(f"{__package__}._plugin.{integration.dest}")
        config.pluginmanager.register(module, "aiops-" + integration.dest.replace("_", "-"))


def _register_session_end(config: pytest.Config, state: _State) -> None:
    """The session's end hooks, once this process holds something (a worker or the xdist
    controller): a run that never uses the plugin does not register them (issue 23)."""
    from ._plugin.session_end import SessionEnd

    config.pluginmanager.register(SessionEnd(state), "aiops-session-end")


def _local_workers(config: pytest.Config) -> int:
    """How many of xdist's workers start on this host (plain ``popen`` gateways)."""
    from ._plugin.remote import local_worker_count

    return local_worker_count(config.getoption("tx", None) or ())[0]


def _send_settings(config: pytest.Config, settings: Settings) -> None:
    """Register the controller's hook that sends every worker the settings (and, when a
    gateway may be on another host, the commit the base ref names here: one git call)."""
    from ._plugin.remote import SettingsSender, local_worker_count, resolve_base

    remote = local_worker_count(config.getoption("tx", None) or ())[1]
    base = None
    if remote and not settings.disable:
        base = resolve_base(settings.repo or str(config.rootpath), settings.base_ref)
    sender = SettingsSender(settings.to_json(), base_ref=settings.base_ref, base=base)
    config.pluginmanager.register(sender, "aiops-xdist-settings")


#: Fixtures that provision worktrees (and provisioned_session with --aiops-resources naming
#: git-worktree): a run collecting a test that uses one snapshots the working state when
#: collection ends, before any test can change the user's checkout.
_WORKTREE_FIXTURES = frozenset({"git_worktree", "aiops_worktree_factory"})


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    """Once every other implementation has run (a wrapper's code after ``yield``: the tests
    left after every plugin's deselection, ``-k``/``-m``/``--deselect`` or a sharding
    plugin's): refuse ``pytest.mark.aiops`` on a test function or class (``git_worktree``
    is one checkout per module and reads the module's marker, so the mark would be
    ignored), and snapshot the working state if a test to run takes a worktree.

    One hook for both, rather than a second in ``pytest_collection_finish`` (every hook
    implementation costs every pytest run about 0.2M instructions to register, issue 23).
    """
    yield
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    _snapshot_if_needed(config, state, items)
    misplaced: dict[str, Any] = {}  # nodeid -> the node carrying the mark
    # This runs once per collected test (issue 23): plain loops, and the classes between a
    # test and its module looked at once for all their tests.
    above: dict[int, Any] = {}
    for item in items:
        marked = None
        for mark in item.own_markers:
            if mark.name == MARKER:
                marked = item
                break
        if marked is None:
            parent = item.parent
            key = id(parent)
            if key in above:
                marked = above[key]
            else:
                marked = above[key] = _marked_above(parent)
        if marked is not None:
            misplaced[item.nodeid] = marked
    if misplaced:  # a plugin only for runs that have such a mark: no cost per test otherwise
        from ._entry import load

        markers = load("pytest_aiops._plugin.markers")
        refuse = markers.MisplacedMarkers(misplaced)
        config.pluginmanager.register(refuse, "aiops-misplaced-markers")


def _snapshot_if_needed(config: pytest.Config, state: _State, items: list[pytest.Item]) -> None:
    """Snapshot the user's working state now, before any test can change the checkout, if a
    test to run takes a worktree fixture (:data:`_WORKTREE_FIXTURES`)."""
    if state.worker_factory is None or not state.settings.working_state:
        return
    if config.getoption("collectonly", False):
        return  # nothing will run
    fixtures = _WORKTREE_FIXTURES
    if "git-worktree" in state.settings.resources:
        fixtures = fixtures | {"provisioned_session"}
    for item in items:  # a plain loop: once per collected test (issue 23)
        if not fixtures.isdisjoint(getattr(item, "fixturenames", ())):
            worker = state.worker
            if worker is not None:
                worker.snapshot_working_state()
            return


def _marked_above(node: Any) -> Any:
    """The first node at or above ``node`` carrying ``pytest.mark.aiops``, up to its file
    (whose marks are the module's own, where the marker belongs); ``None`` if none does."""
    file = pytest.File
    while node is not None and not isinstance(node, file):
        for mark in node.own_markers:
            if mark.name == MARKER:
                return node
        node = node.parent
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return []
    from ._ports.defaults import default_lock_directory

    settings = state.settings
    lock_dir = settings.lock_dir or default_lock_directory()
    low, high = settings.port_range
    controller = state.controller
    if controller is not None and controller.parent_range is not None:
        start, end = controller.parent_range
        ports = (
            f"ports {start}-{end} for {controller.worker_count} workers x "
            f"{settings.ports_per_worker}"
        )
    else:
        ports = (
            f"{settings.ports_per_worker} ports per worker from {low}-{high}, leased on first use"
        )
    from ._worktrees.roots import find_repository

    repo = find_repository(settings.repo or str(config.rootpath))
    worktrees = f"worktrees of {repo} at {settings.base_ref}" if repo else "no git repository"
    if repo and settings.working_state and settings.base_ref == "HEAD":
        worktrees += " with the working state"
    sender = config.pluginmanager.get_plugin("aiops-xdist-settings")
    if controller is not None and sender is not None and sender.base is not None:
        from ._plugin.remote import local_worker_count

        others = local_worker_count(config.getoption("tx", None) or ())[1]
        commit, error = sender.base
        at = f"commit {commit[:12]} alone" if commit else f"no commit ({error})"
        ports += f"; {others} worker(s) through other gateways lease on their own host"
        if repo:
            worktrees += f" (on other hosts: {at})"
    return [
        f"aiops: {ports}; lock dir {lock_dir}; {worktrees}",
        f"aiops: reproduce with {settings.as_cli()} {cli('lock_dir')}={lock_dir}",
    ]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Release this process's resources once the process holds any (a worker or the xdist
    controller; the work is in :mod:`._plugin.session_end`).

    Registered with the plugin, at start-up, as ``trylast``: a conftest's or a later
    plugin's ``trylast`` session end is called after it (pluggy calls the ``trylast``
    implementations registered later after those registered earlier), so it sees the
    resources released and the exit status a failed release set."""
    state = session.config.stash.get(_STATE_KEY, None)
    if state is None or (state.worker_built is None and state.controller is None):
        return
    from ._plugin.session_end import finish

    finish(session, state)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """After each phase of every test: a phase that raised "address already in use" gets
    its note once its report is final (:class:`~._plugin.report.PortHolderNotes`).

    A plain hook that returns nothing (pytest's own implementation makes the report), so a
    passing test's three calls return at the first line; a wrapper here cost a run of 2,000
    tests taking a port 5% more instructions (issue 23). Nothing else depends on it: a
    plugin whose own ``tryfirst`` implementation returns the report first only costs the
    note. A test's ports come back through the reporter's ``pytest_runtest_logfinish``,
    and ``--aiops-keep=failed`` sees each final report through
    :class:`~._plugin.report.FailedModules`.
    """
    if call.excinfo is None:
        return
    state = item.config.stash.get(_STATE_KEY, None)
    if state is not None:
        _raised(item, call.when, call.excinfo.value, state)


def _raised(item: pytest.Item, when: str, error: BaseException, state: _State) -> None:
    """A phase of ``item`` raised ``error``: if that is "address already in use" (on any
    port, fixtures used or not), the report gets a note of who holds the port. The note
    needs the final report (a raise may still end as a skip or an xfail), so
    :class:`~._plugin.report.PortHolderNotes` is registered, at the first such failure of
    the run, to add it when
    the report is logged."""
    from ._plugin.binds import is_address_in_use

    if not is_address_in_use(error):
        return
    if state.reports is None:
        from ._plugin.report import PortHolderNotes

        state.reports = PortHolderNotes(state)
        item.config.pluginmanager.register(state.reports, "aiops-reports")
    state.reports.pending[(item.nodeid, when)] = (item, error)


def _end_of_run(config: pytest.Config, state: _State) -> None:
    """At unconfigure (a cleanup of the config, not a hook: no hook to register in every
    run, issue 23): close what is still open, then reclaim what dead runs left."""
    worker = state.worker_built
    if worker is not None:
        worker.close()  # no-op after sessionfinish; covers runs that stopped earlier
    if state.controller is not None:
        state.controller.stop()
    if worker_input(config) is None:  # the controller (or a plain run), not each worker
        from ._worktrees.roots import reclaim_dead_runs

        # What runs killed by os._exit, SIGKILL or a crashed worker left: ports-only runs too.
        reclaim_dead_runs(state.settings.repo or str(config.rootpath), state.settings.worktree_root)


def _activate_reporter(config: pytest.Config, worker: AiopsWorker) -> Reporter:
    state = config.stash[_STATE_KEY]
    if state.reporter is None:
        from ._plugin.report import Reporter

        # pytest registers its session as the plugin "session": the reporter reads the
        # running test from it (a hook to fetch it would cost every run, issue 23).
        state.reporter = reporter = Reporter(worker, config.pluginmanager.get_plugin("session"))
        config.pluginmanager.register(reporter, "aiops-reporter")  # its logfinish hook
        if state.settings.keep == "failed":  # which modules fail, as each report is made
            from ._plugin.report import FailedModules

            config.pluginmanager.register(FailedModules(reporter), "aiops-failed-modules")
    return state.reporter


def _pool(config: pytest.Config) -> PortRange:
    """The port pool of this process, for the port fixtures and ``take_port()``.

    With the plugin disabled, a :class:`KernelPorts` stand-in (kernel-chosen ports, one
    warning) unless --aiops-port-fallback=error; a provisioning failure is one line.
    """
    state = config.stash.get(_STATE_KEY, None)
    if state is None or state.worker is None:
        settings = config.stash.get(SETTINGS_KEY, None)
        if settings is None or settings.port_fallback == "error":
            _worker(config)  # fails, saying the plugin is disabled
        stand_in = config.stash.get(_KERNEL_PORTS_KEY, None)
        if stand_in is None:
            from ._ports.pool import KernelPorts

            source = settings.source("disable") if settings else "default"
            stand_in = KernelPorts(
                f"pytest-aiops is disabled ({source})", fallback_setting=cli("port_fallback")
            )
            config.stash[_KERNEL_PORTS_KEY] = stand_in
        return stand_in
    if state.pool_failure is not None:  # one lease attempt per process, as a session fixture
        pytest.fail(state.pool_failure, pytrace=False)
    worker = state.worker
    from ._entry import PORTS, load_all

    load_all(PORTS)  # the port-range provider, loaded as the worker's modules are
    reporter = _activate_reporter(config, worker)
    from ._errors import AiopsError

    try:
        pool = worker.port_range()
    except AiopsError as error:
        from ._plugin.report import provisioning_failure

        state.pool_failure = provisioning_failure("port_range", error)
    if state.pool_failure is not None:
        pytest.fail(state.pool_failure, pytrace=False)
    reporter.wire(pool)  # who takes a port: looked up when one is taken
    # Made and wired once: later hand-outs go straight to it.
    _current_ports.set_current_pool(lambda: pool)
    return pool


# -- fixtures ---------------------------------------------------------------------------------


def _worker(config: pytest.Config) -> AiopsWorker:
    state = config.stash.get(_STATE_KEY, None)
    if state is None or state.worker is None:
        settings = config.stash.get(SETTINGS_KEY, None)
        source = settings.source("disable") if settings else "default"
        disable = OPTIONS_BY_DEST["disable"]
        pytest.fail(
            f"pytest-aiops is disabled ({source}), so its fixtures (port_range, git_worktree, "
            f"provisioned_session, aiops_*) are unavailable; drop {disable.cli} / "
            f"{disable.ini} / {disable.env} to use them",
            pytrace=False,
        )
    return state.worker


# Module-level functions, as pytest's own tmp_path_factory and xdist's worker_id: pytest 9.2
# deprecates fixtures defined as instance methods. The session-scoped ones find the config
# through ``pytestconfig`` (resolved once per session); ``aiops_port`` and ``aiops_udp_port``,
# the ones requested per test, depend on no fixture at all (the pool comes from
# ``current_pool()``, wired at configure): a test taking a port resolves nothing more than a
# test binding port 0 would (pytest builds a request per dependency per test: bench/plugin.py).


@pytest.fixture(scope="session")
def aiops_worker(pytestconfig: pytest.Config) -> AiopsWorker:
    """This process's pytest-aiops resources (one per xdist worker): the factory behind
    the other fixtures. ``.port_range()``, ``.worktrees`` (a WorktreeFactory),
    ``.session(path)``, ``.worker_id``, ``.child_index``/``.child_count`` (its slice of
    the xdist parent range). Nothing is leased until one of them is used."""
    return _worker(pytestconfig)


@pytest.fixture(scope="session")
def port_range(pytestconfig: pytest.Config) -> PortRange:
    """This worker's block of TCP ports no other live process leases (session scope).

    ``start``, ``end`` (inclusive), ``primary``, ``ports``; ``len()``, iteration, ``in``;
    ``next_port()`` hands out a port free right now (thread-safe), held by the fixture or
    test that took it and back in the pool when that one ends; the pool grows by a block
    when none is clean, up to --aiops-max-ports-per-worker. Under xdist each worker gets its
    own slice of the run's range; leased on first use, released at the end of the
    session."""
    return _pool(pytestconfig)


@pytest.fixture
def aiops_port() -> int:
    """One TCP port for this test alone, back in the worker's pool when the test ends.

    Free for TCP on IPv4 and (where the host has it) IPv6, TIME_WAIT included. For a
    fixture of a wider scope use ``aiops_port_factory`` (or ``port_range.next_port()``);
    from any code, ``pytest_aiops.take_port()``."""
    # Held by the running test (TEST), whose ports the reporter gives back when it ends: no
    # generator, no finalizer per test (issue 23).
    return _current_pool().next_port(holder=TEST)


@pytest.fixture
def aiops_udp_port() -> int:
    """One UDP port for this test alone (free for UDP on IPv4 and IPv6), back after it."""
    return _current_pool().next_port(protocol="udp", holder=TEST)


def _current_pool() -> PortRange:
    """The pool ``take_port()`` takes from: this config's (``_ports/current.py``, wired at
    configure), without the lock ``current_pool()`` takes to make a stand-in."""
    factory = _current_ports.factory
    if factory is None:  # no config of this plugin lives in this process: a stand-in
        from ._ports.pool import current_pool

        return current_pool()
    return factory()


@pytest.fixture(scope="session")
def aiops_port_factory(port_range: PortRange) -> PortFactory:
    """``aiops_port_factory()`` (or ``(protocol="udp")``): a port for a fixture of any scope.

    The port belongs to whichever fixture or test is running when it is called, and goes
    back to the pool when that one ends: a module-scoped server fixture keeps its port for
    the module, a test's for the test."""

    def take(protocol: str = "tcp") -> int:
        return port_range.next_port(protocol=protocol)

    return take


@pytest.fixture(scope="session")
def aiops_worktree_factory(pytestconfig: pytest.Config) -> WorktreeFactory:
    """Makes more isolated worktrees (as tmp_path_factory is to tmp_path), session scope.

    ``with aiops_worktree_factory.worktree(base_ref="v1") as wt:`` gives a
    function-scoped one; ``provision()``/``release()`` for other lifetimes. Worktrees
    still out at the end of the session are released (or kept, per --aiops-keep)."""
    return _worker(pytestconfig).worktrees


@pytest.fixture(scope="module")
def git_worktree(request: pytest.FixtureRequest) -> Iterator[GitWorktree]:
    """An isolated worktree of the repository under test, one per test module.

    ``path`` (a pathlib.Path), ``base_ref``, ``repo_root``, ``working_directory``,
    ``working_state``, ``env()``; edit freely, the repository's own checkout is never
    touched. Checked out at --aiops-base-ref (default HEAD) from the repository holding
    pytest's rootdir (or --aiops-repo), with your uncommitted changes and untracked files
    on top of HEAD unless --aiops-working-state=false (one snapshot per run); a module may
    choose with ``pytestmark = pytest.mark.aiops(base_ref=..., target_path=...,
    isolation=..., working_state=...)``. Provisioned on first use (a run that never asks
    for it runs no git command), released at the end of the module unless --aiops-keep
    says to keep it."""
    config = request.config
    worker = _worker(config)
    reporter = _activate_reporter(config, worker)
    factory = worker.worktrees
    failure: str | None = None
    from ._errors import AiopsError
    from ._plugin.markers import marker_options

    try:
        options = marker_options(request.node.get_closest_marker(MARKER))
        worktree = factory.provision(**options)
    except AiopsError as error:
        from ._plugin.report import provisioning_failure

        failure = provisioning_failure("git_worktree", error)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    yield worktree
    factory.release(worktree, failed=request.node.nodeid in reporter.failed_modules)


@pytest.fixture(scope="session")
def provisioned_session(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> WorkerSession:
    """This worker's ProvisionedResources: its port range plus the kinds in
    --aiops-resources and those added by pytest_aiops_session_resources hooks (session
    scope).

    Its discovery file is written (``.discovery_file``); ``injected_env()`` gives the
    environment for subprocesses, ``AGENT_DISCOVERY_FILE`` included; ``.runtime`` is the
    RuntimeInjection (working directory, env, file). Released at the end of the session."""
    worker = _worker(pytestconfig)
    if "port-range" in worker.resource_kinds:
        _activate_reporter(pytestconfig, worker)
    directory = tmp_path_factory.getbasetemp() / f"aiops-{worker.worker_id}"
    from ._errors import AiopsError

    try:
        return worker.session(Path(directory) / "resources.json")
    except AiopsError as error:
        from ._plugin.report import provisioning_failure

        failure = provisioning_failure("provisioned_session", error)
    pytest.fail(failure, pytrace=False)


def _scanned() -> list[str]:
    """The names pluggy and pytest look at when this module is registered: its hooks, its
    fixtures and ``__all__``. Both scan every name ``dir()`` gives, pytest 9 at about
    30,000 instructions a name (``FixtureManager._check_for_wrapped_fixture``): for the
    module's 80 names, 2 million instructions in every pytest run (issue 23)."""
    return sorted(
        name
        for name, value in globals().items()
        if name.startswith("pytest_")
        or name in __all__
        or type(value).__name__ == "FixtureFunctionDefinition"  # pytest >= 8.4
        or (isinstance(value, FunctionType) and hasattr(value, "_pytestfixturefunction"))
    )


_SCANNED = _scanned()


def __dir__() -> list[str]:
    """What ``dir()`` shows, and so what pluggy and pytest scan: :func:`_scanned`."""
    return list(_SCANNED)
