"""The plugin's settings: every option read once, validated, with CLI > env > ini > default.

Each setting is one row of :data:`OPTIONS` (parser, default, help), and has one name in four
places, made from the row: ``--aiops-x`` on the command line, ``PYTEST_AIOPS_X`` in the
environment, ``aiops_x`` in the ini file, and a default. :meth:`Settings.from_config`
reads them in that order of precedence and stores a frozen :class:`Settings` in
``config.stash``; a bad value is one :class:`pytest.UsageError` line naming the option, where
the value came from, the value and what is allowed (pytest-asyncio's ``asyncio_mode`` message
is the model).

This module imports nothing heavy, and pytest only where a pytest object is read or raised,
so the worker objects built from :class:`Settings` stay usable without pytest: a run that
never uses the fixtures pays only for this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._ports.defaults import (
    DEFAULT_LOCK_DIRECTORY_TEXT,
    DEFAULT_MAX_PORTS_PER_WORKER,
    DEFAULT_PORT_FALLBACK,
    DEFAULT_PORT_RANGE,
    DEFAULT_PORTS_PER_WORKER,
    PORT_FALLBACKS,
)
from .._worktrees.defaults import (
    DEFAULT_BASE_REF,
    DEFAULT_ISOLATION,
    DEFAULT_POOL_SIZE,
    ISOLATIONS,
)

if TYPE_CHECKING:
    import pytest

    from .._core.ports import PortSpec
    from .._core.types import ResourceRequest


KEEP_POLICIES = ("none", "failed", "all")
DEFAULT_RESOURCES = ("port-range",)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

#: How a setting is given on the command line: ``--aiops-x VALUE``; ``--aiops-x`` alone
#: (a ``store_true`` flag, a ``bool`` ini key); or both (``--aiops-x`` means true,
#: ``--aiops-x=false`` false).
VALUE, FLAG, SWITCH = "value", "flag", "switch"


class _Invalid(Exception):
    def __init__(self, expected: str, reason: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.reason = reason


def _parse_bool(value: str, base: str | None) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Invalid("one of " + ", ".join(_TRUE + _FALSE))


def _parse_positive_int(value: str, base: str | None) -> int:
    text = value.strip()
    if not re.fullmatch(r"\+?\d+", text) or int(text) < 1:
        raise _Invalid("an integer >= 1")
    return int(text)


def _parse_count(value: str, base: str | None) -> int:
    text = value.strip()
    if not re.fullmatch(r"\+?\d+", text):
        raise _Invalid("an integer >= 0")
    return int(text)


def _parse_port_range(value: str, base: str | None) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
    example = "{}-{}".format(*DEFAULT_PORT_RANGE)
    expected = f"START-END with 1 <= START <= END <= 65535 (e.g. {example})"
    if match is None:
        raise _Invalid(expected)
    low, high = int(match.group(1)), int(match.group(2))
    if not 1 <= low <= high <= 65535:
        raise _Invalid(expected)
    return low, high


def _parse_path(value: str, base: str | None) -> str:
    text = os.path.expanduser(value.strip())
    if not text:
        raise _Invalid("a path")
    return os.path.abspath(os.path.join(base, text) if base else text)


def _parse_lock_dir(value: str, base: str | None) -> str:
    """A path that is, or can be created as, a directory this user can write to.

    Checked with a few ``stat``/``access`` calls and nothing created: a run that never uses
    the fixtures leases nothing, but a lock directory that can never work is found at start.
    """
    path = _parse_path(value, base)
    expected = "a directory this user can create or write to"
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise _Invalid(expected, f"{existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK) and not (
        # prepared by `pytest-aiops init-lock-dir` (root's, 0755): nothing to create
        existing == path
        and os.path.lexists(os.path.join(path, "ports.lock"))
        and os.path.lexists(os.path.join(path, "leases"))
    ):
        raise _Invalid(
            expected,
            f"{existing} is not writable; for a directory every user shares, have root "
            f"run 'pytest-aiops init-lock-dir {path}' once",
        )
    return path


def _parse_ref(value: str, base: str | None) -> str:
    text = value.strip()
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise _Invalid("a git commit-ish without spaces that does not start with '-'")
    return text


def _parse_patterns(value: str, base: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in re.split(r"[,\n]", value) if p.strip())


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str, str | None], str]:
    def parse(value: str, base: str | None) -> str:
        text = value.strip().lower()
        if text not in choices:
            raise _Invalid("one of " + ", ".join(choices))
        return text

    return parse


def _parse_kinds(value: str, base: str | None) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    if len(set(kinds)) != len(kinds):
        raise _Invalid("a comma-separated list of distinct resource kinds")
    return kinds


class _Option:
    """One setting, whole: its field name ``dest``, parser, default, kind and help text.

    The spellings are made from ``dest`` (``--aiops-x``, ini ``aiops_x``, env
    ``PYTEST_AIOPS_X``), so the options pytest declares, the values :meth:`Settings.from_config`
    parses, the defaults of :class:`Settings` and every hint naming a setting (:func:`spellings`)
    come from this one row. ``parse(value, base)`` gets the text and, for a value from the ini
    file, the ini file's directory (paths are relative to it); it raises :class:`_Invalid`.

    A plain class, as :class:`Settings`: a dataclass compiles its generated methods when the
    module is imported, in every pytest run (issue 23: a few million instructions each).
    """

    __slots__ = ("cli", "default", "dest", "env", "help", "ini", "kind", "metavar", "parse")

    def __init__(
        self,
        dest: str,
        parse: Callable[[str, str | None], Any],
        default: object,
        help: str,
        metavar: str | None = None,
        kind: str = VALUE,
    ) -> None:
        self.dest = dest
        self.parse = parse
        self.default = default
        self.help = help
        self.metavar = metavar
        self.kind = kind
        #: ``--aiops-x``, ``PYTEST_AIOPS_X`` and ``aiops_x``: made once, read at each start.
        self.cli = "--aiops-" + dest.replace("_", "-")
        self.env = "PYTEST_AIOPS_" + dest.upper()
        self.ini = "aiops_" + dest  # also where argparse stores ``--aiops-x``


OPTIONS: tuple[_Option, ...] = (
    _Option(
        "disable",
        _parse_bool,
        False,
        "turn pytest-aiops off: nothing is leased, no header; the port fixtures hand out "
        "kernel-chosen ports with one warning (see --aiops-port-fallback), the others fail "
        "saying so (unlike -p no:aiops, the fixtures and marker stay known).",
        kind=FLAG,
    ),
    _Option(
        "ports_per_worker",
        _parse_positive_int,
        DEFAULT_PORTS_PER_WORKER,
        f"TCP ports each worker's port_range gets (default {DEFAULT_PORTS_PER_WORKER}).",
        "N",
    ),
    _Option(
        "max_ports_per_worker",
        _parse_positive_int,
        DEFAULT_MAX_PORTS_PER_WORKER,
        "how far a worker's port pool may grow (more blocks leased) when none of its ports "
        f"is free yet (default {DEFAULT_MAX_PORTS_PER_WORKER}).",
        "N",
    ),
    _Option(
        "port_fallback",
        _parse_choice(PORT_FALLBACKS),
        DEFAULT_PORT_FALLBACK,
        "where leasing is unavailable (--aiops-disable, an unusable lock directory, a full "
        "range, an unsupported platform) or the pool is at its bound: 'kernel' hands out "
        "ports the kernel picks, with one warning; 'error' fails the test (default kernel).",
        "MODE",
    ),
    _Option(
        "asyncio_ports",
        _parse_bool,
        False,
        "serve pytest-asyncio's unused_tcp_port, unused_udp_port and their _factory "
        "fixtures from this worker's port pool.",
        kind=FLAG,
    ),
    _Option(
        "aiohttp_ports",
        _parse_bool,
        False,
        "serve pytest-aiohttp's aiohttp_server, aiohttp_raw_server and aiohttp_client "
        "(given an Application) on ports from this worker's port pool.",
        kind=FLAG,
    ),
    _Option(
        "httpserver_ports",
        _parse_bool,
        False,
        "make pytest-httpserver's httpserver listen on a port from this worker's port pool.",
        kind=FLAG,
    ),
    _Option(
        "localserver_ports",
        _parse_bool,
        False,
        "serve pytest-localserver's httpserver, httpsserver and smtpserver on ports from "
        "this worker's port pool.",
        kind=FLAG,
    ),
    _Option(
        "port_range",
        _parse_port_range,
        DEFAULT_PORT_RANGE,
        "ports pytest-aiops may lease from, START-END inclusive "
        f"(default {DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]}).",
        "START-END",
    ),
    _Option(
        "lock_dir",
        _parse_lock_dir,
        None,
        "machine-wide directory of port leases shared by every run "
        f"(default {DEFAULT_LOCK_DIRECTORY_TEXT}).",
        "DIR",
    ),
    _Option(
        "repo",
        _parse_path,
        None,
        "the git repository git_worktree checks out (default: the one holding pytest's rootdir).",
        "PATH",
    ),
    _Option(
        "worktree_root",
        _parse_path,
        None,
        "directory the worktrees are created under (default: the git-worktree provider's, "
        "outside your checkout).",
        "DIR",
    ),
    _Option(
        "base_ref",
        _parse_ref,
        DEFAULT_BASE_REF,
        "commit-ish git_worktree checks out (default HEAD).",
        "REF",
    ),
    _Option(
        "working_state",
        _parse_bool,
        True,
        "git_worktree holds your working state (staged and unstaged changes, deletions, "
        "untracked files that are not ignored) on top of HEAD, one snapshot per run "
        "(default true; false: HEAD alone; an explicit --aiops-base-ref: that commit alone).",
        "BOOL",
        kind=SWITCH,
    ),
    _Option(
        "worktree_include",
        _parse_patterns,
        (),
        "comma-separated gitignore patterns of ignored paths to copy into git_worktree with "
        "the working state (e.g. .env,*.so); the lines of .worktreeinclude add to them.",
        "PATTERNS",
    ),
    _Option(
        "isolation",
        _parse_choice(ISOLATIONS),
        DEFAULT_ISOLATION,
        "how git_worktree isolates: 'worktree' (git worktree, shares objects) or 'clone' "
        "(independent clone); default worktree.",
        "LEVEL",
    ),
    _Option(
        "pool_size",
        _parse_count,
        DEFAULT_POOL_SIZE,
        "how many released worktrees the worktree root keeps for reuse, in all; the least "
        f"recently used is deleted first, 0 keeps none (default {DEFAULT_POOL_SIZE}).",
        "N",
    ),
    _Option(
        "resources",
        _parse_kinds,
        DEFAULT_RESOURCES,
        "comma-separated resource kinds provisioned_session provisions, in order "
        "(default port-range; e.g. port-range,git-worktree).",
        "KINDS",
    ),
    _Option(
        "keep",
        _parse_choice(KEEP_POLICIES),
        "none",
        "which worktrees to keep after the run for debugging: none, failed (modules with a "
        "failed test) or all (default none).",
        "POLICY",
    ),
)
OPTIONS_BY_DEST = {option.dest: option for option in OPTIONS}


def cli(dest: str) -> str:
    """Setting ``dest`` as the command line spells it: ``--aiops-x``."""
    return OPTIONS_BY_DEST[dest].cli


def spellings(dest: str, value: str = "", *, env: bool = True) -> str:
    """Setting ``dest`` in every spelling, for a message saying what to change:
    ``--aiops-x=VALUE (ini aiops_x, env PYTEST_AIOPS_X)`` (``value`` with its ``=``)."""
    option = OPTIONS_BY_DEST[dest]
    where = f"ini {option.ini}, env {option.env}" if env else f"ini {option.ini}"
    return f"{option.cli}{value} ({where})"


class Integration:
    """Another plugin's fixtures served from the pool when the setting ``dest`` is on.

    The module ``pytest_aiops._plugin.<dest>`` redefines them; it is registered after every
    entry-point plugin, so its definitions win (and can wrap the other plugin's by requesting
    the same name). ``requires`` is the other plugin's module, which must be loaded
    (``None``: the fixtures stand alone); ``package`` is what to install for it and
    ``plugin_name`` its ``-p`` name.
    """

    __slots__ = ("dest", "package", "plugin_name", "requires")

    def __init__(self, dest: str, requires: str | None, package: str, plugin_name: str) -> None:
        # A plain class, as Settings: no dataclass compiled at start-up (issue 23).
        self.dest = dest
        self.requires = requires
        self.package = package
        self.plugin_name = plugin_name


#: One row per integration: adding one is a row here, an option above and a module.
INTEGRATIONS: tuple[Integration, ...] = (
    Integration("asyncio_ports", None, "pytest-asyncio", "asyncio"),
    Integration("aiohttp_ports", "pytest_aiohttp.plugin", "pytest-aiohttp", "aiohttp"),
    Integration(
        "httpserver_ports",
        "pytest_httpserver.pytest_plugin",
        "pytest-httpserver",
        "pytest_httpserver",
    ),
    Integration(
        "localserver_ports", "pytest_localserver.plugin", "pytest-localserver", "localserver"
    ),
)


class Settings:
    """The resolved settings; ``sources`` says where each came from (for messages/header).

    Read-only once made. A plain class rather than a frozen dataclass: see :class:`_Option`.
    """

    # The fields are the rows of OPTIONS (sorted, as the repr and JSON show them), and
    # ``sources``: where each value came from.
    __slots__ = tuple(sorted([*OPTIONS_BY_DEST, "sources"]))
    disable: bool
    ports_per_worker: int
    max_ports_per_worker: int
    port_fallback: str
    asyncio_ports: bool
    aiohttp_ports: bool
    httpserver_ports: bool
    localserver_ports: bool
    port_range: tuple[int, int]
    lock_dir: str | None
    repo: str | None
    worktree_root: str | None
    base_ref: str
    working_state: bool
    worktree_include: tuple[str, ...]
    isolation: str
    resources: tuple[str, ...]
    keep: str
    pool_size: int
    sources: Mapping[str, str] | None

    def __init__(self, *, sources: Mapping[str, str] | None = None, **values: Any) -> None:
        """Each field from ``values`` (by name), else its row's default."""
        if not values.keys() <= OPTIONS_BY_DEST.keys():
            unknown = min(values.keys() - OPTIONS_BY_DEST.keys())
            raise TypeError(f"Settings() got an unexpected keyword argument {unknown!r}")
        for option in OPTIONS:
            object.__setattr__(self, option.dest, values.get(option.dest, option.default))
        object.__setattr__(self, "sources", sources)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Settings are read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Settings are read-only: cannot delete {name!r}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # sources is a dict: as the dataclass was

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Settings({fields})"

    @property
    def port_range_size(self) -> int:
        return self.port_range[1] - self.port_range[0] + 1

    def source(self, dest: str) -> str:
        """``from --aiops-x`` / ``from env PYTEST_AIOPS_X`` / ``from ini aiops_x`` / ``default``."""
        return (self.sources or {}).get(dest, "default")

    def usage_error(self, dest: str, message: str) -> pytest.UsageError:
        """A :class:`pytest.UsageError` about setting ``dest``, naming where it came from."""
        import pytest

        return pytest.UsageError(f"{cli(dest)} {message} ({self.source(dest)})")

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Read every option with precedence CLI > env > ini > default; validate each."""
        import pytest

        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for option in OPTIONS:  # a setting given nowhere keeps its row's default
            found = _lookup(config, option)
            if found is None:
                continue
            value, source = found
            _check_encodable(config, option, value, source)
            # An ini path is relative to the ini file's directory, others to the cwd.
            base = (
                str(config.inipath.parent) if source.startswith("ini") and config.inipath else None
            )
            try:
                values[option.dest] = option.parse(value, base)
            except _Invalid as e:
                reason = f": {e.reason}" if e.reason else ""
                raise pytest.UsageError(
                    f"{option.cli} must be {e.expected}, not {value!r}{reason} (from {source})"
                ) from None
            sources[option.dest] = f"from {source}"
        return cls(**values, sources=sources)

    def to_json(self) -> str:
        """These settings as JSON text, for xdist workers (:meth:`from_json` reads it back).

        Resolved here, whatever their source: a worker on another host sees none of this
        process's environment or ini file. ASCII JSON, so a non-UTF-8 path (lone surrogates)
        survives execnet, which carries only UTF-8 strings.
        """
        import json

        values: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        values["sources"] = dict(self.sources or {})
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """The settings :meth:`to_json` wrote (lists back to tuples); unknown keys ignored."""
        import json

        raw = json.loads(text)
        names = set(cls.__slots__)
        values: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in raw.items()
            if key in names
        }
        return cls(**values)

    def check_kinds(self, known: tuple[str, ...]) -> None:
        """Refuse ``resources`` naming a kind no provider was registered for."""
        for kind in self.resources:
            if kind not in known:
                allowed = ", ".join(known) or "none registered"
                raise self.usage_error(
                    "resources",
                    f"names unknown resource kind {kind!r} (registered kinds: {allowed})",
                )

    def integrations(self, config: pytest.Config) -> list[Integration]:
        """The integrations whose setting is on; refuse one whose plugin is not loaded.

        Checked where the other plugin would be: it is loaded (an entry point, ``-p``, a
        root conftest's ``pytest_plugins``) before any ``pytest_configure`` runs.
        """
        import importlib.util
        import sys

        import pytest

        chosen = [i for i in INTEGRATIONS if getattr(self, i.dest)]
        for integration in chosen:
            if integration.requires is None:
                continue
            module = sys.modules.get(integration.requires)
            if module is not None and config.pluginmanager.is_registered(module):
                continue
            flag = cli(integration.dest)
            top = integration.requires.partition(".")[0]
            if importlib.util.find_spec(top) is None:
                why = f"{integration.package} is not installed"
                fix = f"pip install {integration.package}"
            else:
                why = f"{integration.package} is installed but not loaded"
                name = integration.plugin_name
                fix = f"load it (drop -p no:{name}, or add -p {name})"
            raise pytest.UsageError(
                f"{flag} is on ({self.source(integration.dest)}) to serve "
                f"{integration.package}'s fixtures from the port pool, but {why}: {fix}, "
                f"or turn {flag} off"
            )
        return chosen

    def check_ports_fit(self, workers: int = 0) -> None:
        """Refuse ports per worker that do not fit in the port range.

        ``workers`` is how many xdist workers share one parent block (0: no xdist, one
        process). Even then a worker's own block must fit, since a replacement worker or a
        plain run leases ``ports_per_worker`` ports from the range by itself.
        """
        low, high = self.port_range
        count = max(1, workers)
        size = self.ports_per_worker * count
        if size <= self.port_range_size:
            return
        per_worker_flag, range_flag = cli("ports_per_worker"), cli("port_range")
        if workers:
            what = f"({self.ports_per_worker}) x {workers} workers = {size} ports"
            lower = f"lower {per_worker_flag} or -n"
        else:
            what = f"({self.ports_per_worker} ports)"
            lower = f"lower {per_worker_flag}"
        raise self.usage_error(
            "ports_per_worker",
            f"{what} do not fit in {range_flag} {low}-{high} "
            f"({self.port_range_size} ports); {lower}, or widen {range_flag}",
        )

    def port_spec(self, workers: int = 1) -> PortSpec:
        """The ``port-range`` request for ``workers`` workers' ports as one block: 1 for a
        worker's own block (or one more block of its pool), N for the xdist controller's
        parent range that its N workers split."""
        from .._core.ports import PortSpec

        low, high = self.port_range
        size = self.ports_per_worker * max(1, workers)
        return PortSpec(
            base_port=low,
            block_size=size,
            block_count=max(1, (high - low + 1) // size),
            lock_directory=self.lock_dir or None,
            # The pool keeps busy ports back: when no block of the range is clean it may
            # take one whose busy ports are only in TIME_WAIT (never one with a listener).
            accept_time_wait=True,
        )

    def port_request(self, workers: int = 1) -> ResourceRequest:
        """:meth:`port_spec` as the request the orchestrator provisions."""
        from .._core.types import ResourceRequest

        return ResourceRequest("port-range", self.port_spec(workers).to_options())

    def as_cli(self) -> str:
        """The options that reproduce this run's port layout, pastable on a command line."""
        low, high = self.port_range
        per_worker = f"{cli('ports_per_worker')}={self.ports_per_worker}"
        return f"{cli('port_range')}={low}-{high} {per_worker}"


def _check_encodable(config: pytest.Config, option: _Option, value: str, source: str) -> None:
    """Refuse, in one line, a value no path can hold or xdist cannot carry to its workers.

    A NUL would reach the OS as "embedded null byte". A non-UTF-8 path (``os.fsdecode``
    gives lone surrogates) works in this process and from the environment, but xdist sends
    the command line to its workers as UTF-8 only and would die with an internal error.
    """
    import pytest

    if "\0" in value:
        raise pytest.UsageError(
            f"{option.cli} contains a NUL character (\\0) at index {value.index(chr(0))}: "
            f"{value!r} (from {source}); a path or ref cannot contain one, remove it"
        )
    xdist = bool(getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None))
    if source == option.cli and xdist:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise pytest.UsageError(
                f"{option.cli} must be valid UTF-8 with pytest-xdist, not {value!r} (from "
                f"{source}): xdist passes the command line to its workers as UTF-8 only; "
                f"set env {option.env} to it instead"
            ) from None


def add_options(parser: pytest.Parser) -> None:
    """Register the ``aiops`` option group and the ini keys (switches as ``bool``, the rest
    as strings this module parses)."""
    group = parser.getgroup("aiops", "pytest-aiops: isolated ports and git worktrees")
    for option in OPTIONS:
        help_text = f"{option.help} [env {option.env}, ini {option.ini}]"
        # ``dest`` given (argparse's own name for --aiops-x, the ini key): pytest >= 9 then
        # skips comparing it with every option declared so far (a third of this cost).
        dest = option.ini
        if option.kind == FLAG:
            group.addoption(
                option.cli, action="store_true", default=None, dest=dest, help=help_text
            )
        elif option.kind == SWITCH:
            group.addoption(
                option.cli,
                nargs="?",
                const="true",
                default=None,
                dest=dest,
                metavar=option.metavar,
                help=help_text,
            )
        else:
            group.addoption(
                option.cli, default=None, dest=dest, metavar=option.metavar, help=help_text
            )
        if option.kind == FLAG:  # shown as (bool) in --help; pytest reads it (TOML true too)
            parser.addini(option.ini, option.help, type="bool", default=None)
        else:
            parser.addini(option.ini, option.help, type="string", default="")


def _lookup(config: pytest.Config, option: _Option) -> tuple[str, str] | None:
    import pytest

    given = config.getoption(option.ini)  # argparse's name for --aiops-x is the ini key
    if given is not None:
        return ("true" if given is True else str(given)), option.cli
    env = os.environ.get(option.env)
    if env is not None and env.strip():
        return env, f"env {option.env}"
    try:
        ini = config.getini(option.ini)
    except (ValueError, pytest.UsageError) as error:  # a bool ini pytest cannot read
        # (pytest < 9 raises ValueError, later ones UsageError; both quote the value.)
        quoted = re.search(r"invalid truth value (.+?)$", str(error))
        raise pytest.UsageError(
            f"{option.cli} must be one of {', '.join(_TRUE + _FALSE)}, "
            f"not {quoted.group(1) if quoted else 'that'} (from ini {option.ini})"
        ) from None
    if isinstance(ini, bool):
        return ("true" if ini else "false"), f"ini {option.ini}"
    if isinstance(ini, str) and ini.strip():
        return ini, f"ini {option.ini}"
    return None
