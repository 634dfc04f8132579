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
2020). Densities are zero-padded to a power of two at least twice their
size, so the periodised transform never wraps mass around the box.

Diffusion maps (Coifman & Lafon 2006) turn a matrix of such distances into
coordinates along the data's manifold (here: conformations).

Examples
--------
>>> import numpy as np
>>> from mbook.cryoem import wasserstein
>>> p = np.zeros((16, 16)); p[4, 4] = 1.0
>>> q = np.zeros((16, 16)); q[4, 10] = 1.0        # moved by 6 pixels
>>> round(wasserstein.exact_emd(p, q, sampling=1.0), 6)
6.0
>>> 2 < wasserstein.wemd(p, q, sampling=1.0) / 6.0 < 60   # bounded ratio
True
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from mbook.core import backend, checks, grids

#: Default wavelet: Coiflets of order 3, as in ASPIRE's wavelet EMD (Zelesko et al. 2020).
WAVELET = "coif3"


def check_density(density, name="density", *, allow_negative=False):
    """Validate a 1D, 2D or 3D density: finite, real, >= 0 unless ``allow_negative``.

    Returns
    -------
    ndarray
        As NumPy float64.

    Raises
    ------
    ValueError
        Naming the parameter and the problem (negative values, NaN, shape).
    """
    array = backend.asnumpy(density)
    if np.iscomplexobj(array):
        raise ValueError(f"{name} must be real, got dtype {array.dtype}")
    array = np.asarray(array, dtype=float)
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


def padded_size(shape) -> int:
    """Side of the padded cube: the power of two >= 2 max(shape) (no wrap-around of the transform)."""
    return 1 << int(math.ceil(math.log2(2 * max(shape))))


def _pad(array, size):
    out = np.zeros((size,) * array.ndim)
    offset = tuple((size - n) // 2 for n in array.shape)
    out[tuple(slice(o, o + n) for o, n in zip(offset, array.shape))] = array
    return out


def wavelet_embedding(density, *, sampling=1.0, wavelet=WAVELET, allow_negative=False):
    """Weighted wavelet coefficients whose l1 distances approximate the EMD.

    A linear map: ``embedding(p) - embedding(q) = embedding(p - q)``.

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
        ``m = P^n - 1`` coefficients, P = :func:`padded_size`.
    """
    import pywt

    if np.iscomplexobj(backend.asnumpy(density)) and allow_negative:  # a linear map: real and imaginary parts
        density = backend.asnumpy(density)
        return (wavelet_embedding(density.real, sampling=sampling, wavelet=wavelet, allow_negative=True)
                + 1j * wavelet_embedding(density.imag, sampling=sampling, wavelet=wavelet, allow_negative=True))
    array = check_density(density, allow_negative=allow_negative)
    h = checks.check_positive(sampling, "sampling", 1)[0]
    size = padded_size(array.shape)
    levels = int(math.log2(size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # full-depth transforms warn about boundary effects
        coefficients = pywt.wavedecn(_pad(array, size), wavelet, mode="periodization", level=levels)
    parts = []
    for j, details in enumerate(coefficients[1:]):
        s = levels - j
        weight = h * 2.0 ** (s * (1 + array.ndim / 2))
        parts.extend(weight * details[key].ravel() for key in sorted(details))
    return np.concatenate(parts)


def wavelet_embedding_adjoint(coefficients, shape, *, sampling=1.0, wavelet=WAVELET):
    """Adjoint of :func:`wavelet_embedding` (as a linear map from arrays of ``shape``).

    The transform is orthonormal, so its adjoint is the inverse transform of
    the weighted coefficients (with a zero approximation coefficient),
    cropped back to ``shape``.

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
    """
    import pywt

    coefficients = np.asarray(coefficients)
    ndim, size = len(shape), padded_size(shape)
    levels = int(math.log2(size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # full-depth transforms warn about boundary effects
        template = pywt.wavedecn(np.zeros((size,) * ndim), wavelet, mode="periodization", level=levels)
    if coefficients.size != size**ndim - 1:
        raise ValueError(f"coefficients must have {size**ndim - 1} entries for shape {shape}, got {coefficients.size}")
    h = checks.check_positive(sampling, "sampling", 1)[0]
    position, rebuilt = 0, [np.zeros_like(template[0], dtype=coefficients.dtype)]
    for j, details in enumerate(template[1:]):
        weight = h * 2.0 ** ((levels - j) * (1 + ndim / 2))
        level = {}
        for key in sorted(details):
            count = details[key].size
            level[key] = weight * coefficients[position:position + count].reshape(details[key].shape)
            position += count
        rebuilt.append(level)
    full = pywt.waverecn(rebuilt, wavelet, mode="periodization")
    offset = tuple((size - n) // 2 for n in shape)
    return full[tuple(slice(o, o + n) for o, n in zip(offset, shape))]


def _check_pair(p, q, rtol=1e-6):
    p, q = check_density(p, "p"), check_density(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    mp, mq = p.sum(), q.sum()
    if not abs(mp - mq) <= rtol * max(abs(mp), abs(mq), 1e-300):
        raise ValueError(f"p and q must have equal mass for an EMD, got {mp:.6g} and {mq:.6g}; normalise them first")
    return p, q


def wemd(p, q, *, sampling=1.0, wavelet=WAVELET) -> float:
    """Wavelet approximation of the earth mover's distance (Shirdhonkar & Jacobs 2008).

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
    return float(np.abs(wavelet_embedding(p - q, sampling=sampling, wavelet=wavelet, allow_negative=True)).sum())


def pairwise_wemd(densities, *, sampling=1.0, wavelet=WAVELET, allow_negative=False):
    """All-pairs wavelet EMD, the direct way: embed each density, then l1 distances (O(n² m)).

    Parameters
    ----------
    densities : (n, ...) array_like or sequence of arrays
        n densities of one shape and (unless ``allow_negative``) equal mass.
    sampling : float
        [Å].
    wavelet : str
    allow_negative : bool
        Accept signed arrays (members of a linear family that dip below 0).

    Returns
    -------
    (n, n) ndarray
        Symmetric, zero diagonal.
    """
    densities = [check_density(d, allow_negative=allow_negative) for d in densities]
    masses = np.array([d.sum() for d in densities])
    if not allow_negative and np.ptp(masses) > 1e-6 * np.abs(masses).max():
        raise ValueError(f"densities must have equal masses, got {masses.min():.6g} to {masses.max():.6g}")
    embedded = np.stack([wavelet_embedding(d, sampling=sampling, wavelet=wavelet, allow_negative=True)
                         for d in densities])
    n = len(embedded)
    out = np.zeros((n, n))
    for i in range(n - 1):
        out[i, i + 1:] = np.abs(embedded[i + 1:] - embedded[i]).sum(axis=1)
    return out + out.T


def exact_emd(p, q, *, sampling=1.0, max_points=6000) -> float:
    """Exact earth mover's distance with Euclidean ground cost (POT's network simplex, ``ot.emd2``).

    Only pixels where p or q is non-zero enter the transport problem.

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
    support = np.nonzero((p > 0) | (q > 0))
    if support[0].size > max_points:
        raise ValueError(f"support of {support[0].size} points exceeds max_points={max_points}; use smaller grids")
    points = h * np.stack(support, axis=1).astype(float)
    a, b = p[support], q[support]
    cost = ot.dist(points, points, metric="euclidean")
    scale = a.sum()
    return float(ot.emd2(a / scale, b / scale, cost, numItermax=10_000_000) * scale)


def diffusion_map(distances, *, n_components=2, epsilon=None, alpha=1.0, t=1):
    """Diffusion-map coordinates from a distance matrix (Coifman & Lafon 2006).

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
        Signs fixed so that the largest entry of each is positive.
    """
    d = np.asarray(backend.asnumpy(distances), dtype=float)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or not np.isfinite(d).all():
        raise ValueError(f"distances must be a finite square matrix, got shape {d.shape}")
    if d.min() < 0 or not np.allclose(d, d.T, rtol=1e-8, atol=1e-12 * max(d.max(), 1e-300)):
        raise ValueError("distances must be symmetric and non-negative")
    n = d.shape[0]
    if not 1 <= n_components < n:
        raise ValueError(f"n_components must be in [1, {n - 1}] for {n} points, got {n_components!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    epsilon = float(np.median(d[np.triu_indices(n, 1)] ** 2)) if epsilon is None else float(epsilon)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    kernel = np.exp(-(d**2) / epsilon)
    q = kernel.sum(axis=1)
    kernel = kernel / np.outer(q, q) ** alpha
    degree = kernel.sum(axis=1)
    symmetric = kernel / np.sqrt(np.outer(degree, degree))
    values, vectors = np.linalg.eigh(symmetric)
    order = np.argsort(values)[::-1][1:n_components + 1]
    psi = vectors[:, order] / np.sqrt(degree)[:, None]
    psi /= np.linalg.norm(psi, axis=0) / math.sqrt(n)
    signs = np.sign(psi[np.argmax(np.abs(psi), axis=0), np.arange(n_components)])
    return values[order], psi * signs * values[order] ** t
