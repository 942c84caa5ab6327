"""pytest glue for pytest-aiops (fixtures, options, xdist hand-off)."""

from __future__ import annotations
