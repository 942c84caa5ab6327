"""What pytest-aiops costs a test run: wall-time ratios measured in one invocation.

1. ``unused``: 2,000 trivial tests with the plugin installed and active but no fixture used,
   against the same run with ``-p no:aiops``. Target: at most 1.02x.
2. ``ports -n 2``: 2,000 tests under ``-n 2`` where every test takes its own port
   (``aiops_port``), against the same tests under ``-n 2 -p no:aiops`` with a stand-in
   ``aiops_port`` fixture that returns a constant. Target: at most 1.05x.

Runs alternate (A, B, A, B, ...) so drift in machine load hits both sides alike. The verdict
uses the ratio of the best (minimum) times, since load from other processes on a shared box
only ever adds time; the ratio of the medians is printed too. Usage::

    python bench/plugin.py [--repeat 7] [--tests 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ["-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest", "-q"]

TRIVIAL = """
import pytest

@pytest.mark.parametrize("i", range({per_file}))
def test_trivial(i):
    assert i >= 0
"""

TAKES_PORT = """
import pytest

@pytest.mark.parametrize("i", range({per_file}))
def test_takes_a_port(aiops_port, i):
    assert aiops_port >= 0
"""

STAND_IN = """
import pytest

@pytest.fixture
def aiops_port():
    return 0
"""


def make_suite(root: Path, name: str, body: str, tests: int, conftest: str = "") -> Path:
    """``tests`` tests spread over 20 modules under ``root/name`` (its own rootdir)."""
    suite = root / name
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    if conftest:
        (suite / "conftest.py").write_text(conftest)
    files = 20
    for index in range(files):
        count = tests // files + (1 if index < tests % files else 0)
        (suite / f"test_{index:02d}.py").write_text(body.format(per_file=count))
    return suite


def timed(suite: Path, args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *QUIET, *args],
        cwd=suite,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark run failed in {suite} {args}:\n{result.stdout[-3000:]}")
    return elapsed


def compare(
    label: str,
    a: tuple[Path, list[str]],
    b: tuple[Path, list[str]],
    *,
    repeat: int,
    env: dict[str, str],
    target: float,
) -> float:
    timed(*a, env)  # warm the file cache and .pyc files; not counted
    timed(*b, env)
    with_plugin: list[float] = []
    without: list[float] = []
    for _ in range(repeat):
        with_plugin.append(timed(*a, env))
        without.append(timed(*b, env))
    median = statistics.median(with_plugin) / statistics.median(without)
    ratio = min(with_plugin) / min(without)
    verdict = "ok" if ratio <= target else "OVER TARGET"
    print(
        f"{label:<12} with aiops median {statistics.median(with_plugin):6.3f}s "
        f"(best {min(with_plugin):6.3f}s)  baseline median {statistics.median(without):6.3f}s "
        f"(best {min(without):6.3f}s)  ratio best-of {ratio:.3f}x (median {median:.3f}x)  "
        f"target <= {target:.2f}x: {verdict}"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per side (default 7)")
    parser.add_argument("--tests", type=int, default=2000, help="tests per suite (default 2000)")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aiops-bench-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env["PYTEST_AIOPS_LOCK_DIR"] = str(root / "locks")  # no contention with other runs
        unused = make_suite(root, "unused", TRIVIAL, options.tests)
        ports = make_suite(root, "ports", TAKES_PORT, options.tests)
        stand_in = make_suite(root, "stand_in", TAKES_PORT, options.tests, STAND_IN)
        # Each worker may run most of the tests under load scheduling: room for all of them.
        per_worker = f"--aiops-ports-per-worker={options.tests}"
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {options.tests} tests, "
            f"{options.repeat} runs per side"
        )
        first = compare(
            "unused",
            (unused, []),
            (unused, ["-p", "no:aiops"]),
            repeat=options.repeat,
            env=env,
            target=1.02,
        )
        second = compare(
            "ports -n 2",
            (ports, ["-n", "2", per_worker]),
            (stand_in, ["-n", "2", "-p", "no:aiops"]),
            repeat=options.repeat,
            env=env,
            target=1.05,
        )
    return 0 if first <= 1.02 and second <= 1.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
