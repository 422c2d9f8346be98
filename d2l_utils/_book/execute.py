"""Execute each chapter once per run, several at a time, into the website's jupyter-cache.

The website build (Jupyter Book, ``execute_notebooks: cache``) renders a notebook from its
jupyter-cache record when one matches the notebook's code, and executes it otherwise. The test
run checks that every chapter executes without error and within its time budget. Both would
execute every chapter, one after another in the build. This module lets them share one
execution:

* ``execute_stale`` runs every notebook that has no fresh record, ``jobs`` at a time, each in
  its own kernel with its share of the cores, and stores each success in the cache with its
  timings. The book's Sphinx extension calls it before Sphinx reads any page, so the build
  then only renders; the test plugin (``chapters/conftest.py``) calls ``execute`` for a
  notebook that has no fresh record, so a test run after a build only reads the records.
* A record is fresh when the notebook's code cells are unchanged (jupyter-cache's hash) *and*
  it was executed against the same ``d2l_utils`` source and on the same kind of device
  (``package_digest``, ``device_kind``): editing the package re-executes the chapters.

Kernels run as they do in the website build: ``D2L_BOOK_BUILD=1`` (interactive figures are
precomputed, progress bars are off), the notebook's folder as working directory, figures
inline. Run it by hand to fill the cache and print the times::

    python -m d2l_utils._book.execute                     # every stale chapter, 2 at a time
    python -m d2l_utils._book.execute chapters/03_training/09_activations.ipynb --force
    python -m d2l_utils._book.execute --record-gpu       # on a GPU machine: the times page's
                                                         # GPU column (D2L_DEVICE=cuda)
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "d2l_utils"
DEFAULT_CACHE = ROOT / "_build" / ".jupyter_cache"  # Jupyter Book 1's default location
TIMES_FILE = ROOT / "_build" / "notebook-times.json"
GPU_TIMES_FILE = ROOT / "chapters" / "00_front" / "gpu_times.json"
JOBS_ENV_VAR = "D2L_EXECUTE_JOBS"
BUDGET_ENV_VAR = "D2L_NOTEBOOK_BUDGET_S"
DEFAULT_TIMEOUT_S = 300  # per cell, as the build's ``execute.timeout``
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # colours in IPython's tracebacks


@dataclass
class Execution:
    """The outcome of one notebook's execution (now, or recorded in the cache).

    Attributes:
        notebook: path relative to the repository root.
        seconds: wall time of the whole notebook, kernel start included.
        cell_seconds: per code cell, in order (cells after a failure are missing).
        error: ``None`` on success, else the failing cell and its traceback.
        device: the device kind chapters computed on (``cpu``, ``cuda``, ``mps``).
        cached: True when read from a record rather than executed by this call.
        cores: CPUs of the machine that executed it; jobs: notebooks run at once there.
    """

    notebook: str
    seconds: float
    cell_seconds: list[float] = field(default_factory=list)
    error: str | None = None
    device: str = "cpu"
    cached: bool = False
    cores: int = 0
    jobs: int = 1

    @property
    def slowest_cell(self) -> tuple[int, float]:
        """(index among code cells, seconds) of the slowest cell."""
        if not self.cell_seconds:
            return -1, 0.0
        index = max(range(len(self.cell_seconds)), key=self.cell_seconds.__getitem__)
        return index, self.cell_seconds[index]


def budget_s() -> float:
    """A chapter's time budget on 2 CPU cores (``D2L_NOTEBOOK_BUDGET_S``, default 120 s)."""
    return float(os.environ.get(BUDGET_ENV_VAR, "120"))


def default_jobs() -> int:
    """Notebooks executed at once: ``D2L_EXECUTE_JOBS``, else 2 (4 on machines with 8+ cores);
    each kernel gets its share of the cores."""
    if os.environ.get(JOBS_ENV_VAR):
        return max(1, int(os.environ[JOBS_ENV_VAR]))
    return 4 if (os.cpu_count() or 1) >= 8 else 2


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """Every chapter notebook, in book order (by path)."""
    return sorted(p for p in (root / "chapters").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts)


@functools.cache
def package_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 of the reader-facing package's source (``_book/`` excluded): chapters executed
    against other code are stale. Computed once per process: the package does not change
    while a build or a test run reads its records."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if "_book" in path.relative_to(package_dir).parts:
            continue
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def device_kind() -> str:
    """The device kind chapters will compute on here, without importing torch in this process:
    ``D2L_DEVICE`` when set, else what ``get_device()`` picks (asked in a subprocess once)."""
    requested = os.environ.get("D2L_DEVICE", "").strip()
    if requested:
        return requested.split(":")[0]
    global _DEVICE_KIND
    if _DEVICE_KIND is None:
        probe = subprocess.run([sys.executable, "-c", "from d2l_utils.device import get_device;"
                                "print(get_device().type)"], capture_output=True, text=True)
        _DEVICE_KIND = probe.stdout.strip() or "cpu"
    return _DEVICE_KIND


_DEVICE_KIND: str | None = None


def _relative(path: Path) -> str:
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def cached_execution(path: Path, cache_path: Path = DEFAULT_CACHE) -> Execution | None:
    """The recorded execution of ``path`` if the cache holds a fresh one, else ``None``."""
    from jupyter_cache import get_cache

    if not Path(cache_path).is_dir():
        return None
    try:
        record = get_cache(str(cache_path)).match_cache_notebook(_read(path))
    except KeyError:
        return None
    data = record.data or {}
    if data.get("package_digest") != package_digest() or data.get("device") != device_kind():
        return None
    return Execution(_relative(path), float(data.get("execution_seconds", 0.0)),
                     list(data.get("cell_seconds", [])), None, data["device"], True,
                     int(data.get("cores", 0)), int(data.get("jobs", 1)))


def kernel_environment(jobs: int) -> dict[str, str]:
    """The environment of a kernel that executes a chapter as the website build does."""
    env = dict(os.environ)
    env["D2L_BOOK_BUILD"] = "1"  # precomputed interactive figures, no progress bars
    env.pop("MPLBACKEND", None)  # an exported Agg backend would drop every figure
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    env["OMP_NUM_THREADS"] = str(threads)  # each kernel its share of the cores
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def execute(path: Path, cache_path: Path = DEFAULT_CACHE, *, jobs: int = 1,
            timeout: int = DEFAULT_TIMEOUT_S) -> Execution:
    """Execute ``path`` in a fresh kernel; store a success in the cache; return the outcome.

    Args:
        path: the notebook.
        cache_path: the jupyter-cache folder the website build reads.
        jobs: how many notebooks run at once (sets this kernel's share of the cores).
        timeout: seconds a single cell may run.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path).resolve()
    notebook = _read(path)
    cell_seconds: list[float] = []
    started: list[tuple[int, float]] = []  # (index in the notebook's cells, start time)
    client = NotebookClient(
        notebook, timeout=timeout, allow_errors=False, record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_execute=lambda cell, cell_index: started.append((cell_index,
                                                                 time.perf_counter())),
        on_cell_executed=lambda cell, cell_index, execute_reply: cell_seconds.append(
            time.perf_counter() - started[-1][1]),
    )
    error = None
    start = time.perf_counter()
    try:
        client.execute(cwd=str(path.parent), env=kernel_environment(jobs))
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as failure:
        where = f"cell {started[-1][0]}" if started else "the kernel"
        error = f"{_relative(path)}, {where} (0-based, all cells counted) failed:\n" \
            + ANSI_ESCAPE.sub("", str(failure))
    seconds = time.perf_counter() - start
    outcome = Execution(_relative(path), seconds, cell_seconds, error, device_kind(), False,
                        os.cpu_count() or 1, jobs)
    if error is None:
        data = {"execution_seconds": seconds, "cell_seconds": cell_seconds,
                "package_digest": package_digest(), "device": outcome.device,
                "cores": outcome.cores, "jobs": jobs}
        Path(cache_path).mkdir(parents=True, exist_ok=True)
        get_cache(str(cache_path)).cache_notebook_bundle(
            CacheBundleIn(notebook, str(path), data=data), check_validity=False, overwrite=True)
    return outcome


def _execute_in_subprocess(path: Path, cache_path: Path, jobs: int, timeout: int) -> Execution:
    """``execute`` in a child process, so several notebooks can run at once."""
    result = subprocess.run(
        [sys.executable, "-m", "d2l_utils._book.execute", "--one", str(path),
         "--cache", str(cache_path), "--jobs", str(jobs), "--timeout", str(timeout)],
        capture_output=True, text=True)
    try:
        return Execution(**json.loads(result.stdout.strip().splitlines()[-1]))
    except (IndexError, json.JSONDecodeError, TypeError):
        return Execution(_relative(path), 0.0, [], "the executor itself failed:\n"
                         + result.stdout[-3000:] + result.stderr[-3000:], device_kind())


def execute_stale(paths: list[Path] | None = None, cache_path: Path = DEFAULT_CACHE, *,
                  jobs: int | None = None, timeout: int = DEFAULT_TIMEOUT_S, force: bool = False,
                  log=print) -> list[Execution]:
    """Execute every notebook of ``paths`` (default: all chapters) without a fresh record,
    ``jobs`` at a time, longest-known first; return every notebook's execution, recorded or
    new, in the order of ``paths``."""
    paths = [Path(p).resolve() for p in (paths or chapter_notebooks())]
    jobs = jobs or default_jobs()
    results: dict[Path, Execution] = {}
    for path in paths:
        recorded = None if force else cached_execution(path, cache_path)
        if recorded is not None:
            results[path] = recorded
    stale = [p for p in paths if p not in results]
    if stale:
        log(f"executing {len(stale)} notebook(s), {jobs} at a time "
            f"({len(results)} fresh in the cache)")
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_execute_in_subprocess, p, cache_path, jobs, timeout): p
                       for p in stale}
            for future, path in futures.items():
                results[path] = outcome = future.result()
                status = "ok" if outcome.error is None else "FAILED"
                log(f"  {outcome.notebook}: {outcome.seconds:.1f} s, {status}")
    return [results[p] for p in paths]


def times_table(executions: list[Execution]) -> str:
    """A markdown table of chapter times, with the total and the median."""
    budget = budget_s()
    lines = ["| notebook | seconds | slowest cell (s) | how | status |",
             "|---|---:|---:|---|---|"]
    for run in executions:
        index, slowest = run.slowest_cell
        status = "ok" if run.error is None else "FAILED"
        if run.seconds > budget:
            status += f", OVER BUDGET ({budget:.0f} s)"
        how = "from the cache" if run.cached else "executed now"
        lines.append(f"| {run.notebook} | {run.seconds:.1f} | {index}: {slowest:.1f} | {how} "
                     f"| {status} |")
    seconds = sorted(run.seconds for run in executions)
    if seconds:
        middle = len(seconds) // 2
        median = seconds[middle] if len(seconds) % 2 else (seconds[middle - 1]
                                                           + seconds[middle]) / 2
        lines.append(f"| total ({len(seconds)} notebooks, median {median:.1f} s) "
                     f"| {sum(seconds):.1f} | | | |")
    return "\n".join(lines)


def save_times(executions: list[Execution], target: Path = TIMES_FILE) -> None:
    """Write the executions (for the times page and the CI projection) as JSON, plus the
    markdown table beside it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": {"cores": os.cpu_count(), "platform": platform.platform()},
               "notebooks": [asdict(run) for run in executions]}
    target.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    target.with_suffix(".md").write_text(times_table(executions) + "\n", encoding="utf-8")


def record_gpu_times(executions: list[Execution], target: Path = GPU_TIMES_FILE) -> None:
    """Keep accelerator times for the times page's GPU column (commit the file)."""
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    payload = {"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "seconds": {run.notebook: round(run.seconds, 1) for run in executions
                           if run.error is None and run.device != "cpu"}}
    target.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def project_ci(stages: dict[str, float], planned: int, times: Path = TIMES_FILE,
               median_budget_s: float = 45.0) -> str:
    """Project CI's time for the finished book of ``planned`` chapters from this run.

    Args:
        stages: seconds of each CI stage, with keys ``setup`` (does not grow with the book)
            and any others (build, tests...: they grow in proportion to the chapters).
        planned: the number of chapters the finished book will have.
        times: the chapter times this run recorded (``save_times``).
        median_budget_s: what a new chapter is assumed to take in the pessimistic projection.
    """
    payload = json.loads(times.read_text(encoding="utf-8"))
    seconds = [run["seconds"] for run in payload["notebooks"]]
    jobs = max(run.get("jobs", 1) for run in payload["notebooks"])
    chapters, executing = len(seconds), sum(seconds) / jobs
    growing = sum(v for k, v in stages.items() if k != "setup") - executing
    scale = planned / chapters
    fixed = stages.get("setup", 0.0)
    at_mean = fixed + growing * scale + sum(seconds) * scale / jobs
    at_budget = fixed + growing * scale + (sum(seconds) + (planned - chapters)
                                           * median_budget_s) / jobs
    lines = [
        f"CI now: {sum(stages.values()) / 60:.1f} min for {chapters} chapters "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())}); chapters executed "
        f"{jobs} at a time: {sum(seconds):.0f} s of kernel time, about {executing:.0f} s of "
        f"wall time, each chapter once.",
        f"Projected for the finished book ({planned} chapters): {at_mean / 60:.1f} min if new "
        f"chapters cost what today's do on average ({sum(seconds) / chapters:.0f} s), "
        f"{at_budget / 60:.1f} min if each new chapter takes the {median_budget_s:.0f} s "
        f"median budget. CI's limit is 90 min; the target is under 45.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--force", action="store_true", help="execute even fresh notebooks")
    parser.add_argument("--record-gpu", action="store_true",
                        help=f"write the accelerator times to {GPU_TIMES_FILE.relative_to(ROOT)}")
    parser.add_argument("--project-ci", type=int, metavar="CHAPTERS",
                        help="print CI's projected time for a book of CHAPTERS chapters from "
                             "the times of the last run and --stages, then stop")
    parser.add_argument("--stages", default="", help="CI stage seconds: setup=60,build=200,...")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.project_ci:
        stages = {k: float(v) for k, v in (item.split("=") for item in args.stages.split(",")
                                           if item)}
        print(project_ci(stages, args.project_ci))
        return 0
    if args.one is not None:
        outcome = execute(args.one, args.cache, jobs=args.jobs or 1, timeout=args.timeout)
        print(json.dumps(asdict(outcome)))
        return 0
    executions = execute_stale(args.notebooks or None, args.cache, jobs=args.jobs,
                               timeout=args.timeout, force=args.force or args.record_gpu)
    print(times_table(executions))
    for run in executions:
        if run.error is not None:
            print(f"\n{run.notebook} FAILED:\n{run.error}", file=sys.stderr)
    if args.record_gpu:
        if device_kind() == "cpu":
            print("no accelerator: set D2L_DEVICE=cuda (or mps) on a GPU machine",
                  file=sys.stderr)
            return 1
        record_gpu_times(executions)
    if not args.notebooks:
        save_times(executions)
    failed = any(run.error is not None or run.seconds > budget_s() for run in executions)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
