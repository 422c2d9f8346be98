"""One-line argument checks: what they accept, and the messages they give."""

from __future__ import annotations

import math

import pytest
import torch

from d2l_utils.checks import check_number, check_tensor, require


def test_require_raises_the_given_error():
    require(True, "never raised")
    with pytest.raises(TypeError, match="wanted a list"):
        require(False, "wanted a list", TypeError)


def test_check_tensor_binds_symbols_and_checks_them_where_they_recur():
    sizes = check_tensor(torch.zeros(4, 3), "logits", "B C", dtype="float")
    assert sizes == {"B": 4, "C": 3}
    assert check_tensor(torch.zeros(4, dtype=torch.int64), "labels", "B", dtype="int",
                        sizes=sizes) == sizes
    with pytest.raises(ValueError, match=r"labels must have shape \(B\) with B = 4, got shape"):
        check_tensor(torch.zeros(5, dtype=torch.int64), "labels", "B", sizes=sizes)
    with pytest.raises(ValueError, match=r"with N = 2"):
        check_tensor(torch.zeros(2, 3), "square", "N N")


@pytest.mark.parametrize("shape, pattern", [
    ((2, 784), "B 784"), ((2, 1, 28, 28), "B 1 28 28"), ((7, 3), "* 3"), ((5, 6, 3), "... 3"),
    ((3,), "... 3"), ((2, 5, 9), "B ..."),
])
def test_check_tensor_accepts_matching_shapes(shape, pattern):
    check_tensor(torch.zeros(shape), "x", pattern)


@pytest.mark.parametrize("shape, pattern, message", [
    ((2, 1, 28, 28), "B 784", r"x must have shape \(B 784\), i.e. 2 dimension\(s\), got shape "
                              r"\(2, 1, 28, 28\)"),
    ((2, 783), "B 784", r"with 784 = 784, got shape \(2, 783\)"),
    ((3,), "B ... C", "'...' goes first or last"),
    ((), "... 3", "at least 1 dimensions"),
])
def test_check_tensor_says_what_shape_was_expected(shape, pattern, message):
    with pytest.raises(ValueError, match=message):
        check_tensor(torch.zeros(shape), "x", pattern)


def test_check_tensor_checks_type_and_dtype():
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        check_tensor([1.0, 2.0], "x")
    with pytest.raises(TypeError, match="labels must have an integer dtype .*got torch.float32"):
        check_tensor(torch.zeros(3), "labels", dtype="int")
    with pytest.raises(TypeError, match="must have a floating-point dtype"):
        check_tensor(torch.zeros(3, dtype=torch.int64), "x", dtype="float")
    with pytest.raises(TypeError, match="must have torch.float64, got torch.float32"):
        check_tensor(torch.zeros(3), "x", dtype=torch.float64)
    with pytest.raises(TypeError, match="integer dtype"):
        check_tensor(torch.zeros(3, dtype=torch.bool), "mask", dtype="int")


@pytest.mark.parametrize("value, options, error, message", [
    (True, {}, TypeError, "must be a number, got bool"),
    ("0.1", {}, TypeError, "must be a number, got str"),
    (2.5, {"integer": True}, TypeError, "must be an int, got float"),
    (math.inf, {}, ValueError, "must be finite, got inf"),
    (math.nan, {}, ValueError, "must be finite, got nan"),
    (0.0, {"low": 0.0, "low_open": True}, ValueError, r"must be in \(0.0, inf\), got 0.0"),
    (1.0, {"high": 1.0, "high_open": True}, ValueError, r"in \(-inf, 1.0\), got 1.0"),
])
def test_check_number_rejects_what_is_not_a_finite_number_in_range(value, options, error,
                                                                   message):
    with pytest.raises(error, match=message):
        check_number(value, "lr", **options)


def test_check_number_returns_a_good_value():
    assert check_number(0.1, "lr", low=0.0, low_open=True) == 0.1
    assert check_number(3, "n", low=1, integer=True) == 3
