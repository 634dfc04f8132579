"""Figures with physical units: images, complex fields, scale bars, scrubbers.

Arrays follow :mod:`mbook.core.grids`: indexed ``[x, y]``, so they are drawn
transposed with the origin at the lower left and x to the right. Inputs may
be NumPy or CuPy; they are copied to the host for drawing.

Examples
--------
>>> import numpy as np, matplotlib
>>> matplotlib.use("Agg")
>>> from mbook.core import plotting
>>> ax = plotting.show_image(np.ones((8, 8)), sampling=0.5, units="Å")
>>> plotting.nice_length(3.7)
2.0
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.colors import hsv_to_rgb
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from mbook.core import backend, grids


def nice_length(target: float) -> float:
    """Largest 1, 2 or 5 × 10^n not above ``target`` (a readable scale-bar length)."""
    if not target > 0:
        raise ValueError(f"target must be > 0, got {target!r}")
    exponent = math.floor(math.log10(target))
    for mantissa in (5, 2, 1):
        if mantissa * 10.0**exponent <= target * (1 + 1e-12):
            return mantissa * 10.0**exponent
    return 10.0**exponent


def add_scalebar(ax, length=None, *, units="Å", color="white", location="lower right", fraction=0.25):
    """Draw a labelled scale bar on image axes whose data coordinates are lengths.

    Parameters
    ----------
    ax : matplotlib Axes
    length : float, optional
        Bar length [units]; default a 1-2-5 length near ``fraction`` of the width.
    units : str
        Unit label, e.g. ``"Å"``, ``"nm"``, ``"µm"``, ``"1/Å"``.
    """
    width = abs(np.diff(ax.get_xlim())[0])
    length = length or nice_length(fraction * width)
    label = f"{length:g} {units}"
    bar = AnchoredSizeBar(
        ax.transData, length, label, location, pad=0.4, color=color, frameon=False,
        size_vertical=width / 150, label_top=True,
    )
    ax.add_artist(bar)
    return bar


def _extent(shape, sampling, centered):
    grid = grids.make_grid(gpts=shape[-2:], sampling=sampling)
    x, y = (backend.asnumpy(c) for c in grids.coordinates(grid, centered=centered, xp=np))
    dx, dy = grid.sampling
    return (x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2)


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots()
    return ax


def show_image(image, sampling, *, ax=None, units="Å", cmap="gray", title=None, colorbar=None,
               scalebar=True, centered=False, **imshow_kwargs):
    """Show a real 2D array in physical coordinates, with a scale bar.

    Parameters
    ----------
    image : (nx, ny) array_like, real
    sampling : float or (float, float)
        Pixel size [units].
    units : str
        Length unit of ``sampling`` for the scale bar label.
    colorbar : str, optional
        Label of a colour bar (its quantity and unit); no colour bar if None.
    scalebar : bool
        Draw a scale bar and hide the axes ticks (True), or label the axes (False).
    centered : bool
        Coordinates with 0 at index n//2 (see :mod:`mbook.core.grids`).

    Returns
    -------
    matplotlib Axes
    """
    image = backend.asnumpy(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2D (nx, ny), got shape {image.shape}")
    if np.iscomplexobj(image):
        raise TypeError("image is complex: use show_complex, or pass abs(image) or angle(image)")
    ax = _axes(ax)
    im = ax.imshow(image.T, origin="lower", extent=_extent(image.shape, sampling, centered), cmap=cmap,
                   **imshow_kwargs)
    # A white bar on a bright corner vanishes: pick black there.
    corner = im.cmap(im.norm(image[-image.shape[0] // 3 :, : image.shape[1] // 4]))[..., :3].mean()
    _decorate(ax, units, title, scalebar, color="black" if corner > 0.6 else "white")
    if colorbar is not None:
        ax.figure.colorbar(im, ax=ax, label=colorbar, shrink=0.85)
    return ax


def complex_to_rgb(field, *, vmax=None):
    """Domain colouring: hue = phase, brightness = amplitude (scaled to ``vmax``).

    Returns
    -------
    (nx, ny, 3) ndarray, float in [0, 1]
    """
    field = backend.asnumpy(field)
    amplitude = np.abs(field)
    vmax = vmax or amplitude.max() or 1.0
    hsv = np.stack(
        [(np.angle(field) + np.pi) / (2 * np.pi), np.ones_like(amplitude), np.clip(amplitude / vmax, 0, 1)],
        axis=-1,
    )
    return hsv_to_rgb(hsv)


def _phase_wheel(ax):
    inset = ax.inset_axes([0.78, 0.78, 0.2, 0.2])
    t = np.linspace(-1, 1, 64)
    wheel = (t[:, None] + 1j * t[None, :]) * (np.hypot(t[:, None], t[None, :]) <= 1)
    inset.imshow(complex_to_rgb(wheel).transpose(1, 0, 2), origin="lower")
    inset.set_axis_off()
    inset.set_title("phase", fontsize=7, color="white", pad=1)
    return inset


def show_complex(field, sampling, *, ax=None, units="Å", title=None, scalebar=True, centered=False,
                 vmax=None):
    """Show a complex 2D field: hue is the phase, brightness the amplitude.

    A colour wheel in the corner gives the phase key (right = 0, up = π/2).

    Parameters
    ----------
    field : (nx, ny) array_like, complex
    sampling : float or (float, float)
        Pixel size [units].
    vmax : float, optional
        Amplitude drawn at full brightness (default: the maximum).

    Returns
    -------
    matplotlib Axes
    """
    field = backend.asnumpy(field)
    if field.ndim != 2:
        raise ValueError(f"field must be 2D (nx, ny), got shape {field.shape}")
    ax = _axes(ax)
    ax.imshow(complex_to_rgb(field, vmax=vmax).transpose(1, 0, 2), origin="lower",
              extent=_extent(field.shape, sampling, centered))
    _decorate(ax, units, title, scalebar)
    _phase_wheel(ax)
    return ax


def _decorate(ax, units, title, scalebar, color="white"):
    if title:
        ax.set_title(title)
    if scalebar:
        ax.set_xticks([])
        ax.set_yticks([])
        add_scalebar(ax, units=units, color=color)
    else:
        ax.set_xlabel(f"x [{units}]")
        ax.set_ylabel(f"y [{units}]")


def scrubber(fig, update, values, *, interval=300):
    """A kernel-free slider for the static book: one precomputed frame per value.

    ipywidgets need a running kernel; this renders ``update(value)`` for each
    value into an HTML/JavaScript player (matplotlib's ``to_jshtml``) that
    works in the built HTML page with no server.

    Parameters
    ----------
    fig : matplotlib Figure
        The figure ``update`` redraws. It is closed afterwards so the page
        shows the player only.
    update : callable
        ``update(value)`` redraws ``fig`` for one parameter value.
    values : sequence
        Parameter values, one frame each (keep it to a few dozen: every frame
        is embedded as an image).
    interval : int
        Delay between frames when playing [ms].

    Returns
    -------
    IPython.display.HTML
    """
    from IPython.display import HTML

    values = list(values)
    if not values:
        raise ValueError("values must hold at least one parameter value")
    animation = FuncAnimation(fig, lambda i: update(values[i]), frames=len(values), interval=interval)
    html = animation.to_jshtml(default_mode="once")
    plt.close(fig)
    return HTML(html)
