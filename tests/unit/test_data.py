"""The data registry: search order, verification, atomic downloads, and clear errors."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from d2l_utils import data
from d2l_utils.data import REGISTRY, DataError, RemoteFile, fetch

UNREACHABLE = "http://127.0.0.1:9/nothing-here.gz"  # loopback discard port: refused at once


def make_entry(tmp_path, content: bytes, *, name="toy/values.txt.gz", urls=(UNREACHABLE,),
               sha256=None) -> tuple[RemoteFile, bytes]:
    packed = gzip.compress(content, mtime=1)
    entry = RemoteFile(name, tuple(urls), sha256 or hashlib.sha256(packed).hexdigest(),
                       hashlib.sha256(content).hexdigest())
    return entry, packed


def put(folder, entry: RemoteFile, payload: bytes):
    path = folder / entry.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_registry_lists_the_four_datasets_with_checksums_and_urls():
    folders = {path.split("/")[0] for path in REGISTRY}
    assert folders == {"mnist", "fashion-mnist", "time-machine", "tinyshakespeare"}
    for path, entry in REGISTRY.items():
        assert entry.path == path
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.urls and all(url.startswith(("http://", "https://")) for url in entry.urls)
        assert entry.urls[0].endswith(path.rsplit("/", 1)[-1])
        if path.endswith(".gz"):
            assert re.fullmatch(r"[0-9a-f]{64}", entry.content_sha256 or "")


def test_fetch_finds_every_registered_file_in_the_mirror(mirror):
    for path in REGISTRY:
        found = fetch(path, download=False)
        assert found == mirror / path


def test_mirror_folder_wins_over_cache(isolated_data):
    entry, packed = make_entry(isolated_data, b"1 2 3\n")
    registry = {entry.path: entry}
    put(isolated_data / "cache", entry, packed)
    in_mirror = put(isolated_data / "mirror", entry, packed)
    assert fetch(entry.path, registry=registry) == in_mirror


def test_recompressed_gzip_is_accepted_by_content(isolated_data):
    entry, _ = make_entry(isolated_data, b"same content, other header\n")
    recompressed = gzip.compress(b"same content, other header\n", mtime=999, compresslevel=1)
    assert hashlib.sha256(recompressed).hexdigest() != entry.sha256
    path = put(isolated_data / "mirror", entry, recompressed)
    assert fetch(entry.path, registry={entry.path: entry}, download=False) == path


def corrupt_copy_error(isolated_data) -> tuple[RemoteFile, Path, str]:
    """A registered file whose only copy has one flipped byte: (entry, copy, fetch's error)."""
    entry, packed = make_entry(isolated_data, b"0123456789" * 50)
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2] ^= 0xFF
    path = put(isolated_data / "mirror", entry, bytes(corrupt))
    with pytest.raises(DataError) as error:
        fetch(entry.path, registry={entry.path: entry})
    return entry, path, str(error.value)


def test_corrupt_file_gives_one_clear_error(isolated_data):
    entry, path, message = corrupt_copy_error(isolated_data)
    assert entry.path in message and str(path) in message
    assert UNREACHABLE in message          # the URL to get a good copy from
    assert "D2L_DATA_DIR" in message       # and how to point at a mirror
    assert "Fix:" in message


def test_corrupt_copy_error_leads_with_the_corruption_not_the_download(isolated_data):
    """The first line names the file, the bad copy and its checksums; the failed download and
    the fix come after."""
    entry, path, message = corrupt_copy_error(isolated_data)
    first, *rest = message.splitlines()
    assert first.startswith(f"{entry.path}: the copy at {path} is corrupt (its sha256 is ")
    assert f"expected {entry.sha256}" in first
    assert "download" not in first
    rest = "\n".join(rest)
    assert "the download failed" in rest and UNREACHABLE in rest
    assert "Fix: delete the corrupt copy" in rest
    with pytest.raises(DataError, match=rf"^{re.escape(entry.path)}: the copy at .* is corrupt"):
        fetch(entry.path, registry={entry.path: entry}, download=False)


def test_any_flipped_byte_in_a_gzip_copy_is_a_data_error(isolated_data):
    """Damage anywhere (header, deflate stream, trailer) is reported as a DataError, never as
    a raw zlib error; only bytes that do not change the content (the gzip header's time stamp
    and OS byte) may be damaged and still accepted."""
    content = bytes(range(256)) * 8
    entry, packed = make_entry(isolated_data, content)
    registry = {entry.path: entry}
    rejected = 0
    for index in range(len(packed)):
        corrupt = bytearray(packed)
        corrupt[index] ^= 0x55
        path = put(isolated_data / "mirror", entry, bytes(corrupt))
        try:
            fetch(entry.path, registry=registry, download=False)
        except DataError as error:
            assert str(error).startswith(f"{entry.path}: the copy at {path} is corrupt")
            rejected += 1
        else:
            assert 4 <= index <= 9 and gzip.decompress(path.read_bytes()) == content
    assert rejected >= len(packed) - 6


def test_truncated_file_is_reported_as_truncated(isolated_data):
    entry, packed = make_entry(isolated_data, bytes(range(256)) * 40)
    path = put(isolated_data / "mirror", entry, packed[: len(packed) // 2])
    with pytest.raises(DataError, match=rf"^.*{re.escape(str(path))} is corrupt .*truncated"):
        fetch(entry.path, registry={entry.path: entry})


def test_missing_file_without_network_names_file_url_and_fix(isolated_data):
    entry, _ = make_entry(isolated_data, b"never stored")
    with pytest.raises(DataError) as error:
        fetch(entry.path, registry={entry.path: entry})
    message = str(error.value)
    assert entry.path in message and UNREACHABLE in message
    assert "download failed" in message and "Fix:" in message
    assert message.startswith(f"{entry.path}: no copy was found, and the download failed")
    assert not list((isolated_data / "cache").rglob("*.part"))  # nothing half-written is left


def test_wrong_checksum_in_registry_rejects_the_real_file(mirror, isolated_data):
    real = REGISTRY["mnist/t10k-labels-idx1-ubyte.gz"]
    wrong = RemoteFile(real.path, (UNREACHABLE,), "0" * 64, content_sha256="1" * 64)
    put(isolated_data / "mirror", wrong, (mirror / real.path).read_bytes())
    with pytest.raises(DataError, match=f"expected {'0' * 64}"):
        fetch(real.path, registry={real.path: wrong})


def test_download_is_verified_and_atomic(isolated_data):
    entry, packed = make_entry(isolated_data, b"downloaded payload\n")
    source = isolated_data / "server" / "values.txt.gz"
    source.parent.mkdir()
    source.write_bytes(packed)
    entry = RemoteFile(entry.path, (source.as_uri(),), entry.sha256, entry.content_sha256)
    registry = {entry.path: entry}
    got = fetch(entry.path, registry=registry)
    assert got == isolated_data / "cache" / entry.path
    assert got.read_bytes() == packed
    assert not list(got.parent.glob("*.part"))
    source.unlink()  # the second call must not need the network
    assert fetch(entry.path, registry=registry) == got


def test_bad_download_leaves_nothing_behind(isolated_data):
    entry, _ = make_entry(isolated_data, b"expected payload")
    source = isolated_data / "server.gz"
    source.write_bytes(gzip.compress(b"something else"))
    entry = RemoteFile(entry.path, (source.as_uri(),), entry.sha256, entry.content_sha256)
    with pytest.raises(DataError, match="downloaded, but its sha256"):
        fetch(entry.path, registry={entry.path: entry})
    assert not (isolated_data / "cache" / entry.path).exists()
    assert not list((isolated_data / "cache").rglob("*.part"))


def test_unknown_file_is_a_key_error_listing_known_ones():
    with pytest.raises(KeyError, match="mnist/t10k-labels-idx1-ubyte.gz"):
        fetch("mnist/not-a-file.gz")


def test_search_dirs_order(isolated_data, monkeypatch):
    first, second = isolated_data / "a", isolated_data / "b"
    monkeypatch.setenv("D2L_DATA_DIR", f"{first}{data.os.pathsep}{second}")
    dirs = data.search_dirs()
    assert dirs[:2] == [first, second]
    assert dirs[2:] == [data.REPO_DATA_DIR, data.SYSTEM_DATA_DIR, data.cache_dir()]


def test_system_dataset_folder_is_searched(mirror, isolated_data):
    entry = REGISTRY["fashion-mnist/t10k-labels-idx1-ubyte.gz"]
    target = isolated_data / "usr-share" / entry.path
    target.parent.mkdir(parents=True)
    # Debian's package re-compresses the files: other bytes, same content.
    target.write_bytes(gzip.compress(gzip.decompress((mirror / entry.path).read_bytes()), mtime=0))
    assert fetch(entry.path, download=False) == target
    shutil.rmtree(target.parent)
