"""Pick the fastest available device, move data and models onto it, and wait for it.

The order is CUDA, then Apple's MPS, then the CPU. The environment variable
``D2L_DEVICE`` (for example ``cpu`` or ``cuda:1``) overrides the choice, so a
reader with a GPU can still time a chapter on the CPU. ``D2L_DEVICE=standin`` selects the
book's CPU stand-in for an accelerator, which fails wherever CUDA or MPS would
(``d2l_utils._book.standin_device``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

DEVICE_ENV_VAR = "D2L_DEVICE"
STANDIN = "standin"  # the checking stand-in for an accelerator, for CI machines without one


def get_device(prefer: str | None = None) -> torch.device:
    """Return the device chapters should compute on.

    Args:
        prefer: a device string that wins over everything else (``"cpu"``, ``"cuda"``...).
            When ``None``, the ``D2L_DEVICE`` environment variable is read, and when
            that is unset too, CUDA, MPS and the CPU are tried in that order.

    Raises:
        ValueError: the requested device is not a valid device string or is not
            available on this machine.
    """
    requested = prefer if prefer is not None else os.environ.get(DEVICE_ENV_VAR, "").strip()
    if requested.split(":")[0] == STANDIN:
        return _standin()
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as error:
            raise ValueError(
                f"{requested!r} is not a device PyTorch knows; expected e.g. 'cpu', 'cuda', "
                f"'cuda:1' or 'mps' (from {'argument prefer' if prefer else DEVICE_ENV_VAR})"
            ) from error
        if not _is_available(device):
            raise ValueError(
                f"device {requested!r} was requested but is not available here; "
                f"unset {DEVICE_ENV_VAR} or choose one of {available_devices()}"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """Names of the device types usable on this machine, fastest first."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def to_device(data: Any, device: torch.device | str) -> Any:
    """Move a tensor, a module, or a (nested) tuple/list/dict of them to ``device``.

    Anything that is not a tensor or module (an int, a string) is returned unchanged,
    so a batch such as ``(images, labels, names)`` can be moved in one call.
    """
    device = torch.device(device)
    if isinstance(data, torch.Tensor | torch.nn.Module):
        return data.to(device)
    if isinstance(data, Mapping):
        return type(data)({key: to_device(value, device) for key, value in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # a namedtuple
        return type(data)(*(to_device(value, device) for value in data))
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return type(data)(to_device(value, device) for value in data)
    return data


def synchronize(device: torch.device | str) -> None:
    """Wait until the work queued on ``device`` has finished; a no-op on the CPU.

    CUDA and MPS run operations asynchronously: a call returns once the work is queued. Call
    this before reading a clock, or the time measured is the launch time, not the work.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _standin() -> torch.device:
    from d2l_utils._book.standin_device import install

    return install()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _is_available(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return _mps_available()
    return device.type == STANDIN  # a torch.device("standin") exists only once installed


# The stand-in must exist before the first backward pass (autograd sets up its devices once).
if os.environ.get(DEVICE_ENV_VAR, "").strip().split(":")[0] == STANDIN:
    _standin()
