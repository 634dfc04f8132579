"""Geometry: manifolds (spheres, SO(3), SPD), Fréchet means, low-rank approximation of manifold-valued data, pose estimation.

Follows the device rule of :mod:`mbook`: inputs moved to the selected device once, results there,
no host copy per iteration.
"""
