"""Multimodal and cryo electron ptychography: scan drift, ptychographic reconstruction, EDX + HAADF and AFM fusion.

Follows the device rule of :mod:`mbook`: inputs moved to the selected device once, results there,
no host copy per iteration.
"""
