"""Figures, exercises and equations are numbered per page in the built book, and references agree.

Reads the built HTML (``_build/html``, after ``jupyter-book build``; no browser needed). On every page

- figure captions read Fig. 1, 2, ..., exercises Exercise 1, 2, ..., equation numbers (1), (2), ... in page
  order (book/_ext/page_numbering.py; without it Sphinx counts them over the whole book);
- every "Solution to Exercise n" links to an exercise on the same page that is numbered n;
- every ``{numref}`` and ``{eq}`` reference points to a figure or equation on the same page (per-page numbers
  would make one on another page ambiguous) and shows that figure's or equation's number.

Run: ``.venv/bin/python -m pytest tests/browser`` after ``jupyter-book build``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"


def _owner_id(tag) -> str | None:
    """The id of the nearest element around ``tag`` that has one (the figure, exercise or equation)."""
    parent = tag.find_parent(lambda t: t.has_attr("id"))
    return parent["id"] if parent is not None else None


def numbering_problems(html: str) -> list[str]:
    """Every way the page's numbering is not per page or its references disagree, in words."""
    soup = BeautifulSoup(html, "html.parser")
    article = soup.select_one("article.bd-article") or soup
    problems = []

    labels = {}  # element id -> its number as shown ("Fig. 2", "Exercise 1", "(3)")
    sequences: dict[str, list[int]] = {}
    for span in article.select("span.caption-number"):
        kind, _, number = span.get_text(" ", strip=True).rpartition(" ")
        if not number.isdigit():
            problems.append(f"caption number {span.get_text(strip=True)!r} is not a whole number")
            continue
        sequences.setdefault(kind, []).append(int(number))
        labels[_owner_id(span)] = f"{kind} {number}"
    for span in article.select("span.eqno"):
        match = re.match(r"\((\d+)\)", span.get_text(strip=True))
        if match is None:
            problems.append(f"equation number {span.get_text(strip=True)!r} is not (n)")
            continue
        sequences.setdefault("equation", []).append(int(match.group(1)))
        labels[_owner_id(span)] = f"({match.group(1)})"
    for kind, numbers in sequences.items():
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append(f"{kind} numbers run {numbers}, not 1 to {len(numbers)}")

    for title in article.select("div.solution p.admonition-title"):
        link = title.find("a", href=True)
        if link is None:
            continue  # a solution titled without its exercise
        href, shown = link["href"], link.get_text(" ", strip=True)
        if not href.startswith("#"):
            problems.append(f"'Solution to {shown}' links to another page ({href})")
        elif labels.get(href[1:]) != shown:
            problems.append(f"'Solution to {shown}' links to {href}, numbered {labels.get(href[1:])!r}")

    for link in article.select("a.reference.internal[href]"):
        href, shown = link["href"], link.get_text(" ", strip=True)
        is_numref = link.select_one("span.std-numref") is not None
        is_eqref = "#equation-" in href
        if not (is_numref or is_eqref):
            continue
        if not href.startswith("#"):
            problems.append(f"reference {shown!r} points to another page ({href}): its number is ambiguous")
        elif labels.get(href[1:]) != shown:
            problems.append(f"reference {shown!r} to {href}, which is numbered {labels.get(href[1:])!r}")
    return problems


def built_pages() -> list[Path]:
    return sorted((HTML / "book").rglob("*.html")) if HTML.exists() else []


PAGES = built_pages()


@pytest.mark.skipif(not PAGES, reason="no built book: run `jupyter-book build .` first")
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(HTML)) for p in PAGES])
def test_numbers_restart_on_each_page(page):
    problems = numbering_problems(page.read_text(encoding="utf-8"))
    assert not problems, f"{page.relative_to(HTML)}:\n  " + "\n  ".join(problems)


@pytest.mark.skipif(not PAGES, reason="no built book: run `jupyter-book build .` first")
def test_the_book_has_exercises_on_several_pages():
    """Per-page numbering is only shown where pages have numbered exercises: more than one page starts at 1."""
    starts = [p for p in PAGES if 'caption-number">Exercise 1 <' in p.read_text(encoding="utf-8")]
    assert len(starts) >= 2, f"pages with an Exercise 1: {starts}"


def _page(*parts: str) -> str:
    return '<article class="bd-article">' + "".join(parts) + "</article>"


def _exercise(ident: str, number: int) -> str:
    return (f'<div class="exercise admonition" id="{ident}"><p class="admonition-title">'
            f'<span class="caption-number">Exercise {number} </span></p></div>')


def _solution(target: str, number: int) -> str:
    return (f'<div class="solution admonition"><p class="admonition-title">Solution to'
            f'<a class="reference internal" href="{target}"> Exercise {number}</a></p></div>')


def _figure(ident: str, number: int) -> str:
    return (f'<figure id="{ident}"><figcaption><p><span class="caption-number">Fig. {number} </span>'
            "A caption.</p></figcaption></figure>")


def _numref(target: str, shown: str) -> str:
    return f'<a class="reference internal" href="{target}"><span class="std std-numref">{shown}</span></a>'


def test_the_check_sees_book_wide_numbers_and_wrong_references():
    """The check itself can fail: numbers continued from an earlier page, a solution titled with another
    exercise's number, a figure reference with the wrong number or to another page, a wrong equation number."""
    good = _page(_figure("f-a", 1), _figure("f-b", 2), _exercise("ex-a", 1), _exercise("ex-b", 2),
                 _solution("#ex-a", 1), _solution("#ex-b", 2), _numref("#f-b", "Fig. 2"),
                 '<div class="math" id="equation-e"><span class="eqno">(1)<a class="headerlink">#</a></span></div>',
                 '<a class="reference internal" href="#equation-e">(1)</a>')
    assert numbering_problems(good) == []

    continued = _page(_exercise("ex-a", 34), _exercise("ex-b", 35), _solution("#ex-a", 34))
    assert any("Exercise numbers run [34, 35]" in p for p in numbering_problems(continued))
    mismatched = _page(_exercise("ex-a", 1), _exercise("ex-b", 2), _solution("#ex-a", 2))
    assert any("'Solution to Exercise 2' links to #ex-a, numbered 'Exercise 1'" in p
               for p in numbering_problems(mismatched))
    wrong_figure = _page(_figure("f-a", 1), _figure("f-b", 2), _numref("#f-b", "Fig. 1"))
    assert any("numbered 'Fig. 2'" in p for p in numbering_problems(wrong_figure))
    other_page = _page(_figure("f-a", 1), _numref("other.html#f-c", "Fig. 1"))
    assert any("points to another page" in p for p in numbering_problems(other_page))
    equations = _page('<div class="math" id="equation-e"><span class="eqno">(7)</span></div>',
                      '<a class="reference internal" href="#equation-e">(8)</a>')
    assert len(numbering_problems(equations)) == 2  # (7) does not start at 1, and (8) is not (7)
