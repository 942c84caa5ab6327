"""State the plugin shares, said out loud (issue 22): what holds it, who writes it, how long.

- The pool ``take_port()`` reaches (``_ports/current.py``) is swapped by a config for as long
  as that config lives (its cleanup puts the one it replaced back).
- Who takes a port is asked of the reporter through one callable; the running test it names
  comes from the test's item, not from the text of ``PYTEST_CURRENT_TEST``.
- Every orchestrator of a registry holds the registry's provider instances, which is what
  lets a worktree provisioned through one be kept through another.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_aiops import ResourceRequest
from pytest_aiops._core.registry import ProviderRegistry
from pytest_aiops._ports import current
from pytest_aiops._ports.pool import SESSION, PortRange
from pytest_aiops._ports.provider import create_port_range_provider
from pytest_aiops._worktrees.provider import GitWorktreeProvider

from .helpers import MakeRepo, git, worktree_provider

pytest_plugins = ["pytester"]


def test_a_config_puts_the_pool_it_replaced_back_at_its_cleanup(
    pytester: pytest.Pytester, private_lock_dir: Path
) -> None:
    before = current.factory
    config = pytester.parseconfigure("-p", "no:xdist", "-p", "no:asyncio", "-p", "no:aiohttp")
    assert current.factory is not before  # this config's pool, wired at configure
    config._ensure_unconfigure()  # what pytest does when a run ends: hooks, then cleanups
    assert current.factory is before


ATTRIBUTED = """
import os
from pytest_aiops import take_port


def test_first(port_range, request):
    # The text of PYTEST_CURRENT_TEST is not what names the test: its item is.
    os.environ["PYTEST_CURRENT_TEST"] = "elsewhere.py::not_this_one (call)"
    port = take_port()
    assert port_range.handed_out[port] == request.node.nodeid


def test_second(port_range, request):
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    port = take_port()
    # test_first's port came back when it ended; this one is test_second's.
    assert dict(port_range.handed_out) == {port: request.node.nodeid}
    assert port_range.ports_of(request.node.nodeid) == [port]
"""


def test_the_running_test_comes_from_its_item_not_from_pytest_current_test(
    pytester: pytest.Pytester, private_lock_dir: Path
) -> None:
    pytester.makepyfile(test_attributed=ATTRIBUTED)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "0", "-W", "error")
    result.assert_outcomes(passed=2)


def test_a_pool_without_the_plugin_attributes_to_its_current_user() -> None:
    ports = PortRange(12000, 12003, probe=False)
    assert ports.holder() == SESSION
    ports.current_user = "t1"
    port = ports.next_port()
    assert ports.handed_out == {port: "t1"}
    assert ports.give_back_all("t1") == [port]

    asked: list[object] = []

    def attribution(holder: object) -> tuple[object, str | None]:
        asked.append(holder)
        return (holder if holder is not None else "fixture"), "t2"

    ports.attribution = attribution  # the one callable the plugin's reporter sets
    token = object()
    mine = ports.next_port(holder=token)
    theirs = ports.next_port()
    assert asked == [token, None]
    assert ports.ports_of("t2") == [mine, theirs]
    assert ports.give_back_all("fixture") == [theirs]
    assert ports.give_back(mine, holder=token)


def test_orchestrators_of_a_registry_share_its_providers_so_keep_finds_the_checkout(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = make_repo({"a.txt": "a\n"})
    registry = ProviderRegistry()
    registry(worktree_provider(tmp_path / "wt"))
    registry(create_port_range_provider())
    first, second = registry.orchestrator(), registry.orchestrator()
    for kind in ("git-worktree", "port-range"):
        assert first.get_provider(kind) is second.get_provider(kind) is registry.get(kind)
    session = first.provision_session(
        session_id="sharing", resources=[ResourceRequest("git-worktree")], workspace_root=str(repo)
    )
    path = (session.allocation("git-worktree") or {})["worktreePath"]
    keeper = second.get_provider("git-worktree")
    assert isinstance(keeper, GitWorktreeProvider)
    assert keeper.keep(path)  # found through the other orchestrator: the same provider
    session.release()  # a no-op for a kept checkout
    assert Path(path, "a.txt").read_text() == "a\n"
    git(repo, "worktree", "remove", "--force", path)
