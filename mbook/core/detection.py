"""Detector noise for light and electrons: counting statistics, cameras, MTF and DQE.

Units. An *intensity* here is relative to the incident beam: 1 is what an
empty sample (vacuum, or a clear slide) gives, so a bright-field image has a
mean near 1 and a dark-field image far less. A *dose* is the number of
quanta per unit area of the incident beam [e/Å² for electrons, photons/µm²
for light], and a pixel of area ``A`` lit by intensity ``I`` collects on
average ``I · dose · A`` quanta, Poisson-distributed (its variance equals its
mean, so the signal-to-noise ratio of a flat field is ``sqrt(dose · A)``).

A detector adds three things (McMullan et al. 2009):

- a **modulation transfer function** ``MTF(k)`` that blurs the signal
  (:func:`mtf`, :func:`apply_mtf`);
- noise that is not white: its power spectrum is
  ``NPS(k) = N̄ · MTF(k)² / DQE(k)`` for a mean count ``N̄`` per pixel, which is
  the definition ``DQE(k) = SNR_out(k)² / SNR_in(k)² = N̄ MTF(k)² / NPS(k)``
  (:func:`detect`);
- for a camera: gain, offset, read noise, and an ADC that rounds and clips
  (:func:`camera`).

Every random draw takes a ``seed``.

Devices. Inputs are moved to the selected device on entry and every array
comes back there (:mod:`mbook.core.backend`). The random numbers (one
uniform per pixel for the Poisson counts, the read noise) are drawn on the
host from a seeded :func:`numpy.random.default_rng`, so that a seed gives
the same numbers on every device, and copied to the device (rule 4 of
:mod:`mbook`); the Poisson quantiles, blurring, gain, offset and the ADC run
on the device.

Examples
--------
>>> from mbook.core import backend, detection
>>> counts = detection.poisson_counts(backend.xp.full((64, 64), 100.0), seed=0)
>>> bool(abs(float(counts.mean()) - 100) < 1)
True
"""

from __future__ import annotations

import math

import numpy as np

from mbook.core import backend, checks, progress


def _finite_nonnegative(array, name):
    """``array`` on the selected device as float64; refuses NaN, inf and negative values."""
    array = checks.check_array(array, name, real=True, finite=False)
    xp = backend.get_array_module(array)
    array = array.astype(xp.float64)
    finite, low = backend.asnumpy(xp.stack([xp.all(xp.isfinite(array)), array.min()])).tolist()
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")
    if low < 0:
        raise ValueError(f"{name} must be >= 0 everywhere (expected counts or intensities), got min {low:g}")
    return array


def _draw(expected, seed, draw):
    """``draw(rng, host_expected)`` on the host (seeded), returned on the device of ``expected``."""
    xp = backend.get_array_module(expected)
    rng = checks.rng(seed)  # a Generator is used as it is
    return xp.asarray(draw(rng, backend.asnumpy(expected)))


#: Means up to this are inverted by summing the probabilities from 0; above, from a normal guess.
POISSON_SMALL_MEAN = 10.0
#: Terms summed for the small means: P(N > 52) < 1e-16 for a mean of 10.
POISSON_SMALL_TERMS = 52
#: Most one-count steps from the normal guess to the exact quantile (one or two are usual).
POISSON_MAX_STEPS = 30


def poisson_counts(expected, *, seed):
    """Poisson counts with the given expectation per pixel, the same on every device.

    Each pixel gets one uniform ``u`` (a seeded NumPy generator on the host,
    one per pixel whatever its mean) and its count is the exact Poisson
    quantile ``k = min{k : F_λ(k) >= u}``, computed on the device. A pixel's
    count depends only on its own ``u`` and mean: expected counts that differ
    by rounding between devices (another FFT library, the GPU) give the same
    counts except in the rare pixel whose ``u`` falls between the two CDFs,
    and never shift the draws of the pixels after it, as a rejection sampler
    (NumPy's ``poisson``) does.

    Means up to :data:`POISSON_SMALL_MEAN` are inverted by summing the
    probabilities from zero; larger ones start from the Cornish-Fisher guess
    ``λ + √λ z + (z² - 1)/6`` (``z = Φ⁻¹(u)``) and step to the quantile
    with the CDF ``F_λ(k) = Q(k + 1, λ)`` (the regularised upper incomplete
    gamma function), at most :data:`POISSON_MAX_STEPS` steps.

    Parameters
    ----------
    expected : array_like, float, any shape
        Expected number of quanta per pixel (>= 0).
    seed : int or numpy.random.Generator
        Seed of the draw (a generator gives one uniform per pixel).

    Returns
    -------
    ndarray, int64, same shape
        On the selected device.
    """
    expected = _finite_nonnegative(expected, "expected")
    rng = checks.rng(seed)  # a Generator is used as it is
    xp = backend.get_array_module(expected)
    u = xp.asarray(rng.random(expected.shape))  # one host call, one copy to the device
    return _poisson_quantile(u, expected)


def _poisson_quantile(u, mean):
    """``min{k : F_mean(k) >= u}`` elementwise (a kernel: float64 inputs on one device, any shape)."""
    xp = backend.get_array_module(mean)
    special = backend.scipy_module("special", mean)
    counts = xp.zeros(mean.shape, xp.int64)
    small = mean <= POISSON_SMALL_MEAN
    # Small means: count the partial sums F(0), F(1), ... still below u (F increases with k).
    lam, v = mean[small], u[small]
    p = xp.exp(-lam)
    total, k = p, xp.zeros(lam.shape, xp.int64)
    for j in range(1, POISSON_SMALL_TERMS + 1):
        k += total < v
        p = p * lam / j
        total = total + p
    counts[small] = k
    # Large means: a normal guess with its skew term, then exact one-count steps on the CDF.
    large = ~small
    lam, v = mean[large], u[large]
    z = xp.clip(special.ndtri(v), -38.0, 38.0)  # u = 0 gives -inf
    k = xp.maximum(xp.floor(lam + xp.sqrt(lam) * z + (z * z - 1) / 6 + 0.5), 0.0)
    log_lam = xp.log(lam)
    for _ in range(POISSON_MAX_STEPS):
        cdf = special.gammaincc(k + 1, lam)  # F(k)
        up = cdf < v  # k is too small
        down = (k > 0) & (cdf - xp.exp(k * log_lam - lam - special.gammaln(k + 1)) >= v)  # F(k - 1) >= u
        if not bool(xp.any(up | down)):  # one copy per step; one or two steps are usual
            break
        k = k + up - down
    counts[large] = k.astype(xp.int64)
    return counts


def apply_dose(intensity, *, dose, pixel_area, seed):
    """Counts recorded by an ideal counting detector: ``Poisson(I · dose · pixel_area)``.

    Parameters
    ----------
    intensity : array_like, float
        Intensity relative to the incident beam (1 = empty sample).
    dose : float
        Incident quanta per unit area [e/Å² or photons/µm²].
    pixel_area : float
        Area of one pixel in the same length unit [Å² or µm²].
    seed : int or numpy.random.Generator

    Returns
    -------
    ndarray, int64
        Counts per pixel, on the selected device; their mean is
        ``dose · pixel_area`` for ``I = 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from mbook.core import detection
    >>> c = detection.apply_dose(np.ones((100, 100)), dose=20.0, pixel_area=0.25, seed=1)
    >>> round(float(c.mean()), 1)
    5.0
    """
    dose = checks.check_positive_number(dose, "dose", allow_zero=True)
    pixel_area = checks.check_positive_number(pixel_area, "pixel_area")
    return poisson_counts(_finite_nonnegative(intensity, "intensity") * dose * pixel_area, seed=seed)


def read_noise(counts, *, sigma, seed):
    """Add Gaussian read noise of standard deviation ``sigma`` [same unit as counts].

    The noise is drawn on the host (seeded) and added on the selected
    device; returns float64 there.
    """
    counts = checks.check_array(counts, "counts", real=True, finite=False)
    xp = backend.get_array_module(counts)
    counts = counts.astype(xp.float64)
    if not bool(xp.all(xp.isfinite(counts))):
        raise ValueError("counts contains NaN or infinite values")
    sigma = checks.check_positive_number(sigma, "sigma", allow_zero=True)
    return counts + sigma * _draw(counts, seed, lambda rng, values: rng.standard_normal(values.shape))


def camera(intensity, *, photons, gain=1.0, offset=0.0, read_noise=0.0, bit_depth=None, seed):
    """A scientific camera: shot noise, gain, offset, read noise, ADC.

    ``ADU = clip(round(gain · (N + σ_read · η) + offset), 0, 2^bits - 1)``, with
    ``N ~ Poisson(I · photons)`` photoelectrons and ``η ~ N(0, 1)``. Both
    draws are made on the host from one seeded generator (Poisson first);
    gain, offset and the ADC run on the selected device.

    Parameters
    ----------
    intensity : array_like, float
        Intensity relative to the incident beam.
    photons : float
        Mean photoelectrons per pixel at ``I = 1`` (dose × pixel area × QE).
    gain : float
        ADU per photoelectron (> 0).
    offset : float
        Bias added before the ADC [ADU].
    read_noise : float
        RMS read noise [photoelectrons].
    bit_depth : int, optional
        ADC bits: output rounded to integers and clipped to ``[0, 2^bits - 1]``
        (saturation and black clipping). None: an ideal ADC, no rounding or
        clipping (float output).
    seed : int or numpy.random.Generator

    Returns
    -------
    ndarray
        Digital numbers [ADU] on the selected device: uint16/uint32 with
        ``bit_depth``, float64 without.

    Examples
    --------
    >>> import numpy as np
    >>> from mbook.core import detection
    >>> adu = detection.camera(np.ones((32, 32)), photons=1e6, gain=0.1, bit_depth=12, seed=0)
    >>> int(adu.max())                      # 1e5 ADU saturates a 12-bit ADC
    4095
    """
    photons = checks.check_positive_number(photons, "photons", allow_zero=True)
    gain = checks.check_positive_number(gain, "gain")
    sigma = checks.check_positive_number(read_noise, "read_noise", allow_zero=True)
    offset = checks.check_number(offset, "offset", units="ADU")
    if bit_depth is not None:
        bit_depth = checks.check_count(bit_depth, "bit_depth", minimum=1, maximum=32)
    expected = _finite_nonnegative(intensity, "intensity") * photons
    xp = backend.get_array_module(expected)
    rng = checks.rng(seed)
    electrons = poisson_counts(expected, seed=rng)
    noise = _draw(expected, rng, lambda generator, mean: generator.standard_normal(mean.shape))
    signal = gain * (electrons + sigma * noise) + offset
    if bit_depth is None:
        return signal
    top = 2**bit_depth - 1
    return xp.clip(xp.rint(signal), 0, top).astype(xp.uint16 if bit_depth <= 16 else xp.uint32)


def vignetting_falloff(shape, *, strength, xp=None):
    """Relative illumination across a sensor, the cos⁴ law of a thin lens.

    ``F(r) = cos⁴ θ = 1 / (1 + (s r / r_c)²)²``, with ``r`` the distance
    from the centre (pixel ``n // 2``), ``r_c`` the distance to the corner and
    ``s = tan θ_corner`` = ``strength`` (the natural vignetting of a thin
    lens imaging a uniform field): 1 at
    the centre, ``1 / (1 + s²)²`` in the corners. Multiply an intensity by it.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    strength : float
        Tangent of the field angle at the corner (>= 0); 0 gives no falloff.
    xp : module, optional
        Array module; default the selected device's.

    Returns
    -------
    ndarray, float64
        On the selected device.
    """
    shape = checks.check_gpts(shape, 2, name="shape")
    strength = checks.check_positive_number(strength, "strength", allow_zero=True)
    xp = xp or backend.xp
    x, y = (xp.arange(n, dtype=xp.float64) - n // 2 for n in shape)
    corner = math.hypot(max(shape[0] // 2, 1), max(shape[1] // 2, 1))
    r2 = (x[:, None] ** 2 + y[None, :] ** 2) / corner**2
    return 1.0 / (1.0 + strength**2 * r2) ** 2


def mtf(gpts, *, pixel_fill=1.0, blur=0.0, xp=None):
    """Detector MTF in FFT order: square-pixel aperture times a Gaussian spread.

    ``MTF(k) = |sinc(f kx) sinc(f ky)| · exp(-2π² σ² |k|²)`` with ``k`` in
    cycles per pixel (Nyquist is 0.5), ``f`` the pixel fill factor and ``σ``
    the RMS spread of the charge or light in the sensor [pixels]. An ideal
    counting detector with full pixels has ``sinc(k)``, 0.64 at Nyquist
    (McMullan et al. 2009).

    Parameters
    ----------
    gpts : (int, int)
        Image shape.
    pixel_fill : float
        Width of the sensitive area of a pixel, in pixels (0, 1].
    blur : float
        RMS spread σ [pixels] (>= 0).
    xp : module, optional
        Array module; default the selected device's.

    Returns
    -------
    (nx, ny) ndarray, float64, FFT order, 1 at k = 0
        On the selected device.
    """
    gpts = checks.check_gpts(gpts, 2)
    fill = checks.check_positive_number(pixel_fill, "pixel_fill")
    if fill > 1:
        raise ValueError(f"pixel_fill must be in (0, 1], got {pixel_fill!r}")
    sigma = checks.check_positive_number(blur, "blur", allow_zero=True)
    # The result and about three temporaries of its size, float64: refused over budget before any work.
    progress.plan_batches(n_items=1, bytes_per_item=4 * 8 * gpts[0] * gpts[1])
    xp = xp or backend.xp
    kx, ky = (xp.fft.fftfreq(n) for n in gpts)
    aperture = abs(xp.sinc(fill * kx)[:, None] * xp.sinc(fill * ky)[None, :])
    return aperture * xp.exp(-2 * math.pi**2 * sigma**2 * (kx[:, None] ** 2 + ky[None, :] ** 2))


def _check_image_and_transfer(image, transfer):
    image = checks.check_array(image, "image", real=True, finite=False)
    transfer = checks.check_array(transfer, "transfer")
    if image.ndim != 2 or transfer.shape != image.shape:
        raise ValueError(f"image and transfer must be 2D arrays of one shape, got {image.shape} and {transfer.shape}")
    xp = backend.get_array_module(image)
    return image.astype(xp.float64), transfer


def _blur(image, transfer):
    """``Re F^-1[transfer · F[image]]`` on the device of ``image`` (the kernel of :func:`apply_mtf`)."""
    return backend.ifft2(backend.fft2(image) * transfer).real


def apply_mtf(image, transfer):
    """Blur an image by a transfer function: ``F^-1[MTF · F[image]]`` (real part).

    A transfer function with ``MTF(0) = 1`` keeps the mean of the image.

    Parameters
    ----------
    image : (nx, ny) array_like, float
    transfer : (nx, ny) array_like, FFT order

    Returns
    -------
    (nx, ny) ndarray, float64
        On the selected device.
    """
    image, transfer = _check_image_and_transfer(image, transfer)
    xp = backend.get_array_module(image)
    if not bool(xp.all(xp.isfinite(image))):
        raise ValueError("image contains NaN or infinite values")
    return _blur(image, transfer)


def detect(expected, *, transfer, dqe, seed):
    """Counts of a detector with a given MTF and DQE(k).

    ``D = F^-1[MTF · F[N̄]] + F^-1[(MTF / sqrt(DQE)) · F[N - N̄]]`` with
    ``N ~ Poisson(N̄)``: the mean is the blurred expectation and, for a flat
    field, the noise power spectrum is ``N̄ · MTF² / DQE``, so that
    ``DQE(k) = N̄ MTF(k)² / NPS(k)``, the definition used to measure it
    (McMullan et al. 2009, with the NPS normalised by ``N̄``). For a non-flat field the noise
    is that of the mean count, the usual linear-systems approximation.
    The Poisson draw is made on the host (seeded), the rest on the device.

    Parameters
    ----------
    expected : (nx, ny) array_like, float
        Expected counts per pixel before the detector (>= 0).
    transfer : (nx, ny) array_like
        MTF in FFT order (:func:`mtf`).
    dqe : float or (nx, ny) array_like
        DQE(k) in FFT order, in (0, 1].
    seed : int or numpy.random.Generator

    Returns
    -------
    (nx, ny) ndarray, float64
        On the selected device.
    """
    expected = _finite_nonnegative(expected, "expected")
    xp = backend.get_array_module(expected)
    transfer = checks.check_array(transfer, "transfer", real=True).astype(xp.float64)
    dqe = xp.broadcast_to(checks.check_array(dqe, "dqe", real=True, finite=False).astype(xp.float64),
                          expected.shape)
    if transfer.shape != expected.shape:
        raise ValueError(f"transfer must have the shape of expected {expected.shape}, got {transfer.shape}")
    if not bool(xp.all(xp.isfinite(dqe) & (dqe > 0) & (dqe <= 1))):
        raise ValueError("dqe must lie in (0, 1] at every frequency")
    fluctuation = poisson_counts(expected, seed=seed) - expected
    return _blur(expected, transfer) + _blur(fluctuation, transfer / xp.sqrt(dqe))
