"""The machinery every domain shares: devices, grids, checks, progress, figures, propagation, detection.

- :mod:`~mbook.core.backend`: the device rule (NumPy, CuPy or the strict stand-in), FFTs, the CPU FFT library;
- :mod:`~mbook.core.fft_plans`: in-place 2D FFT plans, one per thread and wave shape;
- :mod:`~mbook.core.fftw_wisdom`: pyFFTW's import; FFTW's measured plans kept on disk for the next process;
- :mod:`~mbook.core.fused_fft`: products fused into cuFFT transforms (load and store callbacks);
- :mod:`~mbook.core.fusion`: chains of element-wise operations as one GPU kernel (``cupy.fuse``);
- :mod:`~mbook.core.strict`: the strict CPU stand-in for the GPU;
- :mod:`~mbook.core.device_counts`: what the stand-in counts (copies to the host, device operations);
- :mod:`~mbook.core.checks`: the one validation vocabulary;
- :mod:`~mbook.core.grids`: grid and FFT conventions, coordinates, Fourier crops, radial averages;
- :mod:`~mbook.core.progress`: progress bars and memory budgets;
- :mod:`~mbook.core.plotting`: images with units, scale bars, explorers;
- :mod:`~mbook.core.propagation`: Fresnel and angular-spectrum propagators;
- :mod:`~mbook.core.detection`: counting statistics, cameras, MTF and DQE.

Nothing here knows a microscope, a specimen or a solver.
"""
