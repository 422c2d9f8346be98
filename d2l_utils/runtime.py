"""Reproducibility and the run context: one call seeds everything; one flag says
whether the notebook is being executed to build the website.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

BOOK_BUILD_ENV_VAR = "D2L_BOOK_BUILD"


def set_seed(seed: int = 0, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every GPU) in one call.

    Args:
        seed: a non-negative integer.
        deterministic: also ask PyTorch for deterministic algorithms where that is
            cheap (cuDNN's deterministic mode; ``warn_only`` so an operation without
            a deterministic kernel warns instead of failing).

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
        # cuBLAS needs this for deterministic matmuls; harmless elsewhere.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def in_book_build() -> bool:
    """True while the website build executes the notebook (no live kernel for readers).

    The book's Sphinx extension sets ``D2L_BOOK_BUILD=1`` before notebooks run;
    a reader can set it by hand to preview what the website will show.
    """
    return os.environ.get(BOOK_BUILD_ENV_VAR, "").strip().lower() in {"1", "true", "yes"}
