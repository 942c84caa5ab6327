"""Every inner pytest run must be warning-free: its warnings, and the ones a test expects."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

import pytest

#: A warning entry in pytest's "warnings summary", or a raw one on stderr: "XxxWarning: text".
_WARNING_LINE = re.compile(r"\b\w*Warning: ")


def inner_warnings(stdout: str, stderr: str = "") -> list[str]:
    """The warnings an inner pytest run reported: its summary's entries and raw stderr ones."""
    found: list[str] = []
    in_summary = False
    for line in stdout.splitlines():
        if re.match(r"^=+ warnings summary", line):
            in_summary = True
            continue
        if in_summary and re.match(r"^(=+ |-- Docs: )", line):
            in_summary = False
        if in_summary and _WARNING_LINE.search(line):
            found.append(line.strip())
    found += [line.strip() for line in stderr.splitlines() if _WARNING_LINE.search(line)]
    summary = [line for line in stdout.splitlines() if re.match(r"^=+ .* in [\d.]+s", line)]
    if summary and re.search(r"\b\d+ warnings?\b", summary[-1]) and not found:
        found.append(summary[-1].strip("= "))  # counted, yet not shown (e.g. -p no:warnings)
    return found


def check_inner_warnings(stdout: str, stderr: str, allowed: Sequence[str]) -> None:
    """Fail if an inner run emitted a warning no pattern in ``allowed`` (fnmatch) expects.

    A plugin runs inside other people's suites, many with ``filterwarnings = error``: a
    warning from it is a failure there, so it is one here.
    """
    unexpected = [
        text
        for text in inner_warnings(stdout, stderr)
        if not any(fnmatch.fnmatch(text, pattern) for pattern in allowed)
    ]
    if unexpected:
        pytest.fail(
            "the inner pytest run emitted unexpected warnings (mark the test with "
            "@pytest.mark.inner_warnings(pattern, ...) if they are expected):\n  "
            + "\n  ".join(unexpected)
            + f"\n--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-2000:]}"
        )


def allowed_inner_warnings(request: pytest.FixtureRequest) -> list[str]:
    """The fnmatch patterns of the test's ``inner_warnings`` markers."""
    return [
        str(pattern)
        for marker in request.node.iter_markers("inner_warnings")
        for pattern in marker.args
    ]
