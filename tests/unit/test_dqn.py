"""d2l_utils.dqn (chapter 31): the replay buffer (uniform sampling, wrap-around, bad inputs),
batched ε-greedy, the Huber loss against PyTorch's, the DQN and Double DQN targets and loss
against a loop over transitions (float64), the expected maximum of normals against closed
forms, REINFORCE's loss against a loop, and a short training run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from d2l_utils.dqn import (
    DQNConfig,
    ReplayBuffer,
    cartpole,
    dqn_loss,
    epsilon_greedy,
    expected_max_normal,
    greedy_returns,
    huber_loss,
    linear_epsilon,
    play_episodes,
    policy_network,
    q_network,
    q_targets,
    reinforce_loss,
    train_dqn,
)

F64 = torch.float64


def fill(buffer: ReplayBuffer, ids: torch.Tensor) -> None:
    """Add transitions whose observations are their ids."""
    obs = ids[:, None].expand(-1, buffer.obs_dim).float()
    n = len(ids)
    buffer.add(obs, torch.zeros(n, dtype=torch.int64), torch.ones(n), obs + 1,
               torch.zeros(n, dtype=torch.bool))


def test_buffer_wraps_around_and_keeps_the_newest():
    buffer = ReplayBuffer(10, 3, 2)
    for chunk in torch.arange(23.0).split(4):
        fill(buffer, chunk)
    assert len(buffer) == 10
    assert torch.equal(buffer.obs[:, 0].sort().values, torch.arange(13.0, 23.0))
    assert torch.equal(buffer.next_obs, buffer.obs + 1)


def test_buffer_samples_uniformly():
    buffer = ReplayBuffer(20, 2, 2, torch.Generator().manual_seed(0))
    fill(buffer, torch.arange(20.0))
    drawn = torch.cat([buffer.sample(20)[0][:, 0] for _ in range(2_000)])
    counts = torch.bincount(drawn.long(), minlength=20).double()
    chi2 = ((counts - 2000) ** 2 / 2000).sum().item()
    assert chi2 < 50                                 # 19 degrees of freedom: p ~ 1e-4


def test_buffer_samples_only_what_is_stored():
    buffer = ReplayBuffer(100, 2, 2, torch.Generator().manual_seed(1))
    fill(buffer, torch.arange(7.0))
    obs, actions, rewards, next_obs, terminated = buffer.sample(7)
    assert obs.shape == (7, 2) and actions.dtype == torch.int64 and terminated.dtype == torch.bool
    drawn = torch.cat([buffer.sample(7)[0][:, 0] for _ in range(100)])
    assert set(drawn.tolist()) == set(range(7))


def test_buffer_errors():
    buffer = ReplayBuffer(5, 4, 2)
    with pytest.raises(ValueError, match="empty replay buffer"):
        buffer.sample(1)
    obs, ok = torch.zeros(3, 4), torch.zeros(3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"action space \{0, ..., 1\}"):
        buffer.add(obs, torch.tensor([0, 2, 1]), torch.zeros(3), obs, ok)
    with pytest.raises(ValueError, match="obs must have shape"):
        buffer.add(torch.zeros(3, 5), torch.zeros(3, dtype=torch.int64), torch.zeros(3), obs, ok)
    with pytest.raises(TypeError, match="actions must have an integer dtype"):
        buffer.add(obs, torch.zeros(3), torch.zeros(3), obs, ok)
    with pytest.raises(TypeError, match="terminated must have torch.bool"):
        buffer.add(obs, torch.zeros(3, dtype=torch.int64), torch.zeros(3), obs, ok.float())
    with pytest.raises(ValueError, match="at most 5 transitions"):
        buffer.add(torch.zeros(6, 4), torch.zeros(6, dtype=torch.int64), torch.zeros(6),
                   torch.zeros(6, 4), torch.zeros(6, dtype=torch.bool))
    buffer.add(obs, torch.zeros(3, dtype=torch.int64), torch.zeros(3), obs, ok)
    with pytest.raises(ValueError, match="larger than the 3 transitions stored"):
        buffer.sample(4)
    with pytest.raises(ValueError, match="capacity must be in"):
        ReplayBuffer(0, 4, 2)


def test_epsilon_greedy_and_schedule():
    q = torch.tensor([[0.0, 1.0, 0.5]]).repeat(20_000, 1)
    g = torch.Generator().manual_seed(0)
    assert (epsilon_greedy(q, 0.0, g) == 1).all()
    actions = epsilon_greedy(q, 0.3, g)
    share = (actions == 1).float().mean().item()   # 0.7 + 0.3 / 3
    assert abs(share - 0.8) < 0.02
    assert linear_epsilon(0, 1.0, 0.1, 100) == 1.0 and linear_epsilon(500, 1.0, 0.1, 100) == 0.1
    assert math.isclose(linear_epsilon(50, 1.0, 0.1, 100), 0.55)
    with pytest.raises(ValueError, match="epsilon must be in"):
        epsilon_greedy(q, 1.5)


@pytest.mark.parametrize("delta", [0.5, 1.0, 3.0])
def test_huber_matches_pytorch(delta):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 7, 5, generator=g, dtype=F64) * 3
    torch.testing.assert_close(huber_loss(x, y, delta), F.huber_loss(x, y, delta=delta))
    xg, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    huber_loss(xg, y, delta).backward()
    F.huber_loss(xr, y, delta=delta).backward()
    torch.testing.assert_close(xg.grad, xr.grad)


@pytest.mark.parametrize("double", [False, True])
def test_targets_and_loss_match_a_loop(double):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    q_net, target_net = q_network(5, 3, 16).double(), q_network(5, 3, 16).double()
    B = 17
    batch = (torch.randn(B, 5, generator=g, dtype=F64), torch.randint(3, (B,), generator=g),
             torch.rand(B, generator=g, dtype=F64), torch.randn(B, 5, generator=g, dtype=F64),
             torch.rand(B, generator=g) < 0.4)
    expected, targets = 0.0, []
    with torch.no_grad():
        for s, a, r, s2, done in zip(*batch):
            chooser = q_net(s2) if double else target_net(s2)
            y = r.item() + (0.0 if done else 0.95 * target_net(s2)[chooser.argmax()].item())
            targets.append(y)
            e = abs(q_net(s)[a].item() - y)
            expected += (0.5 * e * e if e <= 1 else e - 0.5) / B
        obs, actions, rewards, next_obs, terminated = batch
        ours = q_targets(rewards, terminated, target_net(next_obs), 0.95,
                         q_net(next_obs) if double else None)
    torch.testing.assert_close(ours, torch.tensor(targets, dtype=F64))
    loss = dqn_loss(q_net, target_net, batch, 0.95, double)
    torch.testing.assert_close(loss.item(), expected, rtol=1e-12, atol=1e-12)
    loss.backward()                                 # gradients reach the online network only
    assert all(p.grad is not None for p in q_net.parameters())
    assert all(p.grad is None for p in target_net.parameters())
    with pytest.raises(ValueError, match="gamma must be in"):
        q_targets(rewards, terminated, next_obs[:, :3], 1.5)


def test_expected_max_normal():
    assert abs(expected_max_normal(1)) < 1e-9
    assert abs(expected_max_normal(2) - 1 / math.sqrt(math.pi)) < 1e-9
    assert abs(expected_max_normal(3) - 1.5 / math.sqrt(math.pi)) < 1e-9
    values = [expected_max_normal(k) for k in (2, 5, 10, 100)]
    assert values == sorted(values) and values[-1] < math.sqrt(2 * math.log(100))
    with pytest.raises(ValueError, match="k must be in"):
        expected_max_normal(0)


def test_reinforce_loss_matches_a_loop():
    g = torch.Generator().manual_seed(4)
    T, E, gamma = 6, 3, 0.9
    lengths = [6, 2, 4]
    rewards = torch.zeros(T, E)
    for e, n in enumerate(lengths):
        rewards[:n, e] = 1.0
    log_probs = -torch.rand(T, E, generator=g)
    returns = torch.zeros(T, E)
    for e in range(E):
        for t in range(T):
            returns[t, e] = sum(gamma ** (k - t) * rewards[k, e].item() for k in range(t, T))
    baseline = returns.mean(dim=1, keepdim=True)
    total, count = 0.0, 0
    for e, n in enumerate(lengths):
        for t in range(n):
            total += log_probs[t, e].item() * (returns[t, e] - baseline[t, 0]).item()
            count += 1
    torch.testing.assert_close(reinforce_loss(log_probs, rewards, gamma).item(), -total / count)
    with pytest.raises(ValueError, match="rewards must have shape"):
        reinforce_loss(log_probs, rewards[:-1])


def test_short_training_run_and_evaluation():
    run = train_dqn(DQNConfig(max_steps=256, learning_starts=64, train_every=64, updates=2,
                              eval_every=128, eval_stop=math.inf), seed=0)
    assert run.steps == 256 and run.updates == 3 * 2 and len(run.evaluations) == 2
    returns = greedy_returns(run.q_net, episodes=3, seed=1)
    assert returns.shape == (3,) and (returns >= 1).all() and (returns <= 500).all()


def test_play_episodes_masks_finished_episodes():
    torch.manual_seed(0)
    envs = cartpole(4, 0)
    log_probs, rewards = play_episodes(policy_network(), envs, 0, torch.Generator().manual_seed(0))
    assert log_probs.shape == rewards.shape and rewards.shape[1] == 4
    lengths = rewards.sum(dim=0)
    assert lengths.max() == len(rewards) and (lengths >= 1).all()
    for e, n in enumerate(lengths.long().tolist()):      # 1 while alive, then 0
        assert (rewards[:n, e] == 1).all() and (rewards[n:, e] == 0).all()
    assert (log_probs <= 0).all() and log_probs.requires_grad
