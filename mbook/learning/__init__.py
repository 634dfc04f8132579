"""Learning: the implicit bias of gradient methods, and first-order solvers unrolled into networks.

- :mod:`~mbook.learning.implicit_bias`: the diagonal network ``w = u⊙u - v⊙v`` trained by GD and
  mini-batch SGD from an initialisation scale, against the Lasso and the minimum-ℓ2 interpolant;
- :mod:`~mbook.learning.unrolled`: PDHG for convex binary Chan-Vese unrolled into layers with learned
  steps, TV weights and filters, trained by Adam;
- :mod:`~mbook.learning.unrolled_passes`: its forward pass, loss and reverse pass written by hand
  (kernels, a few fused kernels per layer on a GPU);
- :mod:`~mbook.learning.pdhg_baseline`: the same convex Chan-Vese problem solved by PDHG with
  fixed, hand-chosen parameters (the baseline), and the intersection-over-union score.

No deep-learning framework: every gradient is written out and checked against finite differences.
Follows the device rule of :mod:`mbook`: inputs moved to the selected device once, results there,
no host copy per iteration.
"""
