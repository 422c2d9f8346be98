"""Reproducibility and the run context: one call seeds everything; one flag says
whether the notebook is being executed to build the website.
"""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import torch

BOOK_BUILD_ENV_VAR = "D2L_BOOK_BUILD"
CUBLAS_ENV_VAR = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = ":4096:8"  # the workspace setting that makes cuBLAS deterministic

# cuBLAS reads its workspace setting when CUDA does its first matrix product, so set_seed may be
# too late: set it here, when d2l_utils is imported (a value already exported wins).
_cublas_set_after_cuda_started = CUBLAS_ENV_VAR not in os.environ and torch.cuda.is_initialized()
os.environ.setdefault(CUBLAS_ENV_VAR, CUBLAS_DETERMINISTIC)


def set_seed(seed: int = 0, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every GPU) in one call.

    Args:
        seed: a non-negative integer.
        deterministic: also ask PyTorch for deterministic algorithms where that is
            cheap (cuDNN's deterministic mode; ``warn_only`` so an operation without
            a deterministic kernel warns, once per kind of operation, instead of failing).
            cuBLAS is deterministic only if ``CUBLAS_WORKSPACE_CONFIG`` was set before CUDA
            started, which importing ``d2l_utils`` first does; otherwise this warns.

    Returns:
        A ``torch.Generator`` seeded with ``seed``, for code that wants its own stream.

    Raises:
        TypeError: ``seed`` is not an int.
        ValueError: ``seed`` is negative.
    """
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA and MPS generators too
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        for message in (r".* does not have a deterministic implementation",
                        r"Deterministic behavior was enabled"):  # PyTorch repeats these per call
            warnings.filterwarnings("once", message=message, category=UserWarning)
        _check_cublas_config()
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _check_cublas_config() -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` if CUDA has not started; warn if it may be too late."""
    late = _cublas_set_after_cuda_started
    if CUBLAS_ENV_VAR not in os.environ:  # someone removed it after import
        late = late or torch.cuda.is_initialized()
        os.environ[CUBLAS_ENV_VAR] = CUBLAS_DETERMINISTIC
    if late:
        warnings.warn(f"CUDA started before {CUBLAS_ENV_VAR} was set, so matrix products may not "
                      "be deterministic: import d2l_utils (or export "
                      f"{CUBLAS_ENV_VAR}={CUBLAS_DETERMINISTIC}) before any CUDA work",
                      RuntimeWarning, stacklevel=3)


def in_book_build() -> bool:
    """True while the website build executes the notebook (no live kernel for readers).

    The book's Sphinx extension sets ``D2L_BOOK_BUILD=1`` before notebooks run;
    a reader can set it by hand to preview what the website will show.
    """
    return os.environ.get(BOOK_BUILD_ENV_VAR, "").strip().lower() in {"1", "true", "yes"}
