"""Mixed clusters (clustersim.mixed): hand-computed runs, conservation, determinism, experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED_TRACES

from clustersim.errors import UnknownNameError
from clustersim.hardware import get_device
from clustersim.mixed import (
    POLICIES,
    ServingPlan,
    ServingSide,
    TrainingSide,
    check_conservation,
    serving_plan,
    simulate_mixed,
    window_jobs,
)
from clustersim.serving import dedicated_sizing, synthetic_market
from clustersim.serving.models import get_model
from clustersim.serving.workload import Market, MarketModel, Requests
from clustersim.workload.job import Job


def tiny_market(duration: float = 1800.0) -> Market:
    """One 7B model, a handful of short requests spread over the windows."""
    t = np.array([10.0, 300.0, 700.0, 1100.0, 1300.0, 1700.0])
    n = len(t)
    return Market(
        (MarketModel("m0", get_model("Qwen2.5-7B")),),
        Requests(t, np.zeros(n, dtype=np.int32), np.full(n, 100), np.full(n, 10)),
        duration,
        "hand",
    )


def hand_plan(engines: list[int], gpn: int = 4) -> ServingPlan:
    e = np.array([engines], dtype=np.int64)
    dev = e[0] * gpn
    return ServingPlan(e, [gpn], np.array([1.0]), 600.0, dev, -(-dev // gpn))


ONE_JOB = TrainingSide(
    (Job("j0", 0.0, 4, 1000.0),), scheduler="fifo", checkpoint_s=30.0, restore_s=300.0
)


def run(nodes: int, policy: str, engines: list[int], **kw: float) -> object:
    return simulate_mixed(
        nodes,
        4,
        "H20",
        ONE_JOB,
        ServingSide(tiny_market()),
        policy,
        plan=hand_plan(engines),
        lead=100.0,
        horizon=2400.0,
        **kw,  # type: ignore[arg-type]
    )


def cap_steps(res: object) -> list[tuple[float, float]]:
    t, v = res.serving_capacity  # type: ignore[attr-defined]
    return [(float(a), float(b)) for a, b in zip(t, v, strict=True)]


def test_serving_first_preempts_at_the_peak_and_resumes() -> None:
    # 2 nodes x 4. Plan: 1, 2, 1 engines of 4 devices in windows [0,600), [600,1200), [1200,..).
    # t=0: serving takes node 0 (both idle, lowest index); j0 starts on node 1.
    # t=500 (= 600 - lead 100): serving wants 2 nodes -> node 1 taken, j0 preempted after
    # 500 s of work; checkpoint 30 s -> node 1 handed over at 530.
    # t=1200: back to 1 node: LIFO returns node 1; j0 restarts, restore 300 s, 500 s left
    # -> ends at 2000.
    res = run(2, "serving_first", [1, 2, 1])
    check_conservation(res)  # type: ignore[arg-type]
    s = res.summary["training"]  # type: ignore[attr-defined]
    assert s["jobs_completed"] == 1 and s["avg_jct_s"] == 2000.0
    assert s["preemptions_by_reclaim"] == 1
    assert s["checkpoint_restore_gpu_hours"] == pytest.approx(4 * (30 + 300) / 3600)
    assert cap_steps(res) == [(0.0, 4.0), (530.0, 8.0), (1200.0, 4.0)]
    assert res.serving.conservation()["served"] == 6  # type: ignore[attr-defined]


def test_serving_first_takes_idle_nodes_before_preempting() -> None:
    # 3 nodes: at t=500 the idle node 2 is taken, j0 (node 1) runs on: JCT 1000.
    res = run(3, "serving_first", [1, 2, 1])
    check_conservation(res)  # type: ignore[arg-type]
    s = res.summary["training"]  # type: ignore[attr-defined]
    assert s["avg_jct_s"] == 1000.0 and s["preemptions_by_reclaim"] == 0
    assert cap_steps(res) == [(0.0, 4.0), (500.0, 8.0), (1200.0, 4.0)]


def test_static_split_owns_the_peak_partition() -> None:
    # peak plan 2 engines x 4 = 2 nodes for the whole run; j0 on node 2, never preempted.
    res = run(3, "static_split", [1, 2, 1])
    check_conservation(res)  # type: ignore[arg-type]
    s = res.summary["training"]  # type: ignore[attr-defined]
    assert s["avg_jct_s"] == 1000.0 and s["preemptions_by_reclaim"] == 0
    assert cap_steps(res) == [(0.0, 8.0)]
    assert res.summary["serving"]["held_gpu_hours"] == pytest.approx(8 * 2400 / 3600)  # type: ignore[attr-defined]


def test_borrow_idle_only_takes_nodes_training_left_idle() -> None:
    # base = min plan nodes = 1 (node 0). j0 holds node 1 over [0, 1000). Serving wants a
    # second node from 500 to 1200 but gets it only when j0 ends: capacity 4, 8 at 1000,
    # 4 at 1200. Training is untouched: JCT 1000, no preemption.
    res = run(2, "borrow_idle", [1, 2, 1])
    check_conservation(res)  # type: ignore[arg-type]
    s = res.summary["training"]  # type: ignore[attr-defined]
    assert s["avg_jct_s"] == 1000.0 and s["preemptions_by_reclaim"] == 0
    assert cap_steps(res) == [(0.0, 4.0), (1000.0, 8.0), (1200.0, 4.0)]


def test_unknown_policy_rejected() -> None:
    with pytest.raises(UnknownNameError):
        run(2, "serving_last", [1])


def test_plan_peak_is_dedicated_analytic_sizing() -> None:
    mk = synthetic_market(
        5, 3600.0, 6.0, np.random.default_rng(1), specs=["Qwen2.5-7B", "Qwen2.5-14B"]
    )
    side = ServingSide(mk)
    plan = serving_plan(side, "H20", 8)
    n, tp = dedicated_sizing(mk, get_device("H20"), side.slo, side.perf)
    assert plan.static_engines == n and plan.tp == tp
    assert (plan.nodes == -(-plan.devices // 8)).all()
    assert plan.engines.shape == (5, 6)


def small_case(seed: int) -> tuple[TrainingSide, ServingSide]:
    rng = np.random.default_rng(seed)
    mk = synthetic_market(3, 3600.0, 4.0, rng, specs=["Qwen2.5-7B", "Qwen2.5-14B"])
    jobs = tuple(
        Job(
            f"j{i}",
            float(rng.uniform(0, 3000)),
            int(rng.choice([1, 2, 4, 8])),
            float(rng.uniform(60, 2400)),
            seq=i,
        )
        for i in range(25)
    )
    return TrainingSide(jobs), ServingSide(mk, window=300.0, headroom=0.5)


@pytest.mark.parametrize("policy", POLICIES)
def test_conservation_and_no_double_holding(policy: str) -> None:
    train, side = small_case(3)
    res = simulate_mixed(4, 8, "H20", train, side, policy, seed=0)
    check_conservation(res)
    tl = res.timeline()
    assert ((tl["training"] + tl["serving"] + tl["idle"]) == res.devices).all()
    assert (tl["idle"] >= 0).all()
    raw = res.training
    assert ((raw.util_milli // 1000) + raw.down <= raw.capacity).all()
    # serving's capacity is whole nodes
    assert (res.serving_capacity[1] % 8 == 0).all()
    c = res.summary["cluster"]
    assert c["allocated_share"] + c["idle_share"] == pytest.approx(1.0)
    if policy != "serving_first":
        assert res.summary["training"]["preemptions_by_reclaim"] == 0


def test_borrow_idle_leaves_training_identical_to_a_base_only_run() -> None:
    train, side = small_case(5)
    a = simulate_mixed(4, 8, "H20", train, side, "borrow_idle", base_nodes=1)
    b = simulate_mixed(4, 8, "H20", train, side, "borrow_idle", base_nodes=1, lead=0.0)
    # serving's borrowing never changes training: same job table whatever serving does
    assert np.array_equal(a.training_jobs["end"], b.training_jobs["end"], equal_nan=True)


def test_deterministic() -> None:
    train, side = small_case(7)
    r1 = simulate_mixed(4, 8, "H20", train, side, "serving_first", seed=2)
    r2 = simulate_mixed(4, 8, "H20", train, side, "serving_first", seed=2)
    d1 = {k: r1.summary[k] for k in ("training", "serving", "cluster")}
    d2 = {k: r2.summary[k] for k in ("training", "serving", "cluster")}
    for d in (d1, d2):
        d["serving"].pop("wall_seconds", None)
    assert json.dumps(d1, sort_keys=True) == json.dumps(d2, sort_keys=True)
    assert np.array_equal(r1.serving.finish, r2.serving.finish, equal_nan=True)


def test_window_jobs_rebases() -> None:
    jobs = [Job("a", 5.0, 1, 1.0), Job("b", 15.0, 1, 1.0), Job("c", 25.0, 1, 1.0)]
    w = window_jobs(jobs, 10.0, 10.0)
    assert [(j.id, j.submit_time) for j in w] == [("b", 5.0)]


@pytest.mark.slow
def test_experiment_quick(tmp_path: Path) -> None:
    if not (SHARED_TRACES / "alibaba-servegen-2025").exists():
        pytest.skip(f"needs the public traces in {SHARED_TRACES}; not present here")
    import sys

    sys.path.insert(0, str(REPO))
    from experiments.mixed_cluster import main

    assert main(["--out", str(tmp_path), "--quick"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert 0.6 <= s["inference_share_of_new_demand"] <= 0.7
    assert set(s["policies"]) == set(POLICIES)
    for p in POLICIES:
        assert 0.0 < s["policies"][p]["serving"]["slo_attainment"] <= 1.0
        assert s["policies"][p]["training"]["jobs_completed"] > 0
    assert s["policies"]["static_split"]["training"]["preemptions_by_reclaim"] == 0
    for png in ("gpus_over_time.png", "training_jct_cdf.png", "serving_attainment.png"):
        assert (tmp_path / png).stat().st_size > 0
