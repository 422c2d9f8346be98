"""d2l_utils.modern_cnn (chapter 16) against PyTorch in float64: the VGG block against our
conv2d and max pooling, the 1x1 convolution against nn.Linear per pixel and F.conv2d, folded
batch normalisation against conv + BN in evaluation mode, the residual block from our layers
against the same block from torch.nn layers (values, gradients, running statistics), the ResNet
builder, occlusion sensitivity against covering one square at a time, and the error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from d2l_utils.conv import Conv2d, conv2d, receptive_field
from d2l_utils.modern_cnn import (
    BasicBlock,
    conv1x1,
    fold_batch_norm,
    occlusion_masks,
    occlusion_sensitivity,
    occlusion_to_pixels,
    resnet,
    vgg_block,
)
from d2l_utils.regularisation import BatchNorm

TIGHT = dict(rtol=1e-10, atol=1e-10)
TORCH_LAYERS = dict(conv_layer=nn.Conv2d, norm_layer=nn.BatchNorm2d)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_convs", [1, 2, 3])
def test_vgg_block_shapes_field_and_values(num_convs):
    block = vgg_block(num_convs, 3, 5).double()
    convs = [m for m in block if isinstance(m, nn.Conv2d)]
    assert len(convs) == num_convs
    assert receptive_field(convs) == (2 * num_convs + 1, 1)
    x = randn(2, 3, 8, 6)
    hidden = x
    for conv in convs:
        hidden = F.relu(conv2d(hidden, conv.weight, conv.bias, padding=1))
    torch.testing.assert_close(block(x), F.max_pool2d(hidden, 2), **TIGHT)
    assert block(x).shape == (2, 5, 4, 3)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 5),
       st.integers(1, 5), st.booleans(), st.integers(0, 1000))
def test_conv1x1_matches_linear_per_pixel_and_conv2d(b, c_in, c_out, h, w, bias, seed):
    x, linear = randn(b, c_in, h, w, seed=seed), nn.Linear(c_in, c_out, bias=bias).double()
    ours = conv1x1(x, linear.weight, linear.bias)
    torch.testing.assert_close(ours, linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), **TIGHT)
    torch.testing.assert_close(
        ours, F.conv2d(x, linear.weight[:, :, None, None], linear.bias), **TIGHT)


@pytest.mark.parametrize("norm_layer", [nn.BatchNorm2d, BatchNorm])
@pytest.mark.parametrize("bias,stride,groups", [(True, 1, 1), (False, 2, 1), (True, 1, 2)])
def test_fold_batch_norm_equals_conv_then_bn_in_eval(norm_layer, bias, stride, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=1, bias=bias, groups=groups).double()
    bn = norm_layer(6).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0), bn.bias.normal_()
        for seed in range(3):
            bn(conv(2 + 3 * randn(5, 4, 7, 7, seed=seed)))
    bn.eval()
    x = randn(3, 4, 7, 7, seed=9)
    folded = fold_batch_norm(conv, bn)
    assert isinstance(folded, nn.Conv2d) and folded.bias is not None
    torch.testing.assert_close(folded(x), bn(conv(x)), **TIGHT)


def block_pass(block: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> list:
    x = x.clone().requires_grad_()
    out = block(x)
    out.backward(upstream)
    return [out, x.grad] + [p.grad for p in block.parameters()]


@pytest.mark.parametrize("c_in,c_out,stride,residual", [
    (4, 4, 1, True), (4, 6, 1, True), (3, 6, 2, True), (4, 6, 2, False)])
def test_basic_block_ours_equals_torch_nn(c_in, c_out, stride, residual):
    torch.manual_seed(1)
    ours = BasicBlock(c_in, c_out, stride, residual).double()
    theirs = BasicBlock(c_in, c_out, stride, residual, **TORCH_LAYERS).double()
    assert isinstance(ours.conv1, Conv2d) and isinstance(theirs.conv1, nn.Conv2d)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    assert (ours.downsample is not None) == (residual and (stride > 1 or c_in != c_out))
    x = randn(5, c_in, 7, 6)
    upstream = randn(5, c_out, (7 - 1) // stride + 1, (6 - 1) // stride + 1, seed=2)
    torch.testing.assert_close(block_pass(ours, x, upstream), block_pass(theirs, x, upstream),
                               **TIGHT)
    statistics = {k: v for k, v in theirs.state_dict().items() if "num_batches" not in k}
    torch.testing.assert_close(ours.state_dict(), statistics, **TIGHT)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), **TIGHT)


def test_residual_block_with_zero_branch_is_identity():
    block = BasicBlock(3, 3).double()
    with torch.no_grad():
        block.bn2.weight.zero_()
    x = F.relu(randn(2, 3, 5, 5))
    torch.testing.assert_close(block(x), x, **TIGHT)


@pytest.mark.parametrize("blocks", [1, 2])
def test_resnet_depth_shape_and_layers(blocks):
    torch.manual_seed(0)
    model = resnet(4, (4, 8), blocks).double().eval()
    convs = [m for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and "downsample" not in name]
    assert len(convs) == 1 + 2 * 2 * blocks
    assert model(randn(3, 1, 12, 12)).shape == (3, 10)
    ours = resnet(4, (4, 8), blocks, conv_layer=Conv2d, norm_layer=BatchNorm).double().eval()
    ours.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(ours(randn(2, 1, 12, 12)), model(randn(2, 1, 12, 12)), **TIGHT)
    plain = resnet(4, (4, 8), blocks, residual=False)
    assert all(not b.residual and b.downsample is None
               for b in plain if isinstance(b, BasicBlock))


@pytest.mark.parametrize("h,w,patch,stride", [(6, 5, 2, 2), (7, 7, 3, 2), (5, 8, 5, 1)])
def test_occlusion_masks_cover_each_square(h, w, patch, stride):
    masks = occlusion_masks(h, w, patch, stride)
    assert masks.shape == ((h - patch) // stride + 1, (w - patch) // stride + 1, h, w)
    for i in range(masks.shape[0]):
        for j in range(masks.shape[1]):
            expected = torch.zeros(h, w, dtype=torch.bool)
            expected[i * stride:i * stride + patch, j * stride:j * stride + patch] = True
            assert torch.equal(masks[i, j], expected)


@pytest.mark.parametrize("patch,stride,fill", [(3, None, 0.0), (4, 2, -1.0)])
def test_occlusion_sensitivity_matches_one_square_at_a_time(patch, stride, fill):
    torch.manual_seed(0)
    model = resnet(4, (4,), 1, in_channels=2, num_classes=3).double().eval()
    images, labels = randn(2, 2, 9, 8), torch.tensor([0, 2])
    drops = occlusion_sensitivity(model, images, labels, patch, stride, fill)
    step = stride or patch
    with torch.no_grad():
        for b in range(2):
            p = model(images[b:b + 1]).softmax(-1)[0, labels[b]]
            for i in range(drops.shape[1]):
                for j in range(drops.shape[2]):
                    covered = images[b:b + 1].clone()
                    covered[..., i * step:i * step + patch, j * step:j * step + patch] = fill
                    q = model(covered).softmax(-1)[0, labels[b]]
                    torch.testing.assert_close(drops[b, i, j], p - q, **TIGHT)


def test_occlusion_to_pixels_averages_the_covering_squares():
    drops = randn(2, 3, 3)
    pixels = occlusion_to_pixels(drops, 4, 2, size=(8, 8))
    assert pixels.shape == (2, 8, 8)
    torch.testing.assert_close(pixels[:, 0, 0], drops[:, 0, 0], **TIGHT)     # one square
    torch.testing.assert_close(pixels[:, 2, 2], drops[:, :2, :2].mean((1, 2)), **TIGHT)
    torch.testing.assert_close(occlusion_to_pixels(drops, 3, 3, size=(9, 9)),
                               drops.repeat_interleave(3, 1).repeat_interleave(3, 2), **TIGHT)


def test_errors():
    with pytest.raises(ValueError, match="num_convs"):
        vgg_block(0, 1, 1)
    with pytest.raises(ValueError, match="weight"):
        conv1x1(randn(1, 3, 2, 2), randn(4, 2))
    with pytest.raises(TypeError, match="x"):
        conv1x1(torch.zeros(1, 3, 2, 2, dtype=torch.int64), randn(4, 3))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        fold_batch_norm(Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="running statistics"):
        fold_batch_norm(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="running statistics"):
        fold_batch_norm(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="stride"):
        BasicBlock(2, 2, stride=0)
    with pytest.raises(ValueError, match="widths"):
        resnet(4, (), 1)
    model = resnet(4, (4,), 1)
    with pytest.raises(ValueError, match="eval"):
        occlusion_sensitivity(model, torch.zeros(1, 1, 8, 8), torch.tensor([0]), 3)
    model.eval()
    with pytest.raises(ValueError, match="patch"):
        occlusion_sensitivity(model, torch.zeros(1, 1, 8, 8), torch.tensor([0]), 9)
    with pytest.raises(ValueError, match="labels"):
        occlusion_sensitivity(model, torch.zeros(2, 1, 8, 8), torch.tensor([0]), 3)
