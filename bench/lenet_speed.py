"""d2l's LeNet recipe against this book's modern LeNet recipe, on Fashion-MNIST, side by side.

*Dive into Deep Learning* (d2l 1.0, section 7.6) trains LeNet-5 as LeCun et al. (1998) drew
it, with sigmoid units, average pooling, Xavier-uniform initialisation and plain SGD (learning
rate 0.1, batch 128) for 10 epochs. Chapter 15 of this book modernises the same network step by
step (ReLU, max pooling, batch normalisation, AdamW with a one-cycle schedule):
``d2l_utils.lenet.modern_lenet``. This script trains both, in one process on the same machine
and on the same in-memory data pipeline (so the comparison is of the recipes, not of data
loaders), evaluates each on the 10,000 test images a few times per epoch, and prints for each:

* the final test accuracy and the training seconds (evaluation excluded);
* the training seconds each needed to *first* reach d2l's final accuracy, and their ratio.

Run: ``python bench/lenet_speed.py`` (about three minutes on 2 cores). The ratio is a
measurement, not a test: the raw seconds depend on the machine and its load, the ratio much
less, so no test asserts it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _race import Trace, report
from torch import nn

from d2l_utils import ArrayLoader, evaluate, load_fashion_mnist, set_seed
from d2l_utils.lenet import modern_lenet


def d2l_lenet() -> nn.Sequential:
    """LeNet-5 as d2l 1.0 builds it: sigmoid, average pooling, Xavier-uniform weights."""
    model = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(2, stride=2),
        nn.Flatten(), nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))
    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
    return model


@dataclass
class Recipe:
    """A network and how it is trained."""

    name: str
    make_model: Callable[[], nn.Module]
    epochs: int
    batch_size: int
    make_optimizer: Callable[[nn.Module, int], tuple[torch.optim.Optimizer,
                                                     torch.optim.lr_scheduler.LRScheduler | None]]
    scale_pixels: Callable[[torch.Tensor], torch.Tensor] = lambda images: images


def sgd(model: nn.Module, total_steps: int):
    return torch.optim.SGD(model.parameters(), lr=0.1), None


def adamw_one_cycle(model: nn.Module, total_steps: int):
    """Chapter 15's recipe (see ``modern_lenet``): AdamW, one-cycle to a peak of 0.01."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2,
                                                          total_steps=total_steps)


def paper_scale(images: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> [-0.1, 1.175], as LeCun et al. (1998) and chapter 15."""
    return images * 1.275 - 0.1


RECIPES = [
    Recipe("d2l 1.0 LeNet (sigmoid, avg pool, SGD 0.1)", d2l_lenet, 10, 128, sgd),
    Recipe("modern LeNet (ReLU, max pool, BN, AdamW one-cycle)", modern_lenet, 3, 128,
           adamw_one_cycle, paper_scale),
]


def train_and_trace(recipe: Recipe, train: ArrayLoader, test: ArrayLoader,
                    evaluations_per_epoch: int) -> Trace:
    """Train ``recipe``; return ``(training seconds so far, test accuracy)`` at each check.

    This loop is the benchmark's own, not ``d2l_utils.fit``: it must stop the clock while it
    evaluates in the middle of an epoch.
    """
    set_seed(0)
    model = recipe.make_model()
    optimizer, scheduler = recipe.make_optimizer(model, recipe.epochs * len(train))
    check_every = max(1, len(train) // evaluations_per_epoch)
    trace, seconds, step = [], 0.0, 0
    for _ in range(recipe.epochs):
        start = time.perf_counter()
        for x, y in train:
            model.train()
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            if step % check_every == 0 or step == recipe.epochs * len(train):
                seconds += time.perf_counter() - start
                trace.append((seconds, evaluate(model, test, device="cpu")["accuracy"]))
                start = time.perf_counter()
        seconds += time.perf_counter() - start
    return trace


def main(evaluations_per_epoch: int = 10) -> None:
    train_data, test_data = load_fashion_mnist("train"), load_fashion_mnist("test")
    traces = {}
    for recipe in RECIPES:
        train = ArrayLoader(recipe.scale_pixels(train_data.images), train_data.labels,
                            batch_size=recipe.batch_size, shuffle=True, seed=0)
        test = ArrayLoader(recipe.scale_pixels(test_data.images), test_data.labels,
                           batch_size=1000)
        traces[recipe.name] = train_and_trace(recipe, train, test, evaluations_per_epoch)
    report(traces, "test accuracy", higher_is_better=True)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations-per-epoch", type=int, default=10)
    main(parser.parse_args().evaluations_per_epoch)
