"""Seeding and the build flag."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
import warnings

import numpy as np
import pytest
import torch

from d2l_utils import runtime
from d2l_utils.runtime import in_book_build, set_seed


def draw_all():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_set_seed_makes_python_numpy_and_torch_repeat():
    generator = set_seed(123)
    first = draw_all(), float(torch.rand(1, generator=generator))
    generator = set_seed(123)
    second = draw_all(), float(torch.rand(1, generator=generator))
    assert first == second
    set_seed(124)
    assert draw_all() != first[0]


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), ("0", TypeError),
                                        (True, TypeError)])
def test_set_seed_rejects_bad_seeds(bad, error):
    with pytest.raises(error):
        set_seed(bad)


def test_in_book_build_reads_the_environment(monkeypatch):
    monkeypatch.delenv("D2L_BOOK_BUILD", raising=False)
    assert not in_book_build()
    monkeypatch.setenv("D2L_BOOK_BUILD", "1")
    assert in_book_build()
    monkeypatch.setenv("D2L_BOOK_BUILD", "0")
    assert not in_book_build()


@pytest.mark.parametrize("exported, expected", [(None, ":4096:8"), (":16:8", ":16:8")])
def test_importing_d2l_utils_sets_the_cublas_workspace_before_any_cuda_work(exported, expected):
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    if exported:
        env["CUBLAS_WORKSPACE_CONFIG"] = exported  # what a reader exported wins
    code = "import os, d2l_utils; print(os.environ['CUBLAS_WORKSPACE_CONFIG'])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_set_seed_restores_the_cublas_workspace_quietly_before_cuda_starts(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        set_seed(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_set_seed_warns_when_cuda_started_before_the_cublas_workspace_was_set(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.warns(RuntimeWarning, match="CUDA started before CUBLAS_WORKSPACE_CONFIG"):
        set_seed(0)
    monkeypatch.setattr(runtime, "_cublas_set_after_cuda_started", True)  # set at import: late
    with pytest.warns(RuntimeWarning, match="may not be deterministic"):
        set_seed(0)


def test_a_nondeterministic_operation_warns_once_not_at_every_call():
    set_seed(0)  # deterministic algorithms, warn_only=True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.zeros(5).put_(torch.tensor([1, 2]), torch.tensor([1.0, 2.0]))  # no such CPU kernel
    (real,) = [str(w.message) for w in caught]
    onces = [f for f in warnings.filters if f[0] == "once" and f[1] is not None]
    assert any(f[1].match(real) for f in onces), real  # PyTorch's message is covered
    fake = f"aten::op_{uuid.uuid4().hex} does not have a deterministic implementation, but ..."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # a reader's session: once per code line
        set_seed(0)  # puts its filter first again
        warnings.warn(fake, stacklevel=1)
        warnings.warn(fake, stacklevel=1)  # another line: warns again without set_seed's filter
    assert [str(w.message) for w in caught] == [fake]
