"""Volumes: MRC files, Fourier shell correlation, resolution, low-pass filters.

Volumes are indexed ``[x, y, z]`` (the :mod:`mbook.core.grids` convention). An MRC
file stores sections along z, rows along y and columns along x, which
:mod:`mrcfile` exposes as a NumPy array ``data[z, y, x]``; :func:`write_mrc`
and :func:`read_mrc` transpose between the two, and keep the voxel size.

The Fourier shell correlation of two volumes (or the ring correlation of two
images) is

``FSC(k) = Re Σ_{|k'|∈shell k} F1(k') F2*(k') / sqrt(Σ |F1|² Σ |F2|²)``

(Harauz & van Heel 1986; Scheres 2012 for the gold-standard use), and the
resolution is ``1 / k`` at the first shell where it falls below a threshold
(0.5 when one volume is the truth; 0.143 between half maps).

Device rule: maps are computed on the selected device and returned there;
files are the edge where data leave it: :func:`write_mrc` copies a volume to
the host before writing (no device array reaches the file), and
:func:`read_mrc` puts what it reads on the selected device.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.cryoem import volumes
>>> rng = np.random.default_rng(0)
>>> v = rng.standard_normal((16, 16, 16))
>>> k, fsc = volumes.fourier_shell_correlation(v, v, sampling=2.0)
>>> bool(np.allclose(backend.asnumpy(fsc), 1.0))
True
"""

from __future__ import annotations

import os

import numpy as np

from mbook.core import backend, checks, grids


def _check_path(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__} {path!r}")


def write_mrc(path, volume, *, sampling, overwrite=True):
    """Write a volume ``[x, y, z]`` to an MRC file with its voxel size.

    A device volume is copied to the host first: files hold NumPy data only.

    Parameters
    ----------
    path : str or path-like
    volume : (nx, ny, nz) array_like
        Real values (stored as float32).
    sampling : float
        Voxel size [Å].
    overwrite : bool
    """
    import mrcfile

    _check_path(path)
    data = backend.asnumpy(checks.check_array(volume, "volume", ndim=3, real=True, finite=False))
    if data.ndim != 3 or np.iscomplexobj(data):
        raise ValueError(f"volume must be a real 3D array [x, y, z], got shape {data.shape}, dtype {data.dtype}")
    if not np.isfinite(data).all():
        raise ValueError("volume contains NaN or infinite values")
    h = checks.check_positive(sampling, "sampling", 1)[0]
    with mrcfile.new(os.fspath(path), overwrite=overwrite) as mrc:
        mrc.set_data(np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32))
        mrc.voxel_size = h


def read_mrc(path):
    """Read an MRC file into a volume ``[x, y, z]`` and its voxel size.

    Returns
    -------
    volume : (nx, ny, nz) ndarray, float32
        On the selected device.
    sampling : float
        Voxel size along x [Å] (a warning-free read requires cubic voxels).

    Raises
    ------
    ValueError
        For anisotropic voxels.
    """
    import mrcfile

    _check_path(path)
    if not os.path.isfile(path):
        raise ValueError(f"path {os.fspath(path)!r} is not a file")
    with mrcfile.open(os.fspath(path), permissive=False) as mrc:
        data = np.array(mrc.data).transpose(2, 1, 0)
        size = mrc.voxel_size
        sampling = (float(size.x), float(size.y), float(size.z))
    if not np.allclose(sampling, sampling[0], rtol=1e-5):
        raise ValueError(f"voxels of {path} are not cubic: sampling {sampling} Å")
    return backend.asarray(data), sampling[0]


def _shell_index(shape, xp):
    """Integer shell index round(|k| / Δk) of every Fourier pixel (FFT order), for a cubic/square box."""
    n = shape[0]
    k2 = None
    for axis, size in enumerate(shape):
        f = xp.fft.fftfreq(size) * n  # in units of the fundamental frequency
        s = [1] * len(shape)
        s[axis] = size
        k2 = f.reshape(s) ** 2 if k2 is None else k2 + f.reshape(s) ** 2
    return xp.rint(xp.sqrt(k2)).astype(xp.int64)


def fourier_shell_correlation(volume1, volume2, *, sampling):
    """Fourier shell (3D) or ring (2D) correlation of two maps.

    Parameters
    ----------
    volume1, volume2 : (n, n, n) or (n, n) array_like
        Same cubic/square shape.
    sampling : float
        Voxel size [Å].

    Returns
    -------
    k : (n // 2,) ndarray
        Shell frequencies ``j / (n sampling)``, j = 1 .. n/2 [1/Å].
    fsc : (n // 2,) ndarray
        Correlation in each shell, in [-1, 1]. Both on the selected device.

    Raises
    ------
    ValueError
        Different or non-cubic shapes, non-finite values.
    """
    a, b = (checks.check_array(v, name) for v, name in ((volume1, "volume1"), (volume2, "volume2")))
    if a.shape != b.shape or len(set(a.shape)) != 1 or a.ndim not in (2, 3):
        raise ValueError(f"volume1 and volume2 must be cubic (n, n, n) or square (n, n) maps of one shape, "
                         f"got {a.shape} and {b.shape}")
    h = checks.check_positive(sampling, "sampling", 1)[0]
    xp = backend.get_array_module(a)
    n = a.shape[0]
    fa, fb = backend.fftn(a), backend.fftn(b)
    shells = _shell_index(a.shape, xp).ravel()
    length = n // 2 + 1
    cross = xp.bincount(shells, (fa * xp.conj(fb)).real.ravel(), minlength=length)[:length]
    pa = xp.bincount(shells, (abs(fa) ** 2).ravel(), minlength=length)[:length]
    pb = xp.bincount(shells, (abs(fb) ** 2).ravel(), minlength=length)[:length]
    fsc = cross / xp.sqrt(xp.maximum(pa * pb, 1e-300))
    k = xp.arange(1, length) / (n * h)
    return k, fsc[1:]


def resolution(k, fsc, *, threshold=0.5) -> float:
    """Resolution ``1 / k`` [Å] where ``fsc`` first drops below ``threshold``.

    Linear interpolation between the two shells around the crossing; the
    finest shell's resolution if it never drops (then the map is resolved to
    Nyquist or beyond the shells given).

    A scalar summary: ``k`` and ``fsc`` are copied to the host (m numbers).

    Parameters
    ----------
    k : (m,) array_like
        Increasing shell frequencies [1/Å].
    fsc : (m,) array_like
    threshold : float
        In (0, 1).

    Returns
    -------
    float
        [Å].
    """
    k, fsc = (backend.asnumpy(checks.check_array(v, name, ndim=1, real=True)).astype(float)
              for v, name in ((k, "k"), (fsc, "fsc")))
    threshold = checks.check_number(threshold, "threshold", lower=0, upper=1, lower_inclusive=False,
                                    upper_inclusive=False)
    if k.shape != fsc.shape:
        raise ValueError(f"k and fsc must have one length (one FSC value per shell), got {k.size} and fsc {fsc.size}")
    below = np.nonzero(fsc < threshold)[0]
    if len(below) == 0:
        return float(1 / k[-1])
    j = below[0]
    if j == 0:
        return float(1 / k[0])
    t = (fsc[j - 1] - threshold) / (fsc[j - 1] - fsc[j])
    return float(1 / (k[j - 1] + t * (k[j] - k[j - 1])))


def lowpass(volume, *, sampling, resolution, ndim=None):
    """Gaussian low-pass filter: multiply the Fourier transform by ``exp(-|k|² d² / 2)``.

    The transfer is ``exp(-1/2) ≈ 0.61`` at ``k = 1 / d``.

    Parameters
    ----------
    volume : (..., n, n[, n]) array_like
        Real map(s).
    sampling : float
        [Å].
    resolution : float
        d [Å].
    ndim : int, optional
        Number of trailing axes filtered (default: 3 for a 3D array, else 2).

    Returns
    -------
    ndarray
        Same shape, real, on the selected device.
    """
    volume = checks.check_array(volume, "volume", min_ndim=2)
    xp = backend.get_array_module(volume)
    d = checks.check_positive(resolution, "resolution", 1)[0]
    if ndim is not None and (isinstance(ndim, bool) or ndim not in (2, 3) or ndim > volume.ndim):
        raise ValueError(f"ndim must be 2 or 3 (at most volume.ndim = {volume.ndim}), got {ndim!r}")
    ndim = ndim or (3 if volume.ndim == 3 else 2)
    grid = grids.make_grid(gpts=volume.shape[-ndim:], sampling=(sampling,) * ndim)
    transfer = xp.exp(-0.5 * d**2 * grids.frequency_squared(grid, xp=xp))
    axes = tuple(range(-ndim, 0))
    return backend.ifftn(backend.fftn(volume, axes=axes) * transfer, axes=axes).real


def relative_error(estimate, truth) -> float:
    """``||estimate - truth|| / ||truth||`` (Frobenius norms), computed on the selected device."""
    estimate, truth = checks.check_array(estimate, "estimate"), checks.check_array(truth, "truth")
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate and truth must have one shape, got {estimate.shape} and {truth.shape}")
    xp = backend.get_array_module(truth)
    norm = float(xp.linalg.norm(truth))
    if norm == 0:
        raise ValueError("truth is zero everywhere: a relative error needs a non-zero truth")
    return float(xp.linalg.norm(estimate - truth)) / norm

