"""Shared fixtures: every device-dependent test runs on the CPU, on the strict GPU stand-in, and on a GPU.

``device`` runs a test three times: ``cpu`` (NumPy), ``strict`` (the CPU stand-in of
:mod:`mbook.core.strict`, which refuses what CuPy refuses, so that the GPU code path is
checked on every machine) and ``gpu`` (skipped, with the reason, when CuPy finds no GPU).
A test takes ``device`` when what it checks could differ between devices; it compares
results through :func:`mbook.core.backend.asnumpy`, the one way to the host.
"""

import numpy as np
import pytest

from mbook.core import backend

DEVICES = [
    "cpu",
    "strict",
    pytest.param(
        "gpu",
        marks=pytest.mark.skipif(not backend.gpu_available(), reason=f"no GPU: {backend.gpu_status()}"),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """Switch mbook to the parametrised device for one test, then back to the CPU."""
    backend.set_device(request.param)
    yield request.param
    backend.set_device("cpu")


@pytest.fixture
def rng():
    """A seeded generator: every random draw in the tests is reproducible."""
    return np.random.default_rng(20221212)
