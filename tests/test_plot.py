"""The book's figure helpers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from d2l_utils.plot import OKABE_ITO, plot_history, plot_lines, show_images, use_book_style  # noqa: E402
from d2l_utils.train import History  # noqa: E402


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
