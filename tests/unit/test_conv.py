"""d2l_utils.conv (chapter 13) against PyTorch: every from-scratch convolution, its hand-written
backward pass and the shape formulas, over random shapes in float64; and its error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from d2l_utils.conv import (
    Conv2d,
    Conv2dFunction,
    conv2d,
    conv2d_input_grad,
    conv2d_loops,
    conv2d_weight_grad,
    conv_output_size,
    im2col,
    pair,
    receptive_field,
)

TIGHT = dict(rtol=1e-12, atol=1e-12)


@st.composite
def conv_cases(draw, max_size: int = 9):
    """(x, weight, bias, settings) in float64 with a kernel that fits the padded input."""
    groups = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    smallest = [max(1, d * (k - 1) + 1 - 2 * p) for k, p, d in zip(kernel, padding, dilation)]
    size = [draw(st.integers(low, max(low, max_size))) for low in smallest]
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    double = dict(generator=generator, dtype=torch.float64)
    x = torch.randn(draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)), *size, **double)
    weight = torch.randn(groups * draw(st.integers(1, 3)), x.shape[1] // groups, *kernel, **double)
    bias = torch.randn(len(weight), **double) if draw(st.booleans()) else None
    return x, weight, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_conv2d_loops_matches_f_conv2d(case):
    x, weight, bias, kwargs = case
    torch.testing.assert_close(conv2d_loops(x, weight, bias, **kwargs),
                               F.conv2d(x, weight, bias, **kwargs), **TIGHT)


@settings(max_examples=100, deadline=None)
@given(conv_cases(max_size=16))
def test_conv2d_im2col_matches_f_conv2d(case):
    x, weight, bias, kwargs = case
    torch.testing.assert_close(conv2d(x, weight, bias, **kwargs),
                               F.conv2d(x, weight, bias, **kwargs), **TIGHT)


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_im2col_equals_unfold_exactly(case):
    x, weight, _, kwargs = case
    kwargs.pop("groups")
    torch.testing.assert_close(im2col(x, weight.shape[2:], **kwargs),
                               F.unfold(x, weight.shape[2:], **kwargs), rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_hand_written_backward_matches_autograd(case):
    x, weight, bias, kwargs = case
    inputs = [t.requires_grad_() for t in (x, weight) + ((bias,) if bias is not None else ())]
    expected = F.conv2d(x, weight, bias, **kwargs)
    upstream = torch.randn_like(expected)
    reference = torch.autograd.grad(expected, inputs, upstream)
    ours = Conv2dFunction.apply(x, weight, bias, *kwargs.values())
    torch.testing.assert_close(ours, expected, **TIGHT)
    for got, want in zip(torch.autograd.grad(ours, inputs, upstream), reference):
        torch.testing.assert_close(got, want, **TIGHT)


@settings(max_examples=40, deadline=None)
@given(conv_cases())
def test_gradient_functions_directly(case):
    x, weight, _, kwargs = case
    x.requires_grad_()
    weight.requires_grad_()
    out = F.conv2d(x, weight, **kwargs)
    upstream = torch.randn_like(out)
    grad_x, grad_w = torch.autograd.grad(out, (x, weight), upstream)
    torch.testing.assert_close(conv2d_input_grad(upstream, weight.detach(), x.shape[2:],
                                                 **kwargs), grad_x, **TIGHT)
    torch.testing.assert_close(conv2d_weight_grad(x.detach(), upstream, weight.shape[2:],
                                                  **kwargs), grad_w, **TIGHT)


@pytest.mark.parametrize("seed", range(2))
def test_gradcheck_against_finite_differences(seed):
    generator = torch.Generator().manual_seed(seed)
    double = dict(generator=generator, dtype=torch.float64)
    x = torch.randn(2, 4, 5, 4, **double).requires_grad_()
    weight = torch.randn(6, 2, 3, 2, **double).requires_grad_()
    bias = torch.randn(6, **double).requires_grad_()
    settings_ = ((2, 1), (1, 0), (1, 2), 2)  # stride, padding, dilation, groups
    assert torch.autograd.gradcheck(Conv2dFunction.apply, (x, weight, bias, *settings_))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(1, 3),
       st.integers(1, 3), st.data())
def test_input_grad_is_conv_transpose2d(k, s, p, d, groups, data):
    output_padding = data.draw(st.integers(0, s - 1))
    size = 3 * s - 2 * p + d * (k - 1) + 1 + output_padding  # a 4 x 4 convolution output
    if size < 1:
        return
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    weight = torch.randn(2 * groups, 3, k, k, generator=generator, dtype=torch.float64)
    grad_out = torch.randn(2, 2 * groups, 4, 4, generator=generator, dtype=torch.float64)
    expected = F.conv_transpose2d(grad_out, weight, stride=s, padding=p, dilation=d,
                                  groups=groups, output_padding=output_padding)
    torch.testing.assert_close(conv2d_input_grad(grad_out, weight, (size, size), s, p, d, groups),
                               expected, **TIGHT)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(stride=2, padding=1),
    dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
    dict(groups=3, padding=1),
    dict(groups=3, bias=False, dilation=2),
])
def test_conv2d_module_matches_nn_conv2d(kwargs):
    layers = []
    for make in (Conv2d, nn.Conv2d):
        torch.manual_seed(0)
        layers.append(make(6, 9, 3, **kwargs).double())
    ours, theirs = layers
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=0)  # same draws, same seed
    x = torch.randn(3, 6, 10, 11, dtype=torch.float64)
    out_ours, out_theirs = ours(x), theirs(x)
    torch.testing.assert_close(out_ours, out_theirs, **TIGHT)
    (out_ours**2).sum().backward()
    (out_theirs**2).sum().backward()
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-10, atol=1e-10)


def test_conv2d_works_in_float32_and_without_grad_for_the_input():
    x = torch.randn(2, 3, 8, 8)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    out = Conv2dFunction.apply(x, weight, None, (1, 1), (1, 1), (1, 1), 1)
    torch.testing.assert_close(out, F.conv2d(x, weight, padding=1), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert x.grad is None and weight.grad.shape == weight.shape


@settings(max_examples=100, deadline=None)
@given(conv_cases(max_size=20))
def test_output_size_formula_matches_nn_conv2d(case):
    x, weight, _, kwargs = case
    layer = nn.Conv2d(x.shape[1], len(weight), weight.shape[2:], **kwargs).double()
    expected = [conv_output_size(n, k, s, p, d) for n, k, s, p, d in zip(
        x.shape[2:], weight.shape[2:], kwargs["stride"], kwargs["padding"], kwargs["dilation"])]
    assert list(layer(x).shape[2:]) == expected


def _measured_field(layers: list[nn.Module], size: int = 64) -> tuple[int, int]:
    """(span, jump) along the height, from the gradient of two neighbouring output units of a
    stack whose weights are all one (nothing can cancel)."""
    stack = nn.Sequential(*layers).double()
    with torch.no_grad():
        for layer in stack:
            if isinstance(layer, nn.Conv2d):
                layer.weight.fill_(1.0)
                layer.bias.zero_()
    x = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    out = stack(x)
    i = out.shape[2] // 2
    rows = []
    for step in (0, 1):
        grad, = torch.autograd.grad(out[0, 0, i + step, i], x, retain_graph=True)
        rows.append(grad[0, 0].sum(1).nonzero()[:, 0])
    return int(rows[0][-1] - rows[0][0] + 1), int(rows[1][0] - rows[0][0])


@pytest.mark.parametrize("layers, expected", [
    ([nn.Conv2d(1, 1, 3)], (3, 1)),
    ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3)], (5, 1)),
    ([nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3)], (15, 4)),
    ([nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 3, dilation=4)],
     (15, 1)),
    ([nn.Conv2d(1, 1, 5, stride=2, padding=2), nn.AvgPool2d(2), nn.Conv2d(1, 1, (3, 5))],
     (15, 4)),
])
def test_receptive_field_matches_the_measured_field(layers, expected):
    assert receptive_field(layers) == expected
    assert _measured_field(layers) == expected


def test_receptive_field_reads_pairs_pools_and_our_layer():
    layers = [Conv2d(1, 1, (3, 5), stride=(1, 2)), nn.MaxPool2d(2), nn.BatchNorm2d(1)]
    assert receptive_field(layers, axis=0) == (4, 2)
    assert receptive_field(layers, axis=1) == (7, 4)
    with pytest.raises(ValueError, match="Flatten mixes all positions"):
        receptive_field([nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(4, 2)])


def test_pair():
    assert pair(3, "stride") == (3, 3)
    assert pair((1, 2), "stride") == (1, 2)
    with pytest.raises(ValueError, match="stride must be an int or a pair of ints"):
        pair((1, 2, 3), "stride")
    with pytest.raises(TypeError, match="stride must be an int"):
        pair(1.5, "stride")
    with pytest.raises(ValueError, match=r"stride must be in \[1, inf[\])]"):
        pair(0, "stride", low=1)


@pytest.mark.parametrize("function", [conv2d, conv2d_loops])
def test_errors_say_what_was_expected(function):
    x, weight = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(B C_in H W\)"):
        function(torch.randn(3, 8, 8), weight)
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        function(torch.ones(1, 3, 8, 8, dtype=torch.int64), weight)
    with pytest.raises(TypeError, match="weight and bias must have the dtype of x"):
        function(x, weight.double())
    with pytest.raises(ValueError, match=r"with groups=1, weight must have shape"):
        function(torch.randn(1, 6, 8, 8), weight)
    with pytest.raises(ValueError, match=r"with groups=2, weight must have shape"):
        function(torch.randn(1, 6, 8, 8), torch.randn(3, 3, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"bias must have shape \(C_out\) with C_out = 4"):
        function(x, weight, torch.randn(5))
    with pytest.raises(ValueError, match=r"kernel \(5, 5\) with dilation \(2, 2\) does not fit"):
        function(x, torch.randn(4, 3, 5, 5), dilation=2)
    with pytest.raises(ValueError, match=r"stride must be in \[1, inf[\])], got 0"):
        function(x, weight, stride=0)
    with pytest.raises(ValueError, match=r"padding must be in \[0, inf[\])], got -1"):
        function(x, weight, padding=-1)
    with pytest.raises(TypeError, match="groups must be an int"):
        function(x, weight, groups=1.0)


def test_other_entry_points_check_their_arguments():
    with pytest.raises(ValueError, match="does not fit into the input"):
        im2col(torch.randn(1, 1, 3, 3), 5)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(B C_out H_out W_out\)"):
        conv2d_input_grad(torch.randn(4, 5, 5), torch.randn(4, 3, 3, 3), (7, 7))
    with pytest.raises(ValueError, match=r"grad_out must have shape .* with B = 2"):
        conv2d_weight_grad(torch.randn(2, 3, 7, 7), torch.randn(3, 4, 5, 5), 3)
    with pytest.raises(ValueError, match="out_channels=5 must be divisible by groups=2"):
        Conv2d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size must be in"):
        Conv2d(4, 4, 0)
