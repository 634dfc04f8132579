"""Local Fourier features of lattice images, their principal components, and K-means region means.

Two grains of a lattice that differ only by orientation or spacing have the same pixel values; what
differs is the *local spectrum*. Following Mevenkamp et al. (2016) and the white paper (section
5.2.1), the feature of a pixel ``r`` is the magnitude of the Fourier transform of the image seen
through a Gaussian window centred on ``r``,

    F(r, k) = | Σ_x I(x) w(x - r) exp(-2πi k·(x - r)) |,   w(x) = exp(-|x|² / 2σ²) / (2πσ²),

sampled at ``num_radial`` radii ``|k|`` and ``num_angles`` directions. For every ``k`` this is the
modulus of the convolution of the image with a Gabor filter ``w(x) exp(2πi k·x)``, i.e. one FFT of
the image and one inverse FFT per frequency: ``F(·, k) = |IFFT[Î(q) ŵ(q - k)]|`` with
``ŵ(q) = exp(-2π²σ²|q|²)``. The modulus removes the phase, so the feature does not change when the
lattice is translated (a spot moving under the window).

Rotation, argued. A real image has ``|F(r, -k)| = |F(r, k)|``, so directions in ``[0, π)`` suffice.
What to do with the direction depends on what separates the grains:

- ``rotation="covariant"`` (default) keeps the direction axis. Rotational domains of *one* lattice
  (the common case on a surface: the same molecular layer grown in several orientations) differ only
  by the direction of their Bragg peaks; any rotation-invariant feature maps them to the same point
  and no clustering can separate them. The Gaussian window's spectrum ``ŵ`` has the width
  ``1/(2πσ)`` [cycles/px], so a peak falls into neighbouring angular samples smoothly: the features
  change continuously with the orientation instead of jumping between bins;
- ``rotation="invariant"`` replaces the direction axis by the moduli of its discrete Fourier
  transform, the angular harmonics ``h = 0 .. num_angles // 2``. A rotation of the image by a
  multiple of the angular step shifts the direction axis cyclically and leaves these moduli
  unchanged (between steps, nearly so), while the harmonics keep the lattice's symmetry: a square
  lattice puts its weight in ``h = 2`` (four peaks in ``[0, 2π)``, two in ``[0, π)``), a hexagonal
  one in ``h = 3``. Use it when grains differ by kind or spacing and the same grain may appear in
  any orientation.

The magnitudes may be smoothed by a second Gaussian (``smoothing`` windows wide) to average out the
beats between peaks that share a filter; they are reduced to a few dimensions by principal components
(:func:`fit_pca`, :func:`apply_pca`) and clustered by K-means (:func:`kmeans`), whose means are the
region means of the Chan-Vese segmentation (:mod:`mbook.segmentation.chan_vese`).

Feature arrays are ``(..., C, nx, ny)``: the channel axis third from last, image axes last, leading
axes a batch. All of it runs on the selected device; the image is reflected at its edges before the
FFTs, so the periodic transform sees no jump there.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.segmentation import features
>>> x = np.arange(64)
>>> stripes = np.cos(2 * np.pi * 0.2 * x)[:, None] * np.ones((1, 64))  # wave vector (0.2, 0)
>>> f = features.local_fourier_features(stripes, window=4.0, frequencies=(0.1, 0.3), num_radial=3,
...                                     num_angles=4)
>>> f.shape
(12, 64, 64)
>>> int(backend.asnumpy(f[:, 32, 32]).argmax())  # radius 0.2 (index 1), direction 0 (index 0)
4
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, progress

ROTATIONS = ("covariant", "invariant")


def frequency_grid(*, frequencies=(0.05, 0.35), num_radial: int = 8, num_angles: int = 12):
    """The wave vectors sampled by :func:`local_fourier_features` [cycles/px].

    Parameters
    ----------
    frequencies : (float, float)
        Smallest and largest ``|k|`` [cycles/px], ``0 < low < high <= 0.5``.
    num_radial : int
        Radii, evenly spaced between the two.
    num_angles : int
        Directions, evenly spaced in ``[0, π)``.

    Returns
    -------
    radius : (num_radial,) ndarray
        ``|k|`` [cycles/px].
    angle : (num_angles,) ndarray
        Directions [rad].

    Both on the host (NumPy): they are parameters, not data.
    """
    low, high = checks.as_tuple(frequencies, "frequencies", 2)
    low = checks.check_number(low, "frequencies", lower=0, lower_inclusive=False, upper=0.5,
                              units="cycles/px")
    high = checks.check_number(high, "frequencies", lower=low, upper=0.5, units="cycles/px")
    num_radial = checks.check_count(num_radial, "num_radial")
    num_angles = checks.check_count(num_angles, "num_angles")
    return np.linspace(low, high, num_radial), np.arange(num_angles) * math.pi / num_angles


def local_fourier_features(image, *, window: float = 4.0, frequencies=(0.05, 0.35), num_radial: int = 8,
                           num_angles: int = 12, rotation: str = "covariant",
                           smoothing: float = 1.0):
    """Windowed Fourier magnitudes of every pixel (see the module's docstring).

    Parameters
    ----------
    image : (..., nx, ny) array, real
        Image(s) [any unit]; leading axes are a batch.
    window : float
        Standard deviation σ of the Gaussian window [px]; the window holds about ``(2σ · |k|)²``
        lattice cells, so take σ of a few lattice spacings. Its extent ``4σ`` must fit the image.
    frequencies : (float, float)
        Range of ``|k|`` [cycles/px], ``0 < low < high <= 0.5``; it should hold the lattices' first
        Bragg peaks (``2 / (√3 a)`` for a hexagonal lattice of spacing ``a`` [px], ``1 / a`` for a
        square one).
    num_radial, num_angles : int
        Samples of ``|k|`` and of the direction in ``[0, π)``.
    rotation : {"covariant", "invariant"}
        Keep the direction axis, or replace it by the moduli of its angular harmonics (see above).
    smoothing : float
        Standard deviation of a Gaussian that smooths the magnitudes, in units of ``window``; 0 for
        none (before a total-variation segmentation, which smooths by itself, 0 saves the two FFTs
        per frequency that the smoothing costs).

    Returns
    -------
    (..., C, nx, ny) ndarray, float64
        On the selected device; ``C = num_radial * num_angles`` (covariant, index
        ``radius * num_angles + direction``) or ``num_radial * (num_angles // 2 + 1)`` (invariant,
        index ``radius * (num_angles // 2 + 1) + harmonic``).

    Raises
    ------
    ValueError
        For a bad argument, naming it; for a window larger than the image.
    MemoryError
        When even one frequency does not fit the memory budget.
    """
    image = checks.check_array(image, "image", min_ndim=2, real=True)
    nx, ny = image.shape[-2:]
    window = checks.check_positive_number(window, "window")
    if 4 * window > min(nx, ny):
        raise ValueError(f"window must fit the image: its extent 4 * window = {4 * window:g} px exceeds the "
                         f"image's smaller side {min(nx, ny)} px (shape {tuple(image.shape)}); use a window "
                         f"<= {min(nx, ny) / 4:g} px")
    radius, angle = frequency_grid(frequencies=frequencies, num_radial=num_radial, num_angles=num_angles)
    checks.check_choice(rotation, "rotation", ROTATIONS)
    smoothing = checks.check_number(smoothing, "smoothing", lower=0, upper=min(nx, ny) / (4 * window))
    xp = backend.get_array_module(image)
    image = image.astype(xp.float64)

    # Reflect the image by 3σ at every edge: the FFT's periodic wrap then sees no jump.
    pad = int(math.ceil(3 * window * max(1.0, 1 + smoothing)))
    pad_x, pad_y = min(pad, nx - 1), min(pad, ny - 1)
    widths = [(0, 0)] * (image.ndim - 2) + [(pad_x, pad_x), (pad_y, pad_y)]
    padded = xp.pad(image - image.mean(axis=(-2, -1), keepdims=True), widths, mode="reflect")
    spectrum = backend.fft2(padded)
    fft = backend.fft_module(padded)
    qx = fft.fftfreq(padded.shape[-2])[:, None]
    qy = fft.fftfreq(padded.shape[-1])[None, :]
    kx = xp.asarray((radius[:, None] * np.cos(angle)[None, :]).ravel())
    ky = xp.asarray((radius[:, None] * np.sin(angle)[None, :]).ravel())
    num_k = kx.shape[0]
    post = xp.exp(-2 * math.pi**2 * (smoothing * window) ** 2 * (qx**2 + qy**2))

    batch_shape = image.shape[:-2]
    pixels = padded.shape[-1] * padded.shape[-2] * max(1, math.prod(batch_shape))
    out_bytes = 8 * num_k * nx * ny * max(1, math.prod(batch_shape))
    per_k = progress.plan_batches(n_items=num_k, bytes_per_item=4 * 16 * pixels, fixed_bytes=out_bytes + 16 * pixels)
    magnitudes = []
    for start in range(0, num_k, per_k):  # bounded: batches of frequencies that fit the budget
        kxb = kx[start:start + per_k, None, None]
        kyb = ky[start:start + per_k, None, None]
        # ŵ(q - k) is separable: the product of two 1D Gaussians (an outer product, no 2D exp).
        gabor = (xp.exp(-2 * math.pi**2 * window**2 * (qx - kxb) ** 2)
                 * xp.exp(-2 * math.pi**2 * window**2 * (qy - kyb) ** 2))
        response = xp.abs(backend.ifft2(spectrum[..., None, :, :] * gabor))
        if smoothing > 0:
            response = backend.ifft2(backend.fft2(response) * post).real
        magnitudes.append(response[..., pad_x:pad_x + nx, pad_y:pad_y + ny])
    features = xp.concatenate(magnitudes, axis=-3)
    if rotation == "invariant":
        shape = batch_shape + (num_radial, num_angles, nx, ny)
        harmonics = xp.abs(backend.fft_module(features).rfft(features.reshape(shape), axis=-3))
        features = harmonics.reshape(batch_shape + (-1, nx, ny)) / num_angles
    return features


class PCA(NamedTuple):
    """Principal components of feature vectors (from :func:`fit_pca`); arrays on the selected device.

    Attributes
    ----------
    mean : (C,) or (..., C) ndarray
        Mean feature vector (of every image, with ``per_image``).
    components : (num_components, C) or (..., num_components, C) ndarray
        Orthonormal principal directions, by decreasing variance.
    variance : (num_components,) or (..., num_components) ndarray
        Variance of the features along each direction.
    scale : float or (...,) ndarray
        Standard deviation along the first direction: :func:`apply_pca` divides by it, so the first
        score has unit variance and the others keep their relative weight.
    """

    mean: object
    components: object
    variance: object
    scale: object


def _points(features):
    """``(..., C, nx, ny)`` features as ``(N, C)`` points (N = batch x pixels)."""
    xp = backend.get_array_module(features)
    channels = features.shape[-3]
    return xp.moveaxis(features, -3, -1).reshape(-1, channels)


def fit_pca(features, num_components: int = 4, *, per_image: bool = False) -> PCA:
    """Principal components of the feature vectors of every pixel, of all images or of each image.

    Parameters
    ----------
    features : (..., C, nx, ny) array, real
        From :func:`local_fourier_features`.
    num_components : int
        Directions to keep, ``1 <= num_components <= C``.
    per_image : bool
        One set of directions for all the pixels of all images (False: a model to apply to new
        images), or one per image (True: the directions that vary most *within* each image, which is
        what separates its grains when the images hold different lattices), batched along the
        leading axes.

    Returns
    -------
    PCA
    """
    features = checks.check_array(features, "features", min_ndim=3, real=True)
    channels = features.shape[-3]
    num_components = checks.check_count(num_components, "num_components", maximum=channels)
    if not isinstance(per_image, bool):
        raise TypeError(f"per_image must be True or False, got {per_image!r}")
    xp = backend.get_array_module(features)
    batch_shape = features.shape[:-3] if per_image else ()
    n = features.shape[-2] * features.shape[-1] * (1 if per_image else max(1, math.prod(features.shape[:-3])))
    points = _points(features).reshape(-1, n, channels)  # (M, N, C)
    mean = points.mean(axis=1)
    centred = points - mean[:, None, :]
    covariance = xp.matmul(xp.swapaxes(centred, -1, -2), centred) / max(n - 1, 1)
    values, vectors = xp.linalg.eigh(covariance)  # ascending, batched
    order = xp.arange(channels - 1, channels - 1 - num_components, -1)
    components = xp.swapaxes(vectors[..., order], -1, -2)  # (M, num_components, C)
    # Fix each direction's sign (largest entry positive): the same scores on every device.
    largest = xp.argmax(xp.abs(components), axis=-1)[..., None]
    signs = xp.sign(xp.take_along_axis(components, largest, axis=-1))
    components = components * xp.where(signs == 0, 1.0, signs)
    variance = xp.maximum(values[..., order], 0)
    scale = xp.sqrt(xp.maximum(variance[..., 0], 1e-300))
    if not per_image:
        return PCA(mean[0], components[0], variance[0], float(scale[0]))
    return PCA(mean.reshape(batch_shape + (channels,)),
               components.reshape(batch_shape + (num_components, channels)),
               variance.reshape(batch_shape + (num_components,)), scale.reshape(batch_shape))


def apply_pca(features, pca: PCA):
    """Scores of features on fitted principal components, scaled by ``pca.scale``.

    Parameters
    ----------
    features : (..., C, nx, ny) array, real
        Same ``C`` as the features ``pca`` was fitted to (and the same leading axes, for a PCA
        fitted ``per_image``).
    pca : PCA

    Returns
    -------
    (..., num_components, nx, ny) ndarray
        On the selected device.
    """
    features = checks.check_array(features, "features", min_ndim=3, real=True)
    if not isinstance(pca, PCA):
        raise TypeError(f"pca must be a PCA from fit_pca, got {type(pca).__name__}")
    channels = features.shape[-3]
    components, mean = backend.asarray(pca.components), backend.asarray(pca.mean)
    if components.shape[-1] != channels:
        raise ValueError(f"features have {channels} channels (axis -3, shape {tuple(features.shape)}) but pca was "
                         f"fitted to {components.shape[-1]}")
    xp = backend.get_array_module(features)
    if components.ndim == 2:
        scores = (_points(features) - mean) @ components.T / pca.scale
        shape = features.shape[:-3] + features.shape[-2:] + (components.shape[0],)
        return xp.moveaxis(scores.reshape(shape), -1, -3)
    if components.shape[:-2] != features.shape[:-3]:
        raise ValueError(f"pca was fitted per image to the leading axes {tuple(components.shape[:-2])}, but the "
                         f"features have {tuple(features.shape[:-3])}")
    centred = features - mean[..., :, None, None]
    scale = backend.asarray(pca.scale)
    return xp.einsum("...kc,...cxy->...kxy", components, centred) / scale[..., None, None, None]


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans`.

    Attributes
    ----------
    means : (..., num_clusters, C) ndarray
        Cluster means of every image, on the selected device.
    labels : (..., nx, ny) ndarray, int64
        Cluster of every pixel, on the selected device.
    num_iter : int
        Lloyd iterations run.
    converged : bool
        Whether a check found every mean moved by at most ``tol`` (relative).
    inertia : float
        Sum of squared distances of the points to their means, over all images.
    """

    means: object
    labels: object
    num_iter: int
    converged: bool
    inertia: float


def _squared_distances(points, means):
    """``|x_n - c_k|²`` as ``(M, N, K)`` for points ``(M, N, C)`` and means ``(M, K, C)``."""
    xp = backend.get_array_module(points)
    cross = xp.matmul(points, xp.swapaxes(means, -1, -2))
    return xp.maximum((points**2).sum(axis=-1)[..., None] - 2 * cross + (means**2).sum(axis=-1)[:, None, :], 0)


def kmeans(features, num_clusters: int, *, max_num_iter: int = 100, tol: float = 1e-6,
           check_every: int = 5, seed: int = 0) -> KMeansResult:
    """K-means clustering of the feature vectors of the pixels of each image: the region means.

    Every image (every index of the leading axes) is clustered on its own, all of them at once
    along an array axis; to cluster the pixels of several images together, put them side by side
    in one image. Lloyd's iteration starts from k-means++ (Arthur and Vassilvitskii 2007): the first
    mean is a random pixel, each next one a pixel drawn with probability proportional to its squared
    distance to the means so far. The uniform numbers are drawn on the host from ``seed`` and moved,
    so the same seed gives the same means on every device. An empty cluster keeps its mean. Every
    ``check_every`` iterations the largest move of a mean is compared with ``tol`` times the spread
    of its image's points: one number copied to the host per check.

    Parameters
    ----------
    features : (..., C, nx, ny) array, real
        Feature maps (e.g. :func:`apply_pca` scores).
    num_clusters : int
        Number of clusters K >= 1, at most the number of pixels of an image.
    max_num_iter : int
        Iteration cap.
    tol : float
        Relative move of the means to stop at; 0 runs every iteration.
    check_every : int
        Iterations between convergence tests.
    seed : int
        Seed of the k-means++ start.

    Returns
    -------
    KMeansResult
    """
    features = checks.check_array(features, "features", min_ndim=3, real=True)
    batch_shape, channels = features.shape[:-3], features.shape[-3]
    n = features.shape[-2] * features.shape[-1]
    num_clusters = checks.check_count(num_clusters, "num_clusters", maximum=n)
    max_num_iter = checks.check_iterations(max_num_iter)
    tol = checks.check_tolerance(tol)
    check_every = checks.check_iterations(check_every, "check_every")
    seed = checks.check_count(seed, "seed", minimum=0)
    xp = backend.get_array_module(features)
    points = _points(features).astype(xp.float64).reshape(-1, n, channels)  # (M, N, C)
    m = points.shape[0]

    uniforms = backend.asarray(np.random.default_rng(seed).uniform(size=(m, num_clusters)))
    index = xp.minimum((uniforms[:, 0] * n).astype(xp.int64), n - 1)
    means = xp.take_along_axis(points, index[:, None, None], axis=1)  # (M, 1, C)
    closest = _squared_distances(points, means)[..., 0]
    for k in range(1, num_clusters):  # k-means++: one draw per further mean
        cumulative = xp.cumsum(closest, axis=1)
        index = xp.argmax(cumulative >= uniforms[:, k, None] * cumulative[:, -1:], axis=1)
        new = xp.take_along_axis(points, index[:, None, None], axis=1)
        means = xp.concatenate([means, new], axis=1)
        closest = xp.minimum(closest, _squared_distances(points, new)[..., 0])

    spread = xp.sqrt(xp.mean(xp.sum((points - points.mean(axis=1, keepdims=True)) ** 2, axis=-1), axis=1))
    clusters = xp.arange(num_clusters)
    converged, it = False, 0
    for it in range(1, max_num_iter + 1):
        labels = xp.argmin(_squared_distances(points, means), axis=-1)
        onehot = (labels[..., None] == clusters).astype(points.dtype)  # (M, N, K)
        counts = onehot.sum(axis=1)
        sums = xp.matmul(xp.swapaxes(onehot, -1, -2), points)  # (M, K, C)
        new = xp.where(counts[..., None] > 0, sums / xp.maximum(counts, 1)[..., None], means)
        move = xp.sqrt(xp.sum((new - means) ** 2, axis=-1))  # (M, K)
        means = new
        if tol > 0 and it % check_every == 0 and bool(xp.all(move <= tol * spread[:, None])):  # one copy
            converged = True
            break
    distances = _squared_distances(points, means)
    labels = xp.argmin(distances, axis=-1)
    inertia = float(xp.take_along_axis(distances, labels[..., None], axis=-1).sum())
    return KMeansResult(means.reshape(batch_shape + (num_clusters, channels)),
                        labels.reshape(batch_shape + features.shape[-2:]), it, converged, inertia)
