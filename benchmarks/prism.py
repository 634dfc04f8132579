"""PRISM and the Lattice Multislice Algorithm against multislice: error, time, memory.

One HAADF image of SrTiO3 [001] (100 keV, 25 mrad, 70-200 mrad) computed by
multislice (:func:`mbook.electron.stem.scan`), by PRISM at several
interpolation factors (:mod:`mbook.electron.prism`) and by the LMA at several
patch sizes (:mod:`mbook.electron.lma`). For each it prints the median wall
time (S-matrix or basis included), the speed-up over multislice, the relative
HAADF error against multislice, the bytes of the S-matrix or basis, the
peak memory (tracemalloc on the CPU, CuPy's memory pool on a GPU: of a
separate untimed run, or at a size run once of the warm-up run, and for the
multislice reference of its one timed run on a GPU, none on the CPU) and the
seconds of the build. Below the table: for each LMA patch, the fastest PRISM whose
error is at most the LMA's, with the ratios of time and memory (the speed-up at
matched error). Run:

    .venv/bin/python benchmarks/prism.py                     # small: 2x2 cells, 8x8 probes
    .venv/bin/python benchmarks/prism.py --size full         # 4x4 cells, 64x64 probes, 2 nm
    .venv/bin/python benchmarks/prism.py --size full --only PRISM   # PRISM and multislice alone
    MBOOK_DEVICE=gpu .venv/bin/python benchmarks/prism.py --size full
    MBOOK_DEVICE=gpu python3 benchmarks/prism.py --size gpu          # 16x16 cells, 256x256 probes, f 2-16
    MBOOK_MEMORY_GB=6 .venv/bin/python benchmarks/prism.py --size gpu --scan 8 --factors 4 8 16   # its errors

The ``gpu`` size is the geometry where PRISM can be fast *and* accurate: a
62.5 Å field (1024² pixels) scanned all over (256x256 probes, 0.24 Å apart).
On a perfect crystal, PRISM with factor ``f`` on an ``L``-wide cell equals
multislice on an ``L/f``-wide cell (the beams of the sub-lattice are those of
that cell), so its error is the wrap-around error of a cell ``L/f`` wide: below
1 % from 4 unit cells (15.6 Å) on, i.e. ``f = 4`` here. ``--scan N`` puts N x N
probes over the unit cell in the middle of the supercell instead (the error is
a property of each probe: a cheap check of the errors on the CPU), ``--cells``
changes the supercell (same scan density) and ``--factors`` the factors. At this
size each PRISM scan runs in batches of at most 64 probes (the library's on the
CPU) and of 1,024 (the library's on a GPU, where many small batches cost kernel
launches; ``--batches``), once after a warm-up that is also the peak-memory run. A size may
name a memory budget, used on a GPU when ``MBOOK_MEMORY_GB`` is not set (at
most 85 % of the device's free memory); a method over the budget is skipped
with the library's message. Rows print as they are measured.

With ``--abtem``, abTEM's PRISM (``abtem.SMatrix``) runs the same image at the
same interpolation factors on the same grid, scan and detector, with abTEM's own
multislice (``abtem.Probe.scan``) as its reference: each code's PRISM error is
measured against its own multislice, so the two are compared at matched error
(the potentials' parametrizations differ slightly, and the cross-code difference
is printed apart). abTEM is a benchmark-only dependency (``requirements-bench.txt``),
e.g. in its own environment:

    python3.11 -m venv /tmp/abvenv && /tmp/abvenv/bin/pip install abtem==1.0.11 -e .
    /tmp/abvenv/bin/python benchmarks/prism.py --abtem

With ``--specimen particle`` the image is of a specimen without a period: a
gold truncated octahedron on a 10 Å amorphous carbon film
(:func:`mbook.electron.structures.supported_particle`), the field ``--gpts``
pixels wide at the same 0.061 Å sampling (size small: 192², 0.8 nm of gold,
24x24 probes; full: 384², 1.6 nm, 64x64 probes; gpu: 768², 1.6 nm, 64x64
probes, PRISM f = 1, 2, 4 and the LMA at p = 96 and 128; probes over the
particle's box plus 1 Å, ``--scan N`` for N x N of them). There PRISM's periodic copies of
the probe see other atoms than the probe does, and PRISM at f = 1's window is
the whole field, so its scan per probe grows with the field; the LMA's does not:

    .venv/bin/python benchmarks/prism.py --size full --specimen particle
    MBOOK_MEMORY_GB=8 .venv/bin/python benchmarks/prism.py --size full --specimen particle --gpts 512 --scan 32

Timings are medians in one process on a possibly shared machine; they are
not tests.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from timing import median_time, synchronize  # benchmarks/timing.py

from mbook.core import backend, progress
from mbook.electron import lma, potentials, prism, prism_scan, stem, structures

ENERGY, ALPHA, A, PX, STEP = 100e3, 25.0, structures.SRTIO3_LATTICE, 64, 8
HAADF = {"HAADF": (70.0, 200.0)}
SIZES = {  # cells across, cells along the beam, probes per axis over `span` cells, factors, patches
    "small": dict(cells=2, thick=5, scan=8, factors=(1, 2, 4), patches=(32, 48, 64)),
    "full": dict(cells=4, thick=5, scan=64, factors=(1, 2, 4, 8), patches=(64, 96, 128)),
    # PRISM alone, over the whole field; f = 1 (a 44 GiB S-matrix, exact) is left out: shown at the sizes above.
    # f = 2 last: the slowest of them, the least needed (f = 4 is the largest factor below 1 % error).
    # Each PRISM scan twice: in batches of 64 probes (the CPU's) and of 1,024 (the GPU's: fewer, larger kernels).
    "gpu": dict(cells=16, thick=5, scan=256, span=16, factors=(4, 8, 16, 2), patches=(), repeat=1, memory_gb=64,
                peak_in_warmup=True, batches=(64, 1024)),
}
PARTICLE = {  # --specimen particle: field [pixels], gold atoms an edge of the octahedron, probes per axis over it
    "small": dict(gpts=192, length=4, scan=24),
    "full": dict(gpts=384, length=6, scan=64),
    # The field where the LMA overtook PRISM on a 2-core CPU (46.9 Å, the same particle; see the README), with
    # PRISM f = 1 (a 14 GiB S-matrix) added.
    "gpu": dict(gpts=768, length=6, scan=64, factors=(1, 2, 4), patches=(96, 128)),
}


def peak_bytes(run):
    """Peak memory of ``run()`` [bytes]: CuPy's pool on a GPU, tracemalloc on the CPU."""
    if backend.get_device() == "gpu":
        pool = backend.xp.get_default_memory_pool()
        pool.free_all_blocks()
        before = pool.used_bytes()
        run()
        synchronize()
        return pool.total_bytes() - before
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def time_with_peak(run, repeat, warmup=None):
    """As :func:`timing.median_time`, with the warm-up run as the peak-memory run: ``(time, result, peak)``.

    One run fewer than a warm-up and a separate peak run; the peak then includes what the first run
    allocates for good (pyFFTW's or cuFFT's plans). With ``warmup`` (a small run of the same code, which
    compiles its kernels and makes its plans) the peak run is timed too: one run of a long reference.
    """
    result = []
    if warmup is not None:
        warmup()
        synchronize()
        start = time.perf_counter()
        if backend.get_device() == "gpu":  # the pool's count costs nothing
            peak = peak_bytes(lambda: result.append(run()))
        else:  # tracemalloc would slow the timed run: no peak
            result.append(run())
            synchronize()
            peak = float("nan")
        return time.perf_counter() - start, result[0], peak
    peak = peak_bytes(lambda: result.append(run()))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result[0], peak


def set_budget(size):
    """On a GPU, the size's memory budget [GiB] unless ``MBOOK_MEMORY_GB`` is set (at most 85 % of the free memory)."""
    if "memory_gb" in size and "MBOOK_MEMORY_GB" not in os.environ and backend.get_device() == "gpu":
        free = backend.xp.cuda.Device().mem_info[0] / 2**30
        os.environ["MBOOK_MEMORY_GB"] = f"{min(size['memory_gb'], 0.85 * free):.1f}"
    print(f"memory budget {progress.memory_budget() / 2**30:.1f} GiB")


def abtem_methods(atoms, grid, size, positions, start, end):
    """abTEM's multislice and PRISM of the same image, as ``{name: run}`` like mbook's (abTEM's defaults
    for parallelism: dask's threaded scheduler; sharp 2/3 antialias aperture as mbook's)."""
    import abtem

    abtem.config.set({"antialias.taper": 0.0, "antialias.cutoff": 2 / 3 * (1 + 1e-7)})
    device = "gpu" if backend.get_device() == "gpu" else "cpu"
    potential = abtem.Potential(atoms, gpts=grid.gpts, slice_thickness=A / 2, parametrization="kirkland",
                                projection="infinite", device=device)
    potential = potential.build().compute(scheduler="threads", progress_bar=False)  # built once, as mbook's
    scan = abtem.GridScan(start=start, end=end, gpts=positions.shape[:2], endpoint=False)
    offset = float(abs(np.asarray(scan.get_positions()) - backend.asnumpy(positions)).max())
    detector = abtem.AnnularDetector(inner=HAADF["HAADF"][0], outer=HAADF["HAADF"][1])
    print(f"abTEM {abtem.__version__} on {device.upper()}: scan positions agree with mbook's to {offset:.1e} Å")

    def image(measurement):
        return backend.asarray(np.asarray(measurement.compute(scheduler="threads", progress_bar=False).array))

    sharp = abtem.CTF(semiangle_cutoff=ALPHA, soft=False, energy=ENERGY)  # mbook's and the Probe's aperture
    methods = {"abTEM multislice": lambda: (image(abtem.Probe(energy=ENERGY, semiangle_cutoff=ALPHA, soft=False,
                                                              device=device)
                                                  .scan(potential, scan=scan, detectors=detector)), 0)}
    for f in size["factors"]:
        def run(f=f):
            # downsample=False: the HAADF needs every angle up to 200 mrad, not only the probe's
            smatrix = abtem.SMatrix(potential=potential, energy=ENERGY, semiangle_cutoff=ALPHA, interpolation=f,
                                    downsample=False, device=device)
            nbytes = int(np.prod(smatrix.shape)) * np.dtype(np.complex64).itemsize
            return image(smatrix.scan(scan=scan, detectors=detector, ctf=sharp)), nbytes
        methods[f"abTEM PRISM f={f}"] = run
    return methods


def crystal_specimen(args, size):
    """SrTiO3 and its scan: atoms, positions, start, end, sampling and a label."""
    atoms = structures.srtio3((size["cells"], size["cells"], size["thick"]))
    if args.scan:  # over the middle cell: the probes whose windows are farthest from the cell's edges
        middle = A * (size["cells"] // 2)
        start, end, sampling = (middle, middle), (middle + A, middle + A), A / args.scan
    else:
        span = size.get("span", 1)
        start, end, sampling = (0.0, 0.0), (A * span, A * span), A * span / size["scan"]
    positions = stem.scan_positions(start=start, end=end, sampling=sampling)
    return atoms, positions, start, end, sampling, f"SrTiO3 {size['cells']}x{size['cells']}x{size['thick']} cells"


def particle_specimen(args, size):
    """The gold particle on carbon of ``--specimen particle`` and its scan, as :func:`crystal_specimen`."""
    chosen = dict(PARTICLE[args.size])
    if args.gpts:
        if args.gpts % STEP:
            raise SystemExit(f"--gpts must be a multiple of the LMA's lattice step, {STEP}, got {args.gpts}")
        chosen["gpts"] = args.gpts
    side = chosen["gpts"] * A / PX
    atoms = structures.supported_particle("Au", length=chosen["length"], extent=(side, side), seed=0)
    gold = atoms.positions[np.array(atoms.get_chemical_symbols()) == "Au", :2]
    low, high = gold.min() - 1.0, gold.max() + 1.0  # the particle's box and 1 Å around it (a square)
    probes = args.scan or chosen["scan"]
    sampling = (high - low) / probes
    positions = stem.scan_positions(start=(low, low), end=(high, high), sampling=sampling)
    label = f"{len(gold)} Au atoms on {len(atoms) - len(gold)} C atoms ({atoms.cell.lengths()[2]:.1f} Å thick)"
    return atoms, positions, (low, low), (high, high), sampling, label


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--repeat", type=int, help="timed runs per method (median); default 3, 1 at size gpu")
    parser.add_argument("--scan", type=int, metavar="N", help="N x N probes over the unit cell in the middle of "
                        "the supercell instead of the size's scan (the errors of fewer probes)")
    parser.add_argument("--factors", type=int, nargs="+", metavar="F", help="PRISM factors instead of the size's")
    parser.add_argument("--batches", type=int, nargs="+", metavar="B", help="run each PRISM scan with at most B "
                        f"probes per batch (the library's: prism_scan.BATCH, {prism_scan.BATCH}, on the CPU; "
                        f"GPU_BATCH, {prism_scan.GPU_BATCH}, on a GPU), one row per B")
    parser.add_argument("--cells", type=int, metavar="C", help="C x C unit cells across instead of the size's")
    parser.add_argument("--thick", type=int, metavar="T", help="T unit cells along the beam instead of the "
                        "size's (PRISM's scan does not grow with T, its S-matrix and multislice do)")
    parser.add_argument("--specimen", choices=("srtio3", "particle"), default="srtio3", help="particle: a gold "
                        "nanoparticle on amorphous carbon, a specimen without a period (see above)")
    parser.add_argument("--gpts", type=int, metavar="N", help="particle: the field's pixels per side (a multiple of "
                        f"{STEP}) instead of the size's")
    parser.add_argument("--abtem", action="store_true", help="also run abTEM's multislice and PRISM")
    parser.add_argument("--only", choices=("PRISM", "LMA"), help="run only this family (and the multislice "
                        "references its errors need)")
    args = parser.parse_args()
    if args.gpts and args.specimen != "particle":
        parser.error("--gpts sets the particle's field: it needs --specimen particle (the crystal's field is --cells)")
    size = dict(SIZES[args.size])
    if args.specimen == "particle":  # the particle's own factors and patches where its size names them
        size.update({key: value for key, value in PARTICLE[args.size].items() if key in ("factors", "patches")})
    size["factors"] = tuple(args.factors or size["factors"])
    if args.batches:
        size["batches"] = tuple(args.batches)
    if args.cells:  # the same scan density over at most the new supercell
        span = min(size.get("span", 1), args.cells)
        size.update(cells=args.cells, scan=round(size["scan"] * span / size.get("span", 1)), span=span)
    if args.thick:
        size["thick"] = args.thick
    repeat = args.repeat or size.get("repeat", 3)
    print(backend.describe())
    set_budget(size)

    specimen = particle_specimen if args.specimen == "particle" else crystal_specimen
    atoms, positions, start, end, sampling, label = specimen(args, size)
    potential, grid = potentials.projected_potential(atoms, A / PX, A / 2, return_grid=True)
    common = dict(grid=grid, energy=ENERGY, slice_thickness=potentials.slice_thicknesses(atoms, A / 2),
                  semiangle_cutoff=ALPHA)
    print(f"{label}: grid {grid.gpts}, {len(potential)} slices, {positions.shape[0]}x{positions.shape[1]} probes "
          f"{sampling:.3f} Å apart over {start[0]:.1f}..{end[0]:.1f} Å")
    for f in size["factors"]:
        window = grid.gpts[0] // f
        nbytes = prism.smatrix_bytes(grid, energy=ENERGY, semiangle_cutoff=ALPHA, interpolation=f)
        print(f"  PRISM f={f}: window {window}² pixels ({grid.extent[0] / f:.1f} Å), "
              f"S-matrix {nbytes / 2**30:.2f} GiB")

    methods = {"multislice": lambda: (stem.scan(potential, positions=positions, detectors=HAADF,
                                                **common)["HAADF"], 0)}
    # At a size run once, the multislice reference (the longest row) runs once, timed, after a warm-up
    # on its first row of probes (kernels compiled, plans made) instead of a second full run.
    warmups = {"multislice": lambda: stem.scan(potential, positions=positions[:1], detectors=HAADF, **common)}
    cap = "GPU_BATCH" if backend.gpu_code_path() else "BATCH"  # the library's most probes per batch here
    builds = {}  # per method, the seconds of each run spent building the S-matrix or basis (the rest: the scan)

    def timed_build(name, build):
        start = time.perf_counter()
        result = build()
        synchronize()
        builds.setdefault(name, []).append(time.perf_counter() - start)
        return result
    library_batch = getattr(prism_scan, cap)
    for f in size["factors"]:
        for batch in size.get("batches", (library_batch,)):
            name = f"PRISM f={f}" + (f" b={batch}" if batch != library_batch else "")

            def run(f=f, batch=batch, name=name):
                smatrix = timed_build(name, lambda: prism.build_smatrix(potential, interpolation=f, **common))
                default = getattr(prism_scan, cap)
                setattr(prism_scan, cap, batch)
                try:
                    image = prism.scan(smatrix, positions=positions, detectors=HAADF)["HAADF"]
                finally:
                    setattr(prism_scan, cap, default)
                return image, smatrix.nbytes
            methods[name] = run
    for patch in size["patches"]:
        def run(patch=patch):
            basis = timed_build(f"LMA p={patch}", lambda: lma.build_basis(potential, lattice_step=STEP,
                                                                           patch_gpts=patch, **common))
            return lma.scan(basis, positions=positions, detectors=HAADF)["HAADF"], basis.nbytes
        methods[f"LMA p={patch}"] = run

    if args.abtem:
        methods.update(abtem_methods(atoms, grid, size, positions, start, end))

    if args.only:
        methods = {name: run for name, run in methods.items() if "multislice" in name or args.only in name}
    rows, references = {}, {}
    print(f"\n{'method':<18} {'time [s]':>9} {'speed-up':>9} {'HAADF error':>12} {'S/basis [MiB]':>14} "
          f"{'peak [MiB]':>11} {'of it S/basis [s]':>18}")
    for name, run in methods.items():  # each row printed when measured (a run stopped early keeps them)
        try:
            if size.get("peak_in_warmup"):
                seconds, (image, nbytes), peak = time_with_peak(run, repeat, warmups.get(name) if repeat == 1
                                                                 else None)
            else:
                seconds, (image, nbytes) = median_time(run, repeat)
                peak = None
        except MemoryError as error:  # refused by the library before any work: the budget's numbers
            if not references:
                raise
            print(f"{name}: skipped, {error}")
            continue
        code = "abTEM" if name.startswith("abTEM") else "mbook"
        reference = references.setdefault(code, image)  # each code's own multislice comes first
        xp = backend.get_array_module(image)
        error = float(xp.linalg.norm(image - reference) / xp.linalg.norm(reference))
        row = rows[name] = dict(time=seconds, error=error, bytes=nbytes, peak=peak_bytes(run) if peak is None else peak)
        base = rows["multislice"]["time"]  # speed-up over mbook's multislice; errors against the code's own
        # the first build is the warm-up's or the peak run's; the timed runs' follow it
        build = f"{np.median(builds[name][1:1 + repeat]):18.3f}" if name in builds else f"{'—':>18}"
        print(f"{name:<18} {row['time']:9.3f} {base / row['time']:9.1f} {row['error']:12.2e} "
              f"{row['bytes'] / 2**20:14.1f} {row['peak'] / 2**20:11.1f} {build}", flush=True)
    base = rows["multislice"]["time"]
    if "abTEM" in references:
        a, b = references["mbook"], references["abTEM"]
        print(f"multislice HAADF, abTEM against mbook: relative difference "
              f"{float(xp.linalg.norm(b - a) / xp.linalg.norm(a)):.1e} (the codes' potentials, not PRISM)")
    if args.abtem and args.only != "LMA":
        print("\nmbook's PRISM against abTEM's (same factor; errors each against its own multislice):")
        for f in size["factors"]:
            if f"PRISM f={f}" not in rows or f"abTEM PRISM f={f}" not in rows:
                continue
            ours, theirs = rows[f"PRISM f={f}"], rows[f"abTEM PRISM f={f}"]
            print(f"  f={f}: time abTEM/mbook {theirs['time'] / ours['time']:.2f}, error mbook {ours['error']:.1e} "
                  f"abTEM {theirs['error']:.1e}, peak abTEM/mbook {theirs['peak'] / ours['peak']:.2f}")

    if not args.only and size["patches"]:
        print("\nat matched error (the fastest PRISM with error <= the LMA's):")
        for name, row in rows.items():
            if not name.startswith("LMA"):
                continue
            matching = [n for n in rows if n.startswith("PRISM") and rows[n]["error"] <= row["error"]]
            if not matching:
                print(f"  {name}: no PRISM factor reaches {row['error']:.1e}")
                continue
            best = min(matching, key=lambda n: rows[n]["time"])
            print(f"  {name} ({row['error']:.1e}) vs {best} ({rows[best]['error']:.1e}): time PRISM/LMA "
                  f"{rows[best]['time'] / row['time']:.2f}, S-matrix/basis {rows[best]['bytes'] / row['bytes']:.2f}, "
                  f"peak PRISM/LMA {rows[best]['peak'] / row['peak']:.2f}")
    good = [n for n in rows if n != "multislice" and rows[n]["error"] < 0.01]
    fastest = {}
    for family in [args.only] if args.only else ("PRISM", "LMA"):
        if not any(name.startswith(family) for name in methods):
            continue
        candidates = [n for n in good if n.startswith(family)]
        if candidates:
            best = fastest[family] = min(candidates, key=lambda n: rows[n]["time"])
            print(f"fastest {family} below 1 % error: {best}, {base / rows[best]['time']:.1f}x multislice")
        else:
            print(f"fastest {family} below 1 % error: none at this size")
    if len(fastest) == 2:  # the issue's comparison: the two families' best below 1 %, side by side
        p, q = rows[fastest["PRISM"]], rows[fastest["LMA"]]
        print(f"below 1 % error, {fastest['LMA']} against {fastest['PRISM']}: "
              f"time PRISM/LMA {p['time'] / q['time']:.2f}, error {q['error']:.1e} against {p['error']:.1e}, "
              f"S-matrix/basis {p['bytes'] / q['bytes']:.2f}, peak PRISM/LMA {p['peak'] / q['peak']:.2f}")


if __name__ == "__main__":
    main()
