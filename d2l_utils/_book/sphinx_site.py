"""A self-contained website, readable everywhere. Loaded by ``d2l_utils._book.sphinx_ext``.

MathJax is served from the built site (copied from the ``django-static-mathjax`` package, a
plain copy of MathJax 3 that ``requirements.txt`` installs) instead of a CDN; myst-nb's
require.js and widget scripts and sphinx-thebe's unused scripts are left out (the book shows no
ipywidgets on the website, and no live-code button); a small style sheet (``static/d2l.css``)
keeps figures within a phone's width; maths in a BibTeX title is typeset; and a figure without
alt text gets one naming its section. The pages then need no network at all
(``tests/book/test_site.py`` checks this in a browser).
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config

PACKAGE_DIR = Path(__file__).resolve().parent

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
    """A figure from a code cell has no alt text unless its cell gives one. Use the
    description the book's figures carry (``plot.describe_figure``: titles and axis labels);
    failing that, name the figure's section."""
    for image in doctree.findall(nodes.image):
        if image.get("alt"):
            continue
        description = _png_description(Path(app.srcdir), docname, image.get("uri", ""))
        if description:
            image["alt"] = f"Figure: {description}"
            continue
        section = next((n for n in _ancestors(image) if isinstance(n, nodes.section)), None)
        title = section.next_node(nodes.title).astext() if section else ""
        image["alt"] = f"Figure: the output of the code above, in “{title}”" if title else \
            "Figure: the output of the code above"


def _png_description(srcdir: Path, docname: str, uri: str) -> str:
    """The ``Description`` text field of a PNG written by ``plot.figure_png``, or ``""``."""
    if not uri.endswith(".png"):
        return ""
    for path in (srcdir / uri, srcdir / Path(docname).parent / uri, Path(uri)):
        if path.is_file():
            try:
                from PIL import Image  # matplotlib's own dependency

                with Image.open(path) as png:
                    return str(png.text.get("Description", "")).strip()
            except (OSError, ValueError):
                return ""
    return ""


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


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _use_local_assets)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _drop_unused_thebe)
    app.connect("doctree-resolved", _add_alt_text)
    app.connect("doctree-resolved", _typeset_bibtex_maths)
    app.add_css_file(CSS_FILE)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
