"""Atom tracing: from a reconstructed volume to atom positions and species, and tracks through time.

White paper 7.2: "we are only interested in the atomic coordinates and
species, but not the atomic shapes". The steps of AET's atom tracing
:cite:`yang2017`:

- :func:`trace_atoms`: local maxima of the volume above a threshold, at
  least ``min_distance`` apart, each refined by a Gaussian fit through the
  peak voxel and its two neighbours along every axis (the three-point
  Gaussian fit, exact for a sampled Gaussian), and its integrated intensity
  in a sphere about it;
- :func:`classify_species`: two classes of intensity (Fe and Pt) by 2-means;
- :func:`match_atoms`: an optimal one-to-one matching of traced atoms to
  reference atoms within a distance (recall, precision), and
  :func:`position_errors`, the capped distance of every reference atom;
- :func:`track_atoms`: atoms of consecutive anchor volumes linked by the same
  matching, giving a trajectory per atom.

Peak finding runs on the device (``maximum_filter`` of the array's own SciPy);
the number of peaks comes to the host once. Matching is an assignment problem
solved on the host (:func:`scipy.optimize.linear_sum_assignment`, small), said
so where it happens.

Examples
--------
>>> from mbook.tomography import tracing
>>> match = tracing.match_atoms([[0, 0, 0.1], [5, 0, 0]], [[0, 0, 0], [2, 0, 0]], max_distance=1.0)
>>> match.recall, match.precision  # one of two reference atoms found, one of two traced atoms right
(0.5, 0.5)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.optimize
import scipy.spatial

from mbook.core import backend, checks


class Atoms(NamedTuple):
    """Traced atoms: ``positions`` (n, 3) ``(z, y, x)`` [Å] about the volume's centre and ``intensities``
    (n,) [unit of the volume × Å³], both on the selected device."""

    positions: object
    intensities: object


def trace_atoms(volume, *, sampling: float, min_distance: float = 1.2, threshold: float = 0.05,
                radius: float = 1.0) -> Atoms:
    """Atoms as the refined local maxima of a volume.

    Parameters
    ----------
    volume : (nz, ny, nx) array_like, real
        A reconstruction [any unit].
    sampling : float
        Voxel edge [Å].
    min_distance : float
        Radius of the ball in which a peak must be the largest value [Å].
        FePt's nearest neighbours are 2.7 Å apart, but on a grid their peak
        voxels may come up to ``√3`` voxels closer: keep it well below.
    threshold : float
        Peaks below this fraction of the volume's largest value are dropped,
        in (0, 1).
    radius : float
        Radius of the sphere the intensity is summed over [Å].

    Returns
    -------
    Atoms
        Sorted by decreasing intensity.
    """
    volume = checks.check_array(volume, "volume", ndim=3, real=True)
    sampling = checks.check_positive_number(sampling, "sampling")
    min_distance = checks.check_positive_number(min_distance, "min_distance")
    threshold = checks.check_number(threshold, "threshold", lower=0, upper=1, lower_inclusive=False,
                                    upper_inclusive=False)
    radius = checks.check_positive_number(radius, "radius")
    xp = backend.get_array_module(volume)
    ndimage = backend.scipy_module("ndimage", volume)
    v = volume.astype(xp.float64)
    reach = max(1, int(min_distance / sampling))
    offsets = np.stack(np.meshgrid(*(np.arange(-reach, reach + 1),) * 3, indexing="ij"))
    footprint = backend.asarray(np.linalg.norm(offsets, axis=0) * sampling <= max(min_distance, sampling))
    peaks = v == ndimage.maximum_filter(v, footprint=footprint, mode="constant", cval=-np.inf)
    peaks &= v > threshold * xp.max(v)
    inner = xp.zeros(v.shape, dtype=bool)
    inner[1:-1, 1:-1, 1:-1] = True  # the three-point fit needs both neighbours
    index = xp.stack(xp.nonzero(peaks & inner), axis=1)  # (n, 3): one copy of the count, on entry
    # Three-point Gaussian fit per axis: ln f is a parabola through (-1, 0, +1) (Gaussian interpolation).
    floor = 1e-12 * xp.max(v)
    offsets = []
    for d in range(3):
        step = xp.zeros(3, dtype=xp.int64)
        step[d] = 1
        lower, centre, upper = (v[tuple((index + k * step).T)] for k in (-1, 0, 1))
        ln_lower, ln_centre, ln_upper = (xp.log(xp.maximum(f, floor)) for f in (lower, centre, upper))
        curvature = ln_lower - 2 * ln_centre + ln_upper
        offset = xp.where(curvature < 0, 0.5 * (ln_lower - ln_upper) / xp.where(curvature < 0, curvature, -1), 0)
        offsets.append(xp.clip(offset, -0.5, 0.5))
    shape = backend.asarray(np.array(v.shape) // 2)
    positions = (index - shape + xp.stack(offsets, axis=1)) * sampling
    intensities = _ball(v, index, sampling, radius)[0].sum(axis=1) * sampling**3
    order = xp.argsort(-intensities)
    return Atoms(positions[order], intensities[order])


def classify_species(intensities, *, labels=(26, 78), max_num_iter: int = 50):
    """Two species by intensity: 2-means (Lloyd) on the intensities (host-only: a few hundred numbers).

    On the intensities themselves rather than their logarithm: weak spurious
    peaks then join the weak class instead of pulling its centre away.

    Parameters
    ----------
    intensities : (n,) array_like
        Integrated intensities (:func:`trace_atoms`).
    labels : (2,) int
        Labels of the weak and the strong class (Fe, Pt).
    max_num_iter : int

    Returns
    -------
    (n,) ndarray of int
        A label per atom, on the selected device.
    """
    intensities = checks.check_array(intensities, "intensities", ndim=1, real=True)
    max_num_iter = checks.check_iterations(max_num_iter)
    labels = checks.as_tuple(labels, "labels", 2)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise TypeError(f"labels must be two integers (atomic numbers), got {labels!r}")
    x = backend.asnumpy(intensities).astype(np.float64)
    centres = np.array([x.min(), x.max()])
    strong = x > centres.mean()
    for _ in range(max_num_iter):
        strong = np.abs(x - centres[1]) < np.abs(x - centres[0])
        new = np.array([x[~strong].mean() if np.any(~strong) else centres[0],
                        x[strong].mean() if np.any(strong) else centres[1]])
        if np.allclose(new, centres):
            break
        centres = new
    return backend.asarray(np.where(strong, labels[1], labels[0]).astype(np.int64))


class Moments(NamedTuple):
    """Local moments of a volume about given points (on the selected device).

    ``intensities`` (n,) [unit × Å³]: the sum over the ball; ``centroids`` (n, 3) ``(z, y, x)`` [Å];
    ``widths`` (n, 3): the standard deviations along ``z``, ``y``, ``x`` [Å], of the volume within the
    ball (truncated by it: compare widths measured with the same radius)."""

    intensities: object
    centroids: object
    widths: object


def local_moments(volume, positions, *, sampling: float, radius: float = 1.2) -> Moments:
    """Intensity, centroid and width along each axis of a volume in a ball about each position.

    For measuring a reconstruction at known atom positions: how much of an
    atom's weight is where it should be (motion blur), and how far it spreads
    along ``z`` compared with ``x`` (the missing wedge's elongation).
    Negative voxels count as 0.

    Parameters
    ----------
    volume : (nz, ny, nx) array_like, real
    positions : (n, 3) array_like
        ``(z, y, x)`` [Å] about the volume's centre; each ball is centred on
        the voxel nearest to its position.
    sampling : float
        Voxel edge [Å].
    radius : float
        Radius of the ball [Å].

    Returns
    -------
    Moments
    """
    volume = checks.check_array(volume, "volume", ndim=3, real=True)
    positions = checks.check_array(positions, "positions", ndim=2, real=True)
    if positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (n, 3), got {positions.shape}")
    sampling = checks.check_positive_number(sampling, "sampling")
    radius = checks.check_positive_number(radius, "radius")
    xp = backend.get_array_module(volume)
    v = xp.maximum(volume.astype(xp.float64), 0)
    centre = backend.asarray(np.array(v.shape) // 2)
    index = xp.rint(positions / sampling).astype(xp.int64) + centre
    values, offsets = _ball(v, index, sampling, radius)  # (n, b), (b, 3)
    total = values.sum(axis=1)
    safe = xp.where(total > 0, total, 1)[:, None]
    offsets = offsets * sampling
    mean = (values @ offsets) / safe
    variance = (values @ offsets**2) / safe - mean**2
    return Moments(total * sampling**3, (index - centre) * sampling + mean, xp.sqrt(xp.maximum(variance, 0)))


def line_profiles(volume, positions, *, sampling: float, half_length: float = 2.4):
    """Profiles of a volume through the voxel nearest each position, along ``z``, ``y`` and ``x``.

    For widths along each axis without a window that truncates them unevenly
    (e.g. the missing wedge's elongation along ``z``): keep ``half_length``
    below the distance to the next atom along each axis.

    Parameters
    ----------
    volume : (nz, ny, nx) array_like, real
    positions : (n, 3) array_like
        ``(z, y, x)`` [Å] about the volume's centre.
    sampling : float
        Voxel edge [Å].
    half_length : float
        Profiles run over ``±half_length`` [Å].

    Returns
    -------
    offsets : (m,) ndarray
        Distance from the centre voxel [Å], on the selected device.
    profiles : (3, n, m) ndarray
        Values along ``z``, ``y``, ``x`` (0 outside the volume), on the selected device.
    """
    volume = checks.check_array(volume, "volume", ndim=3, real=True)
    positions = checks.check_array(positions, "positions", ndim=2, real=True)
    if positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (n, 3), got {positions.shape}")
    sampling = checks.check_positive_number(sampling, "sampling")
    half_length = checks.check_positive_number(half_length, "half_length")
    xp = backend.get_array_module(volume)
    steps = int(half_length / sampling)
    offsets = np.arange(-steps, steps + 1)
    lines = np.zeros((3, offsets.size, 3), dtype=np.int64)
    for axis in range(3):
        lines[axis, :, axis] = offsets
    centre = backend.asarray(np.array(volume.shape) // 2)
    index = xp.rint(positions / sampling).astype(xp.int64) + centre
    points = index[None, :, None, :] + backend.asarray(lines)[:, None, :, :]  # (3, n, m, 3)
    limits = backend.asarray(np.array(volume.shape))
    valid = xp.all((points >= 0) & (points < limits), axis=-1)
    points = xp.clip(points, 0, limits - 1)
    values = volume[points[..., 0], points[..., 1], points[..., 2]]
    return backend.asarray(offsets * sampling), xp.where(valid, values, 0)


def _ball(v, index, sampling, radius):
    """Values of ``v`` in a ball of ``radius`` [Å] about each voxel ``index`` (n, 3): ((n, b), offsets (b, 3)),
    0 outside the volume; one batched gather."""
    xp = backend.get_array_module(v)
    r = int(np.ceil(radius / sampling))
    grid = np.stack(np.meshgrid(*(np.arange(-r, r + 1),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    ball = backend.asarray(grid[np.linalg.norm(grid, axis=1) * sampling <= radius])
    points = index[:, None, :] + ball[None, :, :]
    limits = backend.asarray(np.array(v.shape))
    valid = xp.all((points >= 0) & (points < limits), axis=-1)
    points = xp.clip(points, 0, limits - 1)
    return xp.where(valid, v[points[..., 0], points[..., 1], points[..., 2]], 0), ball.astype(v.dtype)


class Match(NamedTuple):
    """A matching of traced atoms to reference atoms.

    ``found`` and ``reference`` are index arrays (host NumPy: indices) of the
    matched pairs; ``distances`` their distances [Å] (device);
    ``recall`` = matched / reference atoms, ``precision`` = matched / traced
    atoms (floats).
    """

    found: np.ndarray
    reference: np.ndarray
    distances: object
    recall: float
    precision: float


def match_atoms(found, reference, *, max_distance: float = 1.0) -> Match:
    """One-to-one matching of traced to reference positions minimising the total distance (host-only).

    Pairs further apart than ``max_distance`` are not matched (the Hungarian
    algorithm on distances, with that cap as the cost of leaving an atom
    alone).

    Parameters
    ----------
    found : (n, 3) array_like
        Traced positions [Å].
    reference : (m, 3) array_like
        Reference positions [Å].
    max_distance : float
        [Å].

    Returns
    -------
    Match
    """
    found = checks.check_array(found, "found", ndim=2, real=True)
    reference = checks.check_array(reference, "reference", ndim=2, real=True)
    for name, array in (("found", found), ("reference", reference)):
        if array.shape[1] != 3:
            raise ValueError(f"{name} must have shape (n, 3), got {array.shape}")
    max_distance = checks.check_positive_number(max_distance, "max_distance")
    a, b = backend.asnumpy(found), backend.asnumpy(reference)
    distance = scipy.spatial.distance.cdist(a, b)
    cost = np.where(distance <= max_distance, distance, 1e6)
    rows, columns = scipy.optimize.linear_sum_assignment(cost)
    keep = distance[rows, columns] <= max_distance
    rows, columns = rows[keep], columns[keep]
    return Match(rows, columns, backend.asarray(distance[rows, columns]), rows.size / b.shape[0],
                 rows.size / max(a.shape[0], 1))


def position_errors(found, reference, *, max_distance: float = 1.2):
    """Distance from each reference atom to the traced atom matched to it, ``max_distance`` if none.

    The score of a reconstruction's atoms: an atom that is missed, or traced
    further away than ``max_distance``, counts as ``max_distance`` (a capped
    error, so that a root mean square stays finite and penalises misses).

    Parameters
    ----------
    found : (n, 3) array_like
        Traced positions [Å].
    reference : (m, 3) array_like
        True positions [Å].
    max_distance : float
        [Å].

    Returns
    -------
    errors : (m,) ndarray
        [Å], on the selected device.
    match : Match
        The matching (:func:`match_atoms`).
    """
    match = match_atoms(found, reference, max_distance=max_distance)
    errors = np.full(backend.asnumpy(reference).shape[0], float(max_distance))  # host: match is host-side
    errors[match.reference] = backend.asnumpy(match.distances)
    return backend.asarray(errors), match


def track_atoms(positions, *, max_distance: float = 1.5):
    """Link the atoms of consecutive anchors into trajectories (host-only matching).

    Parameters
    ----------
    positions : sequence of (n_m, 3) array_like
        Traced positions at each anchor [Å].
    max_distance : float
        Largest move between consecutive anchors [Å].

    Returns
    -------
    (M, n, 3) ndarray
        Trajectories of the atoms traced in the first anchor; NaN where an
        atom has no match (on the selected device).
    """
    if not isinstance(positions, (list, tuple)) or len(positions) < 1:
        raise TypeError(f"positions must be a non-empty list of (n, 3) arrays, got {type(positions).__name__}")
    max_distance = checks.check_positive_number(max_distance, "max_distance")
    frames = [backend.asnumpy(checks.check_array(p, "positions", ndim=2, real=True)) for p in positions]
    tracks = np.full((len(frames),) + frames[0].shape, np.nan)
    tracks[0] = frames[0]
    current = np.arange(frames[0].shape[0])  # which atom of the previous frame each track holds
    for m in range(1, len(frames)):
        match = match_atoms(frames[m - 1], frames[m], max_distance=max_distance)
        following = np.full(current.shape, -1)
        lookup = dict(zip(match.found.tolist(), match.reference.tolist()))
        for track, atom in enumerate(current):
            if atom >= 0 and atom in lookup:
                following[track] = lookup[atom]
                tracks[m, track] = frames[m][lookup[atom]]
        current = following
    return backend.asarray(tracks)
