"""d2l_utils.yardstick (chapter 27): the Newton-Schulz square root against an
eigendecomposition in float64 (full-rank and singular), the Fréchet distance against the
closed form for commuting covariances and its invariance to a rotation, the statistics against
torch.cov, the MMD estimate (unbiased: near zero on one distribution, positive on two), the
feature pipeline, and the error messages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from d2l_utils.yardstick import (
    feature_frechet_distance,
    frechet_distance,
    gaussian_kernel,
    gaussian_statistics,
    median_bandwidths,
    mmd2,
    ring_of_gaussians,
    sqrtm_psd,
)

F64 = torch.float64


def reference_sqrtm(matrix):
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


@pytest.mark.parametrize("rows", [5, 30, 200])
def test_sqrtm_matches_the_eigendecomposition(rows):
    generator = torch.Generator().manual_seed(rows)
    data = torch.randn(rows, 24, generator=generator, dtype=F64) @ torch.randn(
        24, 24, generator=generator, dtype=F64)
    covariance = torch.cov(data.T)                                       # singular if rows <= 24
    root = sqrtm_psd(covariance)
    tolerance = 5e-7 * covariance.norm().sqrt().item()                  # the ridge's effect
    torch.testing.assert_close(root, reference_sqrtm(covariance), rtol=1e-6, atol=tolerance)
    torch.testing.assert_close(root @ root, covariance)
    torch.testing.assert_close(root, root.T)


def test_sqrtm_of_zero_and_of_a_diagonal():
    torch.testing.assert_close(sqrtm_psd(torch.zeros(3, 3, dtype=F64)), torch.zeros(3, 3,
                                                                                    dtype=F64))
    diagonal = torch.tensor([4.0, 9.0, 1e-4], dtype=F64)
    torch.testing.assert_close(sqrtm_psd(torch.diag(diagonal)), torch.diag(diagonal.sqrt()))
    dead = torch.diag(torch.tensor([2.0, 0.0, 0.0, 1.0], dtype=F64))   # exact zeros: no blow-up
    torch.testing.assert_close(sqrtm_psd(dead), dead.sqrt(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(3))
def test_frechet_distance_matches_the_commuting_closed_form(seed):
    generator = torch.Generator().manual_seed(seed)
    f = int(torch.randint(2, 12, (1,), generator=generator))
    var_a, var_b = torch.rand(2, f, generator=generator, dtype=F64) + 0.05
    mean_a, mean_b = torch.randn(2, f, generator=generator, dtype=F64)
    closed = (mean_a - mean_b).pow(2).sum() + (var_a.sqrt() - var_b.sqrt()).pow(2).sum()
    rotation, _ = torch.linalg.qr(torch.randn(f, f, generator=generator, dtype=F64))
    rotated = frechet_distance(rotation @ mean_a, rotation @ torch.diag(var_a) @ rotation.T,
                               rotation @ mean_b, rotation @ torch.diag(var_b) @ rotation.T)
    torch.testing.assert_close(rotated, closed)
    cov = torch.diag(var_a)
    torch.testing.assert_close(frechet_distance(mean_a, cov, mean_a, cov),
                               torch.zeros((), dtype=F64), atol=1e-10, rtol=0)


def test_gaussian_statistics_match_torch():
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    mean, cov = gaussian_statistics(x)
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(cov, torch.cov(x.T))


def test_mmd_is_near_zero_on_one_distribution_and_positive_on_two():
    generator = torch.Generator().manual_seed(0)
    x, y = ring_of_gaussians(200, generator=generator), ring_of_gaussians(200, generator=generator)
    bandwidths = median_bandwidths(x, y)
    assert mmd2(x, y).item() == pytest.approx(mmd2(x, y, bandwidths).item())   # the default
    same = torch.stack([mmd2(ring_of_gaussians(200, generator=generator),
                             ring_of_gaussians(200, generator=generator), bandwidths)
                        for _ in range(6)])
    shifted = torch.stack([mmd2(ring_of_gaussians(200, generator=generator),
                                ring_of_gaussians(200, generator=generator) + 0.3, bandwidths)
                           for _ in range(6)])
    assert same.abs().max() < 0.03 and (same < 0).any()                  # unbiased: around 0
    assert shifted.min() > 5 * same.abs().max()


def test_mmd_unbiased_estimator_by_its_definition():
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=generator, dtype=F64), torch.randn(4, 2, dtype=F64)
    h = [0.5, 2.0]

    def k(a, b):
        return sum(torch.exp(-(a - b).pow(2).sum() / (2 * s**2)) for s in h)

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(a, b) for a in x for b in y) / 24
    torch.testing.assert_close(mmd2(x, y, h), xx + yy - 2 * xy)
    torch.testing.assert_close(gaussian_kernel(x, x, h).diagonal(), torch.full((6,), 2.0,
                                                                              dtype=F64))
    pooled = torch.cat([x, y])
    distances = torch.cdist(pooled, pooled)[~torch.eye(10, dtype=torch.bool)]
    assert median_bandwidths(x, y, scales=(1.0, 2.0)) == pytest.approx(
        [distances.median().item(), 2 * distances.median().item()])


def test_feature_frechet_distance_with_any_extractor():
    generator = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 200, 5, generator=generator)
    extractor = nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3)).train()
    value = feature_frechet_distance(extractor, a, b, batch_size=64)
    assert extractor.training and value >= 0
    identity = feature_frechet_distance(lambda images: images, a, a + 1.0)
    assert identity == pytest.approx(5.0, rel=1e-6)                       # mean shift 1 per dim


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"shape \(N N\)"):
        sqrtm_psd(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="symmetric"):
        sqrtm_psd(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(TypeError, match="floating-point"):
        sqrtm_psd(torch.eye(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 samples"):
        gaussian_statistics(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd2(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="F = 2"):
        mmd2(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="bandwidth must be in"):
        mmd2(torch.zeros(5, 2), torch.ones(5, 2), bandwidths=[0.0])
    with pytest.raises(ValueError, match="F = 3"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
