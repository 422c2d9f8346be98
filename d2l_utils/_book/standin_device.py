"""A stand-in accelerator on the CPU: catch code that would fail on CUDA or Apple's MPS
without a GPU.

``D2L_DEVICE=standin`` makes ``get_device()`` return ``torch.device("standin")``. Tensors on it
compute on the CPU, but they report ``device='standin:0'`` (so ``torch.zeros(..., device=x.device)``
lands on the device, as it would on a GPU) and every operation on them is checked. Each of
these raises ``StandinDeviceError`` naming the operation:

* a float64 (or complex128) tensor on the device: MPS has no float64;
* a CPU tensor with at least one dimension in an operation on device tensors: CUDA and MPS
  raise "Expected all tensors to be on the same device" (0-d CPU tensors, which they accept
  as scalars, and CPU index tensors in ``x[index]`` are allowed);
* a CPU ``torch.Generator`` in an operation on the device (CUDA and MPS raise "Expected a
  'cuda' device type for generator"): draw on the CPU, then move;
* ``.numpy()`` (so also ``np.asarray``, and plotting) of a device tensor: call ``.cpu()``.

Random operations on the device draw from the stand-in's own generator, seeded by
``torch.manual_seed`` (so by ``set_seed``), as a GPU draws from its own: a claim that holds
only for the CPU's random stream fails here too.

How it works: PyTorch's spare backend slot, PrivateUse1, is renamed ``standin`` and given a
Python device guard, so ``torch.device("standin")`` is a real device type. A tensor on it is a
``StandinTensor``, a wrapper subclass that holds its values in a CPU tensor; every operation
on it reaches ``__torch_dispatch__``, which checks it, runs it on the CPU values and wraps
the results. Factory functions (``torch.zeros(..., device="standin")``) reach the backend
slot itself, where a fallback kernel does the same. CPU tensors are untouched: installing
the stand-in costs them nothing. Operations on device tensors cost a few microseconds more.

Run chapters on it (each in a fresh kernel; exit status 1 on a failure)::

    python -m d2l_utils._book.standin_device chapters/03_training/09_activations.ipynb
    python -m d2l_utils._book.standin_device --all --jobs 2  # every chapter using get_device
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import return_and_correct_aliasing

NAME = "standin"
NOT_ON_MPS = (torch.float64, torch.complex128)  # dtypes Apple's MPS cannot hold
ROOT = Path(__file__).resolve().parents[2]

# Operations whose whole point is to cross devices; and those whose index arguments (args[1])
# may stay on the CPU, as CUDA and MPS allow.
_CROSS_DEVICE = {"aten::_to_copy", "aten::copy_", "aten::_copy_from", "aten::_copy_from_and_resize",
                 "aten::to", "aten::lift_fresh", "aten::lift_fresh_copy"}
_CPU_INDICES = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_",
                "aten::_unsafe_index", "aten::_unsafe_index_put"}

_generator = torch.Generator()  # the stand-in's own random stream (a GPU has its own)
_generator.manual_seed(67280421310721)  # CUDA's default seed
_device: torch.device | None = None  # torch.device("standin", 0), once install() named it
_library: torch.library.Library | None = None


class StandinDeviceError(RuntimeError):
    """An operation that would fail (or silently misbehave) on CUDA or MPS."""


class StandinTensor(torch.Tensor):
    """A tensor on the stand-in device: reports ``device='standin:0'``, computes on the CPU.

    ``_data`` holds the values (a CPU tensor of the same shape, dtype and strides).
    """

    _data: torch.Tensor

    @staticmethod
    def __new__(cls, data: torch.Tensor) -> StandinTensor:
        return torch.Tensor._make_wrapper_subclass(
            cls, data.shape, strides=data.stride(), storage_offset=data.storage_offset(),
            dtype=data.dtype, layout=data.layout, device=_device, requires_grad=False)

    def __init__(self, data: torch.Tensor) -> None:
        self._data = data

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})

    # A "traceable" wrapper: nn.Module.to() then swaps each parameter in place (as .data= does
    # for CUDA), so an optimizer made before the move still holds the model's parameters.
    def __tensor_flatten__(self) -> tuple[list[str], None]:
        return ["_data"], None

    @staticmethod
    def __tensor_unflatten__(inner: dict, meta: None, outer_size: Any, outer_stride: Any
                             ) -> StandinTensor:
        return StandinTensor(inner["_data"])

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        inner = repr(self._data)[:-1]  # "tensor([...]" without its closing bracket
        extra = f", grad_fn=<{type(self.grad_fn).__name__}>" if self.grad_fn is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        return f"{inner}, device='{self.device}'{extra})"

    def __format__(self, spec: str) -> str:
        return self._data.__format__(spec) if self.dim() == 0 else object.__format__(self, spec)

    def numpy(self, *, force: bool = False):
        """Like CUDA and MPS: refuse, unless ``force=True`` (which copies to the CPU)."""
        if force:
            return self._data.numpy(force=True)
        raise StandinDeviceError(
            f"can't convert {self.device} device type tensor to numpy (as on CUDA and MPS): "
            "use .cpu() first, e.g. x.detach().cpu().numpy()")

    def tolist(self) -> Any:
        return self._data.tolist()  # works on CUDA and MPS too (it copies)


def _describe(t: torch.Tensor) -> str:
    return f"a {t.device} {str(t.dtype).removeprefix('torch.')} tensor of shape {tuple(t.shape)}"


def _map(fn, value: Any) -> Any:
    """``fn`` over an operation's argument or result: one value, or a list or tuple of them."""
    return type(value)(map(fn, value)) if isinstance(value, list | tuple) else fn(value)


def _wrap(func, value: Any) -> Any:
    """A result of ``func`` on the device: a CPU tensor becomes a stand-in tensor."""
    if isinstance(value, torch.Tensor) and not isinstance(value, StandinTensor):
        if value.dtype in NOT_ON_MPS:
            raise StandinDeviceError(
                f"{func} makes a {str(value.dtype).removeprefix('torch.')} tensor on the device: "
                "Apple's MPS has no float64. Compute in float32 on the device, or in float64 on "
                "the CPU and move the result")
        return StandinTensor(value)
    return value


def _holds_standin(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(isinstance(v, StandinTensor) for v in value)
    return isinstance(value, StandinTensor)


def _run(func, args: tuple, kwargs: dict) -> Any:
    """Check one operation that involves the stand-in device, run it on the CPU, wrap results."""
    name = func._schema.name  # e.g. "aten::add"
    device = kwargs.get("device")
    explicit = isinstance(device, torch.device)  # a factory or a conversion names its device
    to_device = (device.type == NAME if explicit
                 else any(map(_holds_standin, args)) or any(map(_holds_standin, kwargs.values())))
    check_mixing = to_device and not explicit and name not in _CROSS_DEVICE
    cpu_indices = set()
    if name in _CPU_INDICES and len(args) > 1 and isinstance(args[1], list | tuple):
        cpu_indices = {id(index) for index in args[1] if isinstance(index, torch.Tensor)}

    def unwrap(value: Any) -> Any:
        if isinstance(value, StandinTensor):
            return value._data
        if isinstance(value, torch.Tensor):
            if check_mixing and value.dim() > 0 and id(value) not in cpu_indices:
                raise StandinDeviceError(
                    f"{func} mixes device tensors with {_describe(value)}: on CUDA or MPS this "
                    "raises 'Expected all tensors to be on the same device'. Create it on the "
                    "device (device=x.device) or move it there with .to(device)")
        elif isinstance(value, torch.Generator) and to_device and value is not _generator:
            raise StandinDeviceError(
                f"{func} draws on the device with a {value.device} torch.Generator: CUDA and "
                "MPS refuse a CPU generator. Draw on the CPU, then move the result: "
                "torch.rand(shape, generator=g).to(device)")
        elif isinstance(value, torch.device) and value.type == NAME:
            return torch.device("cpu")
        return value

    cpu_args = tuple(_map(unwrap, value) for value in args)
    cpu_kwargs = {key: _map(unwrap, value) for key, value in kwargs.items()}
    if to_device and torch.Tag.nondeterministic_seeded in func.tags:
        result = _draw_from_device_stream(func, cpu_args, cpu_kwargs)
    else:
        result = _GPU_ONLY_KERNELS.get(name, func)(*cpu_args, **cpu_kwargs)
    if not to_device:  # e.g. x.cpu(): the result leaves the device
        return result
    if name in _CROSS_DEVICE and func._schema.is_mutable and not isinstance(args[0], StandinTensor):
        return args[0]  # cpu_tensor.copy_(device_tensor) fills the CPU tensor
    wrapped = _map(lambda value: _wrap(func, value), result)
    return return_and_correct_aliasing(func, args, kwargs, wrapped)


# nn.LSTM and nn.GRU on an accelerator (CUDA, and PyTorch's spare backend slot that the
# stand-in uses) step through fused cell kernels that have no CPU version; here they are, on
# the CPU values. Gate order and the workspace's layout are PyTorch's; the workspace is read
# only by the matching backward below.
def _gates(input_gates, hidden_gates, input_bias, hidden_bias):
    gates = input_gates + hidden_gates
    return gates if input_bias is None else gates + input_bias + hidden_bias


def _fused_lstm_cell(input_gates, hidden_gates, cx, input_bias=None, hidden_bias=None):
    i, f, g, o = _gates(input_gates, hidden_gates, input_bias, hidden_bias).chunk(4, 1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    cy = f * cx + i * g
    return o * cy.tanh(), cy, torch.cat([i, f, g, o], 1)


def _fused_lstm_cell_backward_impl(grad_hy, grad_cy, cx, cy, workspace, has_bias):
    i, f, g, o = workspace.chunk(4, 1)
    tanh_cy = cy.tanh()
    grad_hy = torch.zeros_like(cy) if grad_hy is None else grad_hy
    grad_c = (torch.zeros_like(cy) if grad_cy is None else grad_cy) + \
        grad_hy * o * (1 - tanh_cy**2)
    grad_gates = torch.cat([grad_c * g * i * (1 - i), grad_c * cx * f * (1 - f),
                            grad_c * i * (1 - g**2), grad_hy * tanh_cy * o * (1 - o)], 1)
    return grad_gates, grad_c * f, grad_gates.sum(0) if has_bias else None


def _fused_lstm_cell_backward(grad_hy, grad_cy, cx, cy, workspace, has_bias):
    grad_gates, grad_cx, grad_bias = _fused_lstm_cell_backward_impl(
        grad_hy, grad_cy, cx, cy, workspace, has_bias)
    return grad_gates, grad_gates, grad_cx, grad_bias, grad_bias


def _fused_gru_cell(input_gates, hidden_gates, hx, input_bias=None, hidden_bias=None):
    if input_bias is not None:
        input_gates, hidden_gates = input_gates + input_bias, hidden_gates + hidden_bias
    input_r, input_z, input_n = input_gates.chunk(3, 1)
    hidden_r, hidden_z, hidden_n = hidden_gates.chunk(3, 1)
    r, z = (input_r + hidden_r).sigmoid(), (input_z + hidden_z).sigmoid()
    n = (input_n + r * hidden_n).tanh()
    return n + z * (hx - n), torch.cat([r, z, n, hx, hidden_n], 1)


def _fused_gru_cell_backward(grad_hy, workspace, has_bias):
    r, z, n, hx, hidden_n = workspace.chunk(5, 1)
    grad_n = grad_hy * (1 - z) * (1 - n**2)
    grad_r = grad_n * hidden_n * r * (1 - r)
    grad_z = grad_hy * (hx - n) * z * (1 - z)
    grad_input = torch.cat([grad_r, grad_z, grad_n], 1)
    grad_hidden = torch.cat([grad_r, grad_z, grad_n * r], 1)
    biases = (grad_input.sum(0), grad_hidden.sum(0)) if has_bias else (None, None)
    return grad_input, grad_hidden, grad_hy * z, *biases


_GPU_ONLY_KERNELS = {
    "aten::_thnn_fused_lstm_cell": _fused_lstm_cell,
    "aten::_thnn_fused_lstm_cell_backward_impl": _fused_lstm_cell_backward_impl,
    "aten::_thnn_fused_lstm_cell_backward": _fused_lstm_cell_backward,
    "aten::_thnn_fused_gru_cell": _fused_gru_cell,
    "aten::_thnn_fused_gru_cell_backward": _fused_gru_cell_backward,
}


def _draw_from_device_stream(func, args: tuple, kwargs: dict) -> Any:
    """Run a random operation with the stand-in's generator instead of the CPU's."""
    if any(argument.name == "generator" for argument in func._schema.arguments):
        if kwargs.get("generator") is None:
            kwargs = {**kwargs, "generator": _generator}
        return func(*args, **kwargs)
    saved = torch.default_generator.get_state()  # e.g. native_dropout takes no generator
    torch.default_generator.set_state(_generator.get_state())
    try:
        return func(*args, **kwargs)
    finally:
        _generator.set_state(torch.default_generator.get_state())
        torch.default_generator.set_state(saved)


def _backend_fallback(op, *args, **kwargs):
    """Kernel for every operation dispatched to the device without a device tensor (factories
    such as ``torch.zeros(3, device="standin")``)."""
    return _run(op, args, kwargs)


class _BackendModule:
    """``torch.standin``: what PyTorch asks of a device module (seeding, counting, syncing)."""

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def current_device(self) -> int:
        return 0

    def synchronize(self, device: Any = None) -> None:
        """Nothing to wait for: the stand-in computes synchronously on the CPU."""

    def _is_in_bad_fork(self) -> bool:
        return False

    def manual_seed_all(self, seed: int) -> None:
        """Seed the device's stream: reproducible, yet not the CPU's (as on a GPU)."""
        _generator.manual_seed((int(seed) + 0x9E3779B97F4A7C15) % 2**64)

    manual_seed = manual_seed_all


def install() -> torch.device:
    """Make ``torch.device("standin")`` usable in this process (idempotent) and return it.

    Process-wide and permanent (PyTorch cannot rename its backend slot twice), but inert for
    CPU tensors.
    """
    global _device, _library
    if _device is not None:
        return torch.device(NAME)
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    _setup_privateuseone_for_python_backend(NAME, backend_module=_BackendModule())
    _device = torch.device(NAME, 0)
    # torch.tensor(data, device=...) builds on the CPU, then moves with .to(): visible to us.
    torch._C._set_only_lift_cpu_tensors(True)
    _library = torch.library.Library("_", "IMPL")
    _library.fallback(_backend_fallback, dispatch_key="PrivateUse1")
    try:  # autograd sets up its device queues at the first backward pass, once per process
        (torch.ones(1, device=_device, requires_grad=True) * 2).sum().backward()
    except RuntimeError as error:
        raise StandinDeviceError(
            "the stand-in device was installed after this process's first backward pass, "
            "too late for autograd: set D2L_DEVICE=standin before importing d2l_utils, or "
            "call install() first") from error
    return torch.device(NAME)


def is_installed() -> bool:
    """Whether ``install()`` has run in this process."""
    return _device is not None


# --- running chapters on the stand-in --------------------------------------------------------

def chapters_using_a_device(root: Path = ROOT) -> list[Path]:
    """Chapter notebooks whose code calls ``get_device``, in book order."""
    found = []
    for path in sorted((root / "chapters").rglob("*.ipynb")):
        if ".ipynb_checkpoints" not in path.parts and "get_device" in path.read_text("utf-8"):
            found.append(path)
    return found


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def run_notebook(path: Path, timeout: int = 600, threads: int | None = None
                 ) -> tuple[float, str | None]:
    """Execute ``path`` in a fresh kernel with ``D2L_DEVICE=standin`` (and ``threads`` CPU
    threads, when given).

    Returns:
        ``(seconds, None)`` on success, else ``(seconds, report)``: the failing cell (0-based,
        all cells counted) and the end of its traceback.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    notebook = nbformat.read(path, as_version=4)
    current: list[int] = []
    client = NotebookClient(notebook, timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_execute=lambda cell, cell_index: current.append(cell_index))
    env = dict(os.environ, D2L_DEVICE=NAME, D2L_BOOK_BUILD="1", MPLBACKEND="Agg")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    shared = ROOT.parent / "shared" / "data"  # as chapters/conftest.py: the offline mirror
    if "D2L_DATA_DIR" not in env and shared.is_dir():
        env["D2L_DATA_DIR"] = str(shared)
    start = time.perf_counter()
    try:
        client.execute(cwd=str(path.parent), env=env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as failure:
        text = ANSI_ESCAPE.sub("", str(failure)).strip().splitlines()
        if not current:
            return time.perf_counter() - start, "the kernel: " + "\n".join(text[-12:])
        printed = "".join(output.get("text", "") for output in notebook.cells[current[-1]].outputs
                          if output.get("output_type") == "stream").strip().splitlines()
        report = f"cell {current[-1]}: " + "\n".join(text[-12:])
        if printed:
            report += "\nthe cell printed:\n" + "\n".join(printed[-8:])
        return time.perf_counter() - start, report
    return time.perf_counter() - start, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute chapters on the stand-in device.")
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true",
                        help="every chapter that calls get_device")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks executed at once")
    args = parser.parse_args(argv)
    paths = chapters_using_a_device() if args.all else [p.resolve() for p in args.notebooks]
    if not paths:
        parser.error("name notebooks, or pass --all")
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def run(path: Path) -> tuple[Path, float, str | None]:
        return path, *run_notebook(path, args.timeout, threads)

    failed = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for path, seconds, report in pool.map(run, paths):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            print(f"{shown}: {seconds:.1f} s, {'ok' if report is None else 'FAILED'}", flush=True)
            if report is not None:
                failed += 1
                print("    " + report.replace("\n", "\n    "), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
