"""Tests for d2l_utils.regularisation: dropout and batch norm against PyTorch (float64),
early stopping and shift augmentation against reference behaviour."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from d2l_utils.regularisation import (
    BatchNorm,
    Dropout,
    EarlyStopping,
    batch_norm,
    dropout,
    random_shift,
)

shape_st = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


@settings(max_examples=25, deadline=None)
@given(shape=shape_st, p=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_dropout_equals_f_dropout_given_the_same_mask(shape, p, seed):
    x = torch.randn(shape, dtype=torch.float64)
    torch.manual_seed(seed)
    mask = F.dropout(torch.ones_like(x), p) != 0
    torch.manual_seed(seed)
    x_torch, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_torch = F.dropout(x_torch, p)
    out_ours = dropout(x_ours, p, mask=mask)
    torch.testing.assert_close(out_ours, out_torch)
    upstream = torch.randn_like(x)
    (out_ours * upstream).sum().backward()
    (out_torch * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_torch.grad)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics_match_pytorch(p):
    x = torch.full((400_000,), 2.0, dtype=torch.float64)
    ours = dropout(x, p, generator=torch.Generator().manual_seed(0))
    theirs = F.dropout(x, p)
    for out in (ours, theirs):
        assert abs((out == 0).double().mean().item() - p) < 0.005
        assert abs(out.mean().item() / 2.0 - 1) < 0.02
    kept = ours[ours != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 2.0 / (1 - p)))


def test_dropout_edge_cases_and_eval_mode():
    x = torch.randn(3, 4)
    assert dropout(x, 0.0) is x
    assert dropout(x, 0.7, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    layer = Dropout(0.5)
    layer.eval()
    assert layer(x) is x
    layer.train()
    assert (layer(torch.ones(1000)) == 0).any()


@pytest.mark.parametrize("p, error", [(-0.1, ValueError), (1.5, ValueError),
                                      (float("nan"), ValueError), ("0.5", TypeError),
                                      (True, TypeError)])
def test_dropout_rejects_bad_p(p, error):
    with pytest.raises(error, match="dropout probability p"):
        dropout(torch.ones(3), p)
    with pytest.raises(error, match="dropout probability p"):
        Dropout(p)


def test_dropout_rejects_bad_mask():
    with pytest.raises(ValueError):
        dropout(torch.ones(3), 0.5, mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError):
        dropout(torch.ones(3), 0.5, mask=torch.ones(3))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 8), c=st.integers(1, 5), spatial=st.sampled_from([(), (3,), (3, 4)]),
       momentum=st.floats(0.01, 0.9), seed=st.integers(0, 10_000))
def test_batch_norm_matches_torch(n, c, spatial, momentum, seed):
    torch.manual_seed(seed)
    torch_layer = (nn.BatchNorm2d if len(spatial) == 2 else nn.BatchNorm1d)(c, momentum=momentum)
    theirs, ours = torch_layer.double(), BatchNorm(c, momentum=momentum).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0)
        ours.bias.normal_()
        theirs.weight.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)
    for _ in range(4):
        x = 2 * torch.randn((n, c, *spatial), dtype=torch.float64) + 0.5
        x_ours, x_torch = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ours, out_torch = ours(x_ours), theirs(x_torch)
        torch.testing.assert_close(out_ours, out_torch)
        upstream = torch.randn_like(out_ours)
        (out_ours * upstream).sum().backward()
        (out_torch * upstream).sum().backward()
        torch.testing.assert_close(x_ours.grad, x_torch.grad)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))


def test_batch_norm_function_without_affine_matches_f_batch_norm():
    x = torch.randn(10, 3, 4, dtype=torch.float64)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    rm2, rv2 = rm.clone(), rv.clone()
    ours = batch_norm(x, rm, rv, training=True, momentum=0.2)
    theirs = F.batch_norm(x, rm2, rv2, training=True, momentum=0.2)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)


def test_batch_norm_errors():
    with pytest.raises(ValueError):
        batch_norm(torch.ones(5), None, None)
    with pytest.raises(ValueError):
        batch_norm(torch.ones(1, 3), torch.zeros(3), torch.ones(3))  # one value per channel
    with pytest.raises(ValueError):
        batch_norm(torch.ones(4, 3), torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError):
        batch_norm(torch.ones(4, 3), None, None, training=False)
    with pytest.raises(ValueError):
        BatchNorm(0)


def test_early_stopping_stops_after_patience_and_keeps_best():
    model = nn.Linear(2, 1)
    monitor = EarlyStopping(patience=3)
    losses = [1.0, 0.8, 0.9, 0.7, 0.75, 0.72, 0.71, 0.69]
    stops = []
    for epoch, loss in enumerate(losses, start=1):
        with torch.no_grad():
            model.bias.fill_(epoch)
        stops.append(monitor.step(loss, model))
    assert stops == [False, False, False, False, False, False, True, False]
    assert monitor.best == 0.69 and monitor.best_epoch == 8
    assert monitor.best_state["bias"].item() == 8.0
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)


def test_early_stopping_min_delta():
    monitor = EarlyStopping(patience=2, min_delta=0.1)
    assert not monitor.step(1.0)
    assert not monitor.step(0.95)  # not enough improvement
    assert monitor.step(0.93)
    assert monitor.best_epoch == 1


def _reference_shift(image, dy, dx):
    """Shift (C, H, W) so that out[:, r, c] = image[:, r + dy, c + dx], zeros outside."""
    out = torch.zeros_like(image)
    h, w = image.shape[1:]
    for r in range(h):
        for c in range(w):
            if 0 <= r + dy < h and 0 <= c + dx < w:
                out[:, r, c] = image[:, r + dy, c + dx]
    return out


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(1, 3), h=st.integers(3, 7), w=st.integers(3, 7),
       k=st.integers(0, 2), seed=st.integers(0, 1000))
def test_random_shift_is_a_shift_of_each_image(n, c, h, w, k, seed):
    images = torch.rand(n, c, h, w) + 0.1  # no zeros, so every shift is distinguishable
    out = random_shift(images, k, torch.Generator().manual_seed(seed))
    assert out.shape == images.shape
    for image, shifted in zip(images, out, strict=True):
        candidates = [_reference_shift(image, dy, dx)
                      for dy in range(-k, k + 1) for dx in range(-k, k + 1)]
        assert any(torch.equal(shifted, cand) for cand in candidates)


def test_random_shift_uses_every_offset_and_is_reproducible():
    images = torch.zeros(2000, 1, 5, 5)
    images[:, 0, 2, 2] = 1.0  # one bright pixel in the centre
    out = random_shift(images, 1, torch.Generator().manual_seed(0))
    positions = out.flatten(1).argmax(1)
    assert len(set(positions.tolist())) == 9
    again = random_shift(images, 1, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(random_shift(images, 0), images)


def test_random_shift_errors():
    with pytest.raises(ValueError):
        random_shift(torch.ones(3, 5, 5), 1)
    with pytest.raises(ValueError):
        random_shift(torch.ones(1, 1, 5, 5), -1)
