"""Power model, incremental cap tracking, energy accounting; a cap is never exceeded."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.engine import Engine
from clustersim.errors import ConfigError, SchedulerError
from clustersim.hardware import get_device
from clustersim.hetero import SpeedMatrix, cluster_from_node_counts, hetero_speed_model
from clustersim.power import (
    J_PER_KWH,
    PowerCap,
    PowerCapError,
    PowerModel,
    PowerSeries,
    draw_series_from_records,
    dvfs_speed_factor,
    integrate_power,
    uniform_limit_fraction,
)
from clustersim.schedulers import hetero_policies as hp
from clustersim.schedulers.placement import get_placement
from clustersim.workload.job import Job

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "traces"
H100 = get_device("H100")
T4 = get_device("T4")


def one_node(pue: float = 1.5, overhead: float = 0.25) -> PowerModel:
    c = cluster_from_node_counts("one", [("H100", 8)], {"H100": H100})
    return PowerModel(c, {"H100": H100}, pue=pue, node_overhead_fraction=overhead)


def test_job_energy_hand_computed() -> None:
    pm = one_node()
    # one H100 for an hour: (700 W active + 1400 W node overhead / 8 devices) x PUE 1.5
    e = pm.job_energy_j([0], 1000, 3600.0)
    assert e == pytest.approx((700 + 175) * 1.5 * 3600)
    assert e / J_PER_KWH == pytest.approx(1.3125)
    assert pm.job_energy_j([0], 500, 3600.0) == pytest.approx(e / 2)  # half a device
    assert pm.job_energy_j([0, 1], 1000, 1800.0) == pytest.approx(e)


def test_draw_floor_peak_and_delta() -> None:
    pm = one_node()
    assert pm.idle_floor_w == pytest.approx(1.5 * (8 * 84 + 1400))  # 3108 W
    assert pm.peak_w == pytest.approx(1.5 * (8 * 700 + 1400))  # 10500 W
    assert pm.delta_w([0, 1], 1000) == pytest.approx(1.5 * 2 * 616)
    used = [1000, 1000, 500, 0, 0, 0, 0, 0]
    assert pm.draw_from_used(used) == pytest.approx(3108 + 1.5 * 616 * 2.5)
    limited = PowerModel(
        pm.cluster, {"H100": H100}, pue=1.5, node_overhead_fraction=0.25, power_limit_fraction=0.5
    )
    assert limited.peak_w == pytest.approx(1.5 * (8 * 350 + 1400))


def test_power_cap_tracks_and_refuses() -> None:
    pm = one_node()
    cap = PowerCap(pm, 3108 + 1.5 * 616 * 3)  # room for exactly three busy devices
    assert cap.headroom_w == pytest.approx(1.5 * 616 * 3)
    cap.allocate([0, 1])
    assert cap.fits([2]) and not cap.fits([2, 3])
    with pytest.raises(PowerCapError):
        cap.allocate([2, 3])
    assert cap.used_milli_by_type == (2000,)  # unchanged after the refusal
    cap.allocate([2])
    assert cap.headroom_w == pytest.approx(0.0, abs=1e-9)
    cap.release([0, 1, 2])
    assert cap.draw_w == pm.idle_floor_w
    with pytest.raises(ConfigError):
        cap.release([0])
    with pytest.raises(ConfigError):
        PowerCap(pm, 3000.0)  # below the idle floor
    assert PowerCap(pm).headroom_w == math.inf


def test_integrate_and_series() -> None:
    assert integrate_power([0.0, 10.0], [100.0, 200.0], 15.0) == pytest.approx(2000.0)
    s = PowerSeries(np.array([0.0, 10.0]), np.array([100.0, 200.0]), 15.0)
    assert s.energy_kwh == pytest.approx(2000 / 3.6e6)
    assert s.peak_w == 200.0 and s.mean_w == pytest.approx(2000 / 15)
    assert s.cumulative_kwh()[-1] == pytest.approx(1000 / 3.6e6)


def test_dvfs_and_uniform_limit() -> None:
    # limit = idle + (tdp - idle) / 8 -> clock factor (1/8)^(1/3) = 0.5
    lim = H100.idle_w + (H100.tdp_w - H100.idle_w) / 8
    assert dvfs_speed_factor(lim, H100) == pytest.approx(0.5)
    assert dvfs_speed_factor(H100.tdp_w, H100) == 1.0
    with pytest.raises(ConfigError):
        dvfs_speed_factor(H100.idle_w, H100)
    pm = one_node()
    cap = 0.6 * pm.peak_w  # 6300 W -> (6300/1.5 - 1400) / 5600 = 0.5
    f = uniform_limit_fraction(pm, cap)
    assert f == pytest.approx(0.5)
    limited = PowerModel(
        pm.cluster, {"H100": H100}, pue=1.5, node_overhead_fraction=0.25, power_limit_fraction=f
    )
    assert limited.peak_w == pytest.approx(cap)
    assert uniform_limit_fraction(pm, pm.peak_w) == 1.0
    with pytest.raises(ConfigError):
        uniform_limit_fraction(pm, pm.idle_floor_w)


def two_type_cluster():  # type: ignore[no-untyped-def]
    specs = {"H100": H100, "T4": T4}
    return cluster_from_node_counts("mix", [("T4", 4), ("H100", 4), ("T4", 4)], specs), specs


def test_series_rebuilt_from_records_matches_hand_count() -> None:
    c, specs = two_type_cluster()
    pm = PowerModel(c, specs, pue=1.0, node_overhead_fraction=0.0)
    jobs = [Job("a", 0.0, 2, 100.0), Job("b", 50.0, 1, 100.0, seq=1)]
    m = SpeedMatrix(["compute"], ["H100", "T4"], [[1.0, 1.0]], "T4")
    eng = Engine(
        c,
        jobs,
        hp.BlindBackfill(matrix=m, specs=specs),
        get_placement("first_fit"),
        speed_model=hetero_speed_model(m),
    )
    r = eng.run()
    s = draw_series_from_records(r.records, pm, r.start_time, r.end_time)
    dyn = T4.tdp_w - T4.idle_w  # both jobs land on T4 devices 0..2
    floor = 8 * T4.idle_w + 4 * H100.idle_w
    assert list(s.t) == [0.0, 50.0, 100.0, 150.0]
    assert list(s.draw_w) == pytest.approx([floor + 2 * dyn, floor + 3 * dyn, floor + dyn, floor])
    assert s.energy_j == pytest.approx(floor * 150 + dyn * (2 * 100 + 100))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.floats(0, 500),
            st.sampled_from([1, 1, 2, 4]),
            st.floats(1, 400),
            st.sampled_from([1000, 1000, 500, 250]),
            st.sampled_from(["compute", "memory"]),
        ),
        min_size=1,
        max_size=25,
    ),
    frac=st.floats(0.45, 1.0),
)
def test_power_cap_never_exceeded(
    rows: list[tuple[float, int, float, int, str]], frac: float
) -> None:
    c, specs = two_type_cluster()
    pm = PowerModel(c, specs)
    cap = max(frac * pm.peak_w, pm.idle_floor_w + pm.delta_w(range(4, 8)))  # an H100 gang fits
    jobs = [
        Job(f"j{i}", t, g if m == 1000 else 1, d, m, None, i, {"workload_class": k})
        for i, (t, g, d, m, k) in enumerate(rows)
    ]
    m = SpeedMatrix.from_roofline(specs, "T4")
    guard = hp.PowerCapGuard(hp.PowerAware(cap_w=cap, matrix=m, specs=specs), pm, cap)
    eng = Engine(
        c,
        jobs,
        guard,
        get_placement("first_fit"),
        speed_model=hetero_speed_model(m),
        policy_name="power_aware",
    )
    r = eng.run()
    assert r.stopped_by == "drained"
    live = guard.series(r.end_time)
    rebuilt = draw_series_from_records(r.records, pm, r.start_time, r.end_time)
    assert live.peak_w <= cap and rebuilt.peak_w <= cap
    assert rebuilt.energy_j == pytest.approx(live.energy_j, rel=1e-9)


def test_guard_rejects_a_start_over_the_cap() -> None:
    c, specs = two_type_cluster()
    pm = PowerModel(c, specs)
    cap = pm.idle_floor_w + 0.5 * pm.delta_w([0])  # not even one T4 fits
    guard = hp.PowerCapGuard(hp.BlindBackfill(specs=specs), pm, cap)
    jobs = [Job("big", 0.0, 4, 10.0)]
    m = SpeedMatrix.from_roofline(specs, "T4")
    eng = Engine(
        c,
        jobs,
        guard,
        get_placement("first_fit"),
        speed_model=hetero_speed_model(m),
        policy_name="blind_backfill",
    )
    with pytest.raises(SchedulerError, match="above the cap"):
        eng.run()


def test_power_aware_uses_view_headroom_when_given() -> None:
    c, specs = two_type_cluster()
    pm = PowerModel(c, specs)
    m = SpeedMatrix.from_roofline(specs, "T4")
    # the policy's own cap is loose; the guard's (tighter) headroom on the view must win
    tight = pm.idle_floor_w + 1.5 * pm.delta_w([0])
    guard = hp.PowerCapGuard(hp.PowerAware(cap_fraction=1.0, matrix=m, specs=specs), pm, tight)
    jobs = [Job(f"j{i}", 0.0, 1, 10.0, seq=i) for i in range(3)]
    eng = Engine(
        c,
        jobs,
        guard,
        get_placement("first_fit"),
        speed_model=hetero_speed_model(m),
        policy_name="power_aware",
    )
    r = eng.run()
    starts = sorted(rec.first_start for rec in r.records)
    assert starts == [0.0, 10.0, 20.0]  # one T4 at a time


@pytest.mark.slow
def test_power_cap_experiment_quick(tmp_path: Path) -> None:
    if not (SHARED / "alibaba-gpu-2023-openb").exists():
        pytest.skip("needs ../shared/traces/alibaba-gpu-2023-openb beside the repo")
    out = tmp_path / "pc"
    subprocess.run(
        [sys.executable, str(REPO / "experiments" / "power_cap.py"), "--out", str(out), "--quick"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    s = json.loads((out / "summary.json").read_text())
    assert set(s) == {"1.00", "0.60"}
    for v in s.values():
        assert {"throughput", "avg_jct_s", "energy_kwh"} <= set(v)
        assert v["max_draw_over_cap"] <= 1.0 and v["throttle"]["max_draw_over_cap"] <= 1.0
    assert (out / "power_cap_sweep.png").stat().st_size > 0


def test_engine_enforces_power_cap_from_scenario() -> None:
    """A scenario power cap holds at every instant; the policy waits for headroom."""
    from clustersim.api import simulate
    from clustersim.config import validate_scenario

    base = {
        "name": "cap",
        "seed": 1,
        "cluster": {"nodes": 4, "gpus_per_node": 8, "device": "H100"},
        "workload": {"format": "synthetic", "synthetic": {"jobs": 150, "arrival_rate": 0.05}},
        "scheduler": {"name": "power_aware"},
    }
    free = simulate(validate_scenario({**base, "power": {}})).summary
    capped_sc = {**base, "power": {"cap_fraction": 0.6}}
    capped_sc["workload"] = {**base["workload"], "oversized": "skip"}  # type: ignore[dict-item]
    capped = simulate(validate_scenario(capped_sc)).summary
    assert free["energy_kwh"] > 0 and "power_cap_kw" not in free
    assert capped["max_draw_over_cap"] <= 1.0 + 1e-12
    assert free["peak_power_kw"] > capped["power_cap_kw"]  # the cap did bind
    assert capped["avg_jct_s"] > free["avg_jct_s"]
    assert free["jobs_completed"] == 150 and capped["jobs_skipped"] == 3  # 16-GPU jobs
    assert capped["jobs_completed"] == 147 and capped["stopped_by"] == "drained"


def test_engine_rejects_a_start_over_the_cap() -> None:
    from clustersim.api import simulate
    from clustersim.config import validate_scenario
    from clustersim.errors import SchedulerError

    sc = validate_scenario(
        {
            "name": "cap",
            "cluster": {"nodes": 4, "gpus_per_node": 8, "device": "H100"},
            "workload": {"format": "synthetic", "synthetic": {"jobs": 50, "arrival_rate": 0.05}},
            "scheduler": {"name": "fifo_backfill"},
            "power": {"cap_fraction": 0.5},
        }
    )
    with pytest.raises(SchedulerError, match=r"over the power cap of .* kW"):
        simulate(sc)
