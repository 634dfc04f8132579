"""The wavelet embedding of the earth mover's distance on the device, many densities at once.

:func:`mbook.cryoem.wasserstein.wavelet_embedding` defines the embedding: the
detail coefficients of an orthonormal wavelet transform of the density
extended by zeros (PyWavelets' ``wavedecn`` in mode ``"zero"``), each level
weighted by ``Δ 2^{s (1 + n/2)}``, concatenated coarsest level first and,
within a level, in the sorted order of the sub-band keys (``"aad"``,
``"ada"``, ...). PyWavelets computes it on the host, one density at a time:
for the 400 volumes of 64³ of a research-size comparison, about 35 ms each
on one core, seconds of host work that a GPU would wait for.

Here one level of the transform along one axis is a matrix product: with
``h`` and ``g`` the decomposition filters (length L), the zero-extended
analysis step of a signal ``x`` of length N is

``a_o = Σ_j h_j x_{2o+1-j}``, ``d_o = Σ_j g_j x_{2o+1-j}``, ``o = 0 … M-1``, ``M = ⌊(N + L - 1)/2⌋``

(the full convolution, every second sample from the second on), i.e.
``[a | d] = x W`` with ``W`` an ``N × 2M`` banded matrix made once per length.
A level of an n-dimensional transform is n such products, one per axis, on a
whole batch of densities; the ``2ⁿ - 1`` detail sub-bands are then blocks of
the result, and the all-``a`` block is the next level's input. The same
coefficients as PyWavelets' up to rounding (sums in another order): the tests
compare them.

:func:`embed` is a kernel (no checks): its callers in
:mod:`mbook.cryoem.wasserstein` check the densities and batch them under the
memory budget (:func:`peak_bytes`).

Examples
--------
>>> import numpy as np
>>> from mbook.cryoem import wasserstein, wavelet_transform
>>> p = np.zeros((3, 16, 16)); p[:, 4, 4] = 1.0
>>> e = wavelet_transform.embed(p, sampling=1.0, wavelet="db2", levels=wasserstein.levels((16, 16)))
>>> e.shape == (3, wasserstein.embedding_size((16, 16), wavelet="db2"))
True
>>> bool(np.allclose(e[0], wasserstein.wavelet_embedding(p[0], wavelet="db2")))
True
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from mbook.core import backend


def peak_bytes(shape, wavelet, levels, itemsize=8) -> int:
    """Peak memory one density of ``shape`` adds to a batch of :func:`embed` [bytes] (a kernel: no checks).

    Four copies of the first level's output (the products along the axes and their contiguous inputs;
    it is ``Π 2M_i``, up to ``((N + L - 1) / N)ⁿ`` times the density, 3.4 times for 32³ and coif3), and
    three of the embedding (the weighted blocks, their concatenation, the caller's stack). Measured with
    tracemalloc: 21.8 MB for 64³ and coif3 (this gives 37), 8.3 MB for 32³ (11.5).
    """
    import pywt

    length = pywt.Wavelet(wavelet).dec_len
    first, sizes, embedding = None, list(shape), 0
    for _ in range(levels):
        halves = [(n + length - 1) // 2 for n in sizes]
        padded = int(np.prod([2 * m for m in halves]))  # this level's blocks, details and approximation
        first = padded if first is None else first
        embedding += padded - int(np.prod(halves))
        sizes = halves
    return itemsize * (4 * first + 3 * embedding)


@functools.lru_cache(maxsize=64)
def _analysis_matrix(n, wavelet, dtype, xp):
    """``W`` ``(n, 2M)``: the zero-extended analysis step ``[a | d] = x W`` of a signal of length n (a constant)."""
    import pywt

    filters = pywt.Wavelet(wavelet)
    lo, hi = np.asarray(filters.dec_lo), np.asarray(filters.dec_hi)
    half = (n + len(lo) - 1) // 2
    matrix = np.zeros((n, 2 * half))
    for o in range(half):
        for j in range(len(lo)):
            k = 2 * o + 1 - j  # the sample tap j meets at output o
            if 0 <= k < n:
                matrix[k, o], matrix[k, half + o] = lo[j], hi[j]
    return xp.asarray(matrix.astype(dtype))


def _level(array, ndim, wavelet):
    """One level along the last ``ndim`` axes: ``(array of [a | d] blocks, M per axis)``."""
    xp = backend.get_array_module(array)
    halves = []
    for axis in range(array.ndim - ndim, array.ndim):
        n = array.shape[axis]
        matrix = _analysis_matrix(n, wavelet, np.dtype(array.dtype).str, xp)
        array = xp.moveaxis(xp.moveaxis(array, axis, -1) @ matrix, -1, axis)
        halves.append(matrix.shape[1] // 2)
    return array, halves


def embed(densities, *, sampling, wavelet, levels):
    """Weighted wavelet coefficients ``(b, m)`` of a batch of densities ``(b, *shape)`` (a kernel: no checks).

    Parameters
    ----------
    densities : (b, n) or (b, n, n) or (b, n, n, n) ndarray
        Real densities on the device (float64 for PyWavelets' precision).
    sampling : float
        Pixel size Δ [Å].
    wavelet : str
        A PyWavelets orthogonal wavelet name.
    levels : int
        Levels of the transform (:func:`mbook.cryoem.wasserstein.levels`).

    Returns
    -------
    (b, m) ndarray
        On the device of ``densities``: the rows of
        :func:`mbook.cryoem.wasserstein.wavelet_embedding`.
    """
    xp = backend.get_array_module(densities)
    ndim = densities.ndim - 1
    batch = densities.shape[0]
    keys = [key for key in itertools.product((0, 1), repeat=ndim) if any(key)]  # sorted: "aad", "ada", ...
    approximation, per_level = densities, []
    for _ in range(levels):  # finest first
        blocks, halves = _level(approximation, ndim, wavelet)
        per_level.append([blocks[(slice(None),) + tuple(slice(m * k, m * (k + 1)) for m, k in zip(halves, key))]
                          for key in keys])
        approximation = blocks[(slice(None),) + tuple(slice(0, m) for m in halves)]
    parts = []
    for j, details in enumerate(reversed(per_level)):  # coarsest first, as in wasserstein.wavelet_embedding
        weight = sampling * 2.0 ** ((levels - j) * (1 + ndim / 2))  # scale 2^s pixels, s = levels - j
        parts.extend(weight * block.reshape(batch, -1) for block in details)
    return xp.concatenate(parts, axis=1)
