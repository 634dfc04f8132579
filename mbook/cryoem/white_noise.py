"""White Gaussian noise for image stacks: the same numbers for any batching, one host call per batch.

A stack made in batches (under a memory budget) must not depend on the batch
size, so image i's noise must be a function of (seed, i) alone. One generator
per image gives that, at one host call per image. Here image i owns the
uniforms ``i P .. (i + 1) P - 1`` of one counter-based Philox stream keyed by
the seed (P: its pixels rounded up to a multiple of 4, one Philox block). A
float64 uniform takes exactly one 64-bit draw and Philox can start at any
counter, so the uniforms of a whole batch are one host call that gives the
same numbers however the stack is cut. They move to the device once, where
the Box-Muller transform makes them standard normal: the same uniforms on
every device (the transform's last bit may differ between CuPy's and NumPy's
``log``/``cos``).

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.cryoem import white_noise
>>> whole = backend.asnumpy(white_noise.standard_normal(5, (8, 8), seed=1))
>>> later = backend.asnumpy(white_noise.standard_normal(2, (8, 8), seed=1, first_index=3))
>>> bool(np.array_equal(whole[3:], later))
True
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, checks


def uniforms_per_image(shape) -> int:
    """Uniforms drawn per image of ``shape``: its pixels rounded up to a multiple of 4 (one Philox block)."""
    shape = checks.check_gpts(shape, name="shape")
    return 4 * -(-math.prod(shape) // 4)


def standard_normal(n_images, shape, *, seed, first_index=0):
    """Standard normal noise for images ``first_index .. first_index + n_images - 1`` of a stack.

    Parameters
    ----------
    n_images : int
        Images in this batch (>= 1).
    shape : tuple of int
        Shape of one image, e.g. ``(nx, ny)``.
    seed : int or sequence of int
        Key of the stream (through :class:`numpy.random.SeedSequence`).
    first_index : int
        Index of the batch's first image in the stack (>= 0).

    Returns
    -------
    (n_images, *shape) ndarray, float64
        On the selected device.
    """
    n_images = checks.check_count(n_images, "n_images")
    first_index = checks.check_count(first_index, "first_index", minimum=0)
    shape = checks.check_gpts(shape, name="shape")
    if not isinstance(seed, np.random.SeedSequence):  # an int, or a sequence of ints (a key per stream)
        for part in (seed if isinstance(seed, (list, tuple)) else [seed]):
            checks.check_seed(part)
    per = uniforms_per_image(shape)
    generator = np.random.Generator(np.random.Philox(seed, counter=first_index * per // 4))
    u = backend.asarray(generator.random((n_images, per)))  # one host call, one copy to the device
    xp = backend.get_array_module(u)
    half = per // 2
    radius = xp.sqrt(-2.0 * xp.log1p(-u[:, :half]))  # 1 - u in (0, 1]: no log(0)
    angle = (2 * math.pi) * u[:, half:]
    z = xp.concatenate([radius * xp.cos(angle), radius * xp.sin(angle)], axis=1)
    return z[:, :math.prod(shape)].reshape((n_images,) + shape)
