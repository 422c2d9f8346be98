"""d2l_utils.pooling (chapter 14) against PyTorch: max and average pooling (values and gradients)
over random shapes in float64, whole-pixel shifts against torch.roll, and the error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.pooling import avg_pool2d, max_pool2d, pool_windows, shift

TIGHT = dict(rtol=1e-12, atol=1e-12)


@st.composite
def pool_cases(draw):
    """(maps, kernel, stride or None, padding) in float64, the window fitting the padded input."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    size = [draw(st.integers(max(1, k - 2 * p), 12)) for k, p in zip(kernel, padding)]
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    maps = torch.randn(draw(st.integers(1, 3)), draw(st.integers(1, 3)), *size,
                       generator=generator, dtype=torch.float64)
    return maps, kernel, stride, padding


@settings(max_examples=80, deadline=None)
@given(pool_cases(), st.sampled_from([(max_pool2d, F.max_pool2d), (avg_pool2d, F.avg_pool2d)]))
def test_pooling_matches_pytorch_values_and_gradients(case, functions):
    maps, kernel, stride, padding = case
    ours, theirs = functions
    inputs = [maps.clone().requires_grad_() for _ in range(2)]
    outputs = [ours(inputs[0], kernel, stride, padding), theirs(inputs[1], kernel, stride, padding)]
    torch.testing.assert_close(outputs[0], outputs[1], **TIGHT)
    upstream = torch.randn_like(outputs[0])
    grads = [torch.autograd.grad(out, inp, upstream)[0] for out, inp in zip(outputs, inputs)]
    torch.testing.assert_close(grads[0], grads[1], **TIGHT)


def test_pool_windows_layout_and_default_stride():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    windows = pool_windows(x, 2, None, 0, 0.0)
    assert windows.shape == (1, 1, 4, 2, 2)
    torch.testing.assert_close(windows[0, 0, :, 0, 1], torch.tensor([2.0, 3.0, 6.0, 7.0]),
                               rtol=0, atol=0)
    padded = pool_windows(x, 3, 1, 1, -1.0)
    assert padded.shape == (1, 1, 9, 4, 4) and padded[0, 0, 0, 0, 0] == -1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=0, max_size=2), st.integers(1, 7), st.integers(1, 7),
       st.integers(-9, 9), st.integers(-9, 9), st.integers(0, 2**31 - 1))
def test_shift_is_roll_with_zeros_moved_in(batch, height, width, dy, dx, seed):
    images = torch.randn(*batch, height, width, generator=torch.Generator().manual_seed(seed))
    rolled = torch.roll(images, (dy, dx), dims=(-2, -1))
    torch.testing.assert_close(shift(images, dy, dx, circular=True), rolled, rtol=0, atol=0)
    expected = rolled.clone()
    rows, cols = torch.arange(height), torch.arange(width)
    wrapped_rows = (rows < dy) if dy >= 0 else (rows >= height + dy)
    wrapped_cols = (cols < dx) if dx >= 0 else (cols >= width + dx)
    expected[..., wrapped_rows, :] = 0.0
    expected[..., :, wrapped_cols] = 0.0
    if abs(dy) >= height or abs(dx) >= width:
        expected = torch.zeros_like(images)
    torch.testing.assert_close(shift(images, dy, dx), expected, rtol=0, atol=0)


def test_shift_moves_a_pixel_where_expected():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 1, 3] = 1.0
    moved = shift(image, 2, -3)   # down 2, left 3
    assert moved[0, 0, 3, 0] == 1.0 and moved.sum() == 1.0
    assert shift(image, 0, 2).sum() == 0.0  # moved out of the frame


def test_errors_say_what_was_expected():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(B C H W\)"):
        max_pool2d(torch.randn(3, 8, 8), 2)
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        avg_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half the kernel"):
        max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match=r"the window \(5, 5\) does not fit"):
        avg_pool2d(torch.randn(1, 1, 3, 3), 5)
    with pytest.raises(ValueError, match=r"stride must be in \[1, inf[\])], got 0"):
        max_pool2d(x, 2, stride=0)
    with pytest.raises(TypeError, match="dy must be an int"):
        shift(x, 1.5, 0)
    with pytest.raises(ValueError, match=r"images must have shape \(\.\.\. H W\)"):
        shift(torch.randn(5), 1, 1)
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        shift([[1.0]], 1, 1)
