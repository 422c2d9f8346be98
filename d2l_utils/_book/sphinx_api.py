"""The API reference page: the ``d2l-api`` directive writes one section per module of
``d2l_utils`` (the hand-written core first, then the modules generated from the chapters, in
book order), each documented from its docstrings by ``sphinx.ext.autodoc`` and napoleon.
Loaded by ``d2l_utils._book.sphinx_ext``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # d2l_utils/

# The hand-written core, in the order a reader meets it (sphinx_ext is the build's business).
API_CORE_MODULES = ("device", "runtime", "checks", "data", "datasets", "train", "plot", "interact")


def api_modules() -> list[str]:
    """The modules of the API page: the core, then every generated module in book order
    (by the first chapter named in its header), so a new chapter's module appears by itself."""
    from d2l_utils._book.export import is_generated

    generated = []
    for path in PACKAGE_DIR.glob("*.py"):
        if not is_generated(path):
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



def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    getattr(env, "d2l_api_pages", set()).discard(docname)


def _merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment
           ) -> None:
    if hasattr(other, "d2l_api_pages"):
        env.d2l_api_pages = getattr(env, "d2l_api_pages", set()) | other.d2l_api_pages


def _api_pages_outdated(app: Sphinx, env: BuildEnvironment) -> list[str]:
    """Rewrite the API page on every build: a chapter may have added a module."""
    return sorted(getattr(env, "d2l_api_pages", set()))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("d2l-api", ApiDirective)
    app.setup_extension("sphinx.ext.autodoc")   # the API page, from the docstrings,
    app.setup_extension("sphinx.ext.napoleon")  # which are written in Google style
    # before napoleon (priority 500) turns Google-style sections into reST
    app.connect("autodoc-process-docstring", _plain_text_docstrings, priority=400)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-updated", _api_pages_outdated)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
