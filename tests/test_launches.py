"""Kernel launches per iteration of the solvers whose loops run on small arrays, counted on the stand-in.

On a GPU each device operation is at least one kernel launch, a few microseconds of host time however
small the array, so an iteration's operation count is the floor of its GPU time. These counts are
exact and repeatable (no timing): the difference between ``2k`` and ``k`` iterations, divided by ``k``,
is one iteration's operations, set-up excluded. The bounds are the counts with the fused kernels of
:mod:`mbook.core.fusion` (in the comments, what the same iteration issued before them, counted the same
way on 2026-11-30); a change that unfuses a loop body fails here.
"""

import numpy as np
import pytest

from mbook.core import backend, grids, strict
from mbook.inverse import cdi, circle, optimize
from mbook.learning import implicit_bias
from mbook.multimodal import edx


@pytest.fixture(autouse=True)
def on_the_stand_in():
    backend.set_device("strict")
    yield
    backend.set_device("cpu")


def per_iteration(run, k=10):
    """Device operations of one iteration: ``run(n)`` runs n iterations (after a first run that fills the
    library's caches of constants, so that both counted runs find them made)."""
    run(k)
    counts = []
    for n in (k, 2 * k):
        with strict.count_operations() as ops:
            run(n)
        counts.append(ops.operations)
    return (counts[1] - counts[0]) / k


def test_tv_on_the_circle_issues_six_operations_an_iteration(rng):
    phase = backend.asarray(rng.uniform(-np.pi, np.pi, (32, 32)))
    ops = per_iteration(lambda n: circle.tv_s1_denoise(phase, 0.2, max_num_iter=n, tol=0.0))
    assert ops <= 6  # gradient 1, divergence 1, a reduction, three fused kernels (49 at first, then 12, 11)


def test_each_finite_difference_operator_is_one_kernel(rng):
    # Neumann's gradient, divergence and Laplacian: one hand-written stencil kernel each on a GPU
    # (3, 4 and 4 plain operations where it is not used)
    u, p = backend.asarray(rng.standard_normal((3, 16, 16))), backend.asarray(rng.standard_normal((2, 16, 16)))
    for operator, argument in ((optimize.gradient, u), (optimize.divergence, p), (optimize.laplacian, u)):
        with strict.count_operations() as ops:
            operator(argument)
        assert ops.operations - 2 <= 1, operator.__name__  # 2: the NaN check of a call from outside mbook


def test_a_pdhg_iteration_of_tv_denoising_issues_about_fifteen_operations(rng):
    image = backend.asarray(rng.standard_normal((32, 32)))
    ops = per_iteration(lambda n: optimize.tv_denoise(image, 0.1, tol=0.0, max_num_iter=n))
    assert ops <= 14  # 13.4 (35.6 at first: unfused steps, finite differences through slices' copies; then 21)


@pytest.mark.parametrize("method", ["er", "hio", "raar"])
def test_a_phase_retrieval_iteration_issues_eight_operations(rng, method):
    support = np.zeros((32, 32), bool)
    support[8:24, 8:24] = True
    intensity = np.abs(np.fft.fft2(rng.standard_normal((32, 32)) * support)) ** 2
    ops = per_iteration(lambda n: cdi.retrieve_phase(intensity, support, method=method, max_num_iter=n))
    assert ops <= 8  # two FFTs, two fused kernels, the error's reduction (15, 18 and 19 before)


@pytest.mark.parametrize("batch_size", [None, 5])
def test_a_gradient_step_of_the_diagonal_network_issues_a_few_operations(rng, batch_size):
    X, y = rng.standard_normal((20, 50)), rng.standard_normal(20)
    ops = per_iteration(lambda n: implicit_bias.train(X, y, scale=0.1, learning_rate=0.01, num_steps=n * 10,
                                                      batch_size=batch_size, record_every=10**6), k=20) / 10
    # two products and one fused update (GD 19 before); SGD two batched products, a subtraction and
    # one fused update, its rows of X and y gathered once every 32 steps (17, then 7 before)
    assert ops <= (4 if batch_size is None else 4.1)


def test_a_newton_step_of_the_edx_calibration_issues_under_two_hundred_operations(small_edx_data):
    ops = per_iteration(lambda n: edx.estimate_fused(small_edx_data, max_num_iter=n, tol=0.0), k=5)
    assert ops <= 190  # five candidate steps, their 52-step bisection one kernel (2,771 before)


def test_ctf_tables_take_every_defocus_in_one_pass():
    from mbook.cryoem import ctf

    grid = grids.make_grid(gpts=(32, 32), sampling=2.0)
    counts = []
    for n in (4, 64):
        with strict.count_operations() as ops:
            ctf.ctf_table(grid, np.linspace(1e4, 2e4, n), 50.0, ctf.check_microscope({}), strict.xp)
        counts.append(ops.operations)
    assert counts[1] == counts[0] <= 36  # the defoci are an array axis, not a loop (111 and 1,611 before)



@pytest.mark.parametrize(("moving", "smoothness", "bound"), [(False, 0.0, 34.2), (True, 0.0, 47.2), (True, 0.1, 48.2)])
def test_a_ptychography_batch_issues_a_few_dozen_operations(rng, moving, smoothness, bound):
    """One mini-batch of positions: the forward model, the gradients, the object's and probe's steps,
    the prior's Laplacian and, when the positions move, their Gauss-Newton step.

    Its two scatter-adds count two operations each (the zeroed output and the atomic adds): CuPy's
    ``bincount``, counted as one before, launched five kernels and waited twice for the device."""
    from mbook.multimodal import ptychography, reconstruction

    probe = ptychography.centred_probe(16, sampling=0.5, energy=300e3, semiangle_cutoff=15.0, defocus=40.0)
    axis = np.linspace(4.5, 11.5, 8)
    where = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    counts = rng.poisson(5.0, (64, 16, 16))
    ops = per_iteration(lambda n: reconstruction.reconstruct(
        counts, positions=where, probe=probe, object_gpts=(32, 32), sampling=0.5, max_num_iter=n, batch_size=8,
        probe_from=0, positions_from=0 if moving else None, smoothness=smoothness), k=2) / 8
    # before the position step, the curvature, the gradient's weights and the Laplacian were fused:
    # 34.1, 67.1 and 75.1 (per batch, an iteration's own operations shared by its 8 batches)
    assert ops <= bound
    if not moving:  # with the probe fixed as well: no probe gradient and step (6), windows made once (5),
        # with one slice the illumination made once for the scan (6 more), and a pass's windows and
        # amplitudes gathered once in its order instead of batch by batch (3 more)
        fixed = per_iteration(lambda n: reconstruction.reconstruct(
            counts, positions=where, probe=probe, object_gpts=(32, 32), sampling=0.5, max_num_iter=n, batch_size=8,
            probe_from=None, positions_from=None, smoothness=smoothness), k=2) / 8
        assert fixed <= ops - 19 + 1e-9, (fixed, ops)


def test_a_projection_and_its_adjoint_are_a_few_dozen_kernels(rng):
    """One block of rotations: the ray samples' coordinates (one kernel per axis), then the gather, or
    the corners' indices and trilinear weights (fused) and the eight scatters of the adjoint."""
    from mbook.tomography import projector, rays

    volume = backend.asarray(rng.standard_normal((12, 12, 12)))
    rotations = backend.asarray(projector.tilt_rotations(np.linspace(0.0, 1.0, 5)))
    projections = rays.project_kernel(volume, rotations, sampling=0.5, detector_gpts=(12, 12))
    rays.backproject_kernel(projections, rotations, shape=(12, 12, 12), sampling=0.5)  # fills the caches
    with strict.count_operations() as forward:
        rays.project_kernel(volume, rotations, sampling=0.5, detector_gpts=(12, 12))
    with strict.count_operations() as adjoint:
        rays.backproject_kernel(projections, rotations, shape=(12, 12, 12), sampling=0.5)
    assert forward.operations <= 16  # (34 before the fused coordinates)
    assert adjoint.operations <= 47  # (108 before the fused coordinates, corner indices and weights)


def test_an_unrolled_pdhg_training_step_issues_nineteen_operations_a_layer(rng):
    """A training step's forward and reverse passes through K layers, then Adam (one kernel per array)."""
    from mbook.learning import unrolled

    features = backend.asarray(rng.standard_normal((8, 2, 16, 16)))
    masks = backend.asarray(rng.random((8, 16, 16)) > 0.5)
    per_step = {}
    for layers in (10, 20):
        params = unrolled.init_parameters(2, layers)
        per_step[layers] = per_iteration(lambda n: unrolled.train(features, masks, params, num_steps=n, batch_size=4),
                                         k=4)
    per_layer = (per_step[20] - per_step[10]) / 10
    assert per_layer <= 19  # 4 forward, 15 reverse (21 before: σ and τ's gradients negated every layer)
    assert per_step[10] - 10 * per_layer <= 70  # 135 before: Adam's moments and step unfused


def test_a_local_lma_update_reuses_the_basis_operators(rng):
    """The slices' propagators and the basis function are made once per basis, not again by each update:
    on a GPU an update's kernels, not its few translates, set its time."""
    from mbook.core import grids
    from mbook.electron import lma

    grid = grids.make_grid(gpts=(64, 64), sampling=0.1)
    x, y = grids.coordinates(grid, xp=np)
    r2 = (x[:, None] - 3.2) ** 2 + (y[None, :] - 3.2) ** 2
    before = np.repeat((400.0 * np.exp(-r2 / (2 * 0.15**2)))[None], 4, axis=0).astype(np.float32)
    after = before.copy()
    after[:, 8:12, 8:12] += 30.0
    basis = lma.build_basis(before, grid=grid, energy=200e3, slice_thickness=1.0, semiangle_cutoff=20.0,
                            lattice_step=4, patch_gpts=16)
    with strict.count_operations() as ops:
        lma.update_basis(basis, after, tol=1e-2, overwrite=True)
    assert ops.operations <= 80, ops.operations  # 4 slices; 120 when the update made them again


def test_an_lma_scan_takes_one_batch_of_probes_on_a_gpu(rng):
    # 256 probes about one a lattice cell apart (too sparse to share blocks): each of the block's 49 offsets
    # is a few operations per batch, so the GPU's default batch (lma_scan.GPU_BATCH) takes them at once
    from mbook.electron import lma, lma_scan, stem

    grid = grids.make_grid(gpts=(96, 96), sampling=0.1)
    potential = backend.asarray(rng.uniform(0, 1, (2, 96, 96)).astype(np.float32))
    basis = lma.build_basis(potential, grid=grid, energy=200e3, slice_thickness=1.0, semiangle_cutoff=20.0,
                            lattice_step=4, patch_gpts=24)
    positions = stem.scan_positions(start=(0.3, 0.3), end=(9.3, 9.3), sampling=9 / 16)
    images = {}
    for batch in (None, lma_scan.BATCH):
        with strict.count_operations() as ops:
            images[batch] = lma.scan(basis, positions=positions, detectors={"ADF": (30.0, 80.0)},
                                     max_batch=batch)["ADF"]
        images[batch, "operations"] = ops.operations
    assert images[None, "operations"] <= 300  # 293 in one batch; 995 in four of 64, the CPU's batch
    assert images[lma_scan.BATCH, "operations"] > 3 * images[None, "operations"]
    np.testing.assert_allclose(backend.asnumpy(images[None]), backend.asnumpy(images[lma_scan.BATCH]), rtol=1e-5)
    # The budget still bounds the default batch: 4 MiB beside the basis splits the 256 probes (1,697 operations)
    with strict.count_operations() as ops:
        small = lma.scan(basis, positions=positions, detectors={"ADF": (30.0, 80.0)}, budget=basis.nbytes + 2**22)
    assert ops.operations > 3 * images[None, "operations"]
    np.testing.assert_allclose(backend.asnumpy(small["ADF"]), backend.asnumpy(images[None]), rtol=1e-5)
