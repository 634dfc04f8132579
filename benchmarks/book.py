"""Every page of the book, one at a time: wall time, peak memory and where the time went.

Each page (a jupytext MyST notebook under ``book/``) runs in its own Python
process, cell after cell, at the size and on the device asked for
(``MBOOK_SIZE``, ``MBOOK_DEVICE``), with the working directory set to the
page's folder as the book build does, under cProfile. Per page it prints the
wall time, the peak host memory of that process (its maximum resident set
size), the peak device memory (CuPy's memory pool, on a GPU), and the five
functions with the most time of their own (cProfile's ``tottime``; the wall
time is measured under the profiler, which slows Python-heavy pages). A page
that fails or runs past ``--timeout`` is reported with the cell it stopped in.
Run from the repository root:

    .venv/bin/python benchmarks/book.py                              # every page, default size, this device
    .venv/bin/python benchmarks/book.py 02-inverse/phase-retrieval  # some pages (names as in _toc.yml)
    MBOOK_DEVICE=gpu .venv/bin/python benchmarks/book.py --size full --markdown

``--markdown`` prints the table as Markdown for the performance page, with
the date, the device line and the library versions above it.

``--seed-offset K`` runs each page that sets ``SEED = n`` with ``SEED = n + K``
(other noise draws, other random specimens): a claim that holds only for the
draw it was written with fails here. Pages without a ``SEED`` are skipped.

    .venv/bin/python benchmarks/book.py --seed-offset 1     # every claim, other draws

On the strict stand-in (``MBOOK_DEVICE=strict``) each page also reports its
device operations and device-to-host copies, the ``mbook`` functions that
issued the most operations and those that made the most copies
(:func:`mbook.core.strict.count_operations`). On
CuPy every operation is at least one kernel launch, which costs the host
microseconds whatever the array's size, and every copy to the host waits for
the device: the counts times ``--launch-us`` and ``--sync-us`` are the time a
GPU cannot go below however fast its kernels, and a count that grows with the
problem's items (atoms, frames, images) points at a loop that should be an
array axis. The two figures are assumptions until ``benchmarks/launch.py``
measures them on the GPU. The stand-in also tells the page's host work: its
wall time less the time inside the stand-in's operations (the work a GPU would
take over), i.e. Python, host NumPy and SciPy, figures and imports, which a GPU
does not speed up (measured under the profiler, which inflates Python-heavy
code: an upper bound).

    MBOOK_DEVICE=strict .venv/bin/python benchmarks/book.py          # with the operation counts

``--jobs N`` runs N pages at a time, each in its own process with the host's
cores shared out (its BLAS and OpenMP threads set to cores / N): on a GPU the
pages then share the card as well, so each page's time is an upper bound of
its time run alone, and their sum an upper bound of the book's. It is for a
short lease, where running the pages one at a time would not fit; the table's
header says how many ran at a time.

    MBOOK_DEVICE=gpu python3 benchmarks/book.py --size full --markdown --jobs 4

Timings are one run per page on a possibly shared machine; they are not tests.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
START = time.perf_counter()
TOP = 5
#: Assumed until benchmarks/launch.py measures them on the GPU: CuPy's host time per element-wise
#: operation on a small array, and per copy of a scalar to the host (which waits for the device) [µs].
LAUNCH_US = 10.0
SYNC_US = 20.0
#: Seconds a page stopped at its timeout has to report where it was before it is killed.
GRACE_S = 10.0
#: --log: the file that collects the last LOG_LINES lines each page printed (None: not kept).
LOG, LOG_LINES, LOG_LOCK = None, 40, threading.Lock()


def toc_pages():
    """Notebook pages in the order of ``_toc.yml`` (plain Markdown pages are skipped)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [ROOT / (name + ".md") for name in toc_files(toc)]
    return [page for page in pages if page.exists() and _is_myst_notebook(page)]


# The GPU machine has no jupytext, nbval or nbformat (the book's tool chain is not shipped there), so the
# page walk and the code-cell reader below stand alone; tests/test_book.py walks _toc.yml with this
# toc_files, and checks the reader against jupytext on every page.
def toc_files(node):
    """Every ``file:``/``root:`` entry of a jupyter-book ``_toc.yml``, depth first."""
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        if "root" in node:
            yield node["root"]
        for value in node.values():
            yield from toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from toc_files(item)


def _is_myst_notebook(path: pathlib.Path) -> bool:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "---":
        return False
    for line in lines[1:]:
        if line.strip() == "---":
            return False
        if line.strip() == "format_name: myst":
            return True
    return False


CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", flags=re.M | re.S)


def code_cells(page: pathlib.Path) -> list[str]:
    """The code cells of a MyST notebook, as jupytext reads them (with jupytext when it imports)."""
    try:
        import jupytext
    except ImportError:
        cells = []
        for body in CODE_CELL.findall(page.read_text(encoding="utf-8")):
            lines, options = body.split("\n"), False
            if lines and lines[0].strip() == "---" and "---" in lines[1:]:  # a YAML block of cell options
                lines, options = lines[lines.index("---", 1) + 1:], True
            while lines and re.match(r"^:[\w-]+:", lines[0]):  # ":tags: [...]" options
                lines, options = lines[1:], True
            if options and lines and not lines[0].strip():  # the blank line that closes the options
                lines = lines[1:]
            cells.append("\n".join(lines).rstrip("\n"))
        return cells
    return [cell.source for cell in jupytext.read(page).cells if cell.cell_type == "code"]


def page_name(page: pathlib.Path) -> str:
    return str(page.relative_to(ROOT / "book").with_suffix(""))


# ----------------------------------------------------------------------------- one page, in a child process
SEED_LINE = re.compile(r"^SEED = (\d+)", flags=re.M)


def run_page(path: str, top: int, seed_offset: int = 0) -> dict:
    """Run one page's code cells in this process and return what was measured (the child's side)."""
    import builtins
    import cProfile
    import pstats
    import resource

    import matplotlib

    matplotlib.use("Agg")  # figures are made and closed, not shown
    from IPython.display import display

    builtins.display = display  # pages call display() as in a notebook
    page = pathlib.Path(path)
    os.chdir(page.parent)
    cells = code_cells(page)
    if seed_offset:
        with_seed = [i for i, source in enumerate(cells) if SEED_LINE.search(source)]
        if not with_seed:
            return dict(status="skipped: no SEED", wall=0.0, host=None, device=None, functions=[], cells=len(cells))
        first = with_seed[0]
        cells[first] = SEED_LINE.sub(lambda m: f"SEED = {int(m.group(1)) + seed_offset}", cells[first], count=1)
    device = _DevicePeak()
    namespace = {"__name__": "__main__"}
    profile = cProfile.Profile()
    counting = _operation_counts()
    counts = counting.__enter__()
    status, stopped, start = "ok", None, time.perf_counter()
    profile.enable()
    try:
        for index, source in enumerate(cells):
            stopped = index
            exec(compile(source, f"{page.name}:cell{index + 1}", "exec"), namespace)
            import matplotlib.pyplot as plt

            plt.close("all")
    except BaseException as error:  # noqa: BLE001 (reported, not raised: the table goes on)
        status = f"{type(error).__name__} in cell {stopped + 1}: {str(error)[:120]}"
    profile.disable()
    wall = time.perf_counter() - start
    counting.__exit__(None, None, None)
    stats = pstats.Stats(profile)
    costly = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    functions = [(_label(key), row[2]) for key, row in costly]
    from mbook.core import fused_fft, fusion

    fell_back = sorted({str(key[0] if isinstance(key[0], str) else key) for key, ok in
                        list(fusion.status().items()) + list(fused_fft.status().items()) if not ok})
    if fell_back and status == "ok":  # on a GPU: a fused kernel or cuFFT callback failed its check
        status = f"ok, but these fused kernels fell back to plain operations: {', '.join(fell_back)}"
    operations = None if counts is None else dict(
        operations=counts.operations, to_host=counts.to_host, callers=counts.by_caller.most_common(top),
        copy_callers=counts.to_host_by_caller.most_common(3), device_seconds=_stand_in_seconds(stats))
    return dict(status=status, wall=wall, host=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                device=device.peak(), functions=functions, cells=len(cells), operations=operations)


def _stand_in_seconds(stats) -> float:
    """Seconds spent inside the strict stand-in's operations (entered from outside it), under the profiler.

    That is the work a GPU would take over (arithmetic, FFTs, the stand-in's own bookkeeping); the rest
    of the page's wall time is host work, Python and host NumPy, which a GPU does not speed up. Each
    edge into ``mbook/core/strict.py`` from another file adds its cumulative time (the stand-in unwraps
    its arrays before calling NumPy, so these edges do not nest).
    """
    from mbook.core import device_counts, strict

    stand_in = os.path.abspath(strict.__file__)
    inside = {stand_in, os.path.abspath(device_counts.__file__)}
    total = 0.0
    for (filename, _, _), (_, _, _, _, callers) in stats.stats.items():
        if os.path.abspath(filename) == stand_in:
            total += sum(edge[3] for caller, edge in callers.items() if os.path.abspath(caller[0]) not in inside)
    return total


def _operation_counts():
    """The stand-in's operation counter (by caller) on ``MBOOK_DEVICE=strict``, else a block yielding None."""
    import contextlib

    from mbook.core import backend, strict

    if backend.get_device() != "strict":
        return contextlib.nullcontext()
    return strict.count_operations(by_caller=True)


def _label(key):
    """``module.function`` of a cProfile key, short."""
    filename, line, function = key
    if filename == "~":  # a built-in: "{method 'fft2' ...}"
        return function.strip("{}").replace("built-in method ", "").replace("method ", "")[:40]
    path = pathlib.Path(filename)
    parts = path.with_suffix("").parts
    if "mbook" in parts:
        module = ".".join(parts[parts.index("mbook"):])
    elif "site-packages" in parts:
        module = ".".join(parts[parts.index("site-packages") + 1:])
    else:
        module = path.stem
    return f"{module}.{function}"


class _DevicePeak:
    """Peak bytes in use in CuPy's default memory pool (a memory hook), or None without a GPU."""

    def __init__(self):
        from mbook.core import backend

        self._peak = None
        if backend.get_device() != "gpu":
            return
        import cupy

        pool, holder = cupy.get_default_memory_pool(), self
        holder._peak = pool.used_bytes()

        class Hook(cupy.cuda.MemoryHook):
            name = "mbook-peak"

            def malloc_postprocess(self, **kwargs):
                holder._peak = max(holder._peak, pool.used_bytes())

        Hook().__enter__()  # for the rest of this process

    def peak(self):
        return self._peak


# ----------------------------------------------------------------------------- the parent: one child per page
#: Thread-count variables of the numerical libraries a page may load, shared out under --jobs.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def measure(page: pathlib.Path, *, timeout: float, top: int, seed_offset: int = 0, threads: int | None = None) -> dict:
    command = [sys.executable, __file__, "--child", str(page), "--top", str(top), "--seed-offset", str(seed_offset)]
    environment = dict(os.environ)
    if threads is not None:  # pages run side by side: each gets its share of the cores, not all of them
        environment.update({name: str(threads) for name in THREAD_VARIABLES if name not in os.environ})
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=environment)
    stopped = False
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Interrupt it first: the child reports the cell it was in and its profile so far (where the time
        # went is what a page past its time needs most); killed if it does not answer within the grace.
        stopped = True
        child.send_signal(signal.SIGINT)
        try:
            stdout, stderr = child.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            stdout, stderr = child.communicate()
    if LOG is not None:  # what the page printed, for a page that failed far away (a GPU machine)
        with LOG_LOCK, open(LOG, "a") as log:
            log.write(f"==== {page}\n" + "\n".join((stdout + stderr).splitlines()[-LOG_LINES:]) + "\n")
    for line in reversed(stdout.splitlines()):
        if line.startswith("MBOOK-PAGE "):
            row = json.loads(line[len("MBOOK-PAGE "):])
            if stopped:  # the child's status names the cell it was interrupted in
                row["status"] = f"stopped after {timeout:g} s" + re.sub(r"^KeyboardInterrupt(.*?):?\s*$", r"\1",
                                                                         row["status"])
            return row
    status = f"stopped after {timeout:g} s" if stopped else f"exit {child.returncode}: {stderr.strip().splitlines()[-1:]}"
    return dict(status=status, wall=time.perf_counter() - start, host=None, device=None, functions=[])


def _floor(ops, args):
    """Seconds of kernel launches and host waits that the counted operations cost on a GPU."""
    return (ops["operations"] * args.launch_us + ops["to_host"] * args.sync_us) * 1e-6


def _mib(value):
    return "—" if value is None else f"{value / 2**20:.0f}"


def header() -> str:
    import numpy
    import scipy

    from mbook.core import backend

    versions = f"Python {sys.version.split()[0]}, NumPy {numpy.__version__}, SciPy {scipy.__version__}"
    return (f"{datetime.date.today().isoformat()}; {backend.describe()}; {versions}; "
            f"MBOOK_SIZE={os.environ.get('MBOOK_SIZE', 'small')}; {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at start")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pages", nargs="*", help="pages as in _toc.yml without book/ (default: all)")
    parser.add_argument("--size", choices=("small", "full"), help="MBOOK_SIZE for the pages (default: as set)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per page before it is stopped")
    parser.add_argument("--top", type=int, default=TOP, help="functions listed per page")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--seed-offset", type=int, default=0, help="run pages with SEED + this (other draws)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run: no page starts with under 20 s left, each is stopped "
                             "at the end of the budget, and the table covers the pages run")
    parser.add_argument("--launch-us", type=float, default=LAUNCH_US,
                        help="host cost of one device operation on the GPU [µs] (strict stand-in counts)")
    parser.add_argument("--sync-us", type=float, default=SYNC_US,
                        help="cost of one copy to the host, a wait for the device [µs] (strict stand-in counts)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="pages run at a time (each time then an upper bound of the page's time run alone)")
    parser.add_argument("--log", help="append the last lines each page printed to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.top < 1 or args.timeout <= 0 or args.seed_offset < 0 or (args.budget is not None and args.budget <= 0):
        parser.error(f"--top must be >= 1, --timeout > 0, --seed-offset >= 0 and --budget > 0, got {args.top}, "
                     f"{args.timeout}, {args.seed_offset} and {args.budget}")
    if not 1 <= args.jobs <= 64:
        parser.error(f"--jobs must be 1 to 64 pages at a time, got {args.jobs}")
    if not (args.launch_us >= 0 and args.sync_us >= 0):
        parser.error(f"--launch-us and --sync-us must be >= 0 microseconds, got {args.launch_us} and {args.sync_us}")
    if args.child:
        print("MBOOK-PAGE " + json.dumps(run_page(args.child, args.top, args.seed_offset)), flush=True)
        return
    if args.size:
        os.environ["MBOOK_SIZE"] = args.size
    global LOG
    LOG = args.log
    pages = toc_pages()
    if args.pages:
        known = {page_name(page): page for page in pages}
        unknown = [name for name in args.pages if name not in known]
        if unknown:
            parser.error(f"unknown pages {unknown}; known: {sorted(known)}")
        pages = [known[name] for name in args.pages]

    threads = None if args.jobs == 1 else max(1, (os.cpu_count() or 1) // args.jobs)
    print(header() + (f"; every SEED + {args.seed_offset}" if args.seed_offset else "")
          + (f"; {args.jobs} pages at a time, {threads} threads each: each time is an upper bound of the page "
             "run alone" if args.jobs > 1 else ""), flush=True)
    results, not_run = {}, []

    def run_one(page):
        left = math.inf if args.budget is None else args.budget - (time.perf_counter() - START)
        if left < 20:
            not_run.append(page_name(page))
            return
        row = measure(page, timeout=min(args.timeout, left), top=args.top, seed_offset=args.seed_offset,
                      threads=threads)
        results[page_name(page)] = row
        report(page_name(page), row, args)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for done in [pool.submit(run_one, page) for page in pages]:
            done.result()
    rows = [(page_name(page), results[page_name(page)]) for page in pages if page_name(page) in results]
    not_run = [page_name(page) for page in pages if page_name(page) in not_run]
    print_table(rows, not_run, args)


def report(name: str, row: dict, args) -> None:
    """Print one page's lines as soon as it is measured (in one write: pages may finish side by side)."""
    costly = ", ".join(f"{function} {seconds:.1f}" for function, seconds in row["functions"])
    lines = [f"{name:<36} {row['wall']:7.1f} s  host {_mib(row['host']):>6} MiB  "
             f"device {_mib(row['device']):>6} MiB  {row['status']}\n    {costly}"]
    if row.get("operations"):
        ops = row["operations"]
        callers = ", ".join(f"{caller} {count:,}" for caller, count in ops["callers"])
        copiers = ", ".join(f"{caller} {count:,}" for caller, count in ops["copy_callers"])
        lines.append(f"    {ops['operations']:,} device operations, {ops['to_host']:,} copies to the host: "
                     f"{_floor(ops, args):.2f} s of launches and waits on a GPU\n    {callers}\n"
                     f"    copies to the host: {copiers or 'none'}\n"
                     f"    host work (outside the stand-in's operations): "
                     f"{row['wall'] - ops['device_seconds']:.1f} s of the {row['wall']:.1f}")
    print("\n".join(lines), flush=True)


def print_table(rows: list, not_run: list, args) -> None:
    """The table of the pages run (in the book's order) and the totals."""
    if args.markdown and any(row.get("operations") for _, row in rows):
        print(f"\n| page | wall [s] | host work [s] | device operations | copies to the host | launch floor [s] "
              f"({args.launch_us:g} µs, {args.sync_us:g} µs) | most operations |")
        print("|---|---|---|---|---|---|---|")
        for name, row in rows:
            ops = row.get("operations") or dict(operations=0, to_host=0, callers=[], device_seconds=0.0)
            callers = "; ".join(f"`{caller}` {count:,}" for caller, count in ops["callers"][:3])
            status = "" if row["status"] == "ok" else f" ({row['status']})"
            print(f"| {name}{status} | {row['wall']:.1f} | {row['wall'] - ops['device_seconds']:.1f} | "
                  f"{ops['operations']:,} | {ops['to_host']:,} | {_floor(ops, args):.2f} | {callers} |")
    elif args.markdown:
        print("\n| page | wall [s] | peak host [MiB] | peak device [MiB] | most time of their own [s] |")
        print("|---|---|---|---|---|")
        for name, row in rows:
            costly = "; ".join(f"`{function}` {seconds:.1f}" for function, seconds in row["functions"][:3])
            status = "" if row["status"] == "ok" else f" ({row['status']})"
            print(f"| {name}{status} | {row['wall']:.1f} | {_mib(row['host'])} | {_mib(row['device'])} | {costly} |")
    total = sum(row["wall"] for _, row in rows)
    failed = [name for name, row in rows if row["status"] not in ("ok", "skipped: no SEED")]
    print(f"\n{len(rows)} pages in {total:.0f} s ({args.jobs} at a time: {time.perf_counter() - START:.0f} s elapsed); "
          f"{len(failed)} not finished: {failed}"
          + (f"; not run (budget of {args.budget:g} s spent): {not_run}" if not_run else ""))


if __name__ == "__main__":
    main()
