"""mbook.tomography: the 4D testbed, 3D and 4D reconstruction, atom tracing."""

import numpy as np
import pytest

from mbook.core import backend
from mbook.tomography import projector, reconstruct, refine, specimens, tracing

SHAPE, SAMPLING, WIDTH = (24, 24, 24), 0.6, 0.6


@pytest.fixture(scope="module")
def particle():
    with backend.use_device("cpu"):
        positions, numbers = specimens.fept_nanoparticle(5.0)
    return backend.asnumpy(positions), backend.asnumpy(numbers)


@pytest.fixture(scope="module")
def off_centre(particle):
    """The particle moved off its centre of symmetry: it is mirror-symmetric in x, y and z (species included), so
    a projection at -θ equals the one at θ, and a transposed rotation would pass unseen."""
    positions, numbers = particle
    return positions + np.array([0.7, -0.4, 1.1]), numbers


def _series(particle, n=19, order="sequential", tilt_range=70.0):
    positions, numbers = particle
    angles, times = specimens.tilt_series(n, order=order, tilt_range=tilt_range)
    tilt = projector.TiltProjector(SHAPE, angles, sampling=SAMPLING)
    data = specimens.project_atoms(positions, numbers, tilt.rotations, gpts=SHAPE[1:], sampling=SAMPLING,
                                   width=WIDTH)
    return tilt, data, times


# ----------------------------------------------------------------------------- testbed
def test_l10_particle_alternates_fe_and_pt_planes_along_z(particle):
    positions, numbers = particle
    planes = np.round(positions[:, 0] / (specimens.FEPT_L10["c"] / 2)).astype(int)
    assert set(numbers[planes % 2 == 0]) == {26} and set(numbers[planes % 2 == 1]) == {78}
    assert np.linalg.norm(positions, axis=1).max() <= 5.0


def test_a1_particle_is_half_platinum():
    _, numbers = specimens.fept_nanoparticle(9.0, ordering="A1", seed=3)
    assert abs(float(backend.asnumpy(numbers == 78).mean()) - 0.5) < 0.08


def test_trajectories_hop_through_vacancies_to_the_surface_without_crossing_atoms(device):
    with backend.use_device("cpu"):
        positions, numbers = (backend.asnumpy(a) for a in specimens.fept_nanoparticle(10.0))
    traj, kept, moving = specimens.diffusion_trajectories(positions, numbers, num_steps=40, num_moving=3,
                                                          min_travel=5.0, seed=4)
    assert backend.get_array_module(traj) is backend.xp
    traj, kept, moving = backend.asnumpy(traj), backend.asnumpy(kept), backend.asnumpy(moving)
    assert moving.sum() == 3 and set(kept[moving]) == {78}
    static = traj[0, ~moving]
    np.testing.assert_array_equal(traj[:, ~moving], np.broadcast_to(static, traj[:, ~moving].shape))
    sites = {tuple(p) for p in np.round(positions, 6)}
    assert all(tuple(p) in sites for p in np.round(traj[0], 6))  # every atom left stands on its own site
    # Each moving atom ends on a vacated lattice site (no atom left there) at least min_travel from its start,
    # one vacancy per hop: the atoms removed are exactly the end sites and the sites on the way.
    ends = np.round(traj[-1, moving], 6)
    assert all(tuple(p) in sites for p in ends)
    assert np.linalg.norm(traj[-1, moving] - traj[0, moving], axis=1).min() >= 5.0
    assert np.linalg.norm(static[:, None] - traj[-1, moving][None], axis=-1).min() > 2.5
    assert positions.shape[0] - kept.shape[0] >= 3 * 2  # at least two hops each (5 Å, 2.7 Å hops)
    # Atoms do not pass through each other.
    clearance = np.linalg.norm(traj[:, moving][:, :, None] - static[None, None], axis=-1).min()
    assert clearance > 1.8, clearance
    speed = np.linalg.norm(np.diff(traj[:, moving], axis=0), axis=-1)
    assert speed[0].max() < 0.05 * speed.max()  # smoothstep: at rest at the start
    assert np.abs(np.diff(speed, axis=0)).max() < 0.35 * speed.max()  # no jumps


def test_trajectories_refuse_a_travel_no_surface_site_allows():
    with backend.use_device("cpu"):
        positions, numbers = specimens.fept_nanoparticle(8.0)
    with pytest.raises(ValueError, match="min_travel"):
        specimens.diffusion_trajectories(positions, numbers, num_steps=5, num_moving=2, min_travel=30.0)


def test_golden_order_visits_every_angle_once_and_spreads_them():
    sequential, _ = specimens.tilt_series(30)
    golden, times = specimens.tilt_series(30, order="golden")
    np.testing.assert_allclose(np.sort(golden), sequential)
    assert np.ptp(golden[:6]) > 100 and np.ptp(sequential[:6]) < 30
    assert times[0] == 0 and times[-1] == 1


def test_analytic_projections_match_the_voxel_projector(particle):
    positions, numbers = particle
    tilt, data, _ = _series(particle, n=5)
    volume = specimens.atom_volume(positions, numbers, shape=SHAPE, sampling=SAMPLING, width=WIDTH)
    voxel = backend.asnumpy(tilt.forward(volume))
    data = backend.asnumpy(data)
    assert np.linalg.norm(voxel - data) < 0.05 * np.linalg.norm(data)
    # every projection carries the whole cross-section: sum p s^2 = sum sigma_Z
    sigma = backend.asnumpy(specimens.cross_sections(numbers)).sum()
    np.testing.assert_allclose(data.sum(axis=(1, 2)) * SAMPLING**2, sigma, rtol=1e-6)


def test_analytic_projections_of_an_off_centre_particle_match_the_voxel_projector(off_centre):
    """The rotation convention of the analytic projections against the voxel projector's: 3 % apart (trilinear
    discretisation at width = sampling); a transposed rotation gives 44 %."""
    positions, numbers = off_centre
    tilt, data, _ = _series(off_centre, n=5)
    voxel = backend.asnumpy(tilt.forward(specimens.atom_volume(positions, numbers, shape=SHAPE, sampling=SAMPLING,
                                                               width=WIDTH)))
    data = backend.asnumpy(data)
    assert np.linalg.norm(voxel - data) < 0.05 * np.linalg.norm(data)


def test_moving_atoms_are_projected_at_their_own_frame(off_centre):
    """Per-frame positions (N, n, 3): projection k sees the atoms at frame k."""
    positions, numbers = off_centre
    rotations = projector.tilt_rotations([-50.0, 10.0, 70.0])
    frames = positions + np.array([[0.0, 0.0, 0.0], [0.5, -0.3, 0.2], [1.1, 0.4, -0.6]])[:, None]
    together = backend.asnumpy(specimens.project_atoms(frames, numbers, rotations, gpts=(16, 16), sampling=SAMPLING,
                                                       width=WIDTH))
    for k in range(3):
        alone = specimens.project_atoms(frames[k], numbers, rotations[k:k + 1], gpts=(16, 16), sampling=SAMPLING,
                                        width=WIDTH)
        np.testing.assert_allclose(together[k], backend.asnumpy(alone)[0], rtol=1e-12, atol=1e-15)
    assert np.linalg.norm(together[2] - together[0]) > 0.1 * np.linalg.norm(together[0])  # the frames differ


def test_poisson_noise_is_unbiased_with_the_variance_of_counts():
    p = np.full((4, 50, 50), 0.02)
    noisy = backend.asnumpy(specimens.poisson_noise(p, dose=1e4, sampling=0.5, seed=1))
    counts = noisy * 1e4 * 0.25
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)
    assert counts.mean() == pytest.approx(50.0, rel=0.01) and counts.var() == pytest.approx(50.0, rel=0.05)


# ----------------------------------------------------------------------------- 3D
def test_iterative_residuals_decrease_and_pgd_fits_better_than_sirt(particle, device):
    tilt, data, _ = _series(particle)
    pgd = reconstruct.pgd(data, tilt, max_num_iter=20)
    sirt = reconstruct.sirt(data, tilt, max_num_iter=20)
    for result in (pgd, sirt):
        assert backend.get_array_module(result.x) is backend.xp
        residuals = backend.asnumpy(result.residuals)
        assert residuals[-1] < 0.5 * residuals[0]
        assert np.all(np.diff(residuals[1:]) <= 1e-6) or result is pgd  # SIRT: monotone
        assert float(result.x.min()) >= 0
    assert float(pgd.residuals[-1]) < float(sirt.residuals[-1])


def test_fbp_of_a_full_series_is_the_volume(particle):
    """180 projections over ±89.5°: the ramp-filtered back-projection is the volume to 12 % (the discretisation of
    a 24³ grid at width = sampling); a projection filtered off by one pixel, or a wrong filter, gives about 1.
    The Hann filter trades resolution for noise: correlation 0.96."""
    positions, numbers = particle
    tilt, data, _ = _series(particle, n=180, tilt_range=89.5)
    truth = backend.asnumpy(specimens.atom_volume(positions, numbers, shape=SHAPE, sampling=SAMPLING, width=WIDTH))
    ramp = backend.asnumpy(reconstruct.fbp(data, tilt).x)
    assert np.linalg.norm(ramp - truth) < 0.2 * np.linalg.norm(truth)
    hann = backend.asnumpy(reconstruct.fbp(data, tilt, filter="hann").x)
    assert np.corrcoef(hann.ravel(), truth.ravel())[0, 1] > 0.95


def test_fbp_keeps_the_mass_seen_by_the_tilt_range(particle):
    # FBP integrates over the measured angles only: of the mass it keeps the fraction 140°/180°.
    positions, numbers = particle
    tilt, data, _ = _series(particle, n=61)
    x = backend.asnumpy(reconstruct.fbp(data, tilt, filter="hann").x)
    sigma = backend.asnumpy(specimens.cross_sections(numbers)).sum()
    assert x.sum() * SAMPLING**3 == pytest.approx(sigma * 140 / 180, rel=0.05)


def test_pgd_on_cpu_and_strict_agree(particle, on_cpu):
    tilt_cpu, data, _ = _series(particle, n=9)
    reference = backend.asnumpy(on_cpu(lambda: reconstruct.pgd(data, projector.TiltProjector(
        SHAPE, tilt_cpu.angles, sampling=SAMPLING), max_num_iter=5, l1=1e-4).x))
    with backend.use_device("strict"):
        tilt = projector.TiltProjector(SHAPE, tilt_cpu.angles, sampling=SAMPLING)
        strict = backend.asnumpy(reconstruct.pgd(data, tilt, max_num_iter=5, l1=1e-4).x)
    np.testing.assert_allclose(strict, reference, rtol=1e-6, atol=1e-8)


def test_solvers_copy_nothing_to_the_host_per_iteration(particle, no_copies_per_iteration):
    positions, numbers = particle
    angles, times = specimens.tilt_series(7)

    def run(n):
        tilt = projector.TiltProjector(SHAPE, angles, sampling=SAMPLING)
        data = tilt.forward(specimens.atom_volume(positions, numbers, shape=SHAPE, sampling=SAMPLING))
        reconstruct.pgd(data, tilt, max_num_iter=n)
        reconstruct.sirt(data, tilt, max_num_iter=n)
        space_time = reconstruct.SpaceTimeProjector(tilt, reconstruct.temporal_weights(times, [0.0, 1.0]))
        reconstruct.pgd_4d(data, space_time, backend.xp.ones(space_time.shape), tv_space=1e-3, tv_time=1e-3,
                           smoothing=1e-3, max_num_iter=n)

    no_copies_per_iteration(run)


# ----------------------------------------------------------------------------- 4D
@pytest.mark.parametrize("kind", reconstruct.KINDS)
def test_temporal_weights_interpolate(kind):
    w = backend.asnumpy(reconstruct.temporal_weights(np.linspace(0, 1, 11), [0.0, 0.5, 1.0], kind=kind))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.all(w >= 0)
    if kind == "linear":  # hat functions: exact at the anchors, halfway between them
        np.testing.assert_allclose(w[[0, 5, 10]], np.eye(3), atol=1e-15)
        np.testing.assert_allclose(w[[2]], [[0.6, 0.4, 0.0]], atol=1e-12)
    else:
        assert np.all(w > 0) and np.argmax(w[5]) == 1


@pytest.mark.parametrize("kind", reconstruct.KINDS)
def test_space_time_projector_is_adjoint(device, rng, kind):
    angles, times = specimens.tilt_series(9, order="golden")
    tilt = projector.TiltProjector((8, 6, 9), angles, sampling=0.5)
    op = reconstruct.SpaceTimeProjector(tilt, reconstruct.temporal_weights(times, [0.0, 0.3, 1.0], kind=kind),
                                        cutoff=0.0)
    x, y = rng.standard_normal(op.shape), rng.standard_normal(op.projection_shape)
    assert np.vdot(backend.asnumpy(op.forward(x)), y) == pytest.approx(
        np.vdot(x, backend.asnumpy(op.adjoint(y))), rel=1e-10)
    # with all weights kept it is the projection of the interpolated volume at each time
    w = backend.asnumpy(op.weights)
    k = 4
    single = backend.asnumpy(tilt.forward(np.tensordot(w[k], x, axes=1)))[k]
    np.testing.assert_allclose(backend.asnumpy(op.forward(x))[k], single, rtol=1e-10, atol=1e-12)


def test_lipschitz_bounds_are_upper_bounds():
    angles, times = specimens.tilt_series(11, order="golden")
    tilt = projector.TiltProjector((8, 5, 8), angles)
    for op in (tilt, reconstruct.SpaceTimeProjector(tilt, reconstruct.temporal_weights(times, [0, 0.5, 1])),
               reconstruct.SpaceTimeProjector(tilt, reconstruct.temporal_weights(times, [0, 1], kind="gaussian"))):
        estimate = reconstruct.operator_norm(op, max_num_iter=200) ** 2
        bound = reconstruct.lipschitz_bound(op)
        assert estimate <= bound <= 2.0 * estimate


@pytest.mark.parametrize("axes", [(-3, -2, -1), (0,)])
def test_smooth_tv_gradient_matches_finite_differences(rng, axes):
    u = rng.standard_normal((3, 4, 5, 4))
    direction = rng.standard_normal(u.shape)
    value, gradient = reconstruct.smooth_tv(u, axes=axes, smoothing=0.3)
    h = 1e-6
    plus = float(reconstruct.smooth_tv(u + h * direction, axes=axes, smoothing=0.3)[0])
    minus = float(reconstruct.smooth_tv(u - h * direction, axes=axes, smoothing=0.3)[0])
    assert (plus - minus) / (2 * h) == pytest.approx(np.vdot(backend.asnumpy(gradient), direction), rel=1e-6)


def test_pgd_4d_lowers_the_residual_of_its_start(particle):
    positions, numbers = particle
    traj, numbers, _ = specimens.diffusion_trajectories(positions, numbers, num_steps=19, num_moving=2,
                                                        core_fraction=0.9, min_travel=3.0, seed=2)
    tilt, _, times = _series(particle)
    data = specimens.project_atoms(traj, numbers, tilt.rotations, gpts=SHAPE[1:], sampling=SAMPLING, width=WIDTH)
    static = reconstruct.pgd(data, tilt, max_num_iter=20)
    op = reconstruct.SpaceTimeProjector(tilt, reconstruct.temporal_weights(times, [0.0, 0.5, 1.0]))
    result = reconstruct.pgd_4d(data, op, np.repeat(backend.asnumpy(static.x)[None], 3, axis=0), tv_time=1e-4,
                                max_num_iter=20)
    residuals = backend.asnumpy(result.residuals)
    assert residuals[-1] < 0.8 * float(static.residuals[-1])


# ----------------------------------------------------------------------------- tracing
def test_tracing_the_true_volume_finds_every_atom_and_its_species(particle, device):
    positions, numbers = particle
    volume = specimens.atom_volume(positions, numbers, shape=SHAPE, sampling=SAMPLING, width=WIDTH)
    atoms = tracing.trace_atoms(volume, sampling=SAMPLING)
    assert backend.get_array_module(atoms.positions) is backend.xp
    match = tracing.match_atoms(atoms.positions, positions, max_distance=0.5)
    assert match.recall == 1.0 and match.precision == 1.0
    assert float(backend.asnumpy(match.distances).max()) < 0.05  # the Gaussian fit: sub-voxel
    species = backend.asnumpy(tracing.classify_species(atoms.intensities))
    np.testing.assert_array_equal(species[match.found], numbers[match.reference])


def test_tracing_an_isolated_atom_is_exact(device):
    """The three-point Gaussian fit (on the logarithms) is exact for a sampled Gaussian: an atom at a sub-voxel
    position is found to rounding (a parabola through the values themselves errs by 0.03 Å)."""
    atom = np.array([[0.25, -0.17, 0.11]])
    volume = specimens.atom_volume(atom, [78], shape=(16, 16, 16), sampling=SAMPLING, width=WIDTH)
    found = backend.asnumpy(tracing.trace_atoms(volume, sampling=SAMPLING).positions)
    assert found.shape == (1, 3)
    np.testing.assert_allclose(found[0], atom[0], rtol=0, atol=1e-9)


def test_local_moments_measure_an_anisotropic_blob(device):
    n, h = 41, 0.2
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2,) * 3, indexing="ij")
    centre = np.array([0.3, -0.5, 1.0])  # [Å]
    blob = np.exp(-0.5 * (((z * h - centre[0]) / 0.8) ** 2 + ((y * h - centre[1]) / 0.5) ** 2
                          + ((x * h - centre[2]) / 0.5) ** 2))
    moments = tracing.local_moments(blob, [centre], sampling=h, radius=3.5)
    np.testing.assert_allclose(backend.asnumpy(moments.widths)[0], [0.8, 0.5, 0.5], rtol=0.02)
    np.testing.assert_allclose(backend.asnumpy(moments.centroids)[0], centre, atol=0.01)
    assert float(moments.intensities[0]) == pytest.approx((2 * np.pi) ** 1.5 * 0.8 * 0.5 * 0.5, rel=0.02)


def test_line_profiles_run_along_each_axis(device):
    volume = np.zeros((9, 9, 9))
    volume[4, 4, :] = np.arange(9)
    offsets, profiles = tracing.line_profiles(volume, [[0.0, 0.0, 0.5]], sampling=0.5, half_length=1.0)
    np.testing.assert_allclose(backend.asnumpy(offsets), [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(backend.asnumpy(profiles)[2, 0], [3, 4, 5, 6, 7])
    np.testing.assert_allclose(backend.asnumpy(profiles)[0, 0], [0, 0, 5, 0, 0])


def test_position_errors_cap_the_missed_atoms(device):
    found = np.array([[0.0, 0.0, 0.1], [5.0, 0.0, 0.0]])
    reference = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [5.0, 0.3, 0.0]])
    errors, match = tracing.position_errors(found, reference, max_distance=1.0)
    assert backend.get_array_module(errors) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(errors), [0.1, 1.0, 0.3])
    assert match.recall == pytest.approx(2 / 3) and match.precision == 1.0


def test_tracks_follow_a_moving_atom():
    frames = [np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]), np.array([[3.0, 0.1, 0.0], [0.5, 0.0, 0.0]]),
              np.array([[1.0, 0.0, 0.0]])]
    tracks = backend.asnumpy(tracing.track_atoms(frames, max_distance=0.8))
    np.testing.assert_allclose(tracks[:, 0, 0], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(tracks[1, 1], [3.0, 0.1, 0.0])
    assert np.all(np.isnan(tracks[2, 1]))


# ----------------------------------------------------------------------------- parametric refinement
def _atom_problem(particle, n=7):
    positions, numbers = particle
    angles, times = specimens.tilt_series(n, order="golden")
    rotations = projector.tilt_rotations(angles)
    weights = reconstruct.temporal_weights(times, [0.0, 0.5, 1.0])
    sigma = specimens.cross_sections(numbers)
    op = refine.AtomProjector(rotations, weights, [sigma] * 3, gpts=(16, 16), sampling=SAMPLING, width=WIDTH)
    data = specimens.project_atoms(positions, numbers, rotations, gpts=(16, 16), sampling=SAMPLING, width=WIDTH)
    return op, data


def test_atom_projector_is_the_testbed_model(particle):
    op, data = _atom_problem(particle)
    positions = np.concatenate([particle[0]] * 3)
    np.testing.assert_allclose(backend.asnumpy(op.forward(positions)), backend.asnumpy(data), rtol=1e-10,
                               atol=1e-14)


def test_atom_projector_weighs_distinct_anchors_and_rotates_like_the_testbed(off_centre, rng):
    """Three anchors at different positions, an off-centre particle: projection k is Σ_m w_km P_k(x_m), with the
    testbed's rotation convention (identical anchors or a symmetric particle could not tell)."""
    positions, numbers = off_centre
    op, _ = _atom_problem(off_centre)
    angles, times = specimens.tilt_series(7, order="golden")  # those of _atom_problem, not read from op
    rotations = projector.tilt_rotations(angles)
    weights = backend.asnumpy(reconstruct.temporal_weights(times, [0.0, 0.5, 1.0]))
    anchors = [positions + 0.3 * rng.standard_normal(positions.shape) for _ in range(3)]
    each = [backend.asnumpy(specimens.project_atoms(x, numbers, rotations, gpts=(16, 16), sampling=SAMPLING,
                                                    width=WIDTH)) for x in anchors]
    expected = np.einsum("km,mkyx->kyx", weights, np.stack(each))
    np.testing.assert_allclose(backend.asnumpy(op.forward(np.concatenate(anchors))), expected, rtol=1e-10,
                               atol=1e-14)


def test_atom_gradient_matches_finite_differences(particle, rng):
    op, data = _atom_problem(particle)
    x = np.concatenate([particle[0]] * 3) + 0.1 * rng.standard_normal((3 * particle[0].shape[0], 3))
    direction = rng.standard_normal(x.shape)
    _, gradient = op.loss_and_gradient(x, data)
    h = 1e-6
    plus, minus = (float(op.loss_and_gradient(x + sign * h * direction, data)[0]) for sign in (1, -1))
    assert (plus - minus) / (2 * h) == pytest.approx(np.vdot(backend.asnumpy(gradient), direction), rel=1e-6)


def test_refinement_moves_atoms_back(particle, rng, device):
    op, data = _atom_problem(particle, n=15)
    truth = np.concatenate([particle[0]] * 3)
    start = truth + 0.15 * rng.standard_normal(truth.shape)
    result = refine.refine_positions(data, op, op.split(start), max_num_iter=80)
    residuals = backend.asnumpy(result.residuals)
    assert residuals[-1] < 0.5 * residuals[0]
    error = np.sqrt(np.mean((np.concatenate([backend.asnumpy(p) for p in result.positions]) - truth) ** 2))
    assert error < 0.5 * np.sqrt(np.mean((start - truth) ** 2))


def test_refinement_recovers_from_a_step_too_large(particle, rng, device):
    # Step 1 diverges on this problem (the residual triples within the first checks' span); the
    # safeguard returns to the last check's positions and halves the step, and the fit converges.
    op, data = _atom_problem(particle, n=15)
    truth = np.concatenate([particle[0]] * 3)
    start = truth + 0.15 * rng.standard_normal(truth.shape)
    residuals = backend.asnumpy(refine.refine_positions(data, op, op.split(start), max_num_iter=80,
                                                        step=1.0).residuals)
    assert residuals.max() > 2 * residuals[0]  # it did diverge first
    checked = residuals[::refine.CHECK_EVERY]
    assert np.all(np.diff(checked) <= 0), checked  # never worse at a check than at the one before
    assert residuals[-1] < 0.05 * residuals[0]


def test_refinement_copies_nothing_per_iteration(particle, no_copies_per_iteration):
    def run(n):
        op, data = _atom_problem(particle)
        refine.refine_positions(data, op, op.split(np.concatenate([particle[0]] * 3)), max_num_iter=n)

    no_copies_per_iteration(run)


# ----------------------------------------------------------------------------- bad input
_TILT = projector.TiltProjector((4, 4, 4), [0.0, 30.0, 60.0])
_OP = reconstruct.SpaceTimeProjector(_TILT, np.full((3, 2), 0.5))
_ATOMS = refine.AtomProjector(np.stack([np.eye(3)] * 3), np.ones((3, 1)), [np.ones(2)], gpts=(4, 4),
                              sampling=1.0, width=0.5)


@pytest.mark.parametrize("call, name", [
    (lambda: specimens.fept_nanoparticle(-1.0), "radius"),
    (lambda: specimens.fept_nanoparticle(5.0, ordering="B2"), "ordering"),
    (lambda: specimens.diffusion_trajectories(np.zeros((3, 3)), [78, 78, 78], num_steps=1), "num_steps"),
    (lambda: specimens.diffusion_trajectories(np.zeros((3, 2)), [78, 78, 78], num_steps=5), "positions"),
    (lambda: specimens.diffusion_trajectories(np.zeros((3, 3)), [78, 78], num_steps=5), "numbers"),
    (lambda: specimens.diffusion_trajectories(np.zeros((3, 3)), [26, 26, 78], num_steps=5, num_moving=2),
     "num_moving"),
    (lambda: specimens.diffusion_trajectories(np.zeros((3, 3)), [78, 78, 78], num_steps=5, min_duration=0.0),
     "min_duration"),
    (lambda: specimens.diffusion_trajectories(np.zeros((3, 3)), [78, 78, 78], num_steps=5, min_travel=0.0),
     "min_travel"),
    (lambda: specimens.tilt_series(10, tilt_range=90.0), "tilt_range"),
    (lambda: specimens.tilt_series(1), "num_projections"),
    (lambda: specimens.tilt_series(10, order="random"), "order"),
    (lambda: specimens.poisson_noise(np.ones((2, 2)), dose=-1.0, sampling=1.0), "dose"),
    (lambda: specimens.poisson_noise(-np.ones((2, 2)), dose=1.0, sampling=1.0), "projections"),
    (lambda: specimens.atom_volume(np.zeros((2, 3)), [26, 78], shape=(4, 4), sampling=1.0), "gpts"),
    (lambda: specimens.atom_volume(np.zeros((2, 3)), [26, 78], shape=(4, 4, 4), sampling=1.0, width=0.0),
     "width"),
    (lambda: specimens.project_atoms(np.zeros((2, 2, 3)), [26, 78], np.stack([np.eye(3)] * 3), gpts=(4, 4),
                                     sampling=1.0), "positions"),
    (lambda: reconstruct.fbp(np.zeros((2, 4, 4)), _TILT), "projections"),
    (lambda: reconstruct.fbp(np.zeros((3, 4, 4)), _TILT, filter="cosine"), "filter"),
    (lambda: reconstruct.fbp(np.zeros((3, 4, 4)), "tilt"), "operator"),
    (lambda: reconstruct.sirt(np.zeros((3, 4, 4)), _TILT, relaxation=2.0), "relaxation"),
    (lambda: reconstruct.sirt(np.zeros((3, 4, 4)), _TILT, max_num_iter=0), "max_num_iter"),
    (lambda: reconstruct.pgd(np.zeros((3, 4, 4)), _TILT, l1=-1.0), "l1"),
    (lambda: reconstruct.pgd(np.zeros((3, 4, 4)), _TILT, x0=np.zeros((4, 4))), "x0"),
    (lambda: reconstruct.temporal_weights([0.0, 1.0], [0.0, 0.5, 1.0]), "anchor_times"),
    (lambda: reconstruct.temporal_weights([0.0, 1.0], []), "anchor_times"),
    (lambda: reconstruct.temporal_weights([0.0, 1.0], [1.0, 0.0]), "anchor_times"),
    (lambda: reconstruct.temporal_weights([0.0, 1.0], [0.0], kind="cubic"), "kind"),
    (lambda: reconstruct.SpaceTimeProjector(_TILT, np.ones((4, 2))), "weights"),
    (lambda: reconstruct.SpaceTimeProjector("tilt", np.ones((3, 2))), "tilt"),
    (lambda: reconstruct.pgd_4d(np.zeros((3, 4, 4)), _OP, np.zeros((3, 4, 4, 4))), "x0"),
    (lambda: reconstruct.pgd_4d(np.zeros((3, 4, 4)), _OP, np.ones((2, 4, 4, 4)), tv_time=-1.0), "tv_time"),
    (lambda: reconstruct.pgd_4d(np.zeros((3, 4, 4)), _TILT, np.ones((2, 4, 4, 4))), "operator"),
    (lambda: reconstruct.smooth_tv(np.ones((3, 3)), axes=(0,), smoothing=0.0), "smoothing"),
    (lambda: tracing.trace_atoms(np.ones((4, 4)), sampling=1.0), "volume"),
    (lambda: tracing.trace_atoms(np.ones((4, 4, 4)), sampling=1.0, threshold=1.5), "threshold"),
    (lambda: tracing.classify_species(np.array([[1.0, 2.0]])), "intensities"),
    (lambda: tracing.classify_species(np.array([1.0, 2.0]), labels=(1, 2, 3)), "labels"),
    (lambda: tracing.match_atoms(np.zeros((2, 2)), np.zeros((2, 3))), "found"),
    (lambda: tracing.local_moments(np.ones((4, 4, 4)), np.zeros((2, 2)), sampling=1.0), "positions"),
    (lambda: tracing.line_profiles(np.ones((4, 4, 4)), np.zeros((2, 3)), sampling=1.0, half_length=0.0),
     "half_length"),
    (lambda: tracing.local_moments(np.ones((4, 4, 4)), np.zeros((2, 3)), sampling=1.0, radius=-1.0), "radius"),
    (lambda: tracing.match_atoms(np.zeros((2, 3)), np.zeros((2, 3)), max_distance=0.0), "max_distance"),
    (lambda: tracing.track_atoms(np.zeros((2, 3))), "positions"),
    (lambda: refine.AtomProjector(np.stack([np.eye(3)] * 3), np.ones((2, 1)), [np.ones(2)], gpts=(4, 4),
                                  sampling=1.0, width=0.5), "weights"),
    (lambda: refine.AtomProjector(np.stack([np.eye(3)] * 3), np.ones((3, 2)), [np.ones(2)], gpts=(4, 4),
                                  sampling=1.0, width=0.5), "cross_sections"),
    (lambda: refine.AtomProjector(np.stack([np.eye(3)] * 3), np.ones((3, 1)), [np.ones(2)], gpts=(4, 4),
                                  sampling=1.0, width=-0.5), "width"),
    (lambda: refine.refine_positions(np.zeros((3, 4, 4)), "op", [np.zeros((2, 3))]), "operator"),
    (lambda: refine.refine_positions(np.zeros((3, 4, 5)), _ATOMS, [np.zeros((2, 3))]), "projections"),
    (lambda: refine.refine_positions(np.zeros((3, 4, 4)), _ATOMS, [np.zeros((3, 3))]), "positions"),
    (lambda: refine.refine_positions(np.zeros((3, 4, 4)), _ATOMS, [np.zeros((2, 3))], step=1.5), "step"),
])
def test_bad_input_is_refused_naming_the_parameter(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


def test_cross_sections_follow_the_published_haadf_exponent():
    """σ_Z = σ_Pt (Z/78)^1.64, the exponent of Krivanek et al. (2010), with σ_Pt = 0.03."""
    sigma = backend.asnumpy(specimens.cross_sections(np.array([26, 78])))
    assert sigma[1] == pytest.approx(0.03, rel=1e-12)
    assert sigma[0] / sigma[1] == pytest.approx((26 / 78) ** 1.64, rel=1e-12)


def test_fept_particle_stands_on_the_published_l10_lattice():
    """L1₀ FePt, a = 3.85 Å and c = 3.71 Å: the distinct coordinates (z, y, x) are spaced c/2, a/2, a/2."""
    with backend.use_device("cpu"):
        positions = backend.asnumpy(specimens.fept_nanoparticle(8.0)[0])
    for axis, step in ((0, 3.71 / 2), (1, 3.85 / 2), (2, 3.85 / 2)):
        np.testing.assert_allclose(np.diff(np.unique(np.round(positions[:, axis], 6))), step, atol=1e-5,
                                   err_msg=f"axis {axis}")


def test_sirt_first_step_is_linear_in_the_relaxation(device):
    """x₁ = λ C Aᵀ R b from zero (no clipping): λ = 0.5 gives half of λ = 1 (a relaxation ignored gives the same)."""
    tilt = projector.TiltProjector((8, 8, 8), np.linspace(-60, 60, 7))
    b = tilt.forward(backend.asarray(np.random.default_rng(0).random((8, 8, 8))))
    full, half = (backend.asnumpy(reconstruct.sirt(b, tilt, max_num_iter=1, relaxation=r, nonnegative=False).x)
                  for r in (1.0, 0.5))
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-12, atol=1e-15)


def test_pgd_with_l1_meets_the_optimality_conditions():
    """min ½‖Ax - b‖² + λ‖x‖₁ over x >= 0, with g = Aᵀ(Ax - b): g + λ = 0 on the support and g + λ >= 0 off it
    (KKT, independent of the iteration), to 1e-3 λ after 3000 iterations (measured 5e-6 λ on the support); a prox
    not scaled by the step solves another problem (here x = 0, off by more than 10 λ)."""
    rng = np.random.default_rng(0)
    tilt = projector.TiltProjector((6, 6, 6), np.linspace(-60, 60, 9))
    truth = rng.random((6, 6, 6)) * (rng.random((6, 6, 6)) < 0.3)
    b = tilt.forward(backend.asarray(truth))
    weight = 0.05 * float(np.abs(backend.asnumpy(tilt.adjoint(b))).max())
    x = reconstruct.pgd(b, tilt, l1=weight, max_num_iter=3000).x
    g = backend.asnumpy(tilt.adjoint(tilt.forward(x) - b))
    x = backend.asnumpy(x)
    support = x > 1e-8 * x.max()
    assert support.any() and (~support).any()
    assert np.abs(g[support] + weight).max() < 1e-3 * weight
    assert (g[~support] + weight).min() > -1e-3 * weight


def test_pgd_4d_steps_descend_with_a_strong_spatial_tv():
    """Steps of 1/L with L >= the Lipschitz constant of the smooth part (‖S‖² + 12α/ε for the 3D difference
    operator, 4 per axis) make the plain iteration a descent (the descent lemma): the objective never rises with a
    strong spatial TV in its quadratic regime on a checkerboard, the direction where ‖∇‖² is largest."""
    n = 8
    tilt = projector.TiltProjector((n, n, n), np.linspace(-60, 60, 5))
    op = reconstruct.SpaceTimeProjector(tilt, reconstruct.temporal_weights(np.linspace(0, 1, 5), [0.0, 1.0]))
    b = op.forward(backend.asarray(np.ones((2, n, n, n))))
    z, y, x = np.indices((n, n, n))
    start = np.repeat((1 + 0.1 * (-1.0) ** (z + y + x))[None], 2, axis=0)
    alpha, eps = 1e3, 1.0

    def objective(v):
        v = backend.asarray(v)
        residual = backend.asnumpy(op.forward(v) - b)
        return 0.5 * float((residual**2).sum()) + alpha * float(
            reconstruct.smooth_tv(v, axes=(-3, -2, -1), smoothing=eps)[0])

    values = [objective(start)] + [
        objective(backend.asnumpy(reconstruct.pgd_4d(b, op, start, tv_space=alpha, smoothing=eps, max_num_iter=k,
                                                     accelerate=False).x)) for k in (1, 2, 3, 5)]
    assert all(after <= before * (1 + 1e-12) for before, after in zip(values, values[1:]))
    assert values[-1] < 0.01 * values[0]


def test_refinement_residuals_start_at_the_starting_fit():
    """residuals[0] is ‖forward(start) - b‖ / ‖b‖ (the history's first entry, computed another way)."""
    op = refine.AtomProjector(np.eye(3)[None], np.ones((1, 1)), [np.ones(1)], gpts=(16, 16), sampling=0.5, width=0.5)
    truth = np.array([[0.0, 0.3, -0.2]])
    start = truth + [[0.0, 0.4, 0.3]]
    b = backend.asnumpy(op.forward(truth))
    residuals = backend.asnumpy(refine.refine_positions(b, op, [start], max_num_iter=1).residuals)
    expected = np.linalg.norm(backend.asnumpy(op.forward(start)) - b) / np.linalg.norm(b)
    assert residuals[0] == pytest.approx(expected, rel=1e-12)


def test_traced_intensity_is_the_atoms_integral():
    """An isolated Gaussian of amplitude 2 and σ = 0.3 Å sampled at 0.25 Å: its traced intensity is A (2π)^{3/2} σ³
    [unit × Å³] (the Riemann sum of a Gaussian sampled finer than σ is exact far below 1e-4)."""
    s, sigma, amplitude = 0.25, 0.3, 2.0
    c = (np.arange(32) - 16) * s
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    volume = amplitude * np.exp(-(z**2 + y**2 + x**2) / (2 * sigma**2))
    intensity = float(backend.asnumpy(tracing.trace_atoms(volume, sampling=s, radius=2.0).intensities)[0])
    assert intensity == pytest.approx(amplitude * (2 * np.pi) ** 1.5 * sigma**3, rel=1e-4)


def test_local_moments_are_about_the_centroid_and_share_the_tracing_origin():
    """Two equal voxels side by side along x: centroid (0, 0, s/2), widths (0, 0, s/2). On an even-sized volume a
    spike traced at p is measured at p (voxel n//2 is 0 for both), with its whole intensity 3 s³."""
    s = 0.5
    pair = np.zeros((9, 9, 9))
    pair[4, 4, 4] = pair[4, 4, 5] = 1.0
    moments = tracing.local_moments(pair, np.zeros((1, 3)), sampling=s, radius=1.0)
    np.testing.assert_allclose(backend.asnumpy(moments.centroids)[0], [0, 0, s / 2], atol=1e-12)
    np.testing.assert_allclose(backend.asnumpy(moments.widths)[0], [0, 0, s / 2], atol=1e-12)
    spike = np.zeros((16, 16, 16))
    spike[10, 7, 9] = 3.0
    position = backend.asnumpy(tracing.trace_atoms(spike, sampling=s).positions)
    np.testing.assert_allclose(position[0], (np.array([10, 7, 9]) - 8) * s, atol=1e-12)
    measured = tracing.local_moments(spike, position, sampling=s, radius=0.4)
    assert float(backend.asnumpy(measured.intensities)[0]) == pytest.approx(3.0 * s**3, abs=1e-12)
