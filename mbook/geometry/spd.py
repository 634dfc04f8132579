"""Symmetric positive definite matrices SPD(n) with the affine-invariant metric.

Covariance matrices, diffusion tensors and strain tensors are SPD. The affine-invariant metric
``⟨V, W⟩_P = tr(P⁻¹ V P⁻¹ W)`` makes SPD(n) a complete symmetric space of non-positive curvature
(Pennec, Fillard and Ayache 2006): geodesics never leave the cone, the Fréchet mean is unique, and

- ``exp_P(V) = P^½ expm(P^-½ V P^-½) P^½``;
- ``log_P(Q) = P^½ logm(P^-½ Q P^-½) P^½``;
- ``d(P, Q) = ‖logm(P^-½ Q P^-½)‖_F``;
- parallel transport from ``P`` to ``Q``: ``V ↦ E V Eᵀ`` with ``E = P^½ (P^-½ Q P^-½)^½ P^-½``.

Coordinates of a tangent vector ``V`` at ``P`` (:func:`to_coordinates`) are those of the whitened matrix
``P^-½ V P^-½`` in the orthonormal basis of symmetric matrices (diagonal entries, then √2 times the upper
off-diagonal ones): ``n(n+1)/2`` numbers, an isometry. The curvature operator ``R(·, V)V = -[[·, V], V]/4``
has, in the eigenbasis of ``V``, the eigenvalues ``-(λᵢ - λⱼ)²/4``, so Jacobi fields grow as
``sinh(|λᵢ - λⱼ|/2)/(|λᵢ - λⱼ|/2)`` (:func:`jacobi_operator`): exponentially, where the sphere's shrink.

Matrix functions go through batched symmetric eigendecompositions on the selected device.

Examples
--------
>>> import numpy as np
>>> from mbook.geometry import spd
>>> p, q = np.eye(2), np.diag([np.e, 1.0])
>>> round(float(spd.distance(p, q)), 6)
1.0
"""

from __future__ import annotations

import numpy as np

from mbook.core import backend, checks

#: Relative asymmetry ‖A - Aᵀ‖/‖A‖ above which a matrix is refused.
TOLERANCE = 1e-8


def check_points(points, name: str = "points"):
    """SPD matrices ``(..., n, n)`` on the selected device (symmetrised); ValueError naming ``name`` else."""
    points = checks.check_array(points, name, min_ndim=2, real=True).astype(float)
    if points.shape[-1] != points.shape[-2]:
        raise ValueError(f"{name} must be square (..., n, n) matrices, got shape {points.shape}")
    xp = backend.get_array_module(points)
    skew = xp.max(xp.abs(points - xp.swapaxes(points, -1, -2)))
    if not float(skew) <= TOLERANCE * (1 + float(xp.max(xp.abs(points)))):
        raise ValueError(f"{name} must be symmetric matrices, asymmetry {float(skew):.2e}")
    points = (points + xp.swapaxes(points, -1, -2)) / 2
    smallest = float(xp.min(xp.linalg.eigvalsh(points)))
    if not smallest > 0:
        raise ValueError(f"{name} must be positive definite, smallest eigenvalue {smallest:.3g}")
    return points


def _check_symmetric(tangent, n, name):
    tangent = checks.check_array(tangent, name, min_ndim=2, real=True).astype(float)
    if tangent.shape[-2:] != (n, n):
        raise ValueError(f"{name} must be (..., {n}, {n}) matrices like the base point, got shape {tangent.shape}")
    xp = backend.get_array_module(tangent)
    skew = xp.max(xp.abs(tangent - xp.swapaxes(tangent, -1, -2)))
    if not float(skew) <= TOLERANCE * (1 + float(xp.max(xp.abs(tangent)))):
        raise ValueError(f"{name} must be symmetric matrices (tangent to SPD), asymmetry {float(skew):.2e}")
    return (tangent + xp.swapaxes(tangent, -1, -2)) / 2


def _function(a, f, xp):
    """f applied to the eigenvalues of symmetric matrices a (..., n, n)."""
    w, q = xp.linalg.eigh(a)
    return (q * f(w)[..., None, :]) @ xp.swapaxes(q, -1, -2)


def _roots(p, xp):
    """P^½ and P^-½."""
    w, q = xp.linalg.eigh(p)
    qt = xp.swapaxes(q, -1, -2)
    return (q * xp.sqrt(w)[..., None, :]) @ qt, (q / xp.sqrt(w)[..., None, :]) @ qt


def _exp(p, v, xp):
    root, inverse = _roots(p, xp)
    return root @ _function(inverse @ v @ inverse, xp.exp, xp) @ root


def _log(p, q, xp):
    root, inverse = _roots(p, xp)
    return root @ _function(inverse @ q @ inverse, xp.log, xp) @ root


def _distance(p, q, xp):
    _, inverse = _roots(p, xp)
    w = xp.linalg.eigvalsh(inverse @ q @ inverse)
    return xp.sqrt(xp.sum(xp.log(w) ** 2, axis=-1))


def _transport(p, q, v, xp):
    root, inverse = _roots(p, xp)
    e = root @ _function(inverse @ q @ inverse, xp.sqrt, xp) @ inverse
    return e @ v @ xp.swapaxes(e, -1, -2)


def exp(base, tangent):
    """Exponential map ``exp_P(V) = P^½ expm(P^-½ V P^-½) P^½``.

    Parameters
    ----------
    base : (..., n, n) array_like
        SPD matrices.
    tangent : (..., n, n) array_like
        Symmetric matrices (tangent vectors at ``base``), broadcast against it.

    Returns
    -------
    (..., n, n) ndarray
        SPD matrices, on the selected device.
    """
    base = check_points(base, "base")
    tangent = _check_symmetric(tangent, base.shape[-1], "tangent")
    return _exp(base, tangent, backend.get_array_module(base, tangent))


def log(base, points):
    """Logarithmic map ``log_P(Q) = P^½ logm(P^-½ Q P^-½) P^½``: symmetric ``(..., n, n)`` (broadcast)."""
    base, points = check_points(base, "base"), check_points(points, "points")
    if base.shape[-1] != points.shape[-1]:
        raise ValueError(f"points must be {base.shape[-1]}x{base.shape[-1]} like base, got shape {points.shape}")
    return _log(base, points, backend.get_array_module(base, points))


def distance(a, b):
    """Affine-invariant distance ``‖logm(a^-½ b a^-½)‖_F`` between SPD matrices (broadcast), ``(...)``."""
    a, b = check_points(a, "a"), check_points(b, "b")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"b must be {a.shape[-1]}x{a.shape[-1]} like a, got shape {b.shape}")
    return _distance(a, b, backend.get_array_module(a, b))


def transport(base, target, tangent):
    """Parallel transport of ``tangent`` from ``base`` to ``target`` along the geodesic: ``V ↦ E V Eᵀ``.

    ``E = P^½ (P^-½ Q P^-½)^½ P^-½`` (Sra and Hosseini 2015); an isometry of the affine-invariant metric.

    Returns
    -------
    (..., n, n) ndarray
        Symmetric matrices at ``target``, on the selected device.
    """
    base, target = check_points(base, "base"), check_points(target, "target")
    if base.shape[-1] != target.shape[-1]:
        raise ValueError(f"target must be {base.shape[-1]}x{base.shape[-1]} like base, got shape {target.shape}")
    tangent = _check_symmetric(tangent, base.shape[-1], "tangent")
    return _transport(base, target, tangent, backend.get_array_module(base, target, tangent))


def _basis(n, xp):
    """(D, n, n) orthonormal basis of symmetric matrices: the diagonal units, then (eᵢeⱼᵀ + eⱼeᵢᵀ)/√2."""
    basis = []
    for i in range(n):
        e = np.zeros((n, n))
        e[i, i] = 1.0
        basis.append(e)
    for i, j in zip(*np.triu_indices(n, 1)):
        e = np.zeros((n, n))
        e[i, j] = e[j, i] = 1 / np.sqrt(2)
        basis.append(e)
    return xp.asarray(np.stack(basis))


def _single_base(base):
    base = check_points(base, "base")
    if base.ndim != 2:
        raise ValueError(f"base must be one matrix (n, n), got shape {base.shape}")
    return base


def to_coordinates(base, tangent):
    """Coordinates ``(..., n(n+1)/2)`` of tangent vectors at one point ``base`` (whitened, orthonormal basis)."""
    base = _single_base(base)
    tangent = _check_symmetric(tangent, base.shape[-1], "tangent")
    return _coordinates(base, tangent, backend.get_array_module(base, tangent))


def from_coordinates(base, coordinates):
    """Tangent vectors ``(..., n, n)`` at ``base`` ``(n, n)`` from coordinates ``(..., n(n+1)/2)``."""
    base = _single_base(base)
    n = base.shape[-1]
    coordinates = checks.check_array(coordinates, "coordinates", min_ndim=1, real=True).astype(float)
    if coordinates.shape[-1] != n * (n + 1) // 2:
        raise ValueError(f"coordinates must be (..., {n * (n + 1) // 2}) for {n}x{n} matrices, "
                         f"got shape {coordinates.shape}")
    return _from_coordinates(base, coordinates, backend.get_array_module(base, coordinates))


def _sinhc(x, xp):
    small = xp.abs(x) < 1e-4
    safe = xp.where(small, 1.0, x)
    return xp.where(small, 1 + x * x / 6, xp.sinh(safe) / safe)


def jacobi_operator(base, coordinates):
    """The symmetric map ``J`` with ``d exp_P(V) = Γ_{P→exp_P(V)} ∘ J``, in coordinates ``(..., D, D)``.

    In the eigenbasis ``Q`` of the whitened ``V' = Q diag(λ) Qᵀ``, ``J`` multiplies the entry ``(i, j)`` by
    ``sinh(|λᵢ - λⱼ|/2)/(|λᵢ - λⱼ|/2)`` (Jacobi fields in the eigendirections of the curvature operator).

    Parameters
    ----------
    base : (n, n) array_like
        The point whose tangent space holds the coordinates.
    coordinates : (..., D) array_like
        Coordinates of ``V`` (:func:`to_coordinates`), ``D = n(n+1)/2``.

    Returns
    -------
    (..., D, D) ndarray
        On the selected device.
    """
    base = _single_base(base)
    n = base.shape[-1]
    coordinates = checks.check_array(coordinates, "coordinates", min_ndim=1, real=True).astype(float)
    if coordinates.shape[-1] != n * (n + 1) // 2:
        raise ValueError(f"coordinates must be (..., {n * (n + 1) // 2}) for {n}x{n} matrices, "
                         f"got shape {coordinates.shape}")
    return _jacobi(base, coordinates, backend.get_array_module(base, coordinates))


def random_near(n, base, *, scales=0.3, seed=0):
    """SPD matrices ``exp_P(V)`` with Gaussian tangent coordinates of standard deviations ``scales``.

    Parameters
    ----------
    n : int
        Number of matrices (>= 1).
    base : (m, m) array_like
        SPD centre of the cloud.
    scales : float or (m(m+1)/2,) array_like
        Standard deviation of each coordinate (:func:`to_coordinates`), >= 0 and <= 10.
    seed : int
        Seed of the draw (on the host, then moved).

    Returns
    -------
    (n, m, m) ndarray
        On the selected device.
    """
    checks.check_count(n, "n")
    base = _single_base(base)
    d = base.shape[-1] * (base.shape[-1] + 1) // 2
    scales = checks.check_values(scales, "scales", d, lower=0, upper=10)
    v = from_coordinates(base, checks.rng(seed).standard_normal((n, d)) * scales)
    return _exp(base, v, backend.get_array_module(v))


def _coordinates(base, v, xp):
    _, inverse = _roots(base, xp)
    return xp.einsum("...ij,kij->...k", inverse @ v @ inverse, _basis(base.shape[-1], xp))


def _from_coordinates(base, c, xp):
    root, _ = _roots(base, xp)
    return root @ xp.einsum("...k,kij->...ij", c, _basis(base.shape[-1], xp)) @ root


def _jacobi(base, c, xp):
    basis = _basis(base.shape[-1], xp)
    lam, q = xp.linalg.eigh(xp.einsum("...k,kij->...ij", c, basis))
    factor = _sinhc((lam[..., :, None] - lam[..., None, :]) / 2, xp)  # (..., n, n)
    q, qt, factor = q[..., None, :, :], xp.swapaxes(q, -1, -2)[..., None, :, :], factor[..., None, :, :]
    images = q @ (factor * (qt @ basis @ q)) @ qt  # J of every basis matrix, (..., D, n, n)
    return xp.swapaxes(xp.einsum("...kij,lij->...kl", images, basis), -1, -2)


#: The unchecked kernels ``f(..., xp)`` for solvers that validated their inputs once (:mod:`~mbook.geometry.means`,
#: :mod:`~mbook.geometry.lowrank`), with the point check of the entry; coordinates are taken at one point.
KERNELS = {"check": check_points, "exp": _exp, "log": _log, "distance": _distance, "transport": _transport,
           "coordinates": _coordinates, "from_coordinates": _from_coordinates, "jacobi": _jacobi}
