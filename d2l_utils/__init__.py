"""d2l_utils: the shared package of *Executable Deep Learning*.

The core (hand-written) is re-exported here::

    from d2l_utils import get_device, set_seed, load_mnist, fit

Each part of the book adds modules generated from its chapters (``perceptron``,
``autograd``, ...); import those by module, e.g. ``from d2l_utils.perceptron import ...``.
"""

from d2l_utils.data import DataError, fetch
from d2l_utils.datasets import (
    ArrayLoader,
    CharVocab,
    ImageData,
    TextData,
    load_fashion_mnist,
    load_images,
    load_mnist,
    load_text,
)
from d2l_utils.device import get_device, synchronize, to_device
from d2l_utils.interact import interactive
from d2l_utils.plot import plot_history, plot_lines, show_images, use_book_style
from d2l_utils.runtime import in_book_build, set_seed
from d2l_utils.train import History, accuracy, evaluate, fit

__all__ = [
    "ArrayLoader", "CharVocab", "DataError", "History", "ImageData", "TextData", "accuracy",
    "evaluate", "fetch", "fit", "get_device", "in_book_build", "interactive", "load_fashion_mnist",
    "load_images", "load_mnist", "load_text", "plot_history", "plot_lines", "set_seed",
    "show_images", "synchronize", "to_device", "use_book_style",
]
__version__ = "0.1.0"
