"""Figures: physical extents, scale bars, colour keys and refusals."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # noqa: E402

from mbook.core import plotting


@pytest.mark.parametrize("target, expected", [(3.7, 2.0), (5.0, 5.0), (0.093, 0.05), (12.0, 10.0), (1.0, 1.0)])
def test_nice_length(target, expected):
    assert plotting.nice_length(target) == pytest.approx(expected)


def test_show_image_uses_physical_extent_and_x_horizontal():
    image = np.zeros((40, 20))
    image[30, 5] = 1.0  # x index 30, y index 5
    ax = plotting.show_image(image, sampling=0.5, units="Å")
    im = ax.get_images()[0]
    assert im.get_extent() == pytest.approx((-0.25, 19.75, -0.25, 9.75))
    row, col = np.unravel_index(np.argmax(im.get_array()), im.get_array().shape)
    assert (col, row) == (30, 5)  # drawn transposed: x to the right
    bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1
    plt.close("all")


def test_complex_to_rgb_hue_follows_phase():
    rgb = plotting.complex_to_rgb(np.array([[1.0, 1j, -1.0, 0.5]]))
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, 0] == pytest.approx([0, 1, 1])  # phase 0: cyan
    assert rgb[0, 2] == pytest.approx([1, 0, 0])  # phase π: red
    assert rgb[0, 3].max() == pytest.approx(0.5)  # half amplitude, half brightness


def test_show_image_refuses_complex_and_3d():
    with pytest.raises(TypeError, match="show_complex"):
        plotting.show_image(np.ones((4, 4), complex), sampling=1.0)
    with pytest.raises(ValueError, match="2D"):
        plotting.show_image(np.ones((2, 4, 4)), sampling=1.0)


def test_scrubber_embeds_one_frame_per_value():
    fig, ax = plt.subplots()
    (line,) = ax.plot([0, 1], [0, 0])
    html = plotting.scrubber(fig, lambda v: line.set_ydata([0, v]), [0.0, 0.5, 1.0]).data
    assert html.count("data:image/png;base64") == 3
    assert not plt.fignum_exists(fig.number)


def test_scalebar_is_dark_on_a_bright_image():
    ax = plotting.show_image(np.ones((16, 16)), sampling=1.0, cmap="gray", vmin=0, vmax=1)
    bar = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)][0]
    assert bar.size_bar.get_children()[0].get_facecolor()[:3] == (0.0, 0.0, 0.0)
    plt.close("all")


def test_explorer_shows_a_live_slider_and_returns_the_player(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *args, **kwargs: shown.append((args, kwargs)))
    drawn = []

    def draw(fig, value):
        fig.clear()
        fig.subplots().plot([0, 1], [0, value])
        drawn.append(value)

    html = plotting.explorer(draw, [0.5, 1.0, 2.0], live_values=[0.1, 0.2], description="z [µm]").data
    assert html.count("data:image/png;base64") == 3  # one frame per player value
    assert drawn[0] == 0.1  # the live figure was drawn at the first live value
    bundles = [args[0] for args, kwargs in shown if kwargs.get("raw")]
    assert len(bundles) == 1 and bundles[0]["text/html"] == ""  # nothing left in the static page
    assert "application/vnd.jupyter.widget-view+json" in bundles[0]
    plt.close("all")


def test_explorer_refuses_no_values_and_a_non_callable():
    with pytest.raises(ValueError, match="values must hold at least one"):
        plotting.explorer(lambda fig, v: None, [])
    with pytest.raises(TypeError, match="draw must be callable"):
        plotting.explorer("draw", [1.0])


def test_images_of_device_arrays_are_drawn(device):
    from mbook.core import backend

    image = backend.asarray(np.arange(16.0).reshape(4, 4))
    ax = plotting.show_image(image, sampling=1.0)
    assert ax.get_images()[0].get_array().max() == 15.0
    ax = plotting.show_complex(image * 1j, sampling=1.0)
    assert len(ax.get_images()) == 1
    plt.close("all")
