"""How the test command runs the chapters: each notebook is one test, executed once per run.

A chapter passes when every cell executes without error (each claim is an ``assert`` in a
cell) and within the time budget (``D2L_NOTEBOOK_BUDGET_S``, default 120 s on 2 cores).
The execution is shared with the website build (``d2l_utils._book.execute``): when the
build's jupyter-cache already holds a fresh execution of the notebook (same code, same
``d2l_utils`` source, same device kind), the test reads that record instead of executing the
chapter a second time; otherwise it executes the notebook and stores the result, which the
build then renders. Either way the run ends with a table of every chapter's time, also
written to ``_build/notebook-times.md``.

``pytest --nbval-lax chapters/...`` still works for a cell-by-cell run of one notebook
(nbval then collects the notebooks instead of this plugin).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_runs: dict[str, dict] = {}
_nbval_seconds: dict[str, float] = {}

# Chapters read the book's data through the registry; point it at the shared mirror when
# the caller has not chosen a folder (the kernels inherit the environment).
_shared = ROOT.parent / "shared" / "data"
if "D2L_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["D2L_DATA_DIR"] = str(_shared)


def _nbval_active(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax",
                                                                    False))


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix == ".ipynb" and not _nbval_active(parent.config) \
            and ".ipynb_checkpoints" not in file_path.parts:
        return ChapterFile.from_parent(parent, path=file_path)
    return None


class ChapterFile(pytest.File):
    def collect(self):
        yield ChapterItem.from_parent(self, name="executes")


class ChapterFailure(Exception):
    """A chapter failed to execute or ran over its budget."""


class ChapterItem(pytest.Item):
    def runtest(self) -> None:
        from d2l_utils._book import execute

        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        run = execute.cached_execution(self.path) or execute.execute(self.path, jobs=workers)
        self.user_properties.append(("chapter_run", {
            "notebook": run.notebook, "seconds": run.seconds, "cached": run.cached,
            "cell_seconds": run.cell_seconds, "failed": run.error is not None,
            "device": run.device, "cores": run.cores, "jobs": run.jobs}))
        if run.error is not None:
            raise ChapterFailure(run.error)
        if run.seconds > execute.budget_s():
            index, slowest = run.slowest_cell
            raise ChapterFailure(f"{run.notebook} took {run.seconds:.1f} s, over the budget of "
                                 f"{execute.budget_s():.0f} s (slowest: code cell {index}, "
                                 f"{slowest:.1f} s). A slow chapter is a bug.")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ChapterFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"{self.path.relative_to(ROOT)}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in getattr(report, "user_properties", []):
        if name == "chapter_run":
            _runs[value["notebook"]] = value
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb") and report.nodeid.count("::") and "::Cell" in report.nodeid:
        _nbval_seconds[path] = _nbval_seconds.get(path, 0.0) + report.duration  # nbval cells


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from d2l_utils._book.execute import Execution, budget_s, save_times, times_table

    runs = [Execution(v["notebook"], v["seconds"], v["cell_seconds"],
                      "failed" if v["failed"] else None, v["device"], v["cached"], v["cores"],
                      v["jobs"])
            for _, v in sorted(_runs.items())]
    runs += [Execution(notebook, seconds) for notebook, seconds in sorted(_nbval_seconds.items())]
    if not runs:
        return
    executed = sum(not run.cached for run in runs)
    terminalreporter.section("notebook times")
    terminalreporter.write_line(
        f"{executed} chapter(s) executed by this run, {len(runs) - executed} read from the "
        f"website build's cache (each chapter executes once per run); budget {budget_s():.0f} s")
    for line in times_table(runs).splitlines():
        terminalreporter.write_line(line)
    if _runs:
        save_times(runs, ROOT / "_build" / "notebook-times.json")
