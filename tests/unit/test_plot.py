"""The book's figure helpers."""

from __future__ import annotations

import base64
import io
import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from d2l_utils.plot import (
    OKABE_ITO,
    describe_figure,
    figure_png,
    plot_history,
    plot_lines,
    show_images,
    use_book_style,
)
from d2l_utils.train import History


def test_style_uses_the_colour_blind_safe_palette():
    use_book_style()
    colours = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    assert tuple(colours) == OKABE_ITO


def test_plot_lines_labels_and_checks_lengths():
    ax = plot_lines([1, 2, 3], {"a": [1, 2, 3], "b": [3, 2, 1]}, xlabel="x", ylabel="y",
                    title="t", logy=True)
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert ax.get_xlabel() == "x" and ax.get_yscale() == "log"
    assert ax.get_lines()[0].get_marker() != ax.get_lines()[1].get_marker()
    with pytest.raises(ValueError, match="has 2 points"):
        plot_lines([1, 2, 3], {"a": [1, 2]})
    plt.close("all")


def test_plot_history_plots_only_recorded_keys():
    history = History([{"epoch": 1.0, "train_loss": 2.0}, {"epoch": 2.0, "train_loss": 1.0}])
    ax = plot_history(history)
    assert [line.get_label() for line in ax.get_lines()] == ["train loss"]
    plt.close("all")


@pytest.mark.parametrize("images", [torch.rand(5, 1, 8, 8), torch.rand(5, 64), np.zeros((5, 8, 8))])
def test_show_images_accepts_the_common_layouts(images):
    fig = show_images(images, titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "a"
    plt.close(fig)


def test_show_images_rejects_non_square_flat_images():
    with pytest.raises(ValueError, match="not square"):
        show_images(torch.rand(2, 10))


def test_describe_figure_reads_titles_and_labels():
    fig, (left, right) = plt.subplots(1, 2)
    fig.suptitle("Two views")
    left.set(title="Loss falls", xlabel="epoch", ylabel="loss")
    right.set(xlabel="step")
    assert describe_figure(fig) == "Two views; Loss falls (x: epoch, y: loss); (x: step)"
    assert len(describe_figure(fig, max_length=10)) == 10
    plt.close(fig)
    empty = plt.figure()
    assert describe_figure(empty) == "" and figure_png(empty) is None
    plt.close(empty)


def test_figure_png_carries_the_description():
    from PIL import Image

    ax = plot_lines([1, 2], {"a": [1, 2]}, title="Rises", xlabel="x")
    png = figure_png(ax.figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).text["Description"] == "Rises (x: x)"
    plt.close("all")


def test_a_notebook_kernel_shows_described_figures():
    """In a real kernel, after use_book_style(), a figure's PNG output carries its description
    (the website's alt text); the inline backend's own formatter must not win."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from PIL import Image

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\n"
                                  "from d2l_utils import use_book_style\nuse_book_style()"),
        nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nax.plot([1, 2])\n"
                                  "ax.set(title='Up', ylabel='value')"),
    ]
    # A kernel draws inline only if no backend is exported (conftest.py exports Agg for tests).
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=120).execute(env=env)
    images = [output["data"]["image/png"] for output in notebook.cells[1].outputs
              if "image/png" in output.get("data", {})]
    assert len(images) == 1
    text = Image.open(io.BytesIO(base64.b64decode(images[0]))).text
    assert text.get("Description") == "Up (y: value)"
