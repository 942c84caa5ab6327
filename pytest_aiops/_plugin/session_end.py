"""The end of a session that used the plugin: release, the exit status, the end-of-run lines.

The plugin's own ``pytest_sessionfinish`` (registered with the plugin at start-up, so a
conftest's ``trylast`` one runs after it) calls :func:`finish` once the process holds
something.
:class:`SessionEnd` is registered with the xdist controller, or when a process builds its
worker (the first use of a fixture): a run that never uses the plugin has its hook neither to
register nor to call (every hook implementation costs every pytest run about 0.2M
instructions to register, issue 23). A failed release fails the run
(:func:`fail_on_release_errors`); :func:`summary_lines` says what each worker leased, kept or
fell back to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

from .settings import cli
from .xdist import WORKERINPUT_KEY

if TYPE_CHECKING:
    from typing import Protocol

    from .controller import XdistController
    from .worker import AiopsWorker

    class _State(Protocol):
        """What :class:`SessionEnd` reads of the plugin's per-process state."""

        controller: XdistController | None
        release_errors: list[str]

        @property
        def worker_built(self) -> AiopsWorker | None: ...


def finish(session: pytest.Session, state: _State) -> None:
    """The plugin's ``pytest_sessionfinish`` (``trylast``): release this process's
    resources, hand its summary to the xdist controller, and fail the run on a failed
    release."""
    worker = state.worker_built
    if worker is None:
        fail_on_release_errors(session, state)  # an xdist controller: its workers' releases
        return
    errors = worker.close()
    state.release_errors.extend(f"{type(e).__name__}: {e}" for e in errors)
    workeroutput = getattr(session.config, "workeroutput", None)
    if isinstance(workeroutput, dict):
        summary = worker.summary()
        summary["errors"] = state.release_errors
        workeroutput[WORKERINPUT_KEY] = summary
    fail_on_release_errors(session, state)


class SessionEnd:
    """The end-of-run lines (``pytest_terminal_summary``, ``trylast``: after other plugins'
    summaries), over the plugin's per-process state."""

    def __init__(self, state: _State) -> None:
        self.state = state

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(
        self, terminalreporter: Any, exitstatus: int, config: pytest.Config
    ) -> None:
        state = self.state
        worker = state.worker_built
        if state.controller is not None:
            summaries = state.controller.summaries
        elif worker is not None:
            summaries = [{**worker.summary(), "errors": state.release_errors}]
        else:
            return
        # Said when it matters (a fallback, kernel-chosen ports, kept worktrees, a failed
        # release or run) or when asked for (-v, -rA); a run that went well prints nothing.
        verbose = (
            exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
            or config.option.verbose > 0
            or "A" in (config.option.reportchars or "")
        )
        lines = summary_lines(summaries, verbose=verbose)
        if any(s.get("kept") for s in summaries):
            lines.append(
                f"aiops: worktrees kept by {cli('keep')} stay until you remove them: "
                "`git worktree remove --force PATH` (or `rm -r` a clone), or "
                "`pytest-aiops gc --kept`"
            )
        if state.controller is not None:
            lines += state.controller.crash_lines()
        lines += [
            f"aiops {s.get('workerId')}{' on ' + s['host'] if s.get('host') else ''}: "
            f"release failed: {e}"
            for s in summaries
            for e in s.get("errors") or ()
        ]
        for line in lines:
            terminalreporter.write_line(line)


def fail_on_release_errors(session: pytest.Session, state: _State) -> None:
    """A failed release (a leak) fails the run, as a failed fixture teardown does: exit
    status 1 where it would have been 0 (or 5). pytest returns ``session.exitstatus`` as set
    after ``pytest_sessionfinish``; an xdist controller sees its workers' failures here too
    (they arrived with ``pytest_testnodedown``)."""
    summaries = state.controller.summaries if state.controller is not None else []
    failed = state.release_errors or any(s.get("errors") for s in summaries)
    if failed and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def summary_lines(summaries: Sequence[dict[str, Any]], *, verbose: bool = True) -> list[str]:
    """One line per worker that leased ports or kept worktrees.

    Not ``verbose`` (``-v``/``-rA`` not given, the run passed): only the lines that matter, a
    worker that fell back (another slice, kernel-chosen ports) or kept a worktree. Ports busy
    at lease are the pool doing its job (on a shared machine, most runs meet some), so they
    are told with the rest; a run where all went well prints nothing, as pytest-xdist does.
    """
    lines: list[str] = []
    for summary in sorted(summaries, key=lambda s: str(s.get("workerId"))):
        parts: list[str] = []
        matters = False
        port_range = summary.get("range")
        if port_range:
            where = (
                f"slice {summary['childIndex']}" if summary.get("childIndex") is not None else ""
            )
            parts.append(
                f"ports {port_range[0]}-{port_range[1]}" + (f" ({where})" if where else "")
            )
        pool = summary.get("pool") or {}
        blocks = pool.get("blocks") or []
        if len(blocks) > 1:
            extra = ", ".join(f"{start}-{end}" for start, end in blocks[1:])
            parts.append(
                f"pool grew by {len(blocks) - 1} block(s) ({extra}; bound {pool.get('maxPorts')})"
            )
        if pool.get("busy"):
            busy = ", ".join(str(port) for port in pool["busy"][:10])
            more = f" and {len(pool['busy']) - 10} more" if len(pool["busy"]) > 10 else ""
            parts.append(f"busy at lease, kept back until free: {busy}{more}")
        if pool.get("kernelPorts"):
            matters = True
            parts.append(
                f"{pool['kernelPorts']} kernel-chosen port(s) handed out ({pool.get('growError')})"
            )
        if summary.get("fallback"):
            matters = True
            moved = "took another slice" if summary.get("childIndex") is not None else "own block"
            parts.append(f"{moved} because {summary['fallback']}")
        for path in summary.get("kept") or ():
            matters = True
            parts.append(f"kept worktree {path}")
        if parts and (matters or verbose):
            host = f" on {summary['host']}" if summary.get("host") else ""
            lines.append(f"aiops {summary.get('workerId')}{host}: " + "; ".join(parts))
    return lines
