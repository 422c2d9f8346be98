"""Shared fixtures. Tests run offline: the data registry is pointed at the shared mirror
(``../shared/data`` beside the repository) unless ``D2L_DATA_DIR`` is already set."""

from __future__ import annotations

import os
from pathlib import Path

# Figures in tests are drawn off screen; set once, before any test module imports matplotlib.
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

if "D2L_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["D2L_DATA_DIR"] = str(SHARED_DATA)

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:  # share the cores between xdist workers instead of oversubscribing them
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


@pytest.fixture
def mirror() -> Path:
    """The folder holding the real dataset files; skips when no mirror is available."""
    for folder in os.environ.get("D2L_DATA_DIR", "").split(os.pathsep):
        if folder and (Path(folder) / "mnist").is_dir():
            return Path(folder)
    pytest.skip("no data mirror: set D2L_DATA_DIR to a folder holding mnist/ etc.")


@pytest.fixture
def isolated_data(tmp_path, monkeypatch) -> Path:
    """An empty world: no mirror, an empty cache, nothing in the repo's data/ or /usr/share."""
    import d2l_utils.data as data

    monkeypatch.setenv("D2L_DATA_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("D2L_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "usr-share")
    (tmp_path / "mirror").mkdir()
    return tmp_path
