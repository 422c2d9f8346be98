"""Seeding and the build flag."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

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
