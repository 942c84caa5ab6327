"""Root conftest: keeps the examples/ demo out of the default test run's collection."""

from __future__ import annotations

collect_ignore = ["bench"]
