"""A worker's ports as a pool: handed out, given back, handed out again, grown when needed.

:class:`PortRange` holds the port leases of one process (its first block, then any blocks it
grew by) and hands their ports out least-recently-used first. A port goes out only when a
server could bind it on every address family the host has, with or without
``SO_REUSEADDR`` (so not while the last test's server left it in TIME_WAIT); it comes back
when its holder (a test, a fixture, or an explicit :meth:`PortRange.give_back`) is done.
When no port is clean, the pool grows by leasing one more block, up to ``max_ports``; past
that, or where leasing is unavailable, it can fall back to a port the kernel picks (bind to
port 0) with one :class:`~pytest_aiops.AiopsWarning`, so a suite that adopted the plugin is
at least as robust as one that binds port 0 itself.

:func:`take_port` / :func:`give_back_port` reach the current process's pool from any code
(helper classes, ``unittest`` tests). Nothing here imports pytest.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, Protocol

from .._core.ports import PortAllocation
from .._errors import AiopsWarning, InvalidArgumentError, OptionError, PortsExhaustedError
from . import current
from .current import TEST
from .defaults import PORT_FALLBACK_ENV, PORT_FALLBACKS
from .probe import PROTOCOLS, TCP, ephemeral_range, kernel_port, port_is_free

#: Whoever took a port when no test or fixture was running: given back at the pool's close.
SESSION = "<session>"
#: How long a port found busy is skipped before it is probed again (TIME_WAIT lasts ~60 s).
RECHECK_SECONDS = 0.5
#: How many kernel-picked ports a fallback tries before it settles for one that is busy.
KERNEL_TRIES = 32
#: Grows the pool by one block: ``(start, end, busy ports)``; raises PortsExhaustedError.
Grow = Callable[[], tuple[int, int, Sequence[int]]]
#: Who takes a port now: called with the holder the caller named (or ``None``), it returns
#: ``(holder, test)``: the holder the port goes to (the one named, else the fixture being set
#: up, else the running test, else :data:`SESSION`) and the running test, as its id or as
#: an object with a ``nodeid`` (a pytest item: its id is built only when asked for), or
#: ``None``.
Attribution = Callable[[object], tuple[object, object]]


def _test_id(test: object) -> str | None:
    """The id of a test as an attribution gave it: a string, or an item's ``nodeid``."""
    if test is None or isinstance(test, str):
        return test
    return str(getattr(test, "nodeid", test))


def _check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise OptionError(
            "protocol", f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}"
        )
    return protocol


class PortRange:
    """A worker's leased ports: a pool over its first block (``start`` to ``end``) and more.

    ``start``, ``end``, ``primary``, :attr:`env` and :attr:`ports` describe the first lease
    only (what ``AGENT_PORT_RANGE_*`` say); ``len``, iteration and ``in`` cover every port
    of every block the pool has leased (:attr:`blocks`), grown blocks included, so a port
    handed out is always in the range but may lie outside ``start`` to ``end``. Every port
    of a block bound when it was leased, except those the lease reported busy (only in
    TIME_WAIT, when no clean block was left): those are handed out last, once free.
    :meth:`next_port` hands out a free port (thread-safe), which is
    the caller's until :meth:`give_back` (the plugin gives a test's ports back when the test
    or fixture that took them ends).

    ``max_ports_setting`` and ``fallback_setting`` name, in the messages saying what to
    change, the settings that gave ``max_ports`` and ``fallback``: by default these
    parameters' own names; the plugin passes its options.
    """

    leased = True

    def __init__(
        self,
        start: int,
        end: int,
        primary: int | None = None,
        *,
        owner: str = "master",
        session_id: str = "",
        lock_directory: str | None = None,
        probe: bool = True,
        busy: Sequence[int] = (),
        grow: Grow | None = None,
        max_ports: int | None = None,
        fallback: str = "error",
        max_ports_setting: str = "max_ports",
        fallback_setting: str = "fallback",
    ) -> None:
        if not 0 < start <= end <= 65535:
            raise InvalidArgumentError(f"not a port range: {start}-{end}")
        primary = start if primary is None else primary
        if not start <= primary <= end:
            raise InvalidArgumentError(f"primary port {primary} is outside {start}-{end}")
        if fallback not in PORT_FALLBACKS:
            raise OptionError(
                "fallback", f"fallback must be one of {PORT_FALLBACKS}, not {fallback!r}"
            )
        self.start = start
        self.end = end
        self.primary = primary
        self.owner = owner
        self.session_id = session_id
        self.lock_directory = lock_directory
        self.probe = probe
        self.max_ports = max(max_ports or 0, end - start + 1)
        self.fallback = fallback
        self.max_ports_setting = max_ports_setting
        self.fallback_setting = fallback_setting
        self._grow = grow
        self._lock = threading.RLock()
        self._blocks: list[tuple[int, int]] = []
        # Least recently used first; a port is here, or in _out, never both.
        self._free: OrderedDict[int, None] = OrderedDict()
        self._out: dict[int, object] = {}
        self._given_to: dict[int, object] = {}  # the test, as the attribution gave it
        self._retry_at: dict[tuple[int, str], float] = {}
        self.busy_at_lease: list[int] = []
        self.grow_error: str | None = None
        self.kernel_ports = 0  # handed out from the kernel after the pool could not serve
        self._warned = False
        #: The running test's id, for a pool used without the plugin (the core API, unit
        #: tests): ports taken without a holder are its, and :meth:`ports_of` finds them.
        self.current_user: str | None = None
        #: Set by the plugin (its reporter, the one place that knows which test and fixture
        #: run): asked, when a port is taken, who holds it and which test runs. Replaces
        #: :attr:`current_user` then.
        self.attribution: Attribution | None = None
        # Hand out the primary port first, then upwards, wrapping round to start.
        self._add_block(start, end, busy, first=primary)

    # -- the container ------------------------------------------------------------------

    @property
    def ports(self) -> range:
        """The first lease's ports, in order (a ``range``, so a ``Sequence[int]``)."""
        return range(self.start, self.end + 1)

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """Every block leased, first lease first: ``(start, end)`` inclusive."""
        with self._lock:
            return list(self._blocks)

    def __len__(self) -> int:
        return sum(end - start + 1 for start, end in self.blocks)

    def __iter__(self) -> Iterator[int]:
        return iter([port for start, end in self.blocks for port in range(start, end + 1)])

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and any(s <= port <= e for s, e in self.blocks)

    def __repr__(self) -> str:
        return f"<PortRange {self.start}-{self.end} primary={self.primary} owner={self.owner!r}>"

    @property
    def env(self) -> dict[str, str]:
        """The ``AGENT_PORT_*`` variables describing the first lease, for subprocesses."""
        return {
            "AGENT_PORT_RANGE_START": str(self.start),
            "AGENT_PORT_RANGE_END": str(self.end),
            "AGENT_PORT_PRIMARY": str(self.primary),
        }

    @property
    def handed_out(self) -> Mapping[int, str | None]:
        """Ports out now -> id of the test (if known) they were handed to."""
        with self._lock:
            return {port: _test_id(self._given_to.get(port)) for port in self._out}

    @property
    def remaining(self) -> int:
        """How many leased ports are not out now (some may still be in TIME_WAIT)."""
        with self._lock:
            return len(self._free)

    # -- handing out and taking back -----------------------------------------------------

    def _add_block(self, start: int, end: int, busy: Sequence[int], first: int | None) -> None:
        first = start if first is None else first
        order = [*range(first, end + 1), *range(start, first)]
        waiting = [port for port in order if port in set(busy)]
        fresh = [port for port in order if port not in set(busy)]
        # Fresh ports before the ones already handed out (LRU), busy ones last.
        ahead = OrderedDict((port, None) for port in fresh)
        ahead.update(self._free)
        ahead.update((port, None) for port in waiting)
        self._free = ahead
        self._blocks.append((start, end))
        self.busy_at_lease.extend(waiting)

    def _attribute(self, holder: object) -> tuple[object, object]:
        if self.attribution is not None:
            return self.attribution(holder)
        user = self.current_user
        if holder is None or holder is TEST:
            holder = user or SESSION
        return holder, user

    def holder(self) -> object:
        """Who a port taken now belongs to: the running fixture, else the test, else the
        session (as :attr:`attribution` says; without one, the test :attr:`current_user`
        names)."""
        return self._attribute(None)[0]

    def next_port(self, *, protocol: str = TCP, holder: object = None) -> int:
        """A leased port that nobody holds and a server could bind now (``protocol`` ``tcp``
        or ``udp``, every address family the host has).

        Held by ``holder`` (default: :meth:`holder`) until given back. When no leased port
        is clean the pool grows by a block, up to :attr:`max_ports`; past that it falls
        back to a kernel-chosen port (``fallback="kernel"``, with one warning) or raises
        :class:`pytest_aiops.PortsExhaustedError` saying how to get more.
        """
        if protocol is not TCP:
            _check_protocol(protocol)
        with self._lock:
            attribution = self.attribution  # the plugin's: asked directly, once per port
            attributed_to, user = (
                attribution(holder) if attribution is not None else self._attribute(holder)
            )
            while True:
                port = self._take_clean(protocol)
                if port is not None:
                    self._out[port] = attributed_to
                    self._given_to[port] = user
                    return port
                if not self._grow_once():
                    break
            return self._exhausted(protocol)

    def _take_clean(self, protocol: str) -> int | None:
        now = time.monotonic()
        retry_at = self._retry_at
        clean: int | None = None
        busy: list[int] = []
        try:
            # Walk the pool in place (no copy: the front port is nearly always clean, so a
            # hand-out costs one probe however large the pool) and reorder after the walk.
            for port in self._free:
                if retry_at and retry_at.get((port, protocol), 0.0) > now:
                    continue  # found busy a moment ago: not probed again yet
                if not self.probe or port_is_free(port, protocol=protocol):
                    clean = port
                    break
                busy.append(port)
        finally:
            # Busy (TIME_WAIT, or someone listens there): to the back, looked at last, and
            # not probed again for a moment, so a pool full of TIME_WAIT stays cheap to scan.
            for port in busy:
                self._free.move_to_end(port)
                retry_at[(port, protocol)] = now + RECHECK_SECONDS
        if clean is not None:
            del self._free[clean]
            if retry_at:
                retry_at.pop((clean, protocol), None)
        return clean

    def _grow_once(self) -> bool:
        if self._grow is None or self.grow_error is not None:
            return False
        size = self.end - self.start + 1
        if len(self) + size > self.max_ports:
            self.grow_error = f"the pool reached its bound of {self.max_ports} ports"
            return False
        try:
            start, end, busy = self._grow()
        except PortsExhaustedError as error:
            self.grow_error = f"no block could be leased to grow the pool ({error})"
            return False
        self._add_block(start, end, busy, first=None)
        return True

    def _exhausted(self, protocol: str) -> int:
        out, free = len(self._out), len(self._free)
        reason = self.grow_error or "the pool cannot grow"
        message = (
            f"port_range {self.start}-{self.end} of worker {self.owner} has no {protocol} port "
            f"to hand out: {out} of "
            f"its {len(self)} ports are out, {free} are in use by other sockets (TIME_WAIT "
            f"included), and {reason}"
        )
        raise_bound = f"raise {self.max_ports_setting}"
        if self.fallback == "error":
            raise PortsExhaustedError(f"{message}; {raise_bound} (now {self.max_ports})")
        return self._from_kernel(
            protocol,
            f"{message}: handing out ports the kernel picks instead (bind to port 0), "
            "which no other pytest-aiops run is kept away from; "
            f"{raise_bound}, or {self.fallback_hint}",
        )

    @property
    def fallback_hint(self) -> str:
        """How to fail rather than hand out kernel-chosen ports."""
        return f"set {self.fallback_setting}=error to fail instead"

    def _from_kernel(self, protocol: str, warning: str) -> int:
        """A port the kernel picks (bind to port 0), counted in :attr:`kernel_ports`; the
        first one warns ``warning``, pointing at the user's code (:func:`_user_stacklevel`)."""
        with self._lock:
            self.kernel_ports += 1
            first, self._warned = not self._warned, True
        if first:
            warnings.warn(warning, AiopsWarning, stacklevel=_user_stacklevel())
        return self._probed_kernel_port(protocol)

    def _probed_kernel_port(self, protocol: str) -> int:
        """A kernel-picked port probed as pool ports are: the kernel picks one free for a
        loopback IPv4 bind, which may still be bound on another address or family, or be a
        port this pool leased and handed out (with bad luck, again and again): tried anew."""
        port = kernel_port(protocol)
        for _ in range(KERNEL_TRIES):
            if port not in self and port_is_free(port, protocol=protocol):
                break
            port = kernel_port(protocol)
        return port

    def next_ports(self, count: int, *, protocol: str = TCP, holder: object = None) -> list[int]:
        """``count`` ports from :meth:`next_port`, all or none (given back on error)."""
        taken: list[int] = []
        try:
            for _ in range(count):
                taken.append(self.next_port(protocol=protocol, holder=holder))
        except BaseException:
            for port in taken:
                self.give_back(port)
            raise
        return taken

    def give_back(self, port: int, *, holder: object = None) -> bool:
        """Return ``port`` to the pool (if out, and held by ``holder`` when given)."""
        with self._lock:
            if port not in self._out or (holder is not None and self._out[port] is not holder):
                return False
            del self._out[port]
            self._free[port] = None  # most recently used: handed out last
            return True

    def give_back_all(self, holder: object) -> list[int]:
        """Return every port ``holder`` holds; the ports, in the order they went out."""
        if not self._out:  # nothing out (the common case at a test's end): no lock, no walk
            return []
        with self._lock:
            out, free = self._out, self._free
            ports = [port for port, who in out.items() if who is holder or who == holder]
            for port in ports:  # give_back() of each, without taking the lock again
                del out[port]
                free[port] = None
            return ports

    def ports_of(self, user: str) -> list[int]:
        """Ports handed out while ``user`` (a test id) was running (and not since)."""
        with self._lock:
            return [port for port, who in self._given_to.items() if _test_id(who) == user]

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for the end-of-run report."""
        with self._lock:
            return {
                "blocks": [list(block) for block in self._blocks],
                "busy": sorted(self.busy_at_lease),
                "maxPorts": self.max_ports,
                "kernelPorts": self.kernel_ports,
                "growError": self.grow_error,
            }

    @classmethod
    def from_allocation(
        cls,
        allocation: PortAllocation | Mapping[str, Any],
        *,
        owner: str,
        session_id: str,
        **pool: Any,
    ) -> PortRange:
        """Build from a ``port-range`` lease's allocation, typed or as its JSON (a lease's
        ``hard``); the ports busy at lease time go last."""
        if not isinstance(allocation, PortAllocation):
            allocation = PortAllocation.from_json(allocation)
        return cls(
            allocation.start_port,
            allocation.end_port,
            allocation.primary_port,
            owner=owner,
            session_id=session_id,
            lock_directory=allocation.lock_directory,
            busy=allocation.busy_ports,
            **pool,
        )


class KernelPorts(PortRange):
    """Stand-in pool where leasing is unavailable: every port is one the kernel picks.

    ``start``/``end`` are the OS ephemeral range the kernel picks from; nothing is leased,
    so ``in`` is always false and no other run is kept away from these ports.
    """

    leased = False

    def __init__(
        self, reason: str, *, owner: str = "master", fallback_setting: str = "fallback"
    ) -> None:
        low, high = ephemeral_range()
        super().__init__(
            low, low, owner=owner, probe=False, fallback="kernel", fallback_setting=fallback_setting
        )
        self.start, self.end, self.primary = low, high, low
        self._blocks.clear()
        self._free.clear()
        self.busy_at_lease.clear()
        self.grow_error = reason

    def __contains__(self, port: object) -> bool:
        return False

    def next_port(self, *, protocol: str = TCP, holder: object = None) -> int:
        """A port the kernel picks; the first one warns that nothing is leased."""
        return self._from_kernel(
            _check_protocol(protocol),
            f"{self.grow_error}: ports come from the kernel (bind to port 0) instead, "
            "so nothing keeps other runs off them and they differ run after run; "
            f"{self.fallback_hint}",
        )


class PortFactory(Protocol):
    """The type of the ``aiops_port_factory`` fixture, for annotating tests under mypy.

    ``aiops_port_factory()`` is a TCP port, ``aiops_port_factory(protocol="udp")`` a UDP
    one, each held by the fixture or test that called it::

        def test_server(aiops_port_factory: PortFactory) -> None:
            port: int = aiops_port_factory()
    """

    def __call__(self, protocol: str = TCP) -> int: ...


def hold_port(pool: PortRange, protocol: str = TCP) -> Iterator[int]:
    """A port held while the generator is suspended, then given back: a fixture's body."""
    token = object()
    port = pool.next_port(protocol=protocol, holder=token)
    yield port
    pool.give_back(port, holder=token)


# -- from any code in a test process ----------------------------------------------------------

#: Where the plugin wires a run's pool (kept in :mod:`.current`, importable without this one).
set_current_pool = current.set_current_pool


def current_pool() -> PortRange:
    """This process's pool: the pytest-aiops worker's, else a :class:`KernelPorts`."""
    with current.lock:
        factory = current.factory
        if factory is None:
            stand_in = _outside_pytest()
            current.factory = factory = lambda: stand_in  # one stand-in per process
    return factory()


def _outside_pytest() -> KernelPorts:
    """The stand-in pool of a process no pytest-aiops run configured: kernel-chosen ports
    with one warning, or, with ``PYTEST_AIOPS_PORT_FALLBACK=error`` (the one setting that
    reaches here), a one-line error; the pytest options do not exist here, so it names the
    variable."""
    reason = "no pytest-aiops worker runs in this process"
    value = os.environ.get(PORT_FALLBACK_ENV, "").strip() or "kernel"
    if value not in PORT_FALLBACKS:
        raise OptionError(
            "port_fallback",
            f"{PORT_FALLBACK_ENV} must be one of {', '.join(PORT_FALLBACKS)}, not {value!r}; "
            f"set it to one of those or unset it",
        )
    if value == "error":
        raise PortsExhaustedError(
            f"{reason} and {PORT_FALLBACK_ENV}=error asks to fail rather than hand out "
            "kernel-chosen ports; take ports inside a pytest run with pytest-aiops, or unset "
            f"{PORT_FALLBACK_ENV}"
        )
    return KernelPorts(reason, owner="none", fallback_setting=PORT_FALLBACK_ENV)


#: Files whose frames a warning skips to reach the user's code: this package's, and the
#: fixture machinery's (pytest, pluggy) that calls a port fixture.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function point at
    the first frame outside pytest-aiops (a test, a helper calling :func:`take_port` or
    :meth:`PortRange.next_port`). When that frame is pytest's own (a port fixture was being
    set up), the fixture is the nearest code a user can read, and the warning points there."""
    frame: FrameType | None = sys._getframe(2)  # the warning caller's caller: stacklevel 2
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    if frame is not None and os.sep + "_pytest" + os.sep in frame.f_code.co_filename:
        level -= 1
    return level


def take_port(*, protocol: str = TCP) -> int:
    """A port from the current test process's pool (the xdist worker's, under xdist).

    Held by the running fixture or test and given back when it ends (or earlier with
    :func:`give_back_port`). Usable from any code: helper classes, ``unittest`` tests,
    fixtures of any scope. Outside a pytest-aiops run, a kernel-chosen port with one warning
    (or, with ``PYTEST_AIOPS_PORT_FALLBACK=error``, a :class:`~pytest_aiops.PortsExhaustedError`).
    Inside one where no port can be leased and ``--aiops-port-fallback=error`` is set, it
    fails the running test (pytest's ``Failed``) with the one-line reason, as the port
    fixtures do.
    """
    return current_pool().next_port(protocol=protocol)


def give_back_port(port: int) -> bool:
    """Give ``port`` back to the current process's pool early; False if it was not out."""
    return current_pool().give_back(port)
