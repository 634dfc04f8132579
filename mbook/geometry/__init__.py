"""Geometry: manifolds (spheres, SO(3), SPD), Fréchet means, low-rank approximation of manifold-valued data, pose estimation.

- :mod:`~mbook.geometry.so3`: rotations (quaternions, Haar sampling, angles and axes) and the bi-invariant
  metric of SO(3);
- :mod:`~mbook.geometry.sphere`: the unit sphere Sᵈ;
- :mod:`~mbook.geometry.spd`: symmetric positive definite matrices with the affine-invariant metric;
- :mod:`~mbook.geometry.means`: Fréchet (Karcher) means by Riemannian gradient descent;
- :mod:`~mbook.geometry.lowrank`: tangent PCA, its curvature correction and the intrinsic optimum;
- :mod:`~mbook.geometry.tracking`: tracking tomography, the poses of a specimen that turns by itself
  (Gauss-Newton on SO(3)ᴺ with a smoothness prior, over :mod:`mbook.tomography.projector`).

Each manifold module has the same functions (``exp``, ``log``, ``distance``, ``transport``,
``to_coordinates``, ``from_coordinates``, ``jacobi_operator``, a seeded sampler) and a table ``KERNELS`` of
their unchecked kernels for the solvers. Follows the device rule of :mod:`mbook`: inputs moved to the
selected device once, results there, no host copy per iteration.
"""
