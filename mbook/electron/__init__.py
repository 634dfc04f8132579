"""Electron scattering and imaging: the relativistic electron, potentials, waves, multislice, STEM.

- :mod:`~mbook.electron.physics`: wavelength, interaction parameter, scattering angles;
- :mod:`~mbook.electron.structures`: crystals and amorphous specimens (ase);
- :mod:`~mbook.electron.scattering_factors`: electron scattering factors, Kirkland and Lobato tables;
- :mod:`~mbook.electron.potentials`: projected potentials, sliced;
- :mod:`~mbook.electron.phonons`: frozen-phonon configurations;
- :mod:`~mbook.electron.waves`: plane waves, probes, aberrations, lens transfer;
- :mod:`~mbook.electron.hrtem`: phase-contrast imaging (the weak-object CTF, bright-field images, CTF zeros);
- :mod:`~mbook.electron.multislice`: the multislice recursion;
- :mod:`~mbook.electron.implicit`: the whole-volume implicit solver (backward Euler, Crank-Nicolson);
- :mod:`~mbook.electron.implicit_system`: the kernels of its system (operator, adjoint, preconditioner);
- :mod:`~mbook.electron.stem`: STEM and 4D-STEM scans;
- :mod:`~mbook.electron.stem_detectors`: STEM detectors (annular masks, the standard set, virtual detectors);
- :mod:`~mbook.electron.prism`: PRISM, STEM from a scattering matrix of plane waves;
- :mod:`~mbook.electron.prism_scan`: the kernels of a PRISM scan (windows, batches, far fields);
- :mod:`~mbook.electron.lma`: the Lattice Multislice Algorithm, PRISM with a localized basis;
- :mod:`~mbook.electron.lma_patches`: the kernels of the LMA basis (patches propagated, a local change);
- :mod:`~mbook.electron.lma_scan`: the kernels of an LMA scan (coefficients, block windows);
- :mod:`~mbook.electron.peaks`: atomic-column peaks and profile minima.
"""
