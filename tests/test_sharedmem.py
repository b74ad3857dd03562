"""serving.sharedmem: arrays a forked child writes and the parent reads."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest

from clustersim.serving.sharedmem import (
    MIN_SHARED_BYTES,
    is_shared,
    prefault,
    shared_copy,
    shared_full,
)


def test_shared_full_and_copy_values_and_kind() -> None:
    big = MIN_SHARED_BYTES // 8  # float64 elements: exactly the threshold
    a = shared_full(big, np.nan)
    assert np.isnan(a).all() and a.dtype == np.float64 and is_shared(a)
    b = shared_full(MIN_SHARED_BYTES // 4, -1, np.int32)
    assert (b == -1).all() and b.dtype == np.int32 and is_shared(b)
    z = shared_full(MIN_SHARED_BYTES // 2, 0, np.int16)
    assert not z.any() and is_shared(z)
    small = shared_full(big - 1, 7.0)  # below the threshold: an ordinary array
    assert (small == 7.0).all() and not is_shared(small)
    c = shared_copy(np.arange(6.0).reshape(2, 3))
    assert c.shape == (2, 3) and c[1, 2] == 5.0 and is_shared(c) and is_shared(c[1:])
    assert not is_shared(np.zeros(3))
    assert np.array_equal(pickle.loads(pickle.dumps(c)), c)  # pickles by value
    assert len(shared_full(0, 1.0)) == 0


def _write(a: np.ndarray) -> None:
    a[1] = 42.0


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_forked_child_writes_are_seen_by_the_parent() -> None:
    a = shared_copy(np.zeros(3))
    p = mp.get_context("fork").Process(target=_write, args=(a,))
    p.start()
    p.join()
    assert p.exitcode == 0 and a.tolist() == [0.0, 42.0, 0.0]
    private = np.zeros(3)
    p = mp.get_context("fork").Process(target=_write, args=(private,))
    p.start()
    p.join()
    assert private.tolist() == [0.0, 0.0, 0.0]  # copy-on-write: the parent sees nothing


def _prefault_and_write(a: np.ndarray) -> None:
    prefault([a, np.zeros(2)])  # the private array is skipped
    a[::3] = 5.0


def test_prefault_keeps_values_and_sharing() -> None:
    # prefaulting maps pages, it must not change them; a child that prefaults then
    # writes is still seen by the parent
    a = shared_full(MIN_SHARED_BYTES // 8 * 3, 1.5)
    prefault([a, a[10:20], np.ones(4)])
    assert (a == 1.5).all()
    p = mp.get_context("fork").Process(target=_prefault_and_write, args=(a,))
    p.start()
    p.join()
    assert p.exitcode == 0
    assert (a[::3] == 5.0).all() and (a[1::3] == 1.5).all()
