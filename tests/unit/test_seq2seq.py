"""d2l_utils.seq2seq (chapter 21): stacked and bidirectional layers built from one-layer layers
against PyTorch's multi-layer, bidirectional RNN, GRU and LSTM (float64, random shapes,
outputs, final states and gradients), the reversal data, the encoder-decoder, greedy decoding
and beam search (against brute force and against teacher-forced scores), exact match,
accuracy by length, and the error messages."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2l_utils.rnn import RNN
from d2l_utils.seq2seq import (
    Bidirectional,
    ReversalData,
    Seq2Seq,
    Stacked,
    Vocab,
    accuracy_by_length,
    beam_search,
    copy_pytorch_weights,
    exact_match,
    greedy_decode,
    pytorch_names,
    reversal_data,
    stack,
    teacher_forcing_loss,
)

F64 = torch.float64


def _compare(cls: type[nn.RNNBase], make_layer, I: int, H: int, L: int, bidirectional: bool,
             T: int, B: int) -> None:
    reference = cls(I, H, num_layers=L, bidirectional=bidirectional).double()
    ours = stack(make_layer, I, H, L, bidirectional).double()
    copy_pytorch_weights(ours, reference)
    D = 2 if bidirectional else 1
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0 = [torch.randn(L * D, B, H, dtype=F64, requires_grad=True)
          for _ in range(2 if cls is nn.LSTM else 1)]
    state = tuple(h0) if cls is nn.LSTM else h0[0]
    results = []
    for model, params in ((ours, list(pytorch_names(ours).values())),
                          (reference, list(reference.parameters()))):
        output, final = model(x, state)
        finals = list(final) if isinstance(final, tuple) else [final]
        assert output.shape == (T, B, D * H) and finals[0].shape == (L * D, B, H)
        loss = (output.cos() * output).sum() + sum((f ** 3).sum() for f in finals)
        results.append([output, *finals, *torch.autograd.grad(loss, [x, *h0, *params])])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.LSTM])
def test_stack_matches_pytorch(cls):
    torch.manual_seed(0)
    for (I, H, L, T, B), bidirectional in itertools.product(
            [(3, 4, 1, 5, 2), (2, 5, 2, 1, 3), (4, 3, 3, 6, 1)], (False, True)):
        _compare(cls, cls, I, H, L, bidirectional, T, B)


def test_stack_of_chapter_19_layers_matches_nn_rnn():
    torch.manual_seed(1)
    for bidirectional in (False, True):
        _compare(nn.RNN, RNN, 3, 5, 2, bidirectional, 7, 2)


def test_no_state_means_zeros_and_states_keep_their_structure():
    torch.manual_seed(2)
    layer = stack(nn.LSTM, 3, 4, 2, True).double()
    x = torch.randn(5, 2, 3, dtype=F64)
    zeros = (torch.zeros(4, 2, 4, dtype=F64), torch.zeros(4, 2, 4, dtype=F64))
    (a, (h, c)), (b, (h2, c2)) = layer(x), layer(x, zeros)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(h, h2)
    torch.testing.assert_close(c, c2)
    pair = Bidirectional(nn.GRU(3, 4), nn.GRU(3, 4))
    output, final = pair(torch.randn(5, 2, 3))
    assert output.shape == (5, 2, 8) and final.shape == (2, 2, 4)


def test_bidirectional_halves_are_causal_and_anticausal():
    torch.manual_seed(3)
    pair = Bidirectional(nn.GRU(2, 3), nn.GRU(2, 3)).double()
    x = torch.randn(6, 1, 2, dtype=F64)
    jacobian = torch.autograd.functional.jacobian(lambda x: pair(x)[0], x)[:, 0, :, :, 0]
    size = jacobian.abs().sum(-1)                                  # (T, 2H, T)
    t, s = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    assert size[:, :3].sum(1)[s > t].max() == 0 and size[:, 3:].sum(1)[s < t].max() == 0


def test_copy_and_stack_errors():
    ours = stack(nn.LSTM, 3, 4, 2, True)
    with pytest.raises(ValueError, match="the parameters differ"):
        copy_pytorch_weights(ours, nn.LSTM(3, 4, num_layers=1, bidirectional=True))
    with pytest.raises(ValueError, match="the parameters differ"):
        copy_pytorch_weights(ours, nn.LSTM(3, 4, num_layers=2))
    with pytest.raises(TypeError, match="nn.RNN, nn.GRU or nn.LSTM"):
        copy_pytorch_weights(ours, nn.Linear(3, 4))
    with pytest.raises(TypeError, match="must be a Stacked"):
        pytorch_names(nn.LSTM(3, 4))
    with pytest.raises(ValueError, match="num_layers must be in"):
        stack(nn.LSTM, 3, 4, 0)
    with pytest.raises(TypeError, match="bidirectional must be a bool"):
        stack(nn.LSTM, 3, 4, 1, bidirectional=1)
    with pytest.raises(ValueError, match="at least one layer"):
        Stacked([])
    with pytest.raises(ValueError, match="input must have shape"):
        ours(torch.randn(5, 3))
    with pytest.raises(TypeError, match="floating-point"):
        ours(torch.ones(5, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least one time step"):
        ours(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match="R = 4"):
        ours(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)))


def test_vocab():
    vocab = Vocab("abc")
    assert len(vocab) == 6 and vocab.tokens[:3] == ["<pad>", "<bos>", "<eos>"]
    ids = vocab.encode("cab")
    assert ids.tolist() == [5, 3, 4] and ids.dtype == torch.int64
    assert vocab.decode(ids) == "cab"
    assert vocab.decode([1, 5, 3, 2, 4, 0]) == "ca"                    # stops at <eos>
    with pytest.raises(ValueError, match="not in the alphabet"):
        vocab.encode("abd")
    with pytest.raises(ValueError, match="distinct"):
        Vocab("aba")
    with pytest.raises(TypeError, match="alphabet must be a str"):
        Vocab(["a"])


def test_reversal_data():
    vocab = Vocab("abcdefg")
    data = reversal_data(500, 2, 9, vocab, torch.Generator().manual_seed(0))
    again = reversal_data(500, 2, 9, vocab, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(data.tensors(), again.tensors(), strict=True))
    assert isinstance(data, ReversalData) and len(data) == 500
    assert data.src.shape == (500, 9) and data.tgt_in.shape == data.tgt_out.shape == (500, 10)
    assert data.src_lengths.min() == 2 and data.src_lengths.max() == 9
    for i in range(500):
        n = data.src_lengths[i].item()
        text = vocab.decode(data.src[i])
        assert len(text) == n and (data.src[i, n:] == vocab.pad).all()
        assert vocab.decode(data.tgt_out[i]) == text[::-1]
        assert data.tgt_out[i, n] == vocab.eos and (data.tgt_out[i, n + 1:] == vocab.pad).all()
        assert data.tgt_in[i, 0] == vocab.bos
        assert torch.equal(data.tgt_in[i, 1:n + 1], data.tgt_out[i, :n])
    with pytest.raises(ValueError, match="max_length must be in"):
        reversal_data(5, 4, 3, vocab, torch.Generator())
    with pytest.raises(TypeError, match="torch.Generator"):
        reversal_data(5, 1, 3, vocab, 0)
    with pytest.raises(TypeError, match="vocab must be a Vocab"):
        reversal_data(5, 1, 3, "abc", torch.Generator())


def _model_and_data(seed: int = 0) -> tuple[Seq2Seq, ReversalData]:
    torch.manual_seed(seed)
    vocab = Vocab("abcd")
    return (Seq2Seq(len(vocab), 8, 16, num_layers=2),
            reversal_data(40, 1, 6, vocab, torch.Generator().manual_seed(seed)))


def _sequence_log_probs(model: Seq2Seq, data: ReversalData, tokens: torch.Tensor
                        ) -> torch.Tensor:
    """Teacher-forced log-probability of each decoded sequence, <eos> included."""
    tgt_in = torch.cat([torch.full((len(tokens), 1), Vocab.bos), tokens[:, :-1]], dim=1)
    with torch.no_grad():
        log_p = F.log_softmax(model(data.src, data.src_lengths, tgt_in), dim=-1)
    picked = log_p.gather(-1, tokens[..., None])[..., 0]
    return picked.masked_fill(tokens == Vocab.pad, 0.0).sum(1)


def test_encoder_ignores_padding_and_loss_ignores_pads():
    model, data = _model_and_data()
    wide = F.pad(data.src, (0, 5), value=Vocab.pad)
    (outputs, state), (wide_outputs, wide_state) = (model.encode(data.src, data.src_lengths),
                                                    model.encode(wide, data.src_lengths))
    for a, b in zip(state, wide_state, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(outputs, wide_outputs[:, :6])
    assert outputs.shape == (40, 6, 16) and wide_outputs[:, 6:].abs().max() == 0
    for i in range(5):                       # one string alone, unpadded: the same final state
        n = data.src_lengths[i].item()
        _, (h, c) = model.encoder(model.src_embedding(data.src[i:i + 1, :n]))
        torch.testing.assert_close(h, state[0][:, i:i + 1])
        torch.testing.assert_close(c, state[1][:, i:i + 1])
        assert (outputs[i, n:] == 0).all()
    logits = model(data.src, data.src_lengths, data.tgt_in)
    assert logits.shape == (40, 7, len(Vocab("abcd")))
    real = data.tgt_out != Vocab.pad
    expected = F.cross_entropy(logits[real], data.tgt_out[real])
    torch.testing.assert_close(teacher_forcing_loss(model, data.tensors()), expected)


def test_greedy_equals_beam_of_one_and_scores_are_log_probs():
    model, data = _model_and_data(1)
    model.eval()
    greedy, greedy_log_p = greedy_decode(model, data.src, data.src_lengths, 9)
    beam, beam_log_p = beam_search(model, data.src, data.src_lengths, 1, 9)
    assert torch.equal(greedy, beam) and greedy.shape == (40, 9)
    torch.testing.assert_close(greedy_log_p, beam_log_p)
    ended = (greedy == Vocab.eos).any(1)
    torch.testing.assert_close(_sequence_log_probs(model, data, greedy)[ended],
                               greedy_log_p[ended], rtol=1e-4, atol=1e-4)
    wide, wide_log_p = beam_search(model, data.src, data.src_lengths, 5, 9)
    ended = (wide == Vocab.eos).any(1)
    torch.testing.assert_close(_sequence_log_probs(model, data, wide)[ended],
                               wide_log_p[ended], rtol=1e-4, atol=1e-4)


def test_beam_search_is_exact_when_the_beam_holds_everything():
    model, data = _model_and_data(2)
    model.eval()
    V = model.vocab_size
    src, lengths = data.src[:6], data.src_lengths[:6]
    tokens, log_p = beam_search(model, src, lengths, V, 2)       # all V first tokens kept
    with torch.no_grad():
        state = model.encode(src, lengths)[1]
        first, state = model.decode(torch.full((6, 1), Vocab.bos), state)
        first = F.log_softmax(first[:, 0], -1)                                  # (6, V)
        rows = [s.repeat_interleave(V, dim=1) for s in state]
        second, _ = model.decode(torch.arange(V).repeat(6)[:, None], tuple(rows))
        second = F.log_softmax(second[:, 0], -1).view(6, V, V)
    total = first[:, :, None] + second                           # (6, V, V): both tokens
    total[:, Vocab.eos] = -torch.inf
    total[:, Vocab.eos, Vocab.pad] = first[:, Vocab.eos]         # ended after one token
    best = total.flatten(1).max(1)
    torch.testing.assert_close(log_p, best.values)
    assert torch.equal(tokens, torch.stack([best.indices // V, best.indices % V], 1))


def test_exact_match_and_accuracy_by_length():
    targets = torch.tensor([[3, 4, 2, 0], [5, 2, 0, 0]])
    tokens = torch.tensor([[3, 4, 2, 0, 0, 0], [5, 3, 2, 0, 0, 0]])
    assert exact_match(tokens, targets).tolist() == [True, False]
    assert exact_match(tokens[:, :3], targets).tolist() == [True, False]
    model, data = _model_and_data(3)
    accuracy = accuracy_by_length(model, data, batch_size=7)
    tokens, _ = greedy_decode(model, data.src, data.src_lengths, data.tgt_out.shape[1] + 1)
    right = exact_match(tokens, data.tgt_out).float()
    assert sorted(accuracy) == data.src_lengths.unique().tolist()
    for n, value in accuracy.items():
        assert value == pytest.approx(right[data.src_lengths == n].mean().item())
    assert accuracy_by_length(model, data, beam_size=3).keys() == accuracy.keys()


def test_decoding_errors():
    model, data = _model_and_data()
    src, lengths = data.src, data.src_lengths
    with pytest.raises(ValueError, match="beam_size must be in"):
        beam_search(model, src, lengths, 0, 5)
    with pytest.raises(ValueError, match="beam_size must be in"):
        beam_search(model, src, lengths, model.vocab_size + 1, 5)
    with pytest.raises(TypeError, match="beam_size must be an int"):
        beam_search(model, src, lengths, 1.5, 5)
    with pytest.raises(ValueError, match="max_length must be in"):
        greedy_decode(model, src, lengths, 0)
    with pytest.raises(TypeError, match="src must have torch.int64"):
        greedy_decode(model, src.float(), lengths, 5)
    with pytest.raises(ValueError, match="src must have shape"):
        greedy_decode(model, src[0], lengths, 5)
    with pytest.raises(ValueError, match="src_lengths must be in"):
        greedy_decode(model, src, lengths + 10, 5)
    with pytest.raises(ValueError, match="src_lengths must have shape"):
        greedy_decode(model, src, lengths[:3], 5)
    with pytest.raises(ValueError, match="src ids must be in"):
        greedy_decode(model, src + 100, lengths, 5)
    with pytest.raises(ValueError, match="tgt_in must have shape"):
        model(src, lengths, data.tgt_in[:3])
    with pytest.raises(TypeError, match="data must be a ReversalData"):
        accuracy_by_length(model, data.tensors())
    with pytest.raises(ValueError, match="exact_match|tokens must have shape"):
        exact_match(torch.zeros(3, dtype=torch.int64), data.tgt_out)
    with pytest.raises(ValueError, match="vocab_size must be in"):
        Seq2Seq(0, 4, 4)
