"""Ptychographic reconstruction: time per position and iteration against the scan size, against py4DSTEM.

Times ``mbook.multimodal.reconstruction.reconstruct`` (single slice, probe retrieval on from the
first iteration, position correction off, mini-batches of ``--batch`` positions) on a square
raster of N x N positions with patterns of W² pixels, and prints microseconds per
position-iteration: the figure py4DSTEM quotes, about 50 µs per position-iteration for 16,384
positions of 128² patterns on one A100 (its single-slice ptychography). When py4DSTEM imports
(a benchmark-only dependency, installed apart from ``.venv``: see "py4DSTEM" below), its
``SingleslicePtychography`` runs on the same counts in the same process, on mbook's device
(``device="gpu"``, CuPy and cuFFT, when ``MBOOK_DEVICE=gpu``), with the same energy, semiangle,
defocus, scan step and object sampling, probe retrieval on, position correction off and the same
batch size; the same counts go into a py4DSTEM ``DataCube`` (patterns fft-shifted to the centre,
real-space pixel = the scan step in Å, reciprocal pixel = 1 / (W · sampling) in 1/Å, so that its
object pixel equals mbook's).

The per-iteration time of each code is the difference between runs of 3 and 1 iterations,
halved, so the one-off checks, set-up and py4DSTEM's preprocessing drop out: medians of
``--repeat`` rounds after a warm-up round, each round running every timed call once in turn
(mbook, the floor, py4DSTEM), so that all see the same load on a shared machine. Per iteration,
both codes shift the probe to each position in Fourier space (one inverse FFT per position),
make the far field (one FFT), project onto the measured amplitudes (one inverse FFT) and update
the object and the probe; mbook also carries the probe gradient back through the shift (one more
FFT per position) and forms the position gradient (unused here), py4DSTEM does neither.

The floor is the FFTs alone: a forward and an inverse FFT of a batch of ``--batch`` windows per
position, made as the reconstruction makes its FFTs (``backend.fft_module``: scipy.fft without
workers, one thread, on the CPU; cuFFT on a GPU), the least any far-field ptychography does per
position-iteration; each code's ratio to it is printed. py4DSTEM's FFTs are NumPy's on the CPU
(also one thread; complex64 under NumPy 2, complex128 under NumPy 1, which computes in double
precision), CuPy's on a GPU.

py4DSTEM's set-up and one untimed iteration run first, for each raster: if they fail (an
incompatibility of the array stack, say), the script prints the error and goes on without it.

The counts are Poisson draws (1e4 electrons per position) of the noise-free patterns of a phase
object (Gaussian blobs of 0.3 rad at random places), so that the reconstructions can be checked:
after ``--check-iter`` iterations of each code (untimed) the script prints the correlation of the
object phases over the scanned region, between the codes and with the true phase.

Run from the repository root:

    .venv/bin/python benchmarks/ptychography.py                          # 16², 32² positions; 64² patterns
    .venv/bin/python benchmarks/ptychography.py --sides 32 64 --window 128
    MBOOK_DEVICE=gpu .venv/bin/python benchmarks/ptychography.py         # 64², 128² positions; 128² patterns

py4DSTEM 0.14.18 declares ``numpy < 2``, but its single-slice ptychography imports and runs
under NumPy 2 (2.4.6 checked; its objects agree with a NumPy 1.26 venv's up to the difference of
precision described in ``benchmarks/README.md``); installed with ``--no-deps`` beside the few
dependencies that path imports, it cannot downgrade NumPy. Two imports are set aside before it
loads, below: hdf5plugin (imported only for its file readers; an empty module stands in where it
is absent, and the header says so) and pylops's CuPy and JAX back ends (pylops serves only its TV
constraint, off here). On the CPU, in a venv of its own:

    python3.11 -m venv /tmp/p4np2 && /tmp/p4np2/bin/pip install numpy scipy matplotlib tqdm threadpoolctl
    /tmp/p4np2/bin/pip install pyFFTW h5py scikit-image scikit-learn requests filelock pyyaml typing-extensions
    bash benchmarks/peers_gpu.sh && /tmp/p4np2/bin/pip install --no-deps .gpu-peers/*.whl
    /tmp/p4np2/bin/pip install --no-deps -e .
    /tmp/p4np2/bin/python benchmarks/ptychography.py

On the offline GPU machine (Python 3.12, NumPy 2, CuPy; ``benchmarks/peers_gpu.sh``, run where
there is a network, downloads the 1.8 MB of wheels it lacks into ``.gpu-peers/``;
``benchmarks/README.md`` has the exact command and its expected time), from the repository root
with ``.gpu-peers/`` copied along, mbook and py4DSTEM both on the GPU:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-peers/*.whl
    PYTHONPATH=/tmp/site:$PWD MBOOK_DEVICE=gpu python3 benchmarks/ptychography.py --sides 64 128 --window 128
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback
import types
import warnings

import numpy as np

from mbook.core import backend, grids
from mbook.electron import physics
from mbook.multimodal import ptychography, reconstruction

try:
    from timing import synchronize
except ImportError:  # run from elsewhere
    from benchmarks.timing import synchronize

# hdf5plugin only registers HDF5 compression filters with h5py, for reading Dectris and Arina files:
# py4DSTEM imports it with its file readers (py4DSTEM.io.filereaders.read_arina, and ncempy.io.dectris
# through ncempy.io), for that side effect alone, and nothing on the ptychography path uses it. Its
# wheel is 46 MB, too big to carry to an offline GPU machine with the others (benchmarks/peers_gpu.sh),
# so where it is not installed an empty module stands in for it, and the header says so: this script
# reads no file.
HDF5PLUGIN_STAND_IN = (importlib.util.find_spec("py4DSTEM") is not None
                       and importlib.util.find_spec("hdf5plugin") is None)
if HDF5PLUGIN_STAND_IN:
    sys.modules["hdf5plugin"] = types.ModuleType("hdf5plugin")
# py4DSTEM imports pylops (for its TV-denoising constraint, off here), which on import loads CuPy's and JAX's
# SciPy-like modules when it finds them; the GPU machine has both, and neither is needed here: pylops stays on
# NumPy (an environment variable set before the import overrides this).
os.environ.setdefault("CUPY_PYLOPS", "0")
os.environ.setdefault("JAX_PYLOPS", "0")
try:
    import py4DSTEM
    from py4DSTEM.process.phase import SingleslicePtychography
    PY4DSTEM_ERROR = None
except ImportError as error:  # said in the header: a peer that fails to import is not silently left out
    py4DSTEM, PY4DSTEM_ERROR = None, f"{type(error).__name__}: {error}"

SAMPLING, STEP = 0.25, 1.0  # Å
ENERGY, SEMIANGLE, DEFOCUS = 300e3, 20.0, 150.0
ELECTRONS = 1e4  # per position


def case(side, window, seed=0):
    """Counts, positions, probe, object size and true phase of an N x N raster with W² patterns."""
    margin = window // 2 * SAMPLING + 1.0
    line = margin + STEP * np.arange(side)
    positions = np.stack(np.meshgrid(line, line, indexing="ij"), axis=-1).reshape(-1, 2)
    object_gpts = (int(np.ceil((2 * margin + STEP * side) / SAMPLING)),) * 2
    rng = np.random.default_rng(seed)
    x = np.arange(object_gpts[0]) * SAMPLING
    extent = object_gpts[0] * SAMPLING
    centres = rng.uniform(0, extent, size=(int(0.2 * extent**2), 2))  # one blob per 5 Å²
    # Each blob is separable, exp(-(x-a)²/2σ²) exp(-(y-b)²/2σ²), so their sum is one matrix product of
    # the (blobs, pixels) factors, not a loop over thousands of blobs on the whole grid (5,250 of them
    # on 648² pixels for 16,384 positions of 128²).
    gauss_x, gauss_y = (np.exp(-(x[None, :] - centres[:, k:k + 1]) ** 2 / (2 * 0.5**2)) for k in (0, 1))
    phase = 0.3 * gauss_x.T @ gauss_y
    potential = backend.asarray((phase / physics.interaction_parameter(ENERGY))[None].astype(np.float32))
    grid = grids.make_grid(gpts=object_gpts, sampling=SAMPLING)
    patterns = ptychography.diffraction_intensities(potential, grid=grid, energy=ENERGY, slice_thickness=1.0,
                                                    semiangle_cutoff=SEMIANGLE, positions=positions, gpts=window,
                                                    defocus=DEFOCUS)
    counts = rng.poisson(ELECTRONS * backend.asnumpy(patterns)).astype(np.float32)  # host draw, FFT order
    probe = ptychography.centred_probe(window, sampling=SAMPLING, energy=ENERGY, semiangle_cutoff=SEMIANGLE,
                                       defocus=DEFOCUS)
    return counts, positions, probe, object_gpts, phase


def correlation(a, b):
    """Pearson correlation of two equal-shape real arrays."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def mbook_runner(counts, positions, probe, object_gpts, batch):
    """``run(iterations)``: mbook's reconstruction with the probe updated, positions fixed."""
    counts = backend.asarray(counts)

    def run(iterations):
        return reconstruction.reconstruct(counts, positions=positions, probe=probe, object_gpts=object_gpts,
                                          sampling=SAMPLING, max_num_iter=iterations, batch_size=batch,
                                          probe_from=0, positions_from=None)
    return run


def py4dstem_device():
    """py4DSTEM's ``device`` argument: ``"gpu"`` (CuPy, cuFFT) where mbook runs on the GPU, else ``"cpu"``."""
    return "gpu" if backend.get_device() == "gpu" else "cpu"


def py4dstem_runner(counts, side, window, batch):
    """``(run(iterations), ptycho)``: py4DSTEM's single-slice ptychography on the same counts.

    On mbook's device (py4DSTEM's ``device="gpu"`` needs CuPy, as mbook's).
    The DataCube holds the patterns centred (fft-shifted), real-space pixel = scan step [Å],
    reciprocal pixel = 1 / (W · sampling) [1/Å]. Preprocessing (once) is told the rotation (0) and
    transpose (none) of the simulated data instead of fitting them from the centre of mass. The
    object is a potential (a phase grating, as mbook's) without positivity; the probe is updated
    from the first iteration (``fix_probe=False``), positions fixed; no filters or denoising.
    """
    device = py4dstem_device()
    data = np.fft.fftshift(counts, axes=(-2, -1)).reshape(side, side, window, window)
    datacube = py4DSTEM.DataCube(data)
    datacube.calibration.set_R_pixel_size(STEP)
    datacube.calibration.set_R_pixel_units("A")
    datacube.calibration.set_Q_pixel_size(1 / (window * SAMPLING))
    datacube.calibration.set_Q_pixel_units("A^-1")
    ptycho = SingleslicePtychography(energy=ENERGY, datacube=datacube, semiangle_cutoff=SEMIANGLE, defocus=DEFOCUS,
                                     object_type="potential", verbose=False, device=device)
    assert ptycho._device == device, (ptycho._device, device)  # py4DSTEM computes where mbook does
    ptycho.preprocess(plot_center_of_mass=False, plot_rotation=False, plot_probe_overlaps=False,
                      force_com_rotation=0.0, force_com_transpose=False, fit_function="constant")

    def run(iterations):
        ptycho.reconstruct(num_iter=iterations, max_batch_size=batch, fix_probe=False, fix_positions=True,
                           object_positivity=False, progress_bar=False, reset=True, seed_random=0)
        return ptycho
    return run, ptycho


def interleaved_medians(runs, repeat):
    """Median wall and CPU times [s] of each ``runs[name]()`` over ``repeat`` rounds after a warm-up round.

    Each round runs every function once, in turn, so that all see the same load on a shared
    machine. The CPU time (``time.process_time``: all threads of this process) counts the work
    done, which other processes on the machine slow down much less than the wall time.
    """
    for function in runs.values():
        function()
    synchronize()
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(repeat):
        for name, function in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            synchronize()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return ({name: float(np.median(values)) for name, values in wall.items()},
            {name: float(np.median(values)) for name, values in cpu.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The sizes that matter on each device: the published 16,384 positions of 128² on a GPU.
    gpu = backend.get_device() == "gpu"
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 128] if gpu else [16, 32],
                        help="raster sides N (N² positions); default 16 32 on the CPU, 64 128 on a GPU")
    parser.add_argument("--window", type=int, default=128 if gpu else 64,
                        help="pattern pixels W (W²); default 64 on the CPU, 128 on a GPU")
    parser.add_argument("--batch", type=int, default=256, help="positions per gradient step (both codes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--check-iter", type=int, default=10, help="iterations of the untimed check run")
    parser.add_argument("--no-py4dstem", action="store_true", help="mbook and the floor only")
    args = parser.parse_args()
    use_py4 = py4DSTEM is not None and not args.no_py4dstem
    print(backend.describe())
    if use_py4:
        print(f"py4DSTEM {py4DSTEM.__version__} on device={py4dstem_device()!r} "
              "(NumPy FFTs on the CPU, CuPy's on a GPU)"
              + ("; hdf5plugin not installed: an empty module stands in (file readers only)"
                 if HDF5PLUGIN_STAND_IN else ""))
    else:
        print("py4DSTEM not run: "
              + ("--no-py4dstem" if py4DSTEM is not None else f"it does not import ({PY4DSTEM_ERROR})"))
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; batch {args.batch}; "
          f"µs per position-iteration,"
          f" wall time and (CPU:) CPU time of all threads")
    header = (f"{'positions':>9} {'pattern':>7} {'mbook':>8} {'py4DSTEM':>9} {'py4/mbook':>9} "
              f"{'CPU: mbook':>10} {'py4DSTEM':>9} {'py4/mbook':>9} "
              f"{'floor':>7} {'mbook/floor':>11} {'py4/floor':>9} "
              f"{'r(py4,mbook)':>12} {'r(mbook,true)':>13} {'r(py4,true)':>11}")
    print(header, flush=True)
    for side in args.sides:
        start = time.perf_counter()
        counts, positions, probe, object_gpts, phase = case(side, args.window)
        stages = {"data": time.perf_counter() - start}
        n = side * side
        run = mbook_runner(counts, positions, probe, object_gpts, args.batch)
        windows = backend.asarray(np.ones((min(args.batch, n), args.window, args.window), np.complex64))
        fft = backend.fft_module(windows)  # as the reconstruction calls it: scipy.fft, one thread, on the CPU
        runs = {"mbook 1": lambda: run(1), "mbook 3": lambda: run(3), "floor": lambda: fft.ifft2(fft.fft2(windows))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if use_py4:
                start = time.perf_counter()
                try:
                    run4, ptycho = py4dstem_runner(counts, side, args.window, args.batch)
                    run4(1)  # one untimed iteration: a peer that fails on this stack costs mbook's rows nothing
                except Exception as error:
                    print(f"py4DSTEM failed at {n} positions, left out from here on: "
                          f"{type(error).__name__}: {error}", flush=True)
                    traceback.print_exc(file=sys.stderr)
                    use_py4 = False
                stages["py4DSTEM set-up and 1 iteration"] = time.perf_counter() - start
            if use_py4:
                runs.update({"py4 1": lambda: run4(1), "py4 3": lambda: run4(3)})
            start = time.perf_counter()
            t, t_cpu = interleaved_medians(runs, args.repeat)
            stages["timed rounds"] = time.perf_counter() - start
            start = time.perf_counter()
            if use_py4:
                run4(args.check_iter)
        t_mbook = max(t["mbook 3"] - t["mbook 1"], 0.0) / 2 / n
        cpu_mbook = max(t_cpu["mbook 3"] - t_cpu["mbook 1"], 0.0) / 2 / n
        t_floor = t["floor"] / len(windows)
        # The scanned region, in mbook's object pixels.
        first = int(round(positions[0, 0] / SAMPLING))
        last = int(round(positions[-1, 0] / SAMPLING)) + 1
        region = (slice(first, last),) * 2
        mbook_phase = backend.asnumpy(run(args.check_iter).phase[0])
        stages["check runs"] = time.perf_counter() - start
        row = dict(n=n, mbook=t_mbook, cpu_mbook=cpu_mbook, floor=t_floor,
                   r_mbook=correlation(mbook_phase[region], phase[region]))
        if use_py4:
            row["py4"] = max(t["py4 3"] - t["py4 1"], 0.0) / 2 / n
            row["cpu_py4"] = max(t_cpu["py4 3"] - t_cpu["py4 1"], 0.0) / 2 / n
            py4_phase = backend.asnumpy(ptycho.object)  # the potential: the phase [rad] of a phase grating
            # py4DSTEM places its object so that its positions start elsewhere: shift by the difference.
            shift = np.round((positions - np.asarray(ptycho.positions)).mean(axis=0) / SAMPLING).astype(int)
            py4_region = tuple(slice(first - s, last - s) for s in shift)
            row["r_py4"] = correlation(py4_phase[py4_region], phase[region])
            row["r_both"] = correlation(py4_phase[py4_region], mbook_phase[region])
        print_row(row, args.window)
        # Where the time goes, per raster (on stderr, apart from the table): for sizing a run to a time limit.
        print(f"{n} positions: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items()),
              file=sys.stderr, flush=True)
    print(f"load average after {os.getloadavg()[0]:.1f}; "
          f"correlations of the object phase over the scanned region after {args.check_iter} iterations")
    print("py4DSTEM (published): ~50 µs per position-iteration, 16,384 positions of 128², one A100")


def print_row(row, window):
    """One line of the table, as soon as its raster is done (a run cut short keeps the rows it finished)."""
    dash = "—"
    py4 = f"{1e6 * row['py4']:9.1f}" if "py4" in row else f"{dash:>9}"
    ratio = f"{row['py4'] / row['mbook']:9.2f}" if "py4" in row else f"{dash:>9}"
    r_both = f"{row['r_both']:12.3f}" if "r_both" in row else f"{dash:>12}"
    cpu_py4 = f"{1e6 * row['cpu_py4']:9.1f}" if "cpu_py4" in row else f"{dash:>9}"
    cpu_ratio = f"{row['cpu_py4'] / row['cpu_mbook']:9.2f}" if "cpu_py4" in row else f"{dash:>9}"
    r_py4 = f"{row['r_py4']:11.3f}" if "r_py4" in row else f"{dash:>11}"
    py4_floor = f"{row['py4'] / row['floor']:9.1f}" if "py4" in row else f"{dash:>9}"
    print(f"{row['n']:>9d} {window:>6d}² {1e6 * row['mbook']:8.1f} {py4} {ratio} "
          f"{1e6 * row['cpu_mbook']:10.1f} {cpu_py4} {cpu_ratio} "
          f"{1e6 * row['floor']:7.1f} {row['mbook'] / row['floor']:11.1f} {py4_floor} "
          f"{r_both} {row['r_mbook']:13.3f} {r_py4}", flush=True)


if __name__ == "__main__":
    main()
