"""The unit sphere Sᵈ ⊂ Rᵈ⁺¹ with its round metric: exp, log, distance, transport, sampling.

Points are unit vectors ``(..., d + 1)``; a tangent vector at ``p`` is a vector ``(..., d + 1)``
orthogonal to ``p``. The geodesics are great circles, the sectional curvature is 1 everywhere:

- ``exp_p(v) = cos|v| p + sin|v| v/|v|``;
- ``log_p(q) = θ (q - cos θ p) / sin θ`` with ``θ = arccos⟨p, q⟩`` (defined for ``q ≠ -p``);
- parallel transport along the geodesic from ``p`` to ``q`` rotates the plane spanned by ``p`` and
  ``u = log_p(q)/|u|`` and leaves its orthogonal complement alone.

Coordinates of tangent vectors at a point ``p`` (:func:`to_coordinates`) are taken in an orthonormal basis of
``p``'s orthogonal complement (the last ``d`` columns of the Householder reflection that sends ``e₀`` to
``p``). :func:`jacobi_operator` gives, in those coordinates, the symmetric map ``J`` with
``d exp_p(v) = Γ_{p→exp_p(v)} ∘ J``: it is 1 along ``v`` and ``sin|v|/|v|`` across it (Jacobi fields of a
space of curvature 1).

Every function is batched over leading axes and returns its arrays on the selected device.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.geometry import sphere
>>> p, q = np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
>>> round(float(sphere.distance(p, q)), 6)
1.570796
>>> bool(np.allclose(backend.asnumpy(sphere.exp(p, sphere.log(p, q))), q))
True
"""

from __future__ import annotations

import numpy as np

from mbook.core import backend, checks

#: Points farther than this from the unit sphere (|‖p‖ - 1|) are refused.
TOLERANCE = 1e-6


def check_points(points, name: str = "points"):
    """Unit vectors ``(..., d + 1)`` with ``d >= 1`` on the selected device; ValueError naming ``name`` else."""
    points = checks.check_array(points, name, min_ndim=1, real=True).astype(float)
    if points.shape[-1] < 2:
        raise ValueError(f"{name} must be (..., d + 1) vectors with d >= 1, got shape {points.shape}")
    xp = backend.get_array_module(points)
    error = float(xp.max(xp.abs(xp.linalg.norm(points, axis=-1) - 1)))  # one copy at the entry
    if not error <= TOLERANCE:
        raise ValueError(f"{name} must lie on the unit sphere (norm 1 to {TOLERANCE:g}), deviation {error:.2e}")
    return points


def check_tangent(base, tangent, name: str = "tangent"):
    """Tangent vectors at ``base`` (orthogonal to it to 1e-6 relative); ValueError naming ``name`` else."""
    base = check_points(base, "base")
    tangent = checks.check_array(tangent, name, min_ndim=1, real=True).astype(float)
    if tangent.shape[-1] != base.shape[-1]:
        raise ValueError(f"{name} must be (..., {base.shape[-1]}) vectors like the base point, got {tangent.shape}")
    xp = backend.get_array_module(tangent)
    error = float(xp.max(xp.abs(xp.sum(base * tangent, axis=-1)) / (1 + xp.linalg.norm(tangent, axis=-1))))
    if not error <= TOLERANCE:
        raise ValueError(f"{name} must be orthogonal to the base point (tangent), deviation {error:.2e}")
    return tangent


def _sinc(x, xp):
    """sin(x)/x, 1 at 0 (no division by zero: the small branch uses the series)."""
    small = xp.abs(x) < 1e-4
    safe = xp.where(small, 1.0, x)
    return xp.where(small, 1 - x * x / 6, xp.sin(safe) / safe)


def _exp(p, v, xp):
    t = xp.linalg.norm(v, axis=-1, keepdims=True)
    q = xp.cos(t) * p + _sinc(t, xp) * v
    return q / xp.linalg.norm(q, axis=-1, keepdims=True)  # stay on the sphere to rounding


def _log(p, q, xp):
    c = xp.clip(xp.sum(p * q, axis=-1, keepdims=True), -1.0, 1.0)
    w = q - c * p
    s = xp.linalg.norm(w, axis=-1, keepdims=True)  # sin θ, computed stably from the residual
    theta = xp.arctan2(s, c)
    return w / _sinc(theta, xp)


def _distance(p, q, xp):
    # arctan2(|p - q·...|, p·q) is accurate at small and large angles, unlike arccos.
    c = xp.sum(p * q, axis=-1)
    s = xp.linalg.norm(q - c[..., None] * p, axis=-1)
    return xp.arctan2(s, c)


def _transport(p, q, v, xp):
    u = _log(p, q, xp)
    theta = xp.linalg.norm(u, axis=-1, keepdims=True)
    uhat = u / xp.where(theta > 0, theta, 1.0)
    a = xp.sum(uhat * v, axis=-1, keepdims=True)  # component along the geodesic, rotated with it
    return v + a * ((xp.cos(theta) - 1) * uhat - xp.sin(theta) * p)


def exp(base, tangent):
    """Exponential map ``exp_base(tangent)``: the point reached along the great circle.

    Parameters
    ----------
    base : (..., d + 1) array_like
        Unit vectors.
    tangent : (..., d + 1) array_like
        Tangent vectors at ``base`` (orthogonal to it); lengths are angles [rad].

    Returns
    -------
    (..., d + 1) ndarray
        Unit vectors, on the selected device.
    """
    base = check_points(base, "base")
    tangent = check_tangent(base, tangent)
    return _exp(base, tangent, backend.get_array_module(base, tangent))


def log(base, points):
    """Logarithmic map ``log_base(points)``: the tangent vector at ``base`` pointing at ``points``.

    Parameters
    ----------
    base, points : (..., d + 1) array_like
        Unit vectors (broadcast); ``points`` must not be antipodal to ``base``.

    Returns
    -------
    (..., d + 1) ndarray
        Tangent vectors at ``base`` whose lengths are the geodesic distances [rad].
    """
    base, points = check_points(base, "base"), check_points(points, "points")
    return _log(base, points, backend.get_array_module(base, points))


def distance(a, b):
    """Geodesic (great-circle) distance [rad] between unit vectors ``a`` and ``b`` (broadcast), in [0, π]."""
    a, b = check_points(a, "a"), check_points(b, "b")
    return _distance(a, b, backend.get_array_module(a, b))


def transport(base, target, tangent):
    """Parallel transport of ``tangent`` from ``base`` to ``target`` along the minimising geodesic.

    Parameters
    ----------
    base, target : (..., d + 1) array_like
        Unit vectors, not antipodal.
    tangent : (..., d + 1) array_like
        Tangent vectors at ``base``.

    Returns
    -------
    (..., d + 1) ndarray
        Tangent vectors at ``target``, of the same lengths and mutual angles (an isometry).
    """
    base, target = check_points(base, "base"), check_points(target, "target")
    tangent = check_tangent(base, tangent)
    return _transport(base, target, tangent, backend.get_array_module(base, target, tangent))


def _basis(p, xp):
    """(d + 1, d) orthonormal basis of p's complement: columns 1.. of the Householder map e₀ -> p."""
    w = xp.eye(p.shape[0])[0] - p
    norm = xp.linalg.norm(w)
    # p = e₀ exactly: the identity's columns do; one scalar decision at the entry.
    w = w / xp.where(norm > 0, norm, 1.0)
    h = xp.eye(p.shape[0]) - 2 * w[:, None] * w[None, :]
    return h[:, 1:]


def to_coordinates(base, tangent):
    """Coordinates ``(..., d)`` of tangent vectors at one point ``base`` ``(d + 1,)`` in an orthonormal basis.

    The inverse is :func:`from_coordinates`; the map is an isometry onto Rᵈ.
    """
    base = check_points(base, "base")
    if base.ndim != 1:
        raise ValueError(f"base must be one point (d + 1,), got shape {base.shape}")
    tangent = check_tangent(base, tangent)
    return tangent @ _basis(base, backend.get_array_module(base))


def from_coordinates(base, coordinates):
    """Tangent vectors ``(..., d + 1)`` at ``base`` ``(d + 1,)`` from their coordinates ``(..., d)``."""
    base = check_points(base, "base")
    if base.ndim != 1:
        raise ValueError(f"base must be one point (d + 1,), got shape {base.shape}")
    coordinates = checks.check_array(coordinates, "coordinates", min_ndim=1, real=True).astype(float)
    if coordinates.shape[-1] != base.shape[0] - 1:
        raise ValueError(f"coordinates must be (..., {base.shape[0] - 1}) for this base, got {coordinates.shape}")
    return coordinates @ _basis(base, backend.get_array_module(base)).T


def jacobi_operator(base, coordinates):
    """The symmetric map ``J`` with ``d exp_base(v) = Γ_{base→exp_base(v)} ∘ J``, in coordinates.

    On a space of constant curvature 1 a Jacobi field along the geodesic ``t ↦ exp_p(t v)`` that starts at
    0 grows as ``sin(t|v|)/|v|`` across ``v`` and as ``t`` along it, so
    ``J = v̂v̂ᵀ + (sin|v|/|v|)(I - v̂v̂ᵀ)``.

    Parameters
    ----------
    base : (d + 1,) array_like
        The point whose tangent space holds the coordinates.
    coordinates : (..., d) array_like
        Coordinates of ``v`` (:func:`to_coordinates`); ``|v| < π``.

    Returns
    -------
    (..., d, d) ndarray
        On the selected device.
    """
    base = check_points(base, "base")
    coordinates = checks.check_array(coordinates, "coordinates", min_ndim=1, real=True).astype(float)
    if base.ndim != 1 or coordinates.shape[-1] != base.shape[0] - 1:
        raise ValueError(f"coordinates must be (..., d) for a base (d + 1,), got {coordinates.shape}, {base.shape}")
    xp = backend.get_array_module(coordinates)
    return _jacobi(coordinates, 1.0, xp)


def _jacobi(v, curvature_scale, xp):
    """v̂v̂ᵀ + sinc(s|v|)(I - v̂v̂ᵀ) for a space of curvature s² (s = curvature_scale)."""
    t = xp.linalg.norm(v, axis=-1, keepdims=True)
    vhat = v / xp.where(t > 0, t, 1.0)
    outer = vhat[..., :, None] * vhat[..., None, :]
    eye = xp.eye(v.shape[-1])
    return outer + _sinc(curvature_scale * t, xp)[..., None] * (eye - outer)


def random_points(n, base, *, scales=0.3, seed=0):
    """Points ``exp_base(v)`` with Gaussian tangent vectors ``v`` of standard deviations ``scales`` [rad].

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    base : (d + 1,) array_like
        Unit vector: the centre of the cloud.
    scales : float or (d,) array_like
        Standard deviation [rad] of each tangent coordinate (:func:`to_coordinates`), >= 0 and < π/2, so the
        cloud is concentrated (its Fréchet mean is unique and near ``base``).
    seed : int
        Seed of the draw (made on the host, then moved).

    Returns
    -------
    (n, d + 1) ndarray
        On the selected device.
    """
    checks.check_count(n, "n")
    base = check_points(base, "base")
    if base.ndim != 1:
        raise ValueError(f"base must be one point (d + 1,), got shape {base.shape}")
    d = base.shape[0] - 1
    scales = checks.check_values(scales, "scales", d, lower=0, upper=np.pi / 2, upper_inclusive=False, units="rad")
    draw = checks.rng(seed).standard_normal((n, d)) * scales
    v = from_coordinates(base, draw)
    return _exp(base, v, backend.get_array_module(v))


def _coordinates(base, v, xp):
    return v @ _basis(base, xp)


def _from_coordinates(base, c, xp):
    return c @ _basis(base, xp).T


def _jacobi_at(base, c, xp):
    return _jacobi(c, 1.0, xp)


#: The unchecked kernels ``f(..., xp)`` for solvers that validated their inputs once (:mod:`~mbook.geometry.means`,
#: :mod:`~mbook.geometry.lowrank`), with the point check of the entry; coordinates are taken at one point.
KERNELS = {"check": check_points, "exp": _exp, "log": _log, "distance": _distance, "transport": _transport,
           "coordinates": _coordinates, "from_coordinates": _from_coordinates, "jacobi": _jacobi_at}
