"""The implicit whole-domain solver: adjoint, residual, convergence orders against multislice, warm start."""

import math

import numpy as np
import pytest
from ase import Atoms
from scipy.special import erf

from mbook.core import backend, grids, propagation
from mbook.electron import implicit, multislice, phonons, physics

ENERGY = 200e3
SCHEMES = tuple(implicit.SCHEMES)


def smooth_potential(atoms, *, gpts, n_slices, width=0.6, depth=3.0, strength=1000.0):
    """Slices [V·Å] of Gaussian 'atoms' (lateral rms ``width``, rms ``depth`` along z [Å]), integrated exactly
    over each slice: a potential smooth in z, so that the orders in Δz are those of the schemes."""
    lx, ly, lz = np.diag(np.asarray(atoms.cell))
    x = np.arange(gpts) * lx / gpts
    edges = np.linspace(0.0, lz, n_slices + 1)
    v = np.zeros((n_slices, gpts, gpts))
    for px, py, pz in atoms.positions:
        dx = (x - px + lx / 2) % lx - lx / 2
        dy = (x - py + ly / 2) % ly - ly / 2
        lateral = np.exp(-(dx[:, None] ** 2 + dy[None, :] ** 2) / (2 * width**2))
        along = 0.5 * (erf((edges[1:] - pz) / (math.sqrt(2) * depth)) - erf((edges[:-1] - pz) / (math.sqrt(2) * depth)))
        v += strength * along[:, None, None] * lateral
    return v


def specimen(seed=1, *, extent=8.0, thickness=40.0, num_atoms=12):
    rng = np.random.default_rng(seed)
    cell = (extent, extent, thickness)
    return Atoms("C" * num_atoms, positions=rng.uniform(0, 1, (num_atoms, 3)) * cell, cell=cell, pbc=True)


def random_volume(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("pair", [("forward", "adjoint"), ("precondition", "precondition_adjoint")])
def test_adjoint(scheme, antialias, pair, device, rng):
    """<A x, y> = <x, A* y> and <M⁻¹ x, y> = <x, M⁻* y>, with unequal slices and a batch axis."""
    grid = grids.make_grid(gpts=(12, 16), sampling=0.3)
    ops = implicit.operators(50 * rng.standard_normal((4, 12, 16)), grid=grid, energy=ENERGY,
                             slice_thickness=[1.0, 2.0, 0.5, 1.5], scheme=scheme, batch_shape=(3,),
                             dtype=np.complex128, antialias=antialias)
    x, y = random_volume(rng, (4, 3, 12, 16)), random_volume(rng, (4, 3, 12, 16))
    forward, adjoint = (getattr(ops, name) for name in pair)
    lhs = np.vdot(backend.asnumpy(forward(x)), y)
    rhs = np.vdot(x, backend.asnumpy(adjoint(y)))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_preconditioner_inverts_a_uniform_potential(scheme, rng):
    """In a potential uniform in each slice, A is M: the preconditioner solves the system exactly."""
    grid = grids.make_grid(gpts=(16, 16), sampling=0.3)
    potential = np.ones((5, 16, 16)) * rng.uniform(0, 100, (5, 1, 1))
    ops = implicit.operators(potential, grid=grid, energy=ENERGY, slice_thickness=2.0, scheme=scheme,
                             dtype=np.complex128)
    x = backend.asnumpy(ops.forward(random_volume(rng, (5, 16, 16))))  # band-limited volumes: A's range
    np.testing.assert_allclose(backend.asnumpy(ops.forward(ops.precondition(x))), x, atol=1e-12)


@pytest.mark.parametrize("name", ["precondition", "precondition_adjoint"])
def test_sweeps_agree_across_devices(name, device, on_cpu, rng):
    """The CPU's loop over slices and the device's recursive doubling give the same sweep (200 slices)."""
    grid = grids.make_grid(gpts=(8, 8), sampling=0.2)
    kwargs = dict(grid=grid, energy=ENERGY, slice_thickness=0.5, dtype=np.complex64)
    potential = rng.uniform(0, 50, (200, 8, 8))
    r = random_volume(rng, (200, 8, 8)).astype(np.complex64)
    result = getattr(implicit.operators(potential, **kwargs), name)(r)
    reference = on_cpu(lambda: getattr(implicit.operators(potential, **kwargs), name)(r))
    expected = backend.asnumpy(reference)
    assert np.abs(backend.asnumpy(result) - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("method", implicit.METHODS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_residual_below_tolerance(method, scheme):
    atoms = specimen()
    potential = smooth_potential(atoms, gpts=24, n_slices=10)
    grid = grids.make_grid(gpts=(24, 24), sampling=8.0 / 24)
    kwargs = dict(grid=grid, energy=ENERGY, slice_thickness=4.0, scheme=scheme)
    incident = np.ones((24, 24), np.complex128)
    result = implicit.solve(incident, potential, **kwargs, method=method, tol=1e-9, max_num_iter=300,
                            check_every=2)
    ops = implicit.operators(potential, **kwargs, dtype=np.complex128)
    b = backend.asnumpy(ops.right_hand_side(incident))
    r = b - backend.asnumpy(ops.forward(result.waves))
    assert result.converged and result.residual <= 1e-9
    assert np.linalg.norm(r) <= 1e-9 * np.linalg.norm(b)


def test_out_of_reach_tolerance_stays_finite():
    """complex64 cannot reach 1e-12: the iteration runs to its limit without dividing rounding noise by itself."""
    potential = smooth_potential(specimen(thickness=24.0, num_atoms=10), gpts=16, n_slices=12)
    grid = grids.make_grid(gpts=(16, 16), sampling=0.5)
    result = implicit.solve(np.ones((16, 16), np.complex64), potential, grid=grid, energy=ENERGY,
                            slice_thickness=2.0, tol=1e-12, max_num_iter=100, check_every=5)
    assert not result.converged and result.iterations == 100
    assert np.all(np.isfinite(backend.asnumpy(result.waves))) and result.residual < 1e-5


def test_batch_equals_one_by_one(rng):
    """Probes solved together, or in memory batches of one, equal the probes solved alone."""
    atoms = specimen(thickness=12.0, num_atoms=5)
    potential = smooth_potential(atoms, gpts=16, n_slices=4)
    grid = grids.make_grid(gpts=(16, 16), sampling=0.5)
    waves = random_volume(rng, (3, 16, 16))
    kwargs = dict(potential=potential, grid=grid, energy=ENERGY, slice_thickness=3.0, tol=1e-10, check_every=1)
    together = backend.asnumpy(implicit.solve(waves, **kwargs).exit_wave)
    volume = 4 * 16 * 16 * 16  # bytes of one wave's volume, complex128
    budget = (implicit.SYSTEM_VOLUMES + implicit.VOLUMES_IN_USE) * volume  # room for one wave at a time
    batched = backend.asnumpy(implicit.solve(waves, **kwargs, budget=budget).exit_wave)
    alone = np.stack([backend.asnumpy(implicit.solve(w, **kwargs).exit_wave) for w in waves])
    np.testing.assert_allclose(together, alone, atol=1e-8)
    np.testing.assert_allclose(batched, alone, atol=1e-8)


@pytest.mark.parametrize("num_waves", [1, 3])
def test_memory_estimate_holds(num_waves, rng):
    """The peak memory of a solve (NumPy allocations, traced) stays within what solve plans for."""
    import tracemalloc

    potential = smooth_potential(specimen(thickness=16.0, num_atoms=6), gpts=32, n_slices=16)
    grid = grids.make_grid(gpts=(32, 32), sampling=0.25)
    waves = np.ones((num_waves, 32, 32), np.complex64)
    volume = 16 * 32 * 32 * 8  # bytes of one wave's volume, complex64
    tracemalloc.start()
    implicit.solve(waves, potential, grid=grid, energy=ENERGY, slice_thickness=1.0, tol=1e-5)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= (implicit.SYSTEM_VOLUMES + num_waves * implicit.VOLUMES_IN_USE) * volume


def _relative_errors(scheme, counts, reference, potential, grid, thickness):
    errors = []
    fine = len(potential)
    for n in counts:
        coarse = potential.reshape(n, fine // n, *potential.shape[1:]).sum(axis=1)  # the same V, thicker slices
        result = implicit.solve(np.ones(grid.gpts, np.complex128), coarse, grid=grid, energy=ENERGY,
                                slice_thickness=thickness / n, scheme=scheme, tol=1e-10, check_every=1)
        psi = backend.asnumpy(result.exit_wave)
        errors.append(np.linalg.norm(psi - reference) / np.linalg.norm(reference))
    return np.array(errors)


@pytest.fixture(scope="module")
def fine_multislice():
    """Exit wave of a multislice with 256 slices of 0.16 Å, moved back by half a slice: multislice's
    product P t P t ... is Strang splitting shifted by half a slice, so this is second-order accurate."""
    atoms = specimen()
    grid = grids.make_grid(gpts=(32, 32), sampling=0.25)
    thickness, fine = 40.0, 256
    potential = smooth_potential(atoms, gpts=32, n_slices=fine)

    def exit_wave(n):
        with backend.use_device("cpu"):
            coarse = potential.reshape(n, fine // n, 32, 32).sum(axis=1)
            psi = multislice.propagate_slices(np.ones((32, 32)), coarse, grid=grid, energy=ENERGY,
                                              slice_thickness=thickness / n)
            psi = propagation.propagate(psi, -thickness / n / 2, wavelength=physics.wavelength(ENERGY),
                                        sampling=0.25, paraxial=True)
        return backend.asnumpy(psi).astype(np.complex128)

    psi = exit_wave(fine)
    # the reference's own error: second order, so about a third of its distance to half as many slices
    own_error = np.linalg.norm(exit_wave(fine // 2) - psi) / np.linalg.norm(psi) / 3
    return psi, potential, grid, thickness, own_error


@pytest.mark.parametrize("scheme, order", [("backward-euler", 1.0), ("crank-nicolson", 2.0)])
def test_order_in_slice_thickness(scheme, order, fine_multislice):
    reference, potential, grid, thickness, own_error = fine_multislice
    counts = np.array([16, 32, 64])  # Δz = 2.5, 1.25, 0.625 Å
    errors = _relative_errors(scheme, counts, reference, potential, grid, thickness)
    measured = np.polyfit(np.log(thickness / counts), np.log(errors), 1)[0]  # error ~ Δz^order
    assert abs(measured - order) <= 0.15, f"{scheme}: errors {errors}, measured order {measured:.2f}"
    assert errors[-1] > 10 * own_error, f"errors {errors} too close to the reference's own, {own_error:.1e}"


def test_warm_start_takes_fewer_iterations():
    """Successive frozen-phonon configurations: the previous solution is a better start than free space."""
    atoms = specimen(thickness=24.0, num_atoms=10)
    configurations = phonons.frozen_phonon_configurations(atoms, 0.1, 3, seed=2)
    grid = grids.make_grid(gpts=(24, 24), sampling=8.0 / 24)
    kwargs = dict(grid=grid, energy=ENERGY, slice_thickness=2.0, tol=1e-7, check_every=1)
    cold, warm, previous = [], [], None
    for config in configurations:
        potential = smooth_potential(config, gpts=24, n_slices=12, width=0.4, depth=1.0, strength=2500.0)
        result = implicit.solve(np.ones((24, 24)), potential, **kwargs)
        cold.append(result.iterations)
        if previous is not None:
            warm.append(implicit.solve(np.ones((24, 24)), potential, x0=previous, **kwargs).iterations)
        previous = result.waves
    assert max(warm) < min(cold[1:]), f"cold {cold}, warm {warm}"


def test_devices_agree(device, on_cpu):
    atoms = specimen(thickness=16.0, num_atoms=6)
    potential = smooth_potential(atoms, gpts=16, n_slices=8)
    grid = grids.make_grid(gpts=(16, 16), sampling=0.5)
    kwargs = dict(grid=grid, energy=ENERGY, slice_thickness=2.0, tol=1e-6, check_every=2)
    result = implicit.solve(np.ones((16, 16), np.complex64), potential, **kwargs)
    reference = on_cpu(implicit.solve, np.ones((16, 16), np.complex64), potential, **kwargs)
    assert backend.get_array_module(result.waves) is backend.xp
    assert backend.get_array_module(result.residuals) is backend.xp
    assert isinstance(result.iterations, int) and isinstance(result.residual, float)
    assert result.iterations == reference.iterations
    np.testing.assert_allclose(backend.asnumpy(result.waves), backend.asnumpy(reference.waves), atol=1e-5)


def _small_problem():
    potential = smooth_potential(specimen(thickness=12.0, num_atoms=5), gpts=16, n_slices=6)
    return potential, grids.make_grid(gpts=(16, 16), sampling=0.5)


@pytest.mark.parametrize("method", implicit.METHODS)
def test_no_copies_per_iteration(method, no_copies_per_iteration):
    potential, grid = _small_problem()

    def run(n):  # tol out of reach and no check before the end: the loop alone
        return implicit.solve(np.ones((16, 16)), potential, grid=grid, energy=ENERGY, slice_thickness=2.0,
                              method=method, tol=1e-300, max_num_iter=n, check_every=100)

    no_copies_per_iteration(run)


def test_one_copy_per_check(host_copies):
    potential, grid = _small_problem()
    few, many = (host_copies(lambda n=n: implicit.solve(np.ones((16, 16)), potential, grid=grid, energy=ENERGY,
                                                         slice_thickness=2.0, tol=1e-300, max_num_iter=n,
                                                         check_every=10)) for n in (10, 30))
    assert many - few == 2  # checks at 20 and 30


def _bad_inputs():
    potential, grid = _small_problem()
    ok = dict(grid=grid, energy=ENERGY, slice_thickness=2.0)
    incident = np.ones((16, 16))

    def solve(waves=incident, potential=potential, **kw):
        return implicit.solve(waves, potential, **{**ok, **kw})

    def ops(potential=potential, **kw):
        return implicit.operators(potential, **{**ok, **kw})

    return [
        (solve, {"tol": 0}, "tol"), (solve, {"tol": -1e-3}, "tol"), (solve, {"tol": float("nan")}, "tol"),
        (solve, {"max_num_iter": 0}, "max_num_iter"), (solve, {"max_num_iter": 2.5}, "max_num_iter"),
        (solve, {"check_every": 0}, "check_every"), (solve, {"scheme": "rk4"}, "scheme"),
        (solve, {"method": "gmres"}, "method"), (solve, {"x0": np.ones((5, 16, 16))}, "x0"),
        (solve, {"potential": potential[0]}, "potential"), (solve, {"waves": np.ones((16, 8))}, "waves"),
        (solve, {"slice_thickness": -1.0}, "slice_thickness"),
        (solve, {"slice_thickness": [1.0, 2.0]}, "slice_thickness"),
        (solve, {"energy": -1.0}, "energy"), (solve, {"antialias": "yes"}, "antialias"),
        (solve, {"grid": (16, 16)}, "grid"), (solve, {"waves": None}, "waves"),
        (ops, {"energy": 0.0}, "energy"), (ops, {"slice_thickness": 0.0}, "slice_thickness"),
        (ops, {"slice_thickness": [1.0, 2.0]}, "slice_thickness"), (ops, {"antialias": 1}, "antialias"),
        (ops, {"dtype": np.float32}, "dtype"), (ops, {"batch_shape": [2]}, "batch_shape"),
        (ops, {"batch_shape": (0,)}, "batch_shape"), (ops, {"scheme": "midpoint"}, "scheme"),
        (ops, {"potential": np.ones((16, 16))}, "potential"),
        (ops, {"grid": grids.make_grid(gpts=8, sampling=1.0, ndim=2)}, "grid"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_inputs())))
def test_bad_input(index):
    call, kwargs, name = _bad_inputs()[index]
    with pytest.raises((ValueError, TypeError), match=name):
        call(**kwargs)


def test_over_budget_refused():
    potential, grid = _small_problem()
    with pytest.raises(MemoryError, match="MiB"):
        implicit.solve(np.ones((16, 16)), potential, grid=grid, energy=ENERGY, slice_thickness=2.0, budget=2**16)


@pytest.mark.parametrize("antialias", [False, True])
def test_crank_nicolson_keeps_the_norm_and_backward_euler_does_not(device, antialias):
    """Crank-Nicolson's step (I + iτD/2)⁻¹(I - iτD/2) is unitary (D Hermitian; the aperture commutes with it):
    every slice's wave keeps the incident norm, to the solver's tolerance; backward Euler damps it (0.79 after
    12 slices without the aperture, 0.993 with it)."""
    rng = np.random.default_rng(0)
    grid = grids.make_grid(gpts=(24, 24), sampling=0.3)
    potential = 200 * rng.random((12, 24, 24))
    wave = rng.standard_normal((24, 24)) + 1j * rng.standard_normal((24, 24))
    norms = {}
    for scheme in ("crank-nicolson", "backward-euler"):
        result = implicit.solve(wave, potential, grid=grid, energy=200e3, slice_thickness=2.0, scheme=scheme,
                                antialias=antialias, tol=1e-12, max_num_iter=2000, check_every=1)
        assert result.converged
        norms[scheme] = np.linalg.norm(backend.asnumpy(result.waves).reshape(12, -1), axis=1)
    cn = norms["crank-nicolson"]
    assert cn.min() / cn.max() > 1 - 1e-9
    assert norms["backward-euler"][-1] / norms["backward-euler"][0] < 0.999
