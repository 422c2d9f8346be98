"""d2l_utils.attention (chapter 22): the masked softmax, additive attention against the formula
written out one example and one query at a time, dot-product and scaled dot-product attention
against F.scaled_dot_product_attention (float64, random shapes, boolean and additive masks,
gradients), the attending encoder-decoder (shapes, padding invariance, chapter 21's decoders),
and the error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from d2l_utils.attention import (
    AdditiveAttention,
    AttentionSeq2Seq,
    dot_product_attention,
    masked_softmax,
    scaled_dot_product_attention,
)
from d2l_utils.seq2seq import Vocab, beam_search, greedy_decode, reversal_data

TOL = {"rtol": 1e-12, "atol": 1e-12}
f64 = torch.float64


def random_inputs(seed: int, same_size: bool = False) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    B, Tq, Tk, Dq, Dk, Dv = (int(x) for x in torch.randint(1, 7, (6,), generator=g))
    Dk = Dq if same_size else Dk
    q, k, v = (torch.randn(B, T, D, generator=g, dtype=f64)
               for T, D in ((Tq, Dq), (Tk, Dk), (Tk, Dv)))
    lengths = torch.randint(1, Tk + 1, (B,), generator=g)
    return q, k, v, torch.arange(Tk) < lengths[:, None]                  # mask (B, Tk)


@pytest.mark.parametrize("seed", range(4))
def test_masked_softmax_zero_on_masked_and_sums_to_one(seed):
    q, k, _, mask = random_inputs(seed)
    scores = torch.randn(q.shape[0], q.shape[1], k.shape[1], dtype=f64)
    weights = masked_softmax(scores, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[..., 0]), **TOL)
    assert weights.masked_select(~mask[:, None].expand_as(weights)).abs().sum() == 0
    additive = torch.zeros_like(scores).masked_fill(~mask[:, None], -math.inf)
    torch.testing.assert_close(masked_softmax(scores, additive), weights, **TOL)
    torch.testing.assert_close(masked_softmax(scores), torch.softmax(scores, -1), **TOL)


@pytest.mark.parametrize("seed", range(4))
def test_additive_attention_matches_the_formula(seed):
    q, k, v, mask = random_inputs(seed)
    attention = AdditiveAttention(q.shape[-1], k.shape[-1], 5).double()
    context, weights = attention(q, k, v, mask)
    W_q, W_k, w = attention.W_q.weight, attention.W_k.weight, attention.v.weight[0]
    for b in range(q.shape[0]):
        n = int(mask[b].sum())
        for i in range(q.shape[1]):
            score = torch.stack([w @ torch.tanh(W_q @ q[b, i] + W_k @ k[b, j]) for j in range(n)])
            alpha = torch.softmax(score, 0)
            torch.testing.assert_close(weights[b, i, :n], alpha, **TOL)
            torch.testing.assert_close(context[b, i], alpha @ v[b, :n], **TOL)


def test_additive_attention_gradients():
    q, k, v = (torch.randn(2, T, D, dtype=f64) for T, D in ((2, 3), (4, 2), (4, 2)))
    mask = torch.tensor([[True, True, True, False], [True] * 4])
    attention = AdditiveAttention(3, 2, 3).double()
    inputs = [t.requires_grad_() for t in (q, k, v)]
    assert torch.autograd.gradcheck(lambda *x: attention(*x, mask)[0], inputs)


@pytest.mark.parametrize("seed", range(4))
def test_dot_product_attention_matches_pytorch(seed):
    q, k, v, mask = random_inputs(seed, same_size=True)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    additive = torch.randn(q.shape[0], q.shape[1], k.shape[1], dtype=f64)
    for ours_mask, theirs_mask in ((mask, mask[:, None]), (additive, additive), (None, None)):
        for scale in (0.3, None):
            if scale is None:
                ours = scaled_dot_product_attention(q, k, v, ours_mask)[0]
            else:
                ours = dot_product_attention(q, k, v, ours_mask, scale)[0]
            theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=theirs_mask, scale=scale)
            torch.testing.assert_close(ours, theirs, **TOL)
            for a, b in zip(torch.autograd.grad(ours.sum(), (q, k, v)),
                            torch.autograd.grad(theirs.sum(), (q, k, v)), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_attention_seq2seq_ignores_padding_and_works_with_chapter_21_decoders():
    torch.manual_seed(0)
    vocab = Vocab("abcde")
    data = reversal_data(6, 1, 5, vocab, torch.Generator().manual_seed(0))
    model = AttentionSeq2Seq(len(vocab), 6, 8, 4).double().eval()
    logits = model(data.src, data.src_lengths, data.tgt_in)
    assert logits.shape == (6, 6, len(vocab))
    padded = F.pad(data.src, (0, 3), value=Vocab.pad)                    # three more columns
    torch.testing.assert_close(model(padded, data.src_lengths, data.tgt_in), logits, **TOL)
    _, _, weights = model.attend(data.tgt_in, model.encode(data.src, data.src_lengths)[1])
    real = torch.arange(5) < data.src_lengths[:, None]
    assert weights.shape == (6, 6, 5) and weights[~real[:, None].expand_as(weights)].max() == 0
    greedy, greedy_score = greedy_decode(model.float(), data.src, data.src_lengths, 7)
    beam, beam_score = beam_search(model, data.src, data.src_lengths, 1, 7)
    assert torch.equal(greedy, beam)
    torch.testing.assert_close(greedy_score, beam_score)


def test_bad_inputs_raise():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    attention = AdditiveAttention(4, 4, 8)
    with pytest.raises(ValueError, match="keys must have shape .* B = 2"):
        attention(q, k[:1], v)
    with pytest.raises(ValueError, match="values must have shape .* Tk = 5"):
        attention(q, k, v[:, :4])
    with pytest.raises(TypeError, match="queries must have a floating-point dtype"):
        attention(q.long(), k, v)
    with pytest.raises(ValueError, match="queries must have shape"):
        attention(q[0], k, v)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        attention(q, k, v, torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, Tk\) = \(2, 5\)"):
        attention(q, k, v, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="queries and keys must have the same last size"):
        dot_product_attention(q, torch.randn(2, 5, 3), v)
    with pytest.raises(ValueError, match="scale must be in"):
        dot_product_attention(q, k, v, scale=0.0)
    with pytest.raises(TypeError, match="keys must have torch.float32"):
        scaled_dot_product_attention(q, k.double(), v)
    with pytest.raises(ValueError, match="attention_size must be in"):
        AttentionSeq2Seq(10, 4, 8, 0)
