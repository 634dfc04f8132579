"""Segmentation: synthetic STM lattice images, local Fourier features, convex Chan-Vese by PDHG.

Follows the device rule of :mod:`mbook`: inputs moved to the selected device once, results there,
no host copy per iteration.
"""
