"""Argument checks in one line, so that a chapter's code shows its idea and not its guards.

Entry points and constructors check their inputs once, at the boundary::

    B, C = check_tensor(logits, "logits", "B C", dtype="float").values()
    check_tensor(labels, "labels", "B", dtype="int", sizes={"B": B})
    require(0 <= p < 1, f"dropout probability p must be in [0, 1), got {p}")

and raise ``ValueError`` (wrong value or shape) or ``TypeError`` (wrong type or dtype) with a
message that says what was expected. Elementwise primitives stay lean: they trust their caller.
"""

from __future__ import annotations

import math

import torch

_KINDS = {
    "float": (lambda dtype: dtype.is_floating_point, "a floating-point dtype (e.g. torch.float32)"),
    "int": (lambda dtype: not dtype.is_floating_point and not dtype.is_complex
            and dtype != torch.bool, "an integer dtype (e.g. torch.int64)"),
}


def require(condition: bool, message: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error(message)`` unless ``condition`` holds (an ``assert`` that survives -O and
    raises the exception the caller should catch)."""
    if not condition:
        raise error(message)


def check_tensor(x: object, name: str, shape: str | None = None, *,
                 dtype: str | torch.dtype | None = None,
                 sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Check that ``x`` is a tensor of the given shape and dtype; return the sizes it binds.

    Args:
        x: the value to check.
        name: how the message calls it (``"logits"``).
        shape: space-separated dimensions: a symbol (``B``) binds a size, which must agree
            wherever it recurs and with ``sizes``; a number must match exactly; ``*`` matches
            any size; ``...`` (first or last) matches any number of dimensions.
            ``None`` skips the shape check.
        dtype: ``"float"``, ``"int"`` or an exact ``torch.dtype``.
        sizes: sizes already known, e.g. ``{"B": 32}`` from an earlier check.

    Returns:
        Symbol -> size, in the order the symbols appear in ``shape`` (``sizes`` included).

    Raises:
        TypeError: ``x`` is not a tensor, or has the wrong dtype.
        ValueError: ``x`` has the wrong number of dimensions or a wrong size.
    """
    require(isinstance(x, torch.Tensor),
            f"{name} must be a torch.Tensor, got {type(x).__name__}", TypeError)
    if dtype is not None:
        if isinstance(dtype, torch.dtype):
            ok, wanted = x.dtype == dtype, str(dtype)
        else:
            test, wanted = _KINDS[dtype]
            ok = test(x.dtype)
        require(ok, f"{name} must have {wanted}, got {x.dtype}", TypeError)
    bound = dict(sizes or {})
    if shape is None:
        return bound
    dims = shape.split()
    actual = tuple(x.shape)
    if "..." in dims:
        require(dims.index("...") in (0, len(dims) - 1) and dims.count("...") == 1,
                f"bad shape pattern {shape!r}: '...' goes first or last")
        fixed = [d for d in dims if d != "..."]
        require(len(actual) >= len(fixed),
                f"{name} must have shape ({shape}) with at least {len(fixed)} dimensions, "
                f"got {actual}")
        actual = actual[len(actual) - len(fixed):] if dims[0] == "..." else actual[:len(fixed)]
        dims = fixed
    require(len(actual) == len(dims),
            f"{name} must have shape ({shape}), i.e. {len(dims)} dimension(s), "
            f"got shape {tuple(x.shape)}")
    for dim, size in zip(dims, actual):
        if dim == "*":
            continue
        expected = int(dim) if dim.isdigit() else bound.setdefault(dim, size)
        require(size == expected,
                f"{name} must have shape ({shape}) with {dim} = {expected}, "
                f"got shape {tuple(x.shape)}")
    return bound


def check_number(value: object, name: str, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False, integer: bool = False
                 ) -> float:
    """Check that ``value`` is a finite real number (an int if ``integer``) in the range
    ``[low, high]`` (open at an end if asked); return it.

    Raises:
        TypeError: not a number (``bool`` is not a number here), or not an int when required.
        ValueError: NaN, infinite, or out of range.
    """
    kinds = (int,) if integer else (int, float)
    require(isinstance(value, kinds) and not isinstance(value, bool),
            f"{name} must be {'an int' if integer else 'a number'}, "
            f"got {type(value).__name__} {value!r}", TypeError)
    require(math.isfinite(value), f"{name} must be finite, got {value}")
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    left = "(" if low_open or low == -math.inf else "["
    right = ")" if high_open or high == math.inf else "]"
    interval = f"{left}{low}, {high}{right}"
    require(above and below, f"{name} must be in {interval}, got {value}")
    return value
