"""mbook.tomography.projector: the parallel-beam projector and its exact adjoint, on every device."""

import numpy as np
import pytest

from mbook.core import backend
from mbook.tomography import projector


def _random_rotations(rng, n):
    q = np.linalg.qr(rng.standard_normal((n, 3, 3)))[0]
    return q * np.sign(np.linalg.det(q))[:, None, None]  # proper rotations


def _blob(shape, centre, width=1.5):
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2 for n in shape), indexing="ij")
    return np.exp(-((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) / (2 * width**2))


@pytest.mark.parametrize("dtype, rel", [(np.float64, 1e-10), (np.float32, 1e-6)])
def test_backproject_is_the_adjoint_of_project_for_any_rotations(device, rng, dtype, rel):
    shape, rotations = (9, 8, 11), _random_rotations(rng, 5)
    f = rng.standard_normal(shape).astype(dtype)
    p = rng.standard_normal((5, 7, 10)).astype(dtype)
    forward = projector.project(f, rotations, sampling=0.7, detector_gpts=(7, 10))
    adjoint = projector.backproject(p, rotations, shape=shape, sampling=0.7)
    assert forward.dtype == dtype and adjoint.dtype == dtype
    lhs = np.vdot(backend.asnumpy(forward).astype(np.float64), p)
    rhs = np.vdot(f.astype(np.float64), backend.asnumpy(adjoint))
    assert lhs == pytest.approx(rhs, rel=rel)


def test_one_volume_per_rotation_has_its_adjoint(device, rng):
    shape, rotations = (6, 7, 5), _random_rotations(rng, 4)
    f, p = rng.standard_normal((4,) + shape), rng.standard_normal((4, 7, 5))
    lhs = np.vdot(backend.asnumpy(projector.project(f, rotations, sampling=1.3)), p)
    rhs = np.vdot(f, backend.asnumpy(projector.backproject(p, rotations, shape=shape, sampling=1.3, separate=True)))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_results_are_on_the_selected_device(device, rng):
    f = rng.standard_normal((5, 5, 5))
    rotations = projector.tilt_rotations([0.0, 45.0])
    p = projector.project(f, rotations)
    tilt = projector.TiltProjector(f.shape, [0.0, 45.0])
    for result in (rotations, p, projector.backproject(p, rotations, shape=f.shape), tilt.matrices,
                   tilt.forward(f), tilt.adjoint(p)):
        assert backend.get_array_module(result) is backend.xp


def test_zero_tilt_is_the_sum_along_the_beam():
    f = np.random.default_rng(1).random((6, 5, 7))
    p = backend.asnumpy(projector.project(f, projector.tilt_rotations([0.0]), sampling=0.5))
    np.testing.assert_allclose(p[0], 0.5 * f.sum(axis=0), rtol=1e-12)


def test_ninety_degrees_about_y_sums_along_x():
    # R^T (t, v, u) = (u, v, -t): the detector's u axis is the object's z, the ray runs along x.
    f = np.random.default_rng(2).random((8, 5, 8))
    p = backend.asnumpy(projector.project(f, projector.tilt_rotations([90.0])))
    np.testing.assert_allclose(p[0], f.sum(axis=2).T, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("angle", [-63.0, -20.0, 35.0, 70.0])
def test_a_blob_projects_to_its_rotated_position_with_its_mass(angle):
    # The lab x of an object point is sin θ z + cos θ x (tilt about y).
    shape, centre = (24, 16, 24), (3.0, -2.0, 5.0)
    f = _blob(shape, centre)
    p = backend.asnumpy(projector.project(f, projector.tilt_rotations([angle]), sampling=0.8))[0]
    assert p.sum() == pytest.approx(0.8 * f.sum(), rel=1e-3)
    u = np.arange(shape[2]) - shape[2] // 2
    v = np.arange(shape[1]) - shape[1] // 2
    theta = np.radians(angle)
    assert (p.sum(axis=0) @ u) / p.sum() == pytest.approx(np.sin(theta) * centre[0] + np.cos(theta) * centre[2],
                                                          abs=0.02)
    assert (p.sum(axis=1) @ v) / p.sum() == pytest.approx(centre[1], abs=0.02)


def test_batches_do_not_change_the_result(rng):
    f, rotations = rng.standard_normal((6, 6, 6)), _random_rotations(rng, 5)
    whole = projector.project(f, rotations)
    one_by_one = projector.project(f, rotations, batch_size=1)
    np.testing.assert_allclose(backend.asnumpy(one_by_one), backend.asnumpy(whole), rtol=1e-12, atol=1e-12)
    p = rng.standard_normal((5, 6, 6))
    np.testing.assert_allclose(backend.asnumpy(projector.backproject(p, rotations, shape=f.shape, batch_size=2)),
                               backend.asnumpy(projector.backproject(p, rotations, shape=f.shape)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, rel", [(np.float64, 1e-10), (np.float32, 1e-6)])
def test_tilt_projector_is_the_same_operator_with_its_adjoint(device, rng, dtype, rel):
    shape, angles = (10, 7, 12), [-70.0, -41.5, -3.0, 12.0, 50.0, 69.0]
    tilt = projector.TiltProjector(shape, angles, sampling=0.6, dtype=dtype)
    f = rng.standard_normal(shape)
    reference = backend.asnumpy(projector.project(f, projector.tilt_rotations(angles), sampling=0.6))
    np.testing.assert_allclose(backend.asnumpy(tilt.forward(f)), reference, rtol=0, atol=100 * rel)
    volumes = rng.standard_normal((2, 3) + shape).astype(dtype)  # a batch of volumes, each at every angle
    p = rng.standard_normal((2, 3) + tilt.projection_shape).astype(dtype)
    lhs = np.vdot(backend.asnumpy(tilt.forward(volumes)).astype(np.float64), p)
    rhs = np.vdot(volumes.astype(np.float64), backend.asnumpy(tilt.adjoint(p)))
    assert lhs == pytest.approx(rhs, rel=rel)
    np.testing.assert_allclose(backend.asnumpy(tilt.forward(volumes))[1, 2], backend.asnumpy(tilt.forward(volumes[1, 2])),
                               rtol=10 * rel, atol=10 * rel)


def test_per_angle_norms_are_the_largest_singular_values(rng):
    tilt = projector.TiltProjector((6, 3, 7), [-50.0, 20.0])
    norms = backend.asnumpy(tilt.norms())
    for k in range(2):
        dense = np.zeros((7 * 3, 6 * 3 * 7))  # the operator of one angle, column by column
        for j in range(dense.shape[1]):
            unit = np.zeros(6 * 3 * 7)
            unit[j] = 1
            dense[:, j] = backend.asnumpy(tilt.subset([k]).forward(unit.reshape(6, 3, 7))).ravel()
        assert norms[k] == pytest.approx(np.linalg.norm(dense, 2), rel=1e-10)


def test_tilt_rotations_are_rotations_about_their_axis():
    for axis, fixed in (("y", 1), ("x", 2)):
        r = backend.asnumpy(projector.tilt_rotations(np.linspace(-70, 70, 7), axis=axis))
        np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-14)
        np.testing.assert_allclose(np.linalg.det(r), 1.0)
        np.testing.assert_allclose(r[:, :, fixed], np.broadcast_to(np.eye(3)[fixed], (7, 3)), atol=1e-14)


def test_rows_of_one_rotation_are_batched_when_it_does_not_fit(rng, monkeypatch):
    f, rotations = rng.standard_normal((8, 8, 8)), _random_rotations(rng, 3)
    p = rng.standard_normal((3, 8, 8))
    whole = backend.asnumpy(projector.project(f, rotations))
    back = backend.asnumpy(projector.backproject(p, rotations, shape=f.shape))
    monkeypatch.setenv("MBOOK_MEMORY_GB", str(1e-4))  # ~100 KiB: a few detector rows per block
    np.testing.assert_allclose(backend.asnumpy(projector.project(f, rotations)), whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backend.asnumpy(projector.backproject(p, rotations, shape=f.shape)), back,
                               rtol=1e-12, atol=1e-12)


def test_a_volume_over_the_memory_budget_is_refused(monkeypatch):
    monkeypatch.setenv("MBOOK_MEMORY_GB", "0.001")
    with pytest.raises(MemoryError, match="MiB"):
        projector.TiltProjector((64, 64, 64), np.linspace(-60, 60, 30))
    with pytest.raises(MemoryError, match="MiB"):
        projector.project(np.zeros((64, 64, 64)), projector.tilt_rotations([0.0]))


_F = np.zeros((4, 4, 4))
_R = projector.tilt_rotations([0.0, 30.0])
_P = np.zeros((2, 4, 4))


@pytest.mark.parametrize("call, name", [
    (lambda: projector.tilt_rotations([-90.0, 90.0]), "angles"),
    (lambda: projector.tilt_rotations([[0.0, 1.0]]), "angles"),
    (lambda: projector.tilt_rotations([0.0, np.nan]), "angles"),
    (lambda: projector.tilt_rotations([0.0], axis="z"), "axis"),
    (lambda: projector.project(np.zeros((4, 4)), _R), "volume"),
    (lambda: projector.project(np.zeros((3, 4, 4, 4)), _R), "volume"),
    (lambda: projector.project(_F, np.ones((2, 3, 3))), "rotations"),
    (lambda: projector.project(_F, np.eye(3)), "rotations"),
    (lambda: projector.project(_F, _R, sampling=-1.0), "sampling"),
    (lambda: projector.project(_F, _R, detector_gpts=(0, 4)), "gpts"),
    (lambda: projector.project(_F, _R, batch_size=0), "batch_size"),
    (lambda: projector.backproject(np.zeros((3, 4, 4)), _R, shape=(4, 4, 4)), "projections"),
    (lambda: projector.backproject(_P, _R, shape=(4, 4)), "gpts"),
    (lambda: projector.backproject(_P, _R, shape=(4, 4, 4), sampling=0.0), "sampling"),
    (lambda: projector.backproject(_P, _R, shape=(4, 4, 4), separate="yes"), "separate"),
    (lambda: projector.TiltProjector((4, 4, 4), [0.0, 180.0]), "angles"),
    (lambda: projector.TiltProjector((4, 4, 4), [0.0], sampling=np.inf), "sampling"),
    (lambda: projector.TiltProjector((4, 4, 4), [0.0], dtype=np.int32), "dtype"),
    (lambda: projector.TiltProjector((4, 4, 4), [0.0, 30.0]).forward(np.zeros((4, 4, 5))), "volume"),
    (lambda: projector.TiltProjector((4, 4, 4), [0.0, 30.0]).adjoint(np.zeros((3, 4, 4))), "projections"),
])
def test_bad_input_is_refused_naming_the_parameter(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


@pytest.mark.parametrize("theta", [25.0, -40.0])
def test_tilts_about_x_and_y_have_the_same_handedness(theta):
    """The documented y tilt is the rotation by -θ about e_y on (z, y, x) vectors (Rodrigues' formula through
    so3.axis_rotation, another code path); the x tilt must be the rotation by -θ about e_x."""
    from mbook.geometry import so3

    for axis, unit in (("y", [0.0, 1.0, 0.0]), ("x", [0.0, 0.0, 1.0])):
        rotation = backend.asnumpy(projector.tilt_rotations([theta], axis=axis))[0]
        expected = backend.asnumpy(so3.axis_rotation(np.array(unit), -np.radians(theta)))
        np.testing.assert_allclose(rotation, expected, atol=1e-14, err_msg=axis)
