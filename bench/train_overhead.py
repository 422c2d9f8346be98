"""How much does ``d2l_utils.fit`` cost over a bare PyTorch loop?

Trains the same small MLP (784-256-10, ReLU, SGD, batch 128) on 12,000 MNIST images, in two
pairings, alternating the runs to spread machine noise evenly:

* ``fit(metrics={})`` against the bare loop ``forward, loss, zero_grad, backward, step``;
* ``fit()`` (which also tracks accuracy) against a bare loop that tracks loss and accuracy
  the way most hand-written loops do.

Run: ``python bench/train_overhead.py`` (about a minute on 2 cores). The ratio is a
measurement, not a test: it depends on the machine, so no test asserts it.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from d2l_utils import ArrayLoader, fit, load_mnist, set_seed


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def bare_loop(model, loader, epochs, track_metrics):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.functional.cross_entropy
    for _ in range(epochs):
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in loader:
            output = model(x)
            loss = loss_fn(output, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if track_metrics:
                total_loss += loss.item() * len(y)
                correct += (output.argmax(1) == y).sum().item()
                seen += len(y)


def ours(model, loader, epochs, track_metrics):
    fit(model, loader, epochs=epochs, lr=0.1, device="cpu", progress=False,
        metrics=None if track_metrics else {})


def timed(run, loader, epochs, track_metrics) -> float:
    set_seed(0)
    model = make_model()
    start = time.perf_counter()
    run(model, loader, epochs, track_metrics)
    return time.perf_counter() - start


def main(repeats: int = 5, epochs: int = 2) -> None:
    data = load_mnist("train", n=12_000, flatten=True)
    loader = ArrayLoader(data.images, data.labels, batch_size=128, shuffle=True)
    timed(bare_loop, loader, 1, False)  # warm-up
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {repeats} repeats")
    for track in (False, True):
        bare, mine = [], []
        for _ in range(repeats):
            bare.append(timed(bare_loop, loader, epochs, track))
            mine.append(timed(ours, loader, epochs, track))
        ratio = statistics.median(mine) / statistics.median(bare)
        label = "with loss+accuracy tracking" if track else "update only"
        bare_s, mine_s = statistics.median(bare), statistics.median(mine)
        print(f"{label:28s} bare {bare_s:.3f} s, fit {mine_s:.3f} s, "
              f"ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
