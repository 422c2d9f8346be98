"""Device choice and moving nested batches."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch

from d2l_utils.device import available_devices, get_device, to_device


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
