"""Every random draw takes a seed, and a bad seed is refused naming the parameter (NumPy's own error
for seed=-1 or seed=2.5 names none)."""

import numpy as np
import pytest

from mbook.core import backend, checks, detection
from mbook.cryoem import particles
from mbook.electron import structures
from mbook.inverse import synthetic
from mbook.multimodal import afm, alloys

DRAWS = {
    "detection.poisson_counts": lambda seed: detection.poisson_counts(np.ones((4, 4)), seed=seed),
    "synthetic.weak_phase_object": lambda seed: synthetic.weak_phase_object((16, 16), seed=seed),
    "particles.random_structure": lambda seed: particles.random_structure(5, seed=seed),
    "structures.amorphous": lambda seed: structures.amorphous("C", extent=(5, 5, 5), density=2.0,
                                                              min_distance=1.4, seed=seed),
    "alloys.alloy_nanoparticle": lambda seed: alloys.alloy_nanoparticle(length=3, cutoff=1, seed=seed).counts,
    "alloys.simulate": lambda seed: alloys.simulate(
        alloys.alloy_nanoparticle(length=3, cutoff=1, seed=0), dose=1e6,
        haadf_cross_sections=alloys.haadf_cross_sections(("Au", "Ag")), seed=seed).edx,
    "afm.polymer_blend": lambda seed: afm.polymer_blend(32, extent=320.0, seed=seed).topography,
    "afm.force_curves": lambda seed: afm.force_curves(np.full((2, 2), 1.0), np.full((2, 2), 5.0),
                                                      indentations=np.linspace(0, 2, 5), seed=seed),
}


@pytest.mark.parametrize("bad", [-1, 2.5, "a", True, None])
@pytest.mark.parametrize("name", sorted(DRAWS))
def test_a_bad_seed_is_refused_naming_it(name, bad):
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0"):
        DRAWS[name](bad)


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_a_seed_gives_the_same_numbers_twice(name):
    first, second = DRAWS[name](7), DRAWS[name](7)
    first = first.positions if hasattr(first, "get_positions") else first
    second = second.positions if hasattr(second, "get_positions") else second
    for a, b in zip(first if isinstance(first, tuple) else (first,), second if isinstance(second, tuple) else (second,)):
        np.testing.assert_array_equal(backend.asnumpy(getattr(a, "positions", a)),
                                      backend.asnumpy(getattr(b, "positions", b)))


def test_seed_sequences_and_generators_pass_through():
    sequence, generator = np.random.SeedSequence(3), np.random.default_rng(3)
    assert checks.check_seed(sequence) is sequence and checks.check_seed(generator) is generator
    assert checks.rng(5).integers(1000) == np.random.default_rng(5).integers(1000)
