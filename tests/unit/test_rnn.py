"""d2l_utils.rnn (chapter 19): the Elman cell and the multi-layer RNN against PyTorch's
(float64, random shapes, outputs, final states and gradients), backpropagation through time by
hand against autograd, the Jacobian norms against ``torch.autograd.functional.jacobian``, the
stream batches, truncated BPTT, the stream perplexity, sampling and the error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2l_utils.rnn import (
    RNN,
    CharRNN,
    RNNCell,
    rnn_backward,
    sample,
    spectral_radius,
    state_jacobian_norms,
    stream_batches,
    stream_perplexity,
    truncated_bptt_loss,
)

F64 = torch.float64


def test_cell_matches_pytorch():
    torch.manual_seed(0)
    for input_size, hidden_size, batch in [(1, 1, 1), (3, 5, 4), (7, 2, 3)]:
        reference, ours = nn.RNNCell(input_size, hidden_size).double(), RNNCell(
            input_size, hidden_size).double()
        ours.load_state_dict(reference.state_dict())
        x = torch.randn(batch, input_size, dtype=F64, requires_grad=True)
        h = torch.randn(batch, hidden_size, dtype=F64, requires_grad=True)
        a, b = ours(x, h), reference(x, h)
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
        grads = [torch.autograd.grad(out.square().sum(), [x, h, *m.parameters()])
                 for out, m in ((a, ours), (b, reference))]
        for g, r in zip(*grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("layers,steps,batch", [(1, 1, 1), (2, 5, 3), (3, 8, 2)])
def test_rnn_matches_pytorch(batch_first, layers, steps, batch):
    torch.manual_seed(layers * 10 + steps)
    reference = nn.RNN(4, 6, num_layers=layers, batch_first=batch_first).double()
    ours = RNN(4, 6, num_layers=layers, batch_first=batch_first).double()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    ours.load_state_dict(reference.state_dict())
    shape = (batch, steps, 4) if batch_first else (steps, batch, 4)
    x = torch.randn(shape, dtype=F64, requires_grad=True)
    h0 = torch.randn(layers, batch, 6, dtype=F64, requires_grad=True)
    results = []
    for model, hx in ((ours, h0), (reference, h0), (ours, None), (reference, None)):
        output, h_n = model(x, hx)
        loss = output.sin().sum() + h_n.square().sum()
        inputs = [x, h0, *model.parameters()] if hx is not None else [x, *model.parameters()]
        results.append([output, h_n, *torch.autograd.grad(loss, inputs)])
    for mine, theirs in (results[:2], results[2:]):
        for a, b in zip(mine, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_rnn_state_carries_over():
    """Running two halves with the state carried equals running the whole sequence."""
    torch.manual_seed(1)
    model = RNN(3, 5, num_layers=2).double()
    x = torch.randn(10, 2, 3, dtype=F64)
    whole, h_whole = model(x)
    first, h = model(x[:4])
    second, h_end = model(x[4:], h)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    torch.testing.assert_close(h_end, h_whole)


@pytest.mark.parametrize("steps,batch,inputs,hidden", [(1, 1, 1, 1), (6, 3, 4, 5), (15, 2, 2, 8)])
def test_backward_by_hand_matches_autograd(steps, batch, inputs, hidden):
    torch.manual_seed(steps)
    layer = RNN(inputs, hidden).double()
    x = torch.randn(steps, batch, inputs, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, batch, hidden, dtype=F64, requires_grad=True)
    hs, _ = layer(x, h0)
    grad_hs = torch.randn_like(hs)
    auto = torch.autograd.grad((grad_hs * hs).sum(), [*layer.layer(0), x, h0])
    mine = rnn_backward(x.detach(), h0[0].detach(), hs.detach(), layer.weight_ih_l0.detach(),
                        layer.weight_hh_l0.detach(), grad_hs)
    expected = [auto[0], auto[1], auto[2], auto[3], auto[4], auto[5][0]]
    for key, value in zip(["weight_ih", "weight_hh", "bias", "bias", "x", "h0"], expected):
        torch.testing.assert_close(mine[key], value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "linear"])
def test_jacobian_norms_match_autograd(nonlinearity):
    torch.manual_seed(2)
    weight_hh = 0.5 * torch.randn(3, 4, 4, dtype=F64)
    drive = torch.randn(6, 2, 4, dtype=F64)
    norms = state_jacobian_norms(weight_hh, drive, nonlinearity)
    assert norms.shape == (3, 2, 6)
    f = torch.tanh if nonlinearity == "tanh" else (lambda z: z)
    for r in range(3):
        for b in range(2):
            for t in (1, 6):
                def unrolled(h0, r=r, b=b, t=t):
                    h = h0
                    for d in drive[:t, b]:
                        h = f(weight_hh[r] @ h + d)
                    return h
                jac = torch.autograd.functional.jacobian(unrolled, torch.zeros(4, dtype=F64))
                torch.testing.assert_close(norms[r, b, t - 1], torch.linalg.matrix_norm(jac).log())


def test_linear_orthogonal_norms_are_exact():
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=F64))
    norms = state_jacobian_norms(1.1 * q[None], torch.zeros(5, 1, 8, dtype=F64), "linear")
    t = torch.arange(1, 6, dtype=F64)
    torch.testing.assert_close(norms[0, 0], t * math.log(1.1) + 0.5 * math.log(8))


def test_spectral_radius():
    w = torch.diag(torch.tensor([0.5, -2.0, 1.5], dtype=F64))
    torch.testing.assert_close(spectral_radius(w), torch.tensor(2.0, dtype=F64))
    rotation = torch.tensor([[0.0, -3.0], [3.0, 0.0]], dtype=F64)     # eigenvalues +-3i
    torch.testing.assert_close(spectral_radius(rotation[None]), torch.tensor([3.0], dtype=F64))


def test_stream_batches_are_contiguous_streams():
    ids = torch.arange(103)
    windows = stream_batches(ids, batch_size=4, num_steps=5)
    length = len(windows) * 5
    assert len(windows) == (102 // 4) // 5 and all(x.shape == (5, 4) for x, _ in windows)
    inputs = torch.cat([x for x, _ in windows])                         # (length, B)
    targets = torch.cat([y for _, y in windows])
    assert torch.equal(targets, inputs + 1)                             # one token ahead
    assert torch.equal(inputs.T.flatten(), ids[:25 * 4].view(4, 25)[:, :length].flatten())


def test_truncated_bptt_detaches_and_carries():
    torch.manual_seed(3)
    model = CharRNN(10, 4, 6)
    windows = stream_batches(torch.randint(0, 10, (200,)), batch_size=2, num_steps=7)
    loss_of = truncated_bptt_loss()
    first = loss_of(model, windows[0])
    first.backward()
    carried = loss_of.__closure__[0].cell_contents["state"]
    assert carried.grad_fn is None and carried.shape == (1, 2, 6)
    second = loss_of(model, windows[1])
    logits, _ = model(windows[1][0], carried)
    expected = F.cross_entropy(logits.flatten(0, 1), windows[1][1].flatten())
    torch.testing.assert_close(second, expected)
    model.zero_grad()
    second.backward()                  # no error: the first window's graph is not reached


def test_stream_perplexity_is_exp_cross_entropy():
    torch.manual_seed(4)
    model = CharRNN(12, 5, 7).double()
    ids = torch.randint(0, 12, (40,))
    inputs = torch.cat([torch.tensor([3]), ids[:-1]])
    logits, _ = model(inputs[:, None])
    expected = math.exp(F.cross_entropy(logits[:, 0], ids).item())
    assert math.isclose(stream_perplexity(model, ids, start=3), expected, rel_tol=1e-12)
    assert model.training                                # the mode is restored


def test_sample_is_seeded_and_keeps_the_prompt():
    torch.manual_seed(5)
    model = CharRNN(9, 4, 8)
    prompt = torch.tensor([1, 2, 3])
    a = sample(model, prompt, 20, 1.0, torch.Generator().manual_seed(0))
    b = sample(model, prompt, 20, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and len(a) == 23 and torch.equal(a[:3], prompt)
    assert ((0 <= a) & (a < 9)).all()
    cold = sample(model, prompt, 10, 1e-4, torch.Generator().manual_seed(1))
    logits, state = model(prompt[:, None])
    assert cold[3].item() == logits[-1, 0].argmax().item()           # tau -> 0: the argmax
    last = sample(model, prompt, 6, 1.0, torch.Generator().manual_seed(2),
                  probs_of=lambda scores, tau: F.one_hot(scores.argmin(), 9).float())
    assert last[3].item() == logits[-1, 0].argmin().item()           # the rule it was given
    with pytest.raises(TypeError, match="probs_of must be a function"):
        sample(model, prompt, 2, 1.0, torch.Generator(), probs_of="top-k")


def test_bad_inputs():
    model = RNN(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"input must have shape \(T B I\)"):
        model(torch.randn(5, 3))
    with pytest.raises(ValueError, match="I = 3"):
        model(torch.randn(5, 2, 4))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(5, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"hx must have shape \(L B H\) with L = 2"):
        model(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(TypeError, match="hx must have torch.float32"):
        model(torch.randn(5, 2, 3), torch.zeros(2, 2, 4, dtype=F64))
    with pytest.raises(ValueError, match="at least one time step"):
        model(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match="num_layers must be in"):
        RNN(3, 4, num_layers=0)
    with pytest.raises(TypeError, match="batch_first must be a bool"):
        RNN(3, 4, batch_first=1)
    with pytest.raises(TypeError, match="hidden_size must be an int"):
        RNNCell(3, 4.0)
    with pytest.raises(ValueError, match=r"h must have shape \(B H\) with B = 2"):
        RNNCell(3, 4)(torch.randn(2, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="grad_hs must have shape"):
        rnn_backward(torch.randn(4, 2, 3), torch.zeros(2, 5), torch.zeros(4, 2, 5),
                     torch.zeros(5, 3), torch.zeros(5, 5), torch.zeros(3, 2, 5))
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(H H\) with H = 5"):
        rnn_backward(torch.randn(4, 2, 3), torch.zeros(2, 5), torch.zeros(4, 2, 5),
                     torch.zeros(5, 3), torch.zeros(4, 4), torch.zeros(4, 2, 5))
    with pytest.raises(ValueError, match="start must be in"):
        stream_perplexity(CharRNN(5, 2, 3), torch.zeros(4, dtype=torch.int64), start=-1)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'linear'"):
        state_jacobian_norms(torch.eye(3)[None], torch.zeros(2, 1, 3), "relu")
    with pytest.raises(ValueError, match=r"drive must have shape \(T B H\) with H = 3"):
        state_jacobian_norms(torch.eye(3)[None], torch.zeros(2, 1, 4))
    with pytest.raises(TypeError, match="ids must have an integer dtype"):
        stream_batches(torch.zeros(100), 2, 5)
    with pytest.raises(ValueError, match="too few"):
        stream_batches(torch.arange(10), 4, 5)
    with pytest.raises(ValueError, match="temperature must be in"):
        sample(CharRNN(5, 2, 3), torch.tensor([1]), 5, 0.0, torch.Generator())
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sample(CharRNN(5, 2, 3), torch.tensor([1]), 5, 1.0, 0)
    with pytest.raises(ValueError, match="ids is empty"):
        stream_perplexity(CharRNN(5, 2, 3), torch.zeros(0, dtype=torch.int64), start=0)
    with pytest.raises(TypeError, match="x must have an integer dtype"):
        CharRNN(5, 2, 3)(torch.zeros(4, 2))
