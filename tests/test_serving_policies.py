"""Serving policies: conservation, determinism, E[m], capacity changes, plug-ins, metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.errors import ConfigError, UnknownNameError
from clustersim.serving import (
    AutoscalerView,
    Market,
    ScaleAction,
    active_models_expected,
    active_models_observed,
    attainment,
    gpus_needed,
    gpus_over_time,
    make_serving_policy,
    model_lorenz,
    per_gpu,
    per_model,
    serving_policy_names,
    simulate,
    summary,
    synthetic_market,
    tail_share,
)
from clustersim.serving.elastic import Autoscaled, Multiplexed, Serverless
from clustersim.serving.policies import ServingPolicy, register_serving_policy

POLICIES = ["dedicated", "serverless", "multiplexed", "token_pooled", "hybrid_pooled", "autoscaled"]


def _small_market(seed: int, n_models: int = 4, rate: float = 3.0, dur: float = 60.0) -> Market:
    return synthetic_market(
        n_models,
        dur,
        rate,
        np.random.default_rng(seed),
        zipf_s=1.2,
        specs=["Qwen2.5-0.5B", "Qwen2.5-1.5B", "Qwen2.5-7B"],
        cv=1.5,
    )


def _kw(policy: str, gpus: int) -> dict:  # type: ignore[type-arg]
    return {} if policy == "dedicated" else {"gpus": gpus}


def test_registry() -> None:
    assert set(POLICIES) <= set(serving_policy_names())
    with pytest.raises(UnknownNameError, match="token_pooled"):
        make_serving_policy("token_pool")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    policy=st.sampled_from(POLICIES),
    gpus=st.integers(4, 12),
    horizon=st.one_of(st.none(), st.floats(5.0, 80.0)),
    rate=st.floats(0.5, 8.0),
)
def test_conservation_every_request_accounted(seed, policy, gpus, horizon, rate) -> None:  # type: ignore[no-untyped-def]
    """Every request is served, dropped with a reason, or pending at the horizon."""
    mk = _small_market(seed, rate=rate)
    res = simulate(mk, policy, device="H800", horizon=horizon, **_kw(policy, gpus))
    c = res.conservation()  # raises on any inconsistency
    assert (
        c["served"] + c["dropped"] + c["running_at_horizon"] + c["queued_at_horizon"]
        == (c["arrived"])
    )
    assert c["arrived"] + c["not_arrived"] == len(mk.requests)
    arr = mk.requests.arrival
    sv = res.served
    assert np.all(res.first_token[sv] >= arr[sv] - 1e-12)
    assert np.all(res.finish[sv] >= res.first_token[sv])
    assert set(np.unique(res.drop_reason)) <= {0, 1, 2, 3, 4}
    if horizon is None:  # drained: nothing may stay pending
        assert c["running_at_horizon"] == 0 and c["queued_at_horizon"] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_determinism_same_seed_bit_identical(policy: str) -> None:
    mk1 = _small_market(11, rate=6.0)
    mk2 = _small_market(11, rate=6.0)
    assert np.array_equal(mk1.requests.arrival, mk2.requests.arrival)
    r1 = simulate(mk1, policy, device="H800", seed=3, **_kw(policy, 8))
    r2 = simulate(mk2, policy, device="H800", seed=3, **_kw(policy, 8))
    for f in ("first_token", "finish", "max_lag", "max_gap", "drop_reason", "served_by"):
        assert np.array_equal(getattr(r1, f), getattr(r2, f), equal_nan=True), f


def test_active_models_formula_matches_poisson_market() -> None:
    """Aegaeon's example: M=100, lambda=0.037/s, T=16.79 s -> E[m] ~ 46.3."""
    assert active_models_expected(100, 0.037, 16.79) == pytest.approx(46.3, abs=0.1)
    mk = synthetic_market(100, 40_000.0, 3.7, np.random.default_rng(1), zipf_s=0.0, cv=1.0)
    r = mk.requests
    obs = active_models_observed(r.arrival, r.model, r.arrival + 16.79, 1000.0, 39_000.0)
    assert obs == pytest.approx(46.3, rel=0.03)


def test_active_models_formula_matches_simulated_service_times() -> None:
    """M/G/inf: a lightly loaded dedicated market keeps M(1-exp(-lambda E[S])) models busy."""
    mk = synthetic_market(
        30, 6000.0, 0.6, np.random.default_rng(2), zipf_s=0.0, cv=1.0, specs=["Qwen2.5-7B"]
    )
    res = simulate(mk, "dedicated", device="H800", instances=[2] * 30, tp=[1] * 30)
    r = mk.requests
    service = float(np.mean(res.finish - r.arrival))
    obs = active_models_observed(r.arrival, r.model, res.finish, 200.0, 5800.0)
    exp = active_models_expected(30, 0.6 / 30, service)
    assert obs == pytest.approx(exp, rel=0.08)


def test_capacity_schedule_varies_gpus_and_keeps_conservation() -> None:
    mk = _small_market(5, n_models=3, rate=4.0, dur=120.0)
    res = simulate(
        mk, "serverless", device="H800", gpus=8, capacity_schedule=[(40.0, 2), (80.0, 8)]
    )
    t, used, cap = gpus_over_time(res)
    assert cap[0] == 8 and 2 in set(cap) and cap[-1] == 8
    assert used[t < 40.0].max() > 2  # the cut has engines to stop
    # after the cut no more than 2 devices stay allocated until capacity returns (the
    # engines are stopped one by one at t = 40: only steps that last are checked)
    lasts = np.append(np.diff(t) > 0, True)
    mid = (t >= 40.0) & (t < 80.0) & lasts
    assert mid.any() and np.all(used[mid] <= 2)
    res.conservation()
    res_tp = simulate(mk, "token_pooled", device="H800", gpus=8, capacity_schedule=[(40.0, 4)])
    res_tp.conservation()


def test_custom_autoscaler_plugin() -> None:
    class OnePerModel:
        interval = 2.0

        def decide(self, view: AutoscalerView) -> list[ScaleAction]:
            return [
                ScaleAction("up", model=m)
                for m in range(len(view.queued))
                if view.queued[m] and not view.engines[m]
            ]

    mk = _small_market(8, n_models=3, rate=2.0, dur=40.0)
    res = simulate(mk, Autoscaled(OnePerModel()), device="H800", gpus=6)
    c = res.conservation()
    assert c["served"] == c["arrived"]


def test_register_custom_policy() -> None:
    name = "test_drop_all_serving"
    if name not in serving_policy_names():

        @register_serving_policy(name)
        class DropAll(ServingPolicy):
            """Drops every request (rule: reject on arrival)."""

            def on_arrival(self, rid: int, model: int, prompt: int, output: int) -> None:
                self.sim.drop(rid, "rejected_by_policy")

    res = simulate(_small_market(1), name, device="H800")
    assert res.conservation()["dropped"] == len(res.finish)
    with pytest.raises(ConfigError):
        register_serving_policy(name)(ServingPolicy)


def test_metrics_hand_cases() -> None:
    req = np.array([100, 1, 1, 0])
    gpus = np.array([4, 1, 1, 2])
    t = tail_share(req, gpus, 0.5)  # two least-requested models: idx 3 (0 req), then 1
    assert t["request_share"] == pytest.approx(1 / 102)
    assert t["gpu_share"] == pytest.approx(3 / 8)
    lor = model_lorenz(req, gpus)
    assert lor.x[-1] == 1.0 and lor.y[-1] == 1.0
    assert lor.y_at(0.25) == pytest.approx(0.0)  # the 2-GPU model with no requests
    assert lor.x_at(2 / 102) == pytest.approx(4 / 8)
    with pytest.raises(ConfigError):
        active_models_expected(-1, 0.1, 1.0)


def test_gpus_needed_bisection() -> None:
    mk = _small_market(4, n_models=3, rate=5.0, dur=60.0)
    calls: list[int] = []

    def run(g: int):  # type: ignore[no-untyped-def]
        calls.append(g)
        return simulate(mk, "token_pooled", device="H800", gpus=g)

    g, res, tried = gpus_needed(run, 0.9, 2, 16)
    assert res is not None and attainment(res) >= 0.9
    assert all(tried[x] < 0.9 for x in tried if x < g)
    assert len(calls) <= 6


def test_summary_and_per_gpu_are_consistent() -> None:
    mk = _small_market(9, n_models=4, rate=4.0, dur=60.0)
    res = simulate(mk, "dedicated", device="H800")
    s = summary(res)
    pg = per_gpu(res)
    pm = per_model(res)
    assert pg["requests"].sum() == pytest.approx(res.served.sum())
    assert pm["served"].sum() == res.served.sum()
    assert 0.0 <= s["pool_utilization"] <= 1.0
    assert s["cost_per_mtok"] > 0 and math.isfinite(s["cost_per_mtok"])
    assert np.all(pg["idle_s"] >= -1e-9)


def test_pooled_needs_finite_pool() -> None:
    with pytest.raises(ConfigError):
        simulate(_small_market(1), "token_pooled", device="H800")


class _LinearMultiplexed(Multiplexed):
    """Multiplexed with the O(engines) least-loaded scan instead of the load heaps."""

    def setup(self, sim: Any) -> None:
        super().setup(sim)
        self._indexed = False


class _LinearServerless(Serverless):
    """Serverless with the O(engines) least-loaded scan instead of the load heaps."""

    def setup(self, sim: Any) -> None:
        super().setup(sim)
        self._indexed = False


LINEAR = {"multiplexed": _LinearMultiplexed, "serverless": _LinearServerless}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(sorted(LINEAR)),
    seed=st.integers(0, 10_000),
    gpus=st.integers(8, 40),
    rate=st.floats(5.0, 60.0),
    horizon=st.sampled_from([None, 20.0]),
)
def test_load_heaps_equal_linear_scan(
    policy: str, seed: int, gpus: int, rate: float, horizon: float | None
) -> None:
    # the per-model load heaps must pick exactly the engine a full scan picks
    mk = _small_market(seed, n_models=6, rate=rate, dur=40.0)
    a = simulate(mk, policy, gpus=gpus, horizon=horizon)
    b = simulate(mk, LINEAR[policy](), gpus=gpus, horizon=horizon)
    assert np.array_equal(a.served_by, b.served_by)
    assert np.array_equal(a.first_token, b.first_token, equal_nan=True)
    assert np.array_equal(a.finish, b.finish, equal_nan=True)
    assert np.array_equal(a.max_gap, b.max_gap, equal_nan=True)


def test_multiplexed_load_heaps_choose_among_replicas() -> None:
    mk = _small_market(3, n_models=6, rate=40.0, dur=40.0)
    a = simulate(mk, "multiplexed", gpus=32)
    b = simulate(mk, _LinearMultiplexed(), gpus=32)
    replicas = np.bincount([m for p in a.extra["placement"] for m in p])
    assert replicas.max() >= 3  # the choice among engines is exercised
    assert len(np.unique(a.served_by)) > len(a.extra["placement"]) // 2
    assert np.array_equal(a.served_by, b.served_by)
    assert np.array_equal(a.finish, b.finish, equal_nan=True)


def test_serverless_load_heaps_with_scale_out_and_reclaim() -> None:
    # low scale-out threshold: several engines per model; a small pool: engines are
    # reclaimed for other models, so stale heap entries of reloaded engines are skipped
    mk = _small_market(5, n_models=6, rate=20.0, dur=40.0)
    a = simulate(mk, "serverless", gpus=6, scale_out_at=2)
    b = simulate(mk, _LinearServerless(scale_out_at=2), gpus=6)
    assert a.extra["switches"] > 0 and a.extra["cold_starts"] > 6
    assert np.array_equal(a.served_by, b.served_by)
    assert np.array_equal(a.finish, b.finish, equal_nan=True)


def test_token_pool_reports_decode_batches_against_the_plan() -> None:
    mk = _small_market(9, n_models=3, rate=6.0, dur=90.0)
    res = simulate(mk, "token_pooled", device="H800", gpus=8)
    db = res.extra["decode_batches"]
    assert set(db) == {"steps", "mean_batch", "planned_batch", "workers"}
    r = mk.requests
    served = np.bincount(r.model[res.served], minlength=3)
    for m in range(3):
        out_m = r.output_tokens[r.model == m]
        lam = (r.model == m).sum() / mk.duration
        plan = min(256.0, max(1.0, lam * out_m.mean() * 0.1 / 2))  # rate x out x TBT / 2
        assert db["planned_batch"][m] == pytest.approx(plan)
        if served[m] and (out_m > 1).any():
            # sequence-steps / steps: between one sequence and max_num_seqs per step
            assert db["steps"][m] > 0 and db["workers"][m] >= 1
            assert 1.0 <= db["mean_batch"][m] <= 256.0
    # every decode step of a sequence is counted once: sum of sequence-steps equals the
    # output tokens decoded after the first (prefill) token of the finished requests
    tot = sum(b * k for b, k in zip(db["mean_batch"], db["steps"], strict=True))
    done = ~np.isnan(res.finish)
    assert tot == pytest.approx(float((r.output_tokens[done] - 1).sum()), rel=1e-9)
