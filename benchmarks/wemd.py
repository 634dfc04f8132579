"""All-pairs wavelet EMD in a linear family: the fast algorithm against the direct one.

For volumes ``V(z) = μ + Σ_i z_i B_i`` of m voxels, the direct way embeds each
of the n volumes (a wavelet transform) and takes all n(n-1)/2 l1 distances,
O(m n²); :mod:`mbook.cryoem.wemd_family` precomputes the basis transforms and a
sorted/tree structure once (O(m log m)) and answers each pair in O(log m)
for k <= 2. The family here is the PCA family of volumes of the hinged
molecule of :mod:`mbook.cryoem.heterogeneity`, at grid sizes m = N³.

The direct time is measured when it is short, and otherwise extrapolated
from timed samples (a few embeddings and a few hundred pairs), marked with
``*``; every fast result is checked against direct distances on sampled
pairs. Run:

    .venv/bin/python benchmarks/wemd.py                  # small sizes
    MBOOK_SIZE=full .venv/bin/python benchmarks/wemd.py  # m = 128³, n = 1000
    .venv/bin/python benchmarks/wemd.py --sizes 32 64 --n 200 --k 3

Timings are single runs in this process; they are not tests. The family's volumes and the
fast queries run on the selected device (``MBOOK_DEVICE``), as do the wavelet transforms
(PyWavelets on a CPU) and the direct l1 distances, and every timed result is
copied to the host inside its timing (so a GPU's asynchronous work is counted).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import mbook
from mbook.core import backend, grids
from mbook.cryoem import heterogeneity, wasserstein, wemd_family

BOX = 96.0  # Å, the physical box whatever the grid size


def family(size, k, n, seed=0):
    """PCA basis (k, N, N, N) of hinged-molecule volumes, and n latent points spread like the data (on the host)."""
    rng = np.random.default_rng(seed)
    particle = heterogeneity.hinged_particle(seed=3)
    grid = grids.make_grid(gpts=(size,) * 3, sampling=BOX / size)
    latent = np.column_stack([rng.uniform(0, np.pi / 2, 3 * k + 4), rng.uniform(-np.pi / 4, np.pi / 4, 3 * k + 4)])
    volumes = heterogeneity.family_volumes(particle, latent, grid)
    mean, basis, z = (backend.asnumpy(a) for a in wemd_family.linear_family(volumes, k))
    points = rng.standard_normal((n, k)) * z.std(axis=0)
    return mean, basis, points, grid.sampling[0]


def time_direct(mean, basis, points, sampling, budget_s, rng):
    """Direct all-pairs time: measured if it fits ``budget_s``, else extrapolated from samples."""
    n = len(points)
    pairs = n * (n - 1) // 2

    def member(i):
        return mean + np.tensordot(points[i], basis, axes=1)

    t0 = time.perf_counter()
    sample = [wasserstein.wavelet_embedding(member(i), sampling=sampling, allow_negative=True) for i in range(3)]
    t_embed = (time.perf_counter() - t0) / 3
    xp = backend.xp
    t0 = time.perf_counter()
    repeats = 0
    while repeats < 300 and time.perf_counter() - t0 < 2.0:
        float(xp.abs(sample[repeats % 3] - sample[(repeats + 1) % 3]).sum())  # float(): waits for the device
        repeats += 1
    t_pair = (time.perf_counter() - t0) / repeats
    estimate = n * t_embed + pairs * t_pair
    if estimate > budget_s:
        return estimate, True
    t0 = time.perf_counter()
    backend.asnumpy(wasserstein.pairwise_wemd([member(i) for i in range(n)], sampling=sampling, allow_negative=True))
    return time.perf_counter() - t0, False


def check(fast, mean, basis, points, sampling, rng, count=20):
    """Largest relative difference between fast and direct distances on sampled pairs."""
    worst = 0.0
    for _ in range(count):
        i, j = rng.choice(len(points), 2, replace=False)
        difference = np.tensordot(points[i] - points[j], basis, axes=1)
        direct = float(abs(backend.asnumpy(wasserstein.wavelet_embedding(difference, sampling=sampling,
                                                                          allow_negative=True))).sum())
        worst = max(worst, abs(fast[i, j] - direct) / direct)
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=mbook.by_size(small=[16, 32, 64], full=[32, 64, 128]))
    parser.add_argument("--n", type=int, nargs="+", default=mbook.by_size(small=[100, 300], full=[1000]))
    parser.add_argument("--k", type=int, default=2, help="dimension of the linear family")
    parser.add_argument("--direct-budget", type=float, default=mbook.by_size(small=20.0, full=60.0),
                        help="longest direct run actually measured [s]; longer ones are extrapolated")
    args = parser.parse_args()

    print(backend.describe())
    print(f"k = {args.k}; * = direct time extrapolated from timed embeddings and pairs")
    header = (f"{'grid':>6} {'coefficients':>13} {'n':>6} {'direct [s]':>12} {'precompute [s]':>15} "
              f"{'all pairs [s]':>14} {'speed-up':>10} {'max rel. diff':>14}")
    print(header)
    rng = np.random.default_rng(1)
    for size in args.sizes:
        for n in args.n:
            mean, basis, points, sampling = family(size, args.k, n)
            t0 = time.perf_counter()
            table = wemd_family.precompute(basis, sampling=sampling)
            t_pre = time.perf_counter() - t0
            t0 = time.perf_counter()
            fast = backend.asnumpy(wemd_family.pairwise(points, table))  # on the host: checked below
            t_pairs = time.perf_counter() - t0
            t_direct, extrapolated = time_direct(mean, basis, points, sampling, args.direct_budget, rng)
            worst = check(fast, mean, basis, points, sampling, rng)
            mark = "*" if extrapolated else " "
            print(f"{size:>5}³ {table.m:>13} {n:>6} {t_direct:>11.2f}{mark} {t_pre:>15.2f} {t_pairs:>14.3f} "
                  f"{t_direct / (t_pre + t_pairs):>10.0f} {worst:>14.1e}")


if __name__ == "__main__":
    main()
