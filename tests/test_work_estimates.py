"""Work nobody estimated is refused before it starts: each of these calls hung or exhausted memory once.

Each test also checks the message gives the numbers a user needs to fix the call.
"""

import time

import numpy as np
import pytest
from ase.build import bulk

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


def _one_dimensional_table():
    from mbook.cryoem import wemd_family

    basis = np.zeros((2, 8, 8))
    basis[0, 2, 2], basis[1, 5, 5] = 1.0, -1.0
    return wemd_family.precompute(basis)


def test_random_rotations_beyond_the_budget_are_refused_with_their_memory():
    from mbook.geometry import so3

    refused_quickly(lambda: so3.random_rotations(10**11, seed=0), MemoryError, r"needs at least \d+\.\d MiB")
