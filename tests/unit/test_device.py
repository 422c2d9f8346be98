"""Device choice and moving nested batches."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch

from d2l_utils._book import standin_device
from d2l_utils.device import available_devices, get_device, synchronize, to_device

# D2L_DEVICE=standin installs the stand-in accelerator, which must happen before the process's
# first backward pass (autograd sets up its devices once): so at import, here.
standin_device.install()


def test_default_device_is_the_fastest_available(monkeypatch):
    monkeypatch.delenv("D2L_DEVICE", raising=False)
    assert get_device().type == available_devices()[0]
    assert available_devices()[-1] == "cpu"


def test_environment_override(monkeypatch):
    monkeypatch.setenv("D2L_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")


def test_unknown_or_unavailable_device_is_a_value_error(monkeypatch):
    monkeypatch.setenv("D2L_DEVICE", "tpu-of-dreams")
    with pytest.raises(ValueError, match="not a device PyTorch knows"):
        get_device()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            get_device("cuda:0")


def test_to_device_moves_nested_structures():
    Batch = namedtuple("Batch", "x y")
    data = {"pair": (torch.ones(2), [torch.zeros(1), "label", 3]), "nt": Batch(torch.ones(1), 7)}
    moved = to_device(data, "cpu")
    assert isinstance(moved["pair"], tuple) and isinstance(moved["pair"][1], list)
    assert moved["pair"][1][1:] == ["label", 3]
    assert isinstance(moved["nt"], Batch) and moved["nt"].y == 7
    assert moved["pair"][0].device.type == "cpu"
    module = to_device(torch.nn.Linear(2, 2), "cpu")
    assert next(module.parameters()).device.type == "cpu"


def test_standin_is_chosen_by_name_or_environment(monkeypatch):
    assert get_device("standin") == torch.device("standin")
    assert get_device("standin:0").type == "standin"
    monkeypatch.setenv("D2L_DEVICE", "standin")
    assert get_device() == torch.device("standin")
    assert torch.ones(2, device=get_device()).device == torch.device("standin", 0)


def test_synchronize_waits_for_cuda_and_mps_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: calls.append(("cuda", device)))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append(("mps", None)))
    synchronize("cpu")
    synchronize(torch.device("standin"))
    assert calls == []  # nothing to wait for: these compute synchronously
    synchronize("cuda:1")
    synchronize(torch.device("mps"))
    assert calls == [("cuda", torch.device("cuda", 1)), ("mps", None)]
    with pytest.raises(RuntimeError):
        synchronize("not-a-device")
