"""The kernels of the LMA basis on its patches: propagating the translates of ``u``, and a local change.

:func:`mbook.electron.lma.build_basis` and :func:`mbook.electron.lma.update_basis`
check their inputs once and plan the memory; these kernels do the work on
what they checked (device arrays on the basis's device), with no checks of
their own.

Each basis exit wave ``M[u(· - x_j)]`` is a multislice run of ``u`` on the
``patch × patch`` pixels of the specimen around ``x_j``, periodic on the
patch (truncation 3 of the error model in :mod:`mbook.electron.lma`):

- the waves of any set of lattice points, in batches under the memory
  budget, on the cores or over a Dask cluster (:func:`compute_waves`; its
  memory per point, :func:`bytes_per_point`);
- the lattice points whose patches a change of the specimen touches
  (:func:`touched_points`): only their waves change;
- the transmission functions after the change, recomputed on the box of the
  touched patches only (:func:`local_transmissions`).

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend, grids
>>> from mbook.electron import lma, lma_patches
>>> grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
>>> potential = np.zeros((2, 64, 64), np.float32)
>>> basis = lma.build_basis(potential, grid=grid, energy=200e3, slice_thickness=1.0,
...                         semiangle_cutoff=20.0, lattice_step=4, patch_gpts=24)
>>> potential[:, 32, 32] = 10.0  # one changed pixel: the 6 x 6 lattice points whose patches hold it
>>> int(backend.asnumpy(lma_patches.touched_points(basis, backend.asarray(potential), 1e-3)).sum())
36
>>> lma_patches.bytes_per_point(24)
13824
"""

from __future__ import annotations

import numpy as np

from mbook.core import backend, fft_plans, grids, progress
from mbook.electron import multislice, physics, stem


def _patch_indices(points, step, patch, gpts):
    """Pixel indices (mod gpts) of the patches of lattice points ``points`` (device ``(n, 2)`` ints)."""
    xp = backend.get_array_module(points)
    offsets = xp.arange(patch) - patch // 2
    ix = (points[:, 0:1] * step + offsets[None]) % gpts[0]
    iy = (points[:, 1:2] * step + offsets[None]) % gpts[1]
    return ix, iy


def _propagate_patches(points, *, transmissions, propagators, u, step, gpts):
    """Basis exit waves ``(n, patch, patch)`` of lattice points ``points`` (a kernel, on the inputs' device)."""
    xp = backend.get_array_module(transmissions)
    patch = u.shape[-1]
    ix, iy = _patch_indices(points, step, patch, gpts)
    # Each point's own patch of each slice, cut when the loop reaches that slice: one slice of
    # patches in memory at a time, not the whole stack.
    local = (t[ix[:, :, None], iy[:, None, :]] for t in transmissions)
    plan = fft_plans.fft2_plan((len(points), patch, patch), xp.complex64, xp=xp)
    plan.array[...] = u
    psi = plan.array
    for psi in multislice.iterate_slices(psi, local, propagators, plan=plan):
        pass
    return psi.copy()


def _propagate_patches_one_thread(points, **kwargs):
    """:func:`_propagate_patches` with single-threaded FFTs (for a Dask worker)."""
    with backend.fft_workers(1):
        return _propagate_patches(points, **kwargs)


def bytes_per_point(patch) -> int:
    """Memory of one lattice point in flight [bytes]: one slice's transmission patch, the wave and the
    copy made on the way out (complex64 ``patch × patch`` each)."""
    return 3 * patch * patch * 8


def compute_waves(array, points, *, transmissions, propagators, u, step, gpts, budget, fixed, client=None):
    """Fill ``array[points]`` with the basis exit waves of ``points``, in batches under the budget.

    A kernel: no checks (on what :func:`mbook.electron.lma.build_basis` or
    :func:`mbook.electron.lma.update_basis` checked), on the inputs' device.

    Parameters
    ----------
    array : (n_lx, n_ly, patch, patch) ndarray, complex64
        The basis waves, written in place at ``points``.
    points : (n, 2) ndarray, int
        Lattice indices of the waves to compute.
    transmissions : (n_slices, nx, ny) ndarray, complex64
        The specimen's transmission functions on the whole cell.
    propagators : list of (patch, patch) ndarray
        One Fresnel propagator per slice, on the patch's grid.
    u : (patch, patch) ndarray, complex64
        The basis function (:func:`mbook.electron.lma.basis_function`).
    step : int
        Lattice step ``h`` [pixels].
    gpts : (int, int)
        The cell's pixels.
    budget : int or None
        Memory budget [bytes] (None: :func:`mbook.core.progress.memory_budget`).
    fixed : int
        Memory held besides the points in flight [bytes].
    client : dask.distributed.Client, optional
        Share the batches out over its workers (single-threaded FFTs in
        each, the same batches as on the cores: the same waves); the
        transmissions, propagators and ``u`` are scattered to every worker
        once, and each batch's waves are written into ``array`` as they come
        back.
    """
    patch = u.shape[-1]
    n = len(points)
    batch = progress.plan_batches(n_items=n, bytes_per_item=bytes_per_point(patch), fixed_bytes=fixed,
                                  budget=budget)
    threads = 1
    if not backend.gpu_code_path():  # on the CPU, batches near the cache, one per core (or worker) at once
        in_memory = batch
        batch = max(1, min(batch, stem.CPU_BATCH_BYTES // (8 * patch * patch)))
        threads = max(1, min(backend.cpu_threads(), -(-n // batch), in_memory // batch))

    starts = range(0, n, batch)
    if client is not None:
        shared = {k: client.scatter(v, broadcast=True, hash=False)
                  for k, v in dict(transmissions=transmissions, propagators=propagators, u=u).items()}
        futures = client.map(_propagate_patches_one_thread, [points[s:s + batch] for s in starts], pure=False,
                             step=step, gpts=gpts, **shared)
        for start, future in zip(starts, progress.progress(futures, desc="LMA basis")):
            chunk = points[start:start + batch]
            array[chunk[:, 0], chunk[:, 1]] = future.result()
            future.release()  # its waves are in the basis now
        return

    def run(start):
        chunk = points[start:start + batch]
        array[chunk[:, 0], chunk[:, 1]] = _propagate_patches(chunk, transmissions=transmissions,
                                                             propagators=propagators, u=u, step=step, gpts=gpts)

    progress.run_batches(run, starts, threads=threads, desc="LMA basis")


def touched_points(basis, potential, tol):
    """Which lattice points' patches hold a changed pixel: ``(n_lx, n_ly)`` bool, on the potential's device.

    A kernel: no checks (on what :func:`mbook.electron.lma.update_basis`
    checked). A pixel counts as changed where ``max_z |Δv| > tol · max |Δv|``.

    Parameters
    ----------
    basis : LatticeBasis
        The basis (its potential, lattice step and patch).
    potential : (n_slices, nx, ny) ndarray, float32
        The changed specimen [V·Å].
    tol : float
        In (0, 1).
    """
    xp = backend.get_array_module(potential)
    step, patch = basis.lattice_step, basis.patch_gpts
    change = xp.abs(potential - basis.potential).max(axis=0)
    changed = (change > tol * change.max()).astype(xp.float32)
    # A lattice point is touched when a changed pixel lies in its patch: a wrapped box maximum of the
    # changed mask, read at the lattice points (the box of size p covers offsets -p//2 .. (p-1)//2).
    ndimage = backend.scipy_module("ndimage", changed)
    rows = ndimage.maximum_filter1d(changed, size=patch, axis=0, mode="wrap")[::step]  # separable: rows first,
    return ndimage.maximum_filter1d(rows, size=patch, axis=1, mode="wrap")[:, ::step] > 0  # then only theirs


def _box(touched_axis, step, patch, n):
    """Host pixel indices (mod n) covering the patches of the touched lattice indices along one axis.

    The whole axis when the touched indices wrap around the cell (a correct, slower fallback)."""
    low, high = int(touched_axis.min()), int(touched_axis.max())
    if high - low + 1 != len(np.unique(touched_axis)) or (high - low) * step + patch >= n:
        return np.arange(n)
    return np.arange(low * step - patch // 2, high * step - patch // 2 + patch) % n


def local_transmissions(basis, potential, touched_host):
    """The new transmission functions, changed only on the box of the touched patches.

    A kernel: no checks (on what :func:`mbook.electron.lma.update_basis`
    checked). ``t_new = t_old + BL_box[exp(iσ v_new) - exp(iσ v_old)]``: the
    difference vanishes (below ``tol``) outside the changed pixels, so
    band-limiting it on a periodic box around them matches the full cell's
    band limit there.

    Parameters
    ----------
    basis : LatticeBasis
        The basis before the change (its potential and transmissions).
    potential : (n_slices, nx, ny) ndarray, float32
        The changed specimen [V·Å].
    touched_host : (n_lx, n_ly) numpy.ndarray of bool
        The touched lattice points (:func:`touched_points`), on the host.

    Returns
    -------
    (n_slices, nx, ny) ndarray, complex64
        A new stack (the basis's own is left as it was), on the potential's device.
    """
    xp = backend.get_array_module(potential)
    step, patch, (nx, ny) = basis.lattice_step, basis.patch_gpts, basis.grid.gpts
    ix = _box(np.nonzero(touched_host)[0], step, patch, nx)
    iy = _box(np.nonzero(touched_host)[1], step, patch, ny)
    region = _region(ix, iy)
    sigma = xp.float32(physics.interaction_parameter(basis.energy))
    difference = multislice.phase_factors(sigma * potential[region])
    difference -= multislice.phase_factors(sigma * basis.potential[region])
    box = grids.make_grid(gpts=(len(ix), len(iy)), sampling=basis.grid.sampling)
    band = multislice.antialias_aperture(box, xp=xp)
    transmissions = basis.transmissions.copy()
    transmissions[region] += backend.ifft2(backend.fft2(difference) * band).astype(xp.complex64)
    return transmissions


def _region(ix, iy):
    """The index of the box ``ix × iy`` in a ``(n_slices, nx, ny)`` stack: slices where an axis's
    indices are one run without wrapping (views, not gathers), device index arrays otherwise."""
    def axis(indices):
        if indices[-1] - indices[0] == len(indices) - 1:
            return slice(int(indices[0]), int(indices[-1]) + 1)
        return backend.asarray(indices)

    sx, sy = axis(ix), axis(iy)
    if isinstance(sx, slice) or isinstance(sy, slice):
        return (slice(None), sx, sy)
    return (slice(None), sx[:, None], sy[None, :])
