"""Speed matrix, node lists, the Gavel LP and the heterogeneity-aware policies."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clustersim.engine import Engine
from clustersim.errors import ConfigError, TraceError, UnknownNameError
from clustersim.hardware import get_device
from clustersim.hetero import (
    SpeedMatrix,
    accepted_types,
    cluster_from_node_counts,
    hetero_speed_model,
    inflate_jobs,
    openb_cluster,
    openb_hetero_jobs,
    spot_cluster,
)
from clustersim.schedulers import hetero_policies as hp
from clustersim.schedulers.placement import get_placement
from clustersim.schedulers.registry import SCHEDULERS, get_scheduler
from clustersim.workload.job import Job

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "traces"
OPENB = SHARED / "alibaba-gpu-2023-openb"
SPOT = SHARED / "alibaba-spot-2026-nodes" / "node_info_df.csv"
V100, T4, P100 = get_device("V100"), get_device("T4"), get_device("P100")


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the real traces in ../shared beside the repo)")
    return path


# ----------------------------------------------------------------------------- speed matrix


def test_roofline_matrix_hand_values() -> None:
    m = SpeedMatrix.from_roofline({"T4": T4, "V100": V100, "P100": P100}, "T4")
    assert m.speed("compute", "V100") == pytest.approx(125 / 65)
    assert m.speed("memory", "V100") == pytest.approx(900 / 320)
    assert m.speed("compute", "P100") == pytest.approx(18.7 / 65)
    assert m.speed("memory", "T4") == 1.0
    r = m.renormalized("V100")
    assert r.speed("compute", "T4") == pytest.approx(65 / 125)


def test_matrix_overrides_and_validation(tmp_path: Path) -> None:
    m = SpeedMatrix.from_roofline({"T4": T4, "V100": V100}, "T4")
    o = m.with_overrides({("compute", "V100"): 1.5})
    assert o.speed("compute", "V100") == 1.5 and m.speed("compute", "V100") != 1.5
    with pytest.raises(ConfigError, match="reference"):
        m.with_overrides({("compute", "T4"): 2.0})
    with pytest.raises(ConfigError):
        SpeedMatrix(["compute"], ["T4"], [[-1.0]], "T4")
    with pytest.raises(UnknownNameError):
        m.speed("compute", "H100")
    f = tmp_path / "m.csv"
    f.write_text("workload_class,device_type,speed\ncompute,V100,1.7\nmemory,V100,abc\n")
    with pytest.raises(TraceError, match=r"m.csv:3: field 'speed'"):
        m.with_measurements(f)
    f.write_text("workload_class,device_type,speed\ncompute,V100,1.7\n")
    assert m.with_measurements(f).speed("compute", "V100") == 1.7


def test_accepted_types_and_gang_speed() -> None:
    assert accepted_types(Job("a", 0, 1, 1)) is None
    assert accepted_types(Job("a", 0, 1, 1, attrs={"accepts": "V100|T4"})) == ("T4", "V100")
    j = Job("a", 0, 1, 1, device_type="T4", attrs={"accepts": ("T4", "V100")})
    assert accepted_types(j) == ("T4",)
    specs = {"T4": T4, "V100": V100}
    c = cluster_from_node_counts("c", [("T4", 2), ("V100", 2)], specs)
    sm = hetero_speed_model(SpeedMatrix.from_roofline(specs, "T4"))
    mem = Job("m", 0, 2, 1, attrs={"workload_class": "memory"})
    assert sm(mem, (2, 3), c) == pytest.approx(900 / 320)
    assert sm(mem, (1, 2), c) == 1.0  # spans T4 and V100: slowest member
    with pytest.raises(UnknownNameError):
        sm(Job("x", 0, 1, 1, attrs={"workload_class": "nope"}), (0,), c)


# ----------------------------------------------------------------------------- node lists


def test_openb_cluster_real_node_list() -> None:
    hc = openb_cluster(need(OPENB / "openb_node_list_gpu_node.csv"))
    assert hc.cluster.num_devices == 6212
    assert hc.gpus_by_type() == {
        "A10": 2,
        "G2": 4392,
        "G3": 312,
        "P100": 265,
        "T4": 842,
        "V100": 204,
        "V100-16GB": 195,
    }
    m = hc.speed_matrix()
    assert m.speed("compute", "G2") == 1.0 and m.speed("memory", "G3") == 1.0  # neutral = T4
    assert hc.assumptions["G2"] == "neutral:T4" and hc.specs["G2"].tdp_w == T4.tdp_w
    ex = openb_cluster(OPENB / "openb_node_list_gpu_node.csv", undisclosed="exclude")
    assert ex.cluster.num_devices == 6212 - 4392 - 312 and ex.excluded_gpus == {
        "G2": 4392,
        "G3": 312,
    }


def test_spot_cluster_real_node_list() -> None:
    hc = spot_cluster(need(SPOT))
    assert hc.cluster.num_devices == 10412 and hc.cluster.num_nodes == 4278
    assert hc.gpus_by_type()["A800"] == 176 and hc.assumptions["A800"] == "proxy:A100"
    assert hc.specs["H800"].bf16_tflops == 989.0
    assert hc.speed_matrix().speed("compute", "H800") == pytest.approx(989 / 312)


def test_spot_cluster_bad_rows(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text("gpu_model,gpu_capacity_num,cpu_num,node_name\nA10,1,8,0\nB9000,8,8,1\n")
    with pytest.raises(TraceError, match=r"n.csv:3: field 'gpu_model'"):
        spot_cluster(f)
    f.write_text("gpu_model,gpu_capacity_num,cpu_num,node_name\nA100-SXM4-80GB,x,8,0\n")
    with pytest.raises(TraceError, match="gpu_capacity_num"):
        spot_cluster(f)


def test_openb_jobs_classes_and_accepts() -> None:
    hc = openb_cluster(need(OPENB / "openb_node_list_gpu_node.csv"))
    jobs, _ = openb_hetero_jobs(OPENB / "openb_pod_list_gpuspec33.csv", hc)
    assert all(j.device_type is None for j in jobs)
    assert {j.attrs["workload_class"] for j in jobs if j.gpu_milli < 1000} == {"memory"}
    assert {j.attrs["workload_class"] for j in jobs if j.gpu_milli == 1000} == {"compute"}
    acc = {j.attrs["accepts"] for j in jobs if "accepts" in j.attrs}
    assert ("V100", "V100-16GB") in acc and ("T4",) in acc


def test_inflate_jobs() -> None:
    jobs = [Job(f"j{i}", 100.0 * i, 1, 10.0, 500, seq=i) for i in range(10)]  # 5 devices
    out = inflate_jobs(jobs, 10, target=1.3, window_s=60.0)  # 13 devices -> 3 copies
    assert len(out) == 30 and len({j.id for j in out}) == 30
    assert sum(j.gpu_demand for j in out) >= 13
    assert out[-1].submit_time == pytest.approx(60.0) and out[0].submit_time == 0.0


# ----------------------------------------------------------------------------- LP


def test_solve_lp_known_optimum() -> None:
    x, v = hp.solve_lp([3, 2], [[1, 1], [1, 3], [1, 0]], [4, 6, 3])
    assert v == pytest.approx(11.0) and x == pytest.approx([3.0, 1.0])
    x, v = hp.solve_lp([-1.0], [[-1.0], [1.0]], [-1.0, 3.0])  # x >= 1, x <= 3, min x
    assert x == pytest.approx([1.0])
    with pytest.raises(hp.LPError, match="infeasible"):
        hp.solve_lp([1.0], [[1.0]], [-1.0])
    with pytest.raises(hp.LPError, match="unbounded"):
        hp.solve_lp([1.0], [[-1.0]], [1.0])


def test_gavel_throughput_beats_greedy_counterexample() -> None:
    # greedy by speed would give kind 0 type 0 (10) then kind 1 type 1 (1): 11; optimum 18
    y = hp.gavel_allocation([[10, 9], [9, 1]], [[1, 1], [1, 1]], [1, 1], [1, 1])
    assert y == pytest.approx(np.array([[0, 1], [1, 0]]))


def test_gavel_maxmin_equalises_and_fills() -> None:
    # two kinds, one fast type (speed 2) and one slow (1), one device each
    y = hp.gavel_allocation([[2, 1], [2, 1]], [[1, 1], [1, 1]], [1, 1], [1, 1], "maxmin")
    rates = (np.array([[2, 1], [2, 1]]) * y).sum(axis=1)
    assert rates[0] == pytest.approx(rates[1]) and rates.sum() == pytest.approx(3.0)
    # a kind that only accepts the slow type still gets its share
    y = hp.gavel_allocation([[2, 1], [2, 1]], [[1, 1], [0, 1]], [1, 1], [1, 1], "maxmin")
    assert y[1, 0] == 0 and y[1].sum() == pytest.approx(1.0)


def test_gavel_random_instances_feasible() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        k, t = rng.integers(1, 6), rng.integers(1, 5)
        s = rng.uniform(0.2, 3, (k, t))
        allowed = rng.random((k, t)) < 0.7
        allowed[:, 0] = True
        d, c = rng.uniform(0, 10, k), rng.uniform(1, 10, t)
        for obj in ("throughput", "maxmin"):
            y = hp.gavel_allocation(s, allowed, d, c, obj)
            assert (y >= -1e-9).all() and (y[~allowed] == 0).all()
            assert (y.sum(axis=1) <= d + 1e-6).all() and (y.sum(axis=0) <= c + 1e-6).all()
        # max-throughput is at least what a greedy by speed achieves
        thr = (s * hp.gavel_allocation(s, allowed, d, c)).sum()
        dl, cl, greedy = d.copy(), c.copy(), 0.0
        for i, j in sorted(np.argwhere(allowed), key=lambda ij: -s[ij[0], ij[1]]):
            q = min(dl[i], cl[j])
            greedy += q * s[i, j]
            dl[i] -= q
            cl[j] -= q
        assert thr >= greedy - 1e-6


# ----------------------------------------------------------------------------- policies


def test_policies_registered() -> None:
    for name in ("blind_backfill", "gavel_throughput", "gavel_maxmin", "cost_aware", "power_aware"):
        assert name in SCHEDULERS and get_scheduler(name).name == name


def toy():  # type: ignore[no-untyped-def]
    """Slow P100 nodes first in id order, then fast V100 nodes."""
    specs = {"P100": P100, "V100": V100}
    c = cluster_from_node_counts("toy", [("P100", 4), ("V100", 4)], specs)
    return c, specs, SpeedMatrix.from_roofline(specs, "V100")


def run(policy, jobs):  # type: ignore[no-untyped-def]
    c, _, m = toy()
    eng = Engine(c, jobs, policy, get_placement("first_fit"), speed_model=hetero_speed_model(m))
    return eng.run()


def test_aware_beats_blind_on_toy_cluster() -> None:
    _, specs, m = toy()
    jobs = [Job(f"j{i}", 0.0, 1, 100.0, seq=i) for i in range(4)]  # compute-bound
    blind = run(hp.BlindBackfill(matrix=m, specs=specs), jobs)
    aware = run(hp.GavelThroughput(matrix=m, specs=specs), jobs)
    jct = lambda r: np.mean([x.end - x.job.submit_time for x in r.records])  # noqa: E731
    assert jct(blind) == pytest.approx(100 * 125 / 18.7)  # all on P100
    assert jct(aware) == pytest.approx(100.0)  # all on V100
    mm = run(hp.GavelMaxMin(matrix=m, specs=specs), jobs)
    assert jct(mm) == pytest.approx(100.0)


def test_blind_backfill_equals_fifo_backfill_without_accepts() -> None:
    from clustersim.schedulers.registry import create_scheduler

    _, specs, m = toy()
    jobs = [Job(f"j{i}", 10.0 * i, 1 + i % 3, 50.0 + i, seq=i) for i in range(12)]
    a = run(hp.BlindBackfill(matrix=m, specs=specs), jobs)
    b = run(create_scheduler("fifo_backfill", {}), jobs)
    assert [(r.first_start, r.devices) for r in a.records] == [
        (r.first_start, r.devices) for r in b.records
    ]


def test_cost_aware_picks_cheapest_meeting_deadline() -> None:
    _, specs, m = toy()
    # memory-bound: P100 runs at 732/900 of V100, and costs 1.46 vs 3.90 USD/h
    loose = Job("a", 0.0, 1, 100.0, attrs={"workload_class": "memory", "deadline": 200.0})
    tight = Job("b", 0.0, 1, 100.0, seq=1, attrs={"workload_class": "memory", "deadline": 110.0})
    r = run(hp.CostAware(matrix=m, specs=specs), [loose, tight])
    by = {x.id: x for x in r.records}
    assert max(by["a"].devices) < 4  # P100 (finishes at 123 s <= 200 s)
    assert min(by["b"].devices) >= 4  # only V100 meets 110 s
    assert by["a"].end == pytest.approx(100 * 900 / 732)


def test_aware_policy_respects_accepts() -> None:
    _, specs, m = toy()
    jobs = [Job(f"j{i}", 0.0, 1, 10.0, seq=i, attrs={"accepts": ("P100",)}) for i in range(6)]
    for pol in (hp.GavelThroughput, hp.GavelMaxMin, hp.CostAware, hp.BlindBackfill):
        r = run(pol(matrix=m, specs=specs), jobs)
        assert all(max(x.devices) < 4 for x in r.records), pol.__name__
        assert r.stopped_by == "drained"


@pytest.mark.slow
def test_hetero_experiment_quick(tmp_path: Path) -> None:
    need(OPENB)
    need(SPOT)
    out = tmp_path / "hx"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "experiments" / "hetero_cluster.py"),
            "--out",
            str(out),
            "--quick",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    s = json.loads((out / "summary.json").read_text())
    assert {"blind_backfill", "gavel_throughput", "gavel_maxmin", "cost_aware"} <= set(s)
    for v in s.values():
        assert {"avg_jct_s", "gpu_utilization", "cost"} <= set(v)
    for key in ("openb/trace", "spot/trace"):
        blind = s["blind_backfill"]["runs"][key]["avg_jct_s"]
        assert s["gavel_throughput"]["runs"][key]["avg_jct_s"] < blind
    assert not math.isnan(json.loads((out / "details.json").read_text())["wall_s"])
