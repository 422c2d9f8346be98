"""d2l_utils.gan (chapter 28): the discriminator's and generator's losses against
F.binary_cross_entropy_with_logits and their closed-form gradients (float64), the optimal
discriminator on known densities, the ring's centres against the yardstick's sampler, the mode
count on constructed samples, one training step, the DCGAN shapes, and the error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from d2l_utils.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    discriminator_loss,
    gan_step,
    generator_loss,
    mode_coverage,
    optimal_discriminator,
    ring_centres,
)
from d2l_utils.yardstick import ring_of_gaussians

F64 = torch.float64


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 4, 1)])
def test_losses_match_binary_cross_entropy(shape):
    gen = torch.Generator().manual_seed(len(shape))
    real = 5 * torch.randn(shape, generator=gen, dtype=F64)
    fake = (5 * torch.randn(shape, generator=gen, dtype=F64)).requires_grad_()
    ones, zeros = torch.ones(shape, dtype=F64), torch.zeros(shape, dtype=F64)
    bce = F.binary_cross_entropy_with_logits
    torch.testing.assert_close(discriminator_loss(real, fake), bce(real, ones) + bce(fake, zeros))
    torch.testing.assert_close(generator_loss(fake), bce(fake, ones))
    torch.testing.assert_close(generator_loss(fake, saturating=True), -bce(fake, zeros))
    d = torch.sigmoid(fake.detach())
    n = fake.numel()
    grad_sat = torch.autograd.grad(generator_loss(fake, saturating=True), fake)[0]
    grad_ns = torch.autograd.grad(generator_loss(fake), fake)[0]
    torch.testing.assert_close(grad_sat, -d / n)                  # d/dl log(1 - sigmoid(l))
    torch.testing.assert_close(grad_ns, -(1 - d) / n)             # d/dl -log sigmoid(l)


def test_losses_stay_finite_for_extreme_logits():
    logits = torch.tensor([-1e4, 0.0, 1e4], dtype=F64)
    assert torch.isfinite(discriminator_loss(logits, logits))
    assert torch.isfinite(generator_loss(logits)) and torch.isfinite(generator_loss(logits, True))


def test_optimal_discriminator_on_known_densities():
    x = torch.linspace(-4, 4, 101, dtype=F64)
    p, q = Normal(0.0, 1.0).log_prob(x).exp(), Normal(1.0, 2.0).log_prob(x).exp()
    d = optimal_discriminator(p, q)
    torch.testing.assert_close(d, p / (p + q))
    torch.testing.assert_close(optimal_discriminator(p, p), torch.full_like(p, 0.5))
    # D* maximises a log y + b log(1 - y) pointwise: any other y does worse
    value = p * torch.log(d) + q * torch.log(1 - d)
    for other in (d * 0.9, (d + 0.05).clamp(max=0.999)):
        assert (p * torch.log(other) + q * torch.log(1 - other) <= value + 1e-15).all()
    assert optimal_discriminator(torch.tensor([1.0]), torch.tensor([0.0])).item() == 1.0


def test_ring_centres_match_the_sampler():
    centres = ring_centres(8, 2.0)
    assert centres.shape == (8, 2)
    torch.testing.assert_close(centres.norm(dim=1), torch.full((8,), 2.0))
    torch.testing.assert_close(centres[2], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
    x = ring_of_gaussians(40_000, std=0.05, generator=torch.Generator().manual_seed(0))
    nearest = torch.cdist(x, centres).min(1)
    assert nearest.values.max() < 0.05 * 6                     # every point near a centre
    shares = torch.bincount(nearest.indices, minlength=8) / len(x)
    assert (shares - 1 / 8).abs().max() < 0.015
    offsets = x - centres[nearest.indices]
    assert (offsets.std(0) - 0.05).abs().max() < 0.002
    assert ring_centres(3, 1.0).shape == (3, 2)


def test_mode_coverage_on_constructed_samples():
    centres = ring_centres(8, 2.0)
    std = 0.05
    samples = torch.cat([centres[0].repeat(25, 1),                # covered
                         centres[1].repeat(19, 1),                # one short of covered
                         (centres[2] + torch.tensor([0.149, 0.0]))[None],  # inside 3 std
                         (centres[3] + torch.tensor([0.151, 0.0]))[None],  # outside
                         centres[4].repeat(20, 1),                # exactly the threshold
                         torch.zeros(10, 2)])                     # the middle of the ring
    covered, quality = mode_coverage(samples, centres, std)
    assert covered == 2
    assert math.isclose(quality, (25 + 19 + 1 + 20) / len(samples))
    assert mode_coverage(samples, centres, std, min_count=1) == (4, quality)
    real = ring_of_gaussians(4000, std=std, generator=torch.Generator().manual_seed(1))
    covered, quality = mode_coverage(real, centres, std)
    assert covered == 8 and 0.98 < quality < 1.0


def test_gan_step_updates_both_players():
    torch.manual_seed(0)
    generator, discriminator = nn.Linear(2, 2), nn.Linear(2, 1)
    before_g = [p.detach().clone() for p in generator.parameters()]
    before_d = [p.detach().clone() for p in discriminator.parameters()]
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.1)
    loss_d, loss_g = gan_step(generator, discriminator, opt_g, opt_d, torch.randn(16, 2),
                              torch.randn(16, 2))
    assert isinstance(loss_d, float) and isinstance(loss_g, float)
    assert all(not torch.equal(a, b) for a, b in zip(before_g, generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, discriminator.parameters()))


@pytest.mark.parametrize("latent,channels,batch", [(32, 32, 4), (8, 4, 3)])
def test_dcgan_shapes(latent, channels, batch):
    generator, discriminator = DCGANGenerator(latent, channels), DCGANDiscriminator(channels)
    images = generator(torch.randn(batch, latent))
    assert images.shape == (batch, 1, 28, 28) and images.abs().max() <= 1
    assert discriminator(images).shape == (batch,)
    convs = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == 2 and all(c.stride == (2, 2) for c in convs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="modes"):
        ring_centres(0)
    with pytest.raises(ValueError, match="radius"):
        ring_centres(8, 0.0)
    centres = ring_centres()
    with pytest.raises(ValueError, match="std"):
        mode_coverage(torch.zeros(5, 2), centres, 0.0)
    with pytest.raises(ValueError, match="std"):
        mode_coverage(torch.zeros(5, 2), centres, -0.1)
    with pytest.raises(ValueError, match="samples"):
        mode_coverage(torch.zeros(5, 3), centres, 0.05)
    with pytest.raises(ValueError, match="min_count"):
        mode_coverage(torch.zeros(5, 2), centres, 0.05, min_count=0)
    with pytest.raises(TypeError, match="real_logits"):
        discriminator_loss(torch.zeros(3, dtype=torch.int64), torch.zeros(3))
    with pytest.raises(ValueError, match="one shape"):
        optimal_discriminator(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match=">= 0"):
        optimal_discriminator(torch.tensor([-1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="both densities are 0"):
        optimal_discriminator(torch.tensor([0.0]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="z"):
        DCGANGenerator(latent=32)(torch.randn(4, 16))
    with pytest.raises(TypeError, match="z"):
        DCGANGenerator(latent=32)(torch.zeros(4, 32, dtype=torch.int64))
    with pytest.raises(ValueError, match="images"):
        DCGANDiscriminator()(torch.randn(4, 1, 32, 32))
    with pytest.raises(ValueError, match="latent"):
        DCGANGenerator(latent=0)
