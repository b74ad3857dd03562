"""Hand-computed cases for token_pooled's worker split (square-root staffing)."""

from __future__ import annotations

import math

import pytest

from clustersim.errors import ConfigError
from clustersim.serving.tokenpool import TokenPooled

# class k=1: prefill 1.0, decode 4.0 busy workers; class k=2: prefill 0.25, decode 1.0
LOADS = {1: (1.0, 4.0), 2: (0.25, 1.0)}


def test_sqrt_staffing_hand_computed() -> None:
    # device load = 1 + 4 + 2 * (0.25 + 1) = 7.5; sum k*sqrt(R) = 1 + 2 + 2*0.5 + 2*1 = 6
    # beta = (20 - 7.5) / 6 = 2.0833: targets p1 3.083, d1 8.167, p2 1.292, d2 3.083
    # (sum of k * target = 20). Rounding, one worker at a time to the largest shortfall
    # that fits (ties: class order, prefill first): p1 3, d1 9, p2 1, d2 3 = 20 devices.
    pol = TokenPooled()
    n_pre, n_dec = pol._staff(20, [1, 2], LOADS)
    assert n_pre == {1: 3, 2: 1}
    assert n_dec == {1: 9, 2: 3}
    assert sum(k * (n_pre[k] + n_dec[k]) for k in n_pre) == 20


def test_proportional_staffing_gives_small_subpools_less_headroom() -> None:
    pol = TokenPooled(staffing="proportional")
    n_pre, n_dec = pol._staff(20, [1, 2], LOADS)
    # targets: load * 20 / 7.5 -> p1 2.67, d1 10.67, p2 0.67, d2 2.67; rounding:
    # d1 to 10, p1 and d2 to 2, then p1 and d1 one more each (p2 keeps its floor of 1)
    assert n_pre == {1: 3, 2: 1}
    assert n_dec == {1: 11, 2: 2}
    assert sum(k * (n_pre[k] + n_dec[k]) for k in n_pre) == 20
    _, sq_dec = TokenPooled()._staff(20, [1, 2], LOADS)
    # the big sub-pool (d1) gives headroom to the small one (d2) under sqrt staffing
    assert sq_dec[1] < n_dec[1] and sq_dec[2] > n_dec[2]


def test_overloaded_pool_falls_back_to_proportional_and_keeps_one_each() -> None:
    # 6 devices for 7.5 device-loads: no spare capacity, every sub-pool keeps one worker
    for rule in ("sqrt", "proportional"):
        n_pre, n_dec = TokenPooled(staffing=rule)._staff(6, [1, 2], LOADS)
        assert n_pre == {1: 1, 2: 1} and n_dec == {1: 1, 2: 1}
    a = TokenPooled()._staff(7, [1, 2], LOADS)
    b = TokenPooled(staffing="proportional")._staff(7, [1, 2], LOADS)
    assert a == b == ({1: 1, 2: 1}, {1: 2, 2: 1})


def test_prefill_fraction_splits_each_class_total() -> None:
    pol = TokenPooled(prefill_fraction=0.5)
    n_pre, n_dec = pol._staff(20, [1, 2], LOADS)
    # each class's total split in half: k=1 2.5/2.5, k=2 0.625/0.625
    assert n_pre[1] == n_dec[1]
    assert n_pre[2] == n_dec[2]
    assert math.isclose(sum(k * (n_pre[k] + n_dec[k]) for k in n_pre), 20)


def test_unknown_staffing_rule_is_rejected() -> None:
    with pytest.raises(ConfigError, match="staffing must be"):
        TokenPooled(staffing="equal")
