"""Every public function refuses every bad value of every parameter with a clear error, in time.

The table (``tests/bad_input_table.py``) holds one valid call per public function and the bad values each
parameter must refuse. Three tests:

- each bad value -> ValueError / TypeError / MemoryError whose message names the parameter, within 10 s;
- each valid call succeeds (so the bad calls fail for the bad value, not for the rest of the call);
- completeness: every public function of every ``mbook`` module is in the table, or in
  ``NOT_YET_IN_THE_TABLE`` below (the debt, listed by name). New public code fails here until entered.
"""

import importlib
import inspect
import pathlib
import pkgutil
import sys

import pytest

import mbook

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # the table is data beside this file (importlib mode)
from bad_input_table import TABLE, public_functions, run_bad_call  # noqa: E402

# The debt: public functions not yet in the table, by name (packages whose rows are still to be written).
# Shrink this set as rows are written; a public function added anywhere fails the completeness test until
# it has a row (or, in a package listed here, is added here by name).
NOT_YET_IN_THE_TABLE = {
    # cryoem.heterogeneity
    "cryoem.heterogeneity.canonical_correlations", "cryoem.heterogeneity.coefficient_volume",
    "cryoem.heterogeneity.conformation", "cryoem.heterogeneity.conformations",
    "cryoem.heterogeneity.consensus", "cryoem.heterogeneity.family_volumes",
    "cryoem.heterogeneity.hinged_particle", "cryoem.heterogeneity.image_statistics",
    "cryoem.heterogeneity.linear_alignment", "cryoem.heterogeneity.neighbourhood_preservation",
    "cryoem.heterogeneity.per_conformation_error", "cryoem.heterogeneity.ppca",
    "cryoem.heterogeneity.pseudo_atom_basis", "cryoem.heterogeneity.rank_correlation",
    # cryoem.kam
    "cryoem.kam.estimate_invariants", "cryoem.kam.invariants_on_shells", "cryoem.kam.radial_nodes",
    "cryoem.kam.reconstruct", "cryoem.kam.volume_from_coefficients",
    # cryoem.micrographs
    "cryoem.micrographs.add_noise", "cryoem.micrographs.check_parameters", "cryoem.micrographs.check_snr",
    "cryoem.micrographs.ctf", "cryoem.micrographs.ctf_profile", "cryoem.micrographs.draw_parameters",
    "cryoem.micrographs.form_images", "cryoem.micrographs.form_images_adjoint",
    "cryoem.micrographs.noise_sigma", "cryoem.micrographs.stream_images",
    # cryoem.moments
    "cryoem.moments.analytic_moments", "cryoem.moments.check_frequencies", "cryoem.moments.covariance",
    "cryoem.moments.default_l_max", "cryoem.moments.disk_frequencies", "cryoem.moments.empirical_moments",
    "cryoem.moments.identify", "cryoem.moments.image_transform", "cryoem.moments.invariants",
    "cryoem.moments.relative_difference", "cryoem.moments.sh_coefficients",
    "cryoem.moments.spherical_harmonics",
    # cryoem.particles
    "cryoem.particles.check_atoms", "cryoem.particles.check_grid", "cryoem.particles.concatenate_atoms",
    "cryoem.particles.gaussian_volume", "cryoem.particles.make_atoms", "cryoem.particles.project_atoms",
    "cryoem.particles.random_domains", "cryoem.particles.random_structure", "cryoem.particles.transform_atoms",
    # cryoem.volumes
    "cryoem.volumes.fourier_shell_correlation", "cryoem.volumes.lowpass", "cryoem.volumes.read_mrc",
    "cryoem.volumes.relative_error", "cryoem.volumes.resolution", "cryoem.volumes.write_mrc",
    # cryoem.voxels
    "cryoem.voxels.backproject", "cryoem.voxels.check_volume", "cryoem.voxels.project_volume",
    # cryoem.wasserstein
    "cryoem.wasserstein.check_density", "cryoem.wasserstein.diffusion_map",
    "cryoem.wasserstein.embedding_size", "cryoem.wasserstein.exact_emd", "cryoem.wasserstein.levels",
    "cryoem.wasserstein.pairwise_l1", "cryoem.wasserstein.pairwise_wemd",
    "cryoem.wasserstein.wavelet_embedding", "cryoem.wasserstein.wavelet_embedding_adjoint",
    "cryoem.wasserstein.wemd",
    # cryoem.wemd_family
    "cryoem.wemd_family.distances", "cryoem.wemd_family.linear_family", "cryoem.wemd_family.pairwise",
    "cryoem.wemd_family.precompute",
    # cryoem.white_noise
    "cryoem.white_noise.standard_normal", "cryoem.white_noise.uniforms_per_image",
    # electron.implicit
    "electron.implicit.operators", "electron.implicit.solve",
    # electron.lma
    "electron.lma.affected", "electron.lma.basis_function", "electron.lma.build_basis",
    "electron.lma.check_lattice", "electron.lma.probe_diameter", "electron.lma.scan",
    "electron.lma.update_basis",
    # electron.multislice
    "electron.multislice.antialias_aperture", "electron.multislice.check_thicknesses",
    "electron.multislice.exit_wave", "electron.multislice.iterate_slices", "electron.multislice.max_angle",
    "electron.multislice.prepare", "electron.multislice.propagate_slices",
    "electron.multislice.slice_propagator", "electron.multislice.slice_propagators",
    "electron.multislice.thickness_series", "electron.multislice.transmission_function",
    "electron.multislice.transmission_slices", "electron.multislice.weak_phase_exit_wave",
    # electron.peaks
    "electron.peaks.find_peaks", "electron.peaks.match_positions", "electron.peaks.profile_minima",
    # electron.phonons
    "electron.phonons.displace_atoms", "electron.phonons.frozen_phonon_configurations",
    # electron.physics
    "electron.physics.check_energy", "electron.physics.interaction_parameter",
    "electron.physics.relativistic_mass_ratio", "electron.physics.scattering_angle",
    "electron.physics.wavelength",
    # electron.potentials
    "electron.potentials.check_atoms", "electron.potentials.potential_grid",
    "electron.potentials.projected_potential", "electron.potentials.slice_thicknesses",
    # electron.prism
    "electron.prism.beam_indices", "electron.prism.build_smatrix", "electron.prism.check_interpolation",
    "electron.prism.check_positions", "electron.prism.scan", "electron.prism.smatrix_bytes",
    # electron.scattering_factors
    "electron.scattering_factors.check_element", "electron.scattering_factors.check_parametrization",
    "electron.scattering_factors.element_symbol", "electron.scattering_factors.scattering_factor",
    "electron.scattering_factors.scattering_factor_of_k2", "electron.scattering_factors.table_metadata",
    # electron.stem
    "electron.stem.cpu_batch", "electron.stem.detector_masks", "electron.stem.frozen_phonon_scan",
    "electron.stem.nyquist_sampling", "electron.stem.plan_scan", "electron.stem.scan",
    "electron.stem.scan_positions", "electron.stem.source_size_blur", "electron.stem.standard_detectors",
    "electron.stem.virtual_image",
    # electron.structures
    "electron.structures.amorphous", "electron.structures.column_positions", "electron.structures.graphene",
    "electron.structures.isolated_atom", "electron.structures.silicon_110", "electron.structures.srtio3",
    # electron.waves
    "electron.waves.aberration_phase", "electron.waves.aperture", "electron.waves.check_aberrations",
    "electron.waves.contrast_transfer_function", "electron.waves.ctf_zeros", "electron.waves.image_intensity",
    "electron.waves.lens_transfer", "electron.waves.place_probes", "electron.waves.plane_wave",
    "electron.waves.probe", "electron.waves.probe_spectrum", "electron.waves.spatial_envelope",
    "electron.waves.temporal_envelope",
    # geometry.lowrank
    "geometry.lowrank.curvature_corrected", "geometry.lowrank.intrinsic_error",
    "geometry.lowrank.intrinsic_lowrank", "geometry.lowrank.tangent_pca",
    # geometry.means
    "geometry.means.check_cloud", "geometry.means.check_manifold", "geometry.means.frechet_mean",
    "geometry.means.gradient",
    # geometry.so3
    "geometry.so3.axis_rotation", "geometry.so3.axis_rotations", "geometry.so3.check_rotations",
    "geometry.so3.distance", "geometry.so3.exp", "geometry.so3.from_coordinates",
    "geometry.so3.jacobi_operator", "geometry.so3.log", "geometry.so3.quaternions_to_matrices",
    "geometry.so3.random_near", "geometry.so3.random_rotations", "geometry.so3.rotation_angles",
    "geometry.so3.to_coordinates", "geometry.so3.transport",
    # geometry.spd
    "geometry.spd.check_points", "geometry.spd.distance", "geometry.spd.exp", "geometry.spd.from_coordinates",
    "geometry.spd.jacobi_operator", "geometry.spd.log", "geometry.spd.random_near",
    "geometry.spd.to_coordinates", "geometry.spd.transport",
    # geometry.sphere
    "geometry.sphere.check_points", "geometry.sphere.check_tangent", "geometry.sphere.distance",
    "geometry.sphere.exp", "geometry.sphere.from_coordinates", "geometry.sphere.jacobi_operator",
    "geometry.sphere.log", "geometry.sphere.random_points", "geometry.sphere.to_coordinates",
    "geometry.sphere.transport",
    # geometry.tracking
    "geometry.tracking.blob_sample", "geometry.tracking.nominal_rotations", "geometry.tracking.pose_errors",
    "geometry.tracking.pose_jacobian", "geometry.tracking.reconstruct", "geometry.tracking.record_frames",
    "geometry.tracking.refine_poses", "geometry.tracking.track", "geometry.tracking.tumbling_rotations",
    # learning.implicit_bias
    "learning.implicit_bias.lasso", "learning.implicit_bias.loss_and_gradient",
    "learning.implicit_bias.min_norm_interpolant", "learning.implicit_bias.model_weights",
    "learning.implicit_bias.relative_error", "learning.implicit_bias.relative_errors",
    "learning.implicit_bias.sparse_regression", "learning.implicit_bias.stable_learning_rate",
    "learning.implicit_bias.train",
    # learning.unrolled
    "learning.unrolled.data_term", "learning.unrolled.init_parameters",
    "learning.unrolled.intersection_over_union", "learning.unrolled.loss_and_gradient",
    "learning.unrolled.pdhg_segment", "learning.unrolled.segment", "learning.unrolled.train",
    # light.cbs
    "light.cbs.boundary_profile", "light.cbs.solve",
    # light.epry
    "light.epry.align", "light.epry.amplitude_loss", "light.epry.complex_error", "light.epry.reconstruct",
    # light.fourier_ptychography
    "light.fourier_ptychography.camera_fields", "light.fourier_ptychography.camera_fields_adjoint",
    "light.fourier_ptychography.check_spectrum", "light.fourier_ptychography.effective_pupil",
    "light.fourier_ptychography.images", "light.fourier_ptychography.images_thick",
    "light.fourier_ptychography.led_array", "light.fourier_ptychography.make_setup",
    "light.fourier_ptychography.pupil", "light.fourier_ptychography.select_leds",
    "light.fourier_ptychography.vignetting", "light.fourier_ptychography.vignetting_operator",
    "light.fourier_ptychography.window_indices",
    # light.microscope
    "light.microscope.beam_radius", "light.microscope.gaussian_beam", "light.microscope.gaussian_beam_radius",
    "light.microscope.partially_coherent_image", "light.microscope.pupil", "light.microscope.rayleigh_range",
    "light.microscope.source_points", "light.microscope.zernike",
    # light.mie
    "light.mie.check_index_value", "light.mie.coefficients", "light.mie.cylinder_field",
    "light.mie.cylinder_index", "light.mie.near_mask", "light.mie.scattering_efficiency",
    "light.mie.sphere_field",
    # light.phantoms
    "light.phantoms.bar_contrast", "light.phantoms.cells", "light.phantoms.resolution_target",
    # light.scattering
    "light.scattering.born", "light.scattering.born_scattered_field",
    "light.scattering.born_scattered_field_adjoint", "light.scattering.bpm", "light.scattering.bpm_adjoint",
    "light.scattering.check_index", "light.scattering.plane_wave", "light.scattering.rytov",
    "light.scattering.scattering_potential",
    # multimodal.afm
    "multimodal.afm.fit_dmt", "multimodal.afm.force_curves", "multimodal.afm.polymer_blend",
    # multimodal.alloys
    "multimodal.alloys.absorption_factors", "multimodal.alloys.alloy_nanoparticle",
    "multimodal.alloys.check_data", "multimodal.alloys.haadf_cross_sections", "multimodal.alloys.simulate",
    "multimodal.alloys.x_ray_yields",
    # multimodal.drift
    "multimodal.drift.drifted_positions", "multimodal.drift.rms_error", "multimodal.drift.scan_times",
    # multimodal.edx
    "multimodal.edx.composition_rmse", "multimodal.edx.estimate_edx", "multimodal.edx.estimate_fused",
    "multimodal.edx.objective",
    # multimodal.positions
    "multimodal.positions.corrected_positions", "multimodal.positions.cross_section_map",
    "multimodal.positions.drift_fit", "multimodal.positions.frame_shifts", "multimodal.positions.haadf_frames",
    "multimodal.positions.haadf_signal",
    # multimodal.ptychography
    "multimodal.ptychography.allowed_range", "multimodal.ptychography.centred_probe",
    "multimodal.ptychography.check_positions", "multimodal.ptychography.detector_mask",
    "multimodal.ptychography.diffraction_intensities", "multimodal.ptychography.gather_windows",
    "multimodal.ptychography.low_dose_counts", "multimodal.ptychography.phase_ramps",
    "multimodal.ptychography.scatter_windows", "multimodal.ptychography.shift_probes",
    "multimodal.ptychography.shift_probes_adjoint", "multimodal.ptychography.window_corners",
    "multimodal.ptychography.window_indices",
    # multimodal.reconstruction
    "multimodal.reconstruction.loss_and_gradients", "multimodal.reconstruction.phase_error",
    "multimodal.reconstruction.reconstruct",
    # multimodal.specimens
    "multimodal.specimens.cryo_specimen", "multimodal.specimens.gold_cluster",
    "multimodal.specimens.mass_density", "multimodal.specimens.protein_cluster",
    "multimodal.specimens.vitreous_ice",
    # multimodal.upsampling
    "multimodal.upsampling.bicubic", "multimodal.upsampling.downsample", "multimodal.upsampling.edge_aware",
    "multimodal.upsampling.edge_weights", "multimodal.upsampling.guided_filter",
    "multimodal.upsampling.guided_tv", "multimodal.upsampling.relative_rmse",
    "multimodal.upsampling.upsample_adjoint", "multimodal.upsampling.weighted_laplacian",
    # segmentation.chan_vese
    "segmentation.chan_vese.chan_vese", "segmentation.chan_vese.chan_vese_binary",
    "segmentation.chan_vese.chan_vese_multi", "segmentation.chan_vese.iou",
    "segmentation.chan_vese.region_costs",
    # segmentation.features
    "segmentation.features.apply_pca", "segmentation.features.fit_pca", "segmentation.features.frequency_grid",
    "segmentation.features.kmeans", "segmentation.features.local_fourier_features",
    # segmentation.stm
    "segmentation.stm.region_masks", "segmentation.stm.synthetic_stm",
    # tomography.projector
    "tomography.projector.backproject", "tomography.projector.project", "tomography.projector.tilt_rotations",
    # tomography.reconstruct
    "tomography.reconstruct.fbp", "tomography.reconstruct.lipschitz_bound",
    "tomography.reconstruct.operator_norm", "tomography.reconstruct.pgd", "tomography.reconstruct.pgd_4d",
    "tomography.reconstruct.sirt", "tomography.reconstruct.smooth_tv",
    "tomography.reconstruct.temporal_weights",
    # tomography.refine
    "tomography.refine.refine_positions",
    # tomography.specimens
    "tomography.specimens.atom_volume", "tomography.specimens.cross_sections",
    "tomography.specimens.diffusion_trajectories", "tomography.specimens.fept_nanoparticle",
    "tomography.specimens.poisson_noise", "tomography.specimens.project_atoms",
    "tomography.specimens.tilt_series",
    # tomography.tracing
    "tomography.tracing.classify_species", "tomography.tracing.line_profiles",
    "tomography.tracing.local_moments", "tomography.tracing.match_atoms", "tomography.tracing.position_errors",
    "tomography.tracing.trace_atoms", "tomography.tracing.track_atoms",
}


def _all_modules():
    return sorted(info.name for info in pkgutil.walk_packages(mbook.__path__, "mbook."))


def _bad_cases():
    for key in sorted(TABLE):
        entry = TABLE[key]
        for parameter in entry.parameters:
            for label, make in entry.bad_values(parameter):
                yield pytest.param(entry, parameter, make, id=f"{key}-{parameter}={label}")


@pytest.mark.parametrize("entry, parameter, make_bad", list(_bad_cases()))
def test_a_bad_value_is_refused_naming_the_parameter(entry, parameter, make_bad):
    outcome, detail = run_bad_call(entry, parameter, make_bad, seconds=10)
    assert outcome == "clear", f"{entry.key}({parameter}=bad): {outcome}: {detail}"


@pytest.mark.parametrize("key", sorted(TABLE))
def test_the_valid_call_succeeds(key):
    TABLE[key].call()


@pytest.mark.parametrize("key", sorted(TABLE))
def test_every_parameter_is_in_the_row(key):
    """Each parameter is a decision (bad values or FREE), so a new parameter cannot slip past the table."""
    entry = TABLE[key]
    parameters = set(inspect.signature(entry.function).parameters)
    assert set(entry.parameters) == parameters, (
        f"{key}: row names {sorted(set(entry.parameters) - parameters)} not in the signature, "
        f"misses {sorted(parameters - set(entry.parameters))}")


def test_every_public_function_is_in_the_table():
    missing, both = [], []
    for module_name in _all_modules():
        module = importlib.import_module(module_name)
        for name in public_functions(module):
            key = f"{module_name[len('mbook.'):]}.{name}"
            if key in TABLE and key in NOT_YET_IN_THE_TABLE:
                both.append(key)
            elif key not in TABLE and key not in NOT_YET_IN_THE_TABLE:
                missing.append(key)
    assert not missing, f"public functions missing from tests/bad_input_table.py: {missing}"
    assert not both, f"in the table and in NOT_YET_IN_THE_TABLE (remove them from the latter): {both}"


def test_the_table_names_only_existing_functions():
    stale = [key for key, entry in TABLE.items() if not hasattr(importlib.import_module(entry.module), entry.name)]
    assert not stale, f"rows for functions that no longer exist: {stale}"


def test_the_debt_names_only_existing_functions():
    existing = set()
    for module_name in _all_modules():
        module = importlib.import_module(module_name)
        existing |= {f"{module_name[len('mbook.'):]}.{name}" for name in public_functions(module)}
    stale = sorted(NOT_YET_IN_THE_TABLE - existing)
    assert not stale, f"NOT_YET_IN_THE_TABLE names functions that no longer exist (remove them): {stale}"
