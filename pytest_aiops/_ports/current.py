"""The current process's pool, as a factory called on first use (PYTEST_DONT_REWRITE).

Kept apart from :mod:`.pool` so the pytest plugin can wire a run's pool at configure without
importing the pool (and the probing code under it): a run that never takes a port never
loads them. Nothing here imports anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import PortRange

factory: Callable[[], PortRange] | None = None
lock = threading.Lock()
#: The holder that means "the running test" (:meth:`.pool.PortRange.next_port`): its ports
#: come back when the test ends, where the pool's attribution knows the test; otherwise as
#: if no holder was named. Here so the plugin's per-test fixtures name it without the pool.
TEST = "<test>"


def set_current_pool(
    pool: Callable[[], PortRange] | None,
) -> Callable[[], PortRange] | None:
    """Make ``pool()`` (called on first use) the pool :func:`~.pool.take_port` takes from;
    return the one it replaces, for the caller to put back (a pytest run inside a test's
    process, as pytester's in-process runs are, must not leave the outer run without its
    pool)."""
    global factory
    with lock:
        previous, factory = factory, pool
    return previous
