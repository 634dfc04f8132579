"""Atoms, not voxels: refine atom positions directly against the projections.

White paper 7.4: "Parametric modeling of the atomic centers, intensities, and
motion ... eliminates all above artifacts in addition to identifying the
atom types and positions. The challenge ... is that it requires a good
initialization, such as the number of atoms and their approximated
positions." The traced anchor volumes give that initialisation.

The model: anchor ``m`` holds atoms at positions ``r_{m,j}`` with
cross-sections ``σ_{m,j}`` (from their species), each a Gaussian of width
``w``; projection ``k`` sees the anchors through the temporal weights,

.. math::

    p_k(v, u) = \\sum_m w_{km} \\sum_j \\sigma_{m,j}\\,
    g\\big(v - v_{kmj},\\, u - u_{kmj}\\big), \\qquad
    (\\cdot, v_{kmj}, u_{kmj}) = R_k r_{m,j},

the same contrast model as :func:`mbook.tomography.specimens.project_atoms`.
:class:`AtomProjector` evaluates it and the gradient of
``L = ½ Σ_k ‖p_k - b_k‖²`` with respect to every position, by hand (the
derivative of a Gaussian is the Gaussian times ``(v - v_a)/w²``, chained
through the rotation and the temporal weights); the tests check it against
finite differences. :func:`refine_positions` runs preconditioned gradient
descent on it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, scatter


#: Iterations between the checks that the loss has not risen (see :func:`refine_positions`).
CHECK_EVERY = 5


class Refinement(NamedTuple):
    """Refined positions per anchor (list of (n_m, 3) device arrays [Å]) and the relative data residual
    ``‖p - b‖ / ‖b‖`` per iteration (device array)."""

    positions: list
    residuals: object


class AtomProjector:
    """Projections of Gaussian atoms held by anchors, and the gradient of the misfit in their positions.

    Parameters
    ----------
    rotations : (N, 3, 3) array_like
        One rotation per projection (:func:`mbook.tomography.projector.tilt_rotations`).
    weights : (N, M) array_like
        Temporal weights of the anchors (:func:`mbook.tomography.reconstruct.temporal_weights`).
    cross_sections : sequence of M (n_m,) array_like
        Cross-section of every atom of every anchor [Å²].
    gpts : (2,) int
        Detector pixels ``(nv, nu)``.
    sampling : float
        Pixel size [Å].
    width : float
        Gaussian width of an atom [Å].
    cutoff : float
        Anchors whose weight at a projection is below ``cutoff`` times the
        largest weight are left out of it.
    """

    def __init__(self, rotations, weights, cross_sections, *, gpts, sampling: float, width: float,
                 cutoff: float = 1e-3):
        self.rotations = checks.check_array(rotations, "rotations", ndim=3, real=True)
        if self.rotations.shape[1:] != (3, 3):
            raise ValueError(f"rotations must have shape (N, 3, 3), got {self.rotations.shape}")
        weights = checks.check_array(weights, "weights", ndim=2, real=True)
        if weights.shape[0] != self.rotations.shape[0]:
            raise ValueError(f"weights has {weights.shape[0]} rows but rotations {self.rotations.shape[0]}")
        if not isinstance(cross_sections, (list, tuple)) or len(cross_sections) != weights.shape[1]:
            raise TypeError(f"cross_sections must be a list of {weights.shape[1]} arrays, one per anchor, got "
                            f"{type(cross_sections).__name__}")
        sigma = [backend.asnumpy(checks.check_array(c, "cross_sections", ndim=1, real=True)) for c in cross_sections]
        self.gpts = checks.check_gpts(gpts, 2)
        self.sampling = checks.check_positive_number(sampling, "sampling")
        self.width = checks.check_positive_number(width, "width")
        cutoff = checks.check_number(cutoff, "cutoff", lower=0, upper=1, upper_inclusive=False)
        self.counts = [s.size for s in sigma]
        # Host bookkeeping (parameters): which atoms each projection sees, padded to one length.
        w = backend.asnumpy(weights).astype(np.float64)
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        rows = []
        for k in range(w.shape[0]):
            anchors = np.flatnonzero(w[k] > cutoff * w.max())
            rows.append([(j, w[k, m] * sigma[m][j - offsets[m]]) for m in anchors for j in range(offsets[m],
                                                                                                  offsets[m + 1])])
        width_p = max(1, max(len(r) for r in rows))
        index = np.zeros((w.shape[0], width_p), dtype=np.int64)
        amplitude = np.zeros((w.shape[0], width_p))
        for k, row in enumerate(rows):
            if row:
                index[k, :len(row)], amplitude[k, :len(row)] = zip(*row)
        self.num_atoms = int(offsets[-1])
        self.index, self.amplitude = backend.asarray(index), backend.asarray(amplitude)
        xp = backend.get_array_module(self.index)
        self.grids = [(xp.arange(n, dtype=xp.float64) - n // 2) * self.sampling for n in self.gpts]
        # Gauss-Newton diagonal: each projection adds a² ∫|∂g|² / s² = a² / (8π w⁴ s²) along its v and u.
        curvature = self.amplitude**2 / (8 * math.pi * self.width**4 * self.sampling**2)
        directions = self.rotations[:, 1, :] ** 2 + self.rotations[:, 2, :] ** 2  # (N, 3)
        self.diagonal = xp.stack([
            scatter.bincount(self.index.reshape(-1), (curvature * directions[:, None, d]).reshape(-1), self.num_atoms)
            for d in range(3)], axis=1)

    def split(self, positions) -> list:
        """``(J, 3)`` flat positions -> one ``(n_m, 3)`` array per anchor."""
        bounds = np.cumsum(self.counts)[:-1].tolist()
        return [positions[a:b] for a, b in zip([0] + bounds, bounds + [self.num_atoms])]

    def _gaussians(self, positions):
        xp = backend.get_array_module(positions)
        atoms = positions[self.index]  # (N, P, 3)
        v = xp.einsum("kd,kpd->kp", self.rotations[:, 1, :], atoms)
        u = xp.einsum("kd,kpd->kp", self.rotations[:, 2, :], atoms)
        norm = 1 / (math.sqrt(2 * math.pi) * self.width)
        dv = self.grids[0][None, None, :] - v[..., None]  # (N, P, nv)
        du = self.grids[1][None, None, :] - u[..., None]
        gv = norm * xp.exp(-0.5 * (dv / self.width) ** 2)
        gu = norm * xp.exp(-0.5 * (du / self.width) ** 2)
        return gv, gu, dv, du

    def forward(self, positions):
        """Projections ``(N, nv, nu)`` of the atoms at ``positions`` ``(J, 3)`` [Å] (all anchors, in order)."""
        positions = backend.asarray(positions)
        xp = backend.get_array_module(positions)
        if tuple(positions.shape) != (self.num_atoms, 3):
            raise ValueError(f"positions must have shape ({self.num_atoms}, 3), got {positions.shape}")
        gv, gu, _, _ = self._gaussians(positions)
        return xp.matmul(xp.swapaxes(gv * self.amplitude[..., None], 1, 2), gu)

    def loss_and_gradient(self, positions, projections):
        """``L = ½ ‖p(positions) - b‖²`` (0-d device array) and ``∂L/∂positions`` ``(J, 3)`` [1/Å].

        By hand: ``∂p/∂v_a = a g_v' g_u`` with ``g_v' = g_v (v - v_a)/w²``;
        the pixel sums are matrix products with the residual; the rotation
        takes ``(∂/∂v, ∂/∂u)`` back to the object frame, and the temporal
        weights (inside the amplitudes ``a``) add each projection's share to
        its anchors' atoms (a ``bincount``).
        """
        positions = backend.asarray(positions)
        projections = backend.asarray(projections)
        xp = backend.get_array_module(positions)
        gv, gu, dv, du = self._gaussians(positions)
        a = self.amplitude[..., None]
        residual = xp.matmul(xp.swapaxes(gv * a, 1, 2), gu) - projections  # (N, nv, nu)
        along_u = xp.matmul(residual, xp.swapaxes(gu, 1, 2))  # (N, nv, P): Σ_u r g_u
        along_v = xp.matmul(xp.swapaxes(residual, 1, 2), xp.swapaxes(gv, 1, 2))  # (N, nu, P): Σ_v r g_v
        grad_v = self.amplitude * xp.einsum("kpv,kvp->kp", gv * dv / self.width**2, along_u)
        grad_u = self.amplitude * xp.einsum("kpu,kup->kp", gu * du / self.width**2, along_v)
        per_projection = grad_v[..., None] * self.rotations[:, None, 1, :] + grad_u[..., None] * self.rotations[
            :, None, 2, :]  # (N, P, 3) in the object frame
        gradient = xp.stack([scatter.bincount(self.index.reshape(-1), per_projection[..., d].reshape(-1), self.num_atoms)
                             for d in range(3)], axis=1)
        return 0.5 * xp.sum(residual**2), gradient


def refine_positions(projections, operator: AtomProjector, positions, *, max_num_iter: int = 40,
                     step: float = 0.15) -> Refinement:
    """Fit atom positions to the projections by preconditioned gradient descent.

    ``r ← r - τ D^{-1} ∇L`` with ``D`` the Gauss-Newton diagonal of
    :class:`AtomProjector` (so Fe and Pt atoms, whose gradients differ by
    their cross-sections squared, move at the same pace), ``τ = step``. The
    diagonal ignores the coupling of atoms that project onto the same pixels
    (a column of ``n`` atoms along the beam has up to ``n`` times the
    curvature), hence a step well below 1: 0.15 is stable for the 149-atom
    particle of the book's default size, 0.5 is not, and a larger particle
    has longer columns. So the loss is compared every
    ``CHECK_EVERY`` iterations with its value at the last check; where it
    has risen, the iteration returns to the positions of that check and
    halves ``τ``. The comparison is made on the device (``where``), so no
    value is copied to the host inside the loop.

    Parameters
    ----------
    projections : (N, nv, nu) array_like
        The data.
    operator : AtomProjector
    positions : sequence of (n_m, 3) array_like
        Starting positions per anchor [Å], e.g. traced from anchor volumes.
    max_num_iter : int
    step : float
        ``τ`` in (0, 1].

    Returns
    -------
    Refinement
    """
    if not isinstance(operator, AtomProjector):
        raise TypeError(f"operator must be an AtomProjector, got {type(operator).__name__}")
    b = checks.check_array(projections, "projections", ndim=3, real=True)
    if tuple(b.shape) != (operator.rotations.shape[0],) + operator.gpts:
        raise ValueError(f"projections must have shape {(operator.rotations.shape[0],) + operator.gpts}, "
                         f"got {b.shape}")
    if not isinstance(positions, (list, tuple)) or [len(p) for p in positions] != operator.counts:
        raise ValueError(f"positions must be a list of arrays with {operator.counts} atoms per anchor")
    max_num_iter = checks.check_iterations(max_num_iter)
    step = checks.check_number(step, "step", lower=0, upper=1, lower_inclusive=False)
    xp = backend.get_array_module(b)
    r = xp.concatenate([checks.check_array(p, "positions", ndim=2, real=True).astype(xp.float64)
                        for p in positions])
    b = b.astype(xp.float64)
    inverse = 1 / xp.maximum(operator.diagonal, 1e-30 + 1e-6 * xp.max(operator.diagonal))
    norm_b = xp.linalg.norm(b)
    residuals = []
    tau = xp.asarray(step, dtype=xp.float64)
    last_r, last_gradient, last_loss = r, xp.zeros_like(r), xp.asarray(xp.inf)
    for iteration in range(max_num_iter):
        loss, gradient = operator.loss_and_gradient(r, b)
        if iteration % CHECK_EVERY == 0:
            rose = loss > last_loss  # diverging: back to the last check's positions, with half the step
            r, gradient = xp.where(rose, last_r, r), xp.where(rose, last_gradient, gradient)
            loss, tau = xp.where(rose, last_loss, loss), xp.where(rose, tau / 2, tau)
            last_r, last_gradient, last_loss = r, gradient, loss
        residuals.append(xp.sqrt(2 * loss) / norm_b)
        r = r - tau * inverse * gradient
    return Refinement(operator.split(r), xp.stack(residuals))
