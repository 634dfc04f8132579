"""Collect every notebook of the book as a pytest test, run through nbval.

A notebook is a jupytext MyST markdown file (front matter with
``format_name: myst``) anywhere under ``book/``; a new one is picked up with no
list to edit. Each is converted with jupytext into a temporary ``.ipynb`` and
run cell by cell by nbval (``--nbval-lax``: outputs are not compared, but a
cell that raises, an assertion included, fails its test) in a fresh kernel of
the current environment, started in the notebook's own folder as the book
build does.

Notebook kernels compute on the strict GPU stand-in (``MBOOK_DEVICE=strict``,
:mod:`mbook.core.strict`) unless ``MBOOK_DEVICE`` is set: a page that would
break on a GPU (a device array handed to matplotlib or ``np.testing``, a host
array mixed into device arithmetic) fails here, on any machine. The stand-in
computes with NumPy, so the outputs are the CPU's; set ``MBOOK_DEVICE=cpu``
(or ``gpu``) to run the pages on that device instead.

A notebook whose every cell passed is stored, with its outputs, in the
execution cache of Jupyter Book (``_build/.jupyter_cache``): the cache is keyed
on the code cells, so a ``jupyter-book build`` after the tests shows these
outputs instead of executing each notebook a second time. A changed notebook
no longer matches its key and is executed by the build as usual.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest
from _pytest.compat import legacy_path
from nbval.plugin import IPyNbFile

BOOK = Path(__file__).resolve().parent
EXECUTION_CACHE = BOOK.parent / "_build" / ".jupyter_cache"  # Jupyter Book's default location
STAGING = BOOK.parent / "_build" / ".executed"  # executed notebooks waiting to be cached
PAGE_DEVICE = "strict"  # pages run on the GPU stand-in unless MBOOK_DEVICE says otherwise
# A Python warning as the warnings module prints it ("file:line: UserWarning: message").
WARNING = re.compile(r"\b[A-Z]\w*Warning: .*")


def is_myst_notebook(path: Path) -> bool:
    """True for a jupytext MyST markdown notebook (not for a plain markdown page)."""
    with open(path, encoding="utf-8") as f:
        if f.readline().strip() != "---":
            return False
        for line in f:
            if line.strip() == "---":
                return False
            if line.strip() == "format_name: myst":
                return True
    return False


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix == ".md" and is_myst_notebook(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None


class MystNotebook(IPyNbFile):
    """nbval's notebook collector, fed the jupytext conversion of a MyST notebook."""

    _converted: Path | None = None
    _collecting = False

    @property
    def fspath(self):
        # nbval reads the notebook from `fspath` while collecting and starts the kernel in
        # `fspath.dirname`: read the converted copy, but run in the page's own folder.
        return legacy_path(self._converted if self._collecting else self.path)

    def collect(self):
        self.failed = False
        relative = self.path.relative_to(BOOK)
        self._converted = self.config._tmp_path_factory.getbasetemp() / "notebooks" / relative.with_suffix(".ipynb")
        self._converted.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(jupytext.read(self.path), self._converted)
        self._collecting = True
        try:
            self.cells = list(super().collect())
        finally:
            self._collecting = False
        return self.cells

    def setup(self):
        # The kernel inherits this process's environment when it starts.
        previous = os.environ.get("MBOOK_DEVICE")
        os.environ["MBOOK_DEVICE"] = previous or PAGE_DEVICE
        try:
            super().setup()
        finally:
            if previous is None:
                os.environ.pop("MBOOK_DEVICE")

    def teardown(self):
        super().teardown()
        if os.environ.get("MBOOK_PAGE_CACHE", "1") != "0" and not self.failed and all(cell.test_outputs is not None for cell in self.cells):
            self._stage_executed()

    def _stage_executed(self):
        """Write the executed notebook (outputs, execution counts) for the book's cache."""
        for count, cell in enumerate(self.cells, start=1):
            cell.cell.outputs = cell.test_outputs
            cell.cell.execution_count = count
        target = STAGING / self.path.relative_to(BOOK).with_suffix(".ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(self.nb, target)
        (target.parent / (target.name + ".uri")).write_text(str(self.path))


def printed_warnings(outputs) -> list[str]:
    """The warnings a cell printed to stderr (a reader with a live kernel sees them; the book drops stderr)."""
    return [line for output in outputs or () if output.get("output_type") == "stream" and output.get("name") == "stderr"
            for line in WARNING.findall(output.get("text", ""))]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not isinstance(item.parent, MystNotebook):
        return
    if call.when == "call" and report.passed:
        # A page must not leave its live reader with warnings: mend the cause, or catch the one
        # warning a page means to show and print what it says.
        warned = printed_warnings(getattr(item, "test_outputs", None))
        if warned:
            report.outcome = "failed"
            report.longrepr = f"the cell printed {len(warned)} warning(s):\n" + "\n".join(warned)
    if report.failed:
        item.parent.failed = True


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    # With pytest -n 2, two notebook kernels share the two cores: one BLAS/OpenMP thread each,
    # or their thread pools fight (linear solves were measured ~100x slower that way).
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")


def _caching(config) -> bool:
    # MBOOK_PAGE_CACHE=0: run pages without touching the book's cache (e.g. several sessions at once).
    return not _is_worker(config) and os.environ.get("MBOOK_PAGE_CACHE", "1") != "0"


def pytest_sessionstart(session):
    if _caching(session.config):
        shutil.rmtree(STAGING, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    # Only the controlling process writes the cache: SQLite and parallel workers do not mix.
    if not _caching(session.config) or not STAGING.exists():
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(EXECUTION_CACHE))
    stored = []
    for path in sorted(STAGING.rglob("*.ipynb")):
        uri = (path.parent / (path.name + ".uri")).read_text()
        cache.cache_notebook_bundle(CacheBundleIn(nbformat.read(path, as_version=4), uri), overwrite=True)
        stored.append(os.path.relpath(uri, BOOK.parent))
    shutil.rmtree(STAGING, ignore_errors=True)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and stored:
        reporter.write_line(f"notebooks cached for the book build: {', '.join(stored)}")


_notebook_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    # Runs in the controlling process with xdist too, so the sums cover every worker.
    path, _, cell = report.nodeid.partition("::")
    if path.endswith(".md") and cell.startswith("Cell"):
        _notebook_seconds[path] = _notebook_seconds.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _is_worker(terminalreporter.config) or not _notebook_seconds:
        return
    terminalreporter.section("slowest notebooks (seconds, all cells)")
    for path, seconds in sorted(_notebook_seconds.items(), key=lambda item: -item[1]):  # every page: its budget is 60 s
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
