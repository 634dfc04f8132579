"""Light microscopy: imaging, scattering by thick samples, Fourier ptychography.

- :mod:`~mbook.light.microscope`: Gaussian beams, pupils with Zernike aberrations, partial coherence;
- :mod:`~mbook.light.scattering`: the beam propagation method, Born and Rytov;
- :mod:`~mbook.light.cbs`: the convergent Born series;
- :mod:`~mbook.light.mie`: Mie's exact solutions for a cylinder (and a scalar sphere);
- :mod:`~mbook.light.phantoms`: test samples;
- :mod:`~mbook.light.led_geometry`: the LED-array microscope's geometry on the frequency lattice;
- :mod:`~mbook.light.fourier_ptychography`: vignetting, the forward model and its adjoint;
- :mod:`~mbook.light.epry`: Fourier ptychographic reconstruction (EPRY) with pupil recovery.
"""
