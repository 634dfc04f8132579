"""Optics: time and error of each propagator on a cylinder; FP reconstruction time per iteration.

Part 1 solves one 2D problem, a 4 µm cylinder of index 1.40 in water lit at
λ0 = 0.5 µm, with every method of :mod:`mbook.light.scattering` and :mod:`mbook.light.cbs`
on finer and finer grids (points per wavelength in the cylinder), and prints the
grid size, the wall time and the relative error against the Mie series in a disc
of radius 1.5 a + 0.5 µm. Part 2 times one pass of EPRY over all LEDs
(:func:`mbook.light.epry.reconstruct`), with and without the vignetting model,
on growing object grids. Run:

    .venv/bin/python benchmarks/optics.py                 # current device
    MBOOK_DEVICE=gpu .venv/bin/python benchmarks/optics.py

Timings are medians of repeated runs in this one process (GPU work synchronised);
inputs are made on the selected device and results stay there, so a timing
holds no host/device copy. They are not tests.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MBOOK_PROGRESS", "0")

from timing import median_time  # benchmarks/timing.py

from mbook.core import backend
from mbook.light import cbs, epry, led_geometry, mie, phantoms, scattering
from mbook.light import fourier_ptychography as fp

WAVELENGTH, N_WATER, N_CYLINDER, DIAMETER = 0.5, 1.33, 1.40, 4.0


def relative_error(field, exact, region):
    """``‖field - exact‖ / ‖exact‖`` over ``region``, on the device; a float."""
    xp = backend.get_array_module(field)
    return float(xp.sqrt(xp.sum(abs((field - exact)[region]) ** 2) / xp.sum(abs(exact[region]) ** 2)))


def propagators(points_per_wavelength, repeat):
    print(f"\ncylinder d = {DIAMETER} µm, n = {N_CYLINDER} in water, λ0 = {WAVELENGTH} µm")
    print(f"{'ppw':>4} {'gpts':>10} {'method':>18} {'time [s]':>10} {'error':>9}")
    for ppw in points_per_wavelength:
        sampling = WAVELENGTH / N_CYLINDER / ppw
        gpts = (int(round((DIAMETER + 3.0) / sampling)),) * 2
        cylinder = dict(radius=DIAMETER / 2, n_cylinder=N_CYLINDER, n_background=N_WATER)
        index = mie.cylinder_index(gpts, sampling=sampling, **cylinder)  # on the selected device
        exact = mie.cylinder_field(gpts, sampling=sampling, wavelength=WAVELENGTH, **cylinder)
        near = mie.near_mask(gpts, sampling=sampling, radius=DIAMETER / 2)
        kwargs = dict(wavelength=WAVELENGTH, sampling=sampling, n_background=N_WATER)
        methods = {
            "Born": lambda: scattering.born(index, **kwargs),
            "Rytov": lambda: scattering.rytov(index, **kwargs),
            "BPM paraxial": lambda: scattering.bpm(index, **kwargs),
            "BPM wide-angle": lambda: scattering.bpm(index, wide_angle=True, **kwargs),
            "convergent Born": lambda: cbs.solve(index, **kwargs).field,
        }
        for name, method in methods.items():
            seconds, field = median_time(method, repeat if name != "convergent Born" else 1)
            error = relative_error(field, exact, near)
            print(f"{ppw:>4} {str(gpts[0]) + '²':>10} {name:>18} {seconds:>10.3f} {100 * error:>8.2f}%")


def reconstruction(sizes, repeat):
    print("\nFourier ptychography: one EPRY pass over all LEDs (9 x 9 array, 4x camera binning)")
    print(f"{'object':>8} {'camera':>7} {'window':>7} {'plain [s]':>10} {'vignetting [s]':>15}")
    leds = led_geometry.led_array((9, 9), pitch=4.0, height=90.0)
    for n in sizes:
        setup = led_geometry.make_setup((n, n), sampling=0.4, wavelength=0.5, na=0.1, illumination=leds,
                              upsampling=4, na_vignetting=0.12, vignetting_slope=1.0e-3 * 256 / n)
        data = fp.images(phantoms.cells((n, n), sampling=0.4, seed=0), setup)
        times = [median_time(lambda v=v: epry.reconstruct(data, setup, vignetting=v, max_num_iter=1), repeat)[0]
                 for v in (False, True)]
        print(f"{str(n) + '²':>8} {str(n // 4) + '²':>7} {str(setup.window) + '²':>7} {times[0]:>10.3f} "
              f"{times[1]:>15.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppw", type=int, nargs="+", default=[6, 8, 12, 16],
                        help="grid points per wavelength in the cylinder")
    parser.add_argument("--fp-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(backend.describe())
    propagators(args.ppw, args.repeat)
    reconstruction(args.fp_sizes, args.repeat)


if __name__ == "__main__":
    main()
