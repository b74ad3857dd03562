"""Another tenant reclaiming whole nodes (mixed clusters): preemption, hand-over, return."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import run_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.engine import Outage, Reclaim
from clustersim.errors import ClusterSimError
from clustersim.metrics import integrate_steps


def by_id(res: Any) -> dict[str, Any]:
    return {r.id: r for r in res.records}


def test_reclaim_preempts_lowest_node_on_tie_and_returns_it() -> None:
    # 2 nodes x 4. j0 -> node 0, j1 -> node 1 (first_fit), both 100 s. At t=50 a tenant
    # takes 1 node: both nodes have 4 busy devices, tie -> node 0, j0 is preempted with
    # 50 s left. At t=80 the node comes back: j0 restarts, ends at 130; j1 ends at 100.
    res = run_engine(
        [(0, 4, 100), (0, 4, 100)], 2, 4, "fifo", reclaims=[Reclaim(50, 1), Reclaim(80, 0)]
    )
    j = by_id(res)
    assert j["j0"].end == 130.0 and j["j0"].preemptions == 1 and j["j0"].reclaimed == 1
    assert j["j1"].end == 100.0 and j["j1"].preemptions == 0
    assert res.reclaim_preemptions == 1
    # node 0's 4 devices are held from 50 to 80
    assert integrate_steps(res.util_t, res.down.astype(float), res.end_time) == 4 * 30.0


def test_reclaim_takes_idle_nodes_first() -> None:
    # j0 on node 0; the tenant takes idle node 1 -> nobody is preempted, but the
    # 8-GPU job j1 must wait until the node is returned at t=40 (j0 ends at 100).
    res = run_engine(
        [(0, 4, 100), (1, 8, 10)], 2, 4, "fifo_backfill", reclaims=[Reclaim(0, 1), Reclaim(40, 0)]
    )
    j = by_id(res)
    assert res.reclaim_preemptions == 0 and j["j0"].preemptions == 0
    assert j["j1"].first_start == 100.0  # needs both nodes; node 0 busy until 100


def test_checkpoint_cost_delays_the_hand_over() -> None:
    # checkpoint 10 s: j0 holds node 0 until 60, then node 0 is down until the return at 90;
    # restart at 90 with restore 5 s -> j0 ends at 90 + 5 + 50 = 145.
    res = run_engine(
        [(0, 4, 100)],
        1,
        4,
        "fifo",
        reclaims=[Reclaim(50, 1), Reclaim(90, 0)],
        checkpoint_s=10.0,
        restore_s=5.0,
    )
    j = by_id(res)["j0"]
    assert j.end == 145.0 and j.reclaimed == 1
    assert integrate_steps(res.util_t, res.down.astype(float), res.end_time) == 4 * 30.0


def test_shortfall_is_reported_and_returned_node_under_repair_stays_down() -> None:
    # 2 nodes x 1; node 1 fails at t=5 for 100 s. At t=10 the tenant asks for 2 nodes: only
    # node 0 is up -> shortfall noted. Node 0 comes back at 20; node 1 only at 105.
    res = run_engine(
        [(0, 1, 50)],
        2,
        1,
        "fifo",
        outages=[Outage(5.0, (1,), 100.0)],
        reclaims=[Reclaim(10, 2), Reclaim(20, 0)],
    )
    j = by_id(res)["j0"]
    assert any("more than were up" in n for n in res.notes)
    assert j.reclaimed == 1 and j.end == 60.0  # 10 s done, back at 20, 40 s left
    # down device-seconds: node 1 5..105 (100) + node 0 10..20 (10); of those held: 10
    assert integrate_steps(res.util_t, res.down.astype(float), res.end_time) == 110.0
    assert integrate_steps(res.util_t, res.held.astype(float), res.end_time) == 10.0


def test_bad_reclaim_rejected() -> None:
    with pytest.raises(ClusterSimError, match="reclaim"):
        run_engine([(0, 1, 5)], 1, 1, "fifo", reclaims=[Reclaim(1.0, -1)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from([1, 2, 4]), st.integers(1, 60)),
        min_size=1,
        max_size=12,
    ),
    steps=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 3)), max_size=6),
    ckpt=st.sampled_from([0.0, 3.0]),
)
def test_reclaim_invariants(
    rows: list[tuple[int, int, int]], steps: list[tuple[int, int]], ckpt: float
) -> None:
    reclaims = [Reclaim(float(t), n) for t, n in steps] + [Reclaim(200.0, 0)]
    res = run_engine(rows, 3, 4, "fifo_backfill", reclaims=reclaims, checkpoint_s=ckpt)
    assert res.stopped_by == "drained"
    assert all(r.state.value == "done" for r in res.records)
    # no device both allocated and held: allocated + down never exceeds capacity; without
    # outages every device down is held by a reclaim
    assert ((res.util_milli // 1000) + res.down <= res.capacity).all()
    assert (res.held == res.down).all()
    # each job ran exactly its duration (ideal network, no restore cost)
    for r in res.records:
        assert r.run_time == pytest.approx(r.duration + ckpt * r.preemptions)


def test_scenario_reclaims_run_through_the_api(tmp_path: Any) -> None:
    # 2 nodes x 4 V100; two 4-GPU jobs of 100 s at t=0. The scenario's reclaim schedule takes
    # one node at 50 s (relative to the first arrival) and returns it at 80 s: as in the first
    # test, j0 is preempted and ends at 130 s.
    from clustersim.api import simulate
    from clustersim.config import load_scenario

    trace = tmp_path / "t.csv"
    trace.write_text("job_id,submit_time,num_gpus,duration\nj0,10,4,100\nj1,10,4,100\n")
    sc = tmp_path / "s.yaml"
    sc.write_text(
        "cluster: {nodes: 2, gpus_per_node: 4, device: V100}\n"
        f"workload: {{trace: {trace}, format: csv}}\n"
        "scheduler: {name: fifo}\n"
        "reclaims: [{time: 50, nodes: 1}, {time: 80, nodes: 0}]\n"
    )
    res = simulate(load_scenario(sc))
    ends = dict(zip(res.jobs["job_id"], res.jobs["end"], strict=True))
    assert ends == {"j0": 140.0, "j1": 110.0}
    assert res.summary["preemptions_by_reclaim"] == 1


def test_scenario_reclaim_bad_field_names_the_field(tmp_path: Any) -> None:
    from clustersim.config import load_scenario
    from clustersim.errors import ConfigError

    sc = tmp_path / "s.yaml"
    sc.write_text(
        "cluster: {nodes: 2, gpus_per_node: 4, device: V100}\n"
        "workload: {format: synthetic}\n"
        "reclaims: [{time: 5, nodes: -1}]\n"
    )
    with pytest.raises(ConfigError, match=r"reclaims\.0\.nodes"):
        load_scenario(sc)
