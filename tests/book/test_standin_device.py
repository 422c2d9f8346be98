"""The stand-in accelerator (``d2l_utils._book.standin_device``): it catches, on a CPU-only
machine, what would fail on CUDA or MPS, and it lets correct code run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2l_utils import ArrayLoader, fit, set_seed, to_device
from d2l_utils._book import standin_device
from d2l_utils._book.standin_device import StandinDeviceError, StandinTensor
from d2l_utils.perceptron import and_gate, perceptron_train, xor_gate
from d2l_utils.regression import fit_least_squares

# At import, so before any test of this process runs a backward pass: autograd sets up its
# devices once, at the first one.
STANDIN = standin_device.install()


def on_device(*shape: int) -> torch.Tensor:
    return torch.arange(float(np.prod(shape))).reshape(shape).to(STANDIN)


def test_device_tensors_report_the_device_and_compute_on_the_cpu():
    x = on_device(2, 3)
    assert isinstance(x, StandinTensor) and x.device == torch.device("standin", 0)
    y = (x * 2 + torch.ones(3, device=STANDIN)).sum(dim=0)  # a factory and ops on the device
    assert y.device == x.device and type(y.cpu()) is torch.Tensor
    torch.testing.assert_close(y.cpu(), torch.tensor([8.0, 12.0, 16.0]))
    for made in (torch.zeros(2, device=x.device), torch.tensor([1.0], device=STANDIN),
                 torch.arange(3, device=STANDIN), torch.randn(2, device=STANDIN), x.new_ones(2)):
        assert made.device.type == "standin"
    batch = to_device({"x": torch.ones(2), "pair": (torch.zeros(1), 3)}, STANDIN)
    assert batch["x"].device.type == batch["pair"][0].device.type == "standin"
    assert "device='standin:0'" in repr(x) and f"{x.sum():.1f}" == "15.0"
    assert x.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and x.sum().item() == 15.0


@pytest.mark.parametrize("make", [
    lambda: on_device(3).double(),
    lambda: on_device(3).to(STANDIN, torch.float64),
    lambda: torch.ones(3, dtype=torch.float64).to(STANDIN),
    lambda: torch.zeros(3, dtype=torch.float64, device=STANDIN),
    lambda: on_device(3).sum(dtype=torch.float64),  # a float64 accumulator
], ids=["double", "to-dtype", "cpu-float64-to", "factory", "accumulator"])
def test_float64_on_the_device_is_caught(make):
    with pytest.raises(StandinDeviceError, match="float64 tensor on the device"):
        make()


@pytest.mark.parametrize("mix", [
    lambda x: x + torch.ones(3),
    lambda x: x @ torch.ones(3, 2),
    lambda x: torch.cat([x, torch.zeros(1, 3)]),
    lambda x: torch.where(x > 2, x, torch.zeros(2, 3)),
    lambda x: torch.ones(2, 3).add_(x),
], ids=["add", "matmul", "cat", "where", "cpu-inplace"])
def test_cpu_and_device_tensors_in_one_operation_are_caught(mix):
    with pytest.raises(StandinDeviceError, match="mixes device tensors with a cpu float32 tensor"):
        mix(on_device(2, 3))


def test_what_cuda_allows_across_devices_is_allowed():
    x = on_device(2, 3)
    assert (x * torch.tensor(2.0)).device.type == "standin"  # a 0-d CPU tensor is a scalar
    assert x[torch.tensor([1, 0])].device.type == "standin"  # CPU indices
    x[torch.tensor([0])] = torch.tensor(7.0)
    assert x.cpu()[0].tolist() == [7.0, 7.0, 7.0]
    cpu = torch.empty(2, 3, dtype=torch.float64).copy_(x)  # copies cross devices (and dtypes)
    assert type(cpu) is torch.Tensor and cpu[1, 2].item() == 5.0


@pytest.mark.parametrize("draw", [
    lambda g: torch.rand(3, generator=g, device=STANDIN),
    lambda g: torch.empty(3, device=STANDIN).normal_(generator=g),
    lambda g: torch.randperm(5, generator=g, device=STANDIN),
    lambda g: nn.init.uniform_(nn.Linear(2, 2).to(STANDIN).weight, generator=g),
], ids=["rand", "normal_", "randperm", "nn.init"])
def test_a_cpu_generator_in_a_device_draw_is_caught(draw):
    with pytest.raises(StandinDeviceError, match="cpu torch.Generator"):
        draw(torch.Generator().manual_seed(0))


def test_drawing_on_the_cpu_then_moving_is_fine():
    drawn = torch.rand(3, generator=torch.Generator().manual_seed(0))
    moved = torch.rand(3, generator=torch.Generator().manual_seed(0)).to(STANDIN)
    torch.testing.assert_close(moved.cpu(), drawn)


def test_numpy_of_a_device_tensor_is_caught():
    x = on_device(2, 2)
    with pytest.raises(StandinDeviceError, match="use .cpu"):
        x.numpy()
    with pytest.raises(StandinDeviceError, match="numpy"):
        np.asarray(x)  # what matplotlib does with a tensor
    assert x.cpu().numpy().sum() == 6.0 and x.numpy(force=True).shape == (2, 2)


def test_the_device_has_its_own_seeded_random_stream():
    set_seed(0)
    first = torch.rand(5, device=STANDIN)
    dropped = F.dropout(torch.ones(100, device=STANDIN), 0.5)
    set_seed(0)
    torch.testing.assert_close(torch.rand(5, device=STANDIN).cpu(), first.cpu())
    torch.testing.assert_close(F.dropout(torch.ones(100, device=STANDIN), 0.5).cpu(), dropped.cpu())
    set_seed(0)
    assert not torch.equal(torch.rand(5), first.cpu())  # not the CPU's stream: like a GPU


def test_moving_a_module_keeps_its_parameters_for_an_optimizer_made_before():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    weight = model[0].weight
    model.to(STANDIN)
    assert model[0].weight is weight and weight.device.type == "standin"
    assert isinstance(weight, nn.Parameter) and model[1].running_mean.device.type == "standin"
    before = weight.detach().cpu()
    labels = torch.tensor([0, 1, 0, 1, 1], device=STANDIN)
    F.cross_entropy(model(on_device(5, 3)), labels).backward()
    optimizer.step()
    assert weight.grad.device.type == "standin" and not torch.equal(weight.detach().cpu(), before)


def test_fit_trains_a_small_model_on_the_standin():
    """fit keeps its totals in float32 on the device (float64 there would be caught)."""
    set_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    history = fit(model, ArrayLoader(x, y, batch_size=32, shuffle=True), epochs=10, device=STANDIN,
                  val_batches=ArrayLoader(x, y, batch_size=128), progress=False)
    assert next(model.parameters()).device.type == "standin"
    assert history.last["val_accuracy"] > 0.85  # measured: 0.96 (0.93 to 0.99 over 6 seeds)


@pytest.mark.parametrize("layer", [nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell])
def test_recurrent_layers_run_on_the_standin_as_on_the_cpu(layer):
    # On an accelerator PyTorch steps them through fused cell kernels that the CPU lacks.
    torch.manual_seed(0)
    cpu = layer(5, 7)
    device = layer(5, 7)
    device.load_state_dict(cpu.state_dict())
    device.to(STANDIN)
    x = torch.randn(4, 3, 5) if layer in (nn.LSTM, nn.GRU) else torch.randn(3, 5)
    x_cpu, x_device = x.clone().requires_grad_(), x.to(STANDIN).requires_grad_()
    outputs = []
    for model, inputs in [(cpu, x_cpu), (device, x_device)]:
        out = torch.cat([t.flatten() for t in torch.utils._pytree.tree_leaves(model(inputs))])
        (out.sum() + (out**2).sum()).backward()
        outputs.append(out)
    assert outputs[1].device.type == "standin"
    torch.testing.assert_close(outputs[1].cpu(), outputs[0])
    torch.testing.assert_close(x_device.grad.cpu(), x_cpu.grad)
    for mine, reference in zip(device.parameters(), cpu.parameters(), strict=True):
        torch.testing.assert_close(mine.grad.cpu(), reference.grad, rtol=1e-5, atol=1e-5)


def test_book_modules_run_on_the_standin():
    """Modules fixed for devices: the checker would catch each of these bugs again."""
    pairs = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert and_gate(pairs.to(STANDIN)).cpu().tolist() == [0.0, 0.0, 0.0, 1.0]
    assert xor_gate(pairs.to(STANDIN)).cpu().tolist() == [0.0, 1.0, 1.0, 0.0]
    labels = torch.tensor([-1.0, -1.0, -1.0, 1.0])
    inputs = torch.cat([pairs, torch.ones(4, 1)], dim=1)
    result = perceptron_train(inputs.to(STANDIN), labels.to(STANDIN), weights=torch.zeros(3))
    assert bool(result.converged) and result.weights.device.type == "standin"
    X = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + 3.0
    w, b = fit_least_squares(X.to(STANDIN), y.to(STANDIN))  # float64 on the CPU, not the device
    assert w.device.type == "standin" and w.dtype == torch.float32
    torch.testing.assert_close(w.cpu(), torch.tensor([1.0, -2.0, 0.5]), rtol=0, atol=1e-4)
    torch.testing.assert_close(b.cpu(), torch.tensor(3.0), rtol=0, atol=1e-4)


def test_installing_after_a_backward_pass_explains_itself(tmp_path):
    """In a fresh process: autograd fixes its devices at the first backward pass."""
    import subprocess
    import sys

    code = ("import torch\n(torch.ones(1, requires_grad=True) * 2).sum().backward()\n"
            "from d2l_utils._book.standin_device import install\ninstall()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode != 0 and "D2L_DEVICE=standin before importing" in result.stderr


def test_the_chapter_runner_names_the_failing_cell(tmp_path):
    cells = [("markdown", "# A chapter"),
             ("code", "import torch\nfrom d2l_utils import get_device\ndevice = get_device()"),
             ("code", "x = torch.ones(3, device=device)\nprint(device, x.sum().item())"),
             ("code", "x.numpy()")]
    notebook = {"cells": [{"cell_type": kind, "id": f"cell{i}", "metadata": {}, "source": text,
                           **({"outputs": [], "execution_count": None} if kind == "code" else {})}
                          for i, (kind, text) in enumerate(cells)],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "chapter.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    seconds, report = standin_device.run_notebook(path, timeout=120)
    assert report is not None and report.startswith("cell 3:") and "StandinDeviceError" in report
    assert seconds > 0
    assert standin_device.main([str(path)]) == 1
