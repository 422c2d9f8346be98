"""Chapter 26's tiny GPT against PyTorch's layers, in float64: the block, both attention
paths, the key-value cache, generation, the parameter count, the batches, BERT's masking,
and the bad-input errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2l_utils.gpt import (
    GPT,
    Block,
    CausalSelfAttention,
    RandomWindows,
    forward_flops_per_token,
    generate,
    gpt_parameters,
    mask_tokens,
    next_token_loss,
    tiled_windows,
)
from d2l_utils.transformer import causal_mask

D = torch.float64


@pytest.mark.parametrize("seed", [0, 1])
def test_block_matches_transformer_encoder_layer(seed):
    gen = torch.Generator().manual_seed(seed)
    d, h, B, T = [(16, 4, 3, 7), (12, 3, 2, 9)][seed]
    reference = nn.TransformerEncoderLayer(d, h, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True).double()
    ours = Block(d, h, fused=seed == 0).double()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(B, T, d, dtype=D, generator=gen, requires_grad=True)
    results = []
    for out, model in ((ours(x), ours), (reference(x, src_mask=~causal_mask(T)), reference)):
        results.append([out, *torch.autograd.grad(out.sin().sum(), [x, *model.parameters()])])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_fused_and_from_scratch_attention_agree_with_and_without_cache():
    gen = torch.Generator().manual_seed(2)
    fused = CausalSelfAttention(8, 2, fused=True).double()
    scratch = CausalSelfAttention(8, 2, fused=False).double()
    scratch.load_state_dict(fused.state_dict())
    x = torch.randn(2, 6, 8, dtype=D, generator=gen)
    torch.testing.assert_close(fused(x), scratch(x))
    caches = ({}, {})
    for part in (x[:, :4], x[:, 4:]):                        # a prefix, then two more at once
        torch.testing.assert_close(fused(part, caches[0]), scratch(part, caches[1]))
    torch.testing.assert_close(scratch.last_weights.sum(-1), torch.ones(2, 2, 2, dtype=D))


def test_cached_steps_equal_the_full_forward_and_generation_agrees():
    torch.manual_seed(3)
    model = GPT(11, 12, 16, 4, 2).double().eval()
    idx = torch.randint(11, (3, 12))
    full = model(idx)
    caches = [{} for _ in model.blocks]
    steps = [model(idx[:, :5], caches)] + [model(idx[:, t:t + 1], caches) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    prompt = idx[:, :3]
    assert torch.equal(generate(model, prompt, 9), generate(model, prompt, 9, use_cache=True))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(generate(model, prompt, 9, temperature=1.0, generator=g1),
                       generate(model, prompt, 9, temperature=1.0, generator=g2, use_cache=True))


def test_causality_and_parameter_count():
    torch.manual_seed(4)
    for tie in (True, False):
        model = GPT(13, 10, 24, 3, 3, tie_weights=tie)
        counts = gpt_parameters(13, 10, 24, 3, tie_weights=tie)
        assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    idx = torch.randint(13, (2, 10))
    changed = idx.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 13
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert forward_flops_per_token(model) == 2 * blocks + 2 * 3 * 10 * 24


def test_batches_and_loss():
    ids = torch.arange(100) % 7
    windows = RandomWindows(ids, 4, 9, 3, torch.Generator().manual_seed(0))
    batches = list(windows)
    assert len(batches) == len(windows) == 3
    for x, y in batches:
        assert x.shape == y.shape == (4, 9)
        assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal((x + 1) % 7, y)
    tiles = tiled_windows(ids, 9, 4)
    assert sum(len(x) for x, _ in tiles) == 11
    assert torch.equal(torch.cat([x for x, _ in tiles]).flatten(), ids[:99])
    model = GPT(7, 9, 8, 2, 1)
    loss = next_token_loss(model, batches[0])
    torch.testing.assert_close(loss, F.cross_entropy(model(batches[0][0]).transpose(1, 2),
                                                     batches[0][1]))


def test_mask_tokens_follows_berts_rule():
    ids = torch.randint(5, 100, (400, 250), generator=torch.Generator().manual_seed(0))
    inputs, targets = mask_tokens(ids, 0, 100, torch.Generator().manual_seed(1))
    chosen = targets != -100
    assert torch.equal(targets[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    assert abs(chosen.double().mean().item() - 0.15) < 0.005
    masked, kept = (inputs[chosen] == 0), (inputs[chosen] == ids[chosen])
    assert abs(masked.double().mean().item() - 0.8) < 0.01
    assert abs(kept.double().mean().item() - 0.1 - 0.1 / 100) < 0.01


def test_bad_inputs():
    model = GPT(5, 8, 8, 2, 1)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        model(torch.tensor([[1, 5]]))
    with pytest.raises(ValueError, match="more than the context of 8"):
        model(torch.zeros(1, 9, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer dtype"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="must fit the context of 8"):
        generate(model, torch.zeros(1, 4, dtype=torch.int64), 5, use_cache=True)
    with pytest.raises(TypeError, match="needs a torch.Generator"):
        generate(model, torch.zeros(1, 4, dtype=torch.int64), 2, temperature=1.0)
    with pytest.raises(ValueError, match="too few"):
        RandomWindows(torch.arange(5), 2, 5, 1, torch.Generator())
