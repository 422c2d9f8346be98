"""Every chapter follows the book's conventions (CONTRIBUTING.md): checked statically,
so a violation is reported without running anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def toc_files() -> set[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = {toc["root"]}
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            files.add(chapter["file"])
            files.update(section["file"] for section in chapter.get("sections", []))
    return files


def cells_of(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_toc_and_chapters_agree():
    listed = toc_files()
    for name in listed:
        assert any((ROOT / f"{name}{suffix}").exists() for suffix in (".md", ".ipynb")), \
            f"_toc.yml lists {name}, which does not exist"
    for path in NOTEBOOKS:
        assert path.relative_to(ROOT).with_suffix("").as_posix() in listed, \
            f"{path.relative_to(ROOT)} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    cells = cells_of(path)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert cells[0]["cell_type"] == "markdown" and source(cells[0]).startswith("# "), \
        "the first cell is the chapter's '# Title'"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        "notebooks are committed without outputs"
    setup = source(code[0])
    assert 'find_spec("d2l_utils")' in setup and "D2L_UTILS_SOURCE" in setup, \
        "the first code cell installs d2l_utils when it is missing (Colab)"
    assert "set_seed(" in setup, "the first code cell sets the seeds"
    everything = "\n".join(source(c) for c in code)
    assert not re.search(r"^\s*from \S+ import \*", everything, re.M), "no star imports"
    assert not re.search(r"[\"'](/work/|/home/|/Users/|\.\./data)", everything), \
        "no machine-specific or working-directory-relative paths"
    assert re.search(r"^\s*assert ", everything, re.M), "claims are asserted"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_have_hidden_executed_solutions(path):
    cells = cells_of(path)
    headings = [i for i, c in enumerate(cells)
                if c["cell_type"] == "markdown" and re.search(r"^## Exercises", source(c), re.M)]
    assert headings, "the chapter ends with '## Exercises'"
    solutions = [c for c in cells[headings[0]:] if c["cell_type"] == "code"
                 and source(c).startswith("# Solution to exercise")]
    assert solutions, "each exercise has a solution cell"
    for cell in solutions:
        assert "hide-cell" in cell.get("metadata", {}).get("tags", []), \
            "solutions are hidden on the website (tag hide-cell)"
        assert "assert" in source(cell), "a solution checks its answer"


EXPORT_CELL_LIMIT = 25  # non-blank lines; CONTRIBUTING.md asks for about 15


def exported_cells(path: Path) -> list[tuple[int, list[str]]]:
    cells = []
    for index, cell in enumerate(cells_of(path)):
        text = source(cell)
        if cell["cell_type"] == "code" and re.match(r"#\|\s*export:", text):
            cells.append((index, text.split("\n")))
    return cells


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exported_cells_are_short(path):
    """A reader takes in an exported cell at a glance: at most EXPORT_CELL_LIMIT non-blank
    lines, unless the cell says why not on a '#| long: <reason>' line."""
    too_long = []
    for index, lines in exported_cells(path):
        code = [line for line in lines[1:] if line.strip() and not line.startswith("#|")]
        reason = [line for line in lines if line.startswith("#| long:")]
        if len(code) > EXPORT_CELL_LIMIT and not (reason and len(reason[0]) > 20):
            too_long.append(f"cell {index}: {len(code)} lines")
    assert not too_long, (f"exported cells over {EXPORT_CELL_LIMIT} lines (split them, or "
                          f"justify with '#| long: <reason>'): {too_long}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_fits_the_page(path):
    """The website's column shows 100 characters of code at 1280 px."""
    long_lines = [f"cell {i}: {line[:40]}..." for i, cell in enumerate(cells_of(path))
                  if cell["cell_type"] == "code"
                  for line in source(cell).split("\n") if len(line) > 100]
    assert not long_lines, f"code lines over 100 characters: {long_lines[:10]}"


def math_macros() -> set[str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return set(config["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_bold_vector_and_matrix_macros_are_defined(path):
    """The book writes a vector as \\vx and a matrix as \\mW (_config.yml's MathJax macros):
    one used but not defined shows as red text on the website, and the build does not notice."""
    used = {name for cell in cells_of(path) if cell["cell_type"] == "markdown"
            for name in re.findall(r"\\(v[a-z]|m[A-Z])(?![A-Za-z])", source(cell))}
    assert used <= math_macros(), f"undefined macros: {sorted(used - math_macros())} " \
                                  "(add them to _config.yml's mathjax3_config macros)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_control_characters_in_cells(path):
    """A broken escape (a BEL where '\\a' was meant) renders as garbage on the website."""
    bad = [f"cell {i}: {ch!r}" for i, cell in enumerate(cells_of(path))
           for ch in set(source(cell)) if ord(ch) < 32 and ch not in "\n\t"]
    assert not bad, f"control characters: {bad}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapters_do_not_shadow_the_training_loop(path):
    """One story for training loops (CONTRIBUTING.md): a chapter that owns its loop names it
    train_<what>, and never redefines d2l_utils' fit or evaluate."""
    shadowing = [f"cell {i}" for i, cell in enumerate(cells_of(path)) if cell["cell_type"] ==
                 "code" and re.search(r"^def (fit|evaluate)\(", source(cell), re.M)]
    assert not shadowing, f"defines fit or evaluate (name it train_<what>): {shadowing}"


def _names_the_notebook_computes(cells: list[dict]) -> set[str]:
    """Names a notebook binds (assignments, loop targets, functions, classes, comprehension
    variables) plus what it imports from d2l_utils, whose code comes from the chapters."""
    import ast

    names: set[str] = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(source(cell))
        except SyntaxError:  # IPython magics
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("d2l_utils"):
                names.update(alias.asname or alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_assert_checks_something_the_notebook_computed(path):
    """An assert on constants alone (`assert 0.15 * 784 > 100`) cannot fail: it is not evidence.
    Each assert must mention a name the notebook computed or imported from d2l_utils."""
    import ast

    cells = cells_of(path)
    computed = _names_the_notebook_computes(cells)
    vacuous = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(source(cell))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert):
                used = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
                if not used & computed:
                    vacuous.append(f"cell {index}, line {node.lineno}: "
                                   f"{ast.unparse(node.test)[:60]}")
    assert not vacuous, f"asserts on nothing the notebook computed: {vacuous}"
