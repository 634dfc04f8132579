"""The notebook runner itself: a raising cell or a failed assertion must fail pytest.

A throwaway book with three notebooks is run through the same conftest the
real book uses, in a separate pytest process.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# {title}

"""

NOTEBOOKS = {
    "good.md": ["x = 2 + 2", "assert x == 4"],
    "raises.md": ["x = 1", "raise RuntimeError('a cell that raises')", "y = 3"],
    "bad_claim.md": ["error = 0.02", "assert error < 5e-3, f'error {error} above bound'"],
    "warns.md": ["import warnings", "warnings.warn('a layout that changed')",
                 "import sys\nprint('progress 3/10', file=sys.stderr)"],
}


def _write_notebook(path, cells):
    body = "".join(f"```{{code-cell}} ipython3\n{source}\n```\n\n" for source in cells)
    path.write_text(HEADER.format(title=path.stem) + body)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    book = root / "book" / "chapter"
    book.mkdir(parents=True)
    shutil.copy(ROOT / "book" / "conftest.py", root / "book" / "conftest.py")
    (root / "book" / "plain.md").write_text("# A plain page\n\nNot a notebook: not collected.\n")
    for name, cells in NOTEBOOKS.items():
        _write_notebook(book / name, cells)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "book", "-rA", "-p", "no:cacheprovider",
         "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=60"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    return root, result


def test_a_raising_cell_fails_pytest(run):
    _, result = run
    assert result.returncode == 1, result.stdout
    assert "FAILED book/chapter/raises.md::Cell 1" in result.stdout
    assert "a cell that raises" in result.stdout


def test_a_failed_assertion_in_a_notebook_fails_pytest(run):
    _, result = run
    assert "FAILED book/chapter/bad_claim.md::Cell 1" in result.stdout
    assert "error 0.02 above bound" in result.stdout


def test_good_notebook_passes_and_plain_pages_are_not_collected(run):
    _, result = run
    assert "PASSED book/chapter/good.md::Cell 1" in result.stdout
    assert "plain.md" not in result.stdout
    assert "3 failed, 7 passed" in result.stdout  # 10 cells; the cell after the raising one still runs


def test_a_cell_that_prints_a_warning_fails_pytest(run):
    """A warning reaches a live reader's screen (the static book drops stderr): the page must not print one."""
    _, result = run
    assert "FAILED book/chapter/warns.md::Cell 1" in result.stdout
    assert "UserWarning: a layout that changed" in result.stdout
    assert "PASSED book/chapter/warns.md::Cell 2" in result.stdout  # other stderr (progress) is fine


def test_only_passing_notebooks_reach_the_book_cache(run):
    """The build looks notebooks up by their code; only the clean one must be found."""
    from jupyter_cache import get_cache

    root, _ = run
    cache = get_cache(str(root / "_build" / ".jupyter_cache"))
    good = cache.match_cache_notebook(jupytext.read(root / "book" / "chapter" / "good.md"))
    assert good.uri.endswith("good.md")
    for name in ("raises.md", "bad_claim.md", "warns.md"):
        with pytest.raises(KeyError):
            cache.match_cache_notebook(jupytext.read(root / "book" / "chapter" / name))
