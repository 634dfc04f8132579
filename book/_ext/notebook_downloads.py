"""Offer every notebook page of the book as an .ipynb download, with its outputs, beside its .md source.

The pages are jupytext Markdown files. MyST-NB writes each page's notebook to ``_build/jupyter_execute``
without the outputs it took from the execution cache, and the theme's download menu lists an
``.ipynb`` only when launch buttons are configured. This extension merges the cached outputs into that
notebook, stores it next to the page's sources and tells the theme, with or without launch buttons. A
page whose notebook is not in the cache is offered without outputs (still runnable).
"""

import shutil
from pathlib import Path

import nbformat


def _cache(app):
    from jupyter_cache import get_cache

    path = app.config["nb_execution_cache_path"] or Path(app.outdir).parent / ".jupyter_cache"
    return get_cache(path) if Path(path).exists() else None


def add_notebook_download(app, pagename, templatename, context, doctree):
    if not context.get("sourcename", "").endswith((".md", ".md.txt")):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists():  # a plain Markdown page: nothing to run
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.read(executed, as_version=4)
    cache = _cache(app)
    try:
        _, notebook = cache.merge_match_into_notebook(notebook)
    except (AttributeError, KeyError):  # no cache, or this page's code is not in it
        shutil.copy2(executed, target)
    else:
        nbformat.write(notebook, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # Before the theme builds its header buttons (priority 500), which read ``ipynb_source``.
    app.connect("html-page-context", add_notebook_download, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
