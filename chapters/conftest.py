"""How the test command runs the chapters: nbval executes every notebook, and this plugin
times each one and prints the table at the end of the run.

A chapter's time is the sum over its cells (the kernel start is part of the first cell).
A chapter over the budget (``D2L_NOTEBOOK_BUDGET_S``, default 120 s) fails the run: a
slow chapter is a bug. The table is also written to ``_build/notebook-times.md``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = float(os.environ.get("D2L_NOTEBOOK_BUDGET_S", "120"))
_seconds: dict[str, float] = defaultdict(float)
_failed: set[str] = set()

# Chapters read the book's data through the registry; point it at the shared mirror when
# the caller has not chosen a folder (the kernels nbval starts inherit the environment).
_shared = ROOT.parent / "shared" / "data"
if "D2L_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["D2L_DATA_DIR"] = str(_shared)


# Two notebooks at a time on a small machine: give each kernel its share of the cores
# instead of letting every kernel start one thread per core.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


def _notebook_of(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return path if path.endswith(".ipynb") else None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    notebook = _notebook_of(report.nodeid)
    if notebook is None:
        return
    _seconds[notebook] += report.duration
    if report.failed:
        _failed.add(notebook)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if any(seconds > BUDGET_S for seconds in _seconds.values()) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _seconds:
        return
    times = sorted(_seconds.values())
    median = times[len(times) // 2] if len(times) % 2 else sum(times[len(times) // 2 - 1:
                                                                     len(times) // 2 + 1]) / 2
    lines = ["| notebook | seconds | status |", "|---|---:|---|"]
    for notebook, seconds in sorted(_seconds.items()):
        status = "FAILED" if notebook in _failed else "ok"
        if seconds > BUDGET_S:
            status += f", OVER BUDGET ({BUDGET_S:.0f} s)"
        lines.append(f"| {notebook} | {seconds:.1f} | {status} |")
    lines.append(f"| total ({len(times)} notebooks, median {median:.1f} s) | {sum(times):.1f} | |")
    terminalreporter.section("notebook times")
    for line in lines:
        terminalreporter.write_line(line)
    out = ROOT / "_build" / "notebook-times.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
