"""What pytest-aiops costs a test run: wall-time ratios measured in one invocation.

1. ``unused``: 2,000 trivial tests with the plugin installed and active but no fixture used,
   against the same run with ``-p no:aiops``. Target: at most 1.02x.
2. ``ports -n 2``: 2,000 tests under ``-n 2`` where every test takes its own port
   (``aiops_port``) and binds it, against the same tests under ``-n 2 -p no:aiops`` with a
   stand-in ``aiops_port`` fixture doing what suites do without pytest-aiops: ask the kernel
   for a free ephemeral port (bind port 0). Target: at most 1.05x.

Runs alternate (A, B, A, B, ...) so drift in machine load hits both sides alike. The verdict
is on the ratio of median wall times; the best-of ratio and the ratio of CPU time (user +
system of the run and all its processes, which load from other processes on a shared box
disturbs far less than wall time) are printed beside it. Usage::

    python bench/plugin.py [--repeat 7] [--tests 2000] [--other-tree DIR ...]

``--other-tree DIR`` (repeatable) times the ``ports -n 2`` case once more per round with the
package from ``DIR`` (first on ``PYTHONPATH``, ahead of the installed one), so two commits are
compared in one run against the same baseline. Give both as trees (``git archive REV
pytest_aiops | tar -x -C DIR``): a package loaded from ``PYTHONPATH`` starts slower than the
installed one (about 0.1 s a run here), which would favour the installed side.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

QUIET = ["-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest", "-q"]

TRIVIAL = """
import pytest

@pytest.mark.parametrize("i", range({per_file}))
def test_trivial(i):
    assert i >= 0
"""

TAKES_PORT = """
import socket
import pytest

@pytest.mark.parametrize("i", range({per_file}))
def test_takes_a_port(aiops_port, i):
    with socket.socket() as server:
        server.bind(("127.0.0.1", aiops_port))
"""

STAND_IN = """
import socket
import pytest

@pytest.fixture
def aiops_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
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


def timed(suite: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system, the run and every process it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"benchmark run failed in {suite} {args}:\n{result.stdout[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def _summary(label: str, a: list[tuple[float, float]], b: list[tuple[float, float]]) -> str:
    wall_a, wall_b = [w for w, _ in a], [w for w, _ in b]
    cpu_a, cpu_b = [c for _, c in a], [c for _, c in b]
    ratio = statistics.median(wall_a) / statistics.median(wall_b)
    best = min(wall_a) / min(wall_b)
    cpu = statistics.median(cpu_a) / statistics.median(cpu_b)
    return (
        f"{label:<11} wall median {statistics.median(wall_a):.3f}s vs "
        f"{statistics.median(wall_b):.3f}s = {ratio:.3f}x (best-of {best:.3f}x); "
        f"CPU median {statistics.median(cpu_a):.3f}s vs {statistics.median(cpu_b):.3f}s = "
        f"{cpu:.3f}x"
    )


def compare(
    label: str,
    a: tuple[Path, list[str]],
    b: tuple[Path, list[str]],
    *,
    repeat: int,
    env: dict[str, str],
    target: float,
    others: Sequence[tuple[str, dict[str, str]]] = (),
) -> float:
    """Time ``a`` (the plugin) against ``b`` (the baseline), alternating; for each of
    ``others`` (a label and an environment), ``a`` also runs under that environment in the
    same alternation (another checkout of the package), against the same baseline."""
    timed(*a, env)  # warm the file cache and .pyc files; not counted
    timed(*b, env)
    for _, other_env in others:
        timed(*a, other_env)
    with_plugin: list[tuple[float, float]] = []
    without: list[tuple[float, float]] = []
    with_others: list[list[tuple[float, float]]] = [[] for _ in others]
    for _ in range(repeat):
        with_plugin.append(timed(*a, env))
        without.append(timed(*b, env))
        for (_, other_env), samples in zip(others, with_others, strict=True):
            samples.append(timed(*a, other_env))
    ratio = statistics.median(w for w, _ in with_plugin) / statistics.median(w for w, _ in without)
    verdict = "ok" if ratio <= target else "OVER TARGET"
    print(f"{_summary(label, with_plugin, without)}; target <= {target:.2f}x wall: {verdict}")
    for (other_label, _), samples in zip(others, with_others, strict=True):
        print(f"{_summary(other_label, samples, without)} (same baseline, same runs)")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per side (default 7)")
    parser.add_argument("--tests", type=int, default=2000, help="tests per suite (default 2000)")
    parser.add_argument(
        "--other-tree",
        metavar="DIR",
        action="append",
        default=[],
        help="also time the 'ports -n 2' case with the pytest_aiops package found in DIR "
        "(first on PYTHONPATH; e.g. a commit from 'git archive REV pytest_aiops'), in the "
        "same alternation; repeatable. Give both sides as trees: loading the package from "
        "PYTHONPATH itself costs a little",
    )
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aiops-bench-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env["PYTEST_AIOPS_LOCK_DIR"] = str(root / "locks")  # no contention with other runs
        unused = make_suite(root, "unused", TRIVIAL, options.tests)
        ports = make_suite(root, "ports", TAKES_PORT, options.tests)
        stand_in = make_suite(root, "stand_in", TAKES_PORT, options.tests, STAND_IN)
        # Load scheduling splits the tests about evenly; leave each worker ample room.
        per_worker = f"--aiops-ports-per-worker={options.tests * 3 // 4}"
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
            others=[
                (f"  tree {index}", {**env, "PYTHONPATH": os.path.abspath(tree)})
                for index, tree in enumerate(options.other_tree, 1)
            ],
        )
    return 0 if first <= 1.02 and second <= 1.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
