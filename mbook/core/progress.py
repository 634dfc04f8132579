"""Progress bars for long loops, and memory budgets for large work.

``progress`` wraps :mod:`tqdm` (plain text on stderr: it works in a terminal,
a notebook and CI alike; the book hides stderr). ``MBOOK_PROGRESS=0`` turns
the bars off.

``plan_batches`` is the one place that turns a peak-memory estimate into a
batch size: large work (scan positions, S-matrix beams, image stacks)
estimates its bytes per item, asks for a batch size under a budget, and is
refused with the numbers when even one item does not fit.

Examples
--------
>>> from mbook.core.progress import plan_batches
>>> plan_batches(n_items=1000, bytes_per_item=2**20, fixed_bytes=0, budget=64 * 2**20)
64
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import threadpoolctl
from tqdm import tqdm

from mbook.core import backend, checks

DEFAULT_BUDGET = 2 * 2**30  # bytes: what a laptop can spare for one computation


def progress(iterable=None, *, desc=None, total=None, **kwargs):
    """A text progress bar over ``iterable`` (see :class:`tqdm.tqdm`)."""
    if iterable is not None and not hasattr(iterable, "__iter__"):
        raise TypeError(f"iterable must be iterable (or None), got {type(iterable).__name__} {iterable!r}")
    if total is not None:
        total = checks.check_count(total, "total", minimum=0)
    disable = os.environ.get("MBOOK_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, mininterval=0.5, **kwargs)


def run_batches(run, starts, *, threads: int = 1, desc=None, show: bool = True) -> None:
    """Call ``run(start)`` for every batch start, with a progress bar.

    With ``threads`` > 1 the batches run in a pool of that many threads, each
    with single-threaded CPU FFTs (:func:`mbook.core.backend.fft_workers`) and
    single-threaded BLAS while the pool runs: the batches share the cores, not
    each FFT or matrix product. Threads, not processes: NumPy,
    FFTW and pocketfft release the GIL, and the batches share their inputs.
    ``run`` stores its own result (into a preallocated output), so no list of
    batches is held. The pool is kept between calls, so its threads keep their
    FFT plans (:func:`mbook.core.fft_plans.fft2_plan`): a call with a few small
    batches (a local update of a few translates) would otherwise spend more
    on planning than on transforms. A call made from inside a pooled batch
    runs its batches in that thread (the pool's threads may all be busy).

    Parameters
    ----------
    run : callable
        ``run(start)`` for one batch.
    starts : sequence of int
        The batches' first items.
    threads : int
        Batches at once (>= 1).
    desc : str, optional
        The progress bar's label.
    show : bool
        Show the progress bar (False for work too short to watch).
    """
    if not callable(run):
        raise TypeError(f"run must be callable as run(start), got {run!r:.60}")
    threads = checks.check_count(threads, "threads")
    if not isinstance(show, bool):
        raise TypeError(f"show must be True or False, got {show!r}")
    starts = list(starts)
    if threads == 1 or getattr(_in_pool, "active", False):
        for start in progress(starts, desc=desc) if show else starts:
            run(start)
        return

    def run_one_thread(start):
        _in_pool.active = True
        with backend.fft_workers(1):
            run(start)

    with one_blas_thread():
        futures = [_pool(threads).submit(run_one_thread, start) for start in starts]
        try:
            for future in progress(futures, desc=desc, total=len(futures)) if show else futures:
                future.result()
        except BaseException:
            for future in futures:  # no batch outlives the call that failed
                future.cancel()
            wait(futures)
            raise


_pools: dict = {}  # threads -> ThreadPoolExecutor, kept for the process's life
_pools_lock = threading.Lock()
_in_pool = threading.local()


def one_blas_thread(xp=np):
    """A context in which NumPy's BLAS uses one thread (nothing to do for another array module ``xp``).

    Batches that run at once share the cores between them, not each matrix
    product; and products of a few atoms by a few hundred frequencies cost
    more to hand to a second BLAS thread than they save (about 30x on a
    busy 2-core machine). The limit is lifted when the context ends.
    """
    if xp is not np:
        return contextlib.nullcontext()
    return _blas_threads().limit(limits=1, user_api="blas")


@functools.cache
def _blas_threads():
    # Made once: building the controller reads the process's libraries (0.25 ms a call otherwise).
    return threadpoolctl.ThreadpoolController()


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="mbook-batches")
        return _pools[threads]


def client_threads(client) -> int:
    """Worker threads of a Dask ``client``: how many of its batches run at once (1 if it does not say).

    Work shared over a cluster is cut into a few pieces per thread, and a
    stream keeps about this many batches in flight.
    """
    nthreads = getattr(client, "nthreads", None)  # dask.distributed.Client.nthreads(): {worker: threads}
    return max(1, sum(nthreads().values())) if callable(nthreads) else 1


def memory_budget() -> int:
    """The memory budget [bytes]: ``MBOOK_MEMORY_GB`` if set, else 2 GiB."""
    value = os.environ.get("MBOOK_MEMORY_GB")
    if value is None:
        return DEFAULT_BUDGET
    try:
        budget = float(value)
    except ValueError:
        budget = -1.0
    if not budget > 0:
        raise ValueError(f"MBOOK_MEMORY_GB must be a number of GB > 0, got {value!r}")
    return int(budget * 2**30)


def plan_batches(*, n_items: int, bytes_per_item: int, fixed_bytes: int = 0, budget: int | None = None) -> int:
    """Largest batch of items whose estimated peak memory fits the budget.

    Parameters
    ----------
    n_items : int
        Number of items to process (e.g. probe positions).
    bytes_per_item : int
        Peak memory one item adds [bytes].
    fixed_bytes : int
        Memory needed whatever the batch size (e.g. the potential slices) [bytes].
    budget : int, optional
        Bytes allowed; default :func:`memory_budget`.

    Returns
    -------
    int
        Batch size, between 1 and ``n_items``.

    Raises
    ------
    MemoryError
        When the fixed memory plus one item exceeds the budget; the message
        gives both numbers.
    """
    n_items = checks.check_count(n_items, "n_items")
    bytes_per_item = checks.check_positive_number(bytes_per_item, "bytes_per_item")
    fixed_bytes = checks.check_positive_number(fixed_bytes, "fixed_bytes", allow_zero=True)
    budget = memory_budget() if budget is None else int(checks.check_positive_number(budget, "budget"))
    room = budget - fixed_bytes
    if room < bytes_per_item:
        raise MemoryError(
            f"needs at least {(fixed_bytes + bytes_per_item) / 2**20:.1f} MiB "
            f"({fixed_bytes / 2**20:.1f} MiB fixed + {bytes_per_item / 2**20:.1f} MiB per item) "
            f"but the budget is {budget / 2**20:.1f} MiB; raise MBOOK_MEMORY_GB or shrink the problem"
        )
    return int(min(n_items, room // bytes_per_item))
