"""The benchmarks in bench/ are run by hand, not by CI, so CI at least imports each of them (a
renamed function in d2l_utils breaks them at import) and checks the race they share."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture()
def bench_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in [n for n in sys.modules if n == "_race" or n.endswith("_speed")]:
        sys.modules.pop(name)


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py")))
def test_every_benchmark_imports(bench_on_path, script):
    module = importlib.import_module(script)
    assert module.__doc__, f"bench/{script}.py needs a docstring saying what it measures"


def test_the_race_finds_the_first_check_that_reaches_the_target(bench_on_path, capsys):
    race = importlib.import_module("_race")
    trace = [(1.0, 0.5), (2.0, 0.8), (3.0, 0.9)]
    assert race.first_time_at(trace, 0.8, higher_is_better=True) == 2.0
    assert race.first_time_at(trace, 0.95, higher_is_better=True) is None
    assert race.first_time_at([(1.0, 5.0), (2.0, 3.5)], 4.0, higher_is_better=False) == 2.0
    race.report({"slow": [(2.0, 0.7), (4.0, 0.8)], "fast": [(1.0, 0.75), (2.0, 0.85)]},
                "test accuracy", higher_is_better=True)
    printed = capsys.readouterr().out
    assert "time-to-target ratio (first / second): 2.0x; total-time ratio: 2.0x" in printed
