"""d2l_utils.applications (chapter 17): cosine similarity against F.cosine_similarity, precision
at k and average precision against per-query definitions (ties included), PCA against the SVD
identity and torch.pca_lowrank, the canvases' labels, the IoU against per-class masks, and the
error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.applications import (
    BACKGROUND,
    average_precision,
    confusion_matrix,
    cosine_similarity,
    intersection_over_union,
    make_canvases,
    pca,
    precision_at_k,
)


def definitions(scores: list[float], relevant: list[bool], k: int) -> tuple[float, float]:
    """(P@k, AP) of one query by walking down its ranking; ties: the earlier item first."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if relevant[i]:
            hits += 1
            total += hits / rank
    return sum(relevant[i] for i in order[:k]) / k, total / hits


def test_cosine_similarity_matches_pytorch():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    database = torch.randn(11, 5, generator=generator, dtype=torch.float64)
    expected = F.cosine_similarity(queries[:, None], database[None], dim=-1)   # (7, 11)
    torch.testing.assert_close(cosine_similarity(queries, database), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 30), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_ranking_metrics_match_the_definitions_with_ties(queries, items, levels, seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (queries, items), generator=generator).double()  # ties
    relevant = torch.rand(queries, items, generator=generator) < 0.4
    relevant[torch.arange(queries), torch.randint(items, (queries,), generator=generator)] = True
    k = int(torch.randint(1, items + 1, (), generator=generator))
    expected = torch.tensor([definitions(s.tolist(), r.tolist(), k)
                             for s, r in zip(scores, relevant)], dtype=torch.float64)
    torch.testing.assert_close(precision_at_k(scores, relevant, k), expected[:, 0])
    torch.testing.assert_close(average_precision(scores, relevant), expected[:, 1])


def test_known_values_and_the_tie_rule():
    scores = torch.tensor([[0.9, 0.8, 0.7], [0.5, 0.5, 0.5]])
    relevant = torch.tensor([[True, False, True], [False, False, True]])
    # ranks 1 and 3: (1/1 + 2/3) / 2; all tied: database order, relevant at rank 3
    torch.testing.assert_close(average_precision(scores, relevant), torch.tensor([5 / 6, 1 / 3]))
    torch.testing.assert_close(precision_at_k(scores, relevant, 1), torch.tensor([1.0, 0.0]))
    perfect = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert average_precision(perfect, torch.tensor([[True, True, False, False]])).item() == 1.0


@settings(max_examples=20, deadline=None)
@given(st.integers(5, 40), st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_pca_is_the_eigenbasis_of_the_covariance(n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.1, d, dtype=torch.float64)          # distinct variances
    x = torch.randn(n, d, generator=generator, dtype=torch.float64) * scales + 1.5
    k = min(n - 1, d)
    mean, components = pca(x, k)
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(components @ components.T, torch.eye(k, dtype=torch.float64))
    covariance = torch.cov(x.T)
    eigenvalues = torch.linalg.eigvalsh(covariance).flip(0)[:k]
    torch.testing.assert_close(covariance @ components.T, components.T * eigenvalues,
                               rtol=1e-8, atol=1e-9)
    largest = components.gather(1, components.abs().argmax(1, keepdim=True))
    assert (largest > 0).all()                                          # the sign convention


def test_pca_spans_the_subspace_of_pca_lowrank():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(200, 30, generator=generator, dtype=torch.float64)
    x = x * torch.linspace(5.0, 0.2, 30, dtype=torch.float64)
    _, components = pca(x, 4)
    torch.manual_seed(0)
    _, _, v = torch.pca_lowrank(x, q=20, niter=10)
    v = v[:, :4]
    torch.testing.assert_close(components.T @ components, v @ v.T, rtol=0, atol=1e-8)


def test_canvases_label_the_ink_of_their_digits():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(20, 1, 6, 6, generator=generator)
    labels = torch.randint(0, 10, (20,), generator=generator)
    canvases, targets = make_canvases(images, labels, 50, size=16, max_digits=2,
                                      generator=generator)
    assert canvases.shape == (50, 1, 16, 16) and targets.shape == (50, 16, 16)
    assert (canvases[:, 0][targets != BACKGROUND] > 0.5).all()
    assert ((targets != BACKGROUND).flatten(1).any(1) | (canvases.flatten(1) <= 0.5).all(1)).all()
    assert set(targets.unique().tolist()) <= set(labels.tolist()) | {BACKGROUND}
    again = make_canvases(images, labels, 50, size=16, max_digits=2,
                          generator=torch.Generator().manual_seed(0))
    first = make_canvases(images, labels, 50, size=16, max_digits=2,
                          generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_one_digit_lands_where_it_was_drawn():
    digit = torch.zeros(1, 1, 4, 4)
    digit[0, 0, 1:3, 1:3] = 1.0
    canvas, target = make_canvases(digit, torch.tensor([7]), 3, size=4, max_digits=1)
    torch.testing.assert_close(canvas[:, 0], digit[0].expand(3, 4, 4))    # only one place fits
    assert (target[:, 1:3, 1:3] == 7).all() and (target == 7).sum() == 12


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(1, 50), st.integers(0, 2**31 - 1))
def test_iou_matches_per_class_masks(classes, size, seed):
    generator = torch.Generator().manual_seed(seed)
    predictions = torch.randint(0, classes, (size,), generator=generator)
    targets = torch.randint(0, classes, (size,), generator=generator)
    confusion = confusion_matrix(predictions, targets, classes + 1)       # one class absent
    assert confusion.sum() == size and confusion[-1].sum() == confusion[:, -1].sum() == 0
    expected = []
    for c in range(classes + 1):
        union = ((predictions == c) | (targets == c)).sum().item()
        both = ((predictions == c) & (targets == c)).sum().item()
        expected.append(both / union if union else math.nan)
    torch.testing.assert_close(intersection_over_union(predictions, targets, classes + 1).double(),
                               torch.tensor(expected, dtype=torch.float64), equal_nan=True)


def test_perfect_prediction_has_iou_one():
    targets = torch.tensor([[0, 1], [2, 2]])
    torch.testing.assert_close(intersection_over_union(targets, targets, 3), torch.ones(3))


def test_bad_inputs_raise_clear_errors():
    scores, relevant = torch.rand(2, 5), torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(TypeError, match="relevant must have torch.bool"):
        average_precision(scores, relevant.int())
    with pytest.raises(ValueError, match="relevant must have shape"):
        average_precision(scores, relevant[:, :4])
    with pytest.raises(ValueError, match="at least one relevant"):
        average_precision(scores, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="k must be in"):
        precision_at_k(scores, relevant, 6)
    with pytest.raises(TypeError, match="scores must have a floating-point"):
        precision_at_k(scores.long(), relevant, 1)
    with pytest.raises(ValueError, match="database must have shape"):
        cosine_similarity(torch.rand(2, 3), torch.rand(4, 5))
    with pytest.raises(ValueError, match="k must be in"):
        pca(torch.rand(5, 3), 4)
    with pytest.raises(ValueError, match="size must be in"):
        make_canvases(torch.rand(3, 1, 8, 8), torch.arange(3), 2, size=7)
    with pytest.raises(ValueError, match="labels must have shape"):
        make_canvases(torch.rand(3, 1, 8, 8), torch.arange(4), 2, size=16)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="targets must lie in 0..1"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.full((3,), 2), 2)
    with pytest.raises(TypeError, match="predictions must have an integer"):
        intersection_over_union(torch.zeros(3), torch.zeros(3, dtype=torch.long), 2)
