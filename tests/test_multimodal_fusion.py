"""Multimodal fusion: EDX + HAADF per-column composition, and AFM mechanics lifted to the topography grid."""

import numpy as np
import pytest

from mbook.core import backend
from mbook.multimodal import alloys, edx

AU_AG = ("Au", "Ag")


@pytest.fixture(scope="module")
def particle():
    return alloys.alloy_nanoparticle(AU_AG, length=7, cutoff=2, seed=3)


def _data(particle, dose=3e6, seed=1, **kwargs):
    return alloys.simulate(particle, dose=dose, haadf_cross_sections=alloys.haadf_cross_sections(AU_AG, gamma=1.8),
                        seed=seed, **kwargs)


# ----------------------------------------------------------------------------- EDX + HAADF
def test_particle_columns_hold_every_atom_and_integer_counts(particle):
    counts = backend.asnumpy(particle.counts)
    assert counts.sum() == len(particle.atoms)
    assert (counts >= 0).all() and (counts.sum(axis=1) >= 1).all()
    symbols = np.array(particle.atoms.get_chemical_symbols())
    assert counts[:, 0].sum() == (symbols == "Au").sum()
    np.testing.assert_allclose(backend.asnumpy(particle.composition), counts[:, 0] / counts.sum(axis=1))
    # fcc [001]: columns on a square lattice of spacing a/2 (a = 4.08 Å for Au/Ag)
    assert particle.column_area == pytest.approx((4.08 / 2) ** 2, rel=0.01)


def test_core_shell_profile_is_richer_in_a_at_the_centre():
    p = alloys.alloy_nanoparticle(AU_AG, length=9, cutoff=3, spread=0.0, seed=0)
    r = np.hypot(*backend.asnumpy(p.positions).T)
    f = backend.asnumpy(p.composition)
    assert f[r < np.median(r)].mean() > f[r >= np.median(r)].mean() + 0.2


def test_z_exponent_and_yields_follow_their_definitions():
    s_au, s_ag = alloys.haadf_cross_sections(AU_AG, gamma=1.8, reference_cross_section=0.037)
    assert s_au == pytest.approx(0.037)
    assert np.log(s_au / s_ag) / np.log(79 / 47) == pytest.approx(1.8)
    y = backend.asnumpy(alloys.x_ray_yields(AU_AG, cross_sections=(100.0, 50.0), solid_angle=0.7))
    np.testing.assert_allclose(y, np.array([100.0, 50.0]) * 1e-8 * 0.7 / (4 * np.pi))


def test_absorption_escape_fraction_is_the_mean_of_the_exponential():
    n = np.array([1.0, 10.0, 100.0])
    a = backend.asnumpy(alloys.absorption_factors(n, attenuation_lengths=(50.0, 1e9), layer_spacing=4.0))
    x = 4.0 * n / 50.0
    np.testing.assert_allclose(a[:, 0], (1 - np.exp(-x)) / x)
    np.testing.assert_allclose(a[:, 1], 1.0, atol=1e-6)
    assert (np.diff(a[:, 0]) < 0).all()


def test_simulated_counts_have_the_poisson_mean(particle):
    data = [_data(particle, dose=1e7, seed=s) for s in range(40)]
    mean = np.mean([backend.asnumpy(d.edx).sum() for d in data])
    counts = backend.asnumpy(particle.counts)
    yields = backend.asnumpy(alloys.x_ray_yields(AU_AG))
    expected = (1e7 * particle.column_area * counts * yields).sum()
    assert mean == pytest.approx(expected, rel=4 / np.sqrt(40 * expected))


def test_absorption_scales_the_mean_counts(particle):
    counts = backend.asnumpy(particle.counts)
    absorption = alloys.absorption_factors(counts.sum(axis=1), attenuation_lengths=(10.0, 20.0), layer_spacing=4.08)
    absorbed = _data(particle, dose=1e8, absorption=absorption)
    yields = backend.asnumpy(alloys.x_ray_yields(AU_AG))
    expected = (1e8 * particle.column_area * yields * backend.asnumpy(absorption) * counts).sum()
    plain = (1e8 * particle.column_area * yields * counts).sum()
    assert expected < 0.6 * plain
    assert float(absorbed.edx.sum()) == pytest.approx(expected, abs=5 * np.sqrt(expected))


@pytest.mark.parametrize("haadf", [True, False])
def test_objective_gradient_matches_finite_differences(particle, haadf):
    data = _data(particle)
    rng = np.random.default_rng(0)
    f = rng.uniform(0.2, 0.8, particle.counts.shape[0])
    s = np.array(alloys.haadf_cross_sections(AU_AG, gamma=1.7))
    value, grad_f, grad_s = edx.objective(f, s, data, prior=1.5, haadf=haadf)
    grad_f, grad_s = backend.asnumpy(grad_f), backend.asnumpy(grad_s)
    direction = rng.standard_normal(f.shape)
    h = 1e-6
    numeric = (edx.objective(f + h * direction, s, data, prior=1.5, haadf=haadf)[0]
               - edx.objective(f - h * direction, s, data, prior=1.5, haadf=haadf)[0]) / (2 * h)
    assert numeric == pytest.approx(grad_f @ direction, rel=1e-5, abs=1e-6)
    for i in range(2):
        step = np.zeros(2)
        step[i] = 1e-4 * s[i]
        numeric = (edx.objective(f, s + step, data, prior=1.5, haadf=haadf)[0]
                   - edx.objective(f, s - step, data, prior=1.5, haadf=haadf)[0]) / (2 * step[i])
        assert numeric == pytest.approx(grad_s[i], rel=1e-5, abs=1e-6)


def test_joint_map_is_a_stationary_point_of_the_objective(particle):
    data = _data(particle, dose=3e6)
    result = edx.estimate_fused(data, calibration="joint")
    assert result.converged
    _, grad_f, grad_s = edx.objective(result.composition, result.haadf_cross_sections, data)
    f = backend.asnumpy(result.composition)
    interior = (f > 1e-6) & (f < 1 - 1e-6)
    scale = float(backend.asnumpy(data.haadf).max())
    assert np.abs(backend.asnumpy(grad_f)[interior]).max() < 1e-6 * scale
    assert np.abs(backend.asnumpy(grad_s) * np.array(result.haadf_cross_sections)).max() < 1e-6 * scale


def test_fused_estimate_beats_edx_alone_and_finds_gamma(particle):
    data = _data(particle, dose=3e6)
    result = edx.estimate_fused(data)
    assert result.converged
    fused = edx.composition_rmse(result.composition, particle.composition)
    alone = edx.composition_rmse(edx.estimate_edx(data), particle.composition)
    assert fused <= 0.5 * alone
    assert result.gamma == pytest.approx(1.8, abs=0.1)


def test_marginal_calibration_removes_the_joint_maps_bias_in_gamma(particle):
    # Few X-rays per column: the joint MAP overestimates s_A - s_B (incidental parameters).
    gammas = {"marginal": [], "joint": []}
    for seed in range(3):
        data = _data(particle, dose=1e6, seed=seed)
        for calibration in gammas:
            gammas[calibration].append(edx.estimate_fused(data, calibration=calibration).gamma)
    assert abs(np.mean(gammas["marginal"]) - 1.8) < 0.1
    assert np.mean(gammas["joint"]) > np.mean(gammas["marginal"]) + 0.05


def test_edx_alone_with_equal_rates_is_the_count_ratio(particle):
    data = _data(particle, dose=1e8)
    data = data._replace(yields=backend.xp.full(2, float(data.yields[0])))
    counts = backend.asnumpy(data.edx)
    f = backend.asnumpy(edx.estimate_edx(data))
    both = counts.sum(axis=1) > 0
    np.testing.assert_allclose(f[both], counts[both, 0] / counts[both].sum(axis=1), atol=2e-9)


def test_fused_estimate_is_the_same_on_every_device(particle, device, on_cpu):
    data = _data(particle)
    result = edx.estimate_fused(data)
    reference = on_cpu(edx.estimate_fused, data)
    assert backend.get_array_module(result.composition) is backend.xp
    np.testing.assert_allclose(backend.asnumpy(result.composition), backend.asnumpy(reference.composition),
                               atol=1e-9)
    assert result.gamma == pytest.approx(reference.gamma, abs=1e-9)


def test_fused_estimate_copies_nothing_per_iteration(particle, no_copies_per_iteration):
    data = _data(particle)
    no_copies_per_iteration(lambda n: edx.estimate_fused(data, max_num_iter=n, tol=0))


_S = (0.037, 0.016)
_K = lambda p: p.counts.shape[0]  # noqa: E731  (columns of the particle)
EDX_BAD = [
    ("elements", lambda p, d: alloys.alloy_nanoparticle(("Au", "Au"))),
    ("elements", lambda p, d: alloys.alloy_nanoparticle(("Au", "Si"))),
    ("cutoff", lambda p, d: alloys.alloy_nanoparticle(AU_AG, length=6, cutoff=3)),
    ("profile", lambda p, d: alloys.alloy_nanoparticle(AU_AG, profile="random")),
    ("core_fraction", lambda p, d: alloys.alloy_nanoparticle(AU_AG, core_fraction=1.5)),
    ("seed", lambda p, d: alloys.alloy_nanoparticle(AU_AG, seed=-1)),
    ("gamma", lambda p, d: alloys.haadf_cross_sections(AU_AG, gamma=3.0)),
    ("gamma", lambda p, d: alloys.haadf_cross_sections(AU_AG, gamma=0.5)),
    ("reference_element", lambda p, d: alloys.haadf_cross_sections(AU_AG, reference_element="Xx")),
    ("solid_angle", lambda p, d: alloys.x_ray_yields(AU_AG, solid_angle=0.0)),
    ("cross_sections", lambda p, d: alloys.x_ray_yields(("Au", "Al"))),
    ("cross_sections", lambda p, d: alloys.x_ray_yields(AU_AG, cross_sections=(-1.0, 5.0))),
    ("dose", lambda p, d: alloys.simulate(p, dose=-1e6, haadf_cross_sections=_S)),
    ("dose", lambda p, d: alloys.simulate(p, dose=0.0, haadf_cross_sections=_S)),
    ("haadf_cross_sections", lambda p, d: alloys.simulate(p, dose=1e6, haadf_cross_sections=(0.0, 0.1))),
    ("model_error", lambda p, d: alloys.simulate(p, dose=1e6, haadf_cross_sections=_S, model_error=1.0)),
    ("absorption", lambda p, d: alloys.simulate(p, dose=1e6, haadf_cross_sections=_S, absorption=np.ones((3, 2)))),
    ("absorption", lambda p, d: alloys.simulate(p, dose=1e6, haadf_cross_sections=_S,
                                             absorption=np.full((_K(p), 2), 1.5))),
    ("particle", lambda p, d: alloys.simulate("particle", dose=1e6, haadf_cross_sections=_S)),
    ("attenuation_lengths", lambda p, d: alloys.absorption_factors([1.0], attenuation_lengths=(0.0, 1.0),
                                                                layer_spacing=4.0)),
    ("atoms_per_column", lambda p, d: alloys.absorption_factors([0.0], attenuation_lengths=(1.0, 1.0),
                                                             layer_spacing=4.0)),
    ("data.edx", lambda p, d: edx.estimate_edx(d._replace(edx=-d.edx))),
    ("data.haadf", lambda p, d: edx.estimate_fused(d._replace(haadf=d.haadf[:-1]))),
    ("data.haadf", lambda p, d: edx.estimate_fused(d._replace(haadf=-d.haadf))),
    ("data.atoms_per_column", lambda p, d: edx.estimate_fused(d._replace(atoms_per_column=d.atoms_per_column[:3]))),
    ("data", lambda p, d: edx.estimate_fused({"edx": d.edx})),
    ("model_error", lambda p, d: edx.estimate_fused(d, model_error=-0.1)),
    ("calibration", lambda p, d: edx.estimate_fused(d, calibration="best")),
    ("prior", lambda p, d: edx.estimate_edx(d, prior=0.5)),
    ("max_num_iter", lambda p, d: edx.estimate_fused(d, max_num_iter=0)),
    ("tol", lambda p, d: edx.estimate_fused(d, tol=-1.0)),
    ("composition", lambda p, d: edx.objective(np.full(_K(p) + 1, 0.5), _S, d)),
    ("composition", lambda p, d: edx.objective(np.zeros(_K(p)), _S, d)),
    ("haadf_cross_sections", lambda p, d: edx.objective(np.full(_K(p), 0.5), (0.1, -0.1), d)),
    ("estimate", lambda p, d: edx.composition_rmse(np.ones(3), np.ones(4))),
]


@pytest.mark.parametrize("name, call", EDX_BAD, ids=[f"{i}-{name}" for i, (name, _) in enumerate(EDX_BAD)])
def test_edx_bad_input_is_refused_naming_the_parameter(particle, name, call):
    with pytest.raises((ValueError, TypeError), match=name):
        call(particle, _data(particle))
