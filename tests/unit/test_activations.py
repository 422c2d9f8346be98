"""Chapter 9's activation functions and closed-form derivatives against PyTorch (float64)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from d2l_utils.activations import (
    ACTIVATIONS,
    elu,
    elu_grad,
    leaky_relu,
    leaky_relu_grad,
    prelu,
    prelu_grad,
    sigmoid,
    sigmoid_grad,
    tanh,
)

REFERENCE = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "ReLU": F.relu,
    "leaky ReLU": lambda x: F.leaky_relu(x, 0.01),
    "PReLU": lambda x: F.prelu(x, torch.tensor([0.25], dtype=x.dtype)),
    "ELU": F.elu,
    "GELU": lambda x: F.gelu(x, approximate="none"),
    "SiLU": F.silu,
}
EXTREMES = torch.tensor([-1000.0, -700.0, -40.0, -1e-12, 0.0, 1e-12, 40.0, 700.0, 1000.0],
                        dtype=torch.float64)
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


def value_and_grad(function, x):
    """function(x) and d sum(function(x)) / dx by autograd."""
    leaf = x.clone().requires_grad_(True)
    out = function(leaf)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    return out.detach(), grad


def test_registry_lists_the_eight_functions():
    assert list(ACTIVATIONS) == list(REFERENCE)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(REFERENCE)), shapes, st.integers(0, 2**31 - 1),
       st.floats(0.1, 30.0))
def test_values_and_derivatives_match_autograd(name, shape, seed, scale):
    x = torch.randn(shape, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed)) * scale
    f, f_grad = ACTIVATIONS[name]
    expected, expected_grad = value_and_grad(REFERENCE[name], x)
    assert f(x).shape == x.shape and f(x).dtype == torch.float64
    torch.testing.assert_close(f(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_grad(x), expected_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_autograd_through_our_functions_gives_the_closed_forms(name):
    f, f_grad = ACTIVATIONS[name]
    x = torch.cat([EXTREMES, torch.randn(40, dtype=torch.float64) * 4])  # includes 0
    _, grad = value_and_grad(f, x)
    torch.testing.assert_close(grad, f_grad(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_extreme_inputs_are_finite_and_exact(name):
    f, f_grad = ACTIVATIONS[name]
    expected, expected_grad = value_and_grad(REFERENCE[name], EXTREMES)
    assert torch.isfinite(f(EXTREMES)).all() and torch.isfinite(f_grad(EXTREMES)).all()
    torch.testing.assert_close(f(EXTREMES), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_grad(EXTREMES), expected_grad, rtol=1e-12, atol=1e-12)


def test_sigmoid_is_stable_where_the_naive_formula_overflows():
    x = torch.tensor([-1000.0, 1000.0])  # float32: exp(1000) = inf
    naive = torch.exp(x) / (1 + torch.exp(x))
    assert torch.isnan(naive[1])
    torch.testing.assert_close(sigmoid(x), torch.tensor([0.0, 1.0]))
    # the derivative keeps its relative precision far in the tail: e^{-40} (1 + O(e^{-40}))
    tail = sigmoid_grad(torch.tensor([40.0, -40.0], dtype=torch.float64))
    torch.testing.assert_close(tail, torch.full((2,), np.exp(-40.0), dtype=torch.float64),
                               rtol=1e-14, atol=0)


def test_float32_matches_torch_too():
    x = torch.linspace(-50, 50, 1001)
    for name, (f, f_grad) in ACTIVATIONS.items():
        expected, expected_grad = value_and_grad(REFERENCE[name], x)
        torch.testing.assert_close(f(x), expected, msg=name)
        torch.testing.assert_close(f_grad(x), expected_grad, msg=name)


def test_tanh_is_accurate_near_zero():
    x = torch.tensor([1e-300, -1e-20, 1e-8], dtype=torch.float64)
    # a few ulps (torch.tanh and expm1 are each within ~1 ulp); the naive formula is off by 1e-8
    torch.testing.assert_close(tanh(x), torch.tanh(x), rtol=4e-15, atol=0)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2])
def test_leaky_relu_other_slopes(slope):
    x = torch.randn(50, dtype=torch.float64)
    expected, expected_grad = value_and_grad(lambda t: F.leaky_relu(t, slope), x)
    torch.testing.assert_close(leaky_relu(x, slope), expected)
    torch.testing.assert_close(leaky_relu_grad(x, slope), expected_grad)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_elu_other_alphas(alpha):
    x = torch.cat([torch.randn(50, dtype=torch.float64) * 5, EXTREMES])
    expected, expected_grad = value_and_grad(lambda t: F.elu(t, alpha), x)
    torch.testing.assert_close(elu(x, alpha), expected)
    torch.testing.assert_close(elu_grad(x, alpha), expected_grad)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(0, 2), st.booleans(),
       st.integers(0, 2**31 - 1))
def test_prelu_matches_nn_prelu(batch, channels, spatial_dims, shared, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, channels, *([3] * spatial_dims)), dtype=torch.float64,
                    generator=generator)
    layer = nn.PReLU(num_parameters=1 if shared else channels).double()
    with torch.no_grad():
        layer.weight.uniform_(-0.5, 0.5, generator=generator)
    incoming = torch.randn(x.shape, dtype=torch.float64, generator=generator)
    leaf = x.clone().requires_grad_(True)
    (layer(leaf) * incoming).sum().backward()
    a = layer.weight.detach()
    grad_x, grad_a = prelu_grad(x, a)
    torch.testing.assert_close(prelu(x, a), layer(x).detach())
    torch.testing.assert_close(grad_x * incoming, leaf.grad)
    summed = (grad_a * incoming).sum(dim=[d for d in range(x.ndim) if shared or d != 1])
    torch.testing.assert_close(summed.reshape(a.shape), layer.weight.grad)


@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elementwise_functions_keep_shape_and_dtype(name, dtype):
    """The elementwise functions check nothing (they trust their caller, as torch's do), so
    what they promise is only this: a float tensor in, the same shape and dtype out."""
    f, f_grad = ACTIVATIONS[name]
    x = torch.randn(2, 3, 4, dtype=dtype)
    for out in (f(x), f_grad(x)):
        assert out.shape == x.shape and out.dtype == dtype


def test_prelu_weight_shape_is_checked():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="shape"):
        prelu(x, torch.ones(4))
    with pytest.raises(ValueError, match="shape"):
        prelu(x, torch.ones(1, 3))
    with pytest.raises(TypeError, match="PReLU weight must have a floating-point dtype"):
        prelu(x, torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="PReLU weight must be a torch.Tensor"):
        prelu_grad(x, [0.25, 0.25, 0.25])
    with pytest.raises(ValueError, match=r"shape \(1,\) or \(C,\) with C = x.shape\[1\]"):
        prelu_grad(x, torch.ones(2))
