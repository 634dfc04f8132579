"""Figures with physical units: images, complex fields, scale bars, explorers.

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

from mbook.core import backend, checks, grids


def nice_length(target: float) -> float:
    """Largest 1, 2 or 5 × 10^n not above ``target`` (a readable scale-bar length)."""
    target = checks.check_positive_number(target, "target")
    exponent = math.floor(math.log10(target))
    for mantissa in (5, 2, 1):
        if mantissa * 10.0**exponent <= target * (1 + 1e-12):
            return mantissa * 10.0**exponent
    return 10.0**exponent


_LOCATIONS = ("upper right", "upper left", "lower left", "lower right", "right", "center left", "center right",
              "lower center", "upper center", "center")


def _check_axes(ax, name="ax"):
    if not hasattr(ax, "add_artist") or not hasattr(ax, "get_xlim"):
        raise TypeError(f"{name} must be matplotlib Axes, got {type(ax).__name__} {ax!r}")
    return ax


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
    _check_axes(ax)
    if length is not None:
        length = checks.check_positive_number(length, "length")
    fraction = checks.check_number(fraction, "fraction", lower=0, upper=1, lower_inclusive=False)
    if location not in _LOCATIONS:
        raise ValueError(f"location must be one of {_LOCATIONS}, got {location!r}")
    width = abs(np.diff(ax.get_xlim())[0])
    length = length or nice_length(fraction * width)
    label = f"{length:g} {units}"
    bar = AnchoredSizeBar(
        ax.transData, length, label, location, pad=0.3, borderpad=0.3, color=color, frameon=True,
        size_vertical=width / 150, label_top=True,
    )
    # A translucent backing of the opposite shade keeps bar and label readable on any colour map.
    backing = "black" if color in ("white", "w", "#ffffff") else "white"
    bar.patch.set(facecolor=backing, edgecolor="none", alpha=0.45)
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
    return _check_axes(ax)


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
    if image.ndim != 2 or image.size == 0 or image.dtype.kind not in "biufc":
        raise ValueError(f"image must be a non-empty 2D (nx, ny) array of numbers, got shape {image.shape}, "
                         f"dtype {image.dtype}")
    if np.iscomplexobj(image):
        raise TypeError("image is complex: use show_complex, or pass abs(image) or angle(image)")
    ax = _axes(ax)
    im = ax.imshow(image.T, origin="lower", extent=_extent(image.shape, sampling, centered), cmap=cmap,
                   **imshow_kwargs)
    # A white bar on a bright corner vanishes: pick black there.
    rgb = im.cmap(im.norm(image[-image.shape[0] // 3 :, : image.shape[1] // 4]))[..., :3]
    corner = (rgb @ np.array([0.299, 0.587, 0.114])).mean()  # perceived brightness of the corner
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
    if field.size == 0 or field.dtype.kind not in "biufc":
        raise ValueError(f"field must be a non-empty array of numbers, got shape {field.shape}, dtype {field.dtype}")
    if vmax is not None:
        vmax = checks.check_positive_number(vmax, "vmax")
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
    if field.ndim != 2 or field.size == 0:
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


def _check_values(values, name="values"):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of parameter values, got {type(values).__name__} {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must hold at least one parameter value")
    return values


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

    values = _check_values(values)
    interval = checks.check_positive_number(interval, "interval")
    animation = FuncAnimation(fig, lambda i: update(values[i]), frames=len(values), interval=interval)
    html = animation.to_jshtml(default_mode="once")
    plt.close(fig)
    return HTML(html)


def explorer(draw, values, *, figsize=(8, 3.2), live_values=None, description="", interval=300):
    """Explore a parameter: a live slider with a running kernel, a precomputed player in the static book.

    One call serves both readers. With a kernel (JupyterLab), an ipywidgets
    slider redraws the figure at any value of ``live_values``; the static
    HTML book drops widget views, and shows instead a kernel-free player of
    one precomputed frame per value of ``values`` (:func:`scrubber`).

    Parameters
    ----------
    draw : callable
        ``draw(fig, value)`` clears and redraws ``fig`` for one value. The
        figure lays itself out (constrained layout); ``fig.tight_layout()``
        in ``draw`` would replace that layout, with a warning at every frame.
    values : sequence
        Values for the player's frames (a few dozen at most: every frame is
        embedded as an image).
    figsize : (float, float)
        Figure size [inches].
    live_values : sequence, optional
        Values the live slider steps through (default ``values``); e.g. a
        finer grid than the player's.
    description : str
        Label of the live slider, e.g. ``"Δf [Å]"``.
    interval : int
        Delay between the player's frames when playing [ms].

    Returns
    -------
    IPython.display.HTML
        The player; the live slider is displayed as a side effect.
    """
    from IPython.display import display

    values = _check_values(values)
    interval = checks.check_positive_number(interval, "interval")
    figsize = tuple(checks.check_positive(figsize, "figsize", 2))
    if not callable(draw):
        raise TypeError(f"draw must be callable as draw(fig, value), got {type(draw).__name__}")
    live_values = values if live_values is None else list(live_values)
    if not live_values:
        raise ValueError("live_values must hold at least one parameter value")
    widget = _live_slider(draw, live_values, figsize=figsize, description=description)
    if widget is not None:
        # The widget view alone: in the static book (widget views dropped) it leaves no
        # "VBox(...)" text behind; with a kernel, the slider shows.
        from IPython.core.formatters import DisplayFormatter

        bundle, _ = DisplayFormatter().format(widget)
        display({"application/vnd.jupyter.widget-view+json": bundle["application/vnd.jupyter.widget-view+json"],
                 "text/html": ""}, raw=True)
    # Constrained layout re-fits titles, labels and colour bars on every frame: a player's frames are
    # saved at the figure's size, so anything a frame's layout leaves outside is cut off.
    fig = plt.figure(figsize=figsize, layout="constrained")
    return scrubber(fig, lambda value: draw(fig, value), values, interval=interval)


def _live_slider(draw, values, *, figsize, description):
    """An ipywidgets slider over ``values`` that redraws a figure; None without ipywidgets."""
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:  # the player still works
        return None
    output = widgets.Output()
    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)

    def on_change(index):
        with output:
            output.clear_output(wait=True)
            draw(fig, values[index])
            display(fig)

    # An index slider shows the value itself: any values (floats, ints, tuples) work.
    slider = widgets.SelectionSlider(options=[(_label(v), i) for i, v in enumerate(values)], value=0,
                                     description=description, continuous_update=False,
                                     style={"description_width": "initial"}, layout={"width": "90%"})
    slider.observe(lambda change: on_change(change["new"]), names="value")
    on_change(0)
    return widgets.VBox([slider, output])


def _label(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
