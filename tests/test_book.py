"""The book's structure: the table of contents and the notebooks agree, and every notebook checks a claim."""

import importlib.util
import sys
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# The page runner of benchmarks/book.py, which walks _toc.yml itself (it runs where jupytext is not)
_spec = importlib.util.spec_from_file_location("book_benchmark", ROOT / "benchmarks" / "book.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)

TOC = list(runner.toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text())))
PAGES = sorted(p for p in (ROOT / "book").rglob("*.md") if ".ipynb_checkpoints" not in p.parts)
NOTEBOOKS = [p for p in PAGES if "format_name: myst" in p.read_text(encoding="utf-8")[:400]]


def test_toc_lists_only_pages_that_exist():
    missing = [entry for entry in TOC if not (ROOT / f"{entry}.md").exists()]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"


def test_every_page_is_in_the_toc():
    listed = {ROOT / f"{entry}.md" for entry in TOC}
    orphans = [str(p.relative_to(ROOT)) for p in PAGES if p not in listed]
    assert not orphans, f"pages missing from _toc.yml: {orphans}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_notebook_checks_its_claim(path):
    notebook = jupytext.read(path)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "assert " in code or "assert_allclose" in code, f"{path.name} asserts nothing"
    assert "import mbook" in code or "from mbook" in code, f"{path.name} does not use mbook"
    kernel = notebook.metadata.get("kernelspec", {}).get("name")
    assert kernel == "python3", f"{path.name}: kernelspec {kernel!r}, expected python3"


def test_the_page_runner_reads_pages_without_jupytext(monkeypatch):
    """benchmarks/book.py runs pages on the GPU machine, which has no jupytext: its own reader must give
    jupytext's code cells on every page, and its own choice of the notebook pages NOTEBOOKS's."""
    expected = {p: [c.source for c in jupytext.read(p).cells if c.cell_type == "code"] for p in NOTEBOOKS}
    monkeypatch.setitem(sys.modules, "jupytext", None)  # `import jupytext` raises ImportError
    for page in NOTEBOOKS:
        assert runner.code_cells(page) == expected[page], page.name
    in_toc = [ROOT / (name + ".md") for name in TOC]
    assert runner.toc_pages() == [p for p in in_toc if p in NOTEBOOKS]


def test_the_page_runner_splits_device_work_from_host_work():
    """On the stand-in, the time inside its operations (what a GPU takes over) is told apart from host work
    (Python, host NumPy), which a GPU does not speed up."""
    import cProfile
    import pstats
    import time

    import numpy as np

    from mbook.core import strict

    data = strict.asarray(np.ones((400, 400)))
    host = np.ones((400, 400))

    def page():
        for _ in range(20):
            data @ data  # device work: a matrix product on the stand-in
        tic = time.perf_counter()
        while time.perf_counter() - tic < 0.2:  # host work: Python alone
            sum(range(1000))
        host @ host  # host NumPy: host work too

    profile = cProfile.Profile()
    tic = time.perf_counter()
    profile.runcall(page)
    wall = time.perf_counter() - tic
    device = runner._stand_in_seconds(pstats.Stats(profile))
    assert 0 < device < wall - 0.2  # at least the 0.2 s of Python is host work
    profile = cProfile.Profile()
    profile.runcall(lambda: [data @ data for _ in range(20)])
    only_device = runner._stand_in_seconds(pstats.Stats(profile))
    assert only_device == pytest.approx(sum(row[2] for row in pstats.Stats(profile).stats.values()), rel=0.5)
