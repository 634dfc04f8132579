"""Learning: the implicit bias of gradient methods, and networks unrolled from first-order solvers, with hand-written gradients.

Follows the device rule of :mod:`mbook`: inputs moved to the selected device once, results there,
no host copy per iteration.
"""
