"""The book's Sphinx extension: glossary terms where they are taught, one table of them all.
Each build runs in its own process, as Sphinx registers nodes globally."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("sphinx")

CHAPTER = """Perceptrons
===========

.. glossary-term:: perceptron
   :zh: 感知机

   A linear threshold unit that learns from its mistakes.

See :term:`Perceptron`.
"""


def build(tmp_path, pages: dict[str, str]) -> subprocess.CompletedProcess:
    source = tmp_path / "src"
    source.mkdir()
    (source / "conf.py").write_text("extensions = ['d2l_utils._book.sphinx_ext']\n")
    for name, text in pages.items():
        (source / f"{name}.rst").write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "-q", "-b", "html",
                           str(source), str(tmp_path / "out")], capture_output=True, text=True)


def test_glossary_terms_are_collected_into_one_table(tmp_path):
    result = build(tmp_path, {
        "index": "Book\n====\n\n.. toctree::\n\n   chapter\n   glossary\n",
        "chapter": CHAPTER,
        "glossary": "Glossary\n========\n\n.. d2l-glossary::\n",
    })
    assert result.returncode == 0, result.stderr
    glossary = (tmp_path / "out" / "glossary.html").read_text(encoding="utf-8")
    for text in ("perceptron", "感知机", "learns from its mistakes",
                 "chapter.html#term-perceptron", "Perceptrons"):
        assert text in glossary
    chapter = (tmp_path / "out" / "chapter.html").read_text(encoding="utf-8")
    assert 'id="term-perceptron"' in chapter and 'href="#term-perceptron"' in chapter


def test_a_term_without_chinese_fails_the_build(tmp_path):
    result = build(tmp_path, {"index": "T\n=\n\n.. glossary-term:: lonely\n\n   No Chinese.\n"})
    assert result.returncode != 0 and ":zh:" in result.stderr


def test_a_term_defined_twice_fails_the_build(tmp_path):
    result = build(tmp_path, {"index": "T\n=\n\n.. toctree::\n\n   a\n   b\n",
                              "a": CHAPTER, "b": CHAPTER.replace("Perceptrons", "Again")})
    assert result.returncode != 0 and "duplicate" in result.stderr
