"""Offer every notebook page of the book as an .ipynb download, with its outputs, beside its .md source.

The pages are jupytext Markdown files; MyST-NB executes each into ``_build/jupyter_execute``. The theme's
download menu lists an ``.ipynb`` only when launch buttons are configured; this extension copies the
executed notebook next to the page's sources and tells the theme, with or without launch buttons.
"""

import shutil
from pathlib import Path


def add_notebook_download(app, pagename, templatename, context, doctree):
    if not context.get("sourcename", "").endswith((".md", ".md.txt")):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists():  # a plain Markdown page: nothing to run
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # Before the theme builds its header buttons (priority 500), which read ``ipynb_source``.
    app.connect("html-page-context", add_notebook_download, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
