"""d2l_utils.lenet (chapter 15): the connection-table convolution against per-connection
``F.conv2d`` calls (values and gradients, float64), the layer's free weights against its full
kernel, trainable subsampling against window sums, the papers' parameter counts, and the
error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from d2l_utils.lenet import (
    LeNet5,
    LeNet1989,
    Subsampling,
    TableConv2d,
    UnitBias,
    lenet5_table,
    modern_lenet,
    scaled_tanh,
    table_conv2d,
    zip_code_table,
)

TIGHT = dict(rtol=1e-12, atol=1e-12)


def per_connection(x, weight, table, bias, stride, padding):
    """The definition: output map j is the sum over connected i of w_ji * x_i, plus b_j."""
    maps = []
    for j in range(len(table)):
        y = bias[j] + sum(F.conv2d(x[:, i:i + 1], weight[j:j + 1, i:i + 1], stride=stride,
                                   padding=padding) for i in table[j].nonzero().flatten())
        maps.append(y)
    return torch.cat(maps, dim=1)


@st.composite
def table_cases(draw):
    c_in, c_out, k = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 2))
    size = draw(st.integers(k, 9))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    table = torch.rand(c_out, c_in, generator=generator) < 0.5
    table[torch.arange(c_out), torch.randint(c_in, (c_out,), generator=generator)] = True
    x = torch.randn(2, c_in, size, size, dtype=torch.float64, generator=generator)
    w = torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=generator)
    b = torch.randn(c_out, dtype=torch.float64, generator=generator)
    return x, w, table, b, stride, padding


@settings(max_examples=25, deadline=None)
@given(table_cases())
def test_table_conv2d_matches_per_connection_convolutions(case):
    x, w, table, b, stride, padding = case
    inputs = [t.clone().requires_grad_() for t in (x, w, b)]
    references = [t.clone().requires_grad_() for t in (x, w, b)]
    ours = table_conv2d(inputs[0], inputs[1], table, inputs[2], stride, padding)
    theirs = per_connection(*references[:2], table, references[2], stride, padding)
    torch.testing.assert_close(ours, theirs, **TIGHT)
    upstream = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, inputs, upstream)
    expected = torch.autograd.grad(theirs, references, upstream, allow_unused=True)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, torch.zeros_like(g) if e is None else e, **TIGHT)
    assert (grads[1][~table] == 0).all()          # masked kernels get no gradient


def test_table_conv2d_with_a_full_table_is_conv2d():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 10, 10, dtype=torch.float64, generator=generator)
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=generator)
    table = torch.ones(5, 4, dtype=torch.bool)
    torch.testing.assert_close(table_conv2d(x, w, table, None, 2, 1),
                               F.conv2d(x, w, None, 2, 1), **TIGHT)


def test_table_layer_scatters_its_free_kernels_in_table_order():
    torch.manual_seed(0)
    table = lenet5_table()
    layer = TableConv2d(table, 5).double()
    full = layer.full_weight()                                      # (16, 6, 5, 5)
    assert layer.weight.shape == (60, 5, 5) and (full[~table] == 0).all()
    rows, cols = table.nonzero(as_tuple=True)
    torch.testing.assert_close(full[rows, cols], layer.weight, **TIGHT)
    x = torch.randn(2, 6, 14, 14, dtype=torch.float64)
    torch.testing.assert_close(layer(x), F.conv2d(x, full, layer.bias), **TIGHT)
    fan_in = table.sum(1)[rows] * 25                                # init bound per connection
    assert (layer.weight.abs().amax((1, 2)) <= fan_in.double().rsqrt()).all()


def test_subsampling_and_unit_bias():
    torch.manual_seed(0)
    layer = Subsampling(3).double()
    with torch.no_grad():
        layer.coefficient.copy_(torch.tensor([0.5, -1.0, 2.0]))
        layer.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    sums = F.avg_pool2d(x, 2, divisor_override=1)
    torch.testing.assert_close(layer(x), sums * layer.coefficient[:, None, None]
                               + layer.bias[:, None, None], **TIGHT)
    bias = UnitBias(3, 6, 6, fan_in=9).double()
    torch.testing.assert_close(bias(x) - x, bias.bias.expand_as(x), **TIGHT)


def test_scaled_tanh_and_the_tables():
    assert abs(scaled_tanh(torch.tensor(1.0)).item() - 1) < 1e-4
    assert abs(scaled_tanh(torch.tensor(1e3)).item() - 1.7159) < 1e-6
    assert zip_code_table().sum(1).tolist() == [8] * 12
    assert zip_code_table().sum(0).tolist() == [8] * 12
    table = lenet5_table()
    assert table.sum() == 60 and table.sum(1).tolist() == [3] * 6 + [4] * 9 + [6]
    assert table[0].nonzero().flatten().tolist() == [0, 1, 2]
    assert table[:, 0].nonzero().flatten().tolist() == [0, 4, 5, 6, 9, 10, 11, 12, 14, 15]


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_papers():
    net = LeNet1989()
    assert count(net) == 9_760
    assert [count(net[:2]), count(net[3:5]), count(net[7]), count(net[9])] == [
        1_068, 2_592, 5_790, 310]
    lenet5 = LeNet5()
    assert [count(lenet5[i]) for i in (0, 2, 4, 6, 8, 11, 13)] == [
        156, 12, 1_516, 32, 48_120, 10_164, 850]
    assert count(lenet5) == 60_850 and count(modern_lenet()) == 61_258


def test_shapes_and_padding():
    torch.manual_seed(0)
    assert LeNet1989()(torch.zeros(3, 1, 16, 16)).shape == (3, 10)
    lenet5 = LeNet5().eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(lenet5(x), lenet5(F.pad(x, (2, 2, 2, 2))))
    model = modern_lenet()
    assert isinstance(model, nn.Sequential) and model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model)
    assert any(isinstance(m, nn.MaxPool2d) for m in model)


def test_bad_input_is_explained():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="weight must have shape"):
        table_conv2d(x, torch.zeros(2, 4, 3, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="table must have torch.bool"):
        table_conv2d(x, torch.zeros(2, 3, 3, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="table must have shape"):
        table_conv2d(x, torch.zeros(2, 3, 3, 3), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one input map"):
        TableConv2d(torch.tensor([[True, False], [False, False]]), 3)
    with pytest.raises(ValueError, match="x must have shape"):
        LeNet1989()(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="32x32 or 28x28"):
        LeNet5()(torch.zeros(2, 1, 30, 30))
    with pytest.raises(TypeError, match="floating-point"):
        LeNet5()(torch.zeros(2, 1, 32, 32, dtype=torch.int64))
    with pytest.raises(ValueError, match="activation must be"):
        LeNet5(activation="sigmoid")
    with pytest.raises(ValueError, match="pooling must be"):
        LeNet5(pooling="avg")
