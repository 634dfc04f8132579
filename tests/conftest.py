"""Shared fixtures: every device-dependent test runs on the CPU, on the strict GPU stand-in, and on a GPU.

``device`` runs a test three times: ``cpu`` (NumPy), ``strict`` (the CPU stand-in of
:mod:`mbook.core.strict`, which refuses what CuPy refuses, so that the GPU code path is
checked on every machine) and ``gpu`` (skipped, with the reason, when CuPy finds no GPU).
A test takes ``device`` when what it checks could differ between devices; it compares
results through :func:`mbook.core.backend.asnumpy`, the one way to the host.
"""

import os

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


@pytest.fixture(autouse=True)
def default_device():
    """Every test starts on the same device, whatever ran before it in this worker: the CPU, or what
    ``MBOOK_DEVICE`` names (``MBOOK_DEVICE=strict pytest tests`` runs every test on the stand-in)."""
    backend.set_device(os.environ.get("MBOOK_DEVICE", "cpu"))


@pytest.fixture(params=DEVICES)
def device(request):
    """Switch mbook to the parametrised device for one test, then back to the CPU."""
    backend.set_device(request.param)
    yield request.param
    backend.set_device("cpu")


@pytest.fixture(scope="session")
def on_cpu():
    """``on_cpu(run, *args, **kwargs)``: ``run`` computed with the CPU selected, the reference a device's
    result is compared with; the test's device is selected again afterwards."""
    def run_on_cpu(run, *args, **kwargs):
        with backend.use_device("cpu"):
            return run(*args, **kwargs)

    return run_on_cpu


@pytest.fixture
def rng():
    """A seeded generator: every random draw in the tests is reproducible."""
    return np.random.default_rng(20221212)


@pytest.fixture
def small_edx_data():
    """40 columns of 10 atoms, a few X-ray counts each and a HAADF signal: small EDX + HAADF data (host)."""
    from mbook.multimodal import edx

    draws = np.random.default_rng(3)
    k = 40
    return edx.EDXHAADFData(edx=draws.integers(0, 6, (k, 2)).astype(float), haadf=draws.uniform(1e3, 2e3, k),
                            electrons=np.full(k, 1e4), atoms_per_column=np.full(k, 10.0),
                            yields=np.array([1e-5, 1e-5]), absorption=np.ones((k, 2)), elements=("Au", "Ag"))


def _host_copies(run, *args, **kwargs) -> int:
    """Device-to-host copies that ``run(*args, **kwargs)`` makes on the strict stand-in."""
    from mbook.core import strict

    with backend.use_device("strict"), strict.count_transfers() as copies:
        run(*args, **kwargs)
    return copies.to_host


def _assert_no_copies_per_iteration(run, *, iterations=(10, 30)):
    """An iterative solver copies nothing to the host per iteration.

    ``run(max_num_iter)`` runs the solver on the strict stand-in (inputs
    already on the device or not: entry copies are allowed, they do not grow).
    The count must be the same for both iteration counts.
    """
    few, many = (_host_copies(run, n) for n in iterations)
    assert many == few, (
        f"{many - few} more device-to-host copies for {iterations[1] - iterations[0]} more iterations "
        f"({few} at {iterations[0]}, {many} at {iterations[1]})"
    )


@pytest.fixture
def host_copies():
    """``host_copies(run, *args)``: device-to-host copies ``run(*args)`` makes on the strict stand-in."""
    return _host_copies


@pytest.fixture
def no_copies_per_iteration():
    """``no_copies_per_iteration(run)``: assert ``run(max_num_iter)`` copies nothing to the host per iteration.

    For every iterative solver: on a GPU, a ``float()`` of a norm per iteration stalls the
    pipeline; the stand-in counts such copies, and the count must not grow with the iterations.
    """
    return _assert_no_copies_per_iteration
