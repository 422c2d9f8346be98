"""d2l_utils.lstm (chapter 20): the LSTM and GRU cells and multi-layer layers against PyTorch's
(float64, random shapes, both layouts: outputs, final states and the gradients of the input,
the initial state and every weight), the adding problem's batches, chapter 19's truncated-BPTT
loss on a pair of states, the next-token distribution with temperature and top-k, generation,
and the error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2l_utils.lstm import (
    GRU,
    LSTM,
    AddingBatches,
    CharLM,
    LastStep,
    adding_batch,
    generate,
    gru_cell,
    lstm_cell,
    next_token_probs,
)
from d2l_utils.rnn import detach_state, truncated_bptt_loss

F64 = torch.float64


def test_cells_match_pytorch():
    torch.manual_seed(0)
    for input_size, hidden_size, batch in [(1, 1, 1), (3, 5, 4), (7, 2, 3)]:
        x = torch.randn(batch, input_size, dtype=F64, requires_grad=True)
        h = torch.randn(batch, hidden_size, dtype=F64, requires_grad=True)
        c = torch.randn(batch, hidden_size, dtype=F64, requires_grad=True)
        cell = nn.LSTMCell(input_size, hidden_size).double()
        weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        for a, b in zip(lstm_cell(x, (h, c), *weights), cell(x, (h, c)), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
        cell = nn.GRUCell(input_size, hidden_size).double()
        weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        ours, reference = gru_cell(x, h, *weights), cell(x, h)
        torch.testing.assert_close(ours, reference, rtol=1e-13, atol=1e-13)
        grads = [torch.autograd.grad(out.sin().sum(), [x, h, *weights])
                 for out in (ours, reference)]
        for g, r in zip(*grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("layers,steps,batch", [(1, 1, 1), (2, 5, 3), (3, 7, 2)])
def test_layers_match_pytorch(kind, batch_first, layers, steps, batch):
    torch.manual_seed(layers * 10 + steps)
    ours_class, reference_class = (LSTM, nn.LSTM) if kind == "lstm" else (GRU, nn.GRU)
    reference = reference_class(4, 6, num_layers=layers, batch_first=batch_first).double()
    ours = ours_class(4, 6, num_layers=layers, batch_first=batch_first).double()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert all(a.shape == b.shape for a, b in zip(ours.parameters(), reference.parameters()))
    ours.load_state_dict(reference.state_dict())
    x = torch.randn((batch, steps, 4) if batch_first else (steps, batch, 4), dtype=F64,
                    requires_grad=True)
    h0 = torch.randn(layers, batch, 6, dtype=F64, requires_grad=True)
    c0 = torch.randn(layers, batch, 6, dtype=F64, requires_grad=True)
    hx = (h0, c0) if kind == "lstm" else h0
    for state in (hx, None):
        results = []
        for model in (ours, reference):
            output, final = model(x, state)
            finals = list(final) if kind == "lstm" else [final]
            loss = output.sin().sum() + sum(f.pow(2).sum() for f in finals)
            wrt = [x, *([h0, c0] if kind == "lstm" else [h0])] if state is not None else [x]
            grads = torch.autograd.grad(loss, [*wrt, *model.parameters()], allow_unused=True)
            results.append([output, *finals, *grads])
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_default_initialisation_is_pytorchs():
    torch.manual_seed(0)
    for model in (LSTM(3, 16, num_layers=2), GRU(3, 16)):
        for name, parameter in model.named_parameters():
            assert parameter.abs().max() <= 0.25 and parameter.std() > 0.1, name
    assert LSTM(3, 16).weight_ih_l0.shape == (64, 3) and GRU(3, 16).weight_hh_l0.shape == (48, 16)


def test_adding_batches():
    generator = torch.Generator().manual_seed(0)
    x, y = adding_batch(500, 20, generator)
    assert x.shape == (20, 500, 2) and y.shape == (500,)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values <= 1)).all()
    assert (markers.sum(0) == 2).all() and (markers[:10].sum(0) == 1).all()
    torch.testing.assert_close(y, (values * markers).sum(0))
    again = adding_batch(500, 20, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x)
    batches = AddingBatches(3, 4, 10, torch.Generator().manual_seed(0))
    assert len(batches) == 3 and len(list(batches)) == 3
    assert LastStep(nn.LSTM(2, 5), 5)(x[:, :7]).shape == (7,)


def test_truncated_bptt_loss_carries_and_detaches_both_halves():
    torch.manual_seed(0)
    model = CharLM(5, 3, 4)
    loss_of = truncated_bptt_loss()
    inputs = torch.randint(0, 5, (6, 2))
    targets = torch.randint(0, 5, (6, 2))
    first = loss_of(model, (inputs, targets))
    logits, _ = model(inputs)
    torch.testing.assert_close(first, F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    second = loss_of(model, (inputs, targets))
    _, state = model(inputs)
    logits, _ = model(inputs, state)
    torch.testing.assert_close(second, F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    h, c = detach_state((torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)))
    assert not h.requires_grad and not c.requires_grad
    assert CharLM(5, 3, 4, cell="gru")(inputs)[1].shape == (1, 2, 4)


def test_next_token_probs():
    torch.manual_seed(0)
    logits = torch.randn(4, 10, dtype=F64)
    torch.testing.assert_close(next_token_probs(logits), F.softmax(logits, -1))
    torch.testing.assert_close(next_token_probs(logits, 2.0), F.softmax(logits / 2, -1))
    cold = next_token_probs(logits, 1e-4)
    torch.testing.assert_close(cold, F.one_hot(logits.argmax(-1), 10).to(F64))
    for k in (1, 3, 10):
        probs = next_token_probs(logits, 0.7, top_k=k)
        assert ((probs > 0).sum(-1) == k).all()
        kept = logits.topk(k, dim=-1).indices
        torch.testing.assert_close(probs.gather(-1, kept),
                                   F.softmax(logits.gather(-1, kept) / 0.7, -1))
    tied = next_token_probs(torch.zeros(6), top_k=2)
    assert (tied > 0).sum() == 2


def test_sampled_frequencies_match_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    draws = torch.multinomial(next_token_probs(logits), 100_000, replacement=True,
                              generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=6) / 100_000
    torch.testing.assert_close(frequencies, F.softmax(logits, 0), rtol=0, atol=0.006)
    top = torch.multinomial(next_token_probs(logits, top_k=2), 1000, replacement=True,
                            generator=torch.Generator().manual_seed(0))
    assert set(top.tolist()) == {0, 1}


def test_generate_is_seeded_and_greedy_when_cold():
    torch.manual_seed(0)
    model = CharLM(7, 4, 8)
    prompt = torch.tensor([1, 2, 3])
    a = generate(model, prompt, 20, torch.Generator().manual_seed(1), 1.5, top_k=3)
    b = generate(model, prompt, 20, torch.Generator().manual_seed(1), 1.5, top_k=3)
    assert torch.equal(a, b) and torch.equal(a[:3], prompt) and len(a) == 23
    greedy = generate(model, prompt, 15, torch.Generator().manual_seed(2), top_k=1)
    out = prompt.tolist()
    with torch.no_grad():
        for _ in range(15):
            out.append(model(torch.tensor(out)[:, None])[0][-1, 0].argmax().item())
    assert greedy.tolist() == out
    cold = generate(model, prompt, 15, torch.Generator().manual_seed(3), temperature=1e-4)
    assert cold.tolist() == out


def test_bad_inputs():
    lstm, gru = LSTM(3, 4, num_layers=2), GRU(3, 4)
    with pytest.raises(ValueError, match=r"input must have shape \(T B I\)"):
        lstm(torch.randn(5, 3))
    with pytest.raises(ValueError, match="I = 3"):
        gru(torch.randn(5, 2, 4))
    with pytest.raises(TypeError, match="floating-point"):
        lstm(torch.ones(5, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least one time step"):
        gru(torch.randn(0, 2, 3))
    with pytest.raises(TypeError, match=r"hx must be a pair \(h_0, c_0\)"):
        lstm(torch.randn(5, 2, 3), torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"c_0 must have shape \(L B H\) with L = 2"):
        lstm(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(TypeError, match="h_0 must have torch.float32"):
        gru(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=F64))
    with pytest.raises(TypeError, match="h_0 must be a torch.Tensor"):
        gru(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4),))
    with pytest.raises(ValueError, match="num_layers must be in"):
        LSTM(3, 4, num_layers=0)
    with pytest.raises(TypeError, match="batch_first must be a bool"):
        GRU(3, 4, batch_first=1)
    with pytest.raises(TypeError, match="hidden_size must be an int"):
        LSTM(3, 4.0)
    with pytest.raises(ValueError, match="temperature must be in"):
        next_token_probs(torch.zeros(5), 0.0)
    with pytest.raises(ValueError, match="temperature must be in"):
        next_token_probs(torch.zeros(5), -1.0)
    with pytest.raises(ValueError, match="top_k must be in"):
        next_token_probs(torch.zeros(5), top_k=0)
    with pytest.raises(ValueError, match="top_k must be in"):
        next_token_probs(torch.zeros(5), top_k=6)
    with pytest.raises(TypeError, match="logits must have a floating-point dtype"):
        next_token_probs(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="logits must have shape"):
        next_token_probs(torch.tensor(1.0))
    model, prompt = CharLM(5, 2, 3), torch.tensor([1])
    with pytest.raises(ValueError, match="temperature must be in"):
        generate(model, prompt, 5, torch.Generator(), temperature=0.0)
    with pytest.raises(ValueError, match="top_k must be None or an int >= 1"):
        generate(model, prompt, 5, torch.Generator(), top_k=0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        generate(model, prompt, 5, 0)
    with pytest.raises(ValueError, match="the prompt needs at least one token"):
        generate(model, torch.tensor([], dtype=torch.int64), 5, torch.Generator())
    with pytest.raises(TypeError, match="prompt must have an integer dtype"):
        generate(model, torch.tensor([1.0]), 5, torch.Generator())
    with pytest.raises(ValueError, match="length must be in"):
        generate(model, prompt, -1, torch.Generator())
    with pytest.raises(ValueError, match="cell must be 'lstm' or 'gru'"):
        CharLM(5, 2, 3, cell="rnn")
    with pytest.raises(TypeError, match="x must have an integer dtype"):
        model(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="length must be in"):
        adding_batch(4, 1)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        adding_batch(4.0, 10)
    with pytest.raises(ValueError, match="steps must be in"):
        AddingBatches(0, 4, 10, torch.Generator())
