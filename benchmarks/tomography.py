"""Projector throughput: mbook.tomography against ASTRA on the same tilt-series geometry.

Projections per second of a cubic volume of N³ voxels (float32) for a tilt series about y
(±70°), by

- ``TiltProjector.forward``: the per-angle matrices applied to every (z, x) plane in one
  matrix product (the operator the reconstructions use); its one-off build is timed apart;
- ``project``: the general ray-driven trilinear projector (any rotations), the same discrete
  operator for these rotations;
- ASTRA (``astra-toolbox``, benchmark-only, never imported by mbook), when it imports: on the
  CPU its 2D parallel-beam ``linear`` (Joseph) projector applied plane by plane, the same
  geometry; with CUDA, its 3D ``FP3D_CUDA`` on the whole volume.

Run from the repository root:

    .venv/bin/python benchmarks/tomography.py                      # 128³ and 256³
    .venv/bin/python benchmarks/tomography.py --sizes 128 --angles 32
    MBOOK_DEVICE=gpu .venv/bin/python benchmarks/tomography.py     # needs CuPy

ASTRA: ``pip install astra-toolbox`` (its wheels pull the CUDA runtime and cuFFT even for the
CPU). The TiltProjector's matrices take N_angles N³ numbers: at 256³ the angles are batched
so that each batch stays within ``MBOOK_MEMORY_GB`` (throughput is per projection).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from mbook.core import backend, progress
from mbook.tomography import projector

try:
    from timing import median_time
except ImportError:  # run from elsewhere
    from benchmarks.timing import median_time


def _astra():
    try:
        import astra
    except Exception as err:  # ImportError, or a missing CUDA runtime library
        return None, f"ASTRA not available ({type(err).__name__}: {err})"
    return astra, f"ASTRA {astra.__version__} (CUDA: {astra.use_cuda()})"


def astra_cpu(astra, volume, angles):
    """ASTRA's 2D CPU 'linear' projector on every y plane: (N_angles, ny, nx)."""
    nz, ny, nx = volume.shape
    vol_geom = astra.create_vol_geom(nz, nx)
    proj_geom = astra.create_proj_geom("parallel", 1.0, nx, np.radians(angles))
    projector_id = astra.create_projector("linear", proj_geom, vol_geom)
    out = np.empty((len(angles), ny, nx), dtype=np.float32)
    for j in range(ny):
        sino_id, sino = astra.create_sino(np.ascontiguousarray(volume[:, j, :]), projector_id)
        out[:, j, :] = sino
        astra.data2d.delete(sino_id)
    astra.projector.delete(projector_id)
    return out


def astra_gpu(astra, volume, angles):
    """ASTRA's 3D parallel-beam forward projection on the GPU."""
    nz, ny, nx = volume.shape
    vol_geom = astra.create_vol_geom(ny, nx, nz)
    proj_geom = astra.create_proj_geom("parallel3d", 1.0, 1.0, ny, nx, np.radians(angles))
    sino_id, sino = astra.create_sino3d_gpu(volume, proj_geom, vol_geom)
    astra.data3d.delete(sino_id)
    return sino


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--angles", type=int, default=64, help="projections in the tilt series")
    parser.add_argument("--ray-angles", type=int, default=4, help="projections for the general projector")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    astra, astra_line = _astra()
    print(backend.describe())
    print(astra_line)
    print(f"load average {os.getloadavg()[0]:.1f} on {backend.cpu_threads()} cores; tilt series ±70°, float32")
    print(f"{'N':>5s} {'method':34s} {'angles':>6s} {'time [s]':>9s} {'proj/s':>9s}")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        host = rng.random((n, n, n), dtype=np.float32)
        volume = backend.asarray(host)
        angles = np.linspace(-70.0, 70.0, args.angles)
        # Batches of angles whose matrices fit the memory budget (with room for the volume).
        per_angle = n * n * n * 4
        batch = progress.plan_batches(n_items=args.angles, bytes_per_item=per_angle, fixed_bytes=4 * n**3)
        parts = [angles[i:i + batch] for i in range(0, args.angles, batch)]
        start = time.perf_counter()
        tilts = [projector.TiltProjector(volume.shape, part, dtype=np.float32) for part in parts]
        build = time.perf_counter() - start
        seconds, _ = median_time(lambda: [t.forward(volume) for t in tilts], args.repeat)
        print(f"{n:5d} {'mbook TiltProjector (build)':34s} {args.angles:6d} {build:9.3f} {'':>9s}")
        print(f"{n:5d} {'mbook TiltProjector.forward':34s} {args.angles:6d} {seconds:9.3f} "
              f"{args.angles / seconds:9.1f}")
        seconds, _ = median_time(lambda: tilts[0].adjoint(tilts[0].forward(volume)), args.repeat)
        print(f"{n:5d} {'mbook forward + adjoint':34s} {len(parts[0]):6d} {seconds:9.3f} "
              f"{len(parts[0]) / seconds:9.1f}")
        ray_angles = np.linspace(-70.0, 70.0, args.ray_angles)
        rotations = projector.tilt_rotations(ray_angles)
        seconds, _ = median_time(lambda: projector.project(volume, rotations), max(1, args.repeat // 2))
        print(f"{n:5d} {'mbook project (ray-driven)':34s} {args.ray_angles:6d} {seconds:9.3f} "
              f"{args.ray_angles / seconds:9.1f}")
        if astra is not None:
            seconds, _ = median_time(lambda: astra_cpu(astra, host, angles), args.repeat)
            print(f"{n:5d} {'ASTRA 2D linear, CPU, plane by plane':34s} {args.angles:6d} {seconds:9.3f} "
                  f"{args.angles / seconds:9.1f}")
            if astra.use_cuda():
                seconds, _ = median_time(lambda: astra_gpu(astra, host, angles), args.repeat)
                print(f"{n:5d} {'ASTRA FP3D_CUDA (host in and out)':34s} {args.angles:6d} {seconds:9.3f} "
                      f"{args.angles / seconds:9.1f}")
        del tilts
    print("proj/s: projections of the whole volume per second (median of --repeat runs)")


if __name__ == "__main__":
    main()
