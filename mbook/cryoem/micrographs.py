"""Cryo-EM particle stacks: per-image parameters, the noise level for an SNR, and stacks streamed in batches.

The images are formed by :mod:`mbook.cryoem.image_formation` (the model is
stated there): shifts, CTF with a B-factor and contrast applied to the clean
projections of :mod:`mbook.cryoem.particles` or :mod:`mbook.cryoem.voxels`, with
nuisance parameters drawn here (:func:`draw_parameters`), then white Gaussian
noise of standard deviation σ. The SNR is the mean over images of the variance
of the clean image ``c_i F⁻¹[...]`` over the box, divided by σ²; σ is fixed
from a pilot of images spread through the stack (:func:`noise_sigma`), so it
does not depend on the batching.

Stacks are produced by :func:`stream_images` in batches that fit a memory
budget (:func:`mbook.core.progress.plan_batches`), on the selected device. The
noise of a batch is drawn on the host in one call and moved once: image i
takes its own stretch of a counter-based (Philox) stream keyed by the seed, so
the stack is the same whatever the batch size (:mod:`mbook.cryoem.white_noise`),
and wherever a batch is made: with a Dask client the batches are made on its
workers and yielded here in order.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend, grids
>>> from mbook.cryoem import micrographs, particles
>>> atoms = particles.random_structure(40, radii=(10.0, 8.0, 8.0), seed=0)
>>> grid = grids.make_grid(gpts=(32, 32), sampling=2.0)
>>> params = micrographs.draw_parameters(10, seed=1)
>>> batches = micrographs.stream_images(atoms, params, grid, snr=0.1, seed=2)
>>> stack = np.concatenate([backend.asnumpy(b.images) for b in batches])
>>> stack.shape
(10, 32, 32)
"""

from __future__ import annotations

import math
import numbers
from typing import Iterator, NamedTuple

import numpy as np

from mbook.core import backend, checks, progress
from mbook.cryoem import ctf, image_formation, particles, voxels, white_noise
from mbook.geometry import so3

#: Images per batch on the CPU: larger batches only add memory traffic.
CPU_BATCH = 256


def check_snr(snr) -> float:
    """Validate a signal-to-noise ratio: a number > 0 (``inf`` means no noise).

    Raises
    ------
    ValueError
        Naming ``snr``, the value and the valid range (0, inf].
    """
    if isinstance(snr, bool) or not isinstance(snr, numbers.Real) or math.isnan(snr) or snr <= 0:
        raise ValueError(f"snr must be a number > 0 (inf for no noise), got {snr!r}")
    return float(snr)


class ImageParameters(NamedTuple):
    """Per-image nuisance parameters of a stack (on the selected device).

    Attributes
    ----------
    rotations : (n, 3, 3) ndarray
        Haar-uniform rotations applied to the particle.
    shifts : (n, 2) ndarray
        In-plane shifts [Å].
    defocus : (n,) ndarray
        [Å], positive for underfocus.
    contrast : (n,) ndarray
        Per-image contrast factors (mean 1).
    """

    rotations: np.ndarray
    shifts: np.ndarray
    defocus: np.ndarray
    contrast: np.ndarray


def draw_parameters(n_images, *, seed=0, defocus_range=(1.0e4, 2.5e4), max_shift=0.0, contrast_spread=0.0,
                    images_per_micrograph=50):
    """Draw rotations, shifts, defoci and contrasts for ``n_images`` images.

    Images come from micrographs of ``images_per_micrograph`` particles each,
    which share one defocus, as in a real data set. Drawn on the host from
    the seed, then moved to the selected device.

    Parameters
    ----------
    n_images : int
    seed : int
    defocus_range : (float, float)
        Defocus drawn uniformly in this range [Å] (1-2.5 µm by default).
    max_shift : float
        Shifts drawn uniformly in ``[-max_shift, max_shift]²`` [Å].
    contrast_spread : float
        Standard deviation of ``log c``; ``c`` is log-normal with mean 1
        (0: every contrast is 1).
    images_per_micrograph : int
        Consecutive images that share a defocus (1: every image its own).

    Returns
    -------
    ImageParameters
    """
    checks.check_count(n_images, "n_images")
    try:
        low, high = (float(d) for d in defocus_range)
    except (TypeError, ValueError):
        raise ValueError(f"defocus_range must be two finite values low <= high [Å], got {defocus_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"defocus_range must be two finite values low <= high [Å], got {defocus_range!r}")
    checks.check_positive_number(max_shift, "max_shift", allow_zero=True)
    checks.check_positive_number(contrast_spread, "contrast_spread", allow_zero=True)
    checks.check_count(images_per_micrograph, "images_per_micrograph")
    rng = checks.rng(seed)
    quaternions = rng.standard_normal((n_images, 4))
    shifts = rng.uniform(-max_shift, max_shift, (n_images, 2))
    n_micrographs = -(-n_images // images_per_micrograph)
    defocus = np.repeat(rng.uniform(low, high, n_micrographs), images_per_micrograph)[:n_images]
    contrast = rng.lognormal(-contrast_spread**2 / 2, contrast_spread, n_images)
    return ImageParameters(so3.quaternions_to_matrices(quaternions), *(backend.asarray(a) for a in
                                                                         (shifts, defocus, contrast)))


def check_parameters(params) -> ImageParameters:
    """``params`` on the selected device, one entry per image in every field; else ValueError."""
    if not isinstance(params, ImageParameters):
        raise TypeError(f"params must be ImageParameters (see draw_parameters), got {type(params).__name__}")
    rotations = so3.check_rotations(params.rotations)
    shifts, defocus, contrast = (checks.check_array(a, name, real=True).astype(float) for a, name in
                                 ((params.shifts, "shifts"), (params.defocus, "defocus"),
                                  (params.contrast, "contrast")))
    n = rotations.shape[0]
    if shifts.shape != (n, 2) or defocus.shape != (n,) or contrast.shape != (n,):
        raise ValueError(f"params fields must all have one entry per image, got shapes {rotations.shape}, "
                         f"{shifts.shape}, {defocus.shape}, {contrast.shape}")
    return ImageParameters(rotations, shifts, defocus, contrast)


def _clean_projections(structure, rotations, indices, grid, budget=None):
    """Noise-free projections of the particle(s) for the images ``indices`` (a slice or a device index array);
    a volume's gathers under ``budget`` [bytes]."""
    if isinstance(structure, particles.Atoms):  # checked for the whole stack on entry: no checks per batch
        return particles.project_atoms_kernel(_conformations(structure, indices), rotations, grid)
    if callable(structure):  # one particle per image, one call each (slow: prefer stacked Atoms)
        xp = backend.get_array_module(rotations)
        numbers_ = range(indices.start, indices.stop) if isinstance(indices, slice) else backend.asnumpy(indices)
        return xp.concatenate([
            particles.project_atoms(structure(int(i)), r[None], grid) for i, r in zip(numbers_, rotations)
        ])
    return voxels.project_volume(structure, rotations, sampling=grid.sampling[0], budget=budget)


def _conformations(atoms, indices):
    """The conformations of the images ``indices`` when ``atoms`` holds one per image (positions and, when
    given per conformation, weights); else ``atoms`` itself."""
    if atoms.positions.ndim != 3:
        return atoms
    return atoms._replace(positions=atoms.positions[indices],
                          weights=atoms.weights[indices] if atoms.weights.ndim == 2 else atoms.weights)


def _check_structure(structure, n_images, grid):
    if isinstance(structure, particles.Atoms):
        structure = particles.check_atoms(structure)
        if structure.positions.ndim == 3 and structure.positions.shape[0] != n_images:
            raise ValueError(f"structure holds {structure.positions.shape[0]} conformations for {n_images} images")
        return structure
    if callable(structure):
        return structure
    volume = voxels.check_volume(structure, "structure")
    if volume.shape[0] != grid.gpts[0]:
        raise ValueError(f"volume of {volume.shape[0]}³ voxels does not match the image grid {grid.gpts}")
    return volume


def _pilot_sigma(structure, params, defocus, grid, snr, B_factor, microscope, pilot) -> float:
    if math.isinf(snr):
        return 0.0
    n = params.defocus.shape[0]
    indices = np.unique(np.linspace(0, n - 1, min(int(pilot), n)).round().astype(int))  # spread over micrographs
    xp = backend.get_array_module(params.rotations)
    where = xp.asarray(indices)
    clean = image_formation.form_images_kernel(_clean_projections(structure, params.rotations[where], where, grid),
                                               grid, defocus[indices], params.shifts[where], params.contrast[where],
                                               B_factor, microscope)
    return math.sqrt(float(xp.mean(xp.var(clean, axis=(1, 2)))) / snr)


def noise_sigma(structure, params: ImageParameters, grid, *, snr, B_factor=0.0, pilot=256, **microscope) -> float:
    """Noise standard deviation that gives ``snr`` for this stack.

    ``σ² = mean_i var(clean image i) / snr`` over ``pilot`` images spread evenly
    through the stack (so that every range of defocus is represented).

    Returns
    -------
    float
        σ [image units]; 0 for ``snr = inf``.
    """
    snr = check_snr(snr)
    grid = particles.check_grid(grid, 2)
    params = check_parameters(params)
    structure = _check_structure(structure, params.defocus.shape[0], grid)
    return _pilot_sigma(structure, params, ctf.check_defocus(params.defocus), grid, snr, ctf.check_b_factor(B_factor),
                        ctf.check_microscope(microscope), checks.check_count(pilot, "pilot"))


class ImageBatch(NamedTuple):
    """One batch of a simulated stack.

    Attributes
    ----------
    start : int
        Index of the first image of the batch in the stack.
    images : (b, nx, ny) ndarray
        On the selected device.
    noise_sigma : float
        Noise standard deviation of the whole stack.
    """

    start: int
    images: object
    noise_sigma: float


def stream_images(structure, params: ImageParameters, grid, *, snr=math.inf, seed=0, B_factor=0.0,
                  budget=None, pilot=256, client=None, **microscope) -> Iterator[ImageBatch]:
    """Generate a particle stack batch by batch under a memory budget, on the selected device.

    The batches are planned from the budget alone (and at most
    :data:`CPU_BATCH` images on the CPU), whatever computes them. Image i's
    noise is keyed by ``seed`` and i
    (:func:`mbook.cryoem.image_formation.add_noise`), so a batch is the same
    wherever and whenever it is made.

    With a Dask ``client`` the batches are made on the cluster's workers
    (single-threaded FFTs in each; the same batches as here, so the same
    images) while the caller consumes them in order: the structure is
    scattered to every worker once (per-image conformations go with their
    batch), σ is fixed from the pilot here first, and besides the batch the
    caller holds, at most one batch more than the cluster has worker
    threads is in flight (computing, or finished and waiting its turn): a
    new one is submitted as each is taken. So each worker holds one
    batch's working memory (within ``budget``, which is per worker thread)
    and the caller at most that many finished batches of images (an image
    is ``nx·ny`` floats, a small part of its working memory); a batch is
    released on the cluster once yielded. Closing the generator early
    cancels the batches still in flight.

    Parameters
    ----------
    structure : Atoms, callable or (n, n, n) array_like
        The particle: Gaussian atoms (exact projections), or one
        conformation per image (:class:`~mbook.cryoem.particles.Atoms` with
        positions ``(n_images, n_atoms, 3)``, projected a batch at a time); a
        function ``structure(i) -> Atoms`` giving the particle of image i
        (one projection per call: slower); or a voxel volume on the image's
        sampling (projected by trilinear interpolation).
    params : ImageParameters
        From :func:`draw_parameters`.
    grid : Grid
        Square image grid [Å].
    snr : float
        Signal-to-noise ratio, > 0 (``inf``: no noise).
    seed : int
        Seed of the noise.
    B_factor : float
        [Å²].
    budget : int, optional
        Memory budget [bytes] (default :func:`mbook.core.progress.memory_budget`).
    pilot : int
        Number of images used to fix σ from the SNR.
    client : dask.distributed.Client, optional
        Make the batches on its workers (see above); the images come back
        on the selected device.
    **microscope
        ``energy`` [eV], ``Cs`` [Å], ``amplitude_contrast``.

    Yields
    ------
    ImageBatch
        In stack order.

    Raises
    ------
    ValueError
        For snr <= 0, a non-square grid, or parameters of different lengths.
    TypeError
        For a ``client`` that is no Dask client.
    MemoryError
        When not even one image fits the budget.
    """
    checks.check_client(client)
    snr = check_snr(snr)
    grid = particles.check_grid(grid, 2)
    params = check_parameters(params)
    B_factor, microscope = ctf.check_b_factor(B_factor), ctf.check_microscope(microscope)
    pilot = checks.check_count(pilot, "pilot")
    checks.check_seed(seed)
    if budget is not None:
        checks.check_positive_number(budget, "budget")
    n = params.defocus.shape[0]
    structure = _check_structure(structure, n, grid)
    defocus = ctf.check_defocus(params.defocus)  # the CTF table is keyed on the host: one copy for the stack
    return _stream(structure, params, defocus, grid, snr, seed, B_factor, budget, pilot, microscope, client)


def _image_batch(structure, part, rotations, shifts, contrast, defocus, *, grid, sigma, seed, B_factor, microscope,
                 gather, offset=0):
    """Images ``part`` of the stack (a slice): projections, transfer, contrast and noise, on the inputs' device.

    ``offset``: the stack index of the structure's first conformation (per-image conformations sent with
    their batch hold only the batch's); the noise keeps the stack's numbering.
    """
    where = slice(part.start - offset, part.stop - offset)
    clean = image_formation.form_images_kernel(_clean_projections(structure, rotations, where, grid,
                                                                  budget=max(1, (part.stop - part.start) * gather)),
                                               grid, defocus, shifts, contrast, B_factor, microscope)
    return image_formation.add_noise_kernel(clean, sigma, seed, part.start)


def _image_batch_one_thread(*args, **kwargs):
    """:func:`_image_batch` with single-threaded CPU FFTs, for a Dask worker: the workers share the cores."""
    with backend.fft_workers(1):
        return _image_batch(*args, **kwargs)


def _stream(structure, params, defocus, grid, snr, seed, B_factor, budget, pilot, microscope, client=None):
    sigma = _pilot_sigma(structure, params, defocus, grid, snr, B_factor, microscope, pilot)
    n = defocus.size
    n_atoms = structure.weights.shape[0] if isinstance(structure, particles.Atoms) else 0
    side, npix = grid.gpts[0], grid.gpts[0] * grid.gpts[1]
    # projections (profiles, image), FFTs and transfer (complex), noise (uniforms, normals)
    per_image = (8 * (3 * n_atoms * side + 6 * n_atoms + 4 * npix) + 16 * 4 * npix
                 + 8 * 3 * white_noise.uniforms_per_image(grid.gpts))
    fixed = 0 if isinstance(structure, particles.Atoms) or callable(structure) else 8 * int(structure.size)
    gather = 0 if fixed == 0 else voxels.GATHER_BYTES_PER_VOXEL * int(structure.size)  # a volume's, per image
    batch = progress.plan_batches(n_items=n, bytes_per_item=per_image + gather, fixed_bytes=fixed, budget=budget)
    if backend.get_device() == "cpu":
        batch = min(batch, CPU_BATCH)
    parts = [slice(start, min(start + batch, n)) for start in range(0, n, batch)]
    common = dict(grid=grid, sigma=sigma, seed=seed, B_factor=B_factor, microscope=microscope, gather=gather)

    def inputs(part):  # one batch's share of the per-image inputs
        return (params.rotations[part], params.shifts[part], params.contrast[part], defocus[part])

    if client is not None:
        yield from _stream_on_cluster(client, structure, parts, inputs, common, sigma)
        return
    for part in progress.progress(parts, desc="images"):
        yield ImageBatch(part.start, _image_batch(structure, part, *inputs(part), **common), sigma)


def _stream_on_cluster(client, structure, parts, inputs, common, sigma):
    """The batches ``parts`` made on the workers of ``client`` and yielded in order, a bounded number ahead."""
    import collections

    per_image = isinstance(structure, particles.Atoms) and structure.positions.ndim == 3
    # A shared particle (atoms, a volume, a function) goes to every worker once; per-image conformations
    # go with their batch (the noise keeps the stack's numbering).
    # (in a list: Atoms is a tuple, which scatter would split into its fields; hash=False: a key of its own)
    shared = None if per_image else client.scatter([structure], broadcast=True, hash=False)[0]
    ahead = 1 + progress.client_threads(client)

    def submit(part):
        if per_image:
            return client.submit(_image_batch_one_thread, _conformations(structure, part), part, *inputs(part),
                                 pure=False, offset=part.start, **common), part.start
        return client.submit(_image_batch_one_thread, shared, part, *inputs(part), pure=False, **common), part.start

    queue, remaining = collections.deque(), iter(parts)
    try:
        for part in remaining:
            queue.append(submit(part))
            if len(queue) >= ahead:
                break
        for _ in progress.progress(range(len(parts)), desc="images"):
            future, start = queue.popleft()
            images = backend.asarray(future.result())
            future.release()  # its images are the caller's now
            part = next(remaining, None)
            if part is not None:
                queue.append(submit(part))
            yield ImageBatch(start, images, sigma)
    finally:  # the caller stopped early (or a batch failed): nothing left running for it
        if queue:
            client.cancel([future for future, _ in queue])
