"""Frozen phonons: atoms displaced by their thermal vibrations (Einstein model).

A fast electron crosses a specimen in ~1e-17 s, atoms vibrate with periods of
~1e-13 s: each electron sees one frozen configuration. Simulated intensities
are averaged over independent random configurations (incoherently), which
brings in thermal diffuse scattering (Kirkland 2010, ch. 7). Each atom is
displaced by an independent Gaussian of rms ``σ`` per Cartesian direction,
``B = 8π² σ²`` being its Debye-Waller factor.

Configurations are :class:`ase.Atoms`, host objects (rule 5 of :mod:`mbook`):
the random displacements are drawn on the host from a seeded
:func:`numpy.random.default_rng`, so a seed gives the same configurations on
every device; :func:`mbook.electron.potentials.projected_potential` then puts
their potentials on the selected device.
"""

from __future__ import annotations

import numpy as np

from mbook.core import checks, progress
from mbook.electron import potentials, scattering_factors


def _sigma_per_atom(sigmas, symbols) -> np.ndarray:
    def check(value, name):
        return checks.check_number(value, name, lower=0, units="Å", hint="an rms displacement")

    if isinstance(sigmas, dict):
        table = {}
        for key, value in sigmas.items():
            try:
                symbol = scattering_factors.element_symbol(key)
            except ValueError:
                raise ValueError(f"sigmas has a key {key!r} that is not an element (a symbol such as 'Si' "
                                 "or an atomic number)") from None
            table[symbol] = check(value, f"sigmas[{key!r}]")
        missing = sorted(set(symbols) - set(table))
        if missing:
            raise ValueError(
                f"sigmas has no rms displacement for {missing}; give one per element, got {sigmas!r}"
            )
        return np.array([table[s] for s in symbols])
    return np.full(len(symbols), check(sigmas, "sigmas"))


def _displace(atoms, sigma, rng):
    """Copy of ``atoms`` displaced by N(0, σ²) per axis and wrapped into the cell (a kernel)."""
    displaced = atoms.copy()
    cell = np.asarray(atoms.cell, dtype=np.float64)
    positions = atoms.get_positions() + rng.standard_normal((len(atoms), 3)) * sigma[:, None]
    fractional = np.linalg.solve(cell.T, positions.T).T % 1.0
    fractional[fractional >= 1.0] = 0.0  # -1e-17 % 1.0 == 1.0 in floating point
    displaced.set_positions(fractional @ cell)
    return displaced


def displace_atoms(atoms, sigmas, seed):
    """One frozen-phonon configuration (Einstein model): randomly displaced atoms.

    Each atom moves by an independent Gaussian of rms ``σ`` along each of x, y
    and z (``<u_x²> = σ²``; isotropic Debye-Waller factor ``B = 8π² σ²``) and
    is wrapped back into the periodic cell. For a slab whose atoms touch its z
    faces, wrapping moves an atom from the entrance to the exit face: add
    vacuum along z (``atoms.center(vacuum=2.0, axis=2)``) to avoid it.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure in a periodic cell (any non-degenerate cell).
    sigmas : float or dict
        rms displacement per Cartesian direction, one value for every atom or
        one per element (``{"Sr": 0.088, "Ti": 0.07, "O": 0.09}``) [Å].
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        Seed of the random draw: the same seed gives the same configuration.

    Returns
    -------
    ase.Atoms
        A displaced copy; ``atoms`` is unchanged.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from mbook.electron.phonons import displace_atoms
    >>> atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (4, 4, 4)
    >>> moved = displace_atoms(atoms, {"Cu": 0.1}, seed=0)
    >>> bool((moved.positions != atoms.positions).all()), len(moved)
    (True, 256)
    """
    _, _, symbols = potentials.check_atoms(atoms, orthorhombic=False)
    sigma = _sigma_per_atom(sigmas, symbols)
    return _displace(atoms, sigma, checks.rng(seed))


def frozen_phonon_configurations(atoms, sigmas, num_configs, seed):
    """``num_configs`` independent frozen-phonon configurations of ``atoms``.

    Configuration ``i`` uses the ``i``-th child of ``SeedSequence(seed)``, so
    the list is reproducible and configurations are statistically independent;
    average the simulated intensities over them (incoherently).

    Parameters
    ----------
    atoms : ase.Atoms
    sigmas : float or dict
        rms displacement per Cartesian direction (see :func:`displace_atoms`) [Å].
    num_configs : int
        Number of configurations, >= 1.
    seed : int or numpy.random.SeedSequence

    Returns
    -------
    list of ase.Atoms

    Raises
    ------
    MemoryError
        Before any work, when the list would exceed the memory budget (``MBOOK_MEMORY_GB``).

    Examples
    --------
    >>> from ase.build import bulk
    >>> from mbook.electron.phonons import frozen_phonon_configurations
    >>> configs = frozen_phonon_configurations(bulk("Si", cubic=True), 0.08, 3, seed=1)
    >>> len(configs), bool((configs[0].positions != configs[1].positions).any())
    (3, True)
    """
    num_configs = checks.check_count(num_configs, "num_configs")
    _, _, symbols = potentials.check_atoms(atoms, orthorhombic=False)
    # Every configuration is a full copy of the structure (positions, numbers and ase's own arrays, about
    # 64 bytes per atom, plus about 4 KiB per Atoms object): estimate the list before building it.
    bytes_per_config = 64 * len(atoms) + 4096
    if progress.plan_batches(n_items=num_configs, bytes_per_item=bytes_per_config) < num_configs:
        raise MemoryError(
            f"num_configs={num_configs} configurations of {len(atoms)} atoms need about "
            f"{num_configs * bytes_per_config / 2**30:.1f} GiB, over the memory budget of "
            f"{progress.memory_budget() / 2**30:.1f} GiB (MBOOK_MEMORY_GB); the average over N configurations "
            f"converges as 1/sqrt(N): a few dozen are usually enough")
    sigma = _sigma_per_atom(sigmas, symbols)
    if isinstance(seed, np.random.Generator):
        children = seed.spawn(int(num_configs))
    else:
        children = [np.random.default_rng(s) for s in np.random.SeedSequence(checks.check_seed(seed)).spawn(int(num_configs))]
    return [_displace(atoms, sigma, np.random.default_rng(child)) for child in children]
