"""Tests of d2l_utils.descent (chapter 6): gradients against autograd in float64, the
2/lambda_max stability edge on quadratics, and mini-batch SGD against torch.optim.SGD."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.descent import (
    gradient_descent,
    least_squares_grad,
    minibatch_sgd,
    quadratic,
    quadratic_grad,
    rosenbrock,
    rosenbrock_grad,
    sgd_step,
)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 20), seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 5.0]),
       a=st.sampled_from([1.0, 0.5, -2.0]), b=st.sampled_from([100.0, 1.0, 10.0]))
def test_rosenbrock_gradient_matches_autograd(batch, seed, scale, a, b):
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(batch, 2, generator=g, dtype=torch.float64)).requires_grad_()
    (expected,) = torch.autograd.grad(rosenbrock(x, a, b).sum(), x)
    torch.testing.assert_close(rosenbrock_grad(x.detach(), a, b), expected)


def test_rosenbrock_minimum():
    minimum = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert rosenbrock(minimum) == 0
    assert rosenbrock_grad(minimum).abs().max() == 0
    assert rosenbrock(torch.tensor([-1.2, 1.0], dtype=torch.float64)).item() == pytest.approx(24.2)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_quadratic_gradient_matches_autograd(d, seed):
    g = torch.Generator().manual_seed(seed)
    curvatures = (torch.rand(d, generator=g, dtype=torch.float64) * 10 + 0.1).tolist()
    x = torch.randn(3, 4, d, generator=g, dtype=torch.float64).requires_grad_()
    (expected,) = torch.autograd.grad(quadratic(x, curvatures).sum(), x)
    torch.testing.assert_close(quadratic_grad(x.detach(), curvatures), expected)
    assert quadratic(x, curvatures).shape == (3, 4)


@pytest.mark.parametrize("curvatures", [(1.0, 20.0), (0.5, 3.0, 8.0), (2.0,)])
def test_converges_below_and_diverges_above_two_over_lambda_max(curvatures):
    limit = 2 / max(curvatures)
    x0 = torch.ones(len(curvatures), dtype=torch.float64)

    def grad(x):
        return quadratic_grad(x, curvatures)

    below = gradient_descent(grad, x0, 0.98 * limit, steps=2000)[-1]
    above = gradient_descent(grad, x0, 1.02 * limit, steps=2000)[-1]
    assert below.norm() < 1e-8
    assert above.norm() > 1e8


def test_trajectory_shape_and_exact_iterates():
    x0 = torch.tensor([[1.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    lr = torch.tensor([[0.1], [0.05]], dtype=torch.float64)  # one learning rate per start
    path = gradient_descent(lambda x: quadratic_grad(x, (1.0, 4.0)), x0, lr, steps=5)
    assert path.shape == (6, 2, 2)
    torch.testing.assert_close(path[0], x0)
    factors = 1 - lr * torch.tensor([1.0, 4.0], dtype=torch.float64)  # (2, 2)
    torch.testing.assert_close(path[5], x0 * factors**5)


def test_optimal_rate_contraction_factor():
    lam_min, lam_max = 1.0, 20.0
    eta = 2 / (lam_min + lam_max)
    path = gradient_descent(lambda x: quadratic_grad(x, (lam_min, lam_max)),
                            torch.tensor([3.0, -1.0], dtype=torch.float64), eta, steps=30)
    ratios = path[1:].norm(dim=1) / path[:-1].norm(dim=1)
    kappa = lam_max / lam_min
    torch.testing.assert_close(ratios, torch.full_like(ratios, (kappa - 1) / (kappa + 1)))


def test_gradient_descent_errors():
    grad = lambda x: x  # noqa: E731
    with pytest.raises(TypeError):
        gradient_descent(grad, torch.tensor([1, 2]), 0.1, 3)
    with pytest.raises(ValueError):
        gradient_descent(grad, torch.ones(2), 0.1, -1)
    with pytest.raises(ValueError):
        gradient_descent(grad, torch.ones(2), 0.0, 3)
    with pytest.raises(ValueError):
        rosenbrock(torch.ones(3))
    with pytest.raises(ValueError):
        quadratic(torch.ones(2), (1.0, 2.0, 3.0))
    with pytest.raises(TypeError):
        rosenbrock_grad(torch.ones(2, dtype=torch.int64))


def test_sgd_step_matches_torch_optim():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, generator=g, dtype=torch.float64),
              torch.randn(4, generator=g, dtype=torch.float64)]
    grads = [torch.randn_like(p) for p in params]
    reference = [p.clone().requires_grad_() for p in params]
    for r, gr in zip(reference, grads, strict=True):
        r.grad = gr.clone()
    torch.optim.SGD(reference, lr=0.3).step()
    sgd_step(params, grads, lr=0.3)
    for ours, theirs in zip(params, reference, strict=True):
        torch.testing.assert_close(ours, theirs.detach())
    with pytest.raises(ValueError):
        sgd_step(params, grads[:1], lr=0.1)
    with pytest.raises(ValueError):
        sgd_step(params, [grads[1], grads[0]], lr=0.1)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 30), d=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_least_squares_grad_matches_autograd(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(((X @ w - y) ** 2).mean(), w)
    torch.testing.assert_close(least_squares_grad(w.detach(), X, y), expected)


def test_minibatch_sgd_full_batch_equals_gradient_descent():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randn(40, generator=g, dtype=torch.float64)
    w0 = torch.zeros(3, dtype=torch.float64)
    sgd = minibatch_sgd(least_squares_grad, w0, X, y, lr=0.1, batch_size=40, epochs=7)
    gd = gradient_descent(lambda w: least_squares_grad(w, X, y), w0, 0.1, steps=7)
    torch.testing.assert_close(sgd, gd)


def test_minibatch_sgd_counts_and_converges_with_decaying_steps():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(64, 2, generator=g, dtype=torch.float64)
    true_w = torch.tensor([1.0, -3.0], dtype=torch.float64)
    y = X @ true_w
    path = minibatch_sgd(least_squares_grad, torch.zeros(2, dtype=torch.float64), X, y,
                         lr=lambda t: 0.1 / (1 + t / 64), batch_size=5, epochs=20)
    assert path.shape == (1 + 20 * (64 // 5), 2)  # the short last batch is dropped
    torch.testing.assert_close(path[-1], true_w, atol=1e-3, rtol=0)


def test_minibatch_sgd_errors():
    X, y, w0 = torch.randn(10, 2), torch.randn(10), torch.zeros(2)
    with pytest.raises(ValueError):
        minibatch_sgd(least_squares_grad, w0, X, y[:9], lr=0.1, batch_size=2, epochs=1)
    with pytest.raises(ValueError):
        minibatch_sgd(least_squares_grad, w0, X, y, lr=0.1, batch_size=11, epochs=1)
    with pytest.raises(ValueError):
        minibatch_sgd(least_squares_grad, w0, X, y, lr=0.1, batch_size=2, epochs=0)
    with pytest.raises(ValueError):
        least_squares_grad(torch.zeros(3), X, y)


def test_error_messages_say_what_was_expected():
    X, y, w0 = torch.randn(10, 2), torch.randn(10), torch.zeros(2)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 10\]"):
        minibatch_sgd(least_squares_grad, w0, X, y, lr=0.1, batch_size=11, epochs=1)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        gradient_descent(lambda x: x, torch.ones(2), 0.0, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\. 2\)"):
        rosenbrock(torch.ones(3))
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        quadratic(torch.ones(2, dtype=torch.int64), (1.0, 2.0))
