"""d2l_utils.autoencoder (chapter 24): PCA against torch.linalg.svd and torch.pca_lowrank,
principal angles against known planes and invariance to the basis, soft thresholding and ISTA
against the lasso's closed form for an orthonormal dictionary and its optimality conditions,
dictionary learning's unit-norm atoms, the autoencoders' shapes, masking noise, and the error
messages."""

from __future__ import annotations

import math

import pytest
import torch

from d2l_utils.autoencoder import (
    Autoencoder,
    SparseAutoencoder,
    extract_patches,
    ista,
    lasso_objective,
    learn_dictionary,
    mask_noise,
    principal_angles,
    principal_components,
    reconstruction_error,
    soft_threshold,
)


def aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a's rows with their signs flipped to agree with b's."""
    return a * (a * b).sum(1, keepdim=True).sign()


@pytest.mark.parametrize("seed", range(3))
def test_principal_components_match_the_svd(seed):
    generator = torch.Generator().manual_seed(seed)
    n, d = torch.randint(20, 60, (2,), generator=generator).tolist()
    scales = torch.linspace(3, 0.1, d, dtype=torch.float64)             # distinct variances
    x = torch.randn(n, d, generator=generator, dtype=torch.float64) * scales + 1.5
    k = min(n, d) // 2
    mean, components, variances = principal_components(x, k)
    _, s, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(aligned(components, vh[:k]), vh[:k])
    torch.testing.assert_close(variances, s[:k] ** 2 / n)
    assert (variances.diff() <= 0).all()                                  # ordered
    torch.manual_seed(seed)
    _, _, v = torch.pca_lowrank(x, q=min(n, d), niter=6)
    torch.testing.assert_close(aligned(components[:3], v.T[:3]), v.T[:3])


def test_principal_angles_of_known_planes_and_any_basis():
    for degrees in (0.0, 10.0, 45.0, 90.0):
        t = math.radians(degrees)
        a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
        b = torch.tensor([[1.0, 0.0], [0.0, math.cos(t)], [0.0, math.sin(t)]],
                         dtype=torch.float64)
        mixing = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
        angles = principal_angles(a @ mixing, b @ mixing.T)
        torch.testing.assert_close(angles, torch.tensor([0.0, t], dtype=torch.float64),
                                   atol=1e-7, rtol=0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    angles = principal_angles(x, y)
    assert angles.shape == (3,) and (angles.diff() >= 0).all()
    torch.testing.assert_close(angles, principal_angles(y, x))            # symmetric


def test_soft_threshold_is_the_proximal_map_of_the_l1_norm():
    v = torch.linspace(-3, 3, 61, dtype=torch.float64)
    grid = torch.linspace(-4, 4, 16_001, dtype=torch.float64)             # brute force
    brute = grid[(0.5 * (grid[None] - v[:, None]) ** 2 + 0.7 * grid.abs()).argmin(1)]
    torch.testing.assert_close(soft_threshold(v, 0.7), brute, atol=1e-3, rtol=0)


def test_ista_solves_the_lasso_with_an_orthonormal_dictionary():
    generator = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    x = torch.randn(30, 16, generator=generator, dtype=torch.float64)
    codes, objectives = ista(x, q, lam=0.4, steps=5)
    torch.testing.assert_close(codes, soft_threshold(x @ q, 0.4))
    torch.testing.assert_close(objectives[-1], lasso_objective(x, q, codes, 0.4))


def test_ista_meets_the_optimality_conditions_and_never_climbs():
    generator = torch.Generator().manual_seed(2)
    dictionary = torch.randn(12, 8, generator=generator, dtype=torch.float64)  # well posed
    x = torch.randn(25, 12, generator=generator, dtype=torch.float64)
    lam = 0.5
    codes, objectives = ista(x, dictionary, lam, steps=1000)
    gradient = (x - codes @ dictionary.T) @ dictionary
    on = codes != 0
    torch.testing.assert_close(gradient[on], lam * codes[on].sign(), atol=1e-8, rtol=0)
    assert (gradient[~on].abs() <= lam + 1e-8).all()
    assert (objectives.diff() <= 1e-12).all()


def test_learn_dictionary_keeps_unit_atoms_and_lowers_the_objective():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(200, 9, generator=generator)
    dictionary, codes, history = learn_dictionary(x, atoms=12, lam=0.2, rounds=5, steps=20,
                                                  generator=generator)
    assert dictionary.shape == (9, 12) and codes.shape == (200, 12) and history.shape == (5,)
    torch.testing.assert_close(dictionary.norm(dim=0), torch.ones(12))
    assert history[-1] < history[0]


def test_autoencoders_shapes_and_reconstruction_error():
    x = torch.rand(5, 20)
    model = Autoencoder([20, 8, 3])
    assert model(x).shape == (5, 20) and model.encoder(x).shape == (5, 3)
    assert ((model(x) > 0) & (model(x) < 1)).all()
    assert (Autoencoder([20, 4], relu_code=True).encoder(x) >= 0).all()
    reconstruction, codes = SparseAutoencoder(20, 30)(x)
    assert reconstruction.shape == (5, 20) and codes.shape == (5, 30) and (codes >= 0).all()
    torch.testing.assert_close(reconstruction_error(x + 0.5, x), torch.tensor(5.0))


def test_mask_noise_and_patches():
    generator = torch.Generator().manual_seed(4)
    x = torch.ones(100, 100)
    masked = mask_noise(x, 0.3, generator)
    assert set(masked.unique().tolist()) <= {0.0, 1.0}
    assert abs((masked == 0).float().mean().item() - 0.3) < 0.02
    torch.testing.assert_close(mask_noise(x, 0.0), x)
    images = torch.rand(10, 28, 28, generator=generator)
    patches = extract_patches(images, 8, 50, generator=generator)
    assert patches.shape == (50, 64)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="k must be in"):
        principal_components(torch.randn(5, 3), 4)
    with pytest.raises(TypeError, match="floating-point"):
        principal_components(torch.ones(5, 3, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="D = 3"):
        principal_angles(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(N D\)"):
        ista(torch.randn(5, 4), torch.randn(3, 6), lam=0.1)
    with pytest.raises(ValueError, match="lam must be in"):
        ista(torch.randn(5, 3), torch.randn(3, 6), lam=-1.0)
    with pytest.raises(TypeError, match="sizes must be a list"):
        Autoencoder(784)
    with pytest.raises(ValueError, match="fraction must be in"):
        mask_noise(torch.rand(3, 3), 1.5)
    with pytest.raises(ValueError, match="size must be in"):
        extract_patches(torch.rand(2, 5, 5), 6, 3)
