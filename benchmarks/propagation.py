"""Free-space propagation: mbook against its floor, the two FFTs it must do.

Prints one table row per grid size: the time of ``propagation.propagate`` on a
batch of fields, the time of the forward and inverse FFTs alone (the floor,
with the same FFT library and threads), and their ratio. Run:

    .venv/bin/python benchmarks/propagation.py            # current device
    MBOOK_DEVICE=gpu .venv/bin/python benchmarks/propagation.py

The fields are made on the selected device before timing (the device rule:
``propagate`` would move NumPy input itself, once per call), so a timing holds
no host/device copy. Timings are medians of repeated runs in this one process
(GPU work synchronised); they are not tests.
"""

from __future__ import annotations

import argparse

import numpy as np

from timing import median_time  # benchmarks/timing.py

from mbook.core import backend, propagation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batch", type=int, default=8, help="fields propagated at once")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    print(backend.describe())
    print(f"{'gpts':>6} {'batch':>6} {'propagate [ms]':>15} {'FFTs only [ms]':>15} {'ratio':>7}")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        host = (rng.standard_normal((args.batch, n, n)) + 1j * rng.standard_normal((args.batch, n, n)))
        field = backend.asarray(host.astype(np.complex64))
        t_mbook, _ = median_time(
            lambda: propagation.propagate(field, 10.0, wavelength=0.5, sampling=0.25), args.repeat
        )
        def ffts_only():
            with backend.inside_iterations():  # the bare FFTs, as mbook's loops run them (no NaN test)
                return backend.ifft2(backend.fft2(field))

        t_floor, _ = median_time(ffts_only, args.repeat)
        print(f"{n:>6} {args.batch:>6} {1e3 * t_mbook:>15.2f} {1e3 * t_floor:>15.2f} {t_mbook / t_floor:>7.2f}")


if __name__ == "__main__":
    main()
