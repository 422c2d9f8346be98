"""One registry for every file the book reads, and one way to fetch it.

Each file is named by its path inside a mirror folder (``mnist/t10k-labels-idx1-ubyte.gz``)
and listed with its canonical URLs and the sha256 of its bytes. ``fetch(path)`` returns a
verified local copy, looking in this order:

1. every folder in the environment variable ``D2L_DATA_DIR`` (``os.pathsep``-separated);
2. the repository's ``data/`` folder;
3. ``/usr/share/datasets`` (Debian's ``dataset-*`` packages install there);
4. the user cache (``D2L_CACHE_DIR``, default ``~/.cache/d2l_utils``);

and only when none holds a good copy does it download into the cache: to a temporary
file, verified, then renamed, so an interrupted download never leaves a bad file.

Gzip files may also be accepted by the checksum of their *decompressed* content: Debian
re-compresses some datasets with different headers, which changes the bytes but not the data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV_VAR = "D2L_DATA_DIR"
CACHE_DIR_ENV_VAR = "D2L_CACHE_DIR"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class RemoteFile:
    """A file the book needs: where it lives in a mirror, where it comes from, what it hashes to.

    Attributes:
        path: relative path inside a mirror folder, e.g. ``"mnist/t10k-labels-idx1-ubyte.gz"``.
        urls: canonical download URLs, tried in order.
        sha256: sha256 of the file's bytes.
        content_sha256: for ``.gz`` files, sha256 of the decompressed bytes; a file whose
            bytes differ but whose content matches is accepted too.
        licence: one line naming the licence, shown in errors and the data README.
    """

    path: str
    urls: tuple[str, ...]
    sha256: str
    content_sha256: str | None = None
    licence: str = ""


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or cannot be downloaded; the message says the fix."""


def _mnist_like(folder: str, mirrors: tuple[str, ...], digests: dict[str, tuple[str, str]],
                licence: str) -> dict[str, RemoteFile]:
    files = {}
    for name, (sha256, content_sha256) in digests.items():
        path = f"{folder}/{name}"
        files[path] = RemoteFile(path, tuple(m + name for m in mirrors), sha256, content_sha256,
                                 licence)
    return files


REGISTRY: dict[str, RemoteFile] = {
    **_mnist_like(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            "train-labels-idx1-ubyte.gz": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            "t10k-images-idx3-ubyte.gz": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            "t10k-labels-idx1-ubyte.gz": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        },
        "CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
    ),
    **_mnist_like(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"),
        {
            "train-images-idx3-ubyte.gz": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            "train-labels-idx1-ubyte.gz": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            "t10k-images-idx3-ubyte.gz": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            "t10k-labels-idx1-ubyte.gz": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        },
        "MIT (Zalando SE)",
    ),
    "time-machine/timemachine.txt": RemoteFile(
        "time-machine/timemachine.txt",
        ("http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",),
        "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516",
        licence="public domain (H. G. Wells, 1895)",
    ),
    "tinyshakespeare/input.txt": RemoteFile(
        "tinyshakespeare/input.txt",
        ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        licence="public domain text; char-rnn repository MIT",
    ),
}


def search_dirs() -> list[Path]:
    """The folders searched for a file, in order (the cache last)."""
    dirs = [Path(p).expanduser() for p in os.environ.get(DATA_DIR_ENV_VAR, "").split(os.pathsep)
            if p.strip()]
    dirs += [REPO_DATA_DIR, SYSTEM_DATA_DIR, cache_dir()]
    return dirs


def cache_dir() -> Path:
    """Where downloads and decoded arrays are kept (``D2L_CACHE_DIR`` or ``~/.cache/d2l_utils``)."""
    return Path(os.environ.get(CACHE_DIR_ENV_VAR, "~/.cache/d2l_utils")).expanduser()


_HASHES: dict[tuple[str, int, int, bool], str] = {}


def sha256_of(path: Path, *, decompress: bool = False) -> str:
    """sha256 of a file's bytes, or of its gunzipped content when ``decompress`` is true.

    Results are remembered for the process, keyed by path, size and modification time.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, decompress)
    if key not in _HASHES:
        _HASHES[key] = _hash_file(path, decompress)
    return _HASHES[key]


def _hash_file(path: Path, decompress: bool) -> str:
    digest = hashlib.sha256()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, entry: RemoteFile) -> str | None:
    """Check ``path`` against ``entry``; return ``None`` if it is good, else what is wrong."""
    actual = sha256_of(path)
    if actual == entry.sha256:
        return None
    wrong_hash = f"its sha256 is {actual}, expected {entry.sha256}"
    if entry.content_sha256 is not None:
        try:
            if sha256_of(path, decompress=True) == entry.content_sha256:
                return None
        except EOFError:
            return f"{wrong_hash}; it is not a complete gzip file: it is probably truncated"
        except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            return f"{wrong_hash}; its gzip data is damaged ({error})"
    return wrong_hash


def fetch(path: str, *, download: bool = True, registry: dict[str, RemoteFile] | None = None
          ) -> Path:
    """Return a verified local copy of the registered file ``path``.

    Args:
        path: a key of ``REGISTRY``, e.g. ``"mnist/train-images-idx3-ubyte.gz"``.
        download: whether to download into the cache when no folder has a good copy.
        registry: the registry to use (tests pass their own).

    Raises:
        KeyError: ``path`` is not registered (the message lists what is).
        DataError: a copy exists but is corrupt, or none exists and the download failed;
            the message names the file, its URL and what to do.
    """
    registry = REGISTRY if registry is None else registry
    if path not in registry:
        raise KeyError(f"{path!r} is not in the data registry; known files: {sorted(registry)}")
    entry = registry[path]
    problems = []  # (a rejected copy, what is wrong with it)
    for folder in search_dirs():
        candidate = folder / entry.path
        if candidate.is_file():
            problem = verify(candidate, entry)
            if problem is None:
                return candidate
            problems.append((candidate, problem))
    if not download:
        raise DataError(_missing_message(entry, problems, "downloading is turned off "
                                         "(download=False)"))
    return _download(entry, problems)


def _download(entry: RemoteFile, problems: list[tuple[Path, str]]) -> Path:
    target = cache_dir() / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in entry.urls:
        handle, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(handle, "wb") as sink, urllib.request.urlopen(url, timeout=30) as source:
                shutil.copyfileobj(source, sink)
            problem = verify(tmp, entry)
            if problem is None:
                os.replace(tmp, target)  # atomic: readers never see a half-written file
                return target
            failures.append(f"{url}: downloaded, but {problem}")
        except (urllib.error.URLError, OSError, ValueError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(_missing_message(entry, problems, "the download failed:\n    "
                                     + "\n    ".join(failures)))


def _missing_message(entry: RemoteFile, problems: list[tuple[Path, str]], why: str) -> str:
    """The error for a file with no good copy: the cause first (a corrupt copy, or no copy),
    then why it could not be replaced, where we looked, and the fix."""
    if problems:
        lines = [f"{entry.path}: the copy at {path} is corrupt ({problem})."
                 for path, problem in problems]
        lines.append(f"No folder holds a good copy, and {why}.")
    else:
        lines = [f"{entry.path}: no copy was found, and {why}."]
    folders = ", ".join(str(d) for d in search_dirs())
    lines.append(f"Searched: {folders}.")
    if problems:
        lines.append("Fix: delete the corrupt copy (or copies) above, then")
        lines.append(f"  download {entry.urls[0]} (sha256 {entry.sha256})")
    else:
        lines.append(f"Fix: download {entry.urls[0]} (sha256 {entry.sha256})")
    lines += [
        f"  and put it at <folder>/{entry.path}, where <folder> is one of the folders above,",
        f"  or point {DATA_DIR_ENV_VAR} at a mirror folder that holds it,",
        "  or run again with network access so it is downloaded into the cache.",
    ]
    return "\n".join(lines)
