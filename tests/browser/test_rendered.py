"""The rendered book as a reader sees it, checked in headless Chromium.

Runs after the build (it reads ``_build/html``): every page is opened at a 1200 px wide window, MathJax
is let finish, and the page fails when

- a display equation, a figure, a table or a cell output is wider than the content column, or sits
  behind a horizontal scroll bar (a reader sees it cut off);
- MathJax could not typeset an equation (a TeX error or an undefined macro, shown in red);
- a figure is shown at less than 80 % of its native width (its text shrinks below legibility);
- raw Markdown table text (``| a | b |`` lines) or a Python traceback shows in the page;
- the page shows fewer figures than its executed notebook made.

A screenshot of every page is kept under ``_build/screenshots/``. Chromium comes from Debian's
``chromium`` package, driven by Playwright (``playwright`` in ``requirements.txt``; Playwright's own
browser download is not used).

Run: ``.venv/bin/python -m pytest tests/browser`` after ``jupyter-book build``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
EXECUTED = ROOT / "_build" / "jupyter_execute"
CACHE = ROOT / "_build" / ".jupyter_cache"
SCREENSHOTS = ROOT / "_build" / "screenshots"
WINDOW_WIDTH = 1200  # px: a laptop browser window
MIN_FIGURE_SCALE = 0.8  # a figure shown below 80 % of its native width has illegible text
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Evaluated in the page: every defect as [kind, where, detail]. Widths in CSS px.
CHECK_PAGE = """
(minScale) => {
  const problems = [];
  const column = document.querySelector('article.bd-article') || document.querySelector('main');
  const right = column.getBoundingClientRect().right + 1;
  const text = el => (el.innerText || el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 70);
  const scrolls = el => el.scrollWidth > el.clientWidth + 2;
  document.querySelectorAll('mjx-container[display="true"]').forEach(el => {
    const wrapper = el.closest('div.math') || el.parentElement;
    if (scrolls(el) || scrolls(wrapper) || el.getBoundingClientRect().right > right) {
      problems.push(['equation', text(wrapper) || 'display equation', 'wider than the column']);
    }
  });
  // A TeX error (MathJax's merror), an undefined macro (shown in red by MathJax's noundefined), or an
  // equation MathJax never found (an unbalanced brace hides its closing delimiter: raw TeX is shown).
  column.querySelectorAll('mjx-container mjx-merror, mjx-container [style*="color: red"]').forEach(el => {
    problems.push(['equation', text(el.closest('div.math') || el), 'MathJax could not typeset it']);
  });
  column.querySelectorAll('div.math').forEach(div => {
    if (!div.querySelector('mjx-container')) {
      problems.push(['equation', text(div), 'MathJax could not typeset it (raw TeX shown)']);
    }
  });
  document.querySelectorAll('article img').forEach(img => {
    const box = img.getBoundingClientRect();
    if (box.right > right) problems.push(['figure', img.src.split('/').pop(), 'wider than the column']);
    if (img.naturalWidth > 0 && box.width < minScale * img.naturalWidth) {
      problems.push(['figure', img.src.split('/').pop(),
                     `shown at ${Math.round(100 * box.width / img.naturalWidth)} % of its width`]);
    }
  });
  document.querySelectorAll('article table').forEach(table => {
    const holder = table.parentElement;
    if (table.getBoundingClientRect().right > right || scrolls(table) || scrolls(holder)) {
      problems.push(['table', text(table), 'wider than the column']);
    }
  });
  document.querySelectorAll('div.cell_output pre, div.output pre').forEach(pre => {
    if (scrolls(pre) || pre.getBoundingClientRect().right > right) {
      const long = (pre.textContent || '').split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '');
      problems.push(['output', long.trim().slice(0, 70), 'wider than the column']);
    }
  });
  const prose = Array.from(column.querySelectorAll('p')).map(p => p.textContent);
  prose.filter(t => /\\|\\s*(-{3,}|[\u2013\u2014]+)\\s*\\|/.test(t)).forEach(t =>
    problems.push(['table', t.trim().slice(0, 70), 'raw Markdown table text']));
  if (/Traceback \\(most recent call last\\)/.test(column.innerText)) {
    problems.push(['output', 'Traceback', 'a Python error is shown']);
  }
  return {problems: problems, figures: column.querySelectorAll('div.cell_output img').length};
}
"""


def built_pages() -> list[Path]:
    return sorted(p for p in (HTML / "book").rglob("*.html")) if HTML.exists() else []


def notebook_figures(page: Path) -> int | None:
    """Figures (PNG or SVG outputs) the executed notebook behind ``page`` made, from the book's execution
    cache, or None for a page with no executed notebook there."""
    notebook = EXECUTED / page.relative_to(HTML).with_suffix(".ipynb")
    if not notebook.exists() or not CACHE.exists():
        return None
    try:
        _, executed = get_cache(CACHE).merge_match_into_notebook(nbformat.read(notebook, as_version=4))
    except KeyError:  # a plain page: never executed
        return None
    return sum(1 for cell in executed.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
               if {"image/png", "image/svg+xml"} & set(output.get("data", {})))


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("Chromium is not installed: `apt-get install chromium` (Debian's package)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def inspect(browser, url: str, screenshot: Path | None = None) -> dict:
    page = browser.new_page(viewport={"width": WINDOW_WIDTH, "height": 900})
    try:
        page.goto(url, wait_until="load")
        # MathJax typesets after load; its startup promise resolves when every equation is laid out.
        page.evaluate("() => (window.MathJax && MathJax.startup && MathJax.startup.promise) || null")
        result = page.evaluate(CHECK_PAGE, MIN_FIGURE_SCALE)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        return result
    finally:
        page.close()


def report(problems) -> str:
    return "\n".join(f"  {kind}: {where!r} {detail}" for kind, where, detail in problems)


PAGES = built_pages()


@pytest.mark.skipif(not PAGES, reason="no built book: run `jupyter-book build .` first")
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(HTML)) for p in PAGES])
def test_page_reads_in_a_browser(browser, page):
    result = inspect(browser, page.as_uri(),
                     SCREENSHOTS / page.relative_to(HTML).with_suffix(".png"))
    assert not result["problems"], f"{page.relative_to(HTML)}:\n{report(result['problems'])}"
    expected = notebook_figures(page)
    if expected is not None:
        assert result["figures"] >= expected, (
            f"{page.relative_to(HTML)} shows {result['figures']} figures; its notebook made {expected}")


def test_the_check_sees_a_wide_equation_and_a_shrunken_figure(browser):
    """The check itself can fail: a built page given an over-wide equation, three equations MathJax cannot
    typeset, a shrunken figure and a raw table."""
    borrowed = HTML / "book" / "01-simulation" / "multislice.html"  # a page with MathJax and the theme
    if not borrowed.exists():
        pytest.skip("no built book to borrow a page from: run `jupyter-book build .` first")
    wide = r"\[" + " + ".join(f"a_{{{i}}} b_{{{i}}}" for i in range(120)) + r"\]"
    broken = [r"\[\begin{aligned} a &= b \\ c &= \frac{d \end{aligned}\]",  # unbalanced: left as raw TeX
              r"\[a = b & c\]", r"\[\undefinedmacro{x}\]"]  # a misplaced &, an undefined macro
    body = (f'<div class="math notranslate nohighlight">{wide}</div>'
            + "".join(f'<div class="math notranslate nohighlight">{tex}</div>' for tex in broken) +
            '<div class="cell_output"><img src="data:image/png;base64,' + _PNG_2000_PX + '" width="500"></div>'
            "<p>| method | error | --- | --- |</p><p>| a | b | \u2014 | \u2014 |</p>")
    html = re.sub(r'(<article class="bd-article"[^>]*>)', lambda m: m.group(1) + body,
                  borrowed.read_text(encoding="utf-8"), count=1)
    page = borrowed.with_name("defective-page-check.html")  # beside it, so its relative links work
    page.write_text(html, encoding="utf-8")
    try:
        problems = inspect(browser, page.as_uri())["problems"]
    finally:
        page.unlink()
    kinds = [(kind, detail.split(" ")[0]) for kind, _, detail in problems]
    assert ("equation", "wider") in kinds
    assert kinds.count(("equation", "MathJax")) == len(broken)
    assert ("figure", "shown") in kinds
    assert kinds.count(("table", "raw")) == 2  # hyphens, and the dashes typography turns them into


def _png(width: int, height: int) -> str:
    """A blank PNG of the given size, base64-encoded (a stand-in for a figure)."""
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff" * width for _ in range(height))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


_PNG_2000_PX = _png(2000, 20)
