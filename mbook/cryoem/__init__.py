"""Cryo-EM: particles, image formation, volumes, moments, heterogeneity and Wasserstein metrics.

- :mod:`~mbook.cryoem.particles`: Gaussian-atom particles (one, or one conformation per image) and their
  projections;
- :mod:`~mbook.cryoem.voxels`: projection of voxel volumes and its adjoint;
- :mod:`~mbook.cryoem.ctf`: the contrast transfer function with its B-factor envelope;
- :mod:`~mbook.cryoem.image_formation`: image formation (CTF, shifts, contrast) and white noise;
- :mod:`~mbook.cryoem.micrographs`: per-image parameters, the noise level for an SNR, image streams;
- :mod:`~mbook.cryoem.white_noise`: per-image noise that does not depend on the batching;
- :mod:`~mbook.cryoem.volumes`: MRC files and Fourier shell correlation;
- :mod:`~mbook.cryoem.moments`, :mod:`~mbook.cryoem.kam`: image moments and Kam's method;
- :mod:`~mbook.cryoem.heterogeneity`: a hinged conformational family and a linear-subspace method;
- :mod:`~mbook.cryoem.metrics`: scores of embeddings against the true latent;
- :mod:`~mbook.cryoem.wasserstein`, :mod:`~mbook.cryoem.wemd_family`: wavelet earth mover's distances.

Every module follows the device rule of :mod:`mbook`: arrays come back on the selected device; the
steps that only run on the host (SciPy's special functions and KD-tree, PyWavelets, POT) say so.
"""
