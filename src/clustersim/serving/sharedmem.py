"""Arrays in anonymous shared memory: the serving results that forked workers write.

An array made here lives in an anonymous ``MAP_SHARED`` memory map, so worker processes
forked after its creation write into the very pages the parent reads (the serving fast
path's workers scatter their engines' results straight into
:class:`~clustersim.serving.simulator.ServingSim`'s per-request arrays). Otherwise they are
ordinary numpy arrays: they pickle by value and are freed with their last view.
"""

from __future__ import annotations

import mmap

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["is_shared", "shared_copy", "shared_full"]


def shared_full(n: int, value: float | int, dtype: DTypeLike = np.float64) -> np.ndarray:
    """``np.full(n, value, dtype)`` in an anonymous shared memory map."""
    dt = np.dtype(dtype)
    mm = mmap.mmap(-1, max(1, n * dt.itemsize))
    out = np.frombuffer(mm, dt, n)
    if value != 0:  # a fresh map is zero-filled
        out[:] = value
    return out


def shared_copy(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` in an anonymous shared memory map."""
    out = shared_full(a.size, 0, a.dtype).reshape(a.shape)
    out[...] = a
    return out


def is_shared(a: np.ndarray) -> bool:
    """Whether ``a``'s memory is a memory map (following views to the owning buffer)."""
    base: object = a
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)
