"""Chapter 33's define-and-run graph against torch.autograd (float64), its measurement helpers,
and the errors for bad input."""

import math

import pytest
import torch

from d2l_utils.frameworks import (
    Graph,
    add_gflops,
    as_dtype,
    bandwidth_gbs,
    best_seconds,
    cpu_peak_gflops,
    matmul_gflops,
    unbroadcast,
)


def mlp_graph(batch, n_in, n_hidden, n_out):
    """A two-layer MLP with a squared error, as a graph; returns (graph, symbols by name)."""
    g = Graph()
    s = {name: g.placeholder(name, shape, "float64") for name, shape in [
        ("x", (batch, n_in)), ("w1", (n_in, n_hidden)), ("b1", (n_hidden,)),
        ("w2", (n_hidden, n_out)), ("b2", (1, n_out)), ("target", (batch, n_out))]}
    error = (s["x"] @ s["w1"] + s["b1"]).relu() @ s["w2"] + s["b2"] - s["target"]
    s["loss"] = (error * error).sum()
    return g, s


@pytest.mark.parametrize("seed", range(5))
def test_graph_matches_torch_forward_and_gradients(seed):
    gen = torch.Generator().manual_seed(seed)
    batch, n_in, n_hidden, n_out = (int(v) for v in torch.randint(1, 9, (4,), generator=gen))
    g, s = mlp_graph(batch, n_in, n_hidden, n_out)
    feed = {node.name: torch.randn(node.shape, dtype=torch.float64, generator=gen)
            for node in g.nodes if node.op == "placeholder"}
    names = ["x", "w1", "b1", "w2", "b2", "target"]
    grads = g.grad(s["loss"], [s[name] for name in names], feed)
    leaves = {name: feed[name].clone().requires_grad_() for name in names}
    hidden = torch.relu(leaves["x"] @ leaves["w1"] + leaves["b1"])
    loss = ((hidden @ leaves["w2"] + leaves["b2"] - leaves["target"]) ** 2).sum()
    loss.backward()
    torch.testing.assert_close(g.run(feed, s["loss"]), loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g.run(feed), loss.detach(), rtol=1e-12, atol=1e-12)  # last node
    for name, grad in zip(names, grads, strict=True):
        assert grad.shape == feed[name].shape
        torch.testing.assert_close(grad, leaves[name].grad, rtol=1e-10, atol=1e-12)


def test_value_used_twice_and_unused_input():
    g = Graph()
    x, unused = g.placeholder("x", (3,), "float64"), g.placeholder("u", (2,), "float64")
    y = (x * x + x).sum()
    feed = {"x": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64),
            "u": torch.zeros(2, dtype=torch.float64)}
    grad_x, grad_u = g.grad(y, [x, unused], feed)
    torch.testing.assert_close(grad_x, 2 * feed["x"] + 1)
    assert torch.equal(grad_u, torch.zeros(2, dtype=torch.float64))


def test_unbroadcast_sums_over_broadcast_dimensions():
    grad = torch.arange(24.0).reshape(2, 3, 4)
    assert unbroadcast(grad, torch.Size([4])).shape == (4,)
    torch.testing.assert_close(unbroadcast(grad, torch.Size([3, 1])), grad.sum((0, 2))[:, None])
    torch.testing.assert_close(unbroadcast(grad, grad.shape), grad)


def test_graph_rejects_bad_feeds_and_bad_graphs():
    g, s = mlp_graph(4, 3, 5, 2)
    feed = {node.name: torch.randn(node.shape, dtype=torch.float64)
            for node in g.nodes if node.op == "placeholder"}
    with pytest.raises(ValueError, match=r"a tensor for each placeholder.*missing \['w2'\]"):
        g.run({k: v for k, v in feed.items() if k != "w2"})
    with pytest.raises(ValueError, match=r"'x' must be fed a tensor of shape \(4, 3\), got \(5"):
        g.run({**feed, "x": torch.randn(5, 3, dtype=torch.float64)})
    with pytest.raises(TypeError, match="x must have torch.float64"):
        g.run({**feed, "x": feed["x"].float()})
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        g.run({**feed, "x": feed["x"].tolist()})
    with pytest.raises(ValueError, match="grad needs a scalar output"):
        g.grad(s["x"] @ s["w1"], [s["w1"]], feed)
    with pytest.raises(ValueError, match="placeholder name must be a new string"):
        g.placeholder("x", (1,))
    with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
        g.placeholder("z", (0, 2))
    with pytest.raises(ValueError, match="op must be one of"):
        g.record("conv", s["x"])
    with pytest.raises(TypeError, match="inputs must be Symbols of this graph"):
        s["x"] + Graph().placeholder("y", (4, 3), "float64")
    with pytest.raises(TypeError, match="output must be a Symbol of this graph"):
        g.run(feed, "loss")


def test_dtype_names():
    assert as_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match=r"dtype must be one of \['bfloat16', 'float16'"):
        as_dtype("float33")
    with pytest.raises(TypeError, match="dtype must be a string"):
        as_dtype(torch.float32)
    with pytest.raises(ValueError, match="dtype must be one of"):
        Graph().placeholder("x", (2,), "int8")


def test_measurements_are_positive_and_finite():
    for rate in (matmul_gflops(8), matmul_gflops(4, "float64", repeats=2),
                 bandwidth_gbs(1024, repeats=2), add_gflops(1024, repeats=2)):
        assert math.isfinite(rate) and rate > 0
    assert 0 <= best_seconds(lambda: None, repeats=3) < 1


@pytest.mark.parametrize("call, error, message", [
    (lambda: matmul_gflops(0), ValueError, r"n must be in \[1"),
    (lambda: matmul_gflops(2.5), TypeError, "n must be an int"),
    (lambda: matmul_gflops(4, "float8"), ValueError, "dtype must be one of"),
    (lambda: bandwidth_gbs(0), ValueError, r"numel must be in \[1"),
    (lambda: add_gflops(-3), ValueError, r"numel must be in \[1"),
    (lambda: best_seconds(lambda: None, repeats=0), ValueError, r"repeats must be in \[1"),
    (lambda: cpu_peak_gflops("float16"), ValueError, "dtype must be 'float32' or 'float64'"),
    (lambda: cpu_peak_gflops(threads=0), ValueError, r"threads must be in \[1"),
])
def test_measurement_helpers_reject_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


AVX512 = "model name\t: Some CPU\ncpu MHz\t\t: 2000.000\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n"


def test_cpu_peak_from_flags_and_clock():
    assert cpu_peak_gflops("float32", cpuinfo=AVX512) == pytest.approx(2.0 * 2 * 2 * 16)
    assert cpu_peak_gflops("float64", threads=2, cpuinfo=AVX512) == pytest.approx(2 * 2.0 * 32)
    avx2 = AVX512.replace(" avx512f", "")
    assert cpu_peak_gflops("float32", cpuinfo=avx2) == pytest.approx(2.0 * 2 * 2 * 8)
    sse = "model name\t: Old CPU @ 3.00GHz\nflags\t\t: fpu sse sse2\n"   # clock from the name
    assert cpu_peak_gflops("float32", cpuinfo=sse) == pytest.approx(3.0 * 2 * 4)
    assert cpu_peak_gflops(cpuinfo="processor\t: 0\nFeatures\t: neon\n") is None  # no flags
    assert cpu_peak_gflops(cpuinfo="flags\t\t: avx2 fma\n") is None                # no clock
    here = cpu_peak_gflops()
    assert here is None or (math.isfinite(here) and here > 0)
