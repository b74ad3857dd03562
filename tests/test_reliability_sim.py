"""Accounting of the reliability simulator on hand-built failure sequences, plus invariants."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.errors import ConfigError
from clustersim.reliability import (
    LOST_CATEGORIES,
    CheckpointPolicy,
    ClusterLayout,
    FailureEvent,
    FailureModel,
    FailureSource,
    Fixed,
    InMemoryCheckpoint,
    JobSpec,
    RecoveryPipeline,
    ReliabilityConfig,
    SparePool,
    fast_config,
    generate_failures,
    meta_expected_ettr,
    simulate,
)

BIG = 1e18


def hand_config(**ckpt: object) -> ReliabilityConfig:
    """Fixed stage times: detect 10 (hang 20), teardown 5, reschedule 7, restart 30.

    Checkpoints: 1000 bytes per device at 100 B/s -> 10 s write, 10 s load; every 100 s.
    """
    policy = {
        "mode": "sync",
        "policy": "fixed",
        "interval": 100.0,
        "state_bytes_per_device": 1000.0,
        "device_bandwidth": BIG,
        "storage_bandwidth_per_device": 100.0,
        "storage_read_bandwidth_per_device": 100.0,
    }
    policy.update(ckpt)
    return ReliabilityConfig(
        failures=FailureModel(sources=(), devices_per_node=1),
        recovery=RecoveryPipeline(
            detection=Fixed(value=10.0),
            hang_detection=Fixed(value=20.0),
            teardown=Fixed(value=5.0),
            reschedule=Fixed(value=7.0),
            restart=Fixed(value=30.0),
        ),
        spares=SparePool(
            hot_spares=1,
            reserve_nodes=0,
            hot_swap=Fixed(value=3.0),
            reserve_provision=Fixed(value=50.0),
        ),
        checkpoint=CheckpointPolicy.model_validate(policy),
    )


def ev(t: float, nodes: tuple[int, ...], repair: float, manifests: str = "crash") -> FailureEvent:
    return FailureEvent(t, "test", "node", nodes[0], nodes, repair, "hardware", manifests)


def run(cfg: ReliabilityConfig, events: list[FailureEvent], horizon: float, nodes: int = 2):
    return simulate(
        cfg,
        JobSpec("j", nodes),
        horizon=horizon,
        rng=np.random.default_rng(0),
        failures=events,
        record_timeline=True,
    )


def test_hand_built_sequence_exact_breakdown() -> None:
    """Failure in compute, during a checkpoint write, a capacity wait, an absorbed failure
    during the queue and a failure during restart -- every second accounted by hand."""
    events = [
        ev(300.0, (0,), 1000.0),  # A: compute; node 0 drained, hot spare 2 swapped in
        ev(470.0, (1,), 0.0, "hang"),  # B: during the write of snapshot 1 (465..475)
        ev(592.0, (2,), 100.0),  # C: compute; only node 2 itself (back at 692) can replace it
        ev(700.0, (1,), 0.0),  # D: during the queue -> absorbed
        ev(760.0, (1,), 0.0),  # E: during restart (742..772) -> aborted restart
    ]
    r = run(hand_config(), events, 1000.0)
    j = r.jobs[0]
    assert j.productive == pytest.approx(368.0)
    expected = {
        "checkpoint": 35.0,
        "lost_work": 200.0,
        "detection": 50.0,
        "teardown": 20.0,
        "queueing": 159.0,
        "restart": 138.0,
        "checkpoint_load": 30.0,
    }
    for k, v in expected.items():
        assert j.lost[k] == pytest.approx(v), k
    assert j.wall == 1000.0
    assert j.unaccounted == pytest.approx(0.0, abs=1e-9)
    assert j.ettr == pytest.approx(0.368)
    assert j.interruptions == 4
    assert j.absorbed_failures == 1
    assert j.run_interruptions == 3
    assert j.capacity_waits == 1
    assert j.mttf_observed == pytest.approx(603.0 / 3.0)
    phases = [(p, s, e) for _, p, s, e in r.timeline or []]
    assert ("queueing", 607.0, 742.0) in phases
    assert ("restart", 742.0, 760.0) in phases
    assert ("run", 822.0, 1000.0) in phases


def test_two_overlapping_failures_replace_both_nodes() -> None:
    """A second failure during detection is absorbed; both drained nodes are replaced."""
    events = [ev(300.0, (0,), 1000.0), ev(305.0, (1,), 50.0)]
    j = run(hand_config(), events, 600.0).jobs[0]
    assert j.productive == pytest.approx(345.0)
    assert j.lost["queueing"] == pytest.approx(90.0)  # warm node 2 at 325, node 1 back at 405
    assert j.lost["lost_work"] == pytest.approx(50.0)
    assert j.lost["restart"] == pytest.approx(60.0)
    assert j.lost["checkpoint"] == pytest.approx(30.0)
    assert j.interruptions == 1 and j.absorbed_failures == 1
    assert j.unaccounted == pytest.approx(0.0, abs=1e-9)


def test_simultaneous_failures_count_once_per_event() -> None:
    events = [ev(300.0, (0,), 0.0), ev(300.0, (1,), 0.0)]
    j = run(hand_config(), events, 600.0).jobs[0]
    assert j.interruptions == 1 and j.absorbed_failures == 1
    assert j.unaccounted == pytest.approx(0.0, abs=1e-9)


def test_failure_during_launch_goes_to_launch_again_without_load() -> None:
    events = [ev(10.0, (0,), 0.0)]
    j = run(hand_config(), events, 200.0).jobs[0]
    # launch 0..10 aborted, detect 10, teardown 5, requeue 7, restart 30 (no checkpoint: no load)
    assert j.lost["restart"] == pytest.approx(40.0)
    assert j.lost["checkpoint_load"] == 0.0
    # runs 62..200: 100 compute, 10 s write, 28 compute
    assert j.productive == pytest.approx(128.0)
    assert j.lost["checkpoint"] == pytest.approx(10.0)


def test_async_failure_during_persist_rolls_back_a_full_interval() -> None:
    cfg = hand_config(mode="async", snapshot_bandwidth=500.0, overlap_slowdown=0.5)
    # launch 30; cycle1 100 + stall 2 (E1 = 132 abs); persist 10 s at half speed
    j = run(cfg, [ev(30.0 + 105.0, (0,), 0.0)], 200.0).jobs[0]
    assert j.lost["lost_work"] == pytest.approx(101.5)
    assert j.lost["checkpoint"] == pytest.approx(3.5 + 0.0)
    assert j.unaccounted == pytest.approx(0.0, abs=1e-9)
    j2 = run(cfg, [ev(30.0 + 215.0, (0,), 0.0)], 300.0).jobs[0]
    assert j2.lost["lost_work"] == pytest.approx(103.0)
    assert j2.unaccounted == pytest.approx(0.0, abs=1e-9)


def _mem_config() -> ReliabilityConfig:
    return hand_config(
        snapshot_bandwidth=500.0,
        in_memory=InMemoryCheckpoint(peer_bandwidth=1000.0, replicas=2, storage_interval=300.0),
    )


def test_in_memory_survives_single_node_loss() -> None:
    cfg = _mem_config()
    j = run(cfg, [ev(30.0 + 520.0, (0, 1), 10_000.0)], 700.0, nodes=4).jobs[0]
    assert j.lost["lost_work"] == pytest.approx(10.0)  # back to snapshot 5 (in memory)
    assert j.memory_fallbacks == 0


def test_in_memory_lost_when_a_whole_peer_group_dies() -> None:
    cfg = _mem_config()
    # strided peer groups of 4 nodes: (0, 2) and (1, 3)
    j = run(cfg, [ev(30.0 + 520.0, (0, 2), 10_000.0)], 700.0, nodes=4).jobs[0]
    assert j.lost["lost_work"] == pytest.approx(210.0)  # back to snapshot 3 (storage)
    assert j.memory_fallbacks == 1
    assert j.unaccounted == pytest.approx(0.0, abs=1e-9)


def test_work_mode_completes_and_frees_nodes() -> None:
    cfg = hand_config()
    r = simulate(
        cfg,
        JobSpec("j", 2, work=250.0),
        horizon=10_000.0,
        rng=np.random.default_rng(0),
        failures=[],
    )
    j = r.jobs[0]
    assert j.completed
    # launch 30 + 2 full cycles (220) + 50 compute
    assert j.end == pytest.approx(300.0)
    assert j.productive == pytest.approx(250.0)
    assert j.lost["checkpoint"] == pytest.approx(20.0)


def test_restart_in_place_skips_queue_for_software_failures() -> None:
    cfg = hand_config()
    cfg = cfg.model_copy(
        update={"recovery": cfg.recovery.model_copy(update={"restart_in_place": True})}
    )
    j = run(cfg, [ev(300.0, (0,), 0.0)], 600.0).jobs[0]
    assert j.lost["queueing"] == 0.0


def test_unsorted_failures_rejected() -> None:
    with pytest.raises(ConfigError, match="time-ordered"):
        run(hand_config(), [ev(10.0, (0,), 0.0), ev(5.0, (0,), 0.0)], 100.0)


def test_same_seed_same_results() -> None:
    cfg = ReliabilityConfig()
    a = simulate(cfg, JobSpec("j", 256), horizon=20 * 86400.0, rng=np.random.default_rng(7))
    b = simulate(cfg, JobSpec("j", 256), horizon=20 * 86400.0, rng=np.random.default_rng(7))
    c = simulate(cfg, JobSpec("j", 256), horizon=20 * 86400.0, rng=np.random.default_rng(8))
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()


def test_meta_closed_form_small_loss_regime() -> None:
    """Meta HPCA'25 E[ETTR] vs simulation: 2,048 GPUs, r_f 6.5e-3, u0 5 min, 1 h, w 60 s."""
    r_f, n, u0, dt, w = 6.5e-3, 256, 300.0, 3600.0, 60.0
    cfg = ReliabilityConfig(
        failures=FailureModel(
            sources=(
                FailureSource(name="node", category="hardware", level="node", rate_per_day=r_f),
            )
        ),
        recovery=RecoveryPipeline(
            detection=Fixed(value=0.0),
            hang_detection=Fixed(value=0.0),
            reschedule=Fixed(value=0.0),
            restart=Fixed(value=u0),
            restart_in_place=True,
        ),
        spares=SparePool(reserve_nodes=0),
        checkpoint=CheckpointPolicy(
            policy="fixed",
            interval=dt,
            state_bytes_per_device=w,
            device_bandwidth=BIG,
            storage_bandwidth_per_device=1.0,
            storage_read_bandwidth_per_device=BIG,
        ),
        include_initial_launch=False,
    )
    expected = meta_expected_ettr(n, r_f, u0, dt, w)
    sims = [
        simulate(cfg, JobSpec("j", n), horizon=400 * 86400.0, rng=np.random.default_rng(s))
        .jobs[0]
        .ettr
        for s in range(3)
    ]
    assert expected == pytest.approx(0.9439, abs=1e-3)
    assert float(np.mean(sims)) == pytest.approx(expected, rel=0.02)


def test_fast_config_beats_baseline_at_scale() -> None:
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    base = simulate(ReliabilityConfig(), JobSpec("j", 2048), horizon=10 * 86400.0, rng=rng_a)
    fast = simulate(fast_config(), JobSpec("j", 2048), horizon=10 * 86400.0, rng=rng_b)
    assert fast.jobs[0].ettr > base.jobs[0].ettr + 0.05


def test_100k_devices_60_days_under_a_minute() -> None:
    t = time.perf_counter()
    r = simulate(
        fast_config(), JobSpec("j", 12_500), horizon=60 * 86400.0, rng=np.random.default_rng(1)
    )
    assert time.perf_counter() - t < 60.0
    assert r.jobs[0].devices == 100_000
    assert r.jobs[0].interruptions > 1000


def test_two_jobs_share_the_spare_pool() -> None:
    cfg = hand_config()
    events = [ev(300.0, (0,), 1000.0), ev(310.0, (2,), 1000.0)]
    r = simulate(
        cfg,
        [JobSpec("a", 2), JobSpec("b", 2)],
        horizon=2000.0,
        rng=np.random.default_rng(0),
        failures=events,
    )
    a, b = r.jobs
    # a takes the only warm spare (node 4); b waits for node 0 (back at 1300) + 50 provision
    assert a.capacity_waits == 0 and b.capacity_waits == 1
    assert b.lost["queueing"] == pytest.approx(1350.0 - 325.0)
    for j in r.jobs:
        assert j.unaccounted == pytest.approx(0.0, abs=1e-9)


# -------------------------------------------------------------------------------------------
# invariants

_event = st.tuples(
    st.floats(0.0, 3000.0),
    st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True),
    st.sampled_from([0.0, 40.0, 500.0, 5000.0]),
    st.sampled_from(["crash", "hang"]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=st.lists(_event, max_size=25),
    mode=st.sampled_from(["sync", "async", "memory"]),
    interval=st.floats(20.0, 400.0),
    in_place=st.booleans(),
    work=st.one_of(st.none(), st.floats(50.0, 2500.0)),
)
def test_accounting_invariants(evs, mode, interval, in_place, work) -> None:  # type: ignore[no-untyped-def]
    extra: dict[str, object] = {"interval": interval}
    if mode == "async":
        extra.update(mode="async", snapshot_bandwidth=400.0, overlap_slowdown=0.3)
    elif mode == "memory":
        extra.update(
            snapshot_bandwidth=400.0,
            in_memory=InMemoryCheckpoint(peer_bandwidth=200.0, replicas=2, storage_interval=500.0),
        )
    cfg = hand_config(**extra)
    cfg = cfg.model_copy(
        update={"recovery": cfg.recovery.model_copy(update={"restart_in_place": in_place})}
    )
    events = sorted(
        (
            FailureEvent(t, "x", "node", n[0], tuple(sorted(n)), rep, "hardware", m)
            for t, n, rep, m in evs
        ),
        key=lambda e: e.time,
    )
    horizon = 3000.0
    r1 = simulate(
        cfg,
        [JobSpec("a", 2, work=work), JobSpec("b", 2)],
        horizon=horizon,
        rng=np.random.default_rng(1),
        failures=events,
        layout=ClusterLayout.uniform(6, devices_per_node=1),
    )
    r2 = simulate(
        cfg,
        [JobSpec("a", 2, work=work), JobSpec("b", 2)],
        horizon=horizon,
        rng=np.random.default_rng(1),
        failures=events,
        layout=ClusterLayout.uniform(6, devices_per_node=1),
    )
    assert r1.to_dict() == r2.to_dict()
    for j in r1.jobs:
        assert j.unaccounted == pytest.approx(0.0, abs=1e-6)
        assert j.productive >= -1e-9
        assert all(j.lost[k] >= -1e-9 for k in LOST_CATEGORIES)
        assert 0.0 <= j.ettr <= 1.0 + 1e-12
        if work is not None and j.name == "a" and j.completed:
            assert j.productive == pytest.approx(work)
        hits = sum(1 for e in events if set(e.nodes) & set(range(6)))
        assert j.interruptions + j.absorbed_failures <= hits


def test_generated_failures_feed_the_sim_deterministically() -> None:
    cfg = ReliabilityConfig()
    layout = ClusterLayout.for_model(cfg.failures, 300)
    f1 = generate_failures(cfg.failures, layout, 30 * 86400.0, np.random.default_rng(5))
    f2 = generate_failures(cfg.failures, layout, 30 * 86400.0, np.random.default_rng(5))
    assert f1 == f2
    r = simulate(
        cfg,
        JobSpec("j", 256),
        horizon=30 * 86400.0,
        rng=np.random.default_rng(0),
        failures=f1,
        layout=layout,
    )
    assert r.jobs[0].interruptions > 0
    assert math.isfinite(r.jobs[0].checkpoint_interval)
