"""Tests of d2l_utils.regression (chapter 5) against PyTorch, in float64."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.regression import (
    SoftmaxRegression,
    cross_entropy,
    fit_least_squares,
    linear_regression_gradients,
    linear_regression_step,
    log_softmax,
    softmax,
    squared_error,
)

shapes = st.tuples(st.integers(1, 12), st.integers(1, 9))


def random_logits(shape, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, scale=st.sampled_from([1.0, 30.0, 1e3, 1e6, 1e100]),
       seed=st.integers(0, 2**16), dim=st.sampled_from([0, 1, -1]))
def test_log_softmax_and_softmax_match_torch(shape, scale, seed, dim):
    logits = random_logits(shape, scale, seed)
    torch.testing.assert_close(log_softmax(logits, dim), torch.log_softmax(logits, dim))
    torch.testing.assert_close(softmax(logits, dim), torch.softmax(logits, dim))


def test_log_softmax_extreme_logits_stay_finite_where_naive_fails():
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [-1e300, 0.0, 1e300]], dtype=torch.float64)
    naive = torch.log(torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True))
    assert not torch.isfinite(naive).all()
    ours = log_softmax(logits)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, torch.log_softmax(logits, dim=1))
    torch.testing.assert_close(ours[0], torch.tensor([0.0, -1000.0, -2000.0], dtype=torch.float64))


def test_log_softmax_with_infinities_matches_torch():
    logits = torch.tensor([[0.0, -torch.inf, 2.0], [-torch.inf, -torch.inf, -torch.inf]],
                          dtype=torch.float64)
    torch.testing.assert_close(log_softmax(logits), torch.log_softmax(logits, dim=1),
                               equal_nan=True)


def test_log_softmax_float32_large_logits():
    logits = torch.tensor([[100.0, 90.0, -50.0]])  # exp(100) overflows float32
    torch.testing.assert_close(log_softmax(logits), torch.log_softmax(logits, dim=1))


def test_log_softmax_gradient_matches_torch():
    logits = random_logits((5, 7), 50.0, 3).requires_grad_()
    weights = torch.randn(5, 7, dtype=torch.float64)
    (grad_ours,) = torch.autograd.grad((log_softmax(logits) * weights).sum(), logits)
    (grad_torch,) = torch.autograd.grad((torch.log_softmax(logits, 1) * weights).sum(), logits)
    torch.testing.assert_close(grad_ours, grad_torch)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, scale=st.sampled_from([1.0, 1e2, 1e4]), seed=st.integers(0, 2**16))
def test_cross_entropy_matches_torch(shape, scale, seed):
    batch, classes = shape[0], shape[1] + 1
    logits = random_logits((batch, classes), scale, seed)
    labels = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(cross_entropy(logits, labels), F.cross_entropy(logits, labels))


def test_cross_entropy_errors():
    logits = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(TypeError):
        cross_entropy(logits, torch.zeros(4))  # float labels
    with pytest.raises(ValueError):
        cross_entropy(logits, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError):
        cross_entropy(logits, torch.tensor([0, 1, 2, 3]))  # 3 is out of range
    with pytest.raises(TypeError):
        log_softmax(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError):
        log_softmax(torch.tensor(1.0))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 40), d=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_linear_regression_gradients_match_autograd(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    X, y = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, generator=g,
                                                                            dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn((), generator=g, dtype=torch.float64, requires_grad=True)
    F.mse_loss(X @ w + b, y).backward()
    grad_w, grad_b = linear_regression_gradients(X, y, w.detach(), b.detach())
    torch.testing.assert_close(grad_w, w.grad)
    torch.testing.assert_close(grad_b, b.grad)
    torch.testing.assert_close(squared_error(X @ w + b, y), F.mse_loss(X @ w + b, y))


def test_fit_least_squares_matches_lstsq_and_recovers_noiseless_weights():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 5, generator=g, dtype=torch.float64)
    true_w, true_b = torch.randn(5, generator=g, dtype=torch.float64), torch.tensor(-0.7,
                                                                                   dtype=torch.float64)
    w, b = fit_least_squares(X, X @ true_w + true_b)
    torch.testing.assert_close(w, true_w)
    torch.testing.assert_close(b, true_b)
    y = torch.randn(200, generator=g, dtype=torch.float64)
    w, b = fit_least_squares(X, y)
    A = torch.cat([X, torch.ones(200, 1, dtype=torch.float64)], 1)
    reference = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    torch.testing.assert_close(torch.cat([w, b[None]]), reference)


def test_fit_least_squares_collinear_features_gives_zero_gradient():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(50, 3, generator=g, dtype=torch.float64)
    X = torch.cat([X, X[:, :1], torch.zeros(50, 1, dtype=torch.float64)], dim=1)  # rank 3
    y = torch.randn(50, generator=g, dtype=torch.float64)
    w, b = fit_least_squares(X, y)
    grad_w, grad_b = linear_regression_gradients(X, y, w, b)
    assert grad_w.abs().max() < 1e-10 and grad_b.abs() < 1e-10
    # Minimum norm: an always-zero feature gets no weight, and two copies of one feature
    # share its weight equally. Both hold up to rounding, whose size depends on which
    # LAPACK kernels the CPU selects (exactly 0 on one machine, 1e-17 on another).
    scale = w.abs().max()
    assert w[4].abs() <= 1e-12 * scale
    torch.testing.assert_close(w[0], w[3], rtol=1e-10, atol=1e-12 * scale)


def test_linear_regression_step_decreases_loss_and_converges():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(100, 3, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64) + 0.5
    w, b = torch.zeros(3, dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    losses = []
    for _ in range(300):
        losses.append(squared_error(X @ w + b, y).item())
        w, b = linear_regression_step(X, y, w, b, lr=0.1)
    assert all(later <= earlier + 1e-20 for earlier, later in zip(losses, losses[1:], strict=False))
    torch.testing.assert_close(w, torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))


def test_regression_input_errors():
    with pytest.raises(ValueError):
        fit_least_squares(torch.randn(5, 2), torch.randn(4))
    with pytest.raises(TypeError):
        fit_least_squares(torch.ones(5, 2, dtype=torch.int64), torch.randn(5))
    with pytest.raises(ValueError):
        linear_regression_gradients(torch.randn(5, 2), torch.randn(5), torch.zeros(3),
                                    torch.zeros(()))
    with pytest.raises(ValueError):
        squared_error(torch.zeros(3), torch.zeros(4))


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 16), d=st.integers(1, 10), classes=st.integers(2, 6),
       seed=st.integers(0, 2**16))
def test_softmax_regression_gradients_match_autograd(batch, d, classes, seed):
    g = torch.Generator().manual_seed(seed)
    model = SoftmaxRegression(d, classes, dtype=torch.float64)
    model.W = torch.randn(d, classes, generator=g, dtype=torch.float64)
    model.b = torch.randn(classes, generator=g, dtype=torch.float64)
    X = 3 * torch.randn(batch, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (batch,), generator=g)
    W = model.W.clone().requires_grad_()
    b = model.b.clone().requires_grad_()
    reference = F.cross_entropy(X @ W + b, labels)
    reference.backward()
    loss, grad_W, grad_b = model.gradients(X, labels)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad_W, W.grad)
    torch.testing.assert_close(grad_b, b.grad)


def test_softmax_regression_step_matches_torch_sgd_and_learns():
    g = torch.Generator().manual_seed(4)
    X = torch.randn(64, 4, generator=g, dtype=torch.float64)
    labels = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()  # 3 classes
    model = SoftmaxRegression(4, 3, dtype=torch.float64)
    layer = torch.nn.Linear(4, 3, dtype=torch.float64)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    first = None
    for _ in range(20):
        loss = model.step(X, labels, lr=0.5)
        first = loss if first is None else first
        optimizer.zero_grad()
        F.cross_entropy(layer(X), labels).backward()
        optimizer.step()
    torch.testing.assert_close(model.W, layer.weight.detach().T)
    torch.testing.assert_close(model.b, layer.bias.detach())
    assert loss < 0.7 * first


def test_softmax_regression_errors():
    with pytest.raises(ValueError):
        SoftmaxRegression(0, 3)
    with pytest.raises(ValueError):
        SoftmaxRegression(4, 1)
    with pytest.raises(ValueError):
        SoftmaxRegression(4, 3)(torch.randn(2, 5))
    with pytest.raises(ValueError):
        SoftmaxRegression(4, 3).gradients(torch.randn(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError):
        SoftmaxRegression(4, 3).gradients(torch.randn(2, 4), torch.tensor([0, 1, 2]))


def test_error_messages_say_what_was_expected():
    logits = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="labels must have torch.int64"):
        cross_entropy(logits, torch.zeros(4))
    with pytest.raises(ValueError, match="y must have shape"):
        fit_least_squares(torch.randn(5, 2), torch.randn(5, 1))
    with pytest.raises(ValueError, match="w must have shape"):
        linear_regression_gradients(torch.randn(5, 2), torch.randn(5), torch.zeros(3),
                                    torch.zeros(()))
    with pytest.raises(ValueError, match="X must have shape"):
        SoftmaxRegression(4, 3)(torch.randn(2, 5))
