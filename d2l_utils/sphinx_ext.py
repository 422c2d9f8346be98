"""The book's Sphinx extension (loaded from ``_config.yml``).

It does four things:

* sets ``D2L_BOOK_BUILD=1`` before any notebook executes, so interactive figures are
  precomputed for the static page and progress bars stay quiet (see ``runtime.in_book_build``);
* provides the ``glossary-term`` directive a chapter uses where it teaches a term::

      ```{glossary-term} perceptron
      :zh: 感知机
      A linear threshold unit whose weights are learned from its mistakes.
      ```

  which shows the definition in place and makes ``{term}`perceptron``` link to it;
* provides the ``d2l-glossary`` directive that the glossary page uses: a table of every
  term (English, Chinese, definition, where it is taught), collected from all chapters;
* provides the ``d2l-api`` directive that the API page uses: one section per module of
  ``d2l_utils`` (the core first, then the modules generated from the chapters, in book
  order), each documented from its docstrings by ``sphinx.ext.autodoc``;
* makes the website self-contained and readable everywhere: MathJax is served from the
  built site (copied from the ``django-static-mathjax`` package, a plain copy of MathJax 3
  that ``requirements.txt`` installs) instead of a CDN; myst-nb's require.js and widget
  scripts and sphinx-thebe's unused scripts are left out (the book shows no ipywidgets on the
  website, and no live-code button); a small style sheet (``static/d2l.css``) keeps figures
  within a phone's width; maths in a BibTeX title is typeset; and a figure without alt text
  gets one naming its section. The
  pages then need no network at all (``tests/test_site.py`` checks this in a browser).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from d2l_utils.runtime import BOOK_BUILD_ENV_VAR

PACKAGE_DIR = Path(__file__).resolve().parent


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
        if not hasattr(self.env, "d2l_glossary_pages"):
            self.env.d2l_glossary_pages = set()
        self.env.d2l_glossary_pages.add(self.env.docname)
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


# --- The API reference -------------------------------------------------------------------

# The hand-written core, in the order a reader meets it (sphinx_ext is the build's business).
API_CORE_MODULES = ("device", "runtime", "data", "datasets", "train", "plot", "interact",
                    "export")


def api_modules() -> list[str]:
    """The modules of the API page: the core, then every generated module in book order
    (by the first chapter named in its header), so a new chapter's module appears by itself."""
    from d2l_utils.export import CORE_MODULES

    generated = []
    for path in PACKAGE_DIR.glob("*.py"):
        if path.stem in CORE_MODULES:
            continue
        head = path.read_text(encoding="utf-8")[:2000]
        source = re.search(r"^# source: (\S+)", head, re.M)
        generated.append((source.group(1) if source else "~", path.stem))
    return list(API_CORE_MODULES) + [name for _, name in sorted(generated)]


_LITERAL = re.compile(r"(``.+?``)")


def plain_text_safe(line: str) -> str:
    """Escape what reStructuredText would misread in a docstring written as plain text:
    ``|x|`` (a substitution) and a lone ``*`` as in ``(out, in, *kernel)`` (an emphasis
    never closed). Double-backquoted literals, paired ``*emphasis*`` and a parameter such as
    ``**controls:`` at the start of a line are left alone."""
    indent = len(line) - len(line.lstrip())
    lead = re.match(r"\**", line[indent:]).group(0)
    head, rest = line[:indent + len(lead)], line[indent + len(lead):]
    parts = _LITERAL.split(rest)
    for i in range(0, len(parts), 2):  # the even parts lie outside literals
        text = re.sub(r"(?<!\\)\|", r"\\|", parts[i])
        if len(re.findall(r"(?<![\\*])\*(?!\*)", text)) % 2:
            text = re.sub(r"(?<!\\)\*", r"\\*", text)
        parts[i] = text
    return head + "".join(parts)


def _plain_text_docstrings(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                           lines: list[str]) -> None:
    lines[:] = [plain_text_safe(line) for line in lines]


class ApiDirective(SphinxDirective):
    """``d2l-api``: a section per module with ``automodule`` (used once, on the API page,
    inside an ``{eval-rst}`` block, as autodoc writes reStructuredText)."""

    def run(self) -> list[nodes.Node]:
        if not hasattr(self.env, "d2l_api_pages"):
            self.env.d2l_api_pages = set()
        self.env.d2l_api_pages.add(self.env.docname)
        lines = []
        for name in api_modules():
            title = f"``d2l_utils.{name}``"
            lines += [title, "-" * len(title), "", f".. automodule:: d2l_utils.{name}",
                      "   :members:", ""]
            self.env.note_dependency(str(PACKAGE_DIR / f"{name}.py"))
        holder = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source="d2l-api"), holder)
        return holder.children


# --- A self-contained website --------------------------------------------------------------

MATHJAX_DIST = "django-static-mathjax"   # MathJax 3.2, unmodified, as a data-only package
MATHJAX_ES5 = "mathjax/static/mathjax/es5"  # inside that distribution
MATHJAX_ENTRY = "tex-mml-chtml.js"        # the bundle Sphinx would load from the CDN
# What the bundle loads lazily: TeX extensions (autoload), CHTML fonts, menu and
# accessibility (speech) components. Nothing else of MathJax is copied.
MATHJAX_PARTS = (MATHJAX_ENTRY, "input", "output/chtml", "output/chtml.js", "ui", "a11y", "sre",
                 "adaptors")
STATIC_DIR = PACKAGE_DIR / "static"
CSS_FILE = "d2l.css"


def mathjax_source() -> Path:
    """The folder of MathJax's browser bundles in the installed package."""
    try:
        folder = Path(importlib.metadata.distribution(MATHJAX_DIST).locate_file(MATHJAX_ES5))
    except importlib.metadata.PackageNotFoundError:
        folder = None
    if folder is None or not (folder / MATHJAX_ENTRY).is_file():
        raise RuntimeError(f"MathJax is not installed: pip install -r requirements.txt "
                           f"(the website serves its own copy, from the {MATHJAX_DIST} package)")
    return Path(folder)


def _use_local_assets(app: Sphinx, config: Config) -> None:
    """Point MathJax at the site's own copy and keep myst-nb from adding widget scripts."""
    if str(config.mathjax_path).startswith(("http://", "https://", "//")):
        config.mathjax_path = f"mathjax/{MATHJAX_ENTRY}"  # relative: under _static/
    # The book shows no ipywidgets on the website (interactive figures are precomputed), so
    # the require.js and widget-manager scripts myst-nb would load from CDNs are never needed.
    config.nb_ipywidgets_js = {}
    # The theme logs a console error on a first visit when no colour mode is configured.
    if not config.html_context.get("default_mode"):
        config.html_context["default_mode"] = "auto"
    if str(STATIC_DIR) not in config.html_static_path:  # d2l.css: figures fit a phone's width
        config.html_static_path.append(str(STATIC_DIR))


def _drop_unused_thebe(app: Sphinx, pagename: str, templatename: str, context: dict,
                       doctree: nodes.document | None) -> None:
    """Jupyter Book always adds sphinx-thebe's scripts (twice its inline configuration, a
    script error) with a CDN address; the book offers no live-code button, so drop them."""
    if (app.config.html_theme_options.get("launch_buttons") or {}).get("thebe"):
        return
    context["script_files"] = [
        script for script in context.get("script_files", [])
        if not (str(getattr(script, "filename", script) or "").endswith("sphinx-thebe.js")
                or "THEBE_JS_URL" in (getattr(script, "attributes", None) or {}).get("body", ""))
    ]


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if app.builder.format != "html" or str(app.config.mathjax_path).startswith("http"):
        return
    source, target = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)


def _add_alt_text(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """A figure from a code cell has no alt text unless its cell gives one; name its section."""
    for image in doctree.findall(nodes.image):
        if image.get("alt"):
            continue
        section = next((n for n in _ancestors(image) if isinstance(n, nodes.section)), None)
        title = section.next_node(nodes.title).astext() if section else ""
        image["alt"] = f"Figure: the output of the code above, in “{title}”" if title else \
            "Figure: the output of the code above"


def _typeset_bibtex_maths(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """BibTeX titles write maths as ``{$O(1/k^2)$}``, which the bibliography would print
    raw: make it maths, which MathJax typesets like the chapters'."""
    found = False
    for citation in list(doctree.findall(nodes.citation)):
        for text in list(citation.findall(nodes.Text)):
            parts = re.split(r"(?<!\\)\$([^$]+)\$", str(text))
            if len(parts) > 1:
                text.parent.replace(text, [nodes.math(part, part) if i % 2 else nodes.Text(part)
                                           for i, part in enumerate(parts) if part])
                found = True
    if found:  # so that the page loads MathJax (decided when the page was read)
        app.env.get_domain("math").data["has_equations"][docname] = True


def _ancestors(node: nodes.Node):
    while node.parent is not None:
        node = node.parent
        yield node


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    terms = _terms(env)
    for key in [k for k, v in terms.items() if v["docname"] == docname]:
        del terms[key]
    getattr(env, "d2l_glossary_pages", set()).discard(docname)
    getattr(env, "d2l_api_pages", set()).discard(docname)


def _merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment
           ) -> None:
    _terms(env).update(_terms(other))
    if hasattr(other, "d2l_glossary_pages"):
        if not hasattr(env, "d2l_glossary_pages"):
            env.d2l_glossary_pages = set()
        env.d2l_glossary_pages |= other.d2l_glossary_pages
    if hasattr(other, "d2l_api_pages"):
        env.d2l_api_pages = getattr(env, "d2l_api_pages", set()) | other.d2l_api_pages


def _glossary_pages_outdated(app: Sphinx, env: BuildEnvironment) -> list[str]:
    """Rewrite the glossary and API pages on every build: any chapter may have changed a
    term or added a module."""
    return sorted(getattr(env, "d2l_glossary_pages", set())
                  | getattr(env, "d2l_api_pages", set()))


def setup(app: Sphinx) -> dict[str, Any]:
    os.environ[BOOK_BUILD_ENV_VAR] = "1"  # inherited by the kernels that execute notebooks
    # The book's models are small: one thread per kernel is as fast as two on an idle machine
    # and far faster on a busy one (idle OpenMP threads spin). A reader may still override it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    app.add_node(glossary_table)
    app.add_directive("glossary-term", GlossaryTermDirective)
    app.add_directive("d2l-glossary", GlossaryTableDirective)
    app.add_directive("d2l-api", ApiDirective)
    app.setup_extension("sphinx.ext.autodoc")   # the API page, from the docstrings,
    app.setup_extension("sphinx.ext.napoleon")  # which are written in Google style
    # before napoleon (priority 500) turns Google-style sections into reST
    app.connect("autodoc-process-docstring", _plain_text_docstrings, priority=400)
    app.connect("config-inited", _use_local_assets)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _drop_unused_thebe)
    app.connect("doctree-resolved", _add_alt_text)
    app.connect("doctree-resolved", _typeset_bibtex_maths)
    app.add_css_file(CSS_FILE)
    app.connect("doctree-resolved", _fill_glossary)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-updated", _glossary_pages_outdated)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
