"""FFTW's wisdom, kept on disk per machine, so that each process plans from what earlier ones measured;
and the one import of pyFFTW (:func:`pyfftw_module`).

pyFFTW plans with ``FFTW_MEASURE``: it times candidate algorithms for each
transform shape, 0.3 s for a batch of 216² waves and seconds on a loaded
machine, and every new process (each page of the book, each test worker)
would time the same ones again. The plans measured are FFTW's *wisdom*;
:func:`save` writes it to a file after new plans are measured and
:func:`load` reads it before the first plan of a process
(:class:`mbook.core.fft_plans.FFT2Plan` calls both). A wisdom entry is only
used for the very transform it was measured for (shape, type, threads);
two machines should not share the file.
"""

from __future__ import annotations

import functools
import os
import platform
import threading

#: Names the wisdom file; empty turns the file off (every process measures its plans).
ENV_VARIABLE = "MBOOK_FFTW_WISDOM"
_loaded = False


@functools.lru_cache(maxsize=1)
def pyfftw_module():
    """The :mod:`pyfftw` module, or None when it is not installed (imported once, on first call)."""
    try:
        import pyfftw
    except ImportError:
        return None
    return pyfftw


def path() -> str | None:
    """The FFTW wisdom file: ``MBOOK_FFTW_WISDOM``, else ``~/.cache/mbook/fftw-wisdom-<host>``; None if off."""
    file = os.environ.get(ENV_VARIABLE)
    if file is None:
        host = "".join(c if c.isalnum() or c in "-_." else "_" for c in platform.node()) or "host"
        file = os.path.join(os.path.expanduser("~"), ".cache", "mbook", f"fftw-wisdom-{host}")
    return file or None


def load(pyfftw):
    """Read the wisdom file into FFTW, once per process (a missing file: nothing to read)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    file = path()
    try:
        with open(file, "rb") as f:
            parts = f.read().split(b"\0")
    except (OSError, TypeError):  # no file yet (or turned off): plans are measured
        return
    if len(parts) == 3:
        pyfftw.import_wisdom(tuple(parts))  # a stale or foreign entry is ignored by FFTW


def save(pyfftw):
    """Write FFTW's wisdom to the file, atomically (an unwritable place: left as it is)."""
    file = path()
    if file is None:
        return
    load(pyfftw)  # what the file holds stays in it
    try:  # a cache: a read-only home only means the next process measures again
        os.makedirs(os.path.dirname(file) or ".", exist_ok=True)
        temporary = f"{file}.{os.getpid()}.{threading.get_ident()}"
        with open(temporary, "wb") as f:
            f.write(b"\0".join(pyfftw.export_wisdom()))
        os.replace(temporary, file)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass
