"""Pages that Sphinx must rewrite on every build (the glossary, the chapter times): their
content comes from every chapter, so they are stale whenever any chapter changes.

A directive calls ``note_page(env, key)`` when it is read; ``rewrite_every_build(app, key)``
keeps the set of such pages across incremental and parallel builds and marks them for writing.
"""

from __future__ import annotations

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment


def _pages(env: BuildEnvironment, key: str) -> set[str]:
    if not hasattr(env, key):
        setattr(env, key, set())
    return getattr(env, key)


def note_page(env: BuildEnvironment, key: str) -> None:
    """Record that the page being read holds a directive filled from every chapter."""
    _pages(env, key).add(env.docname)


def rewrite_every_build(app: Sphinx, key: str) -> None:
    """Keep ``env.<key>`` (a set of docnames) correct and rewrite those pages on every build."""

    def purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
        _pages(env, key).discard(docname)

    def merge(app: Sphinx, env: BuildEnvironment, docnames: set[str],
              other: BuildEnvironment) -> None:
        _pages(env, key).update(_pages(other, key))

    def outdated(app: Sphinx, env: BuildEnvironment) -> list[str]:
        return sorted(_pages(env, key))

    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("env-updated", outdated)
