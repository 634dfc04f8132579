"""Ptychographic reconstruction: time per position and iteration against the scan size.

Times one pass over all positions of ``mbook.multimodal.reconstruction.reconstruct`` (single
slice, probe retrieval and position correction on, mini-batches of ``--batch`` positions) on a
square raster of N x N positions with patterns of W² pixels, and prints microseconds per
position-iteration: the figure py4DSTEM quotes, about 50 µs per position-iteration for 16,384
positions of 128² patterns on one A100 (its single-slice ptychography). The per-iteration time
is the difference between runs of 3 and 1 iterations, halved, so the one-off checks and set-up
drop out. The counts are Poisson draws around a vacuum pattern (the time does not depend on
them).

Run from the repository root:

    .venv/bin/python benchmarks/ptychography.py                          # 16², 32² positions; 64² patterns
    .venv/bin/python benchmarks/ptychography.py --sides 32 64 --window 128
    MBOOK_DEVICE=gpu .venv/bin/python benchmarks/ptychography.py --sides 128 --window 128   # 16,384 positions
"""

from __future__ import annotations

import argparse

import numpy as np

from mbook.core import backend
from mbook.multimodal import ptychography, reconstruction

try:
    from timing import median_time
except ImportError:  # run from elsewhere
    from benchmarks.timing import median_time

SAMPLING, STEP = 0.25, 1.0  # Å
ENERGY, SEMIANGLE, DEFOCUS = 300e3, 20.0, 150.0


def case(side, window, seed=0):
    """Counts, positions, probe and object size of an N x N raster with W² patterns."""
    margin = window // 2 * SAMPLING + 1.0
    line = margin + STEP * np.arange(side)
    positions = np.stack(np.meshgrid(line, line, indexing="ij"), axis=-1).reshape(-1, 2)
    object_gpts = (int(np.ceil((2 * margin + STEP * side) / SAMPLING)),) * 2
    probe = ptychography.centred_probe(window, sampling=SAMPLING, energy=ENERGY, semiangle_cutoff=SEMIANGLE,
                                       defocus=DEFOCUS)
    pattern = np.abs(np.fft.fft2(backend.asnumpy(probe), norm="ortho")) ** 2
    counts = np.random.default_rng(seed).poisson(100.0 * pattern, size=(len(positions), window, window))
    return backend.asarray(counts.astype(np.float32)), positions, probe, object_gpts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[16, 32], help="raster sides N (N² positions)")
    parser.add_argument("--window", type=int, default=64, help="pattern pixels W (W²)")
    parser.add_argument("--batch", type=int, default=256, help="positions per gradient step")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(backend.describe())
    print(f"{'positions':>10} {'pattern':>8} {'s / iteration':>14} {'µs / position-iteration':>24}")
    for side in args.sides:
        counts, positions, probe, object_gpts = case(side, args.window)

        def run(iterations):
            return reconstruction.reconstruct(counts, positions=positions, probe=probe, object_gpts=object_gpts,
                                              sampling=SAMPLING, max_num_iter=iterations, batch_size=args.batch,
                                              probe_from=0, positions_from=0)

        one, _ = median_time(lambda: run(1), args.repeat)
        three, _ = median_time(lambda: run(3), args.repeat)
        per_iteration = max(three - one, 0.0) / 2
        print(f"{side * side:>10d} {args.window:>6d}² {per_iteration:>14.3f} "
              f"{1e6 * per_iteration / (side * side):>24.1f}")
    print("py4DSTEM (published): ~50 µs per position-iteration, 16,384 positions of 128², one A100")


if __name__ == "__main__":
    main()
