"""Scatter-adds, the adjoint of a gather, without a wait for the device.

Every back-projection, window overlap and binned sum of the library adds the
values of many samples into the cells they fall in: ``out[index[i]] +=
weights[i]``. NumPy does this with ``bincount``. CuPy's ``bincount`` is correct
but copies two numbers to the host on every call (it checks that no index is
negative and sizes its output from the largest index), so every call waits for
the device to finish the work queued before it: inside an iteration the host
can then no longer queue kernels while the GPU runs, and a page spends the
sum of the two times instead of the larger. Here the output's size is given,
and on CuPy one kernel adds each weight with ``atomicAdd``: one launch, no
copy, no new array.

The order of the additions on a GPU is the order in which threads arrive, so
sums differ from the CPU's (and between runs) in the last bits, as CuPy's own
``bincount`` does. On NumPy and on the strict stand-in the sums are
``bincount``'s, and an index outside the output raises, which the GPU kernel
cannot afford to check (out-of-range indices there are skipped).
"""

from __future__ import annotations

import functools

import numpy as np

from mbook.core import backend, device_counts, strict


def add(out, index, weights, *, drop_outside: bool = False):
    """Add ``weights[i]`` into ``out[index[i]]`` in place (a kernel: no checks but the index range).

    Parameters
    ----------
    out : (n,) ndarray, real
        The sums so far, on the device of ``index`` and ``weights``; changed in place (the weights are
        summed in float64, as by ``bincount``).
    index : (m,) ndarray, int
        Cell of each weight, ``0 <= index < n``.
    weights : (m,) ndarray, real
        Values to add.
    drop_outside : bool
        Skip the weights whose index is ``>= n`` instead of raising (e.g. ``out`` a view that starts
        inside a longer array, whose cells past its end are meant to be dropped).

    Returns
    -------
    out : (n,) ndarray
        The same array.

    Raises
    ------
    IndexError
        On NumPy and the stand-in, when an index is ``>= n`` and ``drop_outside`` is False.
    """
    xp = backend.get_array_module(out, index, weights)
    if xp is np or xp is strict.xp:
        if xp is strict.xp and out.dtype != np.float64:  # on a GPU: float64 zeros, the adds, the sum into out
            device_counts.note_operation()
            device_counts.note_operation()
        with device_counts.one_operation():  # one kernel on a GPU
            # weights and minlength by position: the stand-in unwraps positional arrays
            sums = xp.bincount(index, weights, out.shape[0])
            if sums.shape[0] != out.shape[0] and not drop_outside:  # the shape alone: no copy to the host
                raise IndexError(f"an index reaches {sums.shape[0] - 1}, outside the {out.shape[0]} cells of out")
            out += sums[:out.shape[0]]
        return out
    if out.dtype == np.float64:
        _atomic_add_kernel(xp)(index, weights, out.shape[0], out)
    else:  # the sums in float64, as bincount makes them, then added in once
        out += _atomic_add_kernel(xp)(index, weights, out.shape[0], xp.zeros(out.shape[0], dtype=xp.float64))
    return out


def bincount(index, weights, length: int):
    """Sums ``(length,)`` float64 of ``weights`` per cell of ``index``: :func:`add` into zeros (a kernel)."""
    xp = backend.get_array_module(index, weights)
    return add(xp.zeros(length, dtype=xp.float64), index, weights)


@functools.lru_cache(maxsize=None)
def _atomic_add_kernel(cupy):
    # Double-precision atomicAdd is native from compute capability 6.0 on; an index outside [0, n) is
    # skipped rather than written out of bounds.
    return cupy.ElementwiseKernel("S index, T weight, int64 n", "raw float64 out",
                                  "if (index >= 0 && index < n) atomicAdd(&out[index], (double) weight)",
                                  "mbook_scatter_add")
