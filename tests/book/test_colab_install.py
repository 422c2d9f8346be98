"""The Colab path: a page's launch button opens this repository's notebook, and the notebook's
first cell installs ``d2l_utils`` into an environment that lacks it, after which the chapter's
imports work.

Colab is stood in for by one fresh virtual environment (no system site-packages) holding only
what matters here that Colab has: Jupyter's kernel and PyTorch. ``torch==2.13.0`` is the
version CI tests; never an open range, which could pull gigabytes. The first code cell of a
chapter then runs in a real Jupyter kernel with ``D2L_UTILS_SOURCE`` pointing at a copy of
this checkout's package files (``pyproject.toml``, ``README.md``, ``d2l_utils/``): exactly what
``pip install git+https://github.com/...`` builds, and pip builds in place, so a copy keeps
the build's ``build/`` folder out of the working tree. The environment is made once and
shared by the checks (about two minutes, most of it installing PyTorch).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPOSITORY = "https://github.com/executable-deep-learning/book"
COLAB = "https://colab.research.google.com/github/executable-deep-learning/book/blob/main/"
SITE = Path(os.environ.get("D2L_SITE_DIR", ROOT / "_build" / "html"))
REQUIRED = os.environ.get("D2L_REQUIRE_SITE", "") not in ("", "0")
# What a Colab runtime has that matters here, at the versions requirements.txt pins.
COLAB_LIKE = ["torch==2.13.0", "ipykernel==7.4.0", "nbclient==0.11.0"]

RUN_NOTEBOOK = """
import json, sys
import nbformat
from nbclient import NotebookClient
notebook = nbformat.reads(sys.stdin.read(), as_version=4)
NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=True).execute()
errors = [[cell.metadata.get("where", ""), output["ename"] + ": " + output["evalue"]]
          for cell in notebook.cells for output in cell.get("outputs", [])
          if output.get("output_type") == "error"]
streams = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", [])
                  if o.get("output_type") == "stream")
print(json.dumps({"errors": errors, "stdout": streams}))
"""


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def imports_of(path: Path) -> list[str]:
    """The chapter's top-level import statements, from every code cell."""
    lines = []
    for source in code_cells(path):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "level", 0) == 0:
                if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                    lines.append(ast.unparse(node))
    return list(dict.fromkeys(lines))


def cell(source: str, where: str) -> dict:
    return {"cell_type": "code", "metadata": {"where": where}, "source": source,
            "outputs": [], "execution_count": None}


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A fresh environment with only Jupyter's kernel and PyTorch; returns (python, env, cwd)."""
    if not NOTEBOOKS:
        pytest.skip("no chapter notebooks yet")
    base = tmp_path_factory.mktemp("colab")
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    python = base / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "D2L_BOOK_BUILD")}
    env.update(PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
               VIRTUAL_ENV=str(base / "venv"), PIP_DISABLE_PIP_VERSION_CHECK="1",
               JUPYTER_DATA_DIR=str(base / "jupyter"),  # no user kernel spec can interfere
               JUPYTER_PLATFORM_DIRS="1", MPLBACKEND="Agg")
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile",
                                *COLAB_LIKE], env=env, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    source = base / "checkout"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "d2l_utils", source / "d2l_utils",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env["D2L_UTILS_SOURCE"] = str(source)
    work = base / "work"  # not the checkout: there, `import d2l_utils` would find its folder
    work.mkdir()
    return python, env, work


def run_in_kernel(colab, cells: list[dict]) -> dict:
    python, env, work = colab
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    result = subprocess.run([str(python), "-c", RUN_NOTEBOOK], input=json.dumps(notebook),
                            env=env, cwd=work, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_first_cell_installs_d2l_utils_then_every_chapter_imports(colab):
    python, env, work = colab
    absent = subprocess.run([str(python), "-c", "import d2l_utils"], env=env, cwd=work,
                            capture_output=True)
    assert absent.returncode != 0, "the fresh environment must not have d2l_utils yet"
    # The first chapter's first cell, in a fresh kernel: it installs, then imports.
    first = NOTEBOOKS[0].relative_to(ROOT).as_posix()
    check = ("import d2l_utils, sys\n"
             "assert d2l_utils.__file__.startswith(sys.prefix), d2l_utils.__file__\n"
             "print('installed at', d2l_utils.__file__)")
    result = run_in_kernel(colab, [cell(code_cells(NOTEBOOKS[0])[0], first),
                                   cell(check, "check")])
    assert not result["errors"], result["errors"]
    assert "installed at" in result["stdout"]
    # Every chapter's first cell (now a no-op install) and all its imports, in one kernel.
    cells = []
    for path in NOTEBOOKS:
        where = path.relative_to(ROOT).as_posix()
        cells.append(cell(code_cells(path)[0], where + ", first cell"))
        cells.append(cell("\n".join(imports_of(path)) or "pass", where + ", its imports"))
    result = run_in_kernel(colab, cells)
    assert not result["errors"], "on a fresh Colab-like environment:\n" + "\n".join(
        f"{where}: {error}" for where, error in result["errors"])


def test_launch_buttons_are_configured_for_this_repository():
    repository = CONFIG["repository"]
    assert repository["url"] == REPOSITORY and repository["branch"] == "main"
    assert repository.get("path_to_book", "") == ""
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_defaults_to_this_repository(path):
    setup = code_cells(path)[0]
    sources = re.findall(r"D2L_UTILS_SOURCE\"\s*,\s*\"([^\"]+)\"", setup)
    assert sources == [f"git+{REPOSITORY}"], \
        f"the first cell should default to git+{REPOSITORY}, found {sources}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_page_colab_link_opens_this_notebook(path):
    relative = path.relative_to(ROOT)
    page = SITE / relative.with_suffix(".html")
    if not page.is_file():
        if REQUIRED:
            pytest.fail(f"{page} was not built (D2L_REQUIRE_SITE is set, as in CI)")
        pytest.skip(f"no built page {page}: run `jupyter-book build . -W -n --keep-going`")
    links = set(re.findall(r"https://colab\.research\.google\.com/[^\"'\s<>]+",
                           page.read_text(encoding="utf-8")))
    assert links == {COLAB + relative.as_posix()}, links
