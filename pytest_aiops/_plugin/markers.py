"""``pytest.mark.aiops``: a module's options for its ``git_worktree``, refused elsewhere.

The marker is declared by :mod:`.declarations` (even under ``-p no:aiops``). A module sets it
with ``pytestmark``; :func:`marker_options` turns it into
:meth:`~pytest_aiops._plugin.worker.WorktreeFactory.provision` arguments. On a test function
or class it would be ignored (``git_worktree`` is one checkout per module), so the plugin's
``pytest_collection_modifyitems`` registers :class:`MisplacedMarkers`, which fails each such
test at setup in one line. Loaded when first needed (issue 23: a run that neither marks a
test wrongly nor uses ``git_worktree`` does not load it).
"""

from __future__ import annotations

from typing import Any

import pytest

#: The marker's keyword arguments (snake_case and the reference's camelCase) -> the
#: ``provision()`` argument each sets.
MARKER_KEYS = {
    "base_ref": "base_ref",
    "baseRef": "base_ref",
    "target_path": "target_path",
    "targetPath": "target_path",
    "isolation": "isolation",
    "working_state": "working_state",
    "workingState": "working_state",
}
#: Marker options that take true or false rather than a string.
MARKER_BOOLS = frozenset({"working_state"})


def marker_options(marker: pytest.Mark | None) -> dict[str, Any]:
    """``pytest.mark.aiops(...)`` keyword arguments as WorktreeFactory.provision arguments."""
    if marker is None:
        return {}
    from .._errors import OptionError

    if marker.args:
        raise OptionError(
            "aiops", f"pytest.mark.aiops takes keyword arguments only, not {marker.args!r}"
        )
    options: dict[str, Any] = {}
    for key, value in marker.kwargs.items():
        name = MARKER_KEYS.get(key)
        if name is None:
            allowed = ", ".join(sorted(set(MARKER_KEYS.values())))
            raise OptionError(
                key, f"pytest.mark.aiops got unknown option {key!r} (allowed: {allowed})"
            )
        if name in MARKER_BOOLS:
            if not isinstance(value, bool):
                raise OptionError(
                    key, f"pytest.mark.aiops({key}=...) must be True or False, not {value!r}"
                )
            options[name] = value
            continue
        if not isinstance(value, str) or not value.strip():
            raise OptionError(
                key, f"pytest.mark.aiops({key}=...) must be a non-empty string, not {value!r}"
            )
        options[name] = value.strip()
    return options


def misplaced_message(node: pytest.Item | pytest.Collector) -> str:
    """The one line failing a test whose function (or class, ``node``) carries the mark."""
    where = f"class {node.name}" if isinstance(node, pytest.Class) else f"test {node.name}"
    return (
        f"pytest.mark.aiops on {where} is not applied: git_worktree is one checkout per module "
        "and takes its options from the module; set them there with "
        "pytestmark = pytest.mark.aiops(base_ref=...), or use "
        "aiops_worktree_factory.worktree(base_ref=...) in the test"
    )


class MisplacedMarkers:
    """Fails, at setup, each test whose function or class carries ``pytest.mark.aiops``."""

    def __init__(self, marked: dict[str, pytest.Item | pytest.Collector]) -> None:
        #: nodeid -> the line failing it (made from the node carrying the mark).
        self.messages = {nodeid: misplaced_message(node) for nodeid, node in marked.items()}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        message = self.messages.get(item.nodeid)
        if message is not None:
            pytest.fail(message, pytrace=False)
