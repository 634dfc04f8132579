"""Earth mover's (Wasserstein-1) distances: wavelet approximation, exact check, diffusion maps.

For two densities p, q of equal mass on a grid, the earth mover's distance
``EMD(p, q) = min_π Σ π_ij |x_i - x_j|`` (over transport plans π with
marginals p and q) is a linear program: ``ot.emd2`` of POT solves it exactly
for a few thousand pixels. Shirdhonkar & Jacobs (2008) showed that, in n
dimensions, the weighted l1 norm of the wavelet coefficients of the
difference,

``WEMD(p, q) = Σ_{s,λ} 2^{s (1 + n/2)} Δ |⟨p - q, ψ_{s,λ}⟩|``,

(detail coefficients of an orthonormal wavelet transform at scale
``2^s`` pixels, s = 1 the finest, Δ the pixel size; this is their weight
``2^{-j(1+n/2)}`` with ``2^{-j} = 2^s Δ``) is equivalent to the EMD: the ratio
``WEMD / EMD`` lies between two constants that depend only on the wavelet
and n. It costs O(m) per pair, and the embedding ``p -> weighted
coefficients`` turns the EMD into an l1 distance, which is what makes
all-pairs distances between thousands of volumes practical (Zelesko et al.
2020). The transform extends each density by zeros (PyWavelets' ``"zero"``
mode, as ASPIRE's wavelet EMD does) down to ``ceil(log2 n) + 2`` levels: the
density is a compactly supported function on Rⁿ, as the theorem assumes. A
periodised transform instead puts it on a torus, where mass moved far enough
comes back from the other side and the distance of a growing shift falls.

Diffusion maps (Coifman & Lafon 2006) turn a matrix of such distances into
coordinates along the data's manifold (here: conformations).

Device rule: on the CPU PyWavelets computes the embeddings; with a GPU (or
the stand-in) selected they are computed on it, many densities at once
(:mod:`mbook.cryoem.wavelet_transform`: the same coefficients up to
rounding). POT runs on the host only: the exact transport copies its
densities there. Results are arrays on the selected device (plain distances
as floats); the all-pairs l1 distances and the diffusion map run on the
selected device.
With a Dask client, the strips of the distance matrix (and, on the CPU, the
embeddings) are made on its workers and assembled here into the same matrix.

Examples
--------
>>> import numpy as np
>>> from mbook.cryoem import wasserstein
>>> p = np.zeros((16, 16)); p[4, 4] = 1.0
>>> q = np.zeros((16, 16)); q[4, 10] = 1.0        # moved by 6 pixels
>>> round(wasserstein.exact_emd(p, q, sampling=1.0), 6)
6.0
>>> 2 < wasserstein.wemd(p, q, sampling=1.0) / 6.0 < 200   # bounded ratio
True
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from mbook.core import backend, checks, progress
from mbook.cryoem import wavelet_transform

#: Default wavelet: Coiflets of order 3, as in ASPIRE's wavelet EMD (Zelesko et al. 2020).
WAVELET = "coif3"


def _host_density(density, name="density", *, allow_negative=False) -> np.ndarray:
    """Host copy of a validated density (float64); see :func:`check_density`."""
    if isinstance(density, (str, bytes)) or density is None:
        raise TypeError(f"{name} must be an array, got {type(density).__name__} {density!r}")
    array = backend.asnumpy(density)
    if np.iscomplexobj(array):
        raise ValueError(f"{name} must be real, got dtype {array.dtype}")
    try:
        array = np.asarray(array, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}") from None
    if array.ndim not in (1, 2, 3) or array.size < 2:
        raise ValueError(f"{name} must be a 1D, 2D or 3D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if not allow_negative and array.min() < 0:
        raise ValueError(
            f"{name} has negative values (min {array.min():.3g}); an earth mover's distance needs densities >= 0 "
            "(clip them, or pass allow_negative=True to take the wavelet norm of a signed difference)"
        )
    return array


def check_density(density, name="density", *, allow_negative=False):
    """Validate a 1D, 2D or 3D density: finite, real, >= 0 unless ``allow_negative``.

    Returns
    -------
    ndarray
        float64, on the selected device.

    Raises
    ------
    ValueError
        Naming the parameter and the problem (negative values, NaN, shape).
    """
    return backend.asarray(_host_density(density, name, allow_negative=allow_negative))


def levels(shape) -> int:
    """Levels of the transform of a density of ``shape``: ``ceil(log2 max(shape)) + 2``.

    The coarsest wavelets then span about four times the box, so a shift anywhere in the box still changes
    coarse coefficients in proportion to its length; with one level fewer, shifts along a 3D diagonal past
    half the box stop adding to the distance (tests/test_wasserstein.py checks the ordering).
    """
    shape = checks.check_gpts(shape, name="shape")
    return int(math.ceil(math.log2(max(shape)))) + 2


def _transform(array, wavelet):
    import pywt

    with warnings.catch_warnings():
        # PyWavelets warns when a level's input is shorter than the filter: at the coarse levels that is
        # the intent (the zero extension is the density's true surroundings).
        warnings.simplefilter("ignore", UserWarning)
        return pywt.wavedecn(array, wavelet, mode="zero", level=levels(array.shape))


def embedding_size(shape, wavelet=WAVELET) -> int:
    """Number of coefficients ``m`` of :func:`wavelet_embedding` for a density of ``shape``."""
    shape = checks.check_gpts(shape, name="shape")
    return sum(d[key].size for d in _transform(np.zeros(shape), wavelet)[1:] for key in d)


def _embedding(array, h, wavelet):
    """Host kernel: weighted wavelet coefficients (m,) of a NumPy density."""
    coefficients = _transform(array, wavelet)
    top = levels(array.shape)
    parts = []
    for j, details in enumerate(coefficients[1:]):
        weight = h * 2.0 ** ((top - j) * (1 + array.ndim / 2))  # scale 2^s pixels, s = top - j
        parts.extend(weight * details[key].ravel() for key in sorted(details))
    return np.concatenate(parts)


def _check_wavelet(wavelet) -> str:
    """``wavelet`` if it names a discrete PyWavelets wavelet, else TypeError/ValueError naming it."""
    import pywt

    if not isinstance(wavelet, str):
        raise TypeError(f"wavelet must be a PyWavelets wavelet name (str), e.g. {WAVELET!r}, "
                        f"got {type(wavelet).__name__} {wavelet!r}")
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ValueError(f"wavelet must be one of PyWavelets' discrete wavelets (pywt.wavelist(kind='discrete'): "
                         f"haar, db1-db38, sym2-sym20, coif1-coif17, ...), got {wavelet!r}")
    return wavelet


def _embed_many(densities, h, wavelet):
    """Embeddings ``(n, m)`` of checked host densities of one shape, on the selected device.

    On the CPU PyWavelets, one density at a time; on a GPU (or the stand-in) the device transform,
    in batches under the memory budget."""
    wavelet = _check_wavelet(wavelet)  # both paths refuse a bad name alike, before any transform
    if backend.get_device() == "cpu":
        return np.stack([_embedding(d, h, wavelet) for d in densities])
    shape = densities[0].shape
    top = levels(shape)
    size = progress.plan_batches(n_items=len(densities),
                                 bytes_per_item=wavelet_transform.peak_bytes(shape, wavelet, top))
    parts = [wavelet_transform.embed(backend.asarray(np.stack(densities[a:a + size])), sampling=h, wavelet=wavelet,
                                     levels=top) for a in range(0, len(densities), size)]
    return parts[0] if len(parts) == 1 else backend.get_array_module(parts[0]).concatenate(parts)


def wavelet_embedding(density, *, sampling=1.0, wavelet=WAVELET, allow_negative=False):
    """Weighted wavelet coefficients whose l1 distances approximate the EMD.

    A linear map: ``embedding(p) - embedding(q) = embedding(p - q)``.
    Computed on the selected device (see the module's device rule), from a
    host copy of the density (checked there); the
    coefficients come back on the selected device.

    Parameters
    ----------
    density : (n,), (n, n) or (n, n, n) array_like
        Non-negative density (or a signed difference with ``allow_negative``).
    sampling : float
        Pixel/voxel size [Å]; distances come out in Å times mass.
    wavelet : str
        A PyWavelets orthogonal wavelet name ("haar", "db2", "sym5", "coif3", ...).
    allow_negative : bool

    Returns
    -------
    (m,) ndarray
        ``m = embedding_size(density.shape)`` coefficients; on the selected device.
    """
    h = checks.check_positive(sampling, "sampling", 1)[0]
    array = backend.asnumpy(density)
    if np.iscomplexobj(array) and allow_negative:  # a linear map: real and imaginary parts
        parts = [_embed_many([_host_density(part, allow_negative=True)], h, wavelet)[0]
                 for part in (array.real, array.imag)]
        return backend.asarray(parts[0] + 1j * parts[1])
    return backend.asarray(_embed_many([_host_density(array, allow_negative=allow_negative)], h, wavelet)[0])


def wavelet_embedding_adjoint(coefficients, shape, *, sampling=1.0, wavelet=WAVELET):
    """Adjoint of :func:`wavelet_embedding` (as a linear map from arrays of ``shape``).

    The filters are orthonormal, so the adjoint of each zero-extended
    analysis step is the synthesis step of the weighted coefficients (with
    zero approximation coefficients), cropped back to ``shape``. Host-only
    step (PyWavelets); the result comes back on the selected device.

    Parameters
    ----------
    coefficients : (m,) array_like
    shape : tuple of int
        Shape of the density.
    sampling : float
        [Å].
    wavelet : str

    Returns
    -------
    ndarray of ``shape``
        On the selected device.
    """
    import pywt

    coefficients = backend.asnumpy(checks.check_array(coefficients, "coefficients", ndim=1))
    shape = checks.check_gpts(shape, name="shape")
    h = checks.check_positive(sampling, "sampling", 1)[0]
    template = _transform(np.zeros(shape), wavelet)
    expected = sum(d[key].size for d in template[1:] for key in d)
    if coefficients.size != expected:
        raise ValueError(f"coefficients must have {expected} entries for shape {shape}, got {coefficients.size}")
    top, ndim = levels(shape), len(shape)
    position, rebuilt = 0, [np.zeros_like(template[0], dtype=coefficients.dtype)]
    for j, details in enumerate(template[1:]):
        weight = h * 2.0 ** ((top - j) * (1 + ndim / 2))
        level = {}
        for key in sorted(details):
            count = details[key].size
            level[key] = weight * coefficients[position:position + count].reshape(details[key].shape)
            position += count
        rebuilt.append(level)
    full = pywt.waverecn(rebuilt, wavelet, mode="zero")
    return backend.asarray(full[tuple(slice(0, n) for n in shape)])


def _check_pair(p, q, rtol=1e-6):
    """Host copies of two densities of one shape and equal mass."""
    p, q = _host_density(p, "p"), _host_density(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    mp, mq = p.sum(), q.sum()
    if not abs(mp - mq) <= rtol * max(abs(mp), abs(mq), 1e-300):
        raise ValueError(f"p and q must have equal mass for an EMD, got {mp:.6g} and {mq:.6g}; normalise them first")
    return p, q


def wemd(p, q, *, sampling=1.0, wavelet=WAVELET) -> float:
    """Wavelet approximation of the earth mover's distance (Shirdhonkar & Jacobs 2008).

    Host-only step (PyWavelets).

    Parameters
    ----------
    p, q : array_like
        Non-negative densities of one shape (1D, 2D or 3D) and equal mass.
    sampling : float
        [Å].
    wavelet : str

    Returns
    -------
    float
        [Å × mass].
    """
    p, q = _check_pair(p, q)
    h = checks.check_positive(sampling, "sampling", 1)[0]
    return float(np.abs(_embedding(p - q, h, wavelet)).sum())


def pairwise_l1(embedded, *, budget=None, client=None):
    """All-pairs l1 distances between the rows of ``embedded``, on the selected device.

    Row by row, with the other rows in batches under the memory budget.
    With a Dask ``client`` the rows are shared out in strips of about equal
    numbers of pairs, a few per worker thread: ``embedded`` is scattered to
    every worker once, each strip runs the same row-by-row batches as here
    (so every distance is computed by the same operations: the same
    matrix), and each strip is written into the matrix as it comes back,
    then released.

    Parameters
    ----------
    embedded : (n, m) array_like
    budget : int, optional
        Memory budget for one batch of differences [bytes] (default
        :func:`mbook.core.progress.memory_budget`); on a cluster, per worker thread.
    client : dask.distributed.Client, optional
        Compute the strips on its workers.

    Returns
    -------
    (n, n) ndarray
        Symmetric, zero diagonal; on the selected device.
    """
    embedded = checks.check_array(embedded, "embedded", ndim=2)
    checks.check_client(client)
    xp = backend.get_array_module(embedded)
    n, m = embedded.shape
    out = xp.zeros((n, n))
    batch = progress.plan_batches(n_items=n, bytes_per_item=2 * m * embedded.itemsize, budget=budget)
    if client is None:
        _l1_rows(embedded, 0, n - 1, batch, out)
        return out + out.T
    strips = _strips(n, 4 * progress.client_threads(client))
    # In a list: scatter would split an array into its rows. hash=False: a key of its own, so that an equal
    # array scattered and released by an earlier call cannot take this one's data with it.
    shared = client.scatter([embedded], broadcast=True, hash=False)[0]
    futures = client.map(_l1_strip, [first for first, _ in strips], [last for _, last in strips], embedded=shared,
                         batch=batch, pure=False)
    for (first, last), future in zip(strips, progress.progress(futures, desc="l1 distances")):
        out[first:last] = future.result()
        future.release()  # its rows are in the matrix now
    return out + out.T


def _l1_rows(embedded, first, last, batch, out):
    """Kernel: ``out[i - first, j] = |e_j - e_i|_1`` for ``first <= i < last`` and ``j > i``, in column batches."""
    xp = backend.get_array_module(embedded)
    n = embedded.shape[0]
    for i in range(first, last):
        for start in range(i + 1, n, batch):
            stop = min(start + batch, n)
            out[i - first, start:stop] = xp.abs(embedded[start:stop] - embedded[i]).sum(axis=1)


def _l1_strip(first, last, *, embedded, batch):
    """Rows ``first:last`` of the upper triangle, ``(last - first, n)``, for a Dask worker."""
    xp = backend.get_array_module(embedded)
    out = xp.zeros((last - first, embedded.shape[0]))
    _l1_rows(embedded, first, last, batch, out)
    return out


def _strips(n, count):
    """Row ranges ``[(first, last), ...]`` covering ``0..n-1`` with about equal numbers of pairs ``j > i``."""
    pairs = np.cumsum(np.arange(n - 1, 0, -1))  # pairs in rows 0..i
    cuts = np.searchsorted(pairs, np.linspace(0, pairs[-1], count + 1)[1:-1], side="left") + 1 if n > 1 else []
    bounds = sorted({0, max(n - 1, 0), *(int(c) for c in cuts)})
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def pairwise_wemd(densities, *, sampling=1.0, wavelet=WAVELET, allow_negative=False, budget=None, client=None):
    """All-pairs wavelet EMD, the direct way: embed each density, then l1 distances (O(n² m)).

    The embeddings are made on the selected device (on the CPU by
    PyWavelets, one density at a time; on a GPU many at once), then their
    l1 distances (:func:`pairwise_l1`). With a Dask ``client`` the strips of
    :func:`pairwise_l1` run on its workers, and on the CPU the embeddings
    too (the densities in a few batches per worker thread, embedded on the
    workers' hosts and stacked here in order); with a GPU selected they are
    made here, where one matrix product takes a batch. The same embeddings
    and distances as without.

    Parameters
    ----------
    densities : (n, ...) array_like or sequence of arrays
        n densities of one shape and (unless ``allow_negative``) equal mass.
    sampling : float
        [Å].
    wavelet : str
    allow_negative : bool
        Accept signed arrays (members of a linear family that dip below 0).
    budget : int, optional
        Memory budget of :func:`pairwise_l1` [bytes].
    client : dask.distributed.Client, optional
        Compare (and, on the CPU, embed) on its workers.

    Returns
    -------
    (n, n) ndarray
        Symmetric, zero diagonal; on the selected device.
    """
    h = checks.check_positive(sampling, "sampling", 1)[0]
    checks.check_client(client)
    densities = checks.check_array(densities, "densities", min_ndim=2, real=True)
    densities = [_host_density(d, "densities", allow_negative=allow_negative) for d in densities]
    masses = np.array([d.sum() for d in densities])
    if not allow_negative and np.ptp(masses) > 1e-6 * np.abs(masses).max():
        raise ValueError(f"densities must have equal masses, got {masses.min():.6g} to {masses.max():.6g}")
    if client is None or backend.get_device() != "cpu":  # on a device: here, a batch per matrix product
        embedded = _embed_many(densities, h, wavelet)
    else:
        count = min(len(densities), 4 * progress.client_threads(client))
        bounds = np.linspace(0, len(densities), count + 1).round().astype(int)
        futures = client.map(_embed_all, [densities[a:b] for a, b in zip(bounds[:-1], bounds[1:])], h=h,
                             wavelet=wavelet, pure=False)
        embedded = np.concatenate(client.gather(futures))
    return pairwise_l1(backend.asarray(embedded), budget=budget, client=client)


def _embed_all(densities, *, h, wavelet):
    """Host kernel for a Dask worker: the embeddings (b, m) of a list of host densities."""
    return np.stack([_embedding(d, h, wavelet) for d in densities])


def exact_emd(p, q, *, sampling=1.0, max_points=6000) -> float:
    """Exact earth mover's distance with Euclidean ground cost (POT's network simplex, ``ot.emd2``).

    Only pixels where p or q is non-zero enter the transport problem.
    Host-only step: POT solves on host copies of the densities.

    Parameters
    ----------
    p, q : array_like
        Non-negative densities of one shape and equal mass.
    sampling : float
        [Å].
    max_points : int
        Largest support allowed (the solver is super-quadratic).

    Returns
    -------
    float
        [Å × mass].
    """
    import ot

    p, q = _check_pair(p, q)
    h = checks.check_positive(sampling, "sampling", 1)[0]
    max_points = checks.check_count(max_points, "max_points")
    support = np.nonzero((p > 0) | (q > 0))
    if support[0].size > max_points:
        raise ValueError(f"support of {support[0].size} points exceeds max_points={max_points}; use smaller grids")
    points = h * np.stack(support, axis=1).astype(float)
    a, b = p[support], q[support]
    cost = ot.dist(points, points, metric="euclidean")
    scale = a.sum()
    return float(ot.emd2(a / scale, b / scale, cost, numItermax=10_000_000) * scale)


def diffusion_map(distances, *, n_components=2, epsilon=None, alpha=1.0, t=1):
    """Diffusion-map coordinates from a distance matrix (Coifman & Lafon 2006), on the selected device.

    ``K = exp(-D² / ε)``; the α-normalisation ``K / (q_i q_j)^α`` with
    ``q = K 1`` removes the effect of the sampling density (α = 1: the
    Laplace-Beltrami operator of the manifold); the Markov matrix
    ``P = D⁻¹ K_α`` has eigenvectors ψ_j, and the coordinates are ``λ_j^t ψ_j``
    for j = 1..n_components (ψ_0 is constant).

    Parameters
    ----------
    distances : (n, n) array_like
        Symmetric, non-negative, zero diagonal.
    n_components : int
    epsilon : float, optional
        Kernel scale [distance²]; default the median of the squared distances.
    alpha : float
        In [0, 1].
    t : int
        Diffusion time.

    Returns
    -------
    eigenvalues : (n_components,) ndarray
    coordinates : (n, n_components) ndarray
        Signs fixed so that the largest entry of each is positive. Both on
        the selected device.
    """
    d = checks.check_array(distances, "distances", ndim=2, real=True).astype(float)
    if d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a finite square matrix, got shape {d.shape}")
    xp = backend.get_array_module(d)
    scale = max(float(d.max()), 1e-300)
    if float(d.min()) < 0 or not bool(xp.allclose(d, d.T, rtol=1e-8, atol=1e-12 * scale)):
        raise ValueError("distances must be symmetric and non-negative")
    n = d.shape[0]
    n_components = checks.check_count(n_components, "n_components", maximum=n - 1)
    alpha = checks.check_number(alpha, "alpha", lower=0, upper=1)
    if epsilon is None:
        rows, cols = xp.triu_indices(n, 1)
        epsilon = float(xp.median(d[rows, cols] ** 2))
    epsilon = checks.check_positive_number(epsilon, "epsilon")
    t = checks.check_count(t, "t", minimum=0)
    kernel = xp.exp(-(d**2) / epsilon)
    q = kernel.sum(axis=1)
    kernel = kernel / xp.outer(q, q) ** alpha
    degree = kernel.sum(axis=1)
    symmetric = kernel / xp.sqrt(xp.outer(degree, degree))
    values, vectors = xp.linalg.eigh(symmetric)
    order = xp.argsort(values)[::-1][1:n_components + 1]
    psi = vectors[:, order] / xp.sqrt(degree)[:, None]
    psi = psi / (xp.linalg.norm(psi, axis=0) / math.sqrt(n))
    signs = xp.sign(psi[xp.argmax(xp.abs(psi), axis=0), xp.arange(n_components)])
    return values[order], psi * signs * values[order] ** t
