"""Each chapter executes once per run: the executor's cache records, their freshness, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from d2l_utils._book import execute


def notebook(*sources: str) -> str:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# A chapter"}]
    cells += [{"cell_type": "code", "metadata": {}, "source": source, "outputs": [],
               "execution_count": None} for source in sources]
    return json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 4, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}})


@pytest.fixture
def chapter(tmp_path) -> Path:
    path = tmp_path / "chapter.ipynb"
    path.write_text(notebook("import os\nx = 6 * 7", "assert x == 42\n"
                             "assert os.environ['D2L_BOOK_BUILD'] == '1'"))
    return path


def test_a_success_is_recorded_and_then_read_not_executed_again(chapter, tmp_path):
    cache = tmp_path / "cache"
    assert execute.cached_execution(chapter, cache) is None
    run = execute.execute(chapter, cache)
    assert run.error is None and not run.cached and len(run.cell_seconds) == 2
    assert run.seconds >= sum(run.cell_seconds) > 0
    recorded = execute.cached_execution(chapter, cache)
    assert recorded is not None and recorded.cached
    assert recorded.seconds == pytest.approx(run.seconds)
    assert recorded.cell_seconds == pytest.approx(run.cell_seconds)


def test_the_website_build_finds_the_record(chapter, tmp_path):
    """MyST-NB matches the cache with jupyter-cache's hash of the notebook as read from disk."""
    import nbformat
    from jupyter_cache import get_cache

    cache = tmp_path / "cache"
    execute.execute(chapter, cache)
    record = get_cache(str(cache)).match_cache_notebook(nbformat.read(chapter, as_version=4))
    assert record.data["execution_seconds"] > 0


def test_a_record_is_stale_when_the_code_the_package_or_the_device_changes(
        chapter, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    execute.execute(chapter, cache)
    monkeypatch.setattr(execute, "package_digest", lambda *a: "another package")
    assert execute.cached_execution(chapter, cache) is None
    monkeypatch.undo()
    monkeypatch.setenv("D2L_DEVICE", "cuda")
    assert execute.cached_execution(chapter, cache) is None
    monkeypatch.undo()
    chapter.write_text(notebook("x = 6 * 7", "assert x == 42  # edited"))
    assert execute.cached_execution(chapter, cache) is None


def test_a_failing_cell_is_reported_and_never_cached(tmp_path):
    path = tmp_path / "failing.ipynb"
    path.write_text(notebook("x = 1", "assert x == 2, 'the claim does not hold'"))
    run = execute.execute(path, tmp_path / "cache")
    assert run.error is not None
    assert "cell 2 (0-based" in run.error and "AssertionError: the claim does not hold" in run.error
    assert execute.cached_execution(path, tmp_path / "cache") is None


def test_execute_stale_runs_only_what_is_not_fresh(chapter, tmp_path):
    cache = tmp_path / "cache"
    other = tmp_path / "other.ipynb"
    other.write_text(notebook("y = 2"))
    execute.execute(chapter, cache)
    runs = execute.execute_stale([chapter, other], cache, jobs=2, log=lambda line: None)
    assert [run.cached for run in runs] == [True, False]
    assert all(run.error is None for run in runs)
    assert execute.cached_execution(other, cache) is not None


def test_the_times_table_flags_a_chapter_over_budget(monkeypatch):
    monkeypatch.setenv(execute.BUDGET_ENV_VAR, "10")
    runs = [execute.Execution("a.ipynb", 4.0, [1.0, 3.0]),
            execute.Execution("b.ipynb", 12.0, [12.0], cached=True)]
    table = execute.times_table(runs)
    assert "| a.ipynb | 4.0 | 1: 3.0 | executed now | ok |" in table
    assert "b.ipynb | 12.0 | 0: 12.0 | from the cache | ok, OVER BUDGET (10 s)" in table
    assert "median 8.0 s" in table and "| 16.0 |" in table


def test_the_ci_projection_scales_what_grows_with_the_book(tmp_path):
    times = tmp_path / "times.json"
    execute.save_times([execute.Execution("a.ipynb", 20.0, jobs=2),
                        execute.Execution("b.ipynb", 40.0, jobs=2)], times)
    text = execute.project_ci({"setup": 60.0, "build": 100.0, "tests": 50.0}, 4, times)
    # now: 30 s of the 150 s of build and tests is executing; the rest (120 s) doubles,
    # executing doubles at today's mean (60 s) or adds 2 chapters at 45 s (45 s more).
    assert "3.5 min for 2 chapters" in text
    assert f"{(60 + 240 + 60) / 60:.1f} min if new chapters" in text
    assert f"{(60 + 240 + 75) / 60:.1f} min if each new chapter" in text
