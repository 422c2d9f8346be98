"""Tests for d2l_utils.distributed (chapter 32): ring all-reduce against dist.all_reduce in real
process groups, the alpha-beta cost model, ZeRO's memory arithmetic, and bad inputs; and the
batch dealing of d2l_utils.ddp_train."""

from __future__ import annotations

import math

import pytest
import torch

from d2l_utils.ddp_train import per_worker_batch, rank_batches
from d2l_utils.distributed import (
    data_parallel_speedup,
    fit_alpha_beta,
    launch,
    ring_all_reduce,
    ring_all_reduce_time,
    survey_all_reduce,
    zero_memory_per_gpu,
)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ring_all_reduce_equals_dist_all_reduce(world_size):
    # sizes below, at and above the number of chunks, none divisible by 2 and 3 at once
    results = launch(survey_all_reduce, world_size, [1, 2, 5, 13, 1_001], (), 1,
                     start_method="fork")
    assert len(results) == world_size
    assert all(r["max_error"] < 1e-12 and r["seconds"] == [] for r in results)


def test_ring_all_reduce_time_formula():
    assert ring_all_reduce_time(1e6, 1, 1e-5, 1e-9) == 0.0
    for p in (2, 8, 1024):
        expected = 2 * (p - 1) * 1e-5 + 2 * (p - 1) / p * 1e6 * 1e-9
        assert math.isclose(ring_all_reduce_time(1e6, p, 1e-5, 1e-9), expected, rel_tol=1e-12)
    # bandwidth term per worker below 2 n beta whatever p
    assert ring_all_reduce_time(1e6, 4096, 0.0, 1.0) < 2e6


def test_fit_alpha_beta_recovers_the_model():
    alpha, beta = 3e-5, 2e-10
    nbytes = [1e3, 1e4, 1e5, 1e6, 1e7]
    seconds = [ring_all_reduce_time(n, 4, alpha, beta) for n in nbytes]
    fitted = fit_alpha_beta(nbytes, seconds, 4)
    assert math.isclose(fitted[0], alpha, rel_tol=1e-8)
    assert math.isclose(fitted[1], beta, rel_tol=1e-8)


def test_data_parallel_speedup():
    assert data_parallel_speedup(1, 0.1, 1e8, 1e-5, 1e-9) == 1.0
    assert math.isclose(data_parallel_speedup(64, 0.1, 1e8, 0.0, 0.0), 64.0)
    speedups = [data_parallel_speedup(2**i, 0.25, 1e8, 1e-5, 8e-11) for i in range(11)]
    efficiency = [s / 2**i for i, s in enumerate(speedups)]
    assert all(a < b for a, b in zip(speedups, speedups[1:]))
    assert all(a > b for a, b in zip(efficiency[1:], efficiency[2:])) and efficiency[1] < 1


def test_zero_memory_matches_the_paper():
    quoted = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.9}  # GB, 7.5 B parameters on 64 GPUs
    for stage, gb in quoted.items():
        assert abs(zero_memory_per_gpu(7.5e9, 64, stage) / 1e9 - gb) < 0.05
    assert zero_memory_per_gpu(1.0, 1, 3) == 16.0  # one GPU: no saving at any stage
    assert math.isclose(zero_memory_per_gpu(1e9, 8, 3), 16e9 / 8)
    assert math.isclose(zero_memory_per_gpu(1e9, 8, 1, optimizer_bytes=8), 1e9 * (4 + 1))


def test_rank_batches_partition_the_data():
    streams = [rank_batches(100, 2, rank, 10, seed=3) for rank in range(2)]
    epoch = [next(stream) for _ in range(5) for stream in streams]  # 5 batches of 10 per rank
    assert sorted(torch.cat(epoch).tolist()) == list(range(100))  # each index once per epoch
    assert per_worker_batch(64, 2) == 32


def test_bad_inputs():
    with pytest.raises(ValueError, match="world_size must be in"):
        launch(survey_all_reduce, 0, [1])
    with pytest.raises(TypeError, match="world_size must be an int"):
        launch(survey_all_reduce, 2.0, [1])
    with pytest.raises(ValueError, match="backend must be one of"):
        launch(survey_all_reduce, 2, [1], backend="mpi")
    with pytest.raises(ValueError, match="start_method must be"):
        launch(survey_all_reduce, 2, [1], start_method="thread")
    with pytest.raises(ValueError, match="needs a process group"):
        ring_all_reduce(torch.ones(3))
    with pytest.raises(ValueError, match="contiguous"):
        ring_all_reduce(torch.ones(3, 4).t())
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        ring_all_reduce([1.0, 2.0])
    with pytest.raises(ValueError, match="nbytes must be in"):
        ring_all_reduce_time(-1, 2, 1e-5, 1e-9)
    with pytest.raises(ValueError, match="p \\(the number of workers\\) must be in"):
        ring_all_reduce_time(10, 0, 1e-5, 1e-9)
    with pytest.raises(ValueError, match="alpha must be in"):
        ring_all_reduce_time(10, 2, -1e-5, 1e-9)
    with pytest.raises(ValueError, match="step_seconds must be in"):
        data_parallel_speedup(2, 0.0, 10, 1e-5, 1e-9)
    with pytest.raises(ValueError, match="same length >= 2"):
        fit_alpha_beta([1.0, 2.0], [1.0], 2)
    with pytest.raises(ValueError, match="seconds must be positive"):
        fit_alpha_beta([1.0, 2.0], [1.0, 0.0], 2)
    with pytest.raises(ValueError, match="stage must be 0, 1, 2 or 3"):
        zero_memory_per_gpu(1e9, 8, 4)
    with pytest.raises(ValueError, match="n_params must be in"):
        zero_memory_per_gpu(-1, 8, 1)
    with pytest.raises(ValueError, match="must be divisible by the number of processes"):
        per_worker_batch(10, 3)
    with pytest.raises(ValueError, match="global_batch must be in"):
        per_worker_batch(0, 1)
