"""Loaders that turn registered files into tensors held in memory.

Images come back as one float tensor and one label tensor, not as a per-sample
``Dataset``: every chapter trains from memory, and ``ArrayLoader`` slices mini-batches
out of those tensors without any per-sample Python.
"""

from __future__ import annotations

import gzip
import math
import numbers
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from d2l_utils.data import cache_dir, fetch, sha256_of

IMAGE_SETS = {
    "mnist": ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}
TEXT_SETS = {
    "time-machine": "time-machine/timemachine.txt",
    "tinyshakespeare": "tinyshakespeare/input.txt",
}
# Mean and standard deviation of the training pixels (in [0, 1]), for standardisation.
PIXEL_STATS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (gzipped or not) into a NumPy array.

    The format (LeCun et al.): two zero bytes, a type code, the number of dimensions,
    one big-endian int32 per dimension, then the data in C order.

    Raises:
        ValueError: the header is not a valid IDX header or the data is too short.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (header {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: header promises {expected} bytes of data, found "
                         f"{len(raw) - offset}")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _decoded(path_in_registry: str) -> np.ndarray:
    """The decoded array of a registered IDX file, cached as .npy.

    The cache file is named by the source's sha256 (which file it was decoded from) and by a
    CRC-32 of the array's dtype, shape and bytes (what it should contain), for example
    ``train-images-idx3-ubyte.gz.440fcabf73cc546fa214.crc32-9b958599.npy``. A cached array
    is used only when it hashes to its name; a damaged one is deleted and decoded again.

    CRC-32 rather than sha256: it guards against accidental damage (a flipped bit, a torn
    copy; it detects every burst of up to 32 bits and misses random damage with probability
    2**-32), and it runs at several GB/s where sha256 runs at about 2; a cryptographic hash
    would not stop tampering anyway, since whoever can write the file can rename it.
    """
    source = fetch(path_in_registry)
    key = sha256_of(source)[:20]
    folder = cache_dir() / "decoded"
    stem = f"{Path(path_in_registry).name}.{key}"
    for cached in folder.glob(f"{stem}.crc32-*.npy"):
        try:
            array = np.load(cached)
            if cached.name == f"{stem}.crc32-{_checksum(array)}.npy":
                return array
        except Exception:  # a damaged header fails in many ways (even TokenError): rebuild
            pass
        cached.unlink(missing_ok=True)  # damaged: rebuilt below
    array = read_idx(source)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{stem}.{os.getpid()}.{id(array)}.tmp"
    with tmp.open("wb") as sink:
        np.save(sink, array)
    tmp.replace(folder / f"{stem}.crc32-{_checksum(array)}.npy")  # atomic: never half-written
    (folder / f"{stem}.npy").unlink(missing_ok=True)  # the unchecked name of older versions
    return array


def _checksum(array: np.ndarray) -> str:
    """CRC-32 (8 hex digits) of an array's dtype, shape and bytes in C order."""
    header = f"{array.dtype.str}{array.shape}".encode()
    return f"{zlib.crc32(np.ascontiguousarray(array).data, zlib.crc32(header)):08x}"


@dataclass
class ImageData:
    """Images and labels in memory.

    Attributes:
        images: float tensor ``(N, 1, 28, 28)``, or ``(N, 784)`` when flattened.
        labels: int64 tensor ``(N,)``.
        classes: the class names, indexed by label.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> ArrayLoader:
        """Mini-batches of ``(images, labels)``; see ``ArrayLoader``."""
        return ArrayLoader(self.images, self.labels, batch_size=batch_size, shuffle=shuffle,
                           seed=seed)


def load_images(name: str, split: str = "train", *, n: int | None = None,
                normalize: str | None = "unit", flatten: bool = False, seed: int = 0
                ) -> ImageData:
    """Load MNIST or Fashion-MNIST into memory.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        n: keep a random subset of this many images (the same subset for the same seed),
            or all when ``None``.
        normalize: ``"unit"`` scales pixels to [0, 1]; ``"standard"`` also subtracts the
            training mean and divides by its standard deviation; ``None`` keeps 0..255 floats.
        flatten: return ``(N, 784)`` instead of ``(N, 1, 28, 28)``.
        seed: seed of the subset choice.

    Raises:
        TypeError: ``n`` is not an int (or is a bool).
        ValueError: unknown name, split or normalisation, or ``n`` out of range.
    """
    if name not in IMAGE_SETS:
        raise ValueError(f"unknown image dataset {name!r}; expected one of {sorted(IMAGE_SETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if normalize not in ("unit", "standard", None):
        raise ValueError(f"normalize must be 'unit', 'standard' or None, got {normalize!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral)):
        raise TypeError(f"n must be a whole number of images (an int) or None for all, got "
                        f"{n!r} of type {type(n).__name__}; e.g. n=1000")
    prefix = "train" if split == "train" else "t10k"
    images = _decoded(f"{name}/{prefix}-images-idx3-ubyte.gz")
    labels = _decoded(f"{name}/{prefix}-labels-idx1-ubyte.gz")
    if n is not None:
        if not 0 < n <= len(labels):
            raise ValueError(f"n must be between 1 and {len(labels)} for the {split} split, "
                             f"got {n}; use n=None for all of it")
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(labels), generator=generator)[:n].sort().values.numpy()
        images, labels = images[keep], labels[keep]
    x = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)  # (N, 1, 28, 28)
    if normalize is not None:
        x /= 255.0
    if normalize == "standard":
        mean, std = PIXEL_STATS[name]
        x = (x - mean) / std
    if flatten:
        x = x.reshape(len(x), -1)
    return ImageData(x, torch.from_numpy(labels.astype(np.int64)), IMAGE_SETS[name])


def load_mnist(split: str = "train", *, n: int | None = None, normalize: str | None = "unit",
               flatten: bool = False, seed: int = 0) -> ImageData:
    """MNIST digits (28x28 greyscale, 10 classes); arguments as in ``load_images``.

    Returns:
        ``ImageData`` with images ``(N, 1, 28, 28)`` (``(N, 784)`` when ``flatten``) and
        int64 labels ``(N,)``.
    """
    return load_images("mnist", split, n=n, normalize=normalize, flatten=flatten, seed=seed)


def load_fashion_mnist(split: str = "train", *, n: int | None = None,
                       normalize: str | None = "unit", flatten: bool = False, seed: int = 0
                       ) -> ImageData:
    """Fashion-MNIST articles (28x28 greyscale, 10 classes); arguments as in ``load_images``.

    Returns:
        ``ImageData`` with images ``(N, 1, 28, 28)`` (``(N, 784)`` when ``flatten``) and
        int64 labels ``(N,)``.
    """
    return load_images("fashion-mnist", split, n=n, normalize=normalize, flatten=flatten,
                       seed=seed)


class ArrayLoader:
    """Mini-batches sliced from tensors held in memory (a fast stand-in for ``DataLoader``).

    Iterating yields tuples ``(x[batch], y[batch], ...)`` of at most ``batch_size`` rows.
    With ``shuffle=True`` each pass uses a new permutation from its own seeded generator,
    so runs are reproducible and independent of the global random state.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False) -> None:
        if not tensors:
            raise ValueError("ArrayLoader needs at least one tensor")
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise TypeError("ArrayLoader takes tensors; got "
                            + ", ".join(type(t).__name__ for t in tensors))
        sizes = {len(t) for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"all tensors need the same first dimension, got {sorted(sizes)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for batch in range(len(self)):
            start = batch * self.batch_size
            if order is None:
                yield tuple(t[start:start + self.batch_size] for t in self.tensors)
            else:
                rows = order[start:start + self.batch_size]
                yield tuple(t[rows] for t in self.tensors)


class CharVocab:
    """A character vocabulary: every distinct character of a text, sorted, numbered from 0."""

    def __init__(self, text: str) -> None:
        self.chars: list[str] = sorted(set(text))
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """int64 tensor ``(len(text),)`` of character ids.

        Raises:
            ValueError: a character is not in the vocabulary.
        """
        try:
            return torch.tensor([self.index[ch] for ch in text], dtype=torch.int64)
        except KeyError as error:
            raise ValueError(f"character {error.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text for a 1-D sequence of ids."""
        return "".join(self.chars[int(i)] for i in ids)


@dataclass
class TextData:
    """A raw text and its character vocabulary."""

    text: str
    vocab: CharVocab


def load_text(name: str) -> TextData:
    """Load ``"time-machine"`` or ``"tinyshakespeare"`` as text plus a character vocabulary."""
    if name not in TEXT_SETS:
        raise ValueError(f"unknown text dataset {name!r}; expected one of {sorted(TEXT_SETS)}")
    text = fetch(TEXT_SETS[name]).read_text(encoding="utf-8")
    return TextData(text, CharVocab(text))
