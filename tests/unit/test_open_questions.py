"""d2l_utils.open_questions (chapter 34) in float64: FGSM against a hand computation on a
linear model, PGD inside the epsilon-ball and the pixel range and at least as strong as FGSM,
integrated gradients' completeness on a small network and exactness for a linear model, the
rank correlation against a brute-force Spearman, mutual information against known cases, the
data processing inequality on random chains, squash and routing by agreement, and the error
messages."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from d2l_utils.open_questions import (
    dynamic_routing,
    entropy,
    fgsm,
    integrated_gradients,
    mutual_information,
    pgd_attack,
    rank_correlation,
    squash,
)

TIGHT = dict(rtol=1e-10, atol=1e-12)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=generator(seed))


def small_network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3))
    return net.double().eval()


def linear_two_class(w: torch.Tensor, b: float = 0.3) -> nn.Linear:
    """Logits (0, w·x + b): the cross-entropy of class 1 is log(1 + exp(-(w·x + b)))."""
    layer = nn.Linear(len(w), 2, dtype=torch.float64).eval()
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.zeros_like(w), w]))
        layer.bias.copy_(torch.tensor([0.0, b], dtype=torch.float64))
    return layer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fgsm_matches_a_hand_computation_on_a_linear_model(seed):
    w, x = randn(20, seed=seed), 0.3 + 0.4 * torch.rand(5, 20, dtype=torch.float64,
                                                         generator=generator(seed))
    layer = linear_two_class(w)
    for label, direction in [(1, -1.0), (0, 1.0)]:   # class 0's loss falls as w·x grows
        adversarial = fgsm(layer, x, torch.full((5,), label), eps=0.05)
        torch.testing.assert_close(adversarial, x + direction * 0.05 * w.sign(), **TIGHT)


def test_fgsm_clips_to_the_range_and_zero_eps_is_the_identity():
    x = torch.rand(4, 1, 2, 6, dtype=torch.float64, generator=generator())
    labels = torch.tensor([0, 1, 2, 0])
    net = small_network()
    torch.testing.assert_close(fgsm(net, x, labels, 0.0), x)
    adversarial = fgsm(net, x, labels, 0.7)
    assert adversarial.min() >= 0 and adversarial.max() <= 1


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_pgd_stays_in_the_ball_and_range_and_beats_fgsm(eps):
    x = torch.rand(32, 1, 2, 6, dtype=torch.float64, generator=generator(1))
    net = small_network(1)
    labels = net(x).argmax(1)
    adversarial = pgd_attack(net, x, labels, eps, steps=10)
    assert (adversarial - x).abs().max() <= eps + 1e-12
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    loss = nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(net(adversarial), labels) >= loss(net(fgsm(net, x, labels, eps)), labels)


def test_pgd_with_one_full_step_is_fgsm():
    x = torch.rand(8, 12, dtype=torch.float64, generator=generator(2))
    net = small_network(2)
    labels = torch.arange(8) % 3
    torch.testing.assert_close(pgd_attack(net, x, labels, 0.1, steps=1, step_size=0.1),
                               fgsm(net, x, labels, 0.1), **TIGHT)


@pytest.mark.parametrize("steps", [1, 3, 50])
def test_integrated_gradients_is_exact_for_a_linear_model(steps):
    w, x, baseline = randn(3, 12, seed=3), randn(4, 12, seed=4), randn(4, 12, seed=5)
    layer = nn.Linear(12, 3, dtype=torch.float64).eval()
    with torch.no_grad():
        layer.weight.copy_(w)
    targets = torch.tensor([0, 2, 1, 2])
    attributions = integrated_gradients(layer, x, targets, baseline, steps=steps)
    torch.testing.assert_close(attributions, (x - baseline) * w[targets], **TIGHT)


def test_integrated_gradients_completeness_on_a_small_network():
    net = small_network(6)
    x, targets = randn(5, 1, 2, 6, seed=7), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        gap = (net(x) - net(torch.zeros_like(x)))[range(5), targets]
    errors = [(integrated_gradients(net, x, targets, steps=m).sum((1, 2, 3)) - gap).abs().max()
              for m in (8, 64, 2048)]
    assert errors[2] < 1e-5 and errors[2] < errors[1] < errors[0]


def test_rank_correlation_against_brute_force_spearman():
    a, b = randn(6, 30, seed=8), randn(6, 30, seed=9)
    b[0] = 2 * a[0] + 1                                     # a monotone function: rho = 1
    ra = a.argsort(1).argsort(1).double() - 14.5            # no ties in Gaussian draws
    rb = b.argsort(1).argsort(1).double() - 14.5
    expected = (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))
    torch.testing.assert_close(rank_correlation(a, b), expected, **TIGHT)
    assert rank_correlation(a, -a).allclose(torch.full((6,), -1.0, dtype=torch.float64))


def test_rank_correlation_gives_ties_their_mean_rank():
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    # ranks of a: 0, 1.5, 1.5, 3; of b: 0, 1, 2, 3 -> rho = 4.5 / sqrt(4.5 * 5)
    torch.testing.assert_close(rank_correlation(a, b)[0],
                               torch.tensor(4.5 / math.sqrt(4.5 * 5), dtype=torch.float64))


def test_mutual_information_known_cases():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    q = torch.tensor([0.5, 0.5], dtype=torch.float64)
    torch.testing.assert_close(mutual_information(torch.outer(p, q)),
                               torch.zeros((), dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(mutual_information(torch.diag(p)), entropy(p), **TIGHT)
    torch.testing.assert_close(entropy(q), torch.tensor(math.log(2), dtype=torch.float64))


def test_mutual_information_against_a_brute_force_sum():
    joint = torch.rand(3, 5, dtype=torch.float64, generator=generator(10))
    joint[0, 1] = 0.0
    joint /= joint.sum()
    px, py = joint.sum(1), joint.sum(0)
    expected = sum(joint[i, j] * math.log(joint[i, j] / (px[i] * py[j]))
                   for i in range(3) for j in range(5) if joint[i, j] > 0)
    torch.testing.assert_close(mutual_information(joint).item(), expected.item(), **TIGHT)


def test_data_processing_inequality_on_random_chains():
    g = generator(11)
    for _ in range(200):
        nx, ny, nz = torch.randint(2, 6, (3,), generator=g).tolist()
        p_x = torch.rand(nx, dtype=torch.float64, generator=g)
        a = torch.rand(nx, ny, dtype=torch.float64, generator=g) ** 3
        b = torch.rand(ny, nz, dtype=torch.float64, generator=g) ** 3
        xy = (p_x / p_x.sum())[:, None] * a / a.sum(1, keepdim=True)
        xz = xy @ (b / b.sum(1, keepdim=True))
        assert mutual_information(xz) <= mutual_information(xy) + 1e-12
        permutation = torch.eye(ny, dtype=torch.float64)[torch.randperm(ny, generator=g)]
        torch.testing.assert_close(mutual_information(xy @ permutation), mutual_information(xy))


def test_squash_keeps_direction_and_maps_lengths_into_zero_one():
    s = randn(50, 8, seed=12) * torch.logspace(-3, 3, 50, dtype=torch.float64)[:, None]
    v = squash(s)
    lengths, norms = v.norm(dim=-1), s.norm(dim=-1)
    assert (lengths >= 0).all() and (lengths < 1).all()
    torch.testing.assert_close(lengths, norms**2 / (1 + norms**2), **TIGHT)
    torch.testing.assert_close(v / lengths[:, None], s / norms[:, None], **TIGHT)
    torch.testing.assert_close(squash(torch.zeros(2, 3)), torch.zeros(2, 3))
    torch.testing.assert_close(squash(s.T, dim=0), v.T, **TIGHT)


def test_dynamic_routing_shapes_and_couplings():
    predictions = randn(2, 7, 3, 4, seed=13)
    v, c = dynamic_routing(predictions, iterations=3)
    assert v.shape == (2, 3, 4) and c.shape == (2, 7, 3)
    torch.testing.assert_close(c.sum(-1), torch.ones(2, 7, dtype=torch.float64), **TIGHT)
    assert (v.norm(dim=-1) < 1).all()
    v1, c1 = dynamic_routing(predictions, iterations=1)                  # uniform coupling
    torch.testing.assert_close(c1, torch.full_like(c1, 1 / 3))
    torch.testing.assert_close(v1, squash(predictions.sum(1) / 3), **TIGHT)


def test_bad_inputs_raise_errors_that_say_what_was_expected():
    net, x, labels = small_network(), torch.rand(2, 12, dtype=torch.float64), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"eps must be in \[0"):
        fgsm(net, x, labels, -0.1)
    with pytest.raises(ValueError, match=r"eps must be in \[0"):
        pgd_attack(net, x, labels, -0.1)
    with pytest.raises(ValueError, match="steps must be in"):
        pgd_attack(net, x, labels, 0.1, steps=0)
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        fgsm(net, x, labels.double(), 0.1)
    with pytest.raises(ValueError, match="labels must have shape"):
        fgsm(net, x, torch.tensor([0, 1, 2]), 0.1)
    with pytest.raises(ValueError, match="call model.eval"):
        fgsm(small_network().train(), x, labels, 0.1)
    with pytest.raises(ValueError, match="steps must be in"):
        integrated_gradients(net, x, labels, steps=0)
    with pytest.raises(TypeError, match="steps must be an int"):
        integrated_gradients(net, x, labels, steps=2.5)
    with pytest.raises(ValueError, match="baselines must have the images' shape"):
        integrated_gradients(net, x, labels, torch.zeros(2, 11, dtype=torch.float64))
    with pytest.raises(ValueError, match="summing to 1"):
        mutual_information(torch.full((2, 2), 0.3, dtype=torch.float64))
    with pytest.raises(ValueError, match="no negative entries"):
        mutual_information(torch.tensor([[0.7, -0.1], [0.2, 0.2]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"joint must have shape \(X Y\)"):
        mutual_information(torch.full((4,), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="probability vector"):
        entropy(torch.tensor([0.5, 0.6], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"predictions must have shape \(B I J D\)"):
        dynamic_routing(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="iterations must be in"):
        dynamic_routing(torch.zeros(1, 2, 3, 4), iterations=0)
    with pytest.raises(ValueError, match=r"b must have shape \(B N\) with N = 5"):
        rank_correlation(torch.zeros(2, 5), torch.zeros(2, 6))
