"""What one device operation and one copy to the host cost, on the selected device.

`benchmarks/book.py` on the strict stand-in counts each page's device
operations and copies to the host; on a GPU each operation is at least one
kernel launch and each copy waits for the device, so the counts times these
two costs are the time a page cannot go below on that GPU, however fast its
kernels. This script measures the two costs on small arrays, where the
arithmetic is negligible, for the operations pages issue most (an element-wise
product, a reduction, a gather, a small matrix product, a 2D FFT of a 64²
batch, a random draw), a chain of eight element-wise operations fused into one
kernel (:mod:`mbook.core.fusion`) and the same chain as written, and a copy of
one value to the host after a kernel:

    MBOOK_DEVICE=gpu python3 benchmarks/launch.py      # the figures for book.py --launch-us/--sync-us
    MBOOK_DEVICE=cpu .venv/bin/python benchmarks/launch.py

It prints one row per operation: microseconds per call (median of
``--repeat`` runs of ``--calls`` calls each, the device synchronised before
and after each run), and the median over the operations, the figure to give
``book.py --launch-us``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mbook.core import backend, fusion


@fusion.elementwise
def _chain(xp, a, b, step):
    """Eight element-wise operations: one fused kernel on a GPU, eight launches as written."""
    c = a - step * (2.0 * a * b)
    d = b - step * (-2.0 * b * a)
    return c, d, c * c - d * d


def _synchronize():
    if backend.get_device() == "gpu":
        import cupy

        cupy.cuda.Device().synchronize()


def per_call(function, *, calls, repeat):
    """Median seconds per call of ``function()`` over ``repeat`` runs of ``calls`` calls."""
    function()  # compiles a CuPy kernel, plans an FFT
    times = []
    for _ in range(repeat):
        _synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            function()
        _synchronize()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per operation")
    args = parser.parse_args()
    if args.calls < 1 or args.repeat < 1:
        parser.error(f"--calls and --repeat must be >= 1, got {args.calls} and {args.repeat}")
    xp = backend.xp
    rng = np.random.default_rng(0)
    a = backend.asarray(rng.standard_normal((64, 64)).astype(np.float32))
    b = backend.asarray(rng.standard_normal((64, 64)).astype(np.float32))
    waves = backend.asarray((rng.standard_normal((4, 64, 64)) + 0j).astype(np.complex64))
    index = backend.asarray(rng.integers(0, 64, 256))
    draws = xp.random.default_rng(1)
    operations = {
        "a * b (64², float32)": lambda: a * b,
        "a.sum()": lambda: a.sum(),
        "a[index] (256 rows)": lambda: a[index],
        "a @ b (64 x 64)": lambda: a @ b,
        "fft2 (4 x 64², complex64)": lambda: backend.fft2(waves),
        "random draw (64²)": lambda: draws.standard_normal((64, 64), dtype=np.float32),
        "8 operations, fused": lambda: _chain(a, b, 0.1),
        "8 operations, as written": lambda: _chain.__wrapped__(backend.xp, a, b, 0.1),
    }
    print(backend.describe())
    print(f"{'operation':<28} {'µs per call':>12}")
    costs = []
    for name, function in operations.items():
        seconds = per_call(function, calls=args.calls, repeat=args.repeat)
        if not name.startswith("8 operations"):
            costs.append(seconds)
        print(f"{name:<28} {seconds * 1e6:12.1f}", flush=True)
    to_host = per_call(lambda: float((a * b).sum()), calls=args.calls, repeat=args.repeat)
    two_ops = per_call(lambda: (a * b).sum(), calls=args.calls, repeat=args.repeat)
    print(f"{'float((a * b).sum())':<28} {to_host * 1e6:12.1f}")
    print(f"\nmedian operation: {statistics.median(costs) * 1e6:.1f} µs (book.py --launch-us); "
          f"a copy to the host after two operations: {(to_host - two_ops) * 1e6:.1f} µs more than "
          f"the two alone (book.py --sync-us)")


if __name__ == "__main__":
    main()
