"""Engine and built-in policies: hand-computed cases, errors, a cross-check with a reference."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import make_jobs, run_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_sim import simulate as ref_simulate

from clustersim.engine import Engine
from clustersim.errors import SchedulerError
from clustersim.schedulers import Preempt, Scheduler, Start, WakeUp
from clustersim.schedulers.placement import get_placement
from clustersim.topology import Cluster


def ends(res: Any) -> dict[str, float]:
    return {r.id: r.end for r in res.records}


# ----------------------------------------------------------------------------- hand-computed


def test_fifo_head_of_line_blocking() -> None:
    # 4 devices. j0 takes 3 until t=10; j1 needs 4 -> waits; j2 (1 device) must NOT overtake.
    res = run_engine([(0, 3, 10), (1, 4, 5), (2, 1, 1)], 1, 4, "fifo")
    assert ends(res) == {"j0": 10.0, "j1": 15.0, "j2": 16.0}


def test_backfill_lets_small_jobs_overtake() -> None:
    res = run_engine([(0, 3, 10), (1, 4, 5), (2, 1, 1)], 1, 4, "fifo_backfill")
    assert ends(res) == {"j0": 10.0, "j1": 15.0, "j2": 3.0}


def test_sjf_orders_by_duration() -> None:
    # 1 device; j0 runs 0-10; then j2 (dur 2) before j1 (dur 5).
    res = run_engine([(0, 1, 10), (1, 1, 5), (2, 1, 2)], 1, 1, "sjf")
    assert ends(res) == {"j0": 10.0, "j2": 12.0, "j1": 17.0}


def test_srtf_preempts_longer_job() -> None:
    # 1 device; j0 (100 s) preempted at t=10 by j1 (5 s); resumes at 15, ends at 105.
    res = run_engine([(0, 1, 100), (10, 1, 5)], 1, 1, "srtf")
    assert ends(res) == {"j0": 105.0, "j1": 15.0}
    pre = {r.id: r.preemptions for r in res.records}
    assert pre == {"j0": 1, "j1": 0}


def test_srtf_preemption_costs() -> None:
    # checkpoint 2 s holds the device (j1 starts at 12), restore 3 s delays j0's progress.
    res = run_engine([(0, 1, 100), (10, 1, 5)], 1, 1, "srtf", checkpoint_s=2.0, restore_s=3.0)
    e = ends(res)
    assert e["j1"] == 17.0
    assert e["j0"] == 17.0 + 3.0 + 90.0


def test_las_two_queue_demotion() -> None:
    # 1 device, threshold 10 s. j0 arrives at 0 (dur 30), j1 at 15 (dur 5).
    # j0 demoted at t=10; at 15 j1 (queue 0) preempts it (15 s done); j1 ends 20; j0 ends 35.
    res = run_engine([(0, 1, 30), (15, 1, 5)], 1, 1, "las", params={"thresholds": [10]})
    assert ends(res) == {"j0": 35.0, "j1": 20.0}


def test_las_same_queue_does_not_preempt() -> None:
    # Both in queue 0 (threshold 100): the running job stays ahead of the waiting one.
    res = run_engine([(0, 1, 30), (5, 1, 5)], 1, 1, "las", params={"thresholds": [100]})
    assert ends(res) == {"j0": 30.0, "j1": 35.0}


def test_las_gpu_time_service() -> None:
    # service = seconds x devices: a 2-device job crosses 10 GPU-s after 5 s.
    res = run_engine(
        [(0, 2, 30), (6, 2, 4)], 1, 2, "las", params={"thresholds": [10], "service": "gpu_time"}
    )
    assert ends(res) == {"j0": 34.0, "j1": 10.0}


def test_horizon_stops_and_cuts_segments() -> None:
    res = run_engine([(0, 1, 100), (0, 1, 10)], 1, 2, "fifo", horizon=50.0)
    assert res.stopped_by == "horizon"
    by = {r.id: r for r in res.records}
    assert math.isnan(by["j0"].end) and by["j0"].remaining == pytest.approx(50.0)
    assert by["j1"].end == 10.0


def test_interval_adds_rounds() -> None:
    res = run_engine([(0, 1, 10)], 1, 1, "fifo", interval=3.0)
    assert ends(res) == {"j0": 10.0}
    assert res.passes >= 4  # arrival + completion + rounds at 3, 6, 9


def test_utilization_series_is_exact() -> None:
    res = run_engine([(0, 2, 10), (5, 1, 10)], 1, 4, "fifo")
    # 2 devices 0-5, 3 devices 5-10, 1 device 10-15
    assert list(res.util_t) == [0.0, 5.0, 10.0, 15.0]
    assert list(res.util_milli) == [2000, 3000, 1000, 0]


# ----------------------------------------------------------------------------- bad policies


class _Bad(Scheduler):
    name = "bad"

    def __init__(self, action: Any) -> None:
        self.action = action
        self.done = False

    def schedule(self, view: Any) -> Any:
        if self.done:
            return []
        self.done = True
        return self.action(view)


def _bad_run(action: Any, rows: Any = ((0, 2, 10), (0, 2, 10))) -> SchedulerError:
    cluster = Cluster.uniform(1, 4, "V100")
    eng = Engine(
        cluster, make_jobs(rows), _Bad(action), get_placement("first_fit"), policy_name="bad"
    )
    with pytest.raises(SchedulerError) as ei:
        eng.run()
    return ei.value


def test_double_booking_names_policy_job_and_devices() -> None:
    err = _bad_run(lambda v: [Start("j0", (0, 1)), Start("j1", (1, 2))])
    msg = str(err)
    assert "scheduler 'bad'" in msg and "job 'j1'" in msg and "devices [1, 2]" in msg
    assert "device 1 is already in use" in msg
    # nothing computed is lost: the partial result rides on the error
    partial = err.partial  # type: ignore[attr-defined]
    assert {r.id: r.state.value for r in partial.records}["j0"] == "running"


@pytest.mark.parametrize(
    ("action", "needle"),
    [
        (lambda v: [Start("j0", (0,))], "gang needs exactly 2 devices, got 1"),
        (lambda v: [Start("nope", (0, 1))], "unknown job"),
        (lambda v: [Start("j0", (0, 9))], "device 9 does not exist"),
        (lambda v: [Start("j0", (0, 0))], "device 0 listed twice"),
        (lambda v: [Preempt("j0")], "preempt a job that is queued"),
        (lambda v: [Start("j0", (0, 1)), Start("j0", (2, 3))], "start a job that is running"),
        (lambda v: ["start j0"], "not an action"),
        (lambda v: [WakeUp(float("nan"))], "wake up"),
    ],
)
def test_invalid_actions_are_rejected(action: Any, needle: str) -> None:
    assert needle in str(_bad_run(action))


def test_policy_exception_is_wrapped_with_policy_name() -> None:
    def boom(v: Any) -> Any:
        raise ZeroDivisionError("oops")

    err = _bad_run(boom)
    assert "scheduler 'bad'" in str(err) and "ZeroDivisionError" in str(err)


def test_stall_is_reported_not_silent() -> None:
    # strict FIFO behind a job that can never be placed because a typed job needs absent devices
    class Never(Scheduler):
        def schedule(self, view: Any) -> Any:
            return []

    cluster = Cluster.uniform(1, 2, "V100")
    res = Engine(cluster, make_jobs([(0, 1, 5)]), Never(), get_placement("first_fit")).run()
    assert res.stopped_by == "stalled"
    assert "never started" in res.notes[0] and "'j0'" in res.notes[0]


# ----------------------------------------------------------------------------- reference


job_rows = st.lists(
    st.tuples(st.integers(0, 200), st.sampled_from([1, 1, 1, 2, 3, 4, 8]), st.integers(1, 300)),
    min_size=1,
    max_size=40,
)


@pytest.mark.parametrize("policy", ["fifo", "fifo_backfill", "sjf", "srtf", "las"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=job_rows, nodes=st.integers(1, 3))
def test_matches_reference_simulator(
    policy: str, rows: list[tuple[int, int, int]], nodes: int
) -> None:
    params = {"thresholds": [100]} if policy == "las" else {}
    res = run_engine(rows, nodes, 8, policy, params=params)
    ref = ref_simulate(
        [(float(s), g, float(d)) for s, g, d in rows], nodes * 8, policy, thresholds=(100.0,)
    )
    got = ends(res)
    for rj in ref:
        assert rj.end is not None
        assert got[f"j{rj.idx}"] == pytest.approx(rj.end, rel=1e-9, abs=1e-6), (policy, rj.idx)


def test_reference_on_sample_trace_avg_jct() -> None:
    """First 400 jobs of the bundled Philly sample on 10 x 8: engine == reference for 4 policies."""
    from conftest import SAMPLE

    from clustersim.workload.loaders import load_csv

    jobs, _ = load_csv(SAMPLE)
    jobs = jobs[:400]
    rows = [(j.submit_time, j.num_gpus, j.duration) for j in jobs]
    for policy in ("fifo", "fifo_backfill", "srtf", "las"):
        res = run_engine(rows, 10, 8, policy)
        ref = ref_simulate(rows, 80, policy)
        got = ends(res)
        eng_jct = sum(got[f"j{r.idx}"] - r.submit for r in ref) / len(ref)
        ref_jct = sum((r.end or 0) - r.submit for r in ref) / len(ref)
        assert eng_jct == pytest.approx(ref_jct, rel=1e-9), policy


@pytest.mark.parametrize("policy", ["fifo_backfill", "las", "srtf"])
def test_finished_engine_is_freed_by_reference_counting(policy: str) -> None:
    # The view is the engine's only cycle; run() cuts it, so with the cyclic GC paused
    # dropping the engine frees it (and its records) at once, and the view is retired.
    import gc
    import weakref

    from clustersim.schedulers.registry import create_scheduler

    jobs = make_jobs([(0, 2, 10), (1, 4, 5), (2, 1, 1), (3, 3, 7)])
    eng = Engine(
        Cluster.uniform(1, 4, "V100"),
        jobs,
        create_scheduler(policy, {}),
        get_placement("first_fit"),
    )
    view = eng.view
    res = eng.run()
    assert len(res.records) == 4 and all(r.end > 0 for r in res.records)
    ref = weakref.ref(eng)
    was = gc.isenabled()
    gc.disable()
    try:
        del eng
        assert ref() is None
    finally:
        if was:
            gc.enable()
    with pytest.raises(AttributeError):
        _ = view.now
