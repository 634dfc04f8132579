"""Kam's method of moments: image moments, spherical-harmonic invariants, a structure prior.

Write the particle's Fourier transform in real spherical harmonics,
``F(k) = Σ_{l,m} (-i)^l A_lm(|k|) Y_lm(k̂)``; for Gaussian atoms (plane-wave
expansion, ``e^{-2πi k·r} = 4π Σ_l (-i)^l j_l(2πkr) Σ_m Y_lm(k̂) Y_lm(r̂)``)

``A_lm(k) = 4π Σ_a w_a exp(-2π² σ_a² k²) j_l(2π k |r_a|) Y_lm(r̂_a)``  (real).

Images at Haar-uniform rotations have, by the Fourier slice theorem and the
orthogonality of Wigner matrices, the first and second moments (Kam 1980)

``E[Î(k)] = A_00(|k|) / sqrt(4π)``,
``E[Î(k1) Î(k2)*] = Σ_l C_l(|k1|, |k2|) P_l(cos ∠(k1, k2))``,
``C_l(k1, k2) = (1/4π) Σ_m A_lm(k1) A_lm(k2)``.

So the image moments determine the invariants ``C_l = A_l A_lᵀ / 4π`` (A_l the
matrix of coefficients over shells × m) and thus ``A_l`` up to an orthogonal
matrix ``O_l`` of size 2l+1 for every l. Here that ambiguity is resolved with
a *structure prior*: the ``O_l`` that brings the factor of ``C_l`` closest to
the coefficients of a known related structure (orthogonal Procrustes; the
"orthogonal replacement" of Bhamre, Zhang & Singer 2015).

Images are compared on the Cartesian grid of their discrete Fourier transform
``Î(k) = Δ² FFT[I]`` (origin at pixel n//2), restricted to the disk
``|k| <= k_max``. With CTFs ``H_i``, white noise of variance σ² and contrast
``c_i``, the CTF-aware least-squares estimates (Bhamre, Zhang & Singer 2016)

``μ̂(k) = Σ_i H_i(k) Î_i(k) / Σ_i H_i(k)²``,
``M̂(k1, k2) = Σ_i H_i(k1) H_i(k2) [Î_i(k1) Î_i(k2)* - δ σ_F²] / Σ_i H_i(k1)² H_i(k2)²``,

with ``σ_F² = σ² Δ⁴ n²`` the noise variance of one Fourier coefficient, are
unbiased for ``E[c] E[Î]`` and ``E[c²] E[Î Î*]``; they are accumulated in one
streaming pass over the image batches (:func:`empirical_moments`).

Device rule: the streaming estimates run on the selected device. The analytic
moments and the spherical-Bessel coefficients need :mod:`scipy.special`
(``spherical_jn``, ``eval_legendre``), which has no device implementation
here: those steps copy their (small) inputs to the host, compute there, and
return their arrays on the selected device.

Examples
--------
>>> import numpy as np
>>> from mbook.core import grids
>>> from mbook.cryoem import moments, particles
>>> atoms = particles.random_structure(30, radii=(8.0, 8.0, 6.0), seed=0)
>>> grid = grids.make_grid(gpts=(24, 24), sampling=2.0)
>>> exact = moments.analytic_moments(atoms, grid, k_max=0.1)
>>> exact.second.shape == (exact.frequencies.radius.size,) * 2
True
>>> bool(np.isclose(float(exact.mean[0].real), float(atoms.weights.sum())))   # E[Î(0)] = total weight
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import special

from mbook.core import backend, checks, grids, progress
from mbook.cryoem import ctf, micrographs, particles


# --------------------------------------------------------------------------- frequencies
class DiskFrequencies(NamedTuple):
    """Grid frequencies of an image inside the disk ``|k| <= k_max`` (arrays on the selected device).

    Attributes
    ----------
    index : (q,) ndarray of int
        Flat indices into the ``(n, n)`` FFT array (FFT order).
    kx, ky : (q,) ndarray
        [1/Å].
    radius : (q,) ndarray
        ``|k|`` [1/Å].
    angle : (q,) ndarray
        ``atan2(ky, kx)`` [rad].
    grid : Grid
        The image grid.
    """

    index: np.ndarray
    kx: np.ndarray
    ky: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    grid: grids.Grid


def _disk(grid, k_max):
    """Host arrays (index, kx, ky, radius, angle) of the disk frequencies."""
    kx, ky = grids.spatial_frequencies(grid, xp=np)
    KX, KY = np.meshgrid(kx, ky, indexing="ij")
    inside = np.nonzero((KX**2 + KY**2).ravel() <= k_max**2 * (1 + 1e-12))[0]
    fx, fy = KX.ravel()[inside], KY.ravel()[inside]
    return inside, fx, fy, np.hypot(fx, fy), np.arctan2(fy, fx)


def _check_disk(grid, k_max):
    grid = particles.check_grid(grid, 2)
    k_max = checks.check_positive(k_max, "k_max", 1)[0]
    nyquist = 1 / (2 * grid.sampling[0])
    if k_max >= nyquist:
        raise ValueError(f"k_max must be below the Nyquist frequency {nyquist:.4g} 1/Å, got {k_max!r}")
    return grid, k_max


def disk_frequencies(grid, *, k_max) -> DiskFrequencies:
    """Frequencies of a square image grid with ``|k| <= k_max`` (below Nyquist).

    Parameters
    ----------
    grid : Grid
        Square 2D grid [Å].
    k_max : float
        [1/Å], at most the Nyquist frequency ``1 / (2 sampling)``.

    Returns
    -------
    DiskFrequencies
        Arrays on the selected device.
    """
    grid, k_max = _check_disk(grid, k_max)
    return DiskFrequencies(*(backend.asarray(a) for a in _disk(grid, k_max)), grid)


def check_frequencies(frequencies) -> DiskFrequencies:
    """``frequencies`` with its arrays on the selected device (no host copy)."""
    if not isinstance(frequencies, DiskFrequencies):
        raise TypeError(f"frequencies must be DiskFrequencies (see disk_frequencies), got {type(frequencies).__name__}")
    return DiskFrequencies(*(backend.asarray(a) for a in frequencies[:5]), frequencies.grid)


def image_transform(images, frequencies: DiskFrequencies):
    """``Î(k) = Δ² Σ_p I_p exp(-2πi k·x_p)`` at the disk frequencies (origin at pixel n//2).

    Parameters
    ----------
    images : (b, n, n) array_like
    frequencies : DiskFrequencies

    Returns
    -------
    (b, q) complex ndarray
        On the selected device [image units·Å²].
    """
    images = checks.check_array(images, "images", ndim=3)
    frequencies = check_frequencies(frequencies)
    if tuple(images.shape[1:]) != tuple(frequencies.grid.gpts):
        raise ValueError(f"images must be (n, {frequencies.grid.gpts[0]}, {frequencies.grid.gpts[1]}) on the grid "
                         f"of frequencies, got shape {images.shape}")
    return _image_transform(images, frequencies.index, frequencies.grid.sampling[0])


def _image_transform(images, index, h):
    xp = backend.get_array_module(images)
    spectra = backend.fft2(xp.fft.ifftshift(images, axes=(-2, -1)))
    return h**2 * spectra.reshape(images.shape[0], -1)[:, index]


# --------------------------------------------------------------------------- spherical harmonics
def _spherical_harmonics(l_max, d, xp):
    """Kernel of :func:`spherical_harmonics` on the device of ``d`` (n, 3)."""
    norm = xp.linalg.norm(d, axis=1)
    safe = xp.where(norm > 0, norm, 1.0)
    x = xp.where(norm > 0, d[:, 2] / safe, 1.0)
    phi = xp.arctan2(d[:, 1], d[:, 0])
    s = xp.sqrt(xp.clip(1 - x * x, 0, None))
    p = {(0, 0): xp.full_like(x, 1 / math.sqrt(4 * math.pi))}
    for m in range(1, l_max + 1):
        p[m, m] = -math.sqrt((2 * m + 1) / (2 * m)) * s * p[m - 1, m - 1]
    for m in range(0, l_max):
        p[m + 1, m] = math.sqrt(2 * m + 3) * x * p[m, m]
    for m in range(0, l_max + 1):
        for l in range(m + 2, l_max + 1):
            a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            p[l, m] = a * (x * p[l - 1, m] - b * p[l - 2, m])
    out = []
    for l in range(l_max + 1):
        cols = [math.sqrt(2) * p[l, -m] * xp.sin(-m * phi) for m in range(-l, 0)]
        cols += [p[l, 0]] + [math.sqrt(2) * p[l, m] * xp.cos(m * phi) for m in range(1, l + 1)]
        out.append(xp.stack(cols, axis=1))
    return out


def spherical_harmonics(l_max, directions):
    """Real orthonormal spherical harmonics up to degree ``l_max``.

    ``Y_l0 = P̄_l^0(cos θ)``, ``Y_lm = sqrt(2) P̄_l^m(cos θ) cos(mφ)`` and
    ``Y_l,-m = sqrt(2) P̄_l^m(cos θ) sin(mφ)`` for m > 0, with the normalised
    associated Legendre functions computed by the standard stable recurrences.

    Parameters
    ----------
    l_max : int
    directions : (n, 3) array_like
        Vectors (normalised internally; the zero vector maps to the z axis).

    Returns
    -------
    list of (n, 2l+1) ndarray
        One array per degree l = 0..l_max, columns m = -l..l, on the selected device.

    Raises
    ------
    MemoryError
        Before any work, when the (l_max + 1)² values per direction exceed the memory budget.
    """
    l_max = checks.check_count(l_max, "l_max", minimum=0)
    d = checks.check_array(directions, "directions", ndim=2, real=True).astype(float)
    if d.shape[1] != 3:
        raise ValueError(f"directions must be (n, 3) vectors, got shape {d.shape}")
    # (l_max + 1)² values per direction, plus the recurrence's three rows of Legendre functions.
    _check_harmonics_memory(l_max, d.shape[0])
    return _spherical_harmonics(l_max, d, backend.get_array_module(d))


def _check_harmonics_memory(l_max, n_directions):
    """Refuse, before any work, (l_max + 1)² harmonics per direction beyond the memory budget (names l_max)."""
    # (l_max + 1)² values per direction, plus the recurrence's three rows of Legendre functions.
    needed = 8 * n_directions * ((l_max + 1) ** 2 + 3 * (l_max + 1))
    try:
        progress.plan_batches(n_items=1, bytes_per_item=needed)
    except MemoryError as error:
        raise MemoryError(f"l_max = {l_max} on {n_directions} directions: {error}") from None


def default_l_max(k_max, radius) -> int:
    """Degree beyond which ``j_l(2π k r)`` is negligible for k <= k_max, r <= radius."""
    k_max = checks.check_positive_number(k_max, "k_max")
    radius = checks.check_positive_number(radius, "radius")
    x = 2 * math.pi * k_max * radius
    return int(math.ceil(x + 4 * x ** (1 / 3) + 6))


def _host_atoms(atoms, name="atoms"):
    """Host copies of the atoms' fields (a single conformation)."""
    positions, weights, sigma = (backend.asnumpy(a) for a in particles.check_atoms(atoms, name))
    if positions.ndim != 2:
        raise ValueError(f"atoms must be one conformation, positions (n, 3), got shape {positions.shape}")
    return positions, weights, sigma


def _sh_coefficients(positions, weights, sigma, radii, l_max):
    """Host kernel of :func:`sh_coefficients`: NumPy in, list of NumPy out."""
    r = np.linalg.norm(positions, axis=1)
    envelope = weights[None, :] * np.exp(-2 * math.pi**2 * sigma[None, :] ** 2 * radii[:, None] ** 2)
    harmonics = _spherical_harmonics(l_max, positions, np)
    x = 2 * math.pi * radii[:, None] * r[None, :]
    return [4 * math.pi * (envelope * special.spherical_jn(l, x)) @ harmonics[l] for l in range(l_max + 1)]


def sh_coefficients(atoms: particles.Atoms, radii, *, l_max):
    """Real coefficients ``A_lm(k)`` of Gaussian atoms on the shells ``radii``.

    Host-only step: :func:`scipy.special.spherical_jn` runs on the host; the
    atoms and radii are copied there, and the coefficients come back on the
    selected device.

    Parameters
    ----------
    atoms : Atoms
    radii : (s,) array_like
        Shell radii [1/Å].
    l_max : int

    Returns
    -------
    list of (s, 2l+1) ndarray
        ``A_l`` for l = 0..l_max [weight], on the selected device.
    """
    radii = backend.asnumpy(checks.check_array(radii, "radii", ndim=1, real=True)).astype(float)
    if np.any(radii < 0):
        raise ValueError("radii must be >= 0 (shell radii [1/Å])")
    l_max = checks.check_count(l_max, "l_max", minimum=0)
    host = _host_atoms(atoms)
    _check_harmonics_memory(l_max, len(host[0]))
    return [backend.asarray(a) for a in _sh_coefficients(*host, radii, l_max)]


def invariants(coefficients):
    """Kam's invariants ``C_l = A_l A_lᵀ / 4π`` (rotation invariant): one (s, s) matrix per l, on the device."""
    if isinstance(coefficients, (str, bytes)) or not hasattr(coefficients, "__iter__"):
        raise TypeError(f"coefficients must be a list of (s, 2l+1) arrays, got {coefficients!r:.60}")
    coefficients = [checks.check_array(a, "coefficients", ndim=2) for a in coefficients]
    if not coefficients:
        raise ValueError("coefficients must hold at least the l = 0 block")
    return [a @ a.T / (4 * math.pi) for a in coefficients]


# --------------------------------------------------------------------------- moments
class Moments(NamedTuple):
    """First and second image moments on the disk frequencies (arrays on the selected device).

    Attributes
    ----------
    frequencies : DiskFrequencies
    mean : (q,) complex ndarray
        ``E[Î(k)]`` [image units·Å²].
    second : (q, q) complex ndarray
        ``E[Î(k1) Î(k2)*]``.
    n_images : int or float
        Images averaged (``inf`` for analytic moments).
    weight : (q, q) ndarray or None
        Inverse-variance weight of each entry of ``second`` (approximate,
        Gaussian statistics), for fits; None for analytic moments.
    """

    frequencies: DiskFrequencies
    mean: np.ndarray
    second: np.ndarray
    n_images: float
    weight: np.ndarray | None = None


def _second_from_invariants(coefficients, radius_index, angle):
    """Host kernel: Σ_l P_l(cos Δθ) (A_l A_lᵀ)[u1, u2] / 4π on the disk pairs."""
    cos = np.cos(angle[:, None] - angle[None, :])
    second = 0.0
    for l, a in enumerate(coefficients):
        gram = (a @ a.T)[np.ix_(radius_index, radius_index)]
        second = second + special.eval_legendre(l, cos) * gram / (4 * math.pi)
    return second


def analytic_moments(atoms: particles.Atoms, grid, *, k_max, l_max=None) -> Moments:
    """Exact moments of projections of ``atoms`` at Haar-uniform rotations (no CTF, no noise).

    Host-only step (:mod:`scipy.special`): the atoms are copied to the host,
    and the moments come back on the selected device.

    Parameters
    ----------
    atoms : Atoms
    grid : Grid
        Image grid [Å].
    k_max : float
        [1/Å].
    l_max : int, optional
        Spherical-harmonic degree (default :func:`default_l_max`, where the
        series has converged to machine precision).

    Returns
    -------
    Moments
    """
    grid, k_max = _check_disk(grid, k_max)
    disk = _disk(grid, k_max)
    positions, weights, sigma = _host_atoms(atoms)
    radius_max = float(np.max(np.linalg.norm(positions, axis=1)))
    l_max = default_l_max(k_max, radius_max) if l_max is None else checks.check_count(l_max, "l_max", minimum=0)
    radii, radius_index = np.unique(np.round(disk[3], 12), return_inverse=True)
    _check_harmonics_memory(l_max, len(positions))
    coefficients = _sh_coefficients(positions, weights, sigma, radii, l_max)
    mean = coefficients[0][radius_index, 0] / math.sqrt(4 * math.pi)
    second = _second_from_invariants(coefficients, radius_index, disk[4])
    frequencies = DiskFrequencies(*(backend.asarray(a) for a in disk), grid)
    return Moments(frequencies, backend.asarray(mean.astype(complex)), backend.asarray(second.astype(complex)),
                   math.inf)


def empirical_moments(batches, params: micrographs.ImageParameters, grid, *, k_max, B_factor=0.0,
                      checkpoints=None, **microscope):
    """CTF-aware mean and second moment of an image stack, in one streaming pass on the device.

    Parameters
    ----------
    batches : iterable of ImageBatch
        From :func:`mbook.cryoem.micrographs.stream_images` (its ``noise_sigma`` is
        used for the noise correction).
    params : ImageParameters
        The defocus of every image (the CTFs are known, as after CTF fitting).
    grid : Grid
        Image grid [Å].
    k_max : float
        [1/Å].
    B_factor : float
        [Å²], as simulated.
    checkpoints : sequence of int, optional
        Also return the estimates after these numbers of images (snapshots
        of the same stream, for convergence studies).
    **microscope
        ``energy``, ``Cs``, ``amplitude_contrast`` of the CTF.

    Returns
    -------
    Moments, or list of Moments (one per checkpoint) when ``checkpoints`` is given.
    """
    frequencies = disk_frequencies(grid, k_max=k_max)
    defocus = backend.asnumpy(micrographs.check_parameters(params).defocus)  # CTFs are keyed on the host
    q = frequencies.index.shape[0]
    h, n = grid.sampling[0], grid.gpts[0]
    xp = backend.xp
    sums = {"mean": xp.zeros(q, complex), "h2": xp.zeros(q), "second": xp.zeros((q, q), complex),
            "h22": xp.zeros((q, q))}  # h22[k1, k2] = Σ_i H_i(k1)² H_i(k2)²
    if isinstance(checkpoints, (str, bytes)):
        raise ValueError(f"checkpoints must be a sequence of image counts >= 1, got {checkpoints!r}")
    wanted = sorted(checks.check_count(c, "checkpoints") for c in (checkpoints or []))
    if isinstance(batches, (str, bytes)) or not hasattr(batches, "__iter__"):
        raise TypeError(f"batches must be an iterable of ImageBatch (see stream_images), got {batches!r:.60}")
    results, count, sigma = [], 0, 0.0
    for batch in batches:
        if not hasattr(batch, "images"):
            raise TypeError(f"batches must hold ImageBatch (see stream_images), got {type(batch).__name__}")
        sigma = batch.noise_sigma
        images = backend.asarray(batch.images)
        b, done = images.shape[0], 0
        while done < b:  # split the batch at the checkpoints
            take = min(b - done, wanted[0] - count) if wanted else b - done
            first = batch.start + done
            transfer = ctf.ctf(grid, defocus=defocus[first:first + take], B_factor=B_factor,
                                       **microscope).reshape(take, -1)[:, frequencies.index]
            weighted = transfer * _image_transform(images[done:done + take], frequencies.index, h)
            sums["mean"] += weighted.sum(axis=0)
            sums["h2"] += (transfer**2).sum(axis=0)
            sums["second"] += weighted.T @ xp.conj(weighted)
            sums["h22"] += (transfer**2).T @ transfer**2
            count, done = count + take, done + take
            if wanted and count == wanted[0]:
                results.append(_finish(sums, frequencies, sigma**2 * h**4 * n**2, count))
                wanted.pop(0)
    if wanted:
        raise ValueError(f"checkpoints {wanted} exceed the {count} images of the stack")
    if count == 0:
        raise ValueError("batches is empty: give at least one ImageBatch")
    return results if checkpoints is not None else _finish(sums, frequencies, sigma**2 * h**4 * n**2, count)


def _finish(sums, frequencies, noise_variance, count) -> Moments:
    xp = backend.get_array_module(sums["second"])
    second = (sums["second"] - xp.diag(noise_variance * sums["h2"])) / sums["h22"]
    # Variance of an entry ~ P(k1) P(k2) / Σ H²H², with P the CTF-corrected power of signal plus noise.
    h4 = xp.diag(sums["h22"])
    power = xp.maximum(xp.diag(second).real, 0) + noise_variance * sums["h2"] / h4
    weight = sums["h22"] / (power[:, None] * power[None, :])
    return Moments(frequencies, sums["mean"] / sums["h2"], second, count, weight)


def _check_moments(value, name):
    if not isinstance(value, Moments):
        raise TypeError(f"{name} must be Moments (see analytic_moments, empirical_moments), got {type(value).__name__}")
    return value


def covariance(moments_: Moments):
    """Image covariance ``E[Î Î*] - E[Î] E[Î]*`` from first and second moments; (q, q) ndarray on the selected device.

    Only the l = 0 invariant differs from the second moment (the mean is
    radial), so Kam's invariants for l > 0 are the same from either.
    """
    _check_moments(moments_, "moments_")
    mean, second = backend.asarray(moments_.mean), backend.asarray(moments_.second)
    xp = backend.get_array_module(second)
    return second - xp.outer(mean, xp.conj(mean))


def relative_difference(a: Moments, b: Moments, *, fit_scale=False) -> float:
    """``min_α ||M_a - α M_b||_F / ||M_a||_F`` of the second moments (α = 1 unless ``fit_scale``)."""
    _check_moments(a, "a"), _check_moments(b, "b")
    sa, sb = backend.asarray(a.second), backend.asarray(b.second)
    if sa.shape != sb.shape:
        raise ValueError(f"moments on different frequencies: {sa.shape} vs {sb.shape}")
    xp = backend.get_array_module(sa)
    alpha = xp.vdot(sb, sa).real / xp.vdot(sb, sb).real if fit_scale else 1.0
    return float(xp.linalg.norm(sa - alpha * sb) / xp.linalg.norm(sa))


def identify(empirical: Moments, candidates):
    """Scores of candidate structures against measured moments (lower is better).

    The score is the relative distance of the second moments after fitting a
    scale (the unknown ``E[c²]`` of the contrast): rotations are never
    estimated; each candidate needs only its analytic moments.

    Parameters
    ----------
    empirical : Moments
    candidates : sequence of Moments
        Analytic moments of each library structure, on the same frequencies.

    Returns
    -------
    (n_candidates,) ndarray
        On the selected device.
    """
    _check_moments(empirical, "empirical")
    if isinstance(candidates, (str, bytes)) or not hasattr(candidates, "__iter__"):
        raise TypeError(f"candidates must be a sequence of Moments, got {candidates!r:.60}")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("candidates must hold at least one Moments")
    for candidate in candidates:
        _check_moments(candidate, "candidates")
    return backend.asarray(np.array([relative_difference(empirical, c, fit_scale=True) for c in candidates]))
