"""d2l_utils.qlearning (chapter 30): dynamic programming checked against exact linear solves
and brute force, the tensor Cliff Walking against Gymnasium's, TD updates against hand
computation, and the bad-input errors."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from d2l_utils.qlearning import (
    CliffWalking,
    TabularMDP,
    bellman_backup,
    epsilon_greedy,
    evaluate_policy_exact,
    evaluate_policy_iterative,
    greedy_path,
    mdp_from_gymnasium,
    observation_tensor,
    policy_iteration,
    td_target,
    train_tabular,
    value_iteration,
)


def random_mdp(seed: int, S: int = 6, A: int = 3) -> TabularMDP:
    gen = torch.Generator().manual_seed(seed)
    P = torch.rand(S, A, S, generator=gen, dtype=torch.float64) ** 3  # uneven rows
    P = P / P.sum(-1, keepdim=True)
    R = torch.randn(S, A, generator=gen, dtype=torch.float64)
    return TabularMDP(P, R, torch.zeros(S, dtype=torch.bool))


@pytest.fixture(scope="module")
def lake() -> TabularMDP:
    return mdp_from_gymnasium(gym.make("FrozenLake-v1", map_name="4x4", is_slippery=True))


@pytest.mark.parametrize("seed", range(4))
def test_exact_and_iterative_policy_evaluation_agree(seed):
    mdp = random_mdp(seed)
    gen = torch.Generator().manual_seed(100 + seed)
    policy = torch.rand(6, 3, generator=gen, dtype=torch.float64)
    policy = policy / policy.sum(-1, keepdim=True)
    exact = evaluate_policy_exact(mdp, policy, 0.9)
    iterative, sweeps = evaluate_policy_iterative(mdp, policy, 0.9, tol=1e-12)
    torch.testing.assert_close(iterative, exact, rtol=0, atol=1e-10)
    # the exact values satisfy the Bellman expectation equation
    q = bellman_backup(mdp, exact, 0.9)
    torch.testing.assert_close((policy * q).sum(-1), exact, rtol=0, atol=1e-12)


def test_bellman_backup_matches_brute_force():
    mdp = random_mdp(7, S=5, A=2)
    mdp.terminal[3] = True
    values = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    brute = torch.zeros(5, 2, dtype=torch.float64)
    for s in range(5):
        for a in range(2):
            brute[s, a] = mdp.R[s, a] + sum(0.8 * mdp.P[s, a, t] * values[t] * (t != 3)
                                            for t in range(5))
    torch.testing.assert_close(bellman_backup(mdp, values, 0.8), brute, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_value_and_policy_iteration_agree_on_random_mdps(seed):
    mdp = random_mdp(seed, S=8, A=4)
    v_vi, policy_vi, _ = value_iteration(mdp, 0.9, tol=1e-12)
    v_pi, policy_pi, _ = policy_iteration(mdp, 0.9)
    torch.testing.assert_close(v_vi, v_pi, rtol=0, atol=1e-9)
    assert torch.equal(policy_vi, policy_pi)  # random rewards: no ties
    torch.testing.assert_close(evaluate_policy_exact(mdp, policy_vi, 0.9), v_pi,
                               rtol=0, atol=1e-9)


def test_frozenlake_value_and_policy_iteration(lake):
    v_vi, policy_vi, sweeps = value_iteration(lake, 1.0)
    v_pi, policy_pi, iterations = policy_iteration(lake, 1.0)
    torch.testing.assert_close(v_vi, v_pi, rtol=0, atol=1e-8)
    q = bellman_backup(lake, v_pi, 1.0)
    top2 = q.topk(2, dim=-1).values
    unique = (top2[:, 0] - top2[:, 1] > 1e-6) & ~lake.terminal
    assert torch.equal(policy_vi[unique], policy_pi[unique])
    assert abs(v_pi[0].item() - 14 / 17) < 1e-8 and iterations < sweeps


def test_td_targets_by_hand():
    q_next = torch.tensor([[-3.0, -1.5, -4.0, -2.0], [1.0, 2.0, 3.0, 4.0]])
    next_action = torch.tensor([2, 0])
    reward = torch.tensor([-1.0, 5.0])
    terminated = torch.tensor([False, True])
    args = (q_next, next_action, reward, terminated, 0.5, 0.2)
    torch.testing.assert_close(td_target("q_learning", *args), torch.tensor([-1.75, 5.0]))
    torch.testing.assert_close(td_target("sarsa", *args), torch.tensor([-3.0, 5.0]))
    expected = -1 + 0.5 * (0.8 * -1.5 + 0.2 * (-10.5 / 4))
    torch.testing.assert_close(td_target("expected_sarsa", *args), torch.tensor([expected, 5.0]))


def test_cliff_walking_matches_gymnasium():
    env, ours = gym.make("CliffWalking-v1"), CliffWalking(1)
    env.reset(seed=0)
    ours.reset()
    gen = torch.Generator().manual_seed(1)
    for action in torch.randint(4, (1000,), generator=gen).tolist():
        s, r, term, _, _ = env.step(action)
        s2, r2, term2 = ours.step(torch.tensor([action]))
        assert (s, r, term) == (s2.item(), r2.item(), term2.item())
        if term:
            env.reset()
            ours.reset()


def test_q_learning_learns_the_edge_and_is_deterministic():
    runs = [train_tabular(CliffWalking(2), "sarsa", 10, 0.5, 0.1,
                          generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    q, returns = train_tabular(CliffWalking(1), "q_learning", 150, 0.5, 0.1,
                               generator=torch.Generator().manual_seed(0))
    path, total = greedy_path(q[0])
    assert len(path) - 1 == 13 and total == -13 and returns[0, 0] < returns[0, -20:].mean()


def test_epsilon_greedy_and_observation_tensor():
    q = torch.tensor([[0.0, 1.0, 0.0]]).repeat(1000, 1)
    assert torch.equal(epsilon_greedy(q, 0.0), torch.ones(1000, dtype=torch.long))
    gen = torch.Generator().manual_seed(0)
    share = (epsilon_greedy(q, 1.0, gen) == 1).float().mean().item()
    assert abs(share - 1 / 3) < 0.06
    x = observation_tensor([[0.1, 0.2], [0.3, 0.4]])
    assert x.dtype == torch.float32 and x.shape == (2, 2)


def test_bad_inputs(lake):
    with pytest.raises(ValueError, match="must sum to 1"):
        TabularMDP(lake.P * 0.5, lake.R, lake.terminal)
    with pytest.raises(ValueError, match="P must have shape"):
        TabularMDP(lake.P[:, :, :3], lake.R, lake.terminal)
    with pytest.raises(TypeError, match="terminal must have torch.bool"):
        TabularMDP(lake.P, lake.R, lake.terminal.long())
    with pytest.raises(ValueError, match=r"gamma \(the discount factor\) must be in \[0, 1\]"):
        value_iteration(lake, 1.5)
    with pytest.raises(ValueError, match="policy actions must be in 0..3"):
        evaluate_policy_exact(lake, torch.full((16,), 4), 0.9)
    with pytest.raises(ValueError, match="actions must be in 0..3"):
        CliffWalking(2).step(torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="actions must have shape"):
        CliffWalking(2).step(torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="actions must have an integer dtype"):
        CliffWalking(1).step(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="values must have shape"):
        bellman_backup(lake, torch.zeros(5, dtype=torch.float64), 0.9)
    with pytest.raises(ValueError, match="method must be"):
        td_target("watkins", torch.zeros(1, 4), torch.zeros(1, dtype=torch.long),
                  torch.zeros(1), torch.zeros(1, dtype=torch.bool), 1.0, 0.1)
    with pytest.raises(ValueError, match="alpha must be in"):
        train_tabular(CliffWalking(1), "sarsa", 10, alpha=0.0, epsilon=0.1)
    with pytest.raises(TypeError, match="episodes must be an int"):
        train_tabular(CliffWalking(1), "sarsa", 10.5, alpha=0.5, epsilon=0.1)
    with pytest.raises(ValueError, match="epsilon must be in"):
        epsilon_greedy(torch.zeros(2, 4), 1.5)
