"""What the benchmarks share: a race between two training recipes, each traced as (training
seconds so far, metric) at every check, and the table that says who reached the first recipe's
final metric first."""

from __future__ import annotations

import torch

Trace = list[tuple[float, float]]  # (training seconds so far, metric at that check)


def first_time_at(trace: Trace, target: float, higher_is_better: bool) -> float | None:
    """Training seconds at the first check whose metric reaches ``target`` (None if none)."""
    reached = (lambda m: m >= target) if higher_is_better else (lambda m: m <= target)
    return next((seconds for seconds, metric in trace if reached(metric)), None)


def report(traces: dict[str, Trace], metric: str, higher_is_better: bool) -> None:
    """Print, for each recipe, its final ``metric``, its training seconds and the seconds it
    needed to first reach the first recipe's final metric; then the first two recipes'
    ratios (a floor when the second reached the target at its very first check)."""
    (base_name, base), (ours_name, ours) = list(traces.items())[:2]
    target = base[-1][1]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"target = the first recipe's final {metric} {target:.4f}")
    width, column = max(len(name) for name in traces) + 2, max(10, len(metric))
    print(f"{'recipe':<{width}} {metric:>{column}} {'seconds':>8} {'s to target':>11}")
    reach = {}
    for name, trace in traces.items():
        reach[name] = first_time_at(trace, target, higher_is_better)
        shown = "never" if reach[name] is None else f"{reach[name]:.1f}"
        print(f"{name:<{width}} {trace[-1][1]:>{column}.4f} {trace[-1][0]:>8.1f} {shown:>11}")
    if reach[ours_name] is not None:
        floor = "at least " if reach[ours_name] == ours[0][0] else ""
        print(f"time-to-target ratio (first / second): {floor}"
              f"{reach[base_name] / reach[ours_name]:.1f}x; total-time ratio: "
              f"{base[-1][0] / ours[-1][0]:.1f}x")
