"""``Settings.from_config`` with a fake config, as pytest tests ``TempPathFactory.from_config``.

Each setting is read from the command line (``--aiops-x``), the environment
(``PYTEST_AIOPS_X``) and the ini file (``aiops_x``), with that precedence; each bad value is
one :class:`pytest.UsageError` line naming the option, the value, what is allowed and where
it came from. Only ``Settings.from_config(config)``, the resulting fields and ``source()`` are
used, so the tests hold whatever the declarations inside ``settings.py`` look like.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pytest_aiops._plugin.settings import Settings

TRUTHS = "1, true, yes, on, 0, false, no, off"

#: (cli flag, raw value as a user writes it, the resulting field value). The flags given
#: alone on a command line (store_true) are the switches with value ``True`` here.
GOOD: list[tuple[str, Any, Any]] = [
    ("--aiops-disable", True, True),
    ("--aiops-ports-per-worker", " 16 ", 16),
    ("--aiops-max-ports-per-worker", "+64", 64),
    ("--aiops-port-fallback", "Error", "error"),
    ("--aiops-asyncio-ports", True, True),
    ("--aiops-aiohttp-ports", True, True),
    ("--aiops-httpserver-ports", True, True),
    ("--aiops-localserver-ports", True, True),
    ("--aiops-port-range", " 27000 - 27099 ", (27000, 27099)),
    ("--aiops-base-ref", " main~2 ", "main~2"),
    ("--aiops-working-state", "off", False),
    ("--aiops-worktree-include", ".env, *.so\nbuild/ ,", (".env", "*.so", "build/")),
    ("--aiops-isolation", "CLONE", "clone"),
    ("--aiops-pool-size", "0", 0),
    ("--aiops-resources", "port-range, git-worktree", ("port-range", "git-worktree")),
    ("--aiops-keep", "failed", "failed"),
]

#: (cli flag, bad raw value, what the message says is allowed, after the value).
BAD: list[tuple[str, str, str]] = [
    ("--aiops-disable", "maybe", f"one of {TRUTHS}"),
    ("--aiops-ports-per-worker", "0", "an integer >= 1"),
    ("--aiops-ports-per-worker", "1.5", "an integer >= 1"),
    ("--aiops-max-ports-per-worker", "-4", "an integer >= 1"),
    ("--aiops-port-fallback", "none", "one of kernel, error"),
    ("--aiops-asyncio-ports", "enabled", f"one of {TRUTHS}"),
    (
        "--aiops-port-range",
        "30000-20000",
        "START-END with 1 <= START <= END <= 65535 (e.g. 20000-26399)",
    ),
    ("--aiops-port-range", "0-10", "START-END with 1 <= START <= END <= 65535 (e.g. 20000-26399)"),
    ("--aiops-port-range", "20000", "START-END with 1 <= START <= END <= 65535 (e.g. 20000-26399)"),
    ("--aiops-base-ref", "-x", "a git commit-ish without spaces that does not start with '-'"),
    ("--aiops-base-ref", "my ref", "a git commit-ish without spaces that does not start with '-'"),
    ("--aiops-working-state", "sometimes", f"one of {TRUTHS}"),
    ("--aiops-isolation", "copy", "one of worktree, clone"),
    ("--aiops-pool-size", "-1", "an integer >= 0"),
    (
        "--aiops-resources",
        "port-range,port-range",
        "a comma-separated list of distinct resource kinds",
    ),
    ("--aiops-keep", "some", "one of none, failed, all"),
]


def _env(flag: str) -> str:
    return "PYTEST_AIOPS_" + flag.removeprefix("--aiops-").replace("-", "_").upper()


def _ini(flag: str) -> str:
    return "aiops_" + flag.removeprefix("--aiops-").replace("-", "_")


def _field(flag: str) -> str:
    return flag.removeprefix("--aiops-").replace("-", "_")


class FakeConfig:
    """What ``from_config`` reads of a ``pytest.Config``: options, ini values, the ini path.

    ``cli`` is keyed by the flag as typed (``--aiops-keep``), as argparse stores it under
    ``aiops_keep``; ``ini`` by ini key. An ini value that is an exception is raised, as
    pytest raises for a bool ini value it cannot read.
    """

    def __init__(
        self,
        cli: dict[str, Any] | None = None,
        ini: dict[str, Any] | None = None,
        inipath: Path | None = None,
        numprocesses: int | None = None,
    ) -> None:
        self._cli = cli or {}
        self._ini = ini or {}
        self.inipath = inipath
        self.option = SimpleNamespace(numprocesses=numprocesses, tx=None)

    def getoption(self, name: str) -> Any:
        return self._cli.get("--" + name.replace("_", "-"))

    def getini(self, name: str) -> Any:
        value = self._ini.get(name, "")
        if isinstance(value, Exception):
            raise value
        return value


def settings(**kwargs: Any) -> Settings:
    return Settings.from_config(cast(pytest.Config, FakeConfig(**kwargs)))


def usage_error(**kwargs: Any) -> str:
    with pytest.raises(pytest.UsageError) as raised:
        settings(**kwargs)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.fixture(autouse=True)
def no_aiops_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PYTEST_AIOPS_* of the machine's leaks in; relative paths resolve in ``tmp_path``."""
    for key in list(os.environ):
        if key.startswith("PYTEST_AIOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_nothing_given_is_the_defaults() -> None:
    got = settings()
    assert got == Settings(sources={})
    assert (got.ports_per_worker, got.max_ports_per_worker, got.port_fallback) == (
        32,
        4096,
        "kernel",
    )
    assert (got.port_range, got.lock_dir, got.repo, got.worktree_root) == (
        (20000, 26399),
        None,
        None,
        None,
    )
    assert (got.base_ref, got.working_state, got.worktree_include) == ("HEAD", True, ())
    assert (got.isolation, got.resources, got.keep, got.pool_size) == (
        "worktree",
        ("port-range",),
        "none",
        8,
    )
    switches = ("disable", "asyncio_ports", "aiohttp_ports", "httpserver_ports")
    assert not any(getattr(got, name) for name in (*switches, "localserver_ports"))
    for flag, _raw, _value in GOOD:
        assert got.source(_field(flag)) == "default"


@pytest.mark.parametrize(("flag", "raw", "value"), GOOD, ids=[g[0] for g in GOOD])
def test_each_setting_from_the_command_line(flag: str, raw: Any, value: Any) -> None:
    got = settings(cli={flag: raw})
    assert getattr(got, _field(flag)) == value
    assert got.source(_field(flag)) == f"from {flag}"


@pytest.mark.parametrize(("flag", "raw", "value"), GOOD, ids=[g[0] for g in GOOD])
def test_each_setting_from_the_environment(
    flag: str, raw: Any, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_env(flag), "yes" if raw is True else raw)
    got = settings()
    assert getattr(got, _field(flag)) == value
    assert got.source(_field(flag)) == f"from env {_env(flag)}"


@pytest.mark.parametrize(("flag", "raw", "value"), GOOD, ids=[g[0] for g in GOOD])
def test_each_setting_from_the_ini_file(flag: str, raw: Any, value: Any) -> None:
    got = settings(ini={_ini(flag): raw})  # a switch's ini value: what pytest read, a bool
    assert getattr(got, _field(flag)) == value
    assert got.source(_field(flag)) == f"from ini {_ini(flag)}"


@pytest.mark.parametrize(
    ("flag", "cli", "env", "ini", "value"),
    [
        ("--aiops-ports-per-worker", "4", "8", "16", (4, 8, 16)),
        ("--aiops-keep", "all", "failed", "none", ("all", "failed", "none")),
        ("--aiops-working-state", "true", "false", "1", (True, False, True)),
        ("--aiops-port-range", "1-2", "3-4", "5-6", ((1, 2), (3, 4), (5, 6))),
    ],
)
def test_the_command_line_beats_the_environment_beats_the_ini_file(
    flag: str,
    cli: str,
    env: str,
    ini: str,
    value: tuple[Any, Any, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(_env(flag), env)
    field = _field(flag)
    assert getattr(settings(cli={flag: cli}, ini={_ini(flag): ini}), field) == value[0]
    assert getattr(settings(ini={_ini(flag): ini}), field) == value[1]
    monkeypatch.setenv(_env(flag), "  ")  # blank: as if unset
    got = settings(ini={_ini(flag): ini})
    assert (getattr(got, field), got.source(field)) == (value[2], f"from ini {_ini(flag)}")
    got = settings(ini={_ini(flag): "   "})  # blank ini value: the default
    assert got.source(field) == "default"


def test_a_flag_on_the_command_line_beats_a_false_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_AIOPS_DISABLE", "false")
    assert settings(cli={"--aiops-disable": True}).disable is True
    assert settings(ini={"aiops_disable": True}).disable is False  # env beats ini
    monkeypatch.delenv("PYTEST_AIOPS_DISABLE")
    got = settings(ini={"aiops_disable": False})  # an explicit false in the ini file
    assert (got.disable, got.source("disable")) == (False, "from ini aiops_disable")


@pytest.mark.parametrize("flag", ["--aiops-repo", "--aiops-worktree-root", "--aiops-lock-dir"])
def test_paths_resolve_against_the_cwd_or_the_ini_files_directory(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    field = _field(flag)
    project = tmp_path / "project"
    project.mkdir()
    assert getattr(settings(cli={flag: "rel/dir"}), field) == str(tmp_path / "rel" / "dir")
    monkeypatch.setenv(_env(flag), "from-env")
    assert getattr(settings(), field) == str(tmp_path / "from-env")
    monkeypatch.delenv(_env(flag))
    got = settings(ini={_ini(flag): "sub/dir"}, inipath=project / "tox.ini")
    assert getattr(got, field) == str(project / "sub" / "dir")  # beside the ini file
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert getattr(settings(cli={flag: "~/x"}), field) == str(tmp_path / "home" / "x")


@pytest.mark.parametrize(("flag", "raw", "allowed"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_each_bad_value_is_one_line_naming_option_value_allowed_and_source(
    flag: str, raw: str, allowed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_env(flag), raw)
    assert usage_error() == f"{flag} must be {allowed}, not {raw!r} (from env {_env(flag)})"
    monkeypatch.delenv(_env(flag))
    if raw not in ("enabled", "maybe"):  # the store_true flags take no value on a command line
        assert (
            usage_error(cli={flag: raw}) == f"{flag} must be {allowed}, not {raw!r} (from {flag})"
        )


def test_a_bad_path_and_a_bad_lock_directory(tmp_path: Path) -> None:
    assert usage_error(cli={"--aiops-repo": "  "}) == (
        "--aiops-repo must be a path, not '  ' (from --aiops-repo)"
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    wanted = str(blocker / "locks")
    assert usage_error(cli={"--aiops-lock-dir": wanted}) == (
        f"--aiops-lock-dir must be a directory this user can create or write to, not "
        f"{wanted!r}: {blocker} is not a directory (from --aiops-lock-dir)"
    )
    fine = tmp_path / "not" / "yet" / "there"  # created when first used: fine
    assert settings(cli={"--aiops-lock-dir": str(fine)}).lock_dir == str(fine)


@pytest.mark.parametrize("value", ["yes please", "2"])
def test_a_bool_ini_value_pytest_cannot_read_is_one_line(value: str) -> None:
    """pytest reads a bool ini value itself and raises on one it cannot read (``ValueError``
    before pytest 9, ``UsageError`` since); either way the user gets one line."""
    error = ValueError(f"invalid truth value {value!r}")
    assert usage_error(ini={"aiops_disable": error}) == (
        f"--aiops-disable must be one of {TRUTHS}, not {value!r} (from ini aiops_disable)"
    )
    usage = pytest.UsageError(f"invalid truth value {value!r}")
    assert usage_error(ini={"aiops_asyncio_ports": usage}) == (
        f"--aiops-asyncio-ports must be one of {TRUTHS}, not {value!r} "
        "(from ini aiops_asyncio_ports)"
    )


def test_a_nul_character_is_refused_in_any_setting() -> None:
    assert usage_error(cli={"--aiops-base-ref": "ma\0in"}) == (
        "--aiops-base-ref contains a NUL character (\\0) at index 2: 'ma\\x00in' "
        "(from --aiops-base-ref); a path or ref cannot contain one, remove it"
    )
    # (An environment variable cannot hold a NUL; an ini value can.)
    assert usage_error(ini={"aiops_lock_dir": "/tmp/\0x"}) == (
        "--aiops-lock-dir contains a NUL character (\\0) at index 5: '/tmp/\\x00x' "
        "(from ini aiops_lock_dir); a path or ref cannot contain one, remove it"
    )


def test_a_non_utf8_path_on_the_command_line_is_refused_only_under_xdist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path) + "/" + os.fsdecode(b"caf\xe9")
    assert settings(cli={"--aiops-worktree-root": path}).worktree_root == path
    assert usage_error(cli={"--aiops-worktree-root": path}, numprocesses=2) == (
        f"--aiops-worktree-root must be valid UTF-8 with pytest-xdist, not {path!r} (from "
        "--aiops-worktree-root): xdist passes the command line to its workers as UTF-8 only; "
        "set env PYTEST_AIOPS_WORKTREE_ROOT to it instead"
    )
    monkeypatch.setenv("PYTEST_AIOPS_WORKTREE_ROOT", path)  # what the message advises
    got = Settings.from_config(cast(pytest.Config, FakeConfig(numprocesses=2)))
    assert got.worktree_root == path


def test_settings_survive_the_trip_to_an_xdist_worker(tmp_path: Path) -> None:
    got = settings(
        cli={flag: raw for flag, raw, _value in GOOD} | {"--aiops-lock-dir": str(tmp_path)}
    )
    assert Settings.from_json(got.to_json()) == got
