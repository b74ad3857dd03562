"""Failure generation, traces, checkpoint formulas and configuration of clustersim.reliability."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from clustersim.errors import TraceError, UnknownNameError
from clustersim.reliability import (
    CheckpointPolicy,
    ClusterLayout,
    FailureEvent,
    FailureModel,
    FailureSource,
    Fixed,
    ReliabilityConfig,
    Weibull,
    availability_optimal_interval,
    checkpoint_costs,
    daly_interval,
    generate_failures,
    job_failure_rate,
    llama3_table5_sources,
    load_failure_trace,
    meta_expected_ettr,
    meta_rsc_sources,
    write_failure_trace,
    young_interval,
)
from clustersim.reliability.checkpoint import CheckpointCosts, CycleTimeline
from clustersim.reliability.failures import DAY, LLAMA3_TABLE5, META_RSC_POOLED_RF

# ------------------------------------------------------------------ formulas


def test_young_and_daly_by_hand() -> None:
    assert young_interval(50.0, 10_000.0) == pytest.approx(1000.0)
    # sqrt(2*50*1e4) * (1 + sqrt(0.0025)/3 + 0.0025/9) - 50
    assert daly_interval(50.0, 10_000.0) == pytest.approx(1000.0 * (1 + 0.05 / 3 + 0.0025 / 9) - 50)
    assert daly_interval(50.0, 10.0) == 10.0  # w >= 2M: checkpoint every M
    assert availability_optimal_interval(10.0, 1000.0, 0.0) == pytest.approx(10 + math.sqrt(20100))


def test_meta_closed_form_matches_published_table() -> None:
    # literature §2.4: 16,384 GPUs, RSC-1 r_f, dt = 60 min, u0 = 5 min, w = 0 -> 0.676
    assert meta_expected_ettr(2048, 6.5e-3, 300.0, 3600.0, 0.0) == pytest.approx(0.676, abs=1e-3)
    assert meta_expected_ettr(128, 6.5e-3, 300.0, 3600.0, 0.0) == pytest.approx(0.980, abs=1e-3)


def test_cycle_timeline_sync() -> None:
    c = CheckpointCosts(10.0, 0.0, 0.0, 0.0, 1, 10.0, 10.0, False, 1)
    tl = CycleTimeline(100.0, c)
    assert tl.cycle == 110.0 and tl.e1 == 110.0
    s = tl.state(270.0)
    assert (s.progress, s.overhead) == (250.0, 20.0)
    assert tl.committed(270.0, 0.0) == 2
    assert tl.state(105.0).progress == 100.0
    assert tl.time_to_progress(250.0) == pytest.approx(270.0)
    assert tl.time_to_progress(200.0) == pytest.approx(210.0)  # before snapshot 2


def test_cycle_timeline_async_with_slowdown_and_wait() -> None:
    c = CheckpointCosts(2.0, 10.0, 0.5, 10.0, 1, 0.0, 0.0, False, 1)
    tl = CycleTimeline(100.0, c)
    assert tl.cycle == pytest.approx(107.0)
    s = tl.state(215.0)
    assert s.progress == pytest.approx(203.0) and s.overhead == pytest.approx(12.0)
    assert tl.committed(215.0, 10.0) == 1
    # persist longer than the interval's compute: training waits for it
    slow = CycleTimeline(10.0, CheckpointCosts(1.0, 30.0, 0.5, 30.0, 1, 0.0, 0.0, False, 1))
    assert slow.cycle == pytest.approx(20.0 + 10.0 + 1.0)
    for e in np.linspace(0.0, 200.0, 401):
        st = slow.state(float(e))
        assert st.progress + st.overhead == pytest.approx(float(e))
        assert slow.time_to_progress(max(st.progress, 1e-9)) <= e + 1e-9


def test_checkpoint_costs_sync_async_memory() -> None:
    p = CheckpointPolicy(policy="fixed", interval=600.0)
    sync = checkpoint_costs(p, 16384, 600.0)
    assert sync.stall == pytest.approx(4e9 / (2e12 / 16384))  # 32.8 s
    a = checkpoint_costs(p.model_copy(update={"mode": "async"}), 16384, 600.0)
    assert a.stall == pytest.approx(4e9 / 64e9) and a.persist == pytest.approx(sync.stall)
    agg = checkpoint_costs(p.model_copy(update={"storage_bandwidth": 1e12}), 1000, 600.0)
    assert agg.stall == pytest.approx(4e9 / 1e9)


# ------------------------------------------------------------------ failure generation


def _one(level: str, rate: float, **kw: object) -> FailureModel:
    src = FailureSource.model_validate(
        {"name": "s", "category": "hardware", "level": level, "rate_per_day": rate, **kw}
    )
    return FailureModel(sources=(src,))


def test_poisson_count_matches_rate() -> None:
    layout = ClusterLayout.uniform(1000)
    ev = generate_failures(_one("device", 0.01), layout, 100 * DAY, np.random.default_rng(0))
    expected = 8000 * 0.01 * 100
    assert abs(len(ev) - expected) < 5 * math.sqrt(expected)
    times = [e.time for e in ev]
    assert times == sorted(times)
    assert all(e.nodes == (e.component // 8,) for e in ev)


def test_weibull_renewal_long_run_rate() -> None:
    layout = ClusterLayout.uniform(2000)
    model = _one("node", 0.05, distribution="weibull", weibull_shape=0.7)
    ev = generate_failures(model, layout, 400 * DAY, np.random.default_rng(1))
    expected = 2000 * 0.05 * 400
    assert abs(len(ev) - expected) / expected < 0.05
    # infant mortality: more failures in the first 10 % of the window than later per unit time
    early = sum(1 for e in ev if e.time < 40 * DAY)
    assert early / 40 > (len(ev) - early) / 360


def test_switch_failures_take_down_all_nodes_below() -> None:
    layout = ClusterLayout.uniform(10, nodes_per_switch=4)
    ev = generate_failures(_one("switch", 1.0), layout, 20 * DAY, np.random.default_rng(2))
    assert ev
    groups = {(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)}
    assert all(e.nodes in groups and e.level == "switch" for e in ev)


def test_device_type_filter() -> None:
    layout = ClusterLayout(
        devices_per_node=np.array([8, 8, 4], dtype=np.int64),
        switch_of_node=np.array([0, 0, 1], dtype=np.int64),
        power_domain_of_node=np.array([0, 0, 1], dtype=np.int64),
        device_type_of_node=("H100", "A100", "H100"),
    )
    model = _one("device", 2.0, device_types=("H100",))
    ev = generate_failures(model, layout, 30 * DAY, np.random.default_rng(3))
    assert {e.nodes[0] for e in ev} == {0, 2}
    assert all(e.component < 8 or 16 <= e.component < 20 for e in ev)
    rate = job_failure_rate(model, layout, [0, 1, 2])
    assert rate == pytest.approx(12 * 2.0 / DAY)


def test_job_failure_rate_counts_switches_once() -> None:
    model = FailureModel(
        sources=(
            FailureSource(name="d", category="hardware", level="device", rate_per_day=0.1),
            FailureSource(name="l", category="network", level="link", rate_per_day=0.01),
            FailureSource(name="t", category="network", level="switch", rate_per_day=1.0),
        )
    )
    layout = ClusterLayout.uniform(8, devices_per_node=8, nodes_per_switch=2, links_per_node=8)
    # nodes 1..3 touch switches 0 and 1
    rate = job_failure_rate(model, layout, [1, 2, 3])
    assert rate == pytest.approx((24 * 0.1 + 24 * 0.01 + 2 * 1.0) / DAY)


def test_same_seed_same_sequence_and_order_rules() -> None:
    model = FailureModel()
    layout = ClusterLayout.for_model(model, 500)
    a = generate_failures(model, layout, 60 * DAY, np.random.default_rng(11))
    b = generate_failures(model, layout, 60 * DAY, np.random.default_rng(11))
    assert a == b and len(a) > 50
    assert all(x.time <= y.time for x, y in itertools.pairwise(a))
    assert {e.category for e in a} <= {"hardware", "network", "software", "maintenance"}
    assert all(e.repair_time == 0.0 for e in a if e.category == "software")


def test_default_rates_are_meta_rsc_split_by_llama3_shares() -> None:
    srcs = meta_rsc_sources()
    layout = ClusterLayout.uniform(1000)
    model = FailureModel(sources=srcs)
    infra = job_failure_rate(
        FailureModel(sources=tuple(s for s in srcs if s.category in ("hardware", "network"))),
        layout,
        range(1000),
    )
    assert infra * DAY / 1000 == pytest.approx(META_RSC_POOLED_RF)
    total = job_failure_rate(model, layout, range(1000)) * DAY / 1000
    assert total == pytest.approx(META_RSC_POOLED_RF * (302 + 95) / 302)
    assert pytest.approx(5.1133e-3, rel=1e-4) == META_RSC_POOLED_RF


def test_llama3_table5_preset_reproduces_its_own_counts() -> None:
    """The circular preset: per-component rates give back 397 (126-corrected) per 54 days."""
    model = FailureModel(sources=llama3_table5_sources())
    layout = ClusterLayout.for_model(model, 2048)
    per_54d = job_failure_rate(model, layout, range(2048)) * 54 * DAY
    assert per_54d == pytest.approx(sum(c for *_, c, _ in LLAMA3_TABLE5))
    assert sum(c for *_, c, _ in LLAMA3_TABLE5) == 397


# ------------------------------------------------------------------ traces


def test_trace_roundtrip(tmp_path: Path) -> None:
    model = FailureModel()
    layout = ClusterLayout.for_model(model, 64)
    ev = generate_failures(model, layout, 200 * DAY, np.random.default_rng(4))
    path = tmp_path / "f.csv"
    write_failure_trace(ev, path)
    assert load_failure_trace(path, layout) == ev


def test_trace_derives_nodes_and_sorts(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "# comment\ntime,kind,level,component,nodes,repair_time\n"
        "50,tor,switch,1,,3600\n"
        "10,gpu,device,17,,0\n"
    )
    ev = load_failure_trace(path, ClusterLayout.uniform(8, nodes_per_switch=2))
    assert ev[0] == FailureEvent(10.0, "gpu", "device", 17, (2,), 0.0)
    assert ev[1].nodes == (2, 3)


@pytest.mark.parametrize(
    ("row", "line", "field"),
    [
        ("x,gpu,node,1,1,0", 3, "time"),
        ("5,gpu,rack,1,1,0", 3, "level"),
        ("5,gpu,node,1,a;b,0", 3, "nodes"),
        ("5,gpu,node,1,99,0", 3, "nodes"),
        ("5,gpu,node,1,1,-3", 3, "repair_time"),
        ("5,gpu,node,1,,0", 3, "nodes"),
    ],
)
def test_trace_errors_name_line_and_field(tmp_path: Path, row: str, line: int, field: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"time,kind,level,component,nodes,repair_time\n5,ok,node,0,0,0\n{row}\n")
    layout = None if row.endswith(",,0") else ClusterLayout.uniform(8)
    with pytest.raises(TraceError) as err:
        load_failure_trace(path, layout)
    assert err.value.line == line and err.value.field == field
    assert f"bad.csv:{line}" in str(err.value)


def test_trace_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,kind,level,component,nodes\n")
    with pytest.raises(TraceError, match="repair_time"):
        load_failure_trace(path)


# ------------------------------------------------------------------ configuration


def test_config_forbids_unknown_keys_and_accepts_yaml_shorthand() -> None:
    with pytest.raises(ValidationError):
        ReliabilityConfig.model_validate({"recovery": {"detecton": 5}})
    cfg = ReliabilityConfig.model_validate(
        {
            "recovery": {"restart": 120, "detection": {"kind": "exponential", "mean": 30}},
            "checkpoint": {"policy": "fixed", "interval": 900, "mode": "async"},
            "failures": {
                "sources": [
                    {
                        "name": "gpu",
                        "category": "hardware",
                        "level": "device",
                        "rate_per_day": 1e-4,
                        "distribution": "weibull",
                        "weibull_shape": 0.8,
                        "repair": {"kind": "weibull", "shape": 1.5, "scale": 7200},
                    }
                ]
            },
        }
    )
    assert cfg.recovery.restart == Fixed(value=120.0)
    assert cfg.recovery.detection.mean() == 30.0
    assert isinstance(cfg.failures.sources[0].repair, Weibull)
    assert ReliabilityConfig.model_validate(cfg.model_dump(by_alias=True)) == cfg
    with pytest.raises(ValidationError, match="interval"):
        CheckpointPolicy(policy="fixed")
    with pytest.raises(ValidationError, match="twice"):
        FailureModel(sources=(cfg.failures.sources[0], cfg.failures.sources[0]))
    with pytest.raises(UnknownNameError, match="did you mean 'gpu'"):
        cfg.failures.source("gpux")
