"""Per-model temporal market (:mod:`clustersim.serving.temporal`): hand cases and traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clustersim.errors import ConfigError
from clustersim.hardware import get_device
from clustersim.serving import SLO, attainment, simulate
from clustersim.serving.models import get_model
from clustersim.serving.temporal import (
    TemporalMarket,
    assign_client_days,
    busiest_windows,
    client_day_rates,
    repair_dedicated,
    scored_attainment,
    temporal_market,
    window_work,
)
from clustersim.serving.workload import Market, MarketModel, Requests, ServeGenClient

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
needs_traces = pytest.mark.skipif(
    not (TRACES / "alibaba-servegen-2025").exists(), reason=f"public traces not found at {TRACES}"
)


def _hand_market(
    rates: np.ndarray, cv: float = 1.0, scale: float = 1.0, spec: str = "Qwen2.5-7B"
) -> TemporalMarket:
    """One client day per model with the given per-window rates (req/s)."""
    rates = np.atleast_2d(np.asarray(rates, dtype=float))
    n = rates.shape[0]
    return TemporalMarket(
        models=tuple(MarketModel(f"m{i}", get_model(spec)) for i in range(n)),
        shares=rates.mean(1) / rates.mean(1).sum(),
        total_rate=float(rates.mean(1).sum() * scale),
        rates=rates * scale,
        members=tuple(np.array([i]) for i in range(n)),
        scale=np.full(n, scale),
        day_rate=rates.copy(),
        day_cv=np.full_like(rates, cv),
        day_client=np.arange(n),
        day_index=np.zeros(n, dtype=np.int64),
        lengths=None,
        base=12345,
    )


def test_assign_client_days_by_hand() -> None:
    # model 0 (target 3): 1 + 2 = 3 -> members [0, 1], scale 1; model 1 (target 1):
    # 0.5 < 1, 0.5 + 4 = 4.5 -> members [2, 3], scale 1/4.5
    members, scale = assign_client_days(
        np.array([3.0, 1.0]), np.array([1.0, 2.0, 0.5, 4.0, 1.0]), np.arange(5)
    )
    assert [m.tolist() for m in members] == [[0, 1], [2, 3]]
    assert scale == pytest.approx([1.0, 1 / 4.5])
    # a tiny target still takes one client day, scaled down
    members, scale = assign_client_days(np.array([0.01]), np.array([2.0, 1.0]), np.array([1, 0]))
    assert members[0].tolist() == [1] and scale[0] == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="too few"):
        assign_client_days(np.array([3.0, 1.0, 1.0]), np.array([1.0, 2.0, 0.5]), np.arange(3))


def test_client_day_rates_split_days() -> None:
    per_day = 144
    rate = np.zeros(2 * per_day + 5)  # two whole days and a partial one (dropped)
    rate[per_day + 3] = 6.0  # day 1 only
    c = ServeGenClient(
        7,
        np.arange(len(rate)) * 600.0,
        rate,
        np.where(rate > 0, 2.0, 0.0),
        (rate > 0).astype(np.int8),
        rate,
        rate,
        600.0,
    )
    r, cv, who, day = client_day_rates([c])
    assert r.shape == (1, per_day) and who.tolist() == [0] and day.tolist() == [1]
    assert r[0, 3] == 6.0 and r.sum() == 6.0 and cv[0, 3] == 2.0


def test_window_generation_deterministic_and_local() -> None:
    tm = _hand_market(np.array([[0.5, 2.0, 1.0, 0.0], [0.1, 0.1, 0.3, 0.2]]), cv=2.0)
    a = tm.span(0.0, 2400.0)
    b = tm.span(0.0, 2400.0)
    assert np.array_equal(a.requests.arrival, b.requests.arrival)
    assert np.array_equal(a.requests.input_tokens, b.requests.input_tokens)
    # a window's requests do not depend on which other windows are generated
    c = tm.span(600.0, 1200.0)
    sel = (a.requests.arrival >= 600.0) & (a.requests.arrival < 1200.0)
    assert np.array_equal(c.requests.arrival + 600.0, a.requests.arrival[sel])
    assert np.array_equal(c.requests.model, a.requests.model[sel])
    # no requests where the rate is 0 (model 0, window 3)
    assert not np.any((a.requests.model == 0) & (a.requests.arrival >= 1800.0))


def test_stationary_start_gives_the_window_rate() -> None:
    # bursty (cv 3) and sparse (3 expected per window): E[count] = rate * 600 exactly
    n_w = 3000
    tm = _hand_market(np.full((1, n_w), 0.005), cv=3.0)
    counts = np.bincount(
        (tm.span(0.0, n_w * 600.0).requests.arrival // 600).astype(int), minlength=n_w
    )
    se = np.sqrt(0.005 * 600 * 9 / n_w)  # renewal count variance ~ rate * T * cv^2
    assert abs(counts.mean() - 3.0) < 4 * se
    assert counts.var() > 3.0 * 3  # overdispersed vs Poisson (variance 3)


def test_peak_windows_and_peak_stack() -> None:
    rates = np.array([[1.0, 3.0, 3.0, 0.5], [0.2, 0.1, 0.0, 0.4]])
    tm = _hand_market(rates)
    assert tm.peak_windows().tolist() == [1, 3]  # ties -> earliest window
    ps = tm.peak_stack()
    assert ps.duration == 600.0 and np.all(ps.requests.arrival < 600.0)
    day = tm.day()
    for m, w in enumerate([1, 3]):
        own = day.requests.arrival[
            (day.requests.model == m)
            & (day.requests.arrival >= w * 600)
            & (day.requests.arrival < (w + 1) * 600)
        ]
        got = ps.requests.arrival[ps.requests.model == m]
        assert np.allclose(np.sort(got), np.sort(own) - w * 600)


def test_busiest_windows_and_work() -> None:
    work = np.array([[1.0, 5.0, 2.0, 5.0], [0.0, 0.0, 4.0, 0.0]])
    assert busiest_windows(work, 3) == [2, 1, 3]  # sums 1, 5, 6, 5: tie 5/5 -> earlier
    assert busiest_windows(work, 1) == [2]
    with pytest.raises(ConfigError):
        busiest_windows(work, 0)
    tm = _hand_market(np.array([[0.0, 1.0, 2.0]]))
    w = window_work(tm, get_device("H20"))
    assert w[0, 0] == 0.0 and 0 < w[0, 1] < w[0, 2] <= 2 * w[0, 1]  # sublinear: batching


def _tiny(n: int, gap: float) -> Market:
    t = np.arange(n) * gap
    return Market(
        (MarketModel("a", get_model("Qwen2.5-7B")),),
        Requests.build(t, np.zeros(n), np.full(n, 2000), np.full(n, 300)),
        float(t[-1] + gap),
    )


def test_scored_attainment_and_repair() -> None:
    dev = get_device("H20")
    mk = _tiny(400, 0.02)  # 50 req/s of 2,000-token prompts: one engine cannot keep up
    res = simulate(mk, "dedicated", device=dev, instances=[1], tp=[1])
    assert scored_attainment(res, 0.0) == pytest.approx(attainment(res))
    late = mk.requests.arrival >= 4.0
    from clustersim.serving.metrics import slo_met

    assert scored_attainment(res, 4.0) == pytest.approx(slo_met(res)[late].mean())
    assert attainment(res) < 0.99
    n, added = repair_dedicated([(mk, 0.0)], dev, [1], [1], 0.99)
    assert added == n[0] - 1 >= 1
    res2 = simulate(mk, "dedicated", device=dev, instances=n, tp=[1])
    assert attainment(res2) >= 0.99
    if n[0] > 2:  # one engine fewer misses (the repair adds one at a time)
        res3 = simulate(mk, "dedicated", device=dev, instances=[n[0] - 1], tp=[1])
        assert attainment(res3) < 0.99
    assert repair_dedicated([(mk, 0.0)], dev, n, [1], 0.99) == (n, 0)


@needs_traces
def test_temporal_market_on_servegen() -> None:
    tm = temporal_market(TRACES, 16, np.random.default_rng(3), total_rate=50.0)
    # per-model daily mean = share x total, rates sum to the target
    assert tm.rates.mean(axis=1) == pytest.approx(tm.shares * 50.0, rel=1e-9)
    assert tm.rates.sum(axis=0).mean() == pytest.approx(50.0, rel=1e-9)
    assert tm.rates.shape == (16, 144)
    # popular models aggregate more client days than tail models; no client day reused
    k = [len(m) for m in tm.members]
    assert k[0] >= k[-1] == 1
    used = np.concatenate(tm.members)
    assert len(np.unique(used)) == len(used)
    # same seed -> identical market and requests; another seed -> another one
    tm2 = temporal_market(TRACES, 16, np.random.default_rng(3), total_rate=50.0)
    assert np.array_equal(tm.rates, tm2.rates) and tm.base == tm2.base
    w = int(busiest_windows(tm.rates, 1)[0])
    a, b = tm.span(w * 600.0, w * 600.0 + 600), tm2.span(w * 600.0, w * 600.0 + 600)
    assert np.array_equal(a.requests.arrival, b.requests.arrival)
    assert np.array_equal(a.requests.output_tokens, b.requests.output_tokens)
    tm3 = temporal_market(TRACES, 16, np.random.default_rng(4), total_rate=50.0)
    assert not np.array_equal(tm.rates, tm3.rates)
    # the realised count in a busy window is close to the expected rate x 600
    assert len(a.requests) == pytest.approx(tm.rates[:, w].sum() * 600, rel=0.1)
    # models peak at different times (not all in the aggregate's busiest window)
    assert len(set(tm.peak_windows().tolist())) > 4


@needs_traces
def test_temporal_market_same_architectures_as_shared_profile() -> None:
    from clustersim.serving.workload import calibrated_market

    tm = temporal_market(TRACES, 12, np.random.default_rng(5), total_rate=20.0)
    mk, _ = calibrated_market(TRACES, 12, 60.0, np.random.default_rng(5), total_rate=20.0)
    assert [m.spec.name for m in tm.models] == [m.spec.name for m in mk.models]
    with pytest.raises(ConfigError, match="shape"):
        temporal_market(TRACES, 4, np.random.default_rng(0), shape="flat")


def test_span_rejects_outside_the_day() -> None:
    tm = _hand_market(np.array([[1.0, 1.0]]))
    with pytest.raises(ConfigError):
        tm.span(0.0, 1800.0)
    assert SLO().tbt == 0.1


def test_subset_generates_the_same_requests_as_the_full_market() -> None:
    # three models with different rates; the sub-market of models 2 and 0 must hold
    # exactly their requests of the full market (seeds keep the original numbers)
    rates = np.array([[0.5, 1.0, 0.2], [2.0, 2.0, 2.0], [0.1, 0.0, 0.3]])
    full = _hand_market(rates)
    sub = full.subset([2, 0])
    assert [m.name for m in sub.models] == ["m2", "m0"]
    assert sub.total_rate == pytest.approx((0.4 / 3) + (1.7 / 3))
    assert sub.shares.sum() == pytest.approx(1.0)
    a = full.span(0.0, 1800.0).requests
    b = sub.span(0.0, 1800.0).requests
    for local, orig in ((0, 2), (1, 0)):
        fa = a.model == orig
        fb = b.model == local
        assert fb.sum() == fa.sum() > 0
        np.testing.assert_array_equal(b.arrival[fb], a.arrival[fa])
        np.testing.assert_array_equal(b.input_tokens[fb], a.input_tokens[fa])
    # a subset of a subset still maps back to the original generators
    subsub = sub.subset([1])
    c = subsub.span(0.0, 1800.0).requests
    np.testing.assert_array_equal(c.arrival, a.arrival[a.model == 0])
    with pytest.raises(ConfigError, match="distinct"):
        full.subset([0, 0])


def test_cold_tail_is_the_least_requested_share_of_models() -> None:
    # daily means 1.0, 0.2, 3.0, 0.2, 0.5: ascending with ties to the higher index ->
    # 3, 1, 4, 0, 2; 60 % of 5 models = 3 -> {1, 3, 4}
    rates = np.array([[1.0], [0.2], [3.0], [0.2], [0.5]])
    tm = _hand_market(rates)
    assert tm.cold_tail(0.6) == [1, 3, 4]
    assert tm.cold_tail(1.0) == [0, 1, 2, 3, 4]
    assert tm.cold_tail(0.01) == [3]
