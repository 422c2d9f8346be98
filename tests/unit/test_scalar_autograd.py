"""The scalar engine of chapter 7 against torch.autograd (float64) and finite differences."""

import math
import sys

import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.scalar_autograd import (
    Value,
    draw_graph,
    graph_layout,
    topological_order,
)

UNARY = ["exp", "tanh", "relu", "neg", "square", "logsq"]
BINARY = ["add", "mul", "sub", "div"]


def apply(op, *args):
    """One operation on Values or torch tensors (safe domains: log(1 + x²), div by 1 + y²)."""
    if op == "exp":
        return (args[0] * 0.3).exp()
    if op == "tanh":
        return args[0].tanh()
    if op == "relu":
        return args[0].relu()
    if op == "neg":
        return -args[0]
    if op == "square":
        return args[0] ** 2
    if op == "logsq":
        return (args[0] * args[0] + 1).log()
    x, y = args
    if op == "add":
        return x + y
    if op == "mul":
        return x * y
    if op == "sub":
        return 2.0 - x - y
    return x / (y * y + 1)


program = st.lists(
    st.tuples(st.sampled_from(UNARY + BINARY), st.integers(0, 100), st.integers(0, 100)),
    min_size=1, max_size=12)


def run(prog, inputs):
    nodes = list(inputs)
    for op, i, j in prog:
        a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
        nodes.append(apply(op, a, b) if op in BINARY else apply(op, a))
    out = nodes[-1]
    for extra in nodes[len(inputs):-1]:  # every intermediate feeds the output too
        out = out + extra * 0.1
    return out


@settings(max_examples=60, deadline=None)
@given(program, st.lists(st.floats(-2, 2), min_size=3, max_size=3))
def test_random_expressions_match_torch(prog, xs):
    values = [Value(x) for x in xs]
    out = run(prog, values)
    out.backward()
    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out_t = run(prog, tensors)
    out_t.backward()
    assert math.isclose(out.data, out_t.item(), rel_tol=1e-12, abs_tol=1e-12)
    for v, t in zip(values, tensors):
        expected = 0.0 if t.grad is None else t.grad.item()
        assert math.isclose(v.grad, expected, rel_tol=1e-10, abs_tol=1e-10)


@settings(max_examples=30, deadline=None)
@given(program, st.lists(st.floats(-2, 2), min_size=3, max_size=3))
def test_random_expressions_match_finite_differences(prog, xs):
    values = [Value(x) for x in xs]
    run(prog, values).backward()
    h = 1e-6
    for k in range(3):
        plus = [Value(x + h * (i == k)) for i, x in enumerate(xs)]
        minus = [Value(x - h * (i == k)) for i, x in enumerate(xs)]
        numeric = (run(prog, plus).data - run(prog, minus).data) / (2 * h)
        # relu kinks make finite differences meaningless within h of zero; skip those points
        kinks = [n for n in run(prog, [Value(x) for x in xs]).graph() if n.op == "relu"]
        if any(abs(n.parents[0].data) < 1e-4 for n in kinks):
            return
        assert abs(numeric - values[k].grad) < 1e-5 * (1 + abs(numeric))


def test_hand_derivative():
    a, b = Value(0.5), Value(-1.5)
    e = a.tanh()
    d = a * b + b
    f = d * e
    f.backward()
    assert math.isclose(a.grad, e.data * b.data + d.data * (1 - e.data**2), rel_tol=1e-14)
    assert math.isclose(b.grad, e.data * (a.data + 1), rel_tol=1e-14)


def test_accumulation_and_zero_grad():
    x = Value(3.0)
    y = x * x + x
    y.backward()
    assert x.grad == 7.0
    y.backward()
    assert x.grad == 14.0 and y.grad == 2.0
    y.zero_grad()
    assert all(node.grad == 0.0 for node in y.graph())
    y.backward()
    assert x.grad == 7.0


def test_deep_chain_needs_no_recursion():
    x = Value(1.0)
    node = x
    depth = 3 * sys.getrecursionlimit()
    for _ in range(depth):
        node = node * 1.0 + 0.0
    node.backward()
    assert x.grad == 1.0
    assert len(node.graph()) > depth


def test_topological_order_puts_inputs_first():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    order = topological_order(d, lambda v: v.parents)
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        for parent in node.parents:
            assert position[id(parent)] < position[id(node)]
    assert order[-1] is d and len(order) == 4


def test_errors():
    with pytest.raises(ValueError, match="positive"):
        Value(-1.0).log()
    with pytest.raises(TypeError, match="exponent"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(TypeError):
        Value("3")


def test_draw_graph_returns_axes():
    a, b = Value(1.0, label="a"), Value(2.0, label="b")
    f = (a * b + b).tanh()
    f.backward()
    ax = draw_graph(f)
    assert sum(1 for t in ax.texts if t.get_text()) == len(f.graph())
    plt.close(ax.figure)


def test_graph_layout_puts_each_node_left_of_its_users():
    a, b = Value(1.0), Value(2.0)
    f = (a * b + b).tanh()
    position = graph_layout(f)
    assert len(position) == len(f.graph()) and position[id(f)][0] == max(
        column for column, _ in position.values())
    for node in f.graph():
        for parent in node.parents:
            assert position[id(parent)][0] < position[id(node)][0]
    assert len(set(position.values())) == len(position)  # no two boxes on one spot
