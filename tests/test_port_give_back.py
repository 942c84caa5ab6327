"""A test's ports come back when it ends, whoever makes its reports and whenever they are
logged, and a note is never carried to another report (issue 23's fresh-eyes review: the
plain ``pytest_runtest_makereport`` hook and the reporter's one ``logfinish`` hook)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("private_lock_dir")

#: A port range of these tests' own, outside the default range other runs lease in.
RANGE = "--aiops-port-range=31400-31599"

PRINTS_HANDED_OUT = """
import json, pytest, pytest_aiops

def test_zz_last(port_range):
    with open("handed_out.json", "w") as out:
        json.dump({str(k): str(v) for k, v in port_range.handed_out.items()}, out)
"""


def _handed_out(pytester: pytest.Pytester, *args: str, passed: int) -> dict[str, Any]:
    result = pytester.runpytest_subprocess(RANGE, "-p", "no:randomly", "-W", "error", *args)
    result.assert_outcomes(passed=passed)
    found: dict[str, Any] = json.loads(Path(pytester.path, "handed_out.json").read_text())
    return found


def test_ports_come_back_when_another_plugin_makes_the_reports(pytester: pytest.Pytester) -> None:
    """A ``tryfirst`` makereport that returns the report skips the plugin's own (it is a
    ``firstresult`` hook): the ports must still come back at each test's end."""
    pytester.makeconftest(
        "import pytest\n"
        "from _pytest.reports import TestReport\n\n"
        "@pytest.hookimpl(tryfirst=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    return TestReport.from_item_and_call(item, call)\n"
    )
    pytester.makepyfile(
        test_a="@__import__('pytest').mark.parametrize('n', range(40))\n"
        "def test_takes(aiops_port, n):\n    pass\n",
        test_b=PRINTS_HANDED_OUT,
    )
    assert _handed_out(pytester, passed=41) == {}


def test_a_port_taken_in_a_fixtures_teardown_comes_back_after_the_test(
    pytester: pytest.Pytester,
) -> None:
    """pytest pops a test's item off its setup stack before running its finalizers: a port
    taken there is still the test's, not the session's."""
    pytester.makepyfile(
        test_a="import pytest, pytest_aiops\n\n"
        "@pytest.fixture\n"
        "def checker():\n"
        "    yield\n"
        "    pytest_aiops.take_port()\n\n"
        "def test_one(checker, port_range):\n    pass\n",
        test_b=PRINTS_HANDED_OUT,
    )
    assert _handed_out(pytester, passed=2) == {}


def test_a_note_waits_for_its_own_failed_report_only() -> None:
    """A raise noted for a report that does not end failed (a rerun, an xfail) is dropped
    with it, not added to a later failure of the same test and phase (pytest-rerunfailures
    logs its attempts so; the reports are made here, as it makes them)."""
    from pytest_aiops._plugin.report import PortHolderNotes

    class Report:
        nodeid, when = "test_x.py::test_x", "call"

        def __init__(self, outcome: str) -> None:
            self.failed = outcome == "failed"
            self.sections: list[tuple[str, str]] = []

    reports = PortHolderNotes(state=None)  # type: ignore[arg-type]  # not reached: nothing fails
    reports.pending[("test_x.py::test_x", "call")] = (None, OSError(98, "in use"))  # type: ignore[assignment]
    reports.pytest_runtest_logreport(Report("rerun"))  # type: ignore[arg-type]
    assert reports.pending == {}
    failed = Report("failed")
    reports.pytest_runtest_logreport(failed)  # type: ignore[arg-type]
    assert failed.sections == []
