"""The chapter-times page: what each chapter costs to run. Loaded by ``_book.sphinx_ext``.

The ``d2l-chapter-times`` directive becomes a table with one row per chapter: the seconds
its last execution took on the machine that built the site (``_book.execute`` records them in
the jupyter-cache, so a chapter rendered from the cache keeps the time of the run that
executed it), its slowest cell, and the time on a GPU from ``chapters/00_front/gpu_times.json``
(written by ``python -m d2l_utils._book.execute --record-gpu`` on a GPU machine; empty until
someone has done so, never invented).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from d2l_utils._book.sphinx_pages import note_page, rewrite_every_build

TIMES_PAGES = "d2l_times_pages"  # the env attribute: pages holding the times table


class chapter_times(nodes.General, nodes.Element):
    """Placeholder replaced by the table once every chapter's title is known."""


class ChapterTimesDirective(SphinxDirective):
    """``d2l-chapter-times``: the table of chapter times (used once, on the times page)."""

    def run(self) -> list[nodes.Node]:
        note_page(self.env, TIMES_PAGES)
        return [chapter_times()]


def gpu_times(srcdir: Path) -> dict[str, Any]:
    """The recorded accelerator times, or an empty record."""
    path = srcdir / "chapters" / "00_front" / "gpu_times.json"
    if not path.is_file():
        return {"seconds": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _paragraph(text: str) -> nodes.paragraph:
    paragraph = nodes.paragraph()
    paragraph += nodes.Text(text)
    return paragraph


def _fill(app: Sphinx, doctree: nodes.document, fromdocname: str) -> None:
    executions = getattr(app, "d2l_executions", [])
    gpu = gpu_times(Path(app.srcdir))
    for placeholder in doctree.findall(chapter_times):
        if not executions:
            placeholder.replace_self(_paragraph(
                "No chapter was executed by this build (execution is turned off), so there "
                "are no times to show."))
            continue
        table = nodes.table(classes=["d2l-times"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (55, 15, 15, 15):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row(["Chapter", "CPU (s)", "slowest cell (s)", "GPU (s)"])
        group += head
        body = nodes.tbody()
        cpu_total = gpu_total = 0.0
        for run in executions:
            docname = str(Path(run.notebook).with_suffix(""))
            link = nodes.reference(internal=True)
            link["refuri"] = app.builder.get_relative_uri(fromdocname, docname)
            title = app.env.titles.get(docname)
            link += nodes.Text(title.astext() if title else docname)
            on_cpu = run.device == "cpu"
            gpu_seconds = gpu["seconds"].get(run.notebook)
            if not on_cpu:
                gpu_seconds = run.seconds
            cpu_total += run.seconds if on_cpu else 0.0
            gpu_total += gpu_seconds or 0.0
            slowest = run.slowest_cell[1]
            body += _row([link, f"{run.seconds:.0f}" if on_cpu else "—",
                          f"{slowest:.0f}" if run.cell_seconds else "—",
                          f"{gpu_seconds:.0f}" if gpu_seconds is not None else "—"])
        body += _row([nodes.strong(text="whole book"), f"{cpu_total:.0f}", "",
                      f"{gpu_total:.0f}" if gpu["seconds"] else "—"])
        group += body
        first = executions[0]
        notes = [_paragraph(
            f"CPU: measured when this site was built, on a machine with {first.cores} cores "
            f"running {first.jobs} chapter(s) at a time, one kernel per chapter with its share "
            "of the cores. Each time includes starting the kernel and loading the data.")]
        if gpu["seconds"]:
            notes.append(_paragraph(
                f"GPU: {gpu.get('device', 'a GPU')}, PyTorch {gpu.get('torch', '?')}, recorded "
                f"on {gpu.get('date', '?')} with D2L_DEVICE=cuda."))
        else:
            notes.append(_paragraph(
                "GPU: no chapter has been timed on a GPU yet, so the column is empty. "
                "Maintainers with one run `D2L_DEVICE=cuda python -m d2l_utils._book.execute "
                "--record-gpu` and commit chapters/00_front/gpu_times.json."))
        placeholder.replace_self([table, *notes])


def _row(cells: list[nodes.Node | str]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        paragraph += nodes.Text(content) if isinstance(content, str) else content
        entry += paragraph
        row += entry
    return row


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_node(chapter_times)
    app.add_directive("d2l-chapter-times", ChapterTimesDirective)
    app.connect("doctree-resolved", _fill)
    rewrite_every_build(app, TIMES_PAGES)  # any chapter may have been executed again
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
