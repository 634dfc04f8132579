"""Cryo-EM: particles, image formation, volumes, moments, heterogeneity and Wasserstein metrics.

- :mod:`~mbook.cryoem.so3`: rotations;
- :mod:`~mbook.cryoem.particles`: Gaussian-atom particles and their projections;
- :mod:`~mbook.cryoem.micrographs`: CTF, contrast, noise, image streams;
- :mod:`~mbook.cryoem.volumes`: MRC files and Fourier shell correlation;
- :mod:`~mbook.cryoem.moments`, :mod:`~mbook.cryoem.kam`: image moments and Kam's method;
- :mod:`~mbook.cryoem.heterogeneity`: conformational landscapes and their metrics;
- :mod:`~mbook.cryoem.wasserstein`, :mod:`~mbook.cryoem.wemd_family`: wavelet earth mover's distances.
"""
