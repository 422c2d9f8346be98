"""The training loop: it is the textbook loop (same parameters as a bare loop), it records
what it promises, and it rejects bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from d2l_utils.datasets import ArrayLoader
from d2l_utils.train import History, accuracy, evaluate, fit


def toy_data(n=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def test_fit_equals_a_bare_pytorch_loop():
    x, y = toy_data()
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    bare = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    bare.load_state_dict(ours.state_dict())
    fit(ours, ArrayLoader(x, y, batch_size=32, shuffle=True, seed=1), epochs=3, lr=0.3,
        device="cpu", progress=False)
    optimizer = torch.optim.SGD(bare.parameters(), lr=0.3)
    loader = ArrayLoader(x, y, batch_size=32, shuffle=True, seed=1)
    for _ in range(3):
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(bare(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for a, b in zip(ours.parameters(), bare.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_history_records_losses_metrics_and_validation():
    x, y = toy_data()
    model = nn.Linear(2, 2)
    history = fit(model, ArrayLoader(x, y, batch_size=64), epochs=5, lr=0.5,
                  val_batches=ArrayLoader(*toy_data(seed=1), batch_size=64), device="cpu",
                  progress=False)
    assert len(history) == 5 and history["epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert set(history.last) == {"epoch", "train_loss", "train_accuracy", "val_loss",
                                 "val_accuracy", "seconds"}
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history.last["val_accuracy"] > 0.9
    with pytest.raises(KeyError, match="recorded"):
        history["val_f1"]


def test_evaluate_averages_per_example_and_restores_mode():
    x, y = toy_data(n=10)
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model.train()
    result = evaluate(model, ArrayLoader(x, y, batch_size=3))
    assert model.training
    with torch.no_grad():
        model.eval()
        logits = model(x)
    expected_loss = nn.functional.cross_entropy(logits, y).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_regression_without_metrics():
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 3 * x + 1
    model = nn.Linear(1, 1)
    history = fit(model, ArrayLoader(x, y, batch_size=16), epochs=60, lr=0.2, metrics={},
                  loss_fn=nn.functional.mse_loss, device="cpu", progress=False)
    assert history.last["train_loss"] < 1e-3
    assert set(History(history.records).last) == {"epoch", "train_loss", "seconds"}


def test_bad_input():
    x, y = toy_data(n=8)
    with pytest.raises(ValueError, match="epochs"):
        fit(nn.Linear(2, 2), ArrayLoader(x, y, batch_size=4), epochs=0)
    with pytest.raises(ValueError, match="empty"):
        fit(nn.Linear(2, 2), [], epochs=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"logits \(B, C\)"):
        accuracy(torch.zeros(3), torch.zeros(3, dtype=torch.long))
