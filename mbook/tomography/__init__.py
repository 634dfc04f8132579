"""Tomography: parallel-beam projectors about a tilt axis, 3D and 4D (space-time) reconstruction, atom tracing.

Modules
-------
- :mod:`~mbook.tomography.projector`: projection of a volume for any rotations and its exact adjoint;
  :class:`~mbook.tomography.projector.TiltProjector`, the same operator for a tilt series as matrices.
- :mod:`~mbook.tomography.specimens`: the 4D testbed (a FePt nanoparticle with diffusing Pt atoms,
  tilt series with a missing wedge, analytic projections of Gaussian atoms, Poisson noise).
- :mod:`~mbook.tomography.reconstruct`: FBP, SIRT and projected gradient descent in 3D; anchor volumes
  with temporal interpolation and spatial/temporal TV in 4D.
- :mod:`~mbook.tomography.tracing`: atom positions and species from a volume, matching and tracking.
- :mod:`~mbook.tomography.refine`: atom positions fitted directly to the projections (a
  parametric model with a hand-written gradient).

Follows the device rule of :mod:`mbook`: inputs moved to the selected device once, results there,
no host copy per iteration.
"""
