"""Tests for d2l_utils.diffusion (chapter 29): schedules, the closed-form forward process
against the step-by-step chain, the posterior against Gaussian conditioning, DDPM against DDIM
with eta = 1, DDIM's determinism and exactness with a perfect noise predictor, the networks'
shapes and the bad-input errors."""

import math

import pytest
import torch
from torch import nn

from d2l_utils.diffusion import (
    NoiseMLP,
    SmallUNet,
    alpha_bars,
    ddim_sample,
    ddpm_sample,
    guided_noise,
    linear_betas,
    noise_prediction_loss,
    posterior_coefficients,
    q_sample,
    time_embedding,
)


def random_betas(T, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.001 + 0.2 * torch.rand(T, generator=gen, dtype=torch.float64)   # (T,) in (0, 1)


class PerfectNoise(nn.Module):
    """The exact noise of x_t for one known x0: (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""

    def __init__(self, x0, alpha_bar):
        super().__init__()
        self.x0, self.alpha_bar = x0, alpha_bar

    def forward(self, x, t):
        ab = self.alpha_bar[t].view(-1, *[1] * (x.dim() - 1))
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


def test_linear_schedule_and_alpha_bar():
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    torch.testing.assert_close(betas[[0, -1]], torch.tensor([1e-4, 0.02], dtype=torch.float64))
    betas = random_betas(7)
    expected = torch.tensor([math.prod(1 - b for b in betas[:t + 1].tolist()) for t in range(7)],
                            dtype=torch.float64)
    torch.testing.assert_close(alpha_bars(betas), expected)


def test_closed_form_matches_the_chain():
    gen = torch.Generator().manual_seed(0)
    betas, n = random_betas(20, seed=1) / 4, 50_000
    alpha_bar = alpha_bars(betas)
    x0 = torch.tensor([2.0, -1.0], dtype=torch.float64)                      # (2,)
    x = x0.expand(n, 2).clone()                                              # (n, 2)
    for t in range(20):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(
            n, 2, generator=gen, dtype=torch.float64)
    closed = q_sample(x0.expand(n, 2), torch.full((n,), 19), alpha_bar,
                      torch.randn(n, 2, generator=gen, dtype=torch.float64))
    var = 1 - alpha_bar[-1]
    for sample in (x, closed):
        assert (sample.mean(0) - alpha_bar[-1].sqrt() * x0).abs().max() < 4 * (var / n).sqrt()
        assert (sample.var(0) - var).abs().max() < 4 * var * math.sqrt(2 / (n - 1))


def test_q_sample_formula_per_example():
    alpha_bar = alpha_bars(random_betas(10))
    x0, noise = torch.randn(2, 4, 3, 5, dtype=torch.float64)                 # (4, 3, 5) each
    t = torch.tensor([0, 3, 9, 5])
    expected = torch.stack([alpha_bar[s].sqrt() * x0[i] + (1 - alpha_bar[s]).sqrt() * noise[i]
                            for i, s in enumerate(t.tolist())])
    torch.testing.assert_close(q_sample(x0, t, alpha_bar, noise), expected)


@pytest.mark.parametrize("t", [1, 4, 11])
def test_posterior_matches_gaussian_conditioning(t):
    betas = random_betas(12, seed=2)
    alpha_bar = alpha_bars(betas)
    c0, ct, variance = posterior_coefficients(betas, t)
    # (x_{t-1}, x_t) | x0 is Gaussian; condition on x_t with the covariance formula
    v, a = 1 - alpha_bar[t - 1], 1 - betas[t]
    slope = a.sqrt() * v / (a * v + betas[t])
    torch.testing.assert_close(torch.tensor(ct, dtype=torch.float64), slope)
    torch.testing.assert_close(torch.tensor(c0, dtype=torch.float64),
                               alpha_bar[t - 1].sqrt() - slope * alpha_bar[t].sqrt())
    torch.testing.assert_close(torch.tensor(variance, dtype=torch.float64),
                               v - a * v**2 / (a * v + betas[t]))
    assert posterior_coefficients(betas, 0) == pytest.approx((1.0, 0.0, 0.0), abs=1e-12)


def test_ddim_with_eta_one_and_all_steps_is_ddpm():
    betas = random_betas(30, seed=3) / 5
    torch.manual_seed(0)
    model = NoiseMLP(dim=3, hidden=16, embedding=8).double()
    x_T = torch.randn(9, 3, dtype=torch.float64)
    ddpm = ddpm_sample(model, x_T, betas, torch.Generator().manual_seed(4))
    ddim = ddim_sample(model, x_T, alpha_bars(betas), 30, eta=1.0,
                       generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(ddim, ddpm)


def test_ddim_is_deterministic_and_exact_with_perfect_noise():
    betas = linear_betas(200)
    alpha_bar = alpha_bars(betas)
    x0 = torch.randn(1, 1, 4, 6, dtype=torch.float64)
    x_T = torch.randn(3, 1, 4, 6, dtype=torch.float64)
    model = PerfectNoise(x0, alpha_bar)
    path = []
    first = ddim_sample(model, x_T, alpha_bar, 7, generator=torch.Generator().manual_seed(0),
                        trajectory=path)
    second = ddim_sample(model, x_T, alpha_bar, 7, generator=torch.Generator().manual_seed(1))
    assert len(path) == 7 and torch.equal(first, second)
    torch.testing.assert_close(first, x0.expand(3, 1, 4, 6))
    torch.testing.assert_close(ddim_sample(model, x_T, alpha_bar, 1), x0.expand(3, 1, 4, 6))


def test_loss_is_zero_for_the_perfect_predictor():
    alpha_bar = alpha_bars(linear_betas(50))
    x0 = torch.randn(1, 5, dtype=torch.float64)
    loss = noise_prediction_loss(PerfectNoise(x0, alpha_bar), x0.expand(8, 5), alpha_bar,
                                 torch.Generator().manual_seed(0))
    assert loss.shape == () and loss.item() < 1e-20


def test_time_embedding_and_networks_shapes():
    t = torch.tensor([0, 5, 999])
    e = time_embedding(t, 10)
    assert e.shape == (3, 10)
    torch.testing.assert_close(e[0], torch.tensor([0.0] * 5 + [1.0] * 5))
    assert NoiseMLP(4, 8, 6)(torch.randn(3, 4), t).shape == (3, 4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        B, H, W = (int(v) for v in torch.randint(1, 5, (3,), generator=gen))
        unet = SmallUNet(channels=8, embedding=16)
        x = torch.randn(B, 1, 2 * H, 2 * W, requires_grad=True)
        out = unet(x, torch.randint(1000, (B,), generator=gen))
        assert out.shape == x.shape
        out.sum().backward()
        assert x.grad is not None and all(p.grad is not None for p in unet.parameters())


def test_class_conditional_unet_and_guidance():
    torch.manual_seed(0)
    unet = SmallUNet(channels=4, embedding=8, num_classes=3).double()
    x = torch.randn(5, 1, 6, 4, dtype=torch.float64)
    t, labels = torch.tensor([0, 3, 7, 9, 2]), torch.tensor([0, 1, 2, 3, 1])   # 3: "no class"
    eps_c, eps_u = unet(x, t, labels), unet(x, t, torch.full_like(labels, 3))
    assert eps_c.shape == x.shape and not torch.allclose(eps_c, eps_u)
    torch.testing.assert_close(guided_noise(unet, labels, 0.0)(x, t), eps_c)
    torch.testing.assert_close(guided_noise(unet, labels, 2.5)(x, t), 3.5 * eps_c - 2.5 * eps_u)
    alpha_bar = alpha_bars(linear_betas(10))
    x0 = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    loss = noise_prediction_loss(unet, x0, alpha_bar, torch.Generator().manual_seed(0),
                                 labels=torch.tensor([0, 1, 2, 3]))
    assert loss.shape == () and loss.item() > 0
    with pytest.raises(ValueError, match=r"labels must be in 0..3"):
        unet(x, t, torch.tensor([0, 1, 2, 4, 1]))
    with pytest.raises(ValueError, match="labels need a model built with num_classes > 0"):
        SmallUNet(channels=4, embedding=8)(x.float(), t, labels)
    with pytest.raises(ValueError, match="guidance needs a class-conditional model"):
        guided_noise(SmallUNet(channels=4, embedding=8), labels, 1.0)
    with pytest.raises(ValueError, match="w must be in"):
        guided_noise(unet, labels, -1.0)


def test_bad_inputs():
    betas = linear_betas(10)
    alpha_bar = alpha_bars(betas)
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="every beta must be in"):
        alpha_bars(torch.tensor([0.1, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="start must be in"):
        linear_betas(10, start=0.0)
    with pytest.raises(ValueError, match="t must be in 0..9"):
        q_sample(x0, torch.tensor([0, 10]), alpha_bar, x0)
    with pytest.raises(TypeError, match="t must have an integer dtype"):
        q_sample(x0, torch.tensor([0.0, 1.0]), alpha_bar, x0)
    with pytest.raises(ValueError, match="noise must have x0's shape"):
        q_sample(x0, torch.tensor([0, 1]), alpha_bar, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"t must be in \[0, 9\]"):
        posterior_coefficients(betas, 10)
    model = NoiseMLP(3, 8, 4)
    with pytest.raises(ValueError, match=r"steps must be in \[1, 10\]"):
        ddim_sample(model, x0, alpha_bar, 0)
    with pytest.raises(ValueError, match=r"steps must be in \[1, 10\]"):
        ddim_sample(model, x0, alpha_bar, 11)
    with pytest.raises(ValueError, match="eta must be in"):
        ddim_sample(model, x0, alpha_bar, 5, eta=-0.5)
    with pytest.raises(ValueError, match="channels must be a multiple of 4"):
        SmallUNet(channels=6)
    unet = SmallUNet(channels=4, embedding=8)
    with pytest.raises(ValueError, match=r"x must have shape \(B 1 H W\)"):
        unet(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="height and width must be even"):
        unet(torch.zeros(2, 1, 5, 4), torch.tensor([0, 1]))
