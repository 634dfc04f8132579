"""Dot-product test <A x, y> = <x, A* y> for every linear operator in mbook, on every device.

Add each new operator to OPERATORS as (name, forward, adjoint, input shape,
output shape); the test is parametrised over the list and over the devices
(inputs are handed over as NumPy arrays: each operator moves them to the
selected device itself, and its result must come back there).
"""

import numpy as np
import pytest

from mbook.core import backend, grids, propagation

OPERATORS = [
    # backend's FFTs are kernels' primitives: they follow their input, so the test moves it.
    ("fft2", lambda x: backend.fft2(backend.asarray(x)),
     lambda y: y.size / np.prod(y.shape[:-2]) * backend.ifft2(backend.asarray(y)), (3, 16, 12), (3, 16, 12)),
    ("Fourier crop (grids.crop_spectrum / pad_spectrum)", lambda x: grids.crop_spectrum(x, (9, 6)),
     lambda y: grids.pad_spectrum(y, (16, 12)), (2, 16, 12), (2, 9, 6)),
    (
        "fresnel propagation",
        lambda x: propagation.propagate(x, 25.0, wavelength=0.5, sampling=0.2, paraxial=True),
        lambda y: propagation.propagate(y, -25.0, wavelength=0.5, sampling=0.2, paraxial=True),
        (16, 20),
        (16, 20),
    ),
    (
        # sampling 0.1 µm < λ/2: evanescent components included, so the operator is not unitary.
        "angular-spectrum propagation",
        lambda x: propagation.propagate(x, 3.0, wavelength=0.5, sampling=0.1),
        lambda y: propagation.propagate(y, -3.0, wavelength=0.5, sampling=0.1),
        (24, 16),
        (24, 16),
    ),
]

# The implicit whole-volume STEM solver (mbook.electron.implicit): its system and preconditioner.
from mbook.electron import implicit

_IMPLICIT_POTENTIAL = 50 * np.random.default_rng(4).standard_normal((3, 8, 10))


def _implicit():
    """Built on the device selected when called (the operators hold device arrays)."""
    return implicit.operators(_IMPLICIT_POTENTIAL, grid=grids.make_grid(gpts=(8, 10), sampling=0.3), energy=200e3,
                              slice_thickness=[1.0, 2.0, 0.5], batch_shape=(2,), dtype=np.complex128)


OPERATORS += [
    ("implicit solver: Crank-Nicolson system A (whole volume)",
     lambda x: _implicit().forward(x), lambda y: _implicit().adjoint(y), (3, 2, 8, 10), (3, 2, 8, 10)),
    ("implicit solver: free-space preconditioner M^-1",
     lambda x: _implicit().precondition(x), lambda y: _implicit().precondition_adjoint(y), (3, 2, 8, 10),
     (3, 2, 8, 10)),
]

# AFM guided upsampling (mbook.multimodal.upsampling): a fixed positive weight map for the Laplacian.
from mbook.multimodal import upsampling

_EDGE_WEIGHTS = 1.0 + 0.5 * np.sin(np.add.outer(np.arange(12.0), 0.7 * np.arange(10.0)))

# Thick samples and Fourier ptychography (mbook.light.scattering, mbook.light.fourier_ptychography).
from mbook.light import fourier_ptychography, led_geometry, scattering

_WATER = dict(wavelength=0.5, n_background=1.33)
_INDEX_2D = 1.33 + 0.05 * np.random.default_rng(1).random((12, 20)) + 0.01j
_INDEX_3D = 1.33 + 0.05 * np.random.default_rng(2).random((6, 16, 12))
_FP = led_geometry.make_setup((64, 64), sampling=0.5, wavelength=0.5, na=0.1, upsampling=2,
                              illumination=led_geometry.led_array((3, 3), pitch=4.0, height=40.0),
                              na_vignetting=0.11, vignetting_slope=2e-3)
_FP_PUPIL = led_geometry.pupil(_FP, defocus=3.0, zernike_waves={(2, 2): 0.3}, xp=np)
OPERATORS += [
    ("first Born scattered field (2D)",
     lambda x: scattering.born_scattered_field(x, sampling=0.1, **_WATER),
     lambda y: scattering.born_scattered_field_adjoint(y, sampling=0.1, **_WATER), (12, 20), (12, 20)),
    ("first Born scattered field (3D, tilted)",
     lambda x: scattering.born_scattered_field(x, sampling=0.1, tilt=(0.5, -0.3), **_WATER),
     lambda y: scattering.born_scattered_field_adjoint(y, sampling=0.1, tilt=(0.5, -0.3), **_WATER),
     (6, 8, 10), (6, 8, 10)),
    ("paraxial BPM (2D)",
     lambda x: scattering.bpm(_INDEX_2D, sampling=0.1, incident=x, all_planes=False, **_WATER),
     lambda y: scattering.bpm_adjoint(y, _INDEX_2D, sampling=0.1, **_WATER), (20,), (20,)),
    ("wide-angle BPM (3D)",
     lambda x: scattering.bpm(_INDEX_3D, sampling=0.1, incident=x, all_planes=False, wide_angle=True, **_WATER),
     lambda y: scattering.bpm_adjoint(y, _INDEX_3D, sampling=0.1, wide_angle=True, **_WATER), (16, 12), (16, 12)),
    ("Fourier ptychography camera fields",
     lambda x: fourier_ptychography.camera_fields(x, _FP_PUPIL, _FP, vignetting=False),
     lambda y: fourier_ptychography.camera_fields_adjoint(y, _FP_PUPIL, _FP, vignetting=False), (64, 64), (9, 32, 32)),
    ("Fourier ptychography camera fields with vignetting",
     lambda x: fourier_ptychography.camera_fields(x, _FP_PUPIL, _FP),
     lambda y: fourier_ptychography.camera_fields_adjoint(y, _FP_PUPIL, _FP), (64, 64), (9, 32, 32)),
]

# Inverse problems: gradient/divergence, Fourier, masks, lifting, warps (mbook.inverse.optimize, .lifting, .warps).
from mbook.inverse import lifting, optimize, warps

_MASK = np.random.default_rng(3).random((10, 12)) > 0.5
_WARP = 2.0 * np.random.default_rng(4).standard_normal((3, 2, 14, 11))
OPERATORS += [
    ("gradient / -divergence (Neumann)", optimize.gradient, lambda p: -optimize.divergence(p), (3, 9, 7),
     (2, 3, 9, 7)),
    ("gradient / -divergence (periodic)", lambda u: optimize.gradient(u, boundary="periodic"),
     lambda p: -optimize.divergence(p, boundary="periodic"), (9, 7), (2, 9, 7)),
    ("unitary Fourier transform", optimize.fourier, optimize.inverse_fourier, (2, 10, 12), (2, 10, 12)),
    ("mask", lambda x: optimize.apply_mask(x, _MASK), lambda y: optimize.apply_mask(y, _MASK), (10, 12), (10, 12)),
    ("TV-S1 lifting operator", lambda x: lifting.lift_apply(x, 6), lambda y: lifting.lift_adjoint(y, 6),
     (7, 8, 9), (6, 3, 8, 9)),
    ("bilinear warp by displacement fields", lambda x: warps.warp(x, _WARP),
     lambda y: warps.warp_adjoint(y, _WARP, (14, 11)), (14, 11), (3, 14, 11)),
]

# Cryo-EM: projection of volumes, CTF image formation, wavelet-EMD embedding (mbook.cryoem.voxels, .image_formation,
# .wasserstein).
from mbook.core import grids as _grids
from mbook.cryoem import image_formation, voxels, wasserstein
from mbook.geometry import so3

_ROTATIONS = so3.random_rotations(2, seed=5)
_IMAGE_GRID = _grids.make_grid(gpts=(16, 16), sampling=2.0)
_FORMATION = dict(defocus=[1.2e4, 2.0e4], shifts=[[1.5, -3.0], [0.0, 2.2]], contrast=[0.8, 1.3], B_factor=50.0)
OPERATORS += [
    ("volume projection (trilinear) / back-projection",
     lambda x: voxels.project_volume(x, _ROTATIONS, sampling=1.5),
     lambda y: voxels.backproject(y, _ROTATIONS, sampling=1.5), (12, 12, 12), (2, 12, 12)),
    ("CTF, shifts and contrast of particle images",
     lambda x: image_formation.form_images(x, _IMAGE_GRID, **_FORMATION),
     lambda y: image_formation.form_images_adjoint(y, _IMAGE_GRID, **_FORMATION), (2, 16, 16), (2, 16, 16)),
    ("weighted wavelet embedding (wavelet EMD)",
     lambda x: wasserstein.wavelet_embedding(x, sampling=2.0, allow_negative=True),
     lambda y: wasserstein.wavelet_embedding_adjoint(y, (6, 5, 7), sampling=2.0), (6, 5, 7),
     (wasserstein.embedding_size((6, 5, 7)),)),
    # Real operators, applied to the real and imaginary parts (linear over the complex numbers).
    ("AFM block average (coarse mechanical maps)",
     lambda x: _complexified(lambda u: upsampling.downsample(u, 4), x),
     lambda y: _complexified(lambda v: upsampling.upsample_adjoint(v, 4), y), (2, 16, 12), (2, 4, 3)),
    ("edge-aware weighted Laplacian -div(w grad u)",
     lambda x: _complexified(lambda u: upsampling.weighted_laplacian(u, _EDGE_WEIGHTS), x),
     lambda y: _complexified(lambda v: upsampling.weighted_laplacian(v, _EDGE_WEIGHTS), y), (12, 10), (12, 10)),
]


def _complexified(operator, z):
    z = backend.asarray(z)
    return operator(z.real) + 1j * operator(z.imag)


def _random_complex(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("name, forward, adjoint, in_shape, out_shape", OPERATORS, ids=[o[0] for o in OPERATORS])
def test_adjoint(name, forward, adjoint, in_shape, out_shape, rng, device):
    x, y = _random_complex(rng, in_shape), _random_complex(rng, out_shape)
    ax, aty = forward(x), adjoint(y)
    assert all(backend.get_array_module(r) is backend.xp for r in (ax, aty))  # results on the selected device
    lhs = np.vdot(backend.asnumpy(ax), y)
    rhs = np.vdot(x, backend.asnumpy(aty))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
