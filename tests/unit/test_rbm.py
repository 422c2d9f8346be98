"""Chapter 25's RBM, deep belief net and Helmholtz machine against brute-force enumeration and
autograd, in float64, and their bad-input errors."""

import pytest
import torch

from d2l_utils.rbm import (
    RBM,
    HelmholtzMachine,
    all_binary_states,
    bernoulli,
    log_likelihood,
    log_partition,
    pretrain_dbn,
    sigmoid_net,
    train_rbm,
)

D = torch.float64


def random_rbm(n_visible: int, n_hidden: int, seed: int, std: float = 1.0) -> RBM:
    gen = torch.Generator().manual_seed(seed)
    rbm = RBM(n_visible, n_hidden, std=std, generator=gen).double()
    with torch.no_grad():
        rbm.visible_bias.normal_(generator=gen)
        rbm.hidden_bias.normal_(generator=gen)
    return rbm


def joint_table(rbm: RBM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All visible states (2**V, V), hidden states (2**H, H) and -E as a (2**V, 2**H) table."""
    n_hidden, n_visible = rbm.weight.shape
    vs, hs = all_binary_states(n_visible, D), all_binary_states(n_hidden, D)
    log_w = -rbm.energy(vs.repeat_interleave(len(hs), 0), hs.repeat(len(vs), 1))
    return vs, hs, log_w.view(len(vs), len(hs))


@pytest.mark.parametrize("seed, n_visible, n_hidden", [(0, 4, 3), (1, 3, 5), (2, 6, 2)])
def test_conditionals_and_free_energy_match_enumeration(seed, n_visible, n_hidden):
    rbm = random_rbm(n_visible, n_hidden, seed)
    vs, hs, log_w = joint_table(rbm)
    torch.testing.assert_close(rbm.free_energy(vs), -log_w.logsumexp(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rbm.hidden_probs(vs), log_w.softmax(1) @ hs)
    torch.testing.assert_close(rbm.visible_probs(hs), log_w.softmax(0).T @ vs)


@pytest.mark.parametrize("seed, n_visible, n_hidden", [(0, 5, 4), (1, 7, 3), (2, 3, 8)])
def test_exact_log_partition_matches_brute_force(seed, n_visible, n_hidden):
    rbm = random_rbm(n_visible, n_hidden, seed, std=2.0)
    vs, _, log_w = joint_table(rbm)
    for chunk in (1, 3, 8192):
        torch.testing.assert_close(log_partition(rbm, chunk=chunk), log_w.logsumexp((0, 1)),
                                   rtol=1e-12, atol=1e-12)
    total = log_likelihood(rbm, vs).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=D))


def test_cd_gradient_matches_autograd_of_free_energy_difference():
    gen = torch.Generator().manual_seed(3)
    rbm = random_rbm(9, 6, 3, std=0.5)
    v_data = bernoulli(torch.full((8, 9), 0.4, dtype=D), gen)
    v_model = rbm.gibbs(v_data, k=2, generator=gen)[:5]     # a different number of samples
    rbm.cd_gradient(v_data, v_model)
    ours = [p.grad.clone() for p in rbm.parameters()]
    rbm.zero_grad()
    (rbm.free_energy(v_data).mean() - rbm.free_energy(v_model).mean()).backward()
    for mine, theirs in zip(ours, (p.grad for p in rbm.parameters()), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_gibbs_chains_approach_the_exact_marginals():
    rbm = random_rbm(4, 3, 4)
    vs, _, log_w = joint_table(rbm)
    exact = log_w.logsumexp(1).softmax(0)                                         # (16,)
    gen = torch.Generator().manual_seed(0)
    chains = rbm.gibbs(torch.ones(10_000, 4, dtype=D), k=15, generator=gen)
    codes = (chains * 2 ** torch.arange(4)).sum(1).long()
    empirical = torch.bincount(codes, minlength=16) / len(codes)
    assert (empirical - exact).abs().max() < 0.02
    torch.testing.assert_close(chains.mean(0), exact @ vs, atol=0.02, rtol=0)


@pytest.mark.parametrize("persistent, k", [(False, 1), (False, 3), (True, 1)])
def test_training_raises_the_exact_likelihood(persistent, k):
    gen = torch.Generator().manual_seed(5)
    pattern = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float32)
    data = pattern[torch.randint(2, (200,), generator=gen)]
    noise = bernoulli(torch.full(data.shape, 0.05), gen)
    data = (data + noise) % 2                                         # flip 5 % of the pixels
    rbm = RBM(6, 4, generator=gen)
    curve = train_rbm(rbm, data, k=k, persistent=persistent, epochs=10, batch_size=20, lr=0.5,
                      generator=gen, measure=lambda m: log_likelihood(m, data).mean().item(),
                      every=40)
    assert curve[0][0] == 0 and curve[-1][0] == 100
    assert curve[-1][1] > curve[0][1] + 1.0


def test_dbn_weights_initialise_the_sigmoid_network():
    gen = torch.Generator().manual_seed(6)
    data = bernoulli(torch.full((60, 10), 0.3), gen)
    rbms = pretrain_dbn(data, [7, 5], epochs=1, batch_size=20, generator=gen)
    assert [tuple(r.weight.shape) for r in rbms] == [(7, 10), (5, 7)]
    net = sigmoid_net([10, 7, 5], 3, rbms)
    torch.testing.assert_close(net[0].weight, rbms[0].weight)
    torch.testing.assert_close(net[2].bias, rbms[1].hidden_bias)
    assert net(data).shape == (60, 3)
    with pytest.raises(ValueError, match="cannot initialise a layer"):
        sigmoid_net([10, 6, 5], 3, rbms)


def test_helmholtz_log_prob_elbo_and_wake_sleep():
    gen = torch.Generator().manual_seed(7)
    machine = HelmholtzMachine(5, 3, generator=gen).double()
    with torch.no_grad():
        for p in machine.parameters():
            p.normal_(generator=gen)
    vs, hs = all_binary_states(5, D), all_binary_states(3, D)
    log_prob = machine.log_prob(vs, chunk=3)
    # Brute force: p(h) p(v | h) from the Bernoulli probabilities.
    prior = torch.sigmoid(machine.prior_bias)
    p_h = (hs * prior + (1 - hs) * (1 - prior)).prod(1)                             # (8,)
    p_v = machine.generate(hs)                                                      # (8, 5)
    p_v_h = (vs[:, None] * p_v + (1 - vs[:, None]) * (1 - p_v)).prod(-1)            # (32, 8)
    torch.testing.assert_close(log_prob, (p_v_h @ p_h).log(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_prob.exp().sum(), torch.tensor(1.0, dtype=D))
    assert (machine.elbo(vs, samples=50, generator=gen) <= log_prob + 1e-9).all()
    data = (torch.rand(200, 5, generator=gen) < torch.tensor([0.9, 0.9, 0.1, 0.1, 0.5])).double()
    start = machine.log_prob(data).mean()
    for _ in range(30):
        for batch in data.split(20):
            machine.wake_sleep(batch, lr=0.1, generator=gen)
    assert machine.log_prob(data).mean() > start + 0.5


def test_bad_inputs_raise_clear_errors():
    rbm = RBM(6, 3)
    with pytest.raises(ValueError, match="must be binary"):
        rbm.gibbs(torch.full((2, 6), 0.5))
    with pytest.raises(ValueError, match=r"with V = 6"):
        rbm.gibbs(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"k must be in \[1"):
        rbm.gibbs(torch.ones(2, 6), k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        train_rbm(rbm, torch.ones(4, 6), k=1.5)
    with pytest.raises(TypeError, match="floating-point dtype"):
        log_likelihood(rbm, torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="must be binary"):
        train_rbm(rbm, torch.rand(4, 6))
    with pytest.raises(ValueError, match="H must be <= 24"):
        log_partition(RBM(2, 25))
    with pytest.raises(ValueError, match="n_hidden must be in"):
        RBM(4, 0)
    with pytest.raises(ValueError, match="must be binary"):
        HelmholtzMachine(3, 2).wake_sleep(torch.full((2, 3), 0.3))
