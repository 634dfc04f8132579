"""Work nobody estimated is refused before it starts: each of these calls hung or exhausted memory once.

Each test also checks the message gives the numbers a user needs to fix the call.
"""

import time

import numpy as np
import pytest
from ase.build import bulk

from mbook.core import backend
from mbook.cryoem import moments
from mbook.electron import phonons
from mbook.light import mie


def refused_quickly(call, error, match):
    start = time.perf_counter()
    with pytest.raises(error, match=match):
        call()
    # Refused from an estimate, not after trying: far below the seconds the work would take.
    assert time.perf_counter() - start < 2.0


def test_a_billion_frozen_phonon_configurations_are_refused_with_their_memory():
    refused_quickly(lambda: phonons.frozen_phonon_configurations(bulk("Si", cubic=True), 0.08, 10**9, seed=0),
                    MemoryError, r"num_configs=1000000000 configurations of 8 atoms need about \d+\.\d GiB")


def test_spherical_harmonics_of_degree_1e5_are_refused_with_their_memory():
    refused_quickly(lambda: moments.spherical_harmonics(10**5, np.array([[0.0, 0.0, 1.0]])),
                    MemoryError, r"needs at least \d+\.\d MiB .* budget is 2048\.0 MiB")


def test_mie_orders_far_past_convergence_are_refused():
    refused_quickly(lambda: mie.coefficients(1.0, 1.1, l_max=10**8), ValueError, r"l_max must be .*<= \d+")


def test_mie_orders_where_the_bessel_functions_underflow_are_refused_not_returned_as_nan():
    with pytest.raises(ValueError, match=r"l_max=160 reaches orders where the Bessel functions .* underflow"):
        mie.coefficients(1.0, 1.1, l_max=160)
    b, c = mie.coefficients(1.0, 1.1, l_max=100)  # still finite: allowed
    assert np.isfinite(b).all() and np.isfinite(c).all()



def test_kam_invariants_of_degree_500_are_refused_with_their_memory():
    from mbook.core import grids
    from mbook.cryoem import kam, particles

    atoms = particles.random_structure(12, seed=0)
    exact = moments.analytic_moments(atoms, grids.make_grid(gpts=(24, 24), sampling=3.0), k_max=1 / 12, l_max=3)
    refused_quickly(lambda: kam.estimate_invariants(exact, radius=20.0, l_max=500),
                    MemoryError, r"needs at least \d+\.\d MiB")


def test_an_mtf_of_16000_squared_pixels_is_refused_with_its_memory():
    from mbook.core import detection

    refused_quickly(lambda: detection.mtf((16000, 16000)), MemoryError, r"needs at least 7812\.5 MiB")


def test_all_pairs_of_a_large_family_count_their_n_squared_result():
    from mbook.cryoem import wemd_family

    # 12000 members: the (n, n) result and its pair indices alone take 2.6 GiB, over a 1 GiB budget.
    coordinates = np.zeros((12000, 2))
    with pytest.raises(MemoryError, match=r"MiB fixed"):
        wemd_family.pairwise(coordinates, _one_dimensional_table(), budget=2**30)


def test_all_pairs_of_a_three_dimensional_family_stay_within_the_budget():
    # k = 3: a query's memory is the tree nodes its hyperplane cuts, which grow with the tree; planned
    # from a fixed guess, the batches took 30 times the smaller budget here.
    import tracemalloc

    from mbook.core import backend
    from mbook.cryoem import wemd_family

    with backend.use_device("cpu"):  # host arrays: tracemalloc sees every batch
        rng = np.random.default_rng(0)
        table = wemd_family.precompute(rng.standard_normal((3, 12, 12, 12)), sampling=2.0)
        z = rng.standard_normal((40, 3))
        fixed = 8 * (2 * 40 * 40 + 3 * 40 * 39 // 2)
        reference = wemd_family.pairwise(z, table)
        for extra in (2**19, 2**21):
            tracemalloc.start()
            try:
                batched = wemd_family.pairwise(z, table, budget=fixed + extra)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak <= fixed + extra
            np.testing.assert_allclose(batched, reference, rtol=1e-12)


def _one_dimensional_table():
    from mbook.cryoem import wemd_family

    basis = np.zeros((2, 8, 8))
    basis[0, 2, 2], basis[1, 5, 5] = 1.0, -1.0
    return wemd_family.precompute(basis)


def test_random_rotations_beyond_the_budget_are_refused_with_their_memory():
    from mbook.geometry import so3

    refused_quickly(lambda: so3.random_rotations(10**11, seed=0), MemoryError, r"needs at least \d+\.\d MiB")


def _peak_bytes(call, error, match):
    """Peak memory [bytes] traced while ``call`` is refused with ``error`` (host arrays: the cpu device)."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(error, match=match):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", ["born", "rytov"])
def test_born_and_rytov_at_2048_squared_are_refused_from_the_shape_before_any_copy(method, monkeypatch):
    from mbook.core import backend
    from mbook.light import scattering

    monkeypatch.setenv("MBOOK_MEMORY_GB", "0.5")
    index = backend.asarray(np.full((2048, 2048), 1.33 + 0j))  # 64 MiB, made before the call
    call = lambda: getattr(scattering, method)(index, wavelength=0.5, sampling=0.1, n_background=1.33)  # noqa: E731
    # 336 bytes per point in 2D: 1344 MiB against 512 MiB, refused before the 64 MiB copies of the index
    peak = _peak_bytes(call, MemoryError, r"n of shape \(2048, 2048\).* 1344\.0 MiB .* budget is 512\.0 MiB")
    assert peak < 16 * 2**20  # the entry's finiteness test (1 byte per point), not a 64 MiB copy


def test_the_born_estimate_bounds_the_measured_peak():
    import tracemalloc

    from mbook.light import scattering

    for shape in [(128, 128), (24, 24, 24)]:
        index = np.full(shape, 1.33) + 0.01 * np.random.default_rng(0).random(shape)
        tracemalloc.start()
        scattering.born(index, wavelength=0.5, sampling=0.1, n_background=1.33)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        estimate = 16 * (5 + 4 * 2 ** len(shape)) * index.size
        assert 0.6 * estimate < peak <= 1.05 * estimate, (shape, peak / index.size)


def test_a_partially_coherent_image_at_4096_squared_is_refused_before_the_pupil_is_built(monkeypatch):
    from mbook.core import backend
    from mbook.light import microscope

    monkeypatch.setenv("MBOOK_MEMORY_GB", "0.5")
    transmission = backend.asarray(np.ones((4096, 4096), complex))  # 256 MiB, made before the call
    call = lambda: microscope.partially_coherent_image(  # noqa: E731
        transmission, wavelength=0.5, sampling=0.1, na=0.8, na_illumination=0.3, defocus=1.0)
    # 128 bytes per pixel while the pupil is built: 2048 MiB against 512 MiB
    peak = _peak_bytes(call, MemoryError, r"transmission of shape \(4096, 4096\).* 2048\.0 MiB .* budget is 512\.0 MiB")
    assert peak < 32 * 2**20  # the entry's finiteness test (1 byte per pixel), not the 256 MiB of a pupil


def test_a_lattice_image_of_wide_columns_on_many_pixels_is_refused_with_its_work():
    from mbook.inverse import synthetic

    # 2000² pixels × 42² neighbouring cells (columns of 8 Å on a 4 Å lattice reach 20 cells): 7.1e9 terms,
    # hours on a CPU core before the limit
    refused_quickly(lambda: synthetic.lattice_image((2000, 2000), 0.5, widths=(8.0,)), ValueError,
                    r"7\.06e\+09 Gaussian terms: 1 image\(s\) × 4000000 pixels .* × 1764 neighbouring cells"
                    r".* limit of 2e\+09")


def test_a_stack_of_lattice_images_over_the_budget_is_refused_before_its_positions_are_built(monkeypatch):
    from mbook.inverse import synthetic

    monkeypatch.setenv("MBOOK_MEMORY_GB", str(8 * 2**20 / 2**30))
    # 5.5 MiB; its copy, the positions and the images: 13.7 MiB. Made on the selected device first: on the
    # stand-in (MBOOK_DEVICE=strict) the entry's copy to the "device" is host memory that the peak would see
    displacement = backend.asarray(np.zeros((4, 2, 300, 300)))
    peak = _peak_bytes(lambda: synthetic.lattice_image((300, 300), 0.5, displacement=displacement),
                       MemoryError, r"needs at least \d+\.\d MiB \(13\.7 MiB fixed .* budget is 8\.0 MiB")
    assert peak < 2**20
