"""One small training loop: ``fit`` trains, ``evaluate`` measures, ``History`` remembers.

The loop is the textbook one (forward, loss, backward, step) with three conveniences:
batches are moved to the model's device, a progress bar shows the epochs, and per-epoch
averages are recorded. Losses are summed on the device and read once per epoch, so the
loop adds almost nothing to a bare PyTorch loop (see ``bench/train_overhead.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from d2l_utils.device import get_device, to_device
from d2l_utils.runtime import in_book_build

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions (a 0-d tensor) in a batch; ``fit`` averages it per example.

    Args:
        logits: ``(B, C)`` class scores.
        labels: ``(B,)`` integer class indices.
    """
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ValueError(f"accuracy expects logits (B, C) and labels (B,), got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    return (logits.argmax(dim=1) == labels).sum()


@dataclass
class History:
    """Per-epoch records of a training run.

    ``history["train_loss"]`` is the list of per-epoch training losses; every metric
    appears as ``train_<name>`` and, with validation data, ``val_<name>`` and ``val_loss``.
    """

    records: list[dict[str, float]] = field(default_factory=list)

    def append(self, record: dict[str, float]) -> None:
        self.records.append(record)

    def __getitem__(self, key: str) -> list[float]:
        if self.records and key not in self.records[0]:
            raise KeyError(f"{key!r} was not recorded; recorded: {sorted(self.records[0])}")
        return [record[key] for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict[str, float]:
        """The final epoch's record."""
        return self.records[-1]


def evaluate(model: nn.Module, batches: Iterable, loss_fn: LossFn = nn.functional.cross_entropy,
             metrics: Mapping[str, Metric] | None = None, device: torch.device | None = None
             ) -> dict[str, float]:
    """Average loss and metrics of ``model`` over ``batches`` of ``(x, y)``, without gradients.

    Returns:
        ``{"loss": ..., <metric>: ...}``, each averaged per example.
    """
    metrics = {"accuracy": accuracy} if metrics is None else metrics
    device = device or _model_device(model)
    was_training = model.training
    model.eval()
    totals = _Totals(metrics, device)
    with torch.no_grad():
        for x, y in batches:
            x, y = to_device(x, device), to_device(y, device)
            output = model(x)
            totals.add(loss_fn(output, y), output, y)
    model.train(was_training)
    return totals.averages()


def fit(model: nn.Module, train_batches: Iterable, *, epochs: int,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 0.1,
        loss_fn: LossFn = nn.functional.cross_entropy,
        metrics: Mapping[str, Metric] | None = None, val_batches: Iterable | None = None,
        device: torch.device | str | None = None, progress: bool | None = None,
        live_plot: bool = False, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        ) -> History:
    """Train ``model`` for ``epochs`` passes over ``train_batches`` and return its ``History``.

    Args:
        model: the network; it is moved to ``device``.
        train_batches: an iterable of ``(x, y)`` batches that can be iterated once per epoch
            (an ``ArrayLoader`` or a ``DataLoader``).
        epochs: number of passes, at least 1.
        optimizer: defaults to plain SGD with learning rate ``lr``.
        loss_fn: ``loss_fn(output, y)`` returning the batch's *mean* loss.
        metrics: name -> function returning the batch's *sum* (see ``accuracy``);
            defaults to accuracy. Pass ``{}`` for none (regression).
        val_batches: evaluated after every epoch when given.
        device: defaults to ``get_device()``.
        progress: show a progress bar; ``None`` means yes, except during the website build.
        live_plot: redraw a loss plot after each epoch (never during the website build).
        scheduler: stepped once per epoch.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    device = get_device() if device is None else torch.device(device)
    model.to(device)
    metrics = {"accuracy": accuracy} if metrics is None else metrics
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    show = (not in_book_build()) if progress is None else progress
    plot = _LivePlot() if live_plot and not in_book_build() else None
    history = History()
    bar = tqdm(range(epochs), desc="epochs", disable=not show, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        totals = _Totals(metrics, device)
        for x, y in train_batches:
            x, y = to_device(x, device), to_device(y, device)
            output = model(x)
            loss = loss_fn(output, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals.add(loss.detach(), output.detach(), y)
        if scheduler is not None:
            scheduler.step()
        record = {"epoch": float(epoch + 1)}
        record.update({f"train_{k}": v for k, v in totals.averages().items()})
        if val_batches is not None:
            record.update({f"val_{k}": v for k, v in
                           evaluate(model, val_batches, loss_fn, metrics, device).items()})
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}")
        if plot is not None:
            plot.update(history)
    return history


class _Totals:
    """Running sums kept on the device; read once, at the end of an epoch."""

    def __init__(self, metrics: Mapping[str, Metric], device: torch.device) -> None:
        self.metrics = metrics
        # float64 accumulators: a long epoch of float32 sums would lose digits.
        self.sums = [torch.zeros((), device=device, dtype=torch.float64)
                     for _ in range(1 + len(metrics))]
        self.count = 0

    def add(self, mean_loss: torch.Tensor, output: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        self.sums[0] += mean_loss * n
        for total, metric in zip(self.sums[1:], self.metrics.values(), strict=True):
            total += metric(output, y)
        self.count += n

    def averages(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no batches: the data iterable was empty")
        values = torch.stack(self.sums).div(self.count).tolist()  # one device sync per epoch
        return dict(zip(["loss", *self.metrics], values, strict=True))


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class _LivePlot:
    """Redraws the loss curves in place in a notebook."""

    def __init__(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.figure, self.axes = plt.subplots(figsize=(5, 3))
        plt.close(self.figure)
        self.handle = display(self.figure, display_id=True)

    def update(self, history: History) -> None:
        self.axes.clear()
        epochs = history["epoch"]
        for key in ("train_loss", "val_loss"):
            if key in history.records[0]:
                self.axes.plot(epochs, history[key], marker="o", label=key.replace("_", " "))
        self.axes.set(xlabel="epoch", ylabel="loss", title="Training progress")
        self.axes.legend()
        if self.handle is not None:
            self.handle.update(self.figure)
