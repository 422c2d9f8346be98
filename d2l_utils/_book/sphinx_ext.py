"""The book's Sphinx extension (loaded from ``_config.yml``).

It sets ``D2L_BOOK_BUILD=1`` before any notebook executes, so interactive figures are
precomputed for the static page and progress bars stay quiet (see ``runtime.in_book_build``),
and it provides the glossary:

* the ``glossary-term`` directive a chapter uses where it teaches a term::

      ```{glossary-term} perceptron
      :zh: 感知机
      A linear threshold unit whose weights are learned from its mistakes.
      ```

  which shows the definition in place and makes ``{term}`perceptron``` link to it;
* the ``d2l-glossary`` directive that the glossary page uses: a table of every term (English,
  Chinese, definition, where it is taught), collected from all chapters.

It also loads ``sphinx_api`` (the API reference page) and ``sphinx_site`` (a website that
needs no network).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from d2l_utils._book.sphinx_pages import note_page, rewrite_every_build
from d2l_utils.runtime import BOOK_BUILD_ENV_VAR

logger = logging.getLogger(__name__)
GLOSSARY_PAGES = "d2l_glossary_pages"  # the env attribute: pages holding the glossary table


class glossary_table(nodes.General, nodes.Element):
    """Placeholder replaced by the glossary table once every chapter has been read."""


def _terms(env: BuildEnvironment) -> dict[str, dict[str, str]]:
    if not hasattr(env, "d2l_glossary"):
        env.d2l_glossary = {}
    return env.d2l_glossary


class GlossaryTermDirective(SphinxDirective):
    """``glossary-term``: define a term where it is taught, with its Chinese name."""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = True
    option_spec = {"zh": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        term = self.arguments[0].strip()
        chinese = self.options.get("zh", "").strip()
        if not chinese:
            raise self.error(f"glossary-term {term!r} needs a :zh: option (its Chinese term)")
        if not self.content:
            raise self.error(f"glossary-term {term!r} needs a one-line definition as content")
        anchor = "term-" + re.sub(r"[^a-z0-9]+", "-", term.lower()).strip("-")
        box = nodes.container(classes=["d2l-term"], ids=[anchor])
        heading = nodes.paragraph()
        heading += nodes.strong(text=term)
        heading += nodes.Text(f" ({chinese})")
        box += heading
        self.state.nested_parse(self.content, self.content_offset, box)
        std = self.env.get_domain("std")
        if hasattr(std, "_note_term"):  # also records the case-insensitive lookup
            std._note_term(term, anchor, location=box)
        else:
            std.note_object("term", term, anchor, location=box)
        _terms(self.env)[term.lower()] = {
            "term": term, "zh": chinese, "definition": " ".join(self.content).strip(),
            "docname": self.env.docname, "anchor": anchor,
        }
        return [box]


class GlossaryTableDirective(SphinxDirective):
    """``d2l-glossary``: the table of all terms (used once, on the glossary page)."""

    def run(self) -> list[nodes.Node]:
        note_page(self.env, GLOSSARY_PAGES)
        return [glossary_table()]


def _fill_glossary(app: Sphinx, doctree: nodes.document, fromdocname: str) -> None:
    env = app.env
    for placeholder in doctree.findall(glossary_table):
        table = nodes.table(classes=["d2l-glossary"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (20, 12, 48, 20):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row([nodes.Text(h) for h in ("Term", "中文", "Definition", "Taught in")])
        group += head
        body = nodes.tbody()
        for key in sorted(_terms(env)):
            entry = _terms(env)[key]
            link = nodes.reference(internal=True)
            link["refuri"] = (app.builder.get_relative_uri(fromdocname, entry["docname"])
                              + "#" + entry["anchor"])
            title = env.titles.get(entry["docname"])
            link += nodes.Text(title.astext() if title else entry["docname"])
            body += _row([nodes.strong(text=entry["term"]), nodes.Text(entry["zh"]),
                          nodes.Text(entry["definition"]), link])
        group += body
        placeholder.replace_self(table)


def _row(cells: list[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        paragraph += content
        entry += paragraph
        row += entry
    return row


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    terms = _terms(env)
    for key in [k for k, v in terms.items() if v["docname"] == docname]:
        del terms[key]


def _merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment
           ) -> None:
    _terms(env).update(_terms(other))


def _execute_chapters(app: Sphinx) -> None:
    """Before any page is read, execute the stale chapters into the jupyter-cache, several at
    a time (``_book.execute``), so that MyST-NB only renders them. A failure is reported here
    as a warning and MyST-NB's own execution of that notebook then fails the build."""
    from d2l_utils._book import execute

    if getattr(app.config, "nb_execution_mode", None) != "cache":
        return
    cache_path = Path(app.config.nb_execution_cache_path or execute.DEFAULT_CACHE)
    notebooks = execute.chapter_notebooks(Path(app.srcdir))
    executions = execute.execute_stale(notebooks, cache_path,
                                       timeout=int(app.config.nb_execution_timeout or 300),
                                       log=logger.info)
    # (The tests enforce the time budget; on a reader's slower machine the build still passes.)
    execute.save_times(executions, Path(app.outdir).parent / "notebook-times.json")
    app.d2l_executions = executions
    for run in executions:
        if run.error is not None:
            logger.warning(f"{run.notebook} failed to execute: {run.error}")
    logger.info("notebook times:\n" + execute.times_table(executions))


def setup(app: Sphinx) -> dict[str, Any]:
    os.environ[BOOK_BUILD_ENV_VAR] = "1"  # inherited by the kernels that execute notebooks
    # The book's models are small: one thread per kernel is as fast as two on an idle machine
    # and far faster on a busy one (idle OpenMP threads spin). A reader may still override it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Kernels must draw figures inline: a backend exported by the shell (MPLBACKEND=Agg, say)
    # would silently drop every figure from the book. Unset, ipykernel picks the inline one.
    os.environ.pop("MPLBACKEND", None)
    app.add_node(glossary_table)
    app.add_directive("glossary-term", GlossaryTermDirective)
    app.add_directive("d2l-glossary", GlossaryTableDirective)
    app.connect("doctree-resolved", _fill_glossary)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    rewrite_every_build(app, GLOSSARY_PAGES)  # any chapter may have changed a term
    app.connect("builder-inited", _execute_chapters)
    app.setup_extension("d2l_utils._book.sphinx_api")
    app.setup_extension("d2l_utils._book.sphinx_site")
    app.setup_extension("d2l_utils._book.sphinx_times")
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
