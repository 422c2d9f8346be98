"""One source of truth: modules generated from chapters' marked cells, and the drift check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from d2l_utils._book import export

ROOT = Path(__file__).resolve().parents[2]


def notebook(cells: list[tuple[str, str]]) -> str:
    return json.dumps({"cells": [{"cell_type": kind, "metadata": {}, "source": source,
                                  **({"outputs": [], "execution_count": None}
                                     if kind == "code" else {})}
                                 for kind, source in cells],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def one_chapter_book(root: Path, cells: list[tuple[str, str]]) -> Path:
    """A book in ``root`` (a package folder and one part) whose chapter 01_a has ``cells``;
    returns the chapter's path, to rewrite it."""
    (root / "d2l_utils").mkdir(exist_ok=True)
    part = root / "chapters" / "01_part"
    part.mkdir(parents=True, exist_ok=True)
    (part / "01_a.ipynb").write_text(notebook(cells))
    return part / "01_a.ipynb"


@pytest.fixture
def book(tmp_path) -> Path:
    first = one_chapter_book(tmp_path, [
        ("markdown", "# A"),
        ("code", "#| export: toy\nimport math\n\n\ndef area(r: float) -> float:\n"
                 "    return math.pi * r * r"),
        ("code", "print(area(1.0))"),
    ])
    (first.parent / "02_b.ipynb").write_text(notebook([
        ("code", "#| export: toy\ndef double(x):\n    return 2 * x"),
        ("code", "#|export:other\nVALUE = 1"),
    ]))
    return tmp_path


def test_generates_modules_with_provenance(book):
    assert export.main(["--root", str(book)]) == 0
    toy = (book / "d2l_utils" / "toy.py").read_text()
    assert toy.startswith(export.HEADER)
    assert "# source: chapters/01_part/01_a.ipynb" in toy
    assert "# --- chapters/01_part/01_a.ipynb, cell 1 ---" in toy
    assert "# --- chapters/01_part/02_b.ipynb, cell 0 ---" in toy
    assert toy.index("def area") < toy.index("def double")  # book order
    assert "print(area" not in toy and "#| export" not in toy
    namespace: dict = {}
    exec(compile(toy, "toy.py", "exec"), namespace)
    assert namespace["double"](21) == 42
    assert (book / "d2l_utils" / "other.py").read_text().rstrip().endswith("VALUE = 1")


def test_check_detects_drift_and_orphans(book, capsys):
    export.main(["--root", str(book)])
    assert export.main(["--root", str(book), "--check"]) == 0
    generated = book / "d2l_utils" / "toy.py"
    generated.write_text(generated.read_text() + "\nEDITED = True\n")
    assert export.main(["--root", str(book), "--check"]) == 1
    assert "toy.py differs" in capsys.readouterr().err
    export.main(["--root", str(book)])
    (book / "d2l_utils" / "gone.py").write_text(export.HEADER + "\n")
    assert export.main(["--root", str(book), "--check"]) == 1
    assert "no chapter exports it" in capsys.readouterr().err


def test_core_modules_cannot_be_overwritten(book):
    (book / "d2l_utils" / "data.py").write_text('"""A hand-written core module."""\n')
    (book / "chapters" / "01_part" / "03_c.ipynb").write_text(
        notebook([("code", "#| export: data\nX = 1")]))
    with pytest.raises(ValueError, match="hand-written core module"):
        export.collect(book)


def test_generated_modules_are_recognised_by_their_header(book):
    export.main(["--root", str(book)])
    (book / "d2l_utils" / "core.py").write_text('"""Hand-written."""\n')
    assert export.is_generated(book / "d2l_utils" / "toy.py")
    assert not export.is_generated(book / "d2l_utils" / "core.py")
    assert export.hand_written_modules(book) == {"core"}


def test_generated_modules_import_only_the_core_and_earlier_chapters():
    """Layering: a chapter's module may use the core and modules of chapters before it,
    never a later chapter's (the book is read in order) nor the website machinery."""
    import ast
    import re

    package = ROOT / "d2l_utils"
    core = export.hand_written_modules(ROOT)
    first_chapter = {}
    for path in package.glob("*.py"):
        if export.is_generated(path):
            first_chapter[path.stem] = re.search(r"^# source: (\S+)", path.read_text(),
                                                 re.M).group(1)
    assert first_chapter, "no generated modules found"
    for module, chapter in first_chapter.items():
        tree = ast.parse((package / f"{module}.py").read_text())
        imported = {node.module.split(".")[1] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("d2l_utils.")}
        imported |= {alias.name.split(".")[1] for node in ast.walk(tree)
                     if isinstance(node, ast.Import) for alias in node.names
                     if alias.name.startswith("d2l_utils.")}
        for name in imported:
            assert name in core or (name in first_chapter and first_chapter[name] <= chapter), \
                f"{module} (from {chapter}) imports d2l_utils.{name}, which is neither core " \
                f"nor from an earlier chapter"


def test_the_repository_is_in_sync():
    """The CI guard: every generated module equals what its chapters export."""
    result = subprocess.run([sys.executable, "-m", "d2l_utils._book.export", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_leading_docstring_becomes_the_module_docstring(book):
    first = book / "chapters" / "01_part" / "00_first.ipynb"
    first.write_text(notebook([("code", '#| export: documented\n"""Tools of chapter 0."""\n'
                                        "import math\n\nTAU = 2 * math.pi")]))
    export.main(["--root", str(book)])
    module = book / "d2l_utils" / "documented.py"
    import ast

    tree = ast.parse(module.read_text())
    assert ast.get_docstring(tree) == "Tools of chapter 0."
    assert module.read_text().count('"""') == 2  # no second, default docstring


def test_a_class_continued_in_a_later_cell_is_exported_whole(tmp_path):
    one_chapter_book(tmp_path, [
        ("code", '#| export: shapes\nclass Square:\n    """A square."""\n\n'
                 "    def __init__(self, side: float) -> None:\n        self.side = side\n"),
        ("markdown", "Its area is the side squared."),
        ("code", "#| export: shapes\nUNIT = Square(1.0)"),
        ("code", "#| export: shapes\nclass Square(Square):  # continued: the area\n"
                 "    # area = side ** 2\n    def area(self) -> float:\n"
                 "        return self.side ** 2\n"),
        ("code", "print(Square(2.0).area())"),
    ])
    text = export.render("shapes", export.collect(tmp_path)["shapes"])
    assert text.count("class Square") == 1 and "Square(Square)" not in text
    assert "    # --- chapters/01_part/01_a.ipynb, cell 3 (Square, continued) ---" in text
    assert "    # area = side ** 2\n    def area(self) -> float:" in text
    # the class is whole before the cell that uses it
    assert text.index("def area") < text.index("UNIT = Square(1.0)")
    namespace: dict = {}
    exec(compile(text, "shapes.py", "exec"), namespace)
    assert namespace["Square"](3.0).area() == 9.0 and namespace["UNIT"].area() == 1.0
    assert namespace["Square"].__doc__ == "A square."


def test_a_continuation_that_starts_with_a_decorated_method_keeps_the_decorator(tmp_path):
    one_chapter_book(tmp_path, [
        ("code", "#| export: shapes\nclass Square:\n    side = 1.0\n"),
        ("code", "#| export: shapes\nclass Square(Square):\n    # a second constructor\n"
                 "    @classmethod\n    def unit(cls) -> 'Square':\n        return cls()\n"),
    ])
    text = export.render("shapes", export.collect(tmp_path)["shapes"])
    assert "    # a second constructor\n    @classmethod\n    def unit(cls)" in text
    namespace: dict = {}
    exec(compile(text, "shapes.py", "exec"), namespace)
    assert isinstance(namespace["Square"].unit(), namespace["Square"])


def test_a_continuation_needs_the_class_and_no_docstring(tmp_path):
    chapter = one_chapter_book(tmp_path, [
        ("code", "#| export: shapes\nclass Circle(Circle):\n    pass")])
    with pytest.raises(ValueError, match="continues a class Circle that no earlier"):
        export.render("shapes", export.collect(tmp_path)["shapes"])
    chapter.write_text(notebook([
        ("code", "#| export: shapes\nclass Circle:\n    pass"),
        ("code", '#| export: shapes\nclass Circle(Circle):\n    """Again."""\n    r = 1')]))
    with pytest.raises(ValueError, match="takes no docstring"):
        export.render("shapes", export.collect(tmp_path)["shapes"])
    chapter.write_text(notebook([
        ("code", "#| export: shapes\nclass Circle:\n    pass"),
        ("code", "#| export: shapes\nclass Circle(Circle):\n    r = 1\n\n\ndef area():\n"
                 "    return 3")]))
    with pytest.raises(ValueError, match="only when it is alone in its cell"):
        export.render("shapes", export.collect(tmp_path)["shapes"])
