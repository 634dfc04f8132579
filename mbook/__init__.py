"""mbook: the library behind the Computational Microscopy book.

Small modules, one per kind of physical or mathematical object, with pure
functions over NumPy or CuPy arrays (see :mod:`mbook.core.backend`). Grid and FFT
conventions are stated once in :mod:`mbook.core.grids`.

Two environment variables steer every notebook:

- ``MBOOK_DEVICE=auto|cpu|gpu``: the array backend (:mod:`mbook.core.backend`);
- ``MBOOK_SIZE=small|full``: problem size; ``small`` (default) runs on a laptop
  CPU in seconds, ``full`` is the research-size run meant for a GPU.
"""

from __future__ import annotations

import os

from mbook.core import backend, grids

__version__ = "0.1.0"

SIZES = ("small", "full")


def size() -> str:
    """The problem size asked for by ``MBOOK_SIZE`` (``"small"`` unless set).

    Raises
    ------
    ValueError
        When ``MBOOK_SIZE`` is set to anything but ``small`` or ``full``.
    """
    value = os.environ.get("MBOOK_SIZE", "small").strip().lower()
    if value not in SIZES:
        raise ValueError(f"MBOOK_SIZE must be one of {SIZES}, got {value!r}")
    return value


def by_size(*, small, full):
    """Pick a parameter by the size knob: ``by_size(small=128, full=1024)``.

    Examples
    --------
    >>> import os
    >>> os.environ.pop("MBOOK_SIZE", None) and None
    >>> by_size(small=128, full=1024)
    128
    """
    return full if size() == "full" else small


__all__ = ["backend", "grids", "size", "by_size", "SIZES"]
