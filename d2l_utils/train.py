"""One small training loop: ``fit`` trains, ``evaluate`` measures, ``History`` remembers.

The loop is the textbook one (forward, loss, backward, step) with four conveniences:
batches are moved to the model's device, a progress bar shows the epochs, per-epoch
averages are recorded, and the first batch of a run is checked against the model and the
loss, so that a wrong shape, dtype, label or device gets an error that says what to change
instead of one from deep inside PyTorch. Losses are summed on the device and read once per
epoch, so the loop adds almost nothing to a bare PyTorch loop (see ``bench/train_overhead.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from d2l_utils.checks import check_number
from d2l_utils.device import get_device, to_device
from d2l_utils.runtime import in_book_build

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossOf = Callable[[nn.Module, Any], torch.Tensor]  # (model, batch) -> the batch's mean loss


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions (a 0-d tensor) in a batch; ``fit`` averages it per example.

    Args:
        logits: ``(B, C)`` class scores.
        labels: ``(B,)`` integer class indices.
    """
    if (logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels)
            or labels.is_floating_point()):
        raise ValueError(
            f"accuracy (the default metric of fit and evaluate) expects logits (B, C) and "
            f"integer class labels (B,), got logits {tuple(logits.shape)} and {labels.dtype} "
            f"labels {tuple(labels.shape)}. For soft or regression targets, turn it off with "
            "metrics={} or pass your own metric, e.g. "
            "metrics={'abs_error': lambda out, y: (out - y).abs().sum()}")
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
             metrics: Mapping[str, Metric] | None = None,
             device: torch.device | str | None = None, loss_of: LossOf | None = None
             ) -> dict[str, float]:
    """Average loss and metrics of ``model`` over ``batches`` of ``(x, y)``, without gradients.

    Args:
        model: the network; it stays where it is.
        batches: an iterable of ``(x, y)`` batches; they are moved to ``device``.
        loss_fn, metrics, loss_of: as in ``fit``.
        device: where to compute; defaults to the model's device, and must be that device
            when given (``evaluate`` does not move the model).

    Returns:
        ``{"loss": ..., <metric>: ...}``, each averaged per example.

    Raises:
        ValueError: ``device`` is not available or is not the model's device, or the first
            batch does not fit the model or the loss (see ``fit``).
        TypeError: the first batch's labels have the wrong dtype for the loss.
    """
    if loss_of is not None and metrics:
        raise ValueError("evaluate(loss_of=...) records only the loss: leave metrics unset or {}")
    metrics = {} if loss_of is not None else {"accuracy": accuracy} if metrics is None else metrics
    model_device = _model_device(model)
    if device is None:
        device = model_device
    else:
        device = _resolve_device(device, "evaluate")
        if _has_tensors(model) and not _same_device(device, model_device):
            raise ValueError(
                f"evaluate(device={str(device)!r}) but the model's parameters are on "
                f"{model_device}: move the model with model.to({str(device)!r}) first, or leave "
                "device unset to compute on the model's device")
    return _evaluate(model, batches, loss_fn, metrics, device, check=True, loss_of=loss_of)


def _evaluate(model: nn.Module, batches: Iterable, loss_fn: LossFn,
              metrics: Mapping[str, Metric], device: torch.device, check: bool,
              loss_of: LossOf | None = None) -> dict[str, float]:
    """``evaluate`` without its argument checks; ``check`` checks the first batch."""
    was_training = model.training
    model.eval()
    totals = _Totals(metrics)
    try:
        with torch.no_grad():
            for batch in batches:
                loss, output, y = _batch_loss(model, to_device(batch, device), loss_fn,
                                              loss_of, check)
                check = False
                totals.add(loss, output, y)
    finally:
        model.train(was_training)
    return totals.averages()


def _batch_loss(model: nn.Module, batch: Any, loss_fn: LossFn, loss_of: LossOf | None,
                check: bool) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    """(mean loss, detached output or None, labels or the batch) of one batch on the device."""
    if loss_of is not None:
        return loss_of(model, batch), None, batch
    x, y = batch
    output = _checked_forward(model, x, y, loss_fn) if check else model(x)
    return loss_fn(output, y), output.detach(), y


def fit(model: nn.Module, train_batches: Iterable, *, epochs: int,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 0.1,
        loss_fn: LossFn = nn.functional.cross_entropy,
        metrics: Mapping[str, Metric] | None = None, val_batches: Iterable | None = None,
        device: torch.device | str | None = None, progress: bool | None = None,
        live_plot: bool = False, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        loss_of: LossOf | None = None, scheduler_interval: str = "epoch",
        clip_grad_norm: float | None = None) -> History:
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
        scheduler: stepped once per epoch, or after every batch with
            ``scheduler_interval="batch"`` (a one-cycle schedule, ``OneCycleLR``).
        loss_of: for training that is not ``loss_fn(model(x), y)`` on ``(x, y)`` batches (an
            autoencoder's reconstruction, a VAE's bound, a language model's shifted targets):
            ``loss_of(model, batch)`` returns the batch's mean loss, ``batch`` being whatever
            ``train_batches`` yields, moved to ``device``. Only the loss is recorded then
            (``metrics`` must be left unset or ``{}``); ``val_batches`` use it too.
        scheduler_interval: ``"epoch"`` or ``"batch"``: when ``scheduler`` steps.
        clip_grad_norm: when given, the gradient of all parameters together is rescaled to
            this norm before each step where it is larger (``nn.utils.clip_grad_norm_``).

    Raises:
        ValueError: ``epochs`` is not a positive int; metrics given with ``loss_of``; a
            ``scheduler_interval`` other than ``"epoch"`` or ``"batch"``; a
            ``clip_grad_norm`` that is not a positive number;
            ``device`` is not available here; the data is empty; or the first batch does not
            fit: inputs the model's first layer cannot take, inputs and labels of different
            lengths, labels outside ``0..C-1`` for a model with ``C`` outputs.
        TypeError: class labels that are not int64 with the cross-entropy loss.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError('scheduler_interval must be "epoch" or "batch", '
                         f"got {scheduler_interval!r}")
    if clip_grad_norm is not None:
        check_number(clip_grad_norm, "clip_grad_norm", low=0, low_open=True)
    device = _resolve_device(device, "fit")
    model.to(device)
    if loss_of is not None and metrics:
        raise ValueError("fit(loss_of=...) records only the loss: leave metrics unset or {}")
    metrics = {} if loss_of is not None else {"accuracy": accuracy} if metrics is None else metrics
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    show = (not in_book_build()) if progress is None else progress
    plot = _LivePlot() if live_plot and not in_book_build() else None
    history = History()
    bar = tqdm(range(epochs), desc="epochs", disable=not show, leave=False)
    check = True  # the run's first batch is checked against the model and the loss
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        totals = _Totals(metrics)
        for batch in train_batches:
            loss, output, y = _batch_loss(model, to_device(batch, device), loss_fn, loss_of,
                                          check)
            check = False
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            if scheduler is not None and scheduler_interval == "batch":
                scheduler.step()
            totals.add(loss.detach(), output, y)
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        record = {"epoch": float(epoch + 1)}
        record.update({f"train_{k}": v for k, v in totals.averages().items()})
        if val_batches is not None:
            averages = _evaluate(model, val_batches, loss_fn, metrics, device,
                                 check=epoch == 0, loss_of=loss_of)
            record.update({f"val_{k}": v for k, v in averages.items()})
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}")
        if plot is not None:
            plot.update(history)
    return history


class _Totals:
    """Per-example sums of the loss and of each metric over an epoch, read once at its end.

    Each batch appends one value per sum (the mean loss times the batch size; each metric's
    sum), kept on the model's device in the dtype it comes in (float32, or int64 counts):
    float64 is never created on the device, because Apple's MPS has none, and nothing is read
    back per batch, because that would make the CPU wait for the GPU. Every ``BLOCK`` batches
    the pending values are summed on the device into one partial sum (a pairwise reduction:
    its error is a few float32 roundings relative to that block alone), and at the end of the
    epoch the partial sums are copied to the CPU (the epoch's only wait for the device) and
    added there with ``math.fsum``, exactly rounded in float64. So the error does not grow
    with the length of the epoch, as a float32 running total's would (one rounding per batch,
    each relative to the whole total). Kahan summation on the device would do as well, but
    costs four more kernels per sum and batch, which the loop cannot afford on the CPU.
    """

    BLOCK = 256

    def __init__(self, metrics: Mapping[str, Metric]) -> None:
        self.metrics = metrics
        self.pending: list[list[torch.Tensor]] = [[] for _ in range(1 + len(metrics))]
        self.partial: list[list[torch.Tensor]] = [[] for _ in range(1 + len(metrics))]
        self.count = 0

    def add(self, mean_loss: torch.Tensor, output: torch.Tensor | None, y: Any) -> None:
        """One batch: its mean loss, and the output and labels its metrics need (``y`` may be
        a whole batch, a tuple of tensors, when there are no metrics)."""
        n = len(y[0]) if isinstance(y, tuple | list) else len(y)
        self.pending[0].append(mean_loss * n)
        for pending, metric in zip(self.pending[1:], self.metrics.values(), strict=True):
            pending.append(metric(output, y))
        self.count += n
        if len(self.pending[0]) == self.BLOCK:
            self._fold()

    def _fold(self) -> None:
        """Replace the pending per-batch values by one partial sum per total (on the device)."""
        for pending, partial in zip(self.pending, self.partial, strict=True):
            if not isinstance(pending[0], torch.Tensor):  # a metric that returns numbers
                partial.append(math.fsum(pending))
            else:
                values = torch.stack(pending)
                if values.dtype in (torch.float16, torch.bfloat16):
                    values = values.float()
                partial.append(values.sum())
            pending.clear()

    def averages(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no batches: the data iterable was empty")
        if self.pending[0]:
            self._fold()
        sums = [math.fsum(torch.stack(partial).tolist() if isinstance(partial[0], torch.Tensor)
                          else partial) for partial in self.partial]
        return dict(zip(["loss", *self.metrics], [s / self.count for s in sums], strict=True))


# ----- checks of the first batch: once per run, so they cost nothing per batch -----

_SHAPED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _checked_forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
                     ) -> torch.Tensor:
    """``model(x)`` for the first batch of a run, with its inputs and labels checked.

    Checks that inputs and labels pair up; if the forward pass then fails inside a linear or
    convolutional layer whose input does not fit it (its shape or its dtype), PyTorch's error
    is re-raised, chained, as a ``ValueError`` that names the layer, the input shape and a
    fix; last, class labels are checked against a cross-entropy loss (``_check_labels``).
    """
    if (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.ndim and y.ndim
            and len(x) != len(y)):
        raise ValueError(f"the first batch has {len(x)} inputs but {len(y)} labels (shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}): each batch must pair every "
                         "input with its label; check how the batches are built")
    running: list[tuple[str, nn.Module, tuple]] = []  # the shaped layer being computed, if any

    def enter(layer: nn.Module, args: tuple) -> None:
        running.append((names[layer], layer, args))

    def leave(layer: nn.Module, args: tuple, output: torch.Tensor) -> None:
        running.pop()

    names = {layer: name for name, layer in model.named_modules()
             if isinstance(layer, _SHAPED_LAYERS)}
    handles = [hook for layer in names for hook in (layer.register_forward_pre_hook(enter),
                                                     layer.register_forward_hook(leave))]
    try:
        output = model(x)
    except RuntimeError as error:
        problem = _layer_input_problem(*running[-1], x) if running else None
        if problem is None:
            raise
        raise ValueError(problem) from error
    finally:
        for handle in handles:
            handle.remove()
    _check_labels(output, y, loss_fn)
    return output


def _layer_input_problem(name: str, layer: nn.Module, args: tuple, x: torch.Tensor
                         ) -> str | None:
    """Why ``layer`` cannot take its input ``args[0]``, with a fix; ``None`` if it can."""
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    got = args[0]
    shape = tuple(got.shape)
    where = f"layer {name!r} ({layer})" if name else f"the model ({layer})"
    where = f"the model failed on the first batch, in {where}"
    if got is not x:
        shape_text = f"{shape} (from a batch of inputs of shape {tuple(x.shape)})"
    else:
        shape_text = f"{shape}, the batch's inputs"
    if isinstance(layer, nn.Linear) and shape[-1:] != (layer.in_features,):
        if got is x and len(shape) > 2 and math.prod(shape[1:]) == layer.in_features:
            fix = ("flatten them: load images with load_mnist(flatten=True) (or "
                   "load_fashion_mnist), put nn.Flatten() first in the model, or call x.flatten(1)")
        else:
            fix = (f"make their last dimension {layer.in_features}, or set the layer's "
                   "in_features to the size of what it receives")
        return (f"{where}: it takes inputs of shape (B, {layer.in_features}) but got "
                f"{shape_text}; {fix}")
    if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        k = len(layer.kernel_size)
        expected = f"(B, {layer.in_channels}, " + ", ".join("HWD"[:k]) + ")"
        if len(shape) not in (k + 1, k + 2):
            fix = ("keep images as (B, 1, 28, 28): load them without flatten=True, or call "
                   "x.view(-1, 1, 28, 28)" if len(shape) == 2 else f"give them {k + 2} dimensions")
            return f"{where}: it takes inputs of shape {expected} but got {shape_text}; {fix}"
        if shape[-k - 1] != layer.in_channels:
            return (f"{where}: it takes inputs with {layer.in_channels} channels, {expected}, "
                    f"but got {shape_text}; set the layer's in_channels to "
                    f"{shape[-k - 1]}, or change the inputs' channel dimension")
    if got.dtype != layer.weight.dtype:
        other = f", or the model with model.to({got.dtype})" if got.is_floating_point() else ""
        return (f"{where}: its weights are {layer.weight.dtype} but its inputs are "
                f"{got.dtype}, shape {shape_text}; convert the inputs with "
                f"x.to({layer.weight.dtype}){other}")
    return None


def _check_labels(output: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> None:
    """For a cross-entropy loss, check the first batch's class labels against the output."""
    if loss_fn is nn.functional.cross_entropy:
        ignore_index = -100  # cross_entropy's default: labels equal to it are skipped
    elif isinstance(loss_fn, nn.CrossEntropyLoss):
        ignore_index = loss_fn.ignore_index
    else:
        return
    if not isinstance(output, torch.Tensor) or not isinstance(y, torch.Tensor):
        return
    if y.is_floating_point() and y.shape == output.shape:
        return  # class probabilities (soft targets), which cross_entropy accepts
    if y.dtype not in (torch.int64, torch.uint8):  # the two that cross_entropy takes
        raise TypeError(
            f"cross-entropy (fit's default loss_fn) takes class labels as an int64 tensor, but "
            f"the first batch's labels are {y.dtype} with shape {tuple(y.shape)}: convert them "
            "with y.long() (e.g. ArrayLoader(x, y.long(), ...)). For regression or other "
            "real-valued targets, pass your own loss_fn (e.g. loss_fn=nn.functional.mse_loss) "
            "and metrics={}")
    classes = output.shape[1] if output.ndim > 1 else output.shape[0]
    expected = output.shape[:1] + output.shape[2:] if output.ndim > 1 else torch.Size()
    if y.shape != expected:
        raise ValueError(
            f"cross-entropy takes labels of shape {tuple(expected)} for outputs of shape "
            f"{tuple(output.shape)}, got {tuple(y.shape)}: for one-hot labels pass "
            "y.argmax(1); for class probabilities, pass floats of the outputs' shape")
    wrong = ((y < 0) | (y >= classes)) & (y != ignore_index)
    if wrong.any():  # one sync, on the first batch only
        raise ValueError(
            f"label {int(y[wrong][0])} is out of range: the model has {classes} outputs, so "
            f"cross-entropy takes class labels 0..{classes - 1} (the first batch's labels run "
            f"from {int(y.min())} to {int(y.max())}); give the model's last layer one output "
            "per class, or renumber the labels from 0")


def _resolve_device(device: torch.device | str | None, caller: str) -> torch.device:
    """The device to use, checked to exist here (``get_device`` reads ``D2L_DEVICE`` for None)."""
    try:
        return get_device(None if device is None else str(device))
    except ValueError as error:
        raise ValueError(f"{caller}(device={None if device is None else str(device)!r}): "
                         f"{error}") from None


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` are one device (``cuda`` matches ``cuda:0``)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _has_tensors(model: nn.Module) -> bool:
    return next(model.parameters(), None) is not None or next(model.buffers(), None) is not None


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


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
