"""Tomography: parallel-beam projectors about a tilt axis, 3D and 4D (space-time) reconstruction, atom tracing.

Follows the device rule of :mod:`mbook`: inputs moved to the selected device once, results there,
no host copy per iteration.
"""
