"""Tests of d2l_utils.perceptron (chapter 01_origins/04_perceptron)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.perceptron import (
    add_bias,
    and_gate,
    boolean_cube,
    margin,
    not_gate,
    novikoff_bound,
    or_gate,
    perceptron_criterion,
    perceptron_predict,
    perceptron_train,
    perceptron_update,
    radius,
    separable_data,
    threshold_unit,
    xor_gate,
)


def test_boolean_cube_counts_in_order():
    cube = boolean_cube(3)
    assert cube.shape == (8, 3) and cube.dtype == torch.float64
    assert cube.tolist()[:3] == [[0, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert cube.sum(1).tolist() == [0, 1, 1, 2, 1, 2, 2, 3]


def test_gate_truth_tables():
    pairs = boolean_cube(2)
    assert and_gate(pairs).tolist() == [0, 0, 0, 1]
    assert or_gate(pairs).tolist() == [0, 1, 1, 1]
    assert xor_gate(pairs).tolist() == [0, 1, 1, 0]
    assert not_gate(boolean_cube(1)).tolist() == [1, 0]


def test_threshold_unit_single_input_and_dtype():
    out = threshold_unit(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.5, 2.0, 0.5]), 1.0)
    assert out.ndim == 0 and out.item() == 1.0
    out = threshold_unit(torch.eye(2, dtype=torch.float64), torch.ones(2), 2.0)
    assert out.dtype == torch.float64 and out.tolist() == [0.0, 0.0]


def test_no_single_unit_computes_xor_on_a_grid():
    pairs = boolean_cube(2)
    values = torch.arange(-4, 5, dtype=torch.float64)
    grid = torch.cartesian_prod(values, values, torch.arange(-4.5, 5, 0.5, dtype=torch.float64))
    tables = (pairs @ grid[:, :2].T >= grid[:, 2]).T.int()  # (units, 4)
    assert (0, 1, 1, 0) not in {tuple(t) for t in tables.tolist()}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 30), n=st.integers(1, 8))
def test_update_equals_sgd_step_on_perceptron_criterion(seed, d, n):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, dtype=torch.float64, generator=gen, requires_grad=True)
    x = torch.randn(n, d, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    # one example: the rule equals one SGD step with learning rate 1
    perceptron_criterion(w, x[:1], y[:1]).backward()
    rule, mistake = perceptron_update(w.detach(), x[0], y[0])
    torch.testing.assert_close(w.detach() - w.grad, rule, rtol=0, atol=1e-12)
    assert bool(mistake) == bool(y[0] * (w.detach() @ x[0]) <= 0)
    # a batch: the gradient of the summed criterion is minus the sum of y x over mistakes
    w.grad = None
    perceptron_criterion(w, x, y).backward()
    wrong = (y * (x @ w.detach()) <= 0).to(x.dtype)
    torch.testing.assert_close(-w.grad, (wrong * y) @ x)


def test_update_agrees_with_autograd_at_zero_weights():
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    x, y = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64), torch.tensor([-1])
    perceptron_criterion(w, x, y).backward()
    rule, mistake = perceptron_update(w.detach(), x[0], y[0])
    assert bool(mistake)
    torch.testing.assert_close(w.detach() - w.grad, rule)


def test_torch_sgd_reproduces_perceptron_train():
    x, y, _ = separable_data(1, n=30, d=4, gamma=0.3, generator=torch.Generator().manual_seed(3))
    x, y = add_bias(x[0]), y[0]
    ours = perceptron_train(x, y)
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=1.0)
    for _ in range(len(ours.epoch_mistakes)):
        for i in range(len(x)):
            optimizer.zero_grad()
            perceptron_criterion(w, x[i:i + 1], y[i:i + 1]).backward()
            optimizer.step()
    torch.testing.assert_close(w.detach(), ours.weights)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 8), n=st.integers(1, 60),
       gamma=st.floats(0.05, 1.0))
def test_convergence_within_novikoff_bound(seed, d, n, gamma):
    x, y, w_star = separable_data(16, n, d, gamma, generator=torch.Generator().manual_seed(seed))
    bound = novikoff_bound(w_star, x, y)
    assert (margin(w_star, x, y) >= gamma - 1e-12).all()
    result = perceptron_train(x, y, epochs=10_000)
    assert result.converged.all()
    assert (result.mistakes <= bound).all()
    for s in range(16):  # the final weights separate every dataset
        assert (perceptron_predict(result.weights[s], x[s]) == y[s]).all()


def test_single_dataset_shapes_and_batched_agree():
    x, y, _ = separable_data(3, n=20, d=3, gamma=0.2, generator=torch.Generator().manual_seed(0))
    batched = perceptron_train(x, y)
    for s in range(3):
        single = perceptron_train(x[s], y[s])
        assert single.weights.shape == (3,) and single.mistakes.ndim == 0
        torch.testing.assert_close(single.weights, batched.weights[s])
        assert int(single.mistakes) == int(batched.mistakes[s])


def test_parity_never_converges_and_product_feature_fixes_xor():
    pairs = boolean_cube(2)
    xor = torch.where(xor_gate(pairs) == 1, 1, -1)
    stuck = perceptron_train(add_bias(pairs), xor, epochs=50)
    assert not stuck.converged and (stuck.epoch_mistakes > 0).all()
    product = torch.cat([pairs, pairs[:, :1] * pairs[:, 1:]], dim=1)
    fixed = perceptron_train(add_bias(product), xor)
    assert fixed.converged
    assert torch.equal(perceptron_predict(fixed.weights, add_bias(product)), xor)


def test_radius_and_margin_values():
    x = torch.tensor([[3.0, 4.0], [0.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([1, -1])
    assert radius(x).item() == pytest.approx(5.0, rel=1e-12)
    w = torch.tensor([0.0, 2.0], dtype=torch.float64)
    assert margin(w, x, y).item() == pytest.approx(1.0)  # min(8, 2) / ||w||


@pytest.mark.parametrize("x, y, error", [
    (torch.zeros(4, 2), torch.tensor([1, -1, 1, 0]), ValueError),          # label 0
    (torch.zeros(4, 2), torch.tensor([1, -1, 1]), ValueError),             # wrong length
    (torch.zeros(4), torch.tensor([1, -1, 1, 1]), ValueError),             # no feature axis
    (torch.zeros(4, 2, dtype=torch.long), torch.ones(4), TypeError),       # integer inputs
    ([[0.0, 1.0]], torch.ones(1), TypeError),                              # not a tensor
])
def test_bad_inputs_raise(x, y, error):
    with pytest.raises(error):
        perceptron_train(x, y)


def test_other_bad_arguments_raise():
    x, y = torch.zeros(2, 3), torch.tensor([1, -1])
    with pytest.raises(ValueError):
        perceptron_train(x, y, epochs=0)
    with pytest.raises(ValueError):
        perceptron_train(torch.zeros(2, 2, 2, 3), torch.ones(2, 2, 2))  # too many dimensions
    with pytest.raises(ValueError):
        perceptron_predict(torch.zeros(4), x)
    with pytest.raises(ValueError):
        threshold_unit(torch.zeros(3, 2), torch.zeros(3), 0.0)
    with pytest.raises(ValueError):
        boolean_cube(0)
    with pytest.raises(ValueError):  # w does not separate: margin <= 0
        novikoff_bound(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
                       torch.tensor([1, -1]))


def test_error_messages_say_what_was_expected():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"labels must have shape \(\.\.\., N\)"):
        perceptron_train(x, torch.ones(3))
    with pytest.raises(ValueError, match="labels must be -1 or \\+1"):
        perceptron_train(x, torch.tensor([1, -1, 1, 0]))
    with pytest.raises(TypeError, match="inputs must have a floating-point dtype"):
        perceptron_train(x.long(), torch.ones(4))
    with pytest.raises(ValueError, match="epochs must be in"):
        perceptron_train(x, torch.ones(4), epochs=0)
    with pytest.raises(ValueError, match="weights must have shape"):
        threshold_unit(torch.zeros(3, 2), torch.zeros(2, 1), 0.0)


def test_threshold_unit_accepts_one_input_and_stacks():
    weights = torch.tensor([1.0, 1.0])
    assert threshold_unit(torch.tensor([1.0, 1.0]), weights, 2.0).item() == 1.0
    stacked = threshold_unit(boolean_cube(2).expand(3, 4, 2), weights, 1.0)  # (3, 4)
    assert stacked.tolist() == [[0.0, 1.0, 1.0, 1.0]] * 3
