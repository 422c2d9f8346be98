"""Chapter 23's transformer parts against PyTorch's, in float64, and their bad-input errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2l_utils.transformer import (
    DecoderBlock,
    EncoderBlock,
    LayerNorm,
    MultiheadAttention,
    PositionalEncoding,
    Transformer,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    sinusoidal_encoding,
    transformer_greedy_decode,
)

D = torch.float64


def test_attention_matches_pytorch_with_masks():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 5, 4, dtype=D, generator=gen, requires_grad=True)
    k = torch.randn(3, 2, 7, 4, dtype=D, generator=gen, requires_grad=True)
    v = torch.randn(3, 2, 7, 6, dtype=D, generator=gen, requires_grad=True)
    mask = padding_mask(torch.tensor([7, 3, 1]), 7)[:, None, None] & causal_mask(7)[:5]
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(torch.autograd.grad(ours.sin().sum(), (q, k, v)),
                    torch.autograd.grad(theirs.sin().sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 5, dtype=D))


@pytest.mark.parametrize("seed", [0, 1])
def test_multihead_matches_pytorch(seed):
    gen = torch.Generator().manual_seed(seed)
    E, h, B, L, S = 12, [1, 2, 3, 4, 6][seed * 2], 3, 4, 6
    reference = nn.MultiheadAttention(E, h, batch_first=True).double()
    ours = MultiheadAttention(E, h).double()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(B, L, E, dtype=D, generator=gen, requires_grad=True)
    m = torch.randn(B, S, E, dtype=D, generator=gen, requires_grad=True)
    keep = padding_mask(torch.tensor([6, 1, 4]), S)
    allowed = torch.rand(L, S, generator=gen) < 0.6
    allowed[:, 0] = True
    results = []
    for model, flip in ((ours, lambda t: t), (reference, lambda t: ~t)):
        out, avg = model(x, m, m, key_padding_mask=flip(keep), attn_mask=flip(allowed))
        grads = torch.autograd.grad(out.pow(2).sum(), [x, m, *model.parameters()])
        results.append([out, avg, *grads])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_sinusoidal_rotation_and_learned():
    table = sinusoidal_encoding(40, 8).double()
    omega = 10000.0 ** (-torch.arange(0, 8, 2, dtype=D) / 8)
    for k in (1, 7):
        s, c = torch.sin(k * omega), torch.cos(k * omega)
        sin_p, cos_p = table[:-k, 0::2], table[:-k, 1::2]
        torch.testing.assert_close(table[k:, 0::2], sin_p * c + cos_p * s, atol=1e-6, rtol=0)
        torch.testing.assert_close(table[k:, 1::2], cos_p * c - sin_p * s, atol=1e-6, rtol=0)
    learned = PositionalEncoding(8, 10, kind="learned")
    assert any(p is learned.table for p in learned.parameters())
    x = torch.zeros(2, 4, 8)
    torch.testing.assert_close(PositionalEncoding(8, 10)(x)[0], sinusoidal_encoding(10, 8)[:4])
    torch.testing.assert_close(PositionalEncoding(8, 10, kind="none")(x), x)


def test_layer_norm_matches_pytorch():
    x = torch.randn(4, 3, 9, dtype=D, requires_grad=True)
    reference, ours = nn.LayerNorm(9).double(), LayerNorm(9).double()
    with torch.no_grad():
        reference.weight.normal_(), reference.bias.normal_()
    ours.load_state_dict(reference.state_dict())
    a, b = ours(x), reference(x)
    torch.testing.assert_close(a, b)
    for ga, gb in zip(torch.autograd.grad(a.pow(3).sum(), [x, *ours.parameters()]),
                      torch.autograd.grad(b.pow(3).sum(), [x, *reference.parameters()]),
                      strict=True):
        torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("norm_first", [False, True])
def test_blocks_match_pytorch(norm_first):
    x = torch.randn(3, 5, 8, dtype=D, requires_grad=True)
    memory = torch.randn(3, 6, 8, dtype=D)
    keep, mkeep = padding_mask(torch.tensor([5, 2, 3]), 5), padding_mask(torch.tensor([6, 1, 2]), 6)
    ref = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                     norm_first=norm_first).double().eval()
    ours = EncoderBlock(8, 2, 16, dropout=0.0, norm_first=norm_first).double().eval()
    ours.load_state_dict(ref.state_dict())
    a, b = ours(x, keep)[keep], ref(x, src_key_padding_mask=~keep)[keep]
    torch.testing.assert_close(a, b)
    for ga, gb in zip(torch.autograd.grad(a.sin().sum(), [x, *ours.parameters()]),
                      torch.autograd.grad(b.sin().sum(), [x, *ref.parameters()]), strict=True):
        torch.testing.assert_close(ga, gb)
    ref_d = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                       norm_first=norm_first).double().eval()
    ours_d = DecoderBlock(8, 2, 16, dropout=0.0, norm_first=norm_first).double().eval()
    ours_d.load_state_dict(ref_d.state_dict())
    torch.testing.assert_close(ours_d(x, memory, mkeep), ref_d(
        x, memory, tgt_mask=~causal_mask(5), memory_key_padding_mask=~mkeep))


def test_transformer_is_causal_and_decodes():
    torch.manual_seed(0)
    model = Transformer(13, 16, 2, 1, 32, max_len=10).eval()
    src, lengths = torch.randint(3, 13, (4, 6)), torch.tensor([6, 2, 4, 1])
    tgt = torch.randint(3, 13, (4, 5))
    changed = tgt.clone()
    changed[:, 3] = (changed[:, 3] - 2) % 10 + 3
    with torch.no_grad():
        torch.testing.assert_close(model(src, lengths, tgt)[:, :3],
                                   model(src, lengths, changed)[:, :3])
    tokens = transformer_greedy_decode(model, src, lengths, 7)
    assert tokens.shape == (4, 7) and tokens.dtype == torch.int64


def test_bad_inputs():
    q = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="key must have shape"):
        scaled_dot_product_attention(q, torch.randn(2, 5, 3), torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="mask must have torch.bool"):
        scaled_dot_product_attention(q, q, q, torch.ones(3, 3))
    with pytest.raises(ValueError, match="mask must have shape"):
        scaled_dot_product_attention(q, q, q, torch.ones(3, 4, dtype=torch.bool))
    mha = MultiheadAttention(4, 2)
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        mha(q, q, q, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask must have torch.bool"):
        mha(q, q, q, attn_mask=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(6, 4)
    with pytest.raises(ValueError, match="longer than max_len"):
        PositionalEncoding(4, 2)(q)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_encoding(5, 3)
    with pytest.raises(ValueError, match="kind must be"):
        PositionalEncoding(4, 5, kind="relative")
