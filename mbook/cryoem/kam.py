"""Kam's reconstruction: invariants from measured moments, and a structure prior for the rest.

The second image moment is ``Σ_l C_l(k1, k2) P_l(cos ∠(k1, k2))`` with
``C_l = A_l A_lᵀ / 4π`` (:mod:`mbook.cryoem.moments`). A particle inside a ball of
radius R has ``A_lm(k) = Σ_p β_lmp j_l(2π k r_p)`` on radial nodes r_p spaced
finer than ``1 / (2 k_max)``, so ``C_l(k1, k2) = J_l(k1) B_l J_l(k2)ᵀ`` with
``B_l = β_l β_lᵀ / 4π``: linear in the symmetric blocks B_l, which are fitted to
the measured second moment by weighted least squares
(:func:`estimate_invariants`). Each ``B_l`` gives β_l only up to an
orthogonal matrix ``O_l``; :func:`reconstruct` picks the ``O_l`` closest to a
prior structure (orthogonal Procrustes, the "orthogonal replacement" of
Bhamre, Zhang & Singer 2015), and :func:`volume_from_coefficients`
synthesises the map.

Device rule: the fits need :mod:`scipy.special` (``spherical_jn``,
``eval_legendre``) on thousands of frequency pairs, which has no device
implementation here. These are host-only steps: the moments are copied to the
host once, the fit runs there, and every array returned is on the selected
device. The map's inverse FFT runs on the device.

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.cryoem import kam, moments, particles
>>> atoms = particles.random_domains(2, atoms_per_domain=10, domain_radius=6.0, spread=7.0, seed=0)
>>> exact = moments.analytic_moments(atoms, grids.make_grid(gpts=(16, 16), sampling=3.0), k_max=0.1)
>>> fitted = kam.estimate_invariants(exact, radius=20.0, l_max=4)
>>> len(fitted.blocks), fitted.nodes.size
(5, 8)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import special

from mbook.core import backend, checks, grids, progress
from mbook.cryoem import moments, particles


class Invariants(NamedTuple):
    """Kam's invariants in a spherical-Bessel radial basis (arrays on the selected device).

    A particle inside a ball of radius R has ``A_lm(k) = Σ_p β_lmp j_l(2π k r_p)``
    for radial nodes ``r_p`` spaced finer than ``1 / (2 k_max)`` (a quadrature
    of the Hankel transform ``4π ∫ ρ_lm(r) j_l(2πkr) r² dr``), so
    ``C_l(k1, k2) = J_l(k1) B_l J_l(k2)ᵀ`` with ``B_l = β_l β_lᵀ / 4π``.

    Attributes
    ----------
    nodes : (p,) ndarray
        Radial nodes r_p [Å].
    blocks : list of (p, p) ndarray
        ``B_l`` for l = 0..l_max.
    """

    nodes: np.ndarray
    blocks: list


def _radial_nodes(radius, k_max, oversampling):
    count = int(math.ceil(2 * k_max * radius * oversampling))
    return (np.arange(count) + 0.5) * radius / count


def radial_nodes(radius, k_max, *, oversampling=2.0):
    """Midpoint nodes on [0, radius] spaced ``1 / (2 k_max oversampling)`` [Å]; on the selected device."""
    radius = checks.check_positive_number(radius, "radius")
    k_max = checks.check_positive_number(k_max, "k_max")
    oversampling = checks.check_positive_number(oversampling, "oversampling")
    return backend.asarray(_radial_nodes(radius, k_max, oversampling))


def _bessel_matrix(l, radii, nodes):
    """Host kernel: j_l(2π k r_p), radii (s,) and nodes (p,) NumPy -> (s, p)."""
    return special.spherical_jn(l, 2 * math.pi * radii[:, None] * nodes[None, :])


def _host_moments(moments_):
    """Host copies of what the fits use: radius, angle, second moment (real part) and weight."""
    if not isinstance(moments_, moments.Moments):
        raise TypeError(f"moments_ must be Moments (see moments.analytic_moments), got {type(moments_).__name__}")
    f = moments_.frequencies
    radius, angle = backend.asnumpy(f.radius), backend.asnumpy(f.angle)
    second = backend.asnumpy(moments_.second).real
    weight = None if moments_.weight is None else backend.asnumpy(moments_.weight)
    return radius, angle, second, weight


def estimate_invariants(moments_: moments.Moments, *, radius, l_max=None, oversampling=2.0, regularization=1e-10,
                        chunk=4096) -> Invariants:
    """Least-squares fit of Kam's invariants to a measured second moment.

    Model, on all pairs of disk frequencies (real part; the expectation is real):
    ``M(k1, k2) = Σ_l P_l(cos ∠(k1, k2)) J_l(|k1|) B_l J_l(|k2|)ᵀ``
    with ``J_l(k) = [j_l(2π k r_p)]_p`` (see :class:`Invariants`). Linear in the
    symmetric blocks ``B_l``; solved by weighted least squares (the inverse
    variances ``moments_.weight``, or relative errors for exact moments)
    through the normal equations, with a small Tikhonov term on the
    column-scaled problem (columns of high degree at small nodes are ~0).
    Host-only step (:mod:`scipy.special`): the moments are copied to the host once.

    Parameters
    ----------
    moments_ : Moments
    radius : float
        Radius of a ball centred on the rotation centre that holds the particle [Å].
    l_max : int, optional
        Largest degree (default :func:`default_l_max` at the largest frequency).
    oversampling : float
        Of the radial nodes (:func:`radial_nodes`).
    regularization : float
        Relative Tikhonov weight.
    chunk : int
        Pairs per block when building the normal equations (memory).

    Returns
    -------
    Invariants
        On the selected device.

    Raises
    ------
    MemoryError
        Before any work, when the normal equations ((l_max + 1) p(p + 1)/2 unknowns squared, p radial
        nodes) exceed the memory budget.
    """
    radius = checks.check_positive_number(radius, "radius")
    oversampling = checks.check_positive_number(oversampling, "oversampling")
    regularization = checks.check_positive_number(regularization, "regularization", allow_zero=True)
    chunk = checks.check_count(chunk, "chunk")
    f_radius, f_angle, second, weight = _host_moments(moments_)
    k_max = float(f_radius.max())
    l_max = moments.default_l_max(k_max, radius) if l_max is None else checks.check_count(l_max, "l_max", minimum=0)
    nodes = _radial_nodes(radius, k_max, oversampling)
    p = nodes.size
    upper = np.triu_indices(p)
    doubled = np.where(upper[0] == upper[1], 1.0, 2.0)  # symmetric unknowns off the diagonal count twice
    per_l = upper[0].size
    size = (l_max + 1) * per_l
    # The normal equations (size²) and one block of the design matrix (chunk × size), before building them;
    # the solve costs size³ on top.
    try:
        progress.plan_batches(n_items=1, bytes_per_item=8 * (size * size + 2 * chunk * size))
    except MemoryError as error:
        raise MemoryError(f"l_max = {l_max} with {p} radial nodes: {error}") from None
    bessel = [_bessel_matrix(l, f_radius, nodes) for l in range(l_max + 1)]
    rows, cols = np.triu_indices(f_radius.size)
    if weight is None:  # exact moments: fit relative errors
        power = np.maximum(np.diag(second), 1e-300)
        weight = 1 / (power[:, None] * power[None, :])
    normal, rhs = np.zeros((size, size)), np.zeros(size)
    for start in range(0, rows.size, chunk):
        r, c = rows[start:start + chunk], cols[start:start + chunk]
        cos = np.cos(f_angle[r] - f_angle[c])
        blocks = []
        for l in range(l_max + 1):
            outer = bessel[l][r][:, :, None] * bessel[l][c][:, None, :]
            sym = 0.5 * (outer + outer.transpose(0, 2, 1))
            blocks.append(special.eval_legendre(l, cos)[:, None] * sym[:, upper[0], upper[1]] * doubled)
        w = weight[r, c]
        design = np.concatenate(blocks, axis=1)
        normal += design.T @ (w[:, None] * design)
        rhs += design.T @ (w * second[r, c])
    scale = np.sqrt(np.maximum(np.diag(normal), 1e-300))
    scaled = normal / scale[:, None] / scale[None, :]
    scaled += regularization * np.eye(size)
    solution = np.linalg.solve(scaled, rhs / scale) / scale
    out = []
    for l in range(l_max + 1):
        block = np.zeros((p, p))
        block[upper] = solution[l * per_l:(l + 1) * per_l]
        out.append(backend.asarray(block + np.triu(block, 1).T))
    return Invariants(backend.asarray(nodes), out)


def _host_invariants(invariants_):
    if not isinstance(invariants_, Invariants):
        raise TypeError(f"invariants_ must be Invariants (see estimate_invariants), got {type(invariants_).__name__}")
    return backend.asnumpy(invariants_.nodes), [backend.asnumpy(b) for b in invariants_.blocks]


def invariants_on_shells(invariants_: Invariants, radii):
    """``C_l(k_s1, k_s2) = J_l(k_s1) B_l J_l(k_s2)ᵀ`` on the given radii [1/Å]; list of (s, s) on the selected device.

    Host-only step (:mod:`scipy.special`).
    """
    radii = backend.asnumpy(checks.check_array(radii, "radii", ndim=1, real=True)).astype(float)
    if np.any(radii < 0):
        raise ValueError("radii must be >= 0 (shell radii [1/Å])")
    nodes, blocks = _host_invariants(invariants_)
    out = []
    for l, b in enumerate(blocks):
        j = _bessel_matrix(l, radii, nodes)
        out.append(backend.asarray(j @ b @ j.T))
    return out


def reconstruct(invariants_: Invariants, prior: particles.Atoms, *, k_max, n_radii=32):
    """Coefficients ``A_l`` from the invariants, with the ambiguity fixed by a prior structure.

    On ``n_radii`` radii in (0, k_max] the invariants are ``C_l = J_l B_l J_lᵀ``
    (:func:`invariants_on_shells`), and ``C_l = A_l A_lᵀ / 4π`` has rank
    ``2l + 1``: its leading eigenpairs ``C_l ≈ G Gᵀ / 4π`` give ``A_l = G O_l``
    for any ``O_l`` with orthonormal rows. ``O_l`` is the polar factor of
    ``Gᵀ A_l^prior`` (orthogonal Procrustes: the closest solution to the
    prior's coefficients, Bhamre, Zhang & Singer 2015). The truncation is made
    on the shells, not on ``B_l`` in the node basis, where ``J_l`` has near
    null directions that ``B_l`` leaves undetermined (their eigenvalues there
    can be 10⁹ and mean nothing on the shells). With ``J_l = U S Wᵀ``, the
    eigenpairs ``Q, Λ`` of ``S Wᵀ B_l W S`` give ``G = sqrt(4π) U Q Λ^½`` and
    the node coefficients ``β_l = sqrt(4π) W S⁻¹ Q Λ^½ O_l``, so that
    ``J_l β_l = G O_l`` (singular values below 1e-10 of the largest dropped).
    Host-only step (:mod:`scipy.special`; small eigen- and singular-value
    problems).

    Parameters
    ----------
    invariants_ : Invariants
    prior : Atoms
        The structure prior (e.g. a related entry of a structure library).
    k_max : float
        [1/Å].
    n_radii : int
        Radii on which the prior is matched.

    Returns
    -------
    list of (p, 2l+1) ndarray
        ``β_l`` such that ``A_l(k) = J_l(k) β_l``, on the selected device.
    """
    k_max = checks.check_positive_number(k_max, "k_max")
    n_radii = checks.check_count(n_radii, "n_radii")
    nodes, blocks = _host_invariants(invariants_)
    particles.check_atoms(prior, "prior")
    radii = np.linspace(0, k_max, n_radii + 1)[1:]
    prior_coefficients = [backend.asnumpy(a) for a in moments.sh_coefficients(prior, radii, l_max=len(blocks) - 1)]
    betas = []
    for l, block in enumerate(blocks):
        u, s, wt = np.linalg.svd(_bessel_matrix(l, radii, nodes), full_matrices=False)
        rank = int(np.count_nonzero(s > 1e-10 * s[0]))
        u, s, w = u[:, :rank], s[:rank], wt[:rank].T
        values, vectors = np.linalg.eigh(s[:, None] * (w.T @ block @ w) * s[None, :])
        keep = np.argsort(values)[::-1][:min(rank, 2 * l + 1)]
        root = math.sqrt(4 * math.pi) * vectors[:, keep] * np.sqrt(np.clip(values[keep], 0, None))
        left, _, right = np.linalg.svd((u @ root).T @ prior_coefficients[l], full_matrices=False)
        betas.append(backend.asarray(w @ (root / s[:, None]) @ (left @ right)))
    return betas


def volume_from_coefficients(betas, nodes, grid, *, k_max):
    """Real-space volume of ``F(k) = Σ_lm (-i)^l A_lm(|k|) Y_lm(k̂)`` for ``|k| <= k_max``.

    The spectrum is built on the host (:mod:`scipy.special`, a host-only
    step, on the frequencies inside the ball); the inverse FFT runs on the
    selected device.

    Parameters
    ----------
    betas : list of (p, 2l+1) ndarray
        From :func:`reconstruct` (or a fit of a known structure).
    nodes : (p,) ndarray
        Radial nodes [Å].
    grid : Grid
        Cubic 3D grid [Å] of the result (origin at index n//2).
    k_max : float
        [1/Å].

    Returns
    -------
    (n, n, n) ndarray
        Density [weight/Å³], on the selected device.
    """
    grid = particles.check_grid(grid, 3)
    k_max = checks.check_positive_number(k_max, "k_max")
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__iter__"):
        raise TypeError(f"betas must be a list of (p, 2l+1) arrays, got {betas!r:.60}")
    nodes = backend.asnumpy(checks.check_array(nodes, "nodes", ndim=1, real=True)).astype(float)
    betas = [backend.asnumpy(checks.check_array(b, "betas", ndim=2, real=True)) for b in betas]
    if not betas or any(b.shape != (nodes.size, 2 * l + 1) for l, b in enumerate(betas)):
        raise ValueError(f"betas must be [(p, 2l+1) for l = 0..l_max] with p = {nodes.size} nodes, got "
                         f"{[b.shape for b in betas]}")
    k = np.meshgrid(*grids.spatial_frequencies(grid, xp=np), indexing="ij")
    k = np.stack([c.ravel() for c in k], axis=1)
    radius = np.linalg.norm(k, axis=1)
    inside = np.nonzero(radius <= k_max)[0]
    harmonics = [backend.asnumpy(y) for y in moments.spherical_harmonics(len(betas) - 1, k[inside])]
    spectrum = np.zeros(radius.size, dtype=complex)
    for l, beta in enumerate(betas):
        a = _bessel_matrix(l, radius[inside], nodes) @ beta
        spectrum[inside] += (-1j) ** l * np.sum(a * harmonics[l], axis=1)
    spectrum = backend.asarray(spectrum.reshape(grid.gpts))
    xp = backend.get_array_module(spectrum)
    h = grid.sampling[0]
    return xp.fft.fftshift(backend.ifftn(spectrum).real / h**3)
