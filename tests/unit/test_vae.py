"""d2l_utils.vae (chapter 27): the Gaussian KL term against torch.distributions.kl_divergence
and a Monte-Carlo estimate, the Bernoulli and Gaussian log-densities against
torch.distributions, the reparameterised sample's distribution and gradients, the ELBO against
the same bound assembled from torch.distributions, the importance-weighted bound (at least the
ELBO, tightening with k), and the error messages."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from d2l_utils.vae import (
    VAE,
    bernoulli_log_likelihood,
    elbo,
    gaussian_kl,
    gaussian_log_density,
    iwae_bound,
    reparameterise,
    vae_loss,
)

F64 = torch.float64


def binary(shape, generator):
    return (torch.rand(shape, generator=generator, dtype=F64) < 0.3).to(F64)


@pytest.mark.parametrize("seed", range(3))
def test_gaussian_kl_matches_torch_distributions(seed):
    generator = torch.Generator().manual_seed(seed)
    b, l = torch.randint(1, 9, (2,), generator=generator).tolist()
    mean = torch.randn(b, l, generator=generator, dtype=F64)
    log_var = torch.randn(b, l, generator=generator, dtype=F64)
    expected = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, log_var), expected)


def test_gaussian_kl_matches_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.7, -1.2], dtype=F64)
    log_var = torch.tensor([-0.5, 0.8], dtype=F64)
    z = reparameterise(mean.expand(100_000, 2), log_var.expand(100_000, 2), generator)
    terms = gaussian_log_density(z, mean, log_var) - gaussian_log_density(z, 0 * z, 0 * z)
    standard_error = terms.std() / len(terms) ** 0.5
    assert abs(terms.mean() - gaussian_kl(mean, log_var)) < 4 * standard_error


@pytest.mark.parametrize("seed", range(3))
def test_log_densities_match_torch_distributions(seed):
    generator = torch.Generator().manual_seed(seed)
    b, d = torch.randint(1, 9, (2,), generator=generator).tolist()
    logits = 4 * torch.randn(3, b, d, generator=generator, dtype=F64)      # broadcast (k, B, D)
    x = binary((b, d), generator)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x),
                               Bernoulli(logits=logits).log_prob(x).sum(-1))
    z, mean, log_var = torch.randn(3, b, d, generator=generator, dtype=F64)
    torch.testing.assert_close(gaussian_log_density(z, mean, log_var),
                               Normal(mean, (0.5 * log_var).exp()).log_prob(z).sum(-1))


def test_reparameterised_sample_has_the_right_moments_and_gradients():
    generator = torch.Generator().manual_seed(1)
    mean = torch.tensor([1.5, -2.0], dtype=F64, requires_grad=True)
    log_var = torch.tensor([0.4, -1.0], dtype=F64, requires_grad=True)
    z = reparameterise(mean.expand(100_000, 2), log_var.expand(100_000, 2), generator)
    torch.testing.assert_close(z.mean(0), mean.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), log_var.detach().exp(), atol=0.03, rtol=0)
    # d/dmean E[z^2] = 2 mean, d/dlog_var E[z^2] = var
    grad_mean, grad_log_var = torch.autograd.grad(z.pow(2).mean(0).sum(), (mean, log_var))
    torch.testing.assert_close(grad_mean, 2 * mean.detach(), atol=0.05, rtol=0)
    torch.testing.assert_close(grad_log_var, log_var.detach().exp(), atol=0.05, rtol=0)


def test_elbo_matches_torch_distributions():
    torch.manual_seed(0)
    model = VAE(20, 8, 3).double()
    x = binary((6, 20), torch.Generator().manual_seed(2))
    ours = elbo(model, x, torch.Generator().manual_seed(7))
    mean, log_var = model.encode(x)
    q = Normal(mean, (0.5 * log_var).exp())
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    z = q.mean + q.stddev * eps
    theirs = (Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
              - kl_divergence(q, Normal(0.0, 1.0)).sum(-1))
    torch.testing.assert_close(ours, theirs)
    torch.manual_seed(3)
    loss = vae_loss(model, (x,))
    torch.manual_seed(3)
    torch.testing.assert_close(loss, -elbo(model, x).mean())


def test_iwae_bound_is_at_least_the_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    model = VAE(12, 6, 2).double()
    with torch.no_grad():
        for layer in model.decoder:                                  # a sharper decoder, so that
            if isinstance(layer, torch.nn.Linear):                   # q is far from the posterior
                layer.weight.mul_(4)
    x = binary((10, 12), torch.Generator().manual_seed(4))
    repeated = x.expand(200, 10, 12).reshape(2000, 12)               # 200 estimates per row
    with torch.no_grad():
        # k = 1 with the same draws: the KL term estimated by log p(z) - log q(z) instead
        difference = (iwae_bound(model, repeated, 1, torch.Generator().manual_seed(1))
                      - elbo(model, repeated, torch.Generator().manual_seed(1)))  # (2000,)
        bounds = {k: iwae_bound(model, repeated, k, torch.Generator().manual_seed(k)).mean()
                  for k in (1, 10, 100)}
    assert difference.mean().abs() < 4 * difference.std() / len(difference) ** 0.5
    assert bounds[1] + 0.1 < bounds[10] < bounds[100]
    assert model.sample(5).shape == (5, 12)


def test_bad_inputs_raise_clear_errors():
    model = VAE(12, 6, 2)
    with pytest.raises(ValueError, match="must be binary"):
        elbo(model, torch.full((3, 12), 0.5))
    with pytest.raises(ValueError, match=r"shape \(B D\)"):
        elbo(model, torch.zeros(3, 1, 12))
    with pytest.raises(ValueError, match="D = 10"):
        bernoulli_log_likelihood(torch.zeros(3, 12), torch.zeros(3, 10))
    with pytest.raises(ValueError, match="k must be in"):
        iwae_bound(model, torch.zeros(3, 12), 0)
    with pytest.raises(TypeError, match="k must be an int"):
        iwae_bound(model, torch.zeros(3, 12), 2.0)
    with pytest.raises(ValueError, match="log_var must have the shape of mean"):
        gaussian_kl(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="floating-point"):
        gaussian_kl(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="latent must be in"):
        VAE(12, 6, 0)
