"""Chapter 10's initialisers against torch.nn.init, and the per-layer statistics recorder."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from d2l_utils._book import standin_device
from d2l_utils.init import (
    LayerStats,
    fans,
    he_gain,
    he_normal,
    he_uniform,
    kaiming_normal,
    kaiming_uniform,
    record_layer_stats,
    standard_uniform,
    xavier_normal,
    xavier_uniform,
)

# The stand-in accelerator (a CPU device that fails where CUDA or MPS would), installed at import:
# before any backward pass of this process, as autograd requires.
STANDIN = standin_device.install()

weight_shapes = st.tuples(st.integers(1, 40), st.integers(1, 40),
                          st.lists(st.integers(1, 3), max_size=2)).map(
    lambda t: (t[0], t[1], *t[2]))


def torch_draw(init_, shape, seed):
    weights = torch.empty(shape, dtype=torch.float64)
    init_(weights, generator=torch.Generator().manual_seed(seed))
    return weights


def ours_draw(init, shape, seed, **kwargs):
    return init(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                **kwargs)


@settings(max_examples=25, deadline=None)
@given(weight_shapes, st.integers(0, 2**31 - 1), st.floats(0.0, 0.5),
       st.sampled_from(["fan_in", "fan_out"]), st.floats(0.5, 2.0))
def test_same_draws_as_torch_nn_init(shape, seed, slope, mode, gain):
    pairs = [
        (ours_draw(xavier_uniform, shape, seed, gain=gain),
         torch_draw(lambda w, generator: nn.init.xavier_uniform_(w, gain, generator), shape, seed)),
        (ours_draw(xavier_normal, shape, seed, gain=gain),
         torch_draw(lambda w, generator: nn.init.xavier_normal_(w, gain, generator), shape, seed)),
        (ours_draw(he_normal, shape, seed, negative_slope=slope, mode=mode),
         torch_draw(lambda w, generator: nn.init.kaiming_normal_(
             w, slope, mode, "leaky_relu", generator), shape, seed)),
        (ours_draw(he_uniform, shape, seed, negative_slope=slope, mode=mode),
         torch_draw(lambda w, generator: nn.init.kaiming_uniform_(
             w, slope, mode, "leaky_relu", generator), shape, seed)),
        (ours_draw(standard_uniform, shape, seed),
         torch_draw(lambda w, generator: nn.init.kaiming_uniform_(
             w, math.sqrt(5), generator=generator), shape, seed)),
    ]
    for ours, theirs in pairs:
        assert ours.shape == shape and ours.dtype == torch.float64
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(weight_shapes)
def test_fans_match_torch(shape):
    assert fans(shape) == nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("fan_in, fan_out", [(100, 300), (784, 256), (50, 50)])
def test_bounds_and_standard_deviations(fan_in, fan_out):
    shape = (fan_out, fan_in)
    generator = torch.Generator().manual_seed(0)
    bound = math.sqrt(6 / (fan_in + fan_out))
    w = xavier_uniform(shape, generator=generator, dtype=torch.float64)
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    w = standard_uniform(shape, generator=generator, dtype=torch.float64)
    assert w.abs().max() <= 1 / math.sqrt(fan_in)
    n = fan_in * fan_out
    for init, std in [(xavier_normal, math.sqrt(2 / (fan_in + fan_out))),
                      (he_normal, math.sqrt(2 / fan_in)), (he_uniform, math.sqrt(2 / fan_in)),
                      (xavier_uniform, math.sqrt(2 / (fan_in + fan_out)))]:
        w = init(shape, generator=generator, dtype=torch.float64)
        assert abs(w.std().item() / std - 1) < 5 / math.sqrt(n)  # a few standard errors
        assert abs(w.mean().item()) < 5 * std / math.sqrt(n)


def test_aliases_and_gain():
    assert kaiming_normal is he_normal and kaiming_uniform is he_uniform
    assert he_gain() == pytest.approx(math.sqrt(2))
    for slope in (0.0, 0.01, 0.3):
        assert he_gain(slope) == pytest.approx(nn.init.calculate_gain("leaky_relu", slope))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="2 positive"):
        xavier_uniform((5,))
    with pytest.raises(ValueError, match="2 positive"):
        he_normal((3, 0))
    with pytest.raises(ValueError, match="mode"):
        he_normal((3, 4), mode="fan_avg")
    with pytest.raises(TypeError, match="floating"):
        xavier_normal((3, 4), dtype=torch.int64)


@pytest.mark.parametrize("init", [standard_uniform, xavier_uniform, xavier_normal, he_normal,
                                  he_uniform])
def test_a_cpu_generator_draws_the_same_weights_for_any_device(init):
    """Drawn on the generator's device (the CPU), then moved: a CPU generator serves a GPU model
    (CUDA and MPS refuse a CPU generator for a draw on the device: the stand-in checks that)."""
    def draw(**kwargs):
        return init((20, 30), generator=torch.Generator().manual_seed(3), **kwargs)

    reference = draw()
    on_cpu, on_device = draw(device="cpu"), draw(device=STANDIN)
    assert on_cpu.device.type == "cpu" and on_device.device.type == "standin"
    torch.testing.assert_close(on_cpu, reference, rtol=0, atol=0)
    torch.testing.assert_close(on_device.cpu(), reference, rtol=0, atol=0)
    unseeded = init((4, 5), device=STANDIN, dtype=torch.float32)
    assert unseeded.device.type == "standin" and unseeded.dtype == torch.float32


def build(widths, activation, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(n_in, n_out).double()]
        if i < len(widths) - 2:
            layers += [activation()]
    return nn.Sequential(*layers)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(2, 12), min_size=3, max_size=6), st.integers(2, 9),
       st.sampled_from([nn.Tanh, nn.ReLU, nn.Sigmoid]), st.integers(0, 1000))
def test_recorder_matches_retain_grad(widths, batch, activation, seed):
    model = build(widths, activation, seed)
    x = torch.randn(batch, widths[0], dtype=torch.float64)
    y = torch.randint(0, widths[-1], (batch,))
    stats = record_layer_stats(model, x, y)
    hiddens, out = [], x
    for module in model:
        out = module(out)
        if not isinstance(module, nn.Linear):
            out.retain_grad()
            hiddens.append(out)
    F.cross_entropy(out, y).backward()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert isinstance(stats, LayerStats)
    assert len(stats.activation_std) == len(stats.gradient_std) == len(widths) - 2
    assert len(stats.weight_grad_std) == len(widths) - 1
    torch.testing.assert_close(torch.tensor(stats.activation_std, dtype=torch.float64),
                               torch.stack([h.std() for h in hiddens]).detach())
    torch.testing.assert_close(torch.tensor(stats.gradient_std, dtype=torch.float64),
                               torch.stack([h.grad.std() for h in hiddens]))
    torch.testing.assert_close(torch.tensor(stats.weight_grad_std, dtype=torch.float64),
                               torch.stack([m.weight.grad.std() for m in linears]))


def test_recorder_leaves_grads_untouched_and_accepts_a_loss():
    model = build([4, 6, 6, 1], nn.ReLU)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    stats = record_layer_stats(model, x, y, loss_fn=F.mse_loss)
    assert all(p.grad is None for p in model.parameters())
    assert len(stats.gradient_std) == 2 and all(g > 0 for g in stats.weight_grad_std)


def test_recorder_rejects_bad_input():
    with pytest.raises(TypeError, match="Sequential"):
        record_layer_stats(nn.Linear(3, 2), torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="floating"):
        record_layer_stats(build([3, 4, 2], nn.ReLU), torch.ones(4, 3, dtype=torch.long),
                           torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="activation"):
        record_layer_stats(nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3),
                           torch.zeros(4, dtype=torch.long))
