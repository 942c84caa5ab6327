"""Sphinx configuration for the pytest-aiops documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
"""

from __future__ import annotations

import sys
from pathlib import Path

# Document the tree these docs sit in, not whatever copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest_aiops

project = "pytest-aiops"
author = "the pytest-aiops authors"
copyright = "the pytest-aiops authors, MIT licence"
version = release = pytest_aiops.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
master_doc = root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}


html_theme = "alabaster"
html_title = f"pytest-aiops {release}"
