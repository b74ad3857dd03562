"""Cost, revenue and margin accounting pinned on hand-computed cases."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from clustersim.economics import (
    CostBreakdown,
    CostModel,
    ServingCapacity,
    cost_per_mtok,
    gross_margin,
    maas_fleet,
    rental_margin,
    rental_revenue,
    run_cost,
    serving_capacity,
    token_revenue,
    zipf_shares,
)
from clustersim.errors import ConfigError
from clustersim.hardware import get_device

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "traces"

# A device with round numbers: capex 8,760 USD, 1,000 W TDP, 0 W idle, 2 USD/h list price.
SPEC = dataclasses.replace(
    get_device("H100"),
    name="Toy",
    capex_usd=8760.0,
    tdp_w=1000.0,
    idle_w=0.0,
    price_per_hour=2.0,
)
# 1-year life, 0.10 USD/kWh, PUE 1.5, no node overhead, 73 USD per kW-month (= 0.1 USD/kW-h).
TOY = CostModel(
    lifetime_years=1.0,
    electricity_usd_per_kwh=0.10,
    pue=1.5,
    node_overhead_fraction=0.0,
    facility_usd_per_kw_month=73.0,
)


def test_device_hour_hand_computed() -> None:
    c = TOY.device_hour(SPEC, 0.5)
    assert c.capital_usd == pytest.approx(1.0)  # 8760 / 1 y / 8760 h
    assert c.energy_usd == pytest.approx(0.075)  # 500 W x 1.5 = 0.75 kWh x 0.10
    assert c.facility_usd == pytest.approx(0.1)  # 73 x 1 kW / 730 h
    assert c.total_usd == pytest.approx(1.175)


def test_h100_default_device_hour() -> None:
    h = get_device("H100")
    c = CostModel().device_hour(h, 1.0)
    assert c.capital_usd == pytest.approx(30_000 / 5 / 8760)
    it_kw = (700 + 0.275 * 700) / 1000  # busy device + node overhead share
    assert c.energy_usd == pytest.approx(1.58 * it_kw * 0.0806)
    assert c.facility_usd == pytest.approx(163.44 * it_kw / 730)
    idle = CostModel().device_hour(h, 0.0)
    assert idle.energy_usd == pytest.approx(1.58 * (84 + 0.275 * 700) / 1000 * 0.0806)
    assert idle.capital_usd == c.capital_usd and idle.facility_usd == c.facility_usd


def test_annuity_capital_recovery() -> None:
    cm = dataclasses.replace(TOY, lifetime_years=2.0, annual_interest=0.10)
    assert cm.capital_recovery_factor == pytest.approx(0.10 / (1 - 1.1**-2))  # 0.57619
    assert cm.capital_per_hour(SPEC) == pytest.approx(8760 * 0.576190476 / 8760, rel=1e-6)


def test_margin_and_revenue_formulas() -> None:
    assert gross_margin(100.0, 60.0) == pytest.approx(0.4)
    assert gross_margin(0.0, 5.0) == -math.inf
    assert gross_margin(0.0, 0.0) == 0.0
    assert token_revenue(2e6, 1e6, 0.2, 0.6) == pytest.approx(1.0)
    assert rental_revenue({"A": 10.0, "B": 0.0}, {"A": 2.5, "B": 99.0}) == 25.0
    assert cost_per_mtok(3.0, 2e6) == pytest.approx(1.5)
    assert cost_per_mtok(3.0, 0.0) == math.inf
    # renting SPEC at 2 USD/h, half its hours sold: revenue 1.0, cost 1.175
    assert rental_margin(SPEC, 0.5, TOY) == pytest.approx((1.0 - 1.175) / 1.0)
    with pytest.raises(ConfigError):
        rental_margin(SPEC, 1.5, TOY)


def test_run_cost_splits_idle_and_busy_hours() -> None:
    specs = {"Toy": SPEC}
    # 4 devices for 10 h, 20 of the 40 device-hours allocated -> busy fraction 0.5
    c = run_cost(specs, {"Toy": 4}, 10.0, {"Toy": 20.0}, TOY)
    assert c.total_usd == pytest.approx(40 * 1.175)
    with pytest.raises(ConfigError):
        run_cost(specs, {"Toy": 4}, 10.0, {"Toy": 41.0}, TOY)
    assert (CostBreakdown(1, 2, 3) + CostBreakdown(1, 1, 1)).total_usd == 9


CAP = ServingCapacity(
    batch=8,
    step_s=0.05,
    prefill_s_per_request=0.1,
    requests_per_s=2.0,
    input_tokens_per_s=2000.0,
    output_tokens_per_s=200.0,
    devices=1,
)


def test_margin_at_a_given_load_pooled() -> None:
    # 3 req/s on instances of 2 req/s -> 2 instances, busy 0.75
    p = maas_fleet(
        "pooled",
        3.0,
        [0.5, 0.5],
        CAP,
        SPEC,
        prompt_tokens=1000,
        output_tokens=100,
        usd_per_mtok_in=0.2,
        usd_per_mtok_out=0.6,
        cost=TOY,
    )
    assert p.instances == 2 and p.devices == 2
    assert p.utilization == pytest.approx(0.75)
    revenue = 3 * 3600 * (1000 * 0.2 + 100 * 0.6) / 1e6  # 2.808 USD per hour
    cost = 2 * (1.0 + 1.5 * 750 / 1000 * 0.10 + 0.1)  # capital + energy at 750 W + facility
    assert p.revenue_usd_per_h == pytest.approx(revenue)
    assert p.cost.total_usd == pytest.approx(cost)
    assert p.gross_margin == pytest.approx((revenue - cost) / revenue)
    assert p.cost_per_mtok == pytest.approx(cost / (3 * 3600 * 1100) * 1e6)
    assert p.energy_kwh_per_mtok == pytest.approx(2 * 0.75 * 1.5 / (3 * 3600 * 1100) * 1e6)


def test_dedicated_keeps_one_instance_per_model() -> None:
    kw = dict(
        prompt_tokens=1000, output_tokens=100, usd_per_mtok_in=0.2, usd_per_mtok_out=0.6, cost=TOY
    )
    d = maas_fleet("dedicated", 3.0, [0.9, 0.1], CAP, SPEC, **kw)  # 2.7 -> 2, 0.3 -> 1
    assert d.per_model_instances == [2, 1] and d.instances == 3
    idle = maas_fleet("dedicated", 0.0, [0.25] * 4, CAP, SPEC, **kw)
    assert idle.instances == 4 and idle.gross_margin == -math.inf
    pooled = maas_fleet("pooled", 0.0, [0.25] * 4, CAP, SPEC, **kw)
    assert pooled.instances == 1
    with pytest.raises(ConfigError):
        maas_fleet("shared", 1.0, [1.0], CAP, SPEC, **kw)


def test_serving_capacity_meets_slo_and_is_monotone() -> None:
    from clustersim.serving.models import get_model
    from clustersim.serving.perf import PerfParams, model_cost

    h20 = get_device("H20")
    tight = serving_capacity("Qwen2.5-7B", h20, prompt_tokens=500, output_tokens=200, tbt_s=0.015)
    loose = serving_capacity("Qwen2.5-7B", h20, prompt_tokens=500, output_tokens=200, tbt_s=0.1)
    assert tight.step_s <= 0.015 and loose.batch >= tight.batch
    mc = model_cost(get_model("Qwen2.5-7B"), h20, 1, PerfParams())
    if tight.batch < 256:  # the next batch would break the SLO
        nxt = mc.decode_step_time(tight.batch + 1, (tight.batch + 1) * 600.0, 2e-3)
        assert nxt > 0.015
    assert tight.requests_per_s == pytest.approx(
        1 / (tight.prefill_s_per_request + 200 * tight.step_s / tight.batch)
    )
    with pytest.raises(ConfigError):
        serving_capacity("Qwen2.5-7B", h20, prompt_tokens=500, output_tokens=200, tbt_s=1e-4)


def test_zipf_shares() -> None:
    s = zipf_shares(100, 2.85)
    assert s.sum() == pytest.approx(1.0)
    assert (s[:-1] >= s[1:]).all()
    assert s[:6].sum() == pytest.approx(0.9865, abs=0.01)  # literature.md §1.3 fit


@pytest.mark.slow
def test_maas_margin_quick_run(tmp_path: Path) -> None:
    if not (SHARED / "azure-llm-2023").exists():
        pytest.skip("needs ../shared/traces/azure-llm-2023 beside the repo")
    out = tmp_path / "maas"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "experiments" / "maas_margin.py"),
            "--out",
            str(out),
            "--quick",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    s = json.loads((out / "summary.json").read_text())
    assert set(s) == {"dedicated", "pooled"}
    for v in s.values():
        assert len(v["load_rate"]) == len(v["cost_per_mtok"]) == len(v["gross_margin"]) == 6
    # pooling never needs more devices and never earns less margin
    for d, p in zip(s["dedicated"]["devices"], s["pooled"]["devices"], strict=True):
        assert p <= d
    assert (out / "maas_margin.png").stat().st_size > 0
