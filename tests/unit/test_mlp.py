"""The batched sigmoid-network trainer and the sawtooth of chapter 8."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.mlp import (
    BatchedNet,
    count_linear_pieces,
    forward_batched,
    init_batched,
    loss_and_grads,
    relu_net,
    sawtooth_deep,
    sawtooth_shallow,
    select_nets,
    symmetry_data,
    train_batched,
    xor_data,
)


def autograd_grads(net, x, targets):
    params = [p.clone().requires_grad_() for p in net.parameters()]
    n = len(net.weights)
    copy = BatchedNet(params[:n], params[n:2 * n], params[2 * n] if net.skip is not None else None)
    loss = 0.5 * ((forward_batched(copy, x)[-1] - targets) ** 2).sum(dim=(1, 2))
    loss.sum().backward()
    return loss.detach(), [p.grad for p in params]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=2, max_size=5), st.integers(1, 6), st.integers(1, 7),
       st.booleans(), st.integers(0, 2**31 - 1))
def test_gradients_match_autograd(sizes, n_nets, n_patterns, skip, seed):
    gen = torch.Generator().manual_seed(seed)
    net = init_batched(sizes, n_nets, skip=skip, init_range=1.5, generator=gen)
    x = torch.rand(n_patterns, sizes[0], generator=gen, dtype=torch.float64)
    targets = torch.rand(n_patterns, sizes[-1], generator=gen, dtype=torch.float64)
    loss, grads = loss_and_grads(net, x, targets)
    loss_ref, grads_ref = autograd_grads(net, x, targets)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-14)
    assert len(grads) == len(grads_ref)
    for ours, ref, p in zip(grads, grads_ref, net.parameters()):
        assert ours.shape == p.shape
        torch.testing.assert_close(ours, ref, rtol=1e-11, atol=1e-13)


def test_one_step_is_gradient_descent_with_momentum():
    gen = torch.Generator().manual_seed(0)
    net = init_batched([2, 2, 1], 3, generator=gen)
    before = [p.clone() for p in net.parameters()]
    x, t = xor_data()
    _, grads = loss_and_grads(net, x, t)
    train_batched(net, x, t, lr=0.5, momentum=0.9, max_sweeps=1, tolerance=0.0)
    for p, b, g in zip(net.parameters(), before, grads):
        torch.testing.assert_close(p, b - 0.5 * g)
    # second sweep: dw(2) = -lr g(2) + momentum dw(1)
    net2 = init_batched([2, 2, 1], 3, generator=torch.Generator().manual_seed(0))
    train_batched(net2, x, t, lr=0.5, momentum=0.9, max_sweeps=1, tolerance=0.0)
    mid = [p.clone() for p in net2.parameters()]
    _, g2 = loss_and_grads(net2, x, t)
    net3 = init_batched([2, 2, 1], 3, generator=torch.Generator().manual_seed(0))
    train_batched(net3, x, t, lr=0.5, momentum=0.9, max_sweeps=2, tolerance=0.0)
    for p, m, b, g in zip(net3.parameters(), mid, before, g2):
        torch.testing.assert_close(p, m - 0.5 * g + 0.9 * (m - b))


def test_xor_is_learned_by_most_networks():
    x, t = xor_data()
    net = init_batched([2, 2, 1], 30, generator=torch.Generator().manual_seed(0))
    result = train_batched(net, x, t, lr=0.5, momentum=0.9, max_sweeps=2000)
    assert result.solved.float().mean() > 0.8
    outputs = forward_batched(net, x)[-1][result.solved]
    assert ((outputs - t).abs() <= 0.2 + 1e-9).all()
    assert result.sweeps_to_solve.dtype == torch.int64
    assert (result.sweeps_to_solve[~result.solved] == -1).all()


def test_data():
    x, t = symmetry_data(4)
    assert x.shape == (16, 4) and int(t.sum()) == 4
    x, t = xor_data(torch.float32)
    assert x.dtype == torch.float32 and t[:, 0].tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_sawtooth_deep_and_shallow_agree(k):
    grid = np.linspace(0, 1, 2**12 + 1)[:, None]
    deep, shallow = sawtooth_deep(k), sawtooth_shallow(k)
    y = relu_net(deep, grid)[:, 0]
    assert count_linear_pieces(grid[:, 0], y) == 2**k
    assert np.allclose(y, relu_net(shallow, grid)[:, 0], atol=1e-9)
    # the tent map composed k times, computed directly
    z = grid[:, 0].copy()
    for _ in range(k):
        z = np.where(z <= 0.5, 2 * z, 2 - 2 * z)
    assert np.allclose(y, z, atol=1e-9)
    assert sum(b.size for _, b in deep[:-1]) == 2 * k


def test_count_linear_pieces():
    x = np.linspace(-1, 1, 201)
    assert count_linear_pieces(x, 3 * x + 1) == 1
    assert count_linear_pieces(x, np.abs(x)) == 2


def test_errors():
    with pytest.raises(ValueError, match="widths"):
        init_batched([3], 2)
    net = init_batched([2, 3, 1], 2)
    with pytest.raises(ValueError, match="n_in"):
        forward_batched(net, torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="targets"):
        loss_and_grads(net, torch.zeros(4, 2, dtype=torch.float64),
                       torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must"):
        sawtooth_deep(0)
    with pytest.raises(ValueError, match="inputs"):
        relu_net(sawtooth_deep(2), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="lr"):
        train_batched(net, *xor_data(), lr=0.0)
    with pytest.raises(TypeError, match="x"):
        forward_batched(net, torch.zeros(4, 2, dtype=torch.int64))


def test_select_nets_copies_the_chosen_networks():
    net = init_batched([2, 3, 1], 5, skip=True, generator=torch.Generator().manual_seed(0))
    sub = select_nets(net, torch.tensor([4, 1]))
    assert sub.n_nets == 2 and sub.skip is not None
    for p, q in zip(sub.parameters(), net.parameters()):
        torch.testing.assert_close(p, q[[4, 1]])
    sub.weights[0].add_(1.0)
    torch.testing.assert_close(net.weights[0][[4, 1]], sub.weights[0] - 1.0)  # a copy, not a view
