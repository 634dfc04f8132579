"""Electron multislice: mbook against abTEM, and against its FFT-only floor.

Two simulations of SrTiO3 [001], run by both codes in this one process:

1. the exit wave of a unit plane wave (atoms -> potential -> multislice);
2. a STEM HAADF image (atoms -> potential -> one probe per scan position ->
   multislice -> annular detector).

For each it prints the median wall time (runs of mbook and abTEM
interleaved, so a change in the machine's load hits both), the peak host
memory (tracemalloc, in a separate untimed run; on a GPU the CuPy memory
pool), the time ratio abTEM/mbook, the relative L2 difference of the two
results, and mbook's time over its FFT-only floor: the forward and inverse
FFTs the multislice cannot avoid (two per slice per wave, on mbook's own
batch shapes, in place, planned with the fastest library installed, as
mbook plans them: FFTW through pyFFTW when it is there, else scipy.fft on
the CPU; cuFFT through CuPy on a GPU). Below the table, diagnostics split the
difference between the codes into its causes. Run:

    .venv/bin/python benchmarks/electron.py                  # small, ~1-2 min on 2 cores
    .venv/bin/python benchmarks/electron.py --size medium --repeat 2   # ~8 min
    .venv/bin/python benchmarks/electron.py --size full      # 540² grid, 1521 probes, 40 slices
    MBOOK_DEVICE=gpu .venv/bin/python benchmarks/electron.py --abtem-device gpu

abTEM comes from requirements-bench.txt (benchmark only; mbook never imports
it); ``--no-abtem`` runs mbook and the floor alone. Timings are medians in
one process on a possibly shared machine; they are not tests.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from timing import synchronize  # benchmarks/timing.py

from mbook.core import backend, fft_plans, fused_fft
from mbook.electron import multislice, potentials, scattering_factors, stem, structures

# ----------------------------------------------------------------------------- the experiment

LATTICE = structures.SRTIO3_LATTICE  # Å
ENERGY = 200e3  # eV
SEMIANGLE_CUTOFF = 20.0  # mrad
SLICE_THICKNESS = LATTICE / 2  # Å: one atomic plane (SrO or TiO2) per slice
# 54 points per 3.905 Å cell (0.0723 Å): every atom of SrTiO3 (at 0 and a/2) sits exactly on a grid
# point, which takes one difference between the codes out (see DIFFERENCES). The grid then reaches
# (2/3) λ / (2 dx) = 115.6 mrad at 200 kV after antialiasing, so the "HAADF" annulus stops at 110 mrad;
# a 70-200 mrad detector would need dx <= 0.042 Å (934² points at full size).
GPTS_PER_CELL = 54
HAADF = (60.0, 110.0)  # mrad, inner >= 3 α
POSITIONS_PER_CELL = 13  # step 3.905/13 = 0.300 Å, finer than the probe's Nyquist step λ/(4α) = 0.314 Å

#: cells = SrTiO3 unit cells along x, y, z; scan_cells = unit cells scanned along x and y (centred).
SIZES = {
    "small": dict(cells=(4, 4, 10), scan_cells=1),   # 216², 20 slices, 169 probes
    "medium": dict(cells=(6, 6, 20), scan_cells=2),  # 324², 40 slices, 676 probes
    "full": dict(cells=(10, 10, 20), scan_cells=3),  # 540², 40 slices, 1521 probes (the issue's size)
}

DIFFERENCES = """\
What differs between the two codes, and what it does to the results:
- Potential: both use the same Kirkland (or Lobato) f_e(k) and the infinite projection, built in
  Fourier space. mbook evaluates the structure factor exp(-2πi k·r_j) exactly; abTEM places each atom
  as a bilinearly interpolated delta on the grid, FFTs it and divides by sin(|k dx|)/|k dx| to undo
  the interpolation on average (Van den Broek et al. 2015). For an atom on a grid point (the default
  here) the delta is exact, so abTEM's division raises its potential at high k by up to 1.9 % at the
  2/3 cutoff (4 % at Nyquist); the diagnostic "potential, abTEM vs mbook's x 1/sinc" above shows
  this is the whole potential difference. Off the grid the bilinear weights low-pass each atom by
  a factor that depends on its sub-pixel offset: for one Sr atom 0.5 px off, abTEM's potential at 2/3
  of Nyquist is 0.52x the exact one (0.68x at 0.25 px). With --gpts-per-cell 51 (210² grid, atoms
  off the grid points) abTEM's HAADF mean is then 25 % below mbook's (0.00081 vs 0.00108), while
  mbook on abTEM's potential still matches abTEM to 3e-6: the difference is all in the potential.
- Slicing: the same rule in both, atom j in slice floor(z_j / dz) (boundary atoms to the next slice).
- Multislice: the same recursion psi <- F^-1[p F[t psi]], transmission exp(iσv) band-limited to 2/3
  of Nyquist, Fresnel propagator times the same sharp 2/3 aperture (abTEM's default 1 % cosine taper
  is set to 0 here, and its cutoff to 2/3 (1 + 1e-7): abTEM keeps |k| < cutoff where mbook keeps
  |k| <= cutoff, and on these grids the cutoff passes exactly through 4 Bragg beams; left as it is,
  that alone makes the exit waves differ by 4e-3), a propagation after the last slice too, unit
  incident amplitude, arrays [x, y]. Wavelength and σ agree to 6e-9 relative.
- Probe: the same hard aperture (abTEM's soft edge turned off with soft=False), no aberrations,
  sum |psi|² = 1, the same scan positions (GridScan with endpoint=False = mbook's raster; checked).
- Detector: both integrate |F[psi]|² / N over inner <= α < outer [mrad]: fraction of the beam.
- Precision: both float32 / complex64; both use FFTW when pyFFTW is installed, but their plans (chosen
  by FFTW_MEASURE timings) may differ and round differently, ~1e-6 relative.
So the printed relative differences are the potential's 1/sinc factor, propagated ("mbook on
abTEM's potential" leaves only float32 rounding): abTEM's potential is slightly stronger at high k,
so its exit wave scatters a little more to high angles and its HAADF signal is ~1 % higher."""


def specimen(size):
    """The atoms, mbook's grid for them, and the scan positions of one size."""
    spec = SIZES[size]
    atoms = structures.srtio3(repeat=spec["cells"])
    grid = potentials.potential_grid(atoms, LATTICE / GPTS_PER_CELL)
    n = spec["scan_cells"]
    lo = (LATTICE * ((spec["cells"][0] - n) // 2), LATTICE * ((spec["cells"][1] - n) // 2))
    hi = (lo[0] + n * LATTICE, lo[1] + n * LATTICE)
    # On the host: abTEM's positions are compared with them (mbook.stem.scan moves them to the device).
    positions = backend.asnumpy(stem.scan_positions(start=lo, end=hi, sampling=LATTICE / POSITIONS_PER_CELL))
    return atoms, grid, positions, (lo, hi)


# ----------------------------------------------------------------------------- the runs



def mbook_exit_wave(atoms, parametrization, timings):
    """:func:`mbook.electron.multislice.exit_wave`, step by step so that the potential is timed apart."""
    start = time.perf_counter()
    potential, grid = potentials.projected_potential(atoms, LATTICE / GPTS_PER_CELL, SLICE_THICKNESS,
                                                     parametrization=parametrization, return_grid=True)
    synchronize()
    timings["potential"] = time.perf_counter() - start
    xp = backend.get_array_module(potential)
    psi = multislice.propagate_slices(xp.ones(grid.gpts, xp.complex64), potential, grid=grid, energy=ENERGY,
                                      slice_thickness=potentials.slice_thicknesses(atoms, SLICE_THICKNESS))
    return backend.asnumpy(psi)


def mbook_haadf(atoms, positions, parametrization, batch, timings, potential=None):
    """Potential, then :func:`mbook.electron.stem.scan` with the HAADF annulus; ``potential`` skips the first."""
    start = time.perf_counter()
    if potential is None:
        potential = potentials.projected_potential(atoms, LATTICE / GPTS_PER_CELL, SLICE_THICKNESS,
                                                   parametrization=parametrization)
    synchronize()
    timings["potential"] = time.perf_counter() - start
    grid = potentials.potential_grid(atoms, LATTICE / GPTS_PER_CELL)
    out = stem.scan(potential, grid=grid, energy=ENERGY,
                    slice_thickness=potentials.slice_thicknesses(atoms, SLICE_THICKNESS),
                    semiangle_cutoff=SEMIANGLE_CUTOFF, positions=positions, detectors={"HAADF": HAADF},
                    max_batch=batch)
    return backend.asnumpy(out["HAADF"])  # to the host, as abTEM's image is, inside the timing


def abtem_potential(atoms, grid, parametrization, device):
    import abtem

    # gpts given (not sampling): abTEM's grid is then exactly mbook's, extent = the cell.
    return abtem.Potential(atoms, gpts=grid.gpts, slice_thickness=SLICE_THICKNESS,
                           parametrization=parametrization, projection="infinite", device=device)


def _abtem_compute(lazy):
    # abTEM's own parallelism: dask's threaded scheduler (one worker per core by default) over
    # chunks of waves, each FFT single-threaded FFTW (abTEM's defaults fft: fftw, fftw.threads: 1).
    return lazy.compute(scheduler="threads", progress_bar=False)


def abtem_exit_wave(atoms, grid, parametrization, device, timings):
    import abtem

    potential = abtem_potential(atoms, grid, parametrization, device)
    waves = _abtem_compute(abtem.PlaneWave(energy=ENERGY, device=device).multislice(potential))
    return backend.asnumpy(waves.array)


def abtem_haadf(atoms, grid, scan, parametrization, device, timings, batch=None):
    """abTEM's documented STEM call. ``batch=None``: all defaults (lazy potential rebuilt for every
    chunk of probes, max_batch="auto"); otherwise the potential is built once first and the probes
    run in chunks of ``batch`` (--abtem-batch), the faster way on a few cores."""
    import abtem

    start = time.perf_counter()
    potential = abtem_potential(atoms, grid, parametrization, device)
    if batch is not None:
        potential = _abtem_compute(potential.build())
        timings["potential"] = time.perf_counter() - start
    probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=SEMIANGLE_CUTOFF, soft=False, device=device)
    grid_scan = abtem.GridScan(start=scan[0], end=scan[1], gpts=scan[2], endpoint=False)
    detector = abtem.AnnularDetector(inner=HAADF[0], outer=HAADF[1])
    image = probe.scan(potential, scan=grid_scan, detectors=detector,
                       max_batch="auto" if batch is None else batch)
    return backend.asnumpy(_abtem_compute(image).array)


def without_callbacks(function):
    """``function`` run with the cuFFT callbacks off (:mod:`mbook.core.fused_fft`): the products as passes."""
    def run(timings):
        previous = fused_fft.enabled()
        fused_fft.set_enabled(False)
        try:
            return function(timings)
        finally:
            fused_fft.set_enabled(previous)

    return run


def fft_floor(shape, n_slices, n_batches=1):
    """The FFTs of ``n_slices`` multislice steps on ``n_batches`` waves of ``shape``: forward then inverse
    per slice, in place, planned with the fastest FFT library installed (mbook's own plans). Batches are
    shared over one thread per core, each with single-threaded FFTs, as mbook's scan does; one batch
    uses every core in its FFTs."""
    def steps():
        plan = fft_plans.fft2_plan(shape)
        for _ in range(n_slices):
            plan.forward()
            plan.backward()

    if n_batches == 1:
        return steps

    def run():
        def batch(_):
            with backend.fft_workers(1):
                steps()

        with ThreadPoolExecutor(backend.cpu_threads()) as pool:
            list(pool.map(batch, range(n_batches)))

    return run


# ----------------------------------------------------------------------------- measuring


def timed(function):
    synchronize()
    timings = {}
    start, cpu = time.perf_counter(), time.process_time()
    result = function(timings)
    synchronize()
    timings["total"] = time.perf_counter() - start
    timings["cpu"] = time.process_time() - cpu  # all threads of this process, user + system
    return result, timings


def peak_memory(function, on_gpu):
    """Peak bytes of one untimed run, and its result: tracemalloc (host), or the CuPy memory pool (GPU)."""
    if on_gpu:
        import cupy

        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        result = function({})
        synchronize()
        return pool.total_bytes(), result  # the pool keeps freed blocks: what it holds at the end is its peak
    tracemalloc.start()
    try:
        result = function({})
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def relative_difference(other, reference):
    other, reference = np.asarray(other), np.asarray(reference)
    if other.shape != reference.shape:
        raise ValueError(f"results of shapes {other.shape} and {reference.shape} cannot be compared")
    return float(np.linalg.norm(other - reference) / np.linalg.norm(reference))


def main():
    global GPTS_PER_CELL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each code (after a warm-up)")
    parser.add_argument("--parametrization", choices=scattering_factors.PARAMETRIZATIONS, default="kirkland")
    parser.add_argument("--gpts-per-cell", type=int, default=GPTS_PER_CELL,
                        help="grid points per 3.905 Å (even: atoms on grid points; mbook rounds the grid "
                             "up to an FFT-friendly size)")
    parser.add_argument("--batch", type=int, default=None,
                        help="probes per multislice batch (default stem.cpu_batch(grid) on the CPU, up to "
                             "128 on a GPU)")
    parser.add_argument("--abtem-batch", type=int, default=16,
                        help="probes per batch for abTEM with its potential built first (16 ran fastest for "
                             "abTEM among 4, 8, 16, 32 and 64 on the small and medium sizes on 2 cores)")
    parser.add_argument("--abtem-device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--no-abtem", action="store_true", help="mbook and the floor only")
    parser.add_argument("--cases", nargs="+", choices=("exit", "haadf"), default=["exit", "haadf"],
                        help="which simulations to run (the diagnostics need both)")
    args = parser.parse_args()
    GPTS_PER_CELL = args.gpts_per_cell
    os.environ.setdefault("MBOOK_PROGRESS", "0")

    on_gpu = backend.get_device() == "gpu"
    atoms, grid, positions, (lo, hi) = specimen(args.size)
    n_slices = len(potentials.slice_thicknesses(atoms, SLICE_THICKNESS))
    n_probes = positions.shape[0] * positions.shape[1]
    batch = min(n_probes, args.batch or (128 if on_gpu else stem.cpu_batch(grid)))
    param = args.parametrization
    scan = (lo, hi, positions.shape[:2])

    print(backend.describe())
    cells = SIZES[args.size]["cells"]
    print(f"SrTiO3 [001] {cells[0]}x{cells[1]}x{cells[2]} cells ({len(atoms)} atoms), {ENERGY / 1e3:g} kV, "
          f"{param}, infinite projection, {n_slices} slices of {SLICE_THICKNESS:.4f} Å, "
          f"gpts {grid.gpts[0]}x{grid.gpts[1]} at {grid.sampling[0]:.4f} Å")
    print(f"STEM: {SEMIANGLE_CUTOFF:g} mrad probe, HAADF {HAADF[0]:g}-{HAADF[1]:g} mrad, "
          f"{positions.shape[0]}x{positions.shape[1]} = {n_probes} positions, step "
          f"{LATTICE / POSITIONS_PER_CELL:.3f} Å, mbook batches of {batch} probes")

    runs = {  # "case/code": function(timings) -> result
        "exit/mbook": (lambda t: mbook_exit_wave(atoms, param, t)),
        "haadf/mbook": (lambda t: mbook_haadf(atoms, positions, param, batch, t)),
    }
    if on_gpu:  # the same scan with the products as separate passes: what the cuFFT callbacks save
        runs["haadf/mbook plain"] = without_callbacks(runs["haadf/mbook"])
    if not args.no_abtem:
        import abtem
        import dask

        # mbook's sharp 2/3 aperture keeps |k| <= cutoff, abTEM's keeps |k| < cutoff: with gpts a multiple
        # of 3 (216, 324, 540) the cutoff passes through grid points (Bragg beams of SrTiO3 here), which
        # abTEM would drop. A cutoff 1e-7 above 2/3 keeps them, as mbook does; no other point moves.
        abtem.config.set({"antialias.taper": 0.0, "antialias.cutoff": 2 / 3 * (1 + 1e-7)})
        device = args.abtem_device
        runs["exit/abTEM"] = lambda t: abtem_exit_wave(atoms, grid, param, device, t)
        runs["haadf/abTEM"] = lambda t: abtem_haadf(atoms, grid, scan, param, device, t)
        runs["haadf/abTEM built"] = lambda t: abtem_haadf(atoms, grid, scan, param, device, t,
                                                          batch=args.abtem_batch)
        grid_scan = abtem.GridScan(start=lo, end=hi, gpts=positions.shape[:2], endpoint=False)
        offset = np.abs(np.asarray(grid_scan.get_positions()) - positions).max()
        print(f"abTEM {abtem.__version__} on {device.upper()}: fft {abtem.config.get('fft')} with "
              f"{abtem.config.get('fftw.threads')} thread(s) per transform, dask threaded scheduler with "
              f"{dask.config.get('num_workers', None) or os.cpu_count()} workers, precision "
              f"{abtem.config.get('precision')}; scan positions agree to {offset:.1e} Å")
    print(f"Fair play: same physics and grid (see the notes below), each code's default parallelism on "
          f"{os.cpu_count()} cores, runs interleaved mbook/abTEM {args.repeat}x after a warm-up, medians; "
          f"load average {os.getloadavg()[0]:.2f} at start")

    floors = {"exit/floor": fft_floor(grid.gpts, n_slices)}
    n_full, rest = divmod(n_probes, batch)
    on_threads = not on_gpu and backend.cpu_threads() > 1
    floors["haadf/floor batch"] = fft_floor((batch,) + grid.gpts, n_slices, n_full if on_threads else 1)
    if rest:
        floors["haadf/floor rest"] = fft_floor((rest,) + grid.gpts, n_slices)

    runs = {name: f for name, f in runs.items() if name.split("/")[0] in args.cases}
    floors = {name: f for name, f in floors.items() if name.split("/")[0] in args.cases}
    # The first round warms up (FFT plans, numba, caches), gives the results that are compared, and
    # measures the peak memory (tracemalloc slows Python-level allocations, so it is never timed).
    results, memory = {}, {}
    for name, function in runs.items():
        memory[name], results[name] = peak_memory(function, args.abtem_device == "gpu" if "abTEM" in name
                                                  else on_gpu)
    for function in floors.values():
        function()
    names = list(runs) + list(floors)
    times, cpus, parts = {name: [] for name in names}, {name: [] for name in names}, {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, function in list(runs.items()) + [(k, (lambda t, f=f: f())) for k, f in floors.items()]:
            _, timing = timed(function)
            times[name].append(timing["total"])
            cpus[name].append(timing["cpu"])
            if name in parts:
                parts[name].append(timing.get("potential", np.nan))
    cpu = {name: float(np.median(values)) for name, values in cpus.items()}
    median = {name: float(np.median(values)) for name, values in times.items()}
    full_batches = 1 if on_threads else n_full  # a threaded floor already ran all full batches
    floor = {"exit": median.get("exit/floor", np.nan),
             "haadf": full_batches * median.get("haadf/floor batch", np.nan)
             + (median.get("haadf/floor rest", np.nan) if rest else 0.0)}

    print()
    print(f"{'case':<11} {'code':<34} {'time [s]':>9} {'CPU [s]':>8} {'potential':>10} {'peak [MiB]':>11} "
          f"{'abTEM/mbook':>12} {'rel. diff':>10} {'/ floor':>8}")
    labels = {"mbook": "mbook", "mbook plain": "mbook, products not fused",
              "abTEM": "abTEM, defaults (lazy potential)",
              "abTEM built": f"abTEM, potential built, batch {args.abtem_batch}"}
    for case, title in (("exit", "exit wave"), ("haadf", "HAADF scan")):
        if case not in args.cases:
            continue
        reference = results[f"{case}/mbook"]
        for code in ("mbook", "mbook plain", "abTEM", "abTEM built"):
            name = f"{case}/{code}"
            if name not in runs:
                continue
            pot = float(np.median(parts[name]))
            row = (f"{title:<11} {labels[code][:34]:<34} {median[name]:>9.3f} {cpu[name]:>8.2f} "
                   f"{('-' if math.isnan(pot) else f'{pot:.3f}'):>10} {memory[name] / 2**20:>11.1f} ")
            if code == "mbook":
                row += f"{'':>12} {'':>10} {median[name] / floor[case]:>8.2f}"
            elif code == "mbook plain":  # the fused transforms must give the plain passes' image
                row += (f"{median[name] / median[f'{case}/mbook']:>12.2f} "
                        f"{relative_difference(results[name], reference):>10.2e} {median[name] / floor[case]:>8.2f}")
            else:
                row += (f"{median[name] / median[f'{case}/mbook']:>12.2f} "
                        f"{relative_difference(results[name], reference):>10.2e} {'':>8}")
            print(row)
        shape = "1" if case == "exit" else f"{batch}"
        floor_cpu = (cpu["exit/floor"] if case == "exit" else
                     full_batches * cpu["haadf/floor batch"] + (cpu["haadf/floor rest"] if rest else 0.0))
        print(f"{title:<11} {'FFT floor: 2 FFTs/slice, ' + shape + ' wave(s)':<34} {floor[case]:>9.3f} "
              f"{floor_cpu:>8.2f}")
    print("time: median wall time of the whole computation from atoms; CPU: median CPU time of all its "
          "threads;\n"
          "potential: the part spent building "
          "the potential ('-': built lazily inside the\n"
          "multislice); peak: tracemalloc peak of the warm-up run (NumPy and pyFFTW buffers; not pocketfft's or\n"
          "FFTW's internal scratch); abTEM/mbook: ratio of the times (> 1: mbook is faster); rel. diff: "
          "||abTEM - mbook||\n/ ||mbook||; / floor: mbook's time over the FFTs alone (for one plane wave the "
          "floor is small next to\nbuilding the potential and transmission functions, so that ratio "
          "mostly measures the setup).")

    if on_gpu:
        print(f"cuFFT callbacks ({fused_fft.ENV_VARIABLE}; used from {fused_fft.MIN_ELEMENTS} elements per batch): "
              + (", ".join(f"{nx}x{ny} {'passed their check' if ok else 'FAILED their check'}"
                           for (nx, ny), ok in fused_fft.status().items()) or "not used (batches too small)")
              + "; 'mbook, products not fused' runs the same scan with them off")
    if not args.no_abtem and len(args.cases) == 2:
        diagnostics(atoms, grid, positions, results, param, batch, args.abtem_device)
        print()
        print(DIFFERENCES)


def diagnostics(atoms, grid, positions, results, param, batch, device):
    """Split the difference between the codes: potential vs propagation."""
    from abtem.integrals import sinc  # only to show that 1/sinc is the whole potential difference

    print("\nWhere the differences come from (one extra run each):")
    v_mbook = backend.asnumpy(potentials.projected_potential(atoms, LATTICE / GPTS_PER_CELL, SLICE_THICKNESS,
                                                             parametrization=param))
    built = _abtem_compute(abtem_potential(atoms, grid, param, device).build())
    v_abtem = backend.asnumpy(built.array)
    print(f"  potential, abTEM vs mbook:                       {relative_difference(v_abtem, v_mbook):.2e}")
    factor = backend.asnumpy(sinc(grid.gpts, grid.sampling)) / (grid.sampling[0] * grid.sampling[1])
    v_sinc = np.fft.ifft2(np.fft.fft2(v_mbook) / factor).real
    print(f"  potential, abTEM vs mbook's x 1/sinc (abTEM's):  {relative_difference(v_abtem, v_sinc):.2e}")
    xp = backend.xp
    psi = multislice.propagate_slices(xp.ones(grid.gpts, xp.complex64), xp.asarray(v_abtem), grid=grid,
                                      energy=ENERGY,
                                      slice_thickness=potentials.slice_thicknesses(atoms, SLICE_THICKNESS))
    print(f"  exit wave, abTEM vs mbook on abTEM's potential:  "
          f"{relative_difference(results['exit/abTEM'], backend.asnumpy(psi)):.2e}")
    image = mbook_haadf(atoms, positions, param, batch, {}, potential=xp.asarray(v_abtem))
    print(f"  HAADF, abTEM vs mbook on abTEM's potential:      "
          f"{relative_difference(results['haadf/abTEM'], image):.2e}")
    print(f"  HAADF mean: mbook {results['haadf/mbook'].mean():.5f}, abTEM {results['haadf/abTEM'].mean():.5f} "
          "(fraction of the beam)")


if __name__ == "__main__":
    main()
