"""Scan drift: where the probe really was while a raster was scanned.

A STEM scan visits a raster of nominal positions ``r⁰`` line by line: along
the fast axis x within a scan line, one line (constant y) after another, and
frame after frame for a series. The specimen (or stage) drifts meanwhile,
and the scan coils add errors, so the probe hits

``r = r⁰ + v t + s_line e_x + ε``,

with ``t`` the time of the visit (in dwell times, a fly-back of
``flyback`` dwell times at the end of every line), ``v`` a linear drift
velocity [Å per dwell], ``s_line`` a random shift of each scan line along the
fast axis (scan-line distortion, the jitter of the line start; Gaussian with
``line_jitter`` [Å]) and ``ε`` independent Gaussian jitter of each position
(``jitter`` [Å]). Random draws are made on the host from the seed and moved.

Arrays are indexed ``[x, y]`` (:mod:`mbook.core.grids`): ``positions[i, j]``
is the i-th point of scan line j. The rigid part of the drift, a common
shift of every position, moves the object and the positions together: no
ptychographic data can see it, so :func:`rms_error` compares positions up to
that shift.

Examples
--------
>>> from mbook.electron import stem
>>> from mbook.multimodal import drift
>>> nominal = stem.scan_positions(start=(8.0, 8.0), end=(16.0, 16.0), sampling=2.0)
>>> true = drift.drifted_positions(nominal, velocity=(0.01, 0.0), jitter=0.0, line_jitter=0.0, seed=0)
>>> round(float(true[-1, -1, 0] - nominal[-1, -1, 0]), 3)   # 15 dwell times later, 3 fly-backs of 2
0.21
"""

from __future__ import annotations

import numpy as np

from mbook.core import backend, checks


def scan_times(shape, *, num_frames=1, flyback=2.0):
    """Time of each visit of a raster scanned line by line, frame after frame [dwell times].

    Parameters
    ----------
    shape : (int, int)
        Points per scan line (x) and lines (y).
    num_frames : int
        Frames scanned one after the other.
    flyback : float
        Dead time at the end of each line [dwell times], >= 0.

    Returns
    -------
    (num_frames, nx, ny) ndarray, float64
        On the selected device.
    """
    nx, ny = checks.check_gpts(shape, 2, name="shape")
    num_frames = checks.check_count(num_frames, "num_frames")
    flyback = checks.check_positive_number(flyback, "flyback", allow_zero=True)
    line = nx + flyback
    t = (np.arange(num_frames)[:, None, None] * ny * line + np.arange(ny)[None, None, :] * line
         + np.arange(nx)[None, :, None])
    return backend.asarray(t.astype(np.float64))


def drifted_positions(nominal, *, velocity, jitter, line_jitter, seed, num_frames=None, flyback=2.0):
    """The positions a drifting, jittering scan really visits.

    Parameters
    ----------
    nominal : (nx, ny, 2) array_like
        Nominal raster [Å] (e.g. :func:`mbook.electron.stem.scan_positions`).
    velocity : (float, float)
        Linear drift [Å per dwell time], x then y.
    jitter : float
        Standard deviation of the independent jitter of every position [Å], >= 0.
    line_jitter : float
        Standard deviation of the shift of each scan line along x [Å], >= 0.
    seed : int
        Seed of the random draws (on the host).
    num_frames : int, optional
        Scan the raster this many times in a row (a dose-fractionated series);
        default one frame, returned without the frame axis.
    flyback : float
        Dead time per line [dwell times], see :func:`scan_times`.

    Returns
    -------
    (nx, ny, 2) or (num_frames, nx, ny, 2) ndarray, float64
        True positions [Å], on the selected device.
    """
    nominal = checks.check_array(nominal, "nominal", ndim=3, real=True).astype(np.float64)
    if nominal.shape[-1] != 2:
        raise ValueError(f"nominal must be an (nx, ny, 2) raster [Å], got shape {nominal.shape}")
    velocity = np.array([checks.check_number(v, "velocity", units="Å per dwell") for v in
                         checks.as_tuple(velocity, "velocity", 2)])
    jitter = checks.check_positive_number(jitter, "jitter", allow_zero=True)
    line_jitter = checks.check_positive_number(line_jitter, "line_jitter", allow_zero=True)
    frames = 1 if num_frames is None else checks.check_count(num_frames, "num_frames")
    seed = checks.check_seed(seed)
    nx, ny = nominal.shape[:2]
    t = scan_times((nx, ny), num_frames=frames, flyback=flyback)
    rng = np.random.default_rng(seed)
    noise = jitter * rng.standard_normal((frames, nx, ny, 2))
    noise[..., 0] += line_jitter * rng.standard_normal((frames, 1, ny))
    positions = nominal[None] + t[..., None] * backend.asarray(velocity) + backend.asarray(noise)
    return positions[0] if num_frames is None else positions


def rms_error(positions, reference, *, remove_mean=True):
    """Root-mean-square distance between two sets of positions [Å], after removing their mean offset.

    Parameters
    ----------
    positions, reference : (..., 2) array_like
        [Å], same shape.
    remove_mean : bool
        Compare up to a common shift (the one no ptychographic data determines).

    Returns
    -------
    float
        [Å].
    """
    positions = checks.check_array(positions, "positions", min_ndim=1, real=True)
    reference = checks.check_array(reference, "reference", min_ndim=1, real=True)
    if positions.shape != reference.shape or positions.shape[-1] != 2:
        raise ValueError(f"positions and reference must have the same (..., 2) shape, got {positions.shape} "
                         f"and {reference.shape}")
    delta = (positions - reference).reshape(-1, 2)
    if remove_mean:
        delta = delta - delta.mean(axis=0)
    xp = backend.get_array_module(delta)
    return float(xp.sqrt(xp.mean(xp.sum(delta**2, axis=1))))
