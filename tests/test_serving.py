"""Serving core: performance model, engine timing, KV overflow, model switch, fast path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.errors import ConfigError
from clustersim.hardware import DeviceSpec, get_device
from clustersim.serving import (
    SLO,
    LoadModel,
    Market,
    MarketModel,
    ModelSpec,
    PerfParams,
    Requests,
    StepCost,
    get_model,
    model_cost,
    simulate,
)
from clustersim.serving.fastpath import run_stream
from clustersim.serving.models import min_tensor_parallel

H800 = get_device("H800")
Q7 = get_model("Qwen2.5-7B")


def _market(spec: ModelSpec, arrival, prompt, output) -> Market:  # type: ignore[no-untyped-def]
    return Market(
        (MarketModel("a", spec),),
        Requests.build(arrival, [0] * len(arrival), prompt, output),
        float(max(arrival) + 1.0),
    )


# ---------------------------------------------------------------- model shapes
def test_kv_bytes_per_token_hand_computed() -> None:
    # Qwen2.5-7B: 28 layers, 4 KV heads of 128, BF16 -> 2*28*4*128*2
    assert Q7.kv_bytes_per_token == 57344
    assert get_model("Llama-2-13B").kv_bytes_per_token == 2 * 40 * 40 * 128 * 2
    assert Q7.weight_bytes == pytest.approx(15.22e9)


def test_min_tensor_parallel() -> None:
    assert min_tensor_parallel(Q7, 80e9) == 1
    # 145.4 GB of weights: 72.7 GB per device > 0.9*80*0.9 = 64.8 GB -> TP=4 on 80 GB
    assert min_tensor_parallel(get_model("Qwen2.5-72B"), 80e9) == 4
    assert min_tensor_parallel(get_model("Qwen2.5-72B"), 96e9) == 2
    with pytest.raises(ConfigError):
        min_tensor_parallel(get_model("Qwen2.5-72B"), 10e9)


# ---------------------------------------------------------------- roofline
def test_single_request_prefill_and_decode_time_hand_computed() -> None:
    """One request alone: prefill roofline, then 10 memory-bound decode steps."""
    L, out = 1000, 11
    F = 989e12 * 0.5  # H800 dense BF16 x compute efficiency
    BW = 3.35e12 * 0.7  # HBM x bandwidth efficiency
    A = 4 * 28 * 28 * 128  # attention FLOPs per (new token x cached token)
    W = 7.61e9 * 2
    kv = 57344
    comp = (2 * 7.61e9 * L + 0.5 * A * L * L) / F
    mem = (W + kv * L) / BW
    prefill = max(comp, mem) + 2e-3
    steps = []
    for j in range(out - 1):
        c = L + j
        steps.append(max((2 * 7.61e9 + A * c) / F, (W + kv * c) / BW) + 2e-3)
    res = simulate(
        _market(Q7, [0.0], [L], [out]), "dedicated", device="H800", instances=[1], tp=[1]
    )
    assert res.first_token[0] == pytest.approx(prefill, rel=1e-9)
    assert res.finish[0] == pytest.approx(prefill + sum(steps), rel=1e-9)
    # alone, every gap is one step: max gap = last (longest) step
    assert res.max_gap[0] == pytest.approx(max(steps), rel=1e-9)
    assert res.max_lag[0] == pytest.approx(
        max(sum(steps[: n + 1]) - (n + 1) * 0.1 for n in range(out - 1)), rel=1e-9
    )


def test_nemo_measured_points_within_ten_percent() -> None:
    """Roofline vs NVIDIA NeMo measured Llama-2-7B latency (in 128, out 20, TP1)."""
    spec = get_model("Llama-2-7B")
    for dev, batch, measured in [
        ("A100", 1, 0.2340),
        ("A100", 8, 0.3295),
        ("H100", 1, 0.1538),
        ("H100", 8, 0.1992),
    ]:
        c = model_cost(spec, get_device(dev), 1)
        t = c.prefill_time([128] * batch, 2e-3) + sum(
            c.decode_step_time(batch, batch * (128 + j), 2e-3) for j in range(19)
        )
        assert t == pytest.approx(measured, rel=0.10), (dev, batch)


@settings(max_examples=200, deadline=None)
@given(
    a_c=st.floats(1e-4, 1.0),
    b_c=st.floats(0, 1e-3),
    a_m=st.floats(1e-4, 1.0),
    b_m=st.floats(0, 1e-3),
    o=st.floats(0, 1e-2),
    k=st.integers(0, 400),
    dt=st.floats(0, 50),
)
def test_stepcost_closed_form_equals_sum(a_c, b_c, a_m, b_m, o, k, dt) -> None:  # type: ignore[no-untyped-def]
    sc = StepCost(a_c, b_c, a_m, b_m, o)
    brute = math.fsum(max(a_c + b_c * j, a_m + b_m * j) + o for j in range(k))
    assert sc.total(k) == pytest.approx(brute, rel=1e-9, abs=1e-12)
    n = sc.steps_within(dt)
    assert sc.total(n) <= dt < sc.total(n + 1)


def test_load_time_tiers_hand_computed() -> None:
    lm = LoadModel(tier="ssd")
    pcie5 = 32e9 * 16 * 128 / 130 / 8
    assert lm.load_time(Q7, H800, 1, "host_pinned") == pytest.approx(15.22e9 / pcie5)
    assert lm.load_time(Q7, H800, 1, "ssd") == pytest.approx(15.22e9 / (16.06e9 / 3.3))
    assert LoadModel(init_time=26.45).load_time(Q7, H800, 2, "host") == pytest.approx(
        26.45 + 15.22e9 / 2 / (16.06e9 / 1.1)
    )
    with pytest.raises(ConfigError):
        LoadModel(tier="tape")


# ---------------------------------------------------------------- model switch
def test_request_level_switch_waits_then_reloads() -> None:
    """Serverless, one GPU, two models: B waits for A to finish, then the engine reloads."""
    a, b = Q7, get_model("Llama-3.1-8B")
    mk = Market(
        (MarketModel("a", a), MarketModel("b", b)),
        Requests.build([0.0, 0.1], [0, 1], [500, 500], [5, 5]),
        10.0,
    )
    res = simulate(mk, "serverless", device="H800", gpus=1, host_cache_bytes=0.0)
    ca, cb = model_cost(a, H800, 1), model_cost(b, H800, 1)
    ssd = 16.06e9 / 3.3
    load_a, load_b = a.weight_bytes / ssd, b.weight_bytes / ssd
    t_a = load_a + ca.prefill_time([500], 2e-3)
    fin_a = t_a + sum(ca.decode_step_time(1, 500 + j, 2e-3) for j in range(4))
    assert res.first_token[0] == pytest.approx(t_a, rel=1e-9)
    assert res.finish[0] == pytest.approx(fin_a, rel=1e-9)
    t_b = fin_a + load_b + cb.prefill_time([500], 2e-3)
    assert res.first_token[1] == pytest.approx(t_b, rel=1e-9)
    assert res.extra["switches"] == 1


def test_token_level_switch_costs_pcie_load() -> None:
    """Token-pooled decode worker alternates two models; each switch costs W/PCIe."""
    from clustersim.serving.tokenpool import TokenPooled

    a, b = Q7, get_model("Llama-3.1-8B")
    mk = Market(
        (MarketModel("a", a), MarketModel("b", b)),
        Requests.build([0.0, 0.0], [0, 1], [100, 100], [400, 400]),
        10.0,
    )
    pol = TokenPooled(prefetch=False)
    res = simulate(mk, pol, device="H800", gpus=2)
    pcie5 = 32e9 * 16 * 128 / 130 / 8
    dw = next(w for w in pol.all_workers if type(w).__name__ == "DecodeWorker")
    assert dw.switches >= 2
    # every switch loaded a full model over PCIe
    per = {a.weight_bytes / pcie5, b.weight_bytes / pcie5}
    assert min(per) * dw.switches <= dw.load_time + 1e-9 <= max(per) * dw.switches + 1e-9
    assert np.all(res.served)


# ---------------------------------------------------------------- KV overflow
def _toy() -> tuple[ModelSpec, DeviceSpec]:
    spec = ModelSpec("toy-1M", 1e6, 1, 64, 1, 1, 64)  # 256 B of KV per token
    dev = DeviceSpec(
        name="toy-dev",
        vendor="test",
        bf16_tflops=1.0,
        memory_bytes=int((2e6 + 100 * 256) / 0.9) + 1,
        memory_bw=1e10,
        tdp_w=1.0,
        idle_w=0.0,
        scale_up_bw=1e10,
        scale_out_bw=1e10,
        price_per_hour=1.0,
        capex_usd=0.0,
        training=True,
        source="test",
    )
    return spec, dev


def test_kv_overflow_preempts_latest_and_recomputes() -> None:
    spec, dev = _toy()
    assert model_cost(spec, dev, 1).kv_capacity_tokens == 100
    # two 30-token prompts grow 2 tokens per step: the cache (100 tokens) overflows
    mk = _market(spec, [0.0, 1e-4], [30, 30], [40, 40])
    res = simulate(mk, "dedicated", device=dev, instances=[1], tp=[1], fast=False)
    assert list(res.preemptions) == [0, 1]  # the later admission is evicted
    assert np.all(res.served)
    assert res.finish[1] > res.finish[0]
    # the same run through the single-stream fast path is bit-identical
    fast = simulate(mk, "dedicated", device=dev, instances=[1], tp=[1], fast=True)
    for f in ("first_token", "finish", "max_lag", "max_gap", "preemptions"):
        assert np.array_equal(getattr(res, f), getattr(fast, f), equal_nan=True), f
    # a request that can never fit alone is dropped with a reason
    big = simulate(_market(spec, [0.0], [60], [60]), "dedicated", device=dev, instances=[1], tp=[1])
    assert big.drop_reason[0] == 1 and not big.served[0]


# ---------------------------------------------------------------- fast path == loop
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    seed=st.integers(0, 10_000),
    rate=st.floats(0.5, 40.0),
    long_prompts=st.booleans(),
)
def test_fast_path_bit_identical_to_event_loop(n, seed, rate, long_prompts) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1 / rate, n))
    hi = 6000 if long_prompts else 800
    prompt = rng.integers(1, hi, n)
    out = rng.integers(1, 300, n)
    mk = _market(Q7, arr, prompt, out)
    kw = dict(device="H800", instances=[2], tp=[1], horizon=float(arr[-1]) * 0.9 + 0.5)
    slow = simulate(mk, "dedicated", fast=False, **kw)  # type: ignore[arg-type]
    fast = simulate(mk, "dedicated", fast=True, **kw)  # type: ignore[arg-type]
    for f in ("first_token", "finish", "max_lag", "max_gap", "preemptions", "served_by"):
        assert np.array_equal(getattr(slow, f), getattr(fast, f), equal_nan=True), f


def test_run_stream_matches_brute_force_per_step() -> None:
    """Closed-form runs vs a per-iteration reference of the same prefill-first rule."""
    c = model_cost(Q7, H800, 1)
    p = PerfParams()
    tbt = 0.05
    rng = np.random.default_rng(7)
    arr = np.sort(rng.uniform(0, 5, 25)).tolist()
    pr = rng.integers(1, 2000, 25).tolist()
    out = rng.integers(1, 120, 25).tolist()
    cap = c.kv_capacity_tokens * c.kv_bytes_per_token
    fast = run_stream(c, p, tbt, cap, arr, pr, out)
    # reference: iterate one engine iteration at a time
    t, q, run, toks = 0.0, 0, {}, {}
    waiting: list[int] = []
    while q < len(arr) or waiting or run:
        while q < len(arr) and arr[q] <= t:
            waiting.append(q)
            q += 1
        if not waiting and not run:
            t = arr[q]
            continue
        if waiting:
            taken, tok = [], 0
            for r in list(waiting):
                if taken and tok + pr[r] > p.max_batched_tokens:
                    break
                taken.append(r)
                tok += pr[r]
            comp = sum(c.f_seq * pr[r] + 0.5 * c.f_ctx * pr[r] ** 2 for r in taken)
            mem = c.m_w + sum(c.m_ctx * pr[r] for r in taken)
            t += max(comp, mem) + p.iteration_overhead
            for r in taken:
                waiting.remove(r)
                toks[r] = [t]
                if out[r] > 1:
                    run[r] = [pr[r], out[r] - 1]
            continue
        B = len(run)
        C = sum(v[0] for v in run.values())
        t += max(c.f_seq * B + c.f_ctx * C, c.m_w + c.m_ctx * C) + p.iteration_overhead
        for r in list(run):
            toks[r].append(t)
            run[r][0] += 1
            run[r][1] -= 1
            if run[r][1] == 0:
                del run[r]
    for r, ts in toks.items():
        assert fast.first_token[r] == pytest.approx(ts[0], rel=1e-9)
        assert fast.finish[r] == pytest.approx(ts[-1], rel=1e-9)
        if len(ts) > 1:
            lag = max(ts[i] - ts[0] - i * tbt for i in range(1, len(ts)))
            gap = max(ts[i] - ts[i - 1] for i in range(1, len(ts)))
            assert fast.max_lag[r] == pytest.approx(lag, rel=1e-9, abs=1e-12)
            assert fast.max_gap[r] == pytest.approx(gap, rel=1e-9)


def test_slo_anchor_scoring() -> None:
    from clustersim.serving import attainment

    mk = _market(Q7, [0.0, 0.0, 0.0], [4000, 4000, 4000], [50, 50, 50])
    res = simulate(mk, "dedicated", device="H800", instances=[1], tp=[1])
    strict = attainment(res, SLO(anchor="first_token"))
    lenient = attainment(res, SLO(anchor="arrival"))
    assert lenient >= strict
    with pytest.raises(ConfigError):
        attainment(res, SLO(tbt=0.2))  # lags were measured against 0.1 s


def test_slo_scoring_by_hand_and_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # hand-set outcomes (TTFT 10 s, TBT 0.1 s): lag is the worst delay behind
    # t_first + n * TBT; "arrival" lets a fast first token bank slack for later tokens
    import clustersim.serving.metrics as sm

    mk = _market(Q7, [0.0] * 7, [10] * 7, [5] * 7)
    res = simulate(mk, "dedicated", device="H800", instances=[1], tp=[1])
    nan = math.nan
    res.first_token[:] = [2.0, 2.0, 11.0, 2.0, nan, 9.0, 1.0]
    res.finish[:] = [3.0, 3.0, 12.0, nan, nan, 10.0, 2.0]
    res.max_lag[:] = [7.9, 8.1, nan, nan, nan, 0.5, -np.inf]
    # 0: lag 7.9 <= slack 8 (arrival) but > 0 (strict); 1: lag beyond the slack;
    # 2: first token too late; 3, 4: unfinished; 5: 0.5 <= slack 1; 6: never late
    assert sm.slo_met(res).tolist() == [True, False, False, False, False, True, True]
    strict = sm.slo_met(res, SLO(anchor="first_token")).tolist()
    assert strict == [False, False, False, False, False, False, True]
    monkeypatch.setattr(sm, "SLO_CHUNK", 2)  # the same answer scored two by two
    assert sm.slo_met(res).tolist() == [True, False, False, False, False, True, True]
    res.arrived = 5  # requests after the horizon never count
    assert sm.slo_met(res).tolist() == [True, False, False, False, False, False, False]


def test_empirical_load_latencies_are_drawn_with_the_rng() -> None:
    lm = LoadModel(tier="ssd", empirical=(2.5, 40.0))
    rng = np.random.default_rng(0)
    draws = {lm.load_time(Q7, H800, 1, rng=rng) for _ in range(50)}
    assert draws == {2.5, 40.0}
    # other tiers (and calls without a generator) keep the bandwidth formula
    assert lm.load_time(Q7, H800, 1, "host", rng=rng) == pytest.approx(15.22e9 / (16.06e9 / 1.1))
    assert lm.load_time(Q7, H800, 1) == pytest.approx(15.22e9 / (16.06e9 / 3.3))
