"""Inverse problems: first-order solvers, phase retrieval, TV on the circle, registration.

- :mod:`~mbook.inverse.optimize`: finite differences, proximal maps, PDHG, forward-backward, TV;
- :mod:`~mbook.inverse.cdi`: phase retrieval for coherent diffraction imaging (ER, HIO, RAAR);
- :mod:`~mbook.inverse.circle`: total variation on S¹ by PDHG between Rⁿ and S¹;
- :mod:`~mbook.inverse.lifting`: total variation on S¹ by functional lifting;
- :mod:`~mbook.inverse.warps`: the bilinear warp by displacement fields, its adjoint and derivative;
- :mod:`~mbook.inverse.registration`: the variational model with unknown distortions, rigid registration;
- :mod:`~mbook.inverse.synthetic`: test objects and data sets for the solvers.

The solvers here know no physics: operators come in as functions. They follow
the device rule of :mod:`mbook`: inputs moved to the selected device once,
results there, no host copy per iteration (a convergence test every
``check_every`` iterations at most, none with ``tol=0``).
"""
