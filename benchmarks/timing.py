"""Timing helpers shared by the benchmark scripts: GPU-synchronised medians in one process."""

from __future__ import annotations

import time

import numpy as np

from mbook.core import backend


def synchronize():
    """Wait for queued GPU work, so that a timer measures it (no-op on the CPU)."""
    backend.synchronize()


def median_time(function, repeat: int):
    """Median wall time of ``function()`` over ``repeat`` runs after one warm-up [s], and its result."""
    result = function()
    synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result
