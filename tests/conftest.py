"""Shared fixtures: every device-dependent test runs on the CPU and, when one is usable, on a GPU."""

import numpy as np
import pytest

from mbook.core import backend

DEVICES = [
    "cpu",
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
