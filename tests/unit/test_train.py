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


def twin_models() -> tuple[nn.Module, nn.Module]:
    """Two copies of one small network: one for fit, one for a bare loop."""
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    bare = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    bare.load_state_dict(ours.state_dict())
    return ours, bare


def test_fit_equals_a_bare_pytorch_loop():
    x, y = toy_data()
    ours, bare = twin_models()
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


@pytest.mark.parametrize("interval", ["epoch", "batch"])
def test_scheduler_steps_per_epoch_or_per_batch_as_a_bare_loop_does(interval):
    x, y = toy_data()
    ours, bare = twin_models()
    steps = 3 * (256 // 32) if interval == "batch" else 3

    def schedule(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.05, total_steps=steps)

    optimizer, scheduler = schedule(ours)
    fit(ours, ArrayLoader(x, y, batch_size=32, shuffle=True, seed=1), epochs=3, device="cpu",
        progress=False, optimizer=optimizer, scheduler=scheduler, scheduler_interval=interval)
    optimizer, scheduler = schedule(bare)
    loader = ArrayLoader(x, y, batch_size=32, shuffle=True, seed=1)
    for _ in range(3):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(bare(xb), yb).backward()
            optimizer.step()
            if interval == "batch":
                scheduler.step()
        if interval == "epoch":
            scheduler.step()
    for a, b in zip(ours.parameters(), bare.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_clip_grad_norm_clips_as_a_bare_loop_does():
    x, y = toy_data()
    ours, bare = twin_models()
    fit(ours, ArrayLoader(x, y, batch_size=32, shuffle=True, seed=1), epochs=2, lr=0.5,
        device="cpu", progress=False, clip_grad_norm=0.05)
    optimizer, norms = torch.optim.SGD(bare.parameters(), lr=0.5), []
    loader = ArrayLoader(x, y, batch_size=32, shuffle=True, seed=1)
    for _ in range(2):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(bare(xb), yb).backward()
            norms.append(nn.utils.clip_grad_norm_(bare.parameters(), 0.05).item())
            optimizer.step()
    assert max(norms) > 0.05  # the clipping did something
    for a, b in zip(ours.parameters(), bare.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_input():
    x, y = toy_data(n=8)
    with pytest.raises(ValueError, match="epochs"):
        fit(nn.Linear(2, 2), ArrayLoader(x, y, batch_size=4), epochs=0)
    with pytest.raises(ValueError, match="empty"):
        fit(nn.Linear(2, 2), [], epochs=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        fit(nn.Linear(2, 2), ArrayLoader(x, y, batch_size=4), epochs=1, clip_grad_norm=0.0)
    with pytest.raises(ValueError, match="scheduler_interval"):
        fit(nn.Linear(2, 2), ArrayLoader(x, y, batch_size=4), epochs=1, scheduler_interval="step")
    with pytest.raises(ValueError, match=r"logits \(B, C\)"):
        accuracy(torch.zeros(3), torch.zeros(3, dtype=torch.long))


# ----- clear errors, from the first batch only -----

def images_and_labels(n=32, classes=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=generator)
    y = torch.arange(n) % classes
    return x, y


def mlp(outputs=10):
    return nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, outputs))


QUIET = dict(epochs=1, device="cpu", progress=False)


def test_images_into_a_linear_layer_say_to_flatten():
    x, y = images_and_labels()
    with pytest.raises(ValueError, match=r"\(B, 784\) but got \(8, 1, 28, 28\).*"
                                         r"load_mnist\(flatten=True\).*nn\.Flatten\(\)") as error:
        fit(mlp(), ArrayLoader(x, y, batch_size=8), **QUIET)
    assert isinstance(error.value.__cause__, RuntimeError)  # PyTorch's own error is chained
    with pytest.raises(ValueError, match=r"layer '0' \(Linear\(in_features=784"):
        evaluate(mlp(), ArrayLoader(x, y, batch_size=8))


def test_a_hidden_layer_of_the_wrong_size_is_named():
    x, y = images_and_labels()
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Linear(15, 10))
    with pytest.raises(ValueError, match=r"layer '2' .* takes inputs of shape \(B, 15\) but got "
                                         r"\(8, 16\) \(from a batch of inputs of shape"):
        fit(model, ArrayLoader(x, y, batch_size=8), **QUIET)


def test_flattened_images_into_a_conv_layer_and_wrong_dtypes():
    x, y = images_and_labels()
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) but got \(8, 784\).*without flatten"):
        fit(conv, ArrayLoader(x.flatten(1), y, batch_size=8), **QUIET)
    with pytest.raises(ValueError, match=r"torch.float32 but its inputs are torch.float64.*"
                                         r"x\.to\(torch\.float32\)"):
        fit(mlp(), ArrayLoader(x.flatten(1).double(), y, batch_size=8), **QUIET)


def test_errors_from_the_model_itself_are_not_rewritten():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, x):
            raise RuntimeError("a bug in the model's own code")

    with pytest.raises(RuntimeError, match="a bug in the model's own code"):
        fit(Broken(), ArrayLoader(*toy_data(n=8), batch_size=4), **QUIET)


def test_inputs_and_labels_of_different_lengths():
    x, y = toy_data(n=8)
    with pytest.raises(ValueError, match="the first batch has 8 inputs but 5 labels"):
        fit(nn.Linear(2, 2), [(x, y[:5])], **QUIET)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_class_labels_must_be_int64_for_cross_entropy(dtype):
    x, y = toy_data(n=8)
    with pytest.raises(TypeError, match=rf"int64 tensor.*{dtype}.*y\.long\(\).*own loss_fn"):
        fit(nn.Linear(2, 2), ArrayLoader(x, y.to(dtype), batch_size=4), **QUIET)
    with pytest.raises(TypeError, match=r"y\.long\(\)"):
        evaluate(nn.Linear(2, 2), ArrayLoader(x, y.to(dtype), batch_size=4),
                 loss_fn=nn.CrossEntropyLoss())


@pytest.mark.parametrize("shift, match", [(0, "label 5 is out of range: the model has 5 outputs"),
                                           (-1, "label -1 is out of range")])
def test_labels_outside_the_models_outputs(shift, match):
    x, y = images_and_labels()
    with pytest.raises(ValueError, match=match + r".*labels 0\.\.[49]"):
        fit(mlp(outputs=5 if shift == 0 else 10), ArrayLoader(x.flatten(1), y + shift,
                                                                 batch_size=32), **QUIET)


def test_labels_equal_to_ignore_index_and_soft_targets_are_accepted():
    x, y = images_and_labels()
    y[::3] = -100  # cross_entropy's ignore_index: skipped, not out of range
    fit(mlp(), ArrayLoader(x.flatten(1), y, batch_size=8), metrics={}, **QUIET)
    soft = nn.functional.one_hot(images_and_labels()[1], 10).float()
    fit(mlp(), ArrayLoader(x.flatten(1), soft, batch_size=8), metrics={}, **QUIET)
    with pytest.raises(ValueError, match=r"one-hot labels pass y\.argmax\(1\)"):
        fit(mlp(), ArrayLoader(x.flatten(1), soft.long(), batch_size=8), **QUIET)


def test_default_accuracy_says_how_to_turn_it_off():
    x, y = images_and_labels()
    soft = nn.functional.one_hot(y, 10).float()
    with pytest.raises(ValueError, match=r"soft or regression targets, turn it off with "
                                         r"metrics=\{\}"):
        fit(mlp(), ArrayLoader(x.flatten(1), soft, batch_size=8), **QUIET)
    regression = ArrayLoader(torch.rand(8, 3), torch.rand(8, 1), batch_size=4)
    with pytest.raises(ValueError, match=r"metrics=\{\}"):
        fit(nn.Linear(3, 1), regression, loss_fn=nn.functional.mse_loss, **QUIET)
    with pytest.raises(ValueError, match=r"integer class labels"):  # (B, 1) outputs, (B,) floats
        accuracy(torch.zeros(4, 1), torch.zeros(4))


def test_a_device_that_is_not_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x, y = toy_data(n=8)
    with pytest.raises(ValueError, match=r"fit\(device='cuda'\): .*not available here"):
        fit(nn.Linear(2, 2), ArrayLoader(x, y, batch_size=4), epochs=1, device="cuda")
    with pytest.raises(ValueError, match=r"evaluate\(device='cuda'\): .*not available here"):
        evaluate(nn.Linear(2, 2), ArrayLoader(x, y, batch_size=4), device="cuda")


def test_evaluate_on_a_device_other_than_the_models():
    x, y = toy_data(n=8)
    elsewhere = nn.Linear(2, 2).to("meta")  # the one other device every machine has
    with pytest.raises(ValueError, match=r"model's parameters are on meta: move the model"):
        evaluate(elsewhere, ArrayLoader(x, y, batch_size=4), device="cpu")


def test_checks_run_on_the_first_batch_of_a_run_only(monkeypatch):
    import d2l_utils.train as train

    calls = []
    checked = train._checked_forward
    monkeypatch.setattr(train, "_checked_forward", lambda *a: calls.append(1) or checked(*a))
    x, y = toy_data()
    fit(nn.Linear(2, 2), ArrayLoader(x, y, batch_size=16), epochs=3, device="cpu",
        val_batches=ArrayLoader(x, y, batch_size=16), progress=False)
    assert len(calls) == 2  # the first training batch, and the first validation batch


# ----- running totals: precise over long epochs, and no float64 on the device -----

def test_a_long_epoch_averages_as_precisely_as_float64():
    """50,000 batches: the recorded average matches the float64 mean of the per-batch losses
    to 1e-7 (it is off by about 6e-9), where a float32 running total is off by 2e-6."""
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(50_000, generator=generator) + 0.5  # float32, one "loss" per batch
    batches = [(value.reshape(1), value.reshape(1)) for value in losses]
    result = evaluate(nn.Identity(), batches, loss_fn=lambda out, y: out.mean(), metrics={})
    exact = losses.double().mean().item()
    assert result["loss"] == pytest.approx(exact, rel=1e-7)
    naive = torch.zeros(())
    for value in losses:  # what a float32 running total on the device would give
        naive += value
    assert abs(naive.item() / len(losses) - exact) > 1e-6 * exact  # the test tells them apart


def test_metrics_may_return_tensors_of_any_dtype_or_python_numbers():
    x = torch.linspace(-1, 1, 600).unsqueeze(1)
    y = 3 * x + 1
    model = nn.Linear(1, 1)
    metrics = {"sq_tensor": lambda out, y: ((out - y) ** 2).sum(),
               "sq_half": lambda out, y: ((out - y) ** 2).sum().half(),
               "sq_number": lambda out, y: ((out - y) ** 2).sum().item(),
               "count": lambda out, y: torch.tensor(len(y))}
    result = evaluate(model, ArrayLoader(x, y, batch_size=2), loss_fn=nn.functional.mse_loss,
                      metrics=metrics)  # 300 batches: more than one block of partial sums
    assert result["sq_tensor"] == pytest.approx(result["loss"], rel=1e-6)
    assert result["sq_number"] == pytest.approx(result["loss"], rel=1e-6)
    assert result["sq_half"] == pytest.approx(result["loss"], rel=1e-2)
    assert result["count"] == 1.0


def test_no_float64_tensor_is_ever_created():
    """Apple's MPS has no float64: with float32 data and model, fit and evaluate must not
    create a single float64 tensor (checked on every torch call, whatever the device)."""
    from torch.overrides import TorchFunctionMode

    float64 = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            for value in result if isinstance(result, tuple | list) else (result,):
                if isinstance(value, torch.Tensor) and value.dtype == torch.float64:
                    float64.append(func)
            return result

    x, y = toy_data()
    model = nn.Linear(2, 2)
    with Watch():
        history = fit(model, ArrayLoader(x, y, batch_size=16), epochs=2, device="cpu",
                      val_batches=ArrayLoader(x, y, batch_size=16), progress=False)
        evaluate(model, ArrayLoader(x, y, batch_size=16))
    assert history.last["train_accuracy"] > 0.5
    assert not float64, f"float64 tensors created by {sorted(set(map(str, float64)))}"


def test_loss_of_trains_what_is_not_a_classifier():
    """An autoencoder: batches of inputs alone, the loss is the reconstruction error."""
    from d2l_utils import ArrayLoader, evaluate, fit

    torch.manual_seed(0)
    x = torch.randn(256, 8) @ torch.randn(8, 8)
    model = nn.Sequential(nn.Linear(8, 3), nn.Linear(3, 8))

    def reconstruction(model, batch):
        (inputs,) = batch
        return nn.functional.mse_loss(model(inputs), inputs)

    before = evaluate(model, ArrayLoader(x, batch_size=64), loss_of=reconstruction)["loss"]
    history = fit(model, ArrayLoader(x, batch_size=64, shuffle=True), epochs=20, device="cpu",
                  optimizer=torch.optim.Adam(model.parameters(), lr=0.01), progress=False,
                  loss_of=reconstruction, val_batches=ArrayLoader(x, batch_size=64))
    assert set(history.last) == {"epoch", "train_loss", "val_loss", "seconds"}
    assert history.last["val_loss"] < 0.5 * before
    manual = reconstruction(model, (x,)).item()
    assert history.last["val_loss"] == pytest.approx(manual, rel=1e-5)


def test_loss_of_records_only_the_loss():
    from d2l_utils import ArrayLoader, fit

    with pytest.raises(ValueError, match="records only the loss"):
        fit(nn.Linear(2, 2), ArrayLoader(torch.zeros(4, 2), batch_size=2), epochs=1,
            loss_of=lambda model, batch: model(batch[0]).sum(), metrics={"a": None})
