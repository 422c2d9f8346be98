"""The tensor engine of chapter 7 against torch.autograd (float64) and finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.tensor_autograd import (
    MLP,
    Tensor,
    cross_entropy,
    log_softmax,
    no_grad,
    unbroadcast,
    zero_grad,
)


@st.composite
def broadcastable_pair(draw):
    """Two shapes that broadcast together: drop leading axes and set some lengths to 1."""
    ndim = draw(st.integers(1, 4))
    full = draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))

    def variant():
        keep = draw(st.integers(0, ndim))
        shape = full[ndim - keep:]
        return tuple(1 if draw(st.booleans()) else n for n in shape)
    return variant(), variant()


def check(ours, theirs, rtol=1e-10, atol=1e-12):
    assert ours.shape == tuple(theirs.shape)
    torch.testing.assert_close(torch.from_numpy(np.asarray(ours, dtype=np.float64)),
                               theirs.detach(), rtol=rtol, atol=atol)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0),
}


@settings(max_examples=80, deadline=None)
@given(broadcastable_pair(), st.sampled_from(sorted(BINARY)), st.integers(0, 2**31 - 1))
def test_binary_ops_unbroadcast_like_torch(shapes, name, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s) for s in shapes]
    ours = [Tensor(x, requires_grad=True) for x in xs]
    theirs = [torch.tensor(x, requires_grad=True) for x in xs]
    out, out_t = BINARY[name](*ours), BINARY[name](*theirs)
    weights = rng.standard_normal(out.shape)  # a random incoming gradient
    out.backward(weights)
    out_t.backward(torch.from_numpy(weights))
    check(out.data, out_t)
    for o, t in zip(ours, theirs):
        check(o.grad, t.grad)


UNARY = {
    "exp": lambda a: a.exp(),
    "log": lambda a: (a * a + 0.5).log(),
    "tanh": lambda a: a.tanh(),
    "relu": lambda a: a.relu(),
    "neg": lambda a: -a,
    "pow": lambda a: a**3,
    "rsub": lambda a: 1.0 - a,
    "rdiv": lambda a: 1.0 / (a * a + 1.0),
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=3), st.sampled_from(sorted(UNARY)),
       st.integers(0, 2**31 - 1))
def test_unary_ops(shape, name, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    UNARY[name](ours).sum().backward()
    UNARY[name](theirs).sum().backward()
    check(ours.grad, theirs.grad)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data(), st.booleans(),
       st.booleans(), st.integers(0, 2**31 - 1))
def test_sum_and_mean_over_axes(shape, data, keepdims, use_mean, seed):
    ndim = len(shape)
    axes = data.draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                               st.lists(st.integers(0, ndim - 1), min_size=1, unique=True)))
    x = np.random.default_rng(seed).standard_normal(shape)
    ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    dim = tuple(range(ndim)) if axes is None else axes
    out = (ours.mean if use_mean else ours.sum)(axes, keepdims=keepdims)
    out_t = (theirs.mean if use_mean else theirs.sum)(dim=dim, keepdim=keepdims)
    check(out.data, out_t)
    w = np.random.default_rng(seed + 1).standard_normal(out.shape)
    out.backward(w)
    out_t.backward(torch.from_numpy(w))
    check(ours.grad, theirs.grad)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.sampled_from(
    [((), ()), ((3,), ()), ((), (2,)), ((2, 1), (3,)), ((1,), (4,))]), st.integers(0, 2**31 - 1))
def test_matmul_with_batch_broadcasting(n, k, m, batch, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((*batch[0], n, k)), rng.standard_normal((*batch[1], k, m))
    ours = [Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)]
    theirs = [torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)]
    (ours[0] @ ours[1]).tanh().sum().backward()
    (theirs[0] @ theirs[1]).tanh().sum().backward()
    for o, t in zip(ours, theirs):
        check(o.grad, t.grad)


def test_reshape_transpose_and_indexing_with_repeats():
    x = np.random.default_rng(0).standard_normal((4, 6))
    ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    index = np.array([0, 3, 3, 1])
    for t, take in ((ours, lambda z: z[index]), (theirs, lambda z: z[torch.from_numpy(index)])):
        y = take(t.reshape(6, 4) if isinstance(t, Tensor) else t.reshape(6, 4))
        z = (y.transpose() if isinstance(y, Tensor) else y.T)[1:, ::2]
        (z * z).sum().backward()
    check(ours.grad, theirs.grad)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(2, 7), st.floats(0.1, 60.0), st.integers(0, 2**31 - 1))
def test_log_softmax_and_cross_entropy(n, c, scale, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * scale  # large scales check stability
    y = rng.integers(0, c, n)
    ours, theirs = Tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
    loss = cross_entropy(ours, y) + (log_softmax(ours, axis=0) * 0.1).sum()
    loss_t = F.cross_entropy(theirs, torch.from_numpy(y)) + (F.log_softmax(theirs, 0) * 0.1).sum()
    loss.backward()
    loss_t.backward()
    check(loss.data, loss_t)
    check(ours.grad, theirs.grad)


def test_stable_in_float32_with_huge_logits():
    z = Tensor(np.array([[1000.0, 0.0, -1000.0]], np.float32), requires_grad=True)
    loss = cross_entropy(z, [2])
    loss.backward()
    assert np.isfinite(loss.item()) and abs(loss.item() - 2000.0) < 1e-3
    assert z.grad.dtype == np.float32 and np.allclose(z.grad, [[1.0, 0.0, -1.0]])


def test_finite_differences_on_a_small_mlp():
    model = MLP([3, 4, 2], seed=1, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((5, 3))
    y = np.array([0, 1, 1, 0, 1])
    cross_entropy(model(Tensor(x)), y).backward()
    h = 1e-6
    for p in model.parameters():
        numeric = np.zeros_like(p.data)
        for index in np.ndindex(*p.shape):
            original = p.data[index]
            with no_grad():
                p.data[index] = original + h
                up = cross_entropy(model(Tensor(x)), y).item()
                p.data[index] = original - h
                down = cross_entropy(model(Tensor(x)), y).item()
            p.data[index] = original
            numeric[index] = (up - down) / (2 * h)
        assert np.allclose(numeric, p.grad, rtol=1e-5, atol=1e-8)


def test_grad_accumulates_until_zero_grad():
    w = Tensor(np.ones(3), requires_grad=True)
    y = (w * w).sum()
    y.backward()
    y.backward()  # the graph is kept: a second pass adds the same gradient again
    assert np.allclose(w.grad, 4.0)
    zero_grad([w])
    assert w.grad is None
    (w * w).sum().backward()
    assert np.allclose(w.grad, 2.0)


def test_inputs_that_need_no_grad_get_none():
    w = Tensor(np.ones(3), requires_grad=True)
    c = Tensor(np.arange(3.0))
    (w * c + c).sum().backward()
    assert c.grad is None and np.allclose(w.grad, [0.0, 1.0, 2.0])


def test_deep_graph_needs_no_recursion():
    w = Tensor(np.ones(2), requires_grad=True)
    node = w
    for _ in range(5000):
        node = node + w
    node.sum().backward()
    assert np.allclose(w.grad, 5001.0)


def test_dtypes():
    w32 = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    out = (w32 * 2.5 + 1).exp().mean()
    assert out.dtype == np.float32
    out.backward()
    assert w32.grad.dtype == np.float32
    w64 = Tensor(np.ones(2), requires_grad=True)
    (w64 * Tensor(np.ones(2, np.float32))).sum().backward()
    assert w64.grad.dtype == np.float64
    assert Tensor([1, 2]).dtype == np.float64
    assert Tensor([1, 2], dtype=np.float32).dtype == np.float32


def test_errors():
    with pytest.raises(RuntimeError, match="shape"):
        (Tensor(np.ones(3), requires_grad=True) * 2).backward()
    with pytest.raises(RuntimeError, match="require"):
        Tensor(1.0).backward()
    with pytest.raises(ValueError, match="matmul"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="matmul"):
        Tensor(np.ones(3)) @ Tensor(np.ones((3, 2)))
    with pytest.raises(ValueError, match="targets"):
        cross_entropy(Tensor(np.ones((2, 3))), [0, 3])
    with pytest.raises(ValueError, match="targets"):
        cross_entropy(Tensor(np.ones((2, 3))), [0.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        cross_entropy(Tensor(np.ones(3)), [0])
    with pytest.raises(TypeError):
        Tensor(np.ones(2), dtype=np.int64)
    with pytest.raises(TypeError):
        Tensor(np.array(["a"]))
    with pytest.raises(ValueError, match="axis"):
        Tensor(np.ones((2, 2))).sum(axis=2)
    with pytest.raises(ValueError, match="grad has shape"):
        (Tensor(np.ones(2), requires_grad=True) * 1).backward(np.ones(3))
    with pytest.raises(ValueError, match="Linear"):
        MLP([3, 2])(Tensor(np.ones((2, 4))))


def test_no_grad_records_nothing():
    w = Tensor(np.ones(2), requires_grad=True)
    with no_grad():
        y = w * 2
    assert not y.requires_grad and y.parents == ()


def test_unbroadcast_sums_stretched_axes():
    g = np.ones((2, 3, 4))
    assert unbroadcast(g, (3, 1)).shape == (3, 1) and np.all(unbroadcast(g, (3, 1)) == 8)
    assert unbroadcast(g, ()).item() == 24
