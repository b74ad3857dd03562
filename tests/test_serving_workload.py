"""Serving workloads: real-trace loaders, ServeGen arrival generation, synthetic market."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clustersim.errors import ConfigError, TraceError
from clustersim.serving import (
    Market,
    MarketModel,
    Requests,
    genai_popularity,
    get_model,
    load_azure_llm,
    load_genai_load_latencies,
    load_genai_requests,
    load_mooncake,
    load_servegen_clients,
    load_servegen_lengths,
    lorenz_shares,
    servegen_arrivals,
    synthetic_market,
    zipf_shares,
)
from clustersim.serving.workload import calibrated_market, fit_zipf_tail

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
needs_traces = pytest.mark.skipif(
    not TRACES.exists(), reason=f"public traces not found at {TRACES} (../shared/traces)"
)


# ---------------------------------------------------------------- real traces
@needs_traces
@pytest.mark.shared
def test_genai_request_log_long_tail() -> None:
    log = load_genai_requests(TRACES / "alibaba-genai-2026-sd" / "lora_request_trace.csv")
    assert len(log.model_ids) == 86  # README: 86 base models
    assert len(log.time) == 26_823 - 25 and log.skipped == 25
    sh = genai_popularity(log)
    assert sh.sum() == pytest.approx(1.0)
    # README: bottom half of the models get ~1.6 % of the requests
    assert sh[43:].sum() == pytest.approx(0.017, abs=0.003)
    assert np.all(np.diff(log.time) >= 0)


@needs_traces
@pytest.mark.shared
def test_genai_load_latencies_seconds() -> None:
    lat = load_genai_load_latencies(
        TRACES / "alibaba-genai-2026-sd" / "basemodel_update_latency_anon.csv"
    )
    assert len(lat) == 7531
    assert np.min(lat) > 1.0 and np.max(lat) < 80.0  # file is in ms
    assert np.median(lat) == pytest.approx(22.7, abs=0.5)


@needs_traces
@pytest.mark.shared
def test_servegen_windows_and_arrivals() -> None:
    cl = load_servegen_clients(TRACES / "alibaba-servegen-2025" / "data" / "language" / "m-small")
    assert len(cl) == 43 and all(c.window == 600.0 for c in cl)
    rng = np.random.default_rng(0)
    t, _owner = servegen_arrivals(cl, rng, start=0.0, end=600.0, rate_scale=0.01)
    expected = sum(float(c.rate[0]) for c in cl if c.pattern[0]) * 600 * 0.01
    assert len(t) == pytest.approx(expected, rel=0.1)
    assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 600
    t2, _ = servegen_arrivals(cl, np.random.default_rng(0), start=0.0, end=600.0, rate_scale=0.01)
    assert np.array_equal(t, t2)  # deterministic for a seed


@needs_traces
@pytest.mark.shared
def test_servegen_lengths_literal_eval_and_missing_language_data() -> None:
    pin, pout = load_servegen_lengths(
        TRACES / "alibaba-servegen-2025" / "data" / "reason" / "deepseek-r1"
    )
    assert pin.sum() == pytest.approx(1.0) and pout.sum() == pytest.approx(1.0)
    with pytest.raises(TraceError, match=r"no chunk-\*-dataset\.json"):
        load_servegen_lengths(TRACES / "alibaba-servegen-2025" / "data" / "language" / "m-large")


@needs_traces
@pytest.mark.shared
def test_azure_and_mooncake() -> None:
    az = load_azure_llm(TRACES / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv")
    assert len(az) == 19_366
    assert az.input_tokens.mean() == pytest.approx(1154.7, abs=1)
    assert 3400 < az.arrival[-1] < 3600  # about one hour
    mc = load_mooncake(TRACES / "mooncake-2025" / "conversation_trace.jsonl")
    assert len(mc) == 12_031
    assert mc.input_tokens.mean() == pytest.approx(12_035, rel=0.01)


@needs_traces
@pytest.mark.shared
def test_calibrated_market_uses_trace_shares() -> None:
    mk, cal = calibrated_market(TRACES, 86, 600.0, np.random.default_rng(0))
    assert len(mk.models) == 86
    assert cal.total_rate == pytest.approx(195.8, abs=0.5)  # ServeGen m-large mean
    counts = np.sort(mk.request_counts())[::-1]
    assert counts[0] / counts.sum() == pytest.approx(0.307, abs=0.03)  # GenAI top model
    _mk2, cal2 = calibrated_market(TRACES, 86, 600.0, np.random.default_rng(0), shape="paper")
    assert cal2.zipf_s == pytest.approx(3.0, abs=0.1)


# ---------------------------------------------------------------- bad input
def test_trace_errors_name_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:50.99,abc,109\n"
    )
    with pytest.raises(TraceError, match=r":3: field 'ContextTokens'"):
        load_azure_llm(bad)
    d = tmp_path / "sg"
    d.mkdir()
    (d / "chunk-1-trace.csv").write_text("0,1.0,1.0,Gamma,1.0,1.0\n600,1.0,1.0,Poisson,1,1\n")
    with pytest.raises(TraceError, match=r"chunk-1-trace.csv:2: field 'pattern'"):
        load_servegen_clients(d)
    (d / "chunk-1-dataset.json").write_text('{"0": {"input_tokens": "__import__(\'os\')"}}')
    with pytest.raises(TraceError, match="not a dict literal"):
        load_servegen_lengths(d)  # literal_eval refuses code
    mc = tmp_path / "m.jsonl"
    mc.write_text('{"timestamp": 0, "input_length": 5}\n')
    with pytest.raises(TraceError, match=r":1: field 'output_length'"):
        load_mooncake(mc)
    with pytest.raises(TraceError, match="file not found"):
        load_genai_requests(tmp_path / "nope.csv")
    # token counts must fit the int32 token arrays; negative ones are refused too
    big = tmp_path / "big.csv"
    big.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,2147483648\n"
    )
    with pytest.raises(TraceError, match=r":2: field 'GeneratedTokens'.*exceeds 2147483647"):
        load_azure_llm(big)
    mc.write_text(
        '{"timestamp": 0, "input_length": 5, "output_length": 1}\n'
        '{"timestamp": 1, "input_length": -3, "output_length": 1}\n'
    )
    with pytest.raises(TraceError, match=r":2: field 'input_length'.*negative token count"):
        load_mooncake(mc)
    mc.write_text('{"timestamp": 0, "input_length": 5, "output_length": 7}\n')
    ok = load_mooncake(mc)
    assert ok.input_tokens.dtype == np.int32 and ok.output_tokens.tolist() == [7]


def test_requests_validation() -> None:
    with pytest.raises(ConfigError):
        Requests(
            np.array([1.0, 0.5]), np.zeros(2, np.int32), np.ones(2, np.int32), np.ones(2, np.int32)
        )
    r = Requests.build([2.0, 1.0], [0, 1], [0, 5], [3, 0])
    assert list(r.arrival) == [1.0, 2.0] and r.input_tokens.min() == 1
    one = np.ones(3, np.int32)
    for bad in ([0.0, np.nan, 2.0], [0.0, 1.0, np.inf], [-1.0, 0.0, 1.0], [np.nan, 1.0, 2.0]):
        with pytest.raises(ConfigError, match="finite and >= 0"):
            Requests(np.array(bad), np.zeros(3, np.int32), one, one)


def test_window_rates_by_model_and_window() -> None:
    # 2 models, 3 windows of 10 s: model 0 at 1, 2, 25 s; model 1 at 12, 13, 14, 29.9 s
    r = Requests.build(
        [1.0, 2.0, 25.0, 12.0, 13.0, 14.0, 29.9], [0, 0, 0, 1, 1, 1, 1], [1] * 7, [1] * 7
    )
    m = get_model("Qwen2.5-7B")
    mk = Market((MarketModel("a", m), MarketModel("b", m)), r, 30.0, "hand")
    np.testing.assert_array_equal(
        mk.window_rates(10.0), np.array([[0.2, 0.0, 0.1], [0.0, 0.3, 0.1]])
    )


# ---------------------------------------------------------------- synthetic market
def test_popularity_helpers() -> None:
    z = zipf_shares(5, 1.0)
    assert z[0] / z[1] == pytest.approx(2.0)
    s = np.array([0.5, 0.3, 0.2])
    assert np.allclose(lorenz_shares(s, 3), s)
    r6 = lorenz_shares(s, 6)
    assert r6.sum() == pytest.approx(1.0) and np.all(np.diff(r6) <= 1e-12)
    sz = fit_zipf_tail(100, 0.941, 0.0135)
    assert sz == pytest.approx(2.85, abs=0.05)  # literature §1.3 table


def test_synthetic_market_rates_and_diurnal() -> None:
    prof = np.array([0.5, 1.5])  # night, day (12 h each)
    mk = synthetic_market(
        3, 86400.0, 2.0, np.random.default_rng(1), zipf_s=0.0, profile=prof, cv=1.0
    )
    t = mk.requests.arrival
    assert len(t) == pytest.approx(2.0 * 86400, rel=0.02)
    night, day = (t < 43200).sum(), (t >= 43200).sum()
    assert day / night == pytest.approx(3.0, rel=0.05)
    bursty = synthetic_market(1, 20000.0, 1.0, np.random.default_rng(2), cv=3.0)
    gaps = np.diff(bursty.requests.arrival)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.15)
