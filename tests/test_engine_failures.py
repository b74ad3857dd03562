"""Node outages in the cluster engine: interruption, lost work, repair, accounting."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import run_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.engine import Outage
from clustersim.metrics import integrate_steps
from clustersim.schedulers.registry import scheduler_names


def by_id(res: Any) -> dict[str, Any]:
    return {r.id: r for r in res.records}


def test_failure_loses_work_since_checkpoint_and_node_goes_down() -> None:
    # 2 nodes x 1 device. j0 (100 s) on node 0; node 0 fails at t=30 for 50 s.
    # Checkpoints every 20 s of progress -> 20 s saved, 10 s lost; recovery 5 s -> requeued
    # at 35 on node 1 (node 0 is down), runs the remaining 80 s -> ends at 115.
    res = run_engine(
        [(0, 1, 100)],
        2,
        1,
        "fifo",
        outages=[Outage(30.0, (0,), 50.0)],
        checkpoint_interval=20.0,
        recovery_s=5.0,
    )
    j = by_id(res)["j0"]
    assert j.end == 115.0 and j.failures == 1 and j.lost_work == pytest.approx(10.0)
    assert j.devices == (1,)
    assert j.run_time == pytest.approx(30.0 + 80.0)
    # down device-seconds: node 0's device from 30 to 80
    assert integrate_steps(res.util_t, res.down.astype(float), res.end_time) == 50.0
    assert res.outages == 1


def test_no_checkpoint_restarts_from_scratch_and_restart_in_place() -> None:
    res = run_engine([(0, 1, 100)], 1, 1, "fifo", outages=[Outage(30.0, (0,), 0.0)])
    j = by_id(res)["j0"]
    assert j.end == 130.0 and j.lost_work == 30.0
    assert integrate_steps(res.util_t, res.down.astype(float), res.end_time) == 0.0


def test_overlapping_failures_keep_node_down_until_latest_repair() -> None:
    # node 0 fails at 10 (repair 50 -> 60) and again at 40 (repair 50 -> 90).
    # j0 (on node 0) loses its 10 s and restarts on node 1 at 10 (ends 210); j1 arrives at
    # 20 and must wait for node 0, which stays down until the later repair ends at 90.
    res = run_engine(
        [(0, 1, 200), (20, 1, 10)],
        2,
        1,
        "fifo",
        outages=[Outage(10.0, (0,), 50.0), Outage(40.0, (0,), 50.0)],
        checkpoint_interval=None,
    )
    b = by_id(res)
    assert b["j0"].devices == (1,) and b["j0"].failures == 1 and b["j0"].end == 210.0
    assert b["j1"].first_start == 90.0 and b["j1"].end == 100.0
    assert integrate_steps(res.util_t, res.down.astype(float), res.end_time) == 80.0


def test_failure_during_preemption_checkpoint() -> None:
    # SRTF, 1 device. j0 (100 s) is preempted at t=10 by j1 (5 s); checkpoint takes 4 s.
    # The device fails at t=12, mid-checkpoint: the checkpoint never completes, so j0 rolls
    # back to its last periodic checkpoint (none, interval 50 > 10) and loses 10 s.
    res = run_engine(
        [(0, 1, 100), (10, 1, 5)],
        1,
        1,
        "srtf",
        checkpoint_s=4.0,
        outages=[Outage(12.0, (0,), 0.0)],
        checkpoint_interval=50.0,
    )
    b = by_id(res)
    assert b["j0"].lost_work == 10.0 and b["j0"].failures == 1
    assert b["j1"].end == 17.0  # device free at 12 (checkpoint killed), j1 12-17
    assert b["j0"].end == 17.0 + 100.0  # from scratch


def test_failure_during_restore_loses_nothing_more() -> None:
    # j0 preempted at 10 (instant checkpoint, 10 s saved), resumes at 15 with a 3 s restore;
    # a failure at 16 (inside the restore) leaves it at its saved 10 s.
    res = run_engine(
        [(0, 1, 100), (10, 1, 5)],
        1,
        1,
        "srtf",
        restore_s=3.0,
        outages=[Outage(16.0, (0,), 0.0)],
        checkpoint_interval=None,
    )
    j = by_id(res)["j0"]
    assert j.lost_work == 0.0 and j.failures == 1
    assert j.end == 16.0 + 3.0 + 90.0  # restarts at 16, restores 3 s again, 90 s left


@pytest.mark.parametrize("policy", scheduler_names())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from([1, 2, 4]), st.integers(1, 200)),
        min_size=1,
        max_size=25,
    ),
    outs=st.lists(
        st.tuples(st.integers(0, 600), st.integers(0, 2), st.sampled_from([0, 30, 200])), max_size=6
    ),
)
def test_random_outages_every_policy(policy: str, rows: list[Any], outs: list[Any]) -> None:
    outages = [Outage(float(t), (n,), float(r)) for t, n, r in outs]
    res = run_engine(
        rows,
        3,
        4,
        policy,
        outages=outages,
        checkpoint_interval=25.0,
        recovery_s=3.0,
        checkpoint_s=1.0,
    )
    assert res.stopped_by == "drained"
    for r in res.records:
        assert math.isfinite(r.end) and r.remaining == 0.0
        # work done = duration + lost work; running time covers it
        assert r.run_time >= r.job.duration + r.lost_work - 1e-6
    assert res.down[-1] == 0 or res.end_time < max(t + r for t, _, r in outs)


def test_scenario_failures_are_seeded_and_counted(tmp_path: Any) -> None:
    from clustersim.api import simulate
    from clustersim.config import validate_scenario

    data = {
        "name": "fail",
        "seed": 3,
        "cluster": {"nodes": 8, "gpus_per_node": 8, "device": "H100"},
        "workload": {"format": "synthetic", "synthetic": {"jobs": 200, "arrival_rate": 0.01}},
        "scheduler": {"name": "las"},
        "failures": {
            "model": {
                "sources": [
                    {
                        "name": "node",
                        "category": "hardware",
                        "level": "node",
                        "rate_per_day": 0.5,
                        "repair": 3600,
                    }
                ]
            },
            "checkpoint_interval_s": 600,
            "recovery_s": 60,
        },
    }
    a = simulate(validate_scenario(data)).summary
    b = simulate(validate_scenario(data)).summary
    for s in (a, b):
        s.pop("wall_s")
    assert a == b
    assert a["failure_interruptions"] > 0 and a["down_device_hours"] > 0
    assert 0 < a["availability"] < 1 and a["jobs_completed"] == 200
    # a failure trace replaces the model; a node outside the cluster is a clear error
    trace = tmp_path / "f.csv"
    trace.write_text("time,kind,level,component,nodes,repair_time\n100,gpu,node,9,9,60\n")
    data["failures"] = {"model": {"trace": str(trace)}}
    from clustersim.errors import ClusterSimError

    with pytest.raises(ClusterSimError, match=r"f.csv:2: field 'nodes' node index out of range"):
        simulate(validate_scenario(data))
