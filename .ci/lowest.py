"""Print the lowest versions pyproject.toml admits, as ``name==version`` lines.

For the "declared minimum" leg of the matrix (.ci/run, tox's py310-min). A regex over the
``dependencies`` list rather than tomllib, so it runs on Python 3.10 too. Every dependency
must have a ``>=`` bound: one without is an error, since "the lowest it admits" would then
be whatever is oldest on the index.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def lowest(pyproject: Path) -> list[str]:
    text = pyproject.read_text(encoding="utf-8")
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.MULTILINE | re.DOTALL)
    if block is None:
        raise SystemExit(f"{pyproject}: no dependencies list")
    pins = []
    for spec in re.findall(r"[\"']([^\"']+)[\"']", block.group(1)):
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", spec)
        if match is None:
            raise SystemExit(f"{pyproject}: dependency {spec!r} has no plain '>=' lower bound")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    print("\n".join(lowest(root / "pyproject.toml")))
