"""The book's figure style and the plots chapters repeat.

Colours are the Okabe–Ito palette, which stays distinguishable for the common forms of
colour blindness; lines also differ in marker so a figure survives greyscale printing.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from cycler import cycler
from matplotlib.figure import Figure

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def use_book_style() -> None:
    """Apply the book's matplotlib style (call once, in a chapter's first cell).

    In a Jupyter kernel it also shows figures as PNGs that carry a description of the figure
    (``describe_figure``), which the website uses as the image's alt text.
    """
    _describe_figures_in_notebooks()
    mpl.rcParams.update({
        "figure.figsize": (6.0, 3.6),
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "savefig.bbox": "tight",
        "axes.prop_cycle": cycler(color=OKABE_ITO),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "font.size": 10,
        "image.cmap": "viridis",
    })


def plot_lines(x: Sequence[float] | np.ndarray, ys: dict[str, Sequence[float]], *,
               xlabel: str = "", ylabel: str = "", title: str = "", logx: bool = False,
               logy: bool = False, ax: plt.Axes | None = None) -> plt.Axes:
    """Plot several named curves over a shared x axis, each with its own colour and marker.

    Args:
        x: ``(n,)`` x values.
        ys: label -> ``(n,)`` y values.
    """
    if ax is None:
        _, ax = plt.subplots()
    for i, (label, y) in enumerate(ys.items()):
        if len(y) != len(x):
            raise ValueError(f"curve {label!r} has {len(y)} points but x has {len(x)}")
        ax.plot(x, y, label=label, marker=MARKERS[i % len(MARKERS)],
                markevery=max(1, len(x) // 12), markersize=4)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if len(ys) > 1:
        ax.legend()
    return ax


def plot_history(history, keys: Sequence[str] = ("train_loss", "val_loss"), *,
                 title: str = "", ax: plt.Axes | None = None) -> plt.Axes:
    """Plot recorded quantities of a ``train.History`` against the epoch."""
    recorded = [k for k in keys if history.records and k in history.records[0]]
    return plot_lines(history["epoch"], {k.replace("_", " "): history[k] for k in recorded},
                      xlabel="epoch", title=title, ax=ax)


def show_images(images: torch.Tensor | np.ndarray, titles: Sequence[str] | None = None, *,
                ncols: int = 8, scale: float = 1.2, cmap: str = "gray_r") -> plt.Figure:
    """Show a grid of images.

    Args:
        images: ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, H*W)`` with a square ``H*W``.
        titles: one title per image, or ``None``.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2:
        side = int(round(array.shape[1] ** 0.5))
        if side * side != array.shape[1]:
            raise ValueError(f"flat images of length {array.shape[1]} are not square")
        array = array.reshape(len(array), side, side)
    if array.ndim != 3:
        raise ValueError(f"expected (N, H, W), (N, 1, H, W) or (N, H*W) images, got {array.shape}")
    n = len(array)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows * 1.15),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(array[i], cmap=cmap)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    return fig


def describe_figure(fig: Figure, max_length: int = 400) -> str:
    """A one-line description of a figure for screen readers, from what it already states:
    its suptitle, then each plot's title and axis labels. Empty when the figure says nothing.
    """
    parts = []
    suptitle = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
    if suptitle:
        parts.append(suptitle.strip())
    for ax in fig.axes:
        title = ax.get_title().strip()
        labels = [f"{name}: {label.strip()}" for name, label in
                  (("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if label.strip()]
        if title or labels:
            parts.append(title + (f" ({', '.join(labels)})" if labels else ""))
    text = "; ".join(p.strip() for p in parts if p.strip()).replace("$", "")  # no TeX markers
    return text if len(text) <= max_length else text[: max_length - 1] + "…"


def figure_png(fig: Figure) -> bytes | None:
    """The PNG a notebook shows for ``fig``, with ``describe_figure(fig)`` stored in its
    ``Description`` text field. ``None`` for a figure with nothing drawn on it."""
    if not fig.axes:
        return None
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight",
                metadata={"Description": describe_figure(fig)})
    return buffer.getvalue()


def _describe_figures_in_notebooks() -> None:
    """Register ``figure_png`` as the kernel's PNG formatter for figures (IPython's display
    API). The inline backend registers its own when it is first imported, so import it first."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    if "inline" not in str(mpl.get_backend()):
        return
    import matplotlib_inline.backend_inline  # noqa: F401  (registers the default formatter)

    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
