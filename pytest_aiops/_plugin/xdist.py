"""xdist hand-off, the part every run reads at configure: how many workers xdist starts,
what the controller sent this worker, the slice it assigned. The controller's side (the
parent lease, the slices, the workers' reports) is :mod:`.controller`, loaded only where
there is a controller or a report to print (issue 23: a module less at start-up).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .worker import XdistSlice

#: The key of pytest-aiops's data in xdist's ``workerinput`` and ``workeroutput``.
WORKERINPUT_KEY = "aiops"


def xdist_worker_count(config: pytest.Config) -> int:
    """How many workers xdist will start (0: xdist is not distributing this run)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return 0
    if config.getoption("dist", "no") == "no" or config.getoption("collectonly", False):
        return 0
    total = 0
    for spec in config.getoption("tx", None) or ():
        match = re.match(r"^(\d+)\*", str(spec))
        total += int(match.group(1)) if match else 1
    return total


def worker_input(config: pytest.Config) -> dict[str, Any] | None:
    """What the controller sent this worker, or ``None`` outside an xdist worker."""
    workerinput = getattr(config, "workerinput", None)
    if not isinstance(workerinput, dict):
        return None
    data = workerinput.get(WORKERINPUT_KEY)
    return data if isinstance(data, dict) else {}


def worker_slice(data: dict[str, Any] | None) -> XdistSlice | None:
    """The slice the controller assigned (``worker_input``'s data), ``None`` without one."""
    if not data or not data.get("parent"):
        return None
    from .._core.discovery import DiscoverySnapshot
    from .worker import XdistSlice

    raw = data["parent"]
    parent = (
        DiscoverySnapshot.from_json(raw)
        if isinstance(raw, str)
        else DiscoverySnapshot.from_dict(raw)
    )
    return XdistSlice(
        parent=parent,
        index=data.get("index"),
        count=int(data.get("count") or 0),
        spares=tuple(data.get("spares") or ()),
    )
