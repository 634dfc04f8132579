"""Scatter-adds: bincount's sums, in place, with no copy to the host on the device."""

import numpy as np
import pytest

from mbook.core import backend, scatter


def test_add_is_bincount_in_place_on_every_device(device, rng):
    index = rng.integers(0, 50, 1000)
    weights = rng.standard_normal(1000)
    out = backend.asarray(np.arange(50.0))
    result = scatter.add(out, backend.asarray(index), backend.asarray(weights))
    assert result is out and backend.get_array_module(out) is backend.xp
    expected = np.arange(50.0) + np.bincount(index, weights, 50)
    np.testing.assert_allclose(backend.asnumpy(out), expected, rtol=1e-13, atol=1e-12)  # GPU: atomics' order
    counts = scatter.bincount(backend.asarray(index), backend.asarray(np.ones(1000, np.float32)), 60)
    assert counts.dtype == np.float64 and counts.shape == (60,)
    np.testing.assert_array_equal(backend.asnumpy(counts), np.bincount(index, minlength=60))


def test_a_float32_output_gets_float64_sums(device):
    out = backend.asarray(np.zeros(2, np.float32))
    scatter.add(out, backend.asarray(np.zeros(3, np.int64)), backend.asarray(np.array([1.0, 1e-8, 1e-8])))
    assert out.dtype == np.float32 and float(out[0]) == np.float32(1.0 + 2e-8)


def test_an_index_outside_raises_or_is_dropped_when_asked():
    out = np.zeros(4)
    with pytest.raises(IndexError, match="outside the 4 cells"):
        scatter.add(out, np.array([0, 4]), np.ones(2))
    view = np.zeros(6)[2:]
    scatter.add(view, np.array([0, 3, 4, 5]), np.ones(4), drop_outside=True)  # 4 and 5 fall past the end
    np.testing.assert_array_equal(view, [1, 0, 0, 1])


def test_one_scatter_is_one_operation_and_copies_nothing():
    from mbook.core import strict

    backend.set_device("strict")
    out = backend.asarray(np.zeros(10))
    index, weights = backend.asarray(np.arange(10) % 3), backend.asarray(np.ones(10))
    with strict.count_operations() as counts:
        scatter.add(out, index, weights)
    assert counts.operations == 1 and counts.to_host == 0
    with strict.count_operations() as counts:  # float64 zeros, the adds, the sum into the float32 output
        scatter.add(out.astype(np.float32), index, weights)
    assert counts.operations == 1 + 3 and counts.to_host == 0
