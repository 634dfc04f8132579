"""Total variation on the circle by functional lifting (white paper §3.2.2, approach 2).

The phase θ(x) ∈ S¹ is discretised to L labels ``γ_k = -π + 2πk/L`` and
lifted to its sub-graph function ``φ_k(x) = 1{θ(x) >= γ_k}``, k = 1..L-1,
relaxed to ``φ_k ∈ [0, 1]`` (Pock et al. 2010); ``φ_0 = 1`` and ``φ_L = 0``.
The label weights are ``u_k = φ_k - φ_{k+1}``. Any pointwise (non-convex)
data cost becomes linear: ``Σ_k ρ_k u_k`` with ``ρ_k = a (1 - cos(γ_k - φ))``;
written as ``sup_{q_k <= ρ_k} Σ_k q_k (φ_k - φ_{k+1})`` it also enforces the
monotonicity ``u_k >= 0`` (the sup is +∞ otherwise).

The cyclic total variation of Strekalovskiy and Cremers (2011) charges a
jump from label i to label j the arc length ``d(γ_i, γ_j) = h·min(|i - j|,
L - |i - j|)``, ``h = 2π/L``. In the lifted, dual form it is
``sup Σ_k <p_k, ∇φ_k>`` over fields whose partial sums ``Q_j = Σ_{k<=j} p_k``
satisfy ``|Q_j - Q_i| <= d(γ_i, γ_j)``. Because d is the path length on the
cycle of labels, these O(L²) constraints per pixel reduce to
``|p_k| <= h`` for k = 1..L (one extra field ``p_L``) and the closing
condition ``Σ_{k=1}^{L} p_k = 0``: the partial sums return to 0 after a full
turn. A Lagrange multiplier ``w(x) ∈ R²`` enforces the closing condition:

``min_{φ ∈ [0,1], w} max_{q <= ρ, |p_k| <= λh}  Σ_k q_k (φ_k - φ_{k+1}) + Σ_{k=1}^{L} <p_k, ∇φ_k + w>``

(``φ_L = 0``). :func:`tv_s1_lifting` solves it with :func:`mbook.inverse.solvers.pdhg`
and diagonal step sizes, stopped by the primal-dual gap, and reads the
phase out as ``arg Σ_k u_k e^{iγ_k}``.

The relaxation is convex, so the solution is global; the price is L copies
of every array (memory) and many cheap iterations (time): the trade-off
against approach 1 (:func:`mbook.inverse.circle.tv_s1_denoise`) measured in the book.

Examples
--------
>>> import numpy as np
>>> from mbook.inverse import circle, lifting
>>> phi = np.zeros((16, 16)); phi[8:] = 3.0  # a jump of 3 rad
>>> out = lifting.tv_s1_lifting(phi, 0.2, num_labels=16)
>>> bool(out.converged), bool(abs(circle.wrap(out.phase[12, 8] - 3.0)) < 0.2)
(True, True)
"""

from __future__ import annotations

import math

from mbook.core import backend, checks, progress
from mbook.core.checks import check_count, check_iterations, check_tolerance
from mbook.inverse.circle import TVS1Result, check_phase_data, s1_energy, wrap
from mbook.inverse.optimize import divergence, gradient, project_ball
from mbook.inverse.solvers import pdhg_iterations


def labels(num_labels: int, *, xp=None):
    """The L labels ``γ_k = -π + 2πk/L`` [rad] (on the selected device unless ``xp`` is given)."""
    num_labels = check_count(num_labels, "num_labels", minimum=2)
    xp = xp or backend.xp
    return -math.pi + 2 * math.pi * xp.arange(num_labels) / num_labels


def lift_apply(x, num_labels):
    """The lifted operator ``K``: ``(φ, w) -> (φ_k - φ_{k+1}, ∇φ_{k+1} + w)``.

    Parameters
    ----------
    x : (L + 1, nx, ny) array
        ``φ_1 .. φ_{L-1}`` stacked over the 2 components of ``w``.
    num_labels : int
        L.

    Returns
    -------
    (L, 3, nx, ny) array
        On the selected device. Row k: component 0 is ``φ_k - φ_{k+1}``
        (with ``φ_0 = φ_L = 0`` here: the constant ``φ_0 = 1`` enters as an
        offset), components 1-2 are ``∇φ_{k+1} + w`` (``φ_L = 0``).
    """
    x = checks.check_array(x, "x", ndim=3)
    L = check_count(num_labels, "num_labels", minimum=2)
    if x.shape[0] != L + 1:
        raise ValueError(f"x must be (num_labels + 1, nx, ny) = ({L + 1}, nx, ny), got shape {x.shape}")
    return _lift_apply(x, L)


def _lift_apply(x, L):
    """The kernel of :func:`lift_apply` (checked inputs; the lifted PDHG applies it every iteration)."""
    xp = backend.get_array_module(x)
    phi, w = x[:L - 1], x[L - 1:]
    out = xp.zeros((L, 3) + x.shape[1:], dtype=x.dtype)
    out[:-1, 0] -= phi  # -φ_{k+1}, k = 0..L-2
    out[1:, 0] += phi  # +φ_k, k = 1..L-1
    out[:-1, 1:] = xp.moveaxis(gradient(phi), 0, 1)
    out[:, 1:] += w
    return out


def lift_adjoint(y, num_labels):
    """Adjoint of :func:`lift_apply`: ``(L, 3, nx, ny) -> (L + 1, nx, ny)``, on the selected device."""
    y = checks.check_array(y, "y", ndim=4)
    L = check_count(num_labels, "num_labels", minimum=2)
    if y.shape[:2] != (L, 3):
        raise ValueError(f"y must be (num_labels, 3, nx, ny) = ({L}, 3, nx, ny), got shape {y.shape}")
    return _lift_adjoint(y, L)


def _lift_adjoint(y, L):
    """The kernel of :func:`lift_adjoint` (checked inputs; the lifted PDHG applies it every iteration)."""
    xp = backend.get_array_module(y)
    q, p = y[:, 0], y[:, 1:]
    out = xp.empty((L + 1,) + y.shape[2:], dtype=y.dtype)
    out[:L - 1] = q[1:] - q[:-1] - divergence(xp.moveaxis(p[:-1], 1, 0))
    out[L - 1:] = p.sum(axis=0)
    return out


def tv_s1_lifting(phase, weight: float, *, data_weight=None, num_labels: int = 16,
                  max_num_iter: int = 3000, tol: float = 1e-3, check_every: int = 25) -> TVS1Result:
    """TV denoising on S¹ by functional lifting over ``num_labels`` labels (approach 2).

    Minimises the convex relaxation of
    ``E(θ) = Σ a (1 - cos(θ - φ)) + λ TV_S¹(θ)`` (module docstring) by PDHG
    with the diagonal steps of Pock and Chambolle (2011), ``τ = 1/Σ_i|K_ij|``
    and ``σ = 1/Σ_j|K_ij|``: ``τ_φ = 1/6``, ``τ_w = 1/L``, ``σ_q = 1/2``,
    ``σ_p = 1/3``. Stops when the relative primal-dual gap is below ``tol``;
    the gap is taken between a feasible primal point (φ made monotone) and a
    feasible dual point (the closing condition imposed, then scaled into
    the balls), so it bounds the true gap from above. The gap is evaluated
    on the device every ``check_every`` iterations and one number per check
    comes to the host (none with ``tol=0``).

    Parameters
    ----------
    phase : (nx, ny) array, real
        Noisy phase φ [rad].
    weight : float
        λ > 0, as in :func:`mbook.inverse.circle.tv_s1_denoise`.
    data_weight : (nx, ny) array, optional
        Per-pixel confidence ``a >= 0``; default 1.
    num_labels : int
        L >= 4 labels on the circle.
    max_num_iter, check_every : int
    tol : float
        Relative primal-dual gap to stop at; 0 runs every iteration.

    Returns
    -------
    TVS1Result
        ``phase`` on the selected device; ``energy`` is ``E`` of the read-out
        phase (not of the relaxation).
    """
    phi, weight, a = check_phase_data(phase, weight, data_weight)
    num_labels = check_iterations(num_labels, "num_labels")
    if num_labels < 4:
        raise ValueError(f"num_labels must be >= 4, got {num_labels}")
    max_num_iter = check_iterations(max_num_iter)
    check_every = check_iterations(check_every, "check_every")
    tol = check_tolerance(tol)
    theta, held, it, converged = tv_s1_lifting_iterations(phi, weight, a, num_labels=num_labels,
                                                          max_num_iter=max_num_iter, tol=tol,
                                                          check_every=check_every)
    energy = s1_energy(theta, phi, weight, data_weight=a)
    return TVS1Result(theta, it, held, energy, converged)


def tv_s1_lifting_iterations(phi, weight: float, data_weight, *, num_labels: int = 16,
                             max_num_iter: int = 3000, tol: float = 0.0, check_every: int = 25):
    """The solver of :func:`tv_s1_lifting` on data already checked: no validation, no final energy.

    For callers that run it inside their own loop (the phase prior of
    :func:`mbook.inverse.cdi.phase_prior`): with ``tol=0`` it copies nothing
    to the host.

    Parameters
    ----------
    phi : (nx, ny) float array
        Phase [rad], on the device (as
        :func:`mbook.inverse.circle.check_phase_data` returns it).
    weight : float
        λ > 0.
    data_weight : (nx, ny) float array
        ``a >= 0``, on the same device.
    num_labels : int
        L >= 4.
    max_num_iter, check_every : int
    tol : float
        As in :func:`tv_s1_lifting`.

    Returns
    -------
    phase : (nx, ny) array
        Wrapped to [-π, π) [rad].
    iterate_bytes : int
    num_iter : int
    converged : bool

    Raises
    ------
    MemoryError
        When the lifted arrays exceed the memory budget.
    """
    xp = backend.get_array_module(phi)
    a = data_weight
    L, h = num_labels, 2 * math.pi / num_labels
    # Peak memory: x, x̄, x_new (L+1 fields), y and its update (3L), the cost table (L),
    # and temporaries of the operator (about 4L): refuse early, with the numbers.
    progress.plan_batches(n_items=1, bytes_per_item=(3 * (L + 1) + 2 * 3 * L + L + 4 * L) * phi.nbytes)
    gamma = labels(L, xp=xp)
    rho = a * (1 - xp.cos(gamma[:, None, None] - phi))  # (L, nx, ny) data cost
    radius = weight * h

    best = xp.argmin(rho, axis=0)
    x0 = xp.zeros((L + 1,) + phi.shape)
    x0[:L - 1] = (xp.arange(1, L)[:, None, None] <= best).astype(x0.dtype)  # start at the best label
    y0 = xp.zeros((L, 3) + phi.shape)
    tau = xp.asarray([1 / 6] * (L - 1) + [1 / L] * 2)[:, None, None]
    sigma = xp.asarray([0.5, 1 / 3, 1 / 3])[None, :, None, None]

    def prox_g(v, step):
        out = v.copy()
        out[:L - 1] = xp.clip(v[:L - 1], 0.0, 1.0)
        return out

    def prox_fstar(v, step):
        out = v.copy()
        out[0, 0] += step[0, 0]  # the offset φ_0 = 1 in row 0
        out[:, 0] = xp.minimum(out[:, 0], rho)
        out[:, 1:] = project_ball(out[:, 1:], radius, axis=1)
        return out

    def label_weights(x):
        """u_k of the monotone (feasible) version of φ."""
        phi_k = xp.concatenate([xp.ones((1,) + phi.shape), xp.clip(x[:L - 1], 0, 1),
                                xp.zeros((1,) + phi.shape)])
        phi_k = _cumulative_min(phi_k)
        return phi_k[:-1] - phi_k[1:], phi_k

    def objectives(x, y):  # 0-d device arrays: pdhg copies one number per check
        u, phi_k = label_weights(x)
        grads = xp.moveaxis(gradient(phi_k[1:-1]), 0, 1)  # (L-1, 2, nx, ny)
        w = x[L - 1:]
        tv = xp.sum(xp.sqrt(xp.sum((grads + w) ** 2, axis=1))) + xp.sum(xp.sqrt(xp.sum(w**2, axis=0)))
        primal = xp.sum(rho * u) + radius * tv
        feasible = y.copy()
        feasible[:, 0] = xp.minimum(y[:, 0], rho)
        p = y[:, 1:] - y[:, 1:].mean(axis=0, keepdims=True)  # Σ_k p_k = 0
        norms = xp.sqrt(xp.sum(p**2, axis=1, keepdims=True)).max(axis=0, keepdims=True)
        feasible[:, 1:] = p * xp.minimum(1.0, radius / xp.maximum(norms, 1e-300))
        coefficients = _lift_adjoint(feasible, L)[:L - 1]
        dual = xp.sum(feasible[0, 0]) + xp.sum(xp.minimum(coefficients, 0))
        return primal, dual

    # With tol=0 no gap is tested: skip evaluating it too (it costs about an iteration).
    result = pdhg_iterations(
        x0, y0, K=lambda x: _lift_apply(x, L), K_adjoint=lambda y: _lift_adjoint(y, L),
        prox_g=prox_g, prox_fstar=prox_fstar, tau=tau, sigma=sigma,
        objectives=objectives if tol > 0 else None, tol=tol, max_num_iter=max_num_iter,
        check_every=check_every,
    )
    u, _ = label_weights(result.x)
    theta = xp.angle(xp.sum(u * xp.exp(1j * gamma)[:, None, None], axis=0))
    # Held through the iteration: x, x̄, the dual field, the cost table and the data.
    held = 2 * x0.nbytes + y0.nbytes + rho.nbytes + phi.nbytes + a.nbytes
    return wrap(theta), int(held), result.num_iter, result.converged


def _cumulative_min(array):
    """Running minimum along axis 0 (CuPy has no ``minimum.accumulate``)."""
    xp = backend.get_array_module(array)
    out = array.copy()
    for k in range(1, out.shape[0]):
        out[k] = xp.minimum(out[k], out[k - 1])
    return out
