"""Dot-product test <A x, y> = <x, A* y> for every linear operator in mbook.

Add each new operator to OPERATORS as (name, forward, adjoint, input shape,
output shape); the test is parametrised over the list.
"""

import numpy as np
import pytest

from mbook import backend, optics

OPERATORS = [
    ("fft2", backend.fft2, lambda y: y.size / np.prod(y.shape[:-2]) * backend.ifft2(y), (3, 16, 12), (3, 16, 12)),
    (
        "fresnel propagation",
        lambda x: optics.propagate(x, 25.0, wavelength=0.5, sampling=0.2, paraxial=True),
        lambda y: optics.propagate(y, -25.0, wavelength=0.5, sampling=0.2, paraxial=True),
        (16, 20),
        (16, 20),
    ),
    (
        # sampling 0.1 µm < λ/2: evanescent components included, so the operator is not unitary.
        "angular-spectrum propagation",
        lambda x: optics.propagate(x, 3.0, wavelength=0.5, sampling=0.1),
        lambda y: optics.propagate(y, -3.0, wavelength=0.5, sampling=0.1),
        (24, 16),
        (24, 16),
    ),
]


def _random_complex(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("name, forward, adjoint, in_shape, out_shape", OPERATORS, ids=[o[0] for o in OPERATORS])
def test_adjoint(name, forward, adjoint, in_shape, out_shape, rng):
    x, y = _random_complex(rng, in_shape), _random_complex(rng, out_shape)
    lhs = np.vdot(backend.asnumpy(forward(x)), y)
    rhs = np.vdot(x, backend.asnumpy(adjoint(y)))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
