"""``python -m pytest_aiops``: the same command line as the ``pytest-aiops`` script."""

from __future__ import annotations

import sys

from ._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
