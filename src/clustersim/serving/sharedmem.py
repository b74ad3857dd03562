"""Arrays in anonymous shared memory: the serving results that forked workers write.

An array made here lives in an anonymous ``MAP_SHARED`` memory map, so worker processes
forked after its creation write into the very pages the parent reads (the serving fast
path's workers scatter their engines' results straight into
:class:`~clustersim.serving.simulator.ServingSim`'s per-request arrays). Otherwise they are
ordinary numpy arrays: they pickle by value and are freed with their last view.

:func:`shared_full` maps only arrays of at least :data:`MIN_SHARED_BYTES` (each map is
one kernel mapping, and a process may hold only so many — about 65,000 by default — so
thousands of small results stay ordinary arrays); :func:`shared_copy` always maps.
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["MIN_SHARED_BYTES", "is_shared", "prefault", "shared_copy", "shared_full"]

MIN_SHARED_BYTES = 1 << 20
"""Smallest array :func:`shared_full` puts in shared memory (1 MiB)."""


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
MADV_POPULATE_WRITE = 23
"""Linux >= 5.14: fault a range in for writing in one call (not in Python 3.11's mmap)."""


def _mapped(n: int, dtype: np.dtype[np.generic]) -> np.ndarray:
    # MAP_POPULATE: the kernel maps every page now, in bulk, instead of one page fault per
    # 4 KiB page on first touch (shared memory gets no transparent huge pages by default,
    # and a page fault costs microseconds in a VM: a day of one ServeGen class is GBs)
    mm = mmap.mmap(-1, max(1, n * dtype.itemsize), flags=mmap.MAP_SHARED | _POPULATE)
    return np.frombuffer(mm, dtype, n)  # a fresh map is zero-filled


def _owner(a: np.ndarray) -> mmap.mmap | None:
    base: object = a
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def prefault(arrays: Sequence[np.ndarray]) -> None:
    """Map the pages of shared ``arrays`` into this process now, in bulk.

    A forked worker that scatters into shared arrays would otherwise take one page fault
    per 4 KiB page it touches (its page tables start empty for shared mappings). Uses
    ``MADV_POPULATE_WRITE``; a no-op where the kernel or platform lacks it.
    """
    if not sys.platform.startswith("linux"):  # the advice number is Linux's
        return
    for a in arrays:
        mm = _owner(a)
        if mm is None:
            continue
        try:
            mm.madvise(MADV_POPULATE_WRITE)
        except (OSError, ValueError):
            return  # not supported here: fault on demand as before


def shared_full(n: int, value: float | int, dtype: DTypeLike = np.float64) -> np.ndarray:
    """``np.full(n, value, dtype)``, in shared memory when it holds at least
    :data:`MIN_SHARED_BYTES`."""
    dt = np.dtype(dtype)
    if n * dt.itemsize < MIN_SHARED_BYTES:
        return np.full(n, value, dtype=dt)
    out = _mapped(n, dt)
    if value != 0:
        out[:] = value
    return out


def shared_copy(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` in an anonymous shared memory map (whatever its size)."""
    out = _mapped(a.size, a.dtype).reshape(a.shape)
    out[...] = a
    return out


def is_shared(a: np.ndarray) -> bool:
    """Whether ``a``'s memory is a memory map (following views to the owning buffer)."""
    return _owner(a) is not None
