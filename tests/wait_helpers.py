"""Waiting for something another process does, without timing assertions."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(
    condition: Callable[[], object], what: str, *, timeout: float = 60.0, interval: float = 0.02
) -> None:
    """Poll ``condition()`` until it is true; fail after about ``timeout`` seconds.

    A guard against hanging forever, not a timing assertion: it counts polls rather than
    reading a clock, and a slow machine only makes it wait longer.
    """
    for _ in range(max(1, int(timeout / interval))):
        if condition():
            return
        time.sleep(interval)
    pytest.fail(f"gave up waiting for {what}")
