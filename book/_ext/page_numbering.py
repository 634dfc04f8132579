"""Figures, exercises, equations and tables numbered per page: Fig. 1, 2, ... and Exercise 1, 2, ... on each page.

Sphinx numbers enumerable nodes (figures, tables, code blocks, labelled equations, sphinx-exercise's exercises)
in ``env.toc_fignumbers``. Without a numbered toctree every section number is empty, so its counters run over the
whole book: the last page's exercise is "Exercise 33". A numbered toctree does not help here: Jupyter Book's parts
each restart at chapter 1 (two pages would both have a "Fig. 1.2") and the chapter titles carry their own
numbers. So once Sphinx has assigned its numbers (``env-get-updated``, where its TocTreeCollector does it), this
renumbers each page's entries of each type from 1, keeping their order. Everything that shows a number reads it
from ``env.toc_fignumbers`` when the page is written: the HTML captions and titles, ``{numref}`` and ``{eq}``
references, and sphinx-exercise's exercise titles and "Solution to Exercise n" (its ``get_node_number``), so
they agree. A ``{numref}`` to another page would then be ambiguous; the book has none (tests/browser checks
that references resolve on their own page).
"""

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment


def renumber_per_page(app: Sphinx, env: BuildEnvironment) -> list[str]:
    changed = []
    for docname, by_type in env.toc_fignumbers.items():
        renumbered = {
            figtype: {node_id: (index,) for index, (node_id, _) in
                      enumerate(sorted(numbers.items(), key=lambda item: item[1]), start=1)}
            for figtype, numbers in by_type.items()
        }
        if renumbered != by_type:
            env.toc_fignumbers[docname] = renumbered
            changed.append(docname)
    # Sphinx compared its own whole-book numbers with the last build's per-page ones and so already asks for
    # these pages to be written again; returning them says so where it did not.
    return changed


def setup(app: Sphinx) -> dict:
    # After the TocTreeCollector (a built-in listener at the default priority 500) has assigned the numbers.
    app.connect("env-get-updated", renumber_per_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
