"""Property tests over random traces, every registered scheduler and every placement policy."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.engine import Engine
from clustersim.metrics import allocated_device_seconds
from clustersim.schedulers.base import JobState
from clustersim.schedulers.placement import PLACEMENTS, get_placement
from clustersim.schedulers.registry import create_scheduler, scheduler_names
from clustersim.state import ClusterState
from clustersim.topology import Cluster
from clustersim.workload.job import Job


class LoggingEngine(Engine):
    """Logs every device grant and release with its time."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.log: list[tuple[float, str, str, tuple[int, ...], int]] = []
        orig_alloc, orig_rel = self.state.allocate, self.state.release

        def alloc(devices: Any, milli: int = 1000) -> None:
            orig_alloc(devices, milli)
            self.log.append((self.now, "alloc", self._current, tuple(devices), milli))

        def rel(devices: Any, milli: int = 1000) -> None:
            devices = tuple(devices)
            orig_rel(devices, milli)
            self.log.append((self.now, "release", "", devices, milli))

        self.state.allocate = alloc  # type: ignore[method-assign]
        self.state.release = rel  # type: ignore[method-assign]
        self._current = ""

    def _start(self, action: Any) -> None:
        self._current = action.job
        super()._start(action)


rows_st = st.lists(
    st.tuples(
        st.floats(0, 500, allow_nan=False),
        st.sampled_from([1, 1, 2, 3, 4, 6, 8, 12]),
        st.floats(0.5, 400, allow_nan=False),
        st.sampled_from([1000, 1000, 1000, 250, 500]),
    ),
    min_size=1,
    max_size=30,
)


def _jobs(rows: list[tuple[float, int, float, int]]) -> list[Job]:
    out = []
    for i, (s, g, d, m) in enumerate(rows):
        if m < 1000:
            g = 1 if g > 2 else g
        out.append(Job(f"j{i}", s, g, d, m, seq=i))
    return out


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
@pytest.mark.parametrize("policy", scheduler_names())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_st, nodes=st.integers(1, 3), ckpt=st.sampled_from([0.0, 0.0, 3.0]))
def test_engine_invariants(policy: str, placement: str, rows: Any, nodes: int, ckpt: float) -> None:
    cluster = Cluster.uniform(nodes, 4, "V100")
    jobs = [j for j in _jobs(rows) if j.num_gpus <= cluster.num_devices]
    if not jobs:
        return
    eng = LoggingEngine(
        cluster,
        jobs,
        create_scheduler(policy, {}),
        get_placement(placement),
        checkpoint_s=ckpt,
        restore_s=ckpt / 2,
    )
    res = eng.run()
    by = {j.id: j for j in jobs}
    # 1. no device over-booked at any instant (replay the log)
    used = [0] * cluster.num_devices
    held: dict[str, tuple[int, ...]] = {}
    for t, kind, jid, devs, milli in eng.log:
        for d in devs:
            used[d] += milli if kind == "alloc" else -milli
            assert 0 <= used[d] <= 1000, (t, kind, jid, d)
        if kind == "alloc":
            job = by[jid]
            # 2. never before submission, never on fewer devices than asked
            assert t >= job.submit_time - 1e-9
            assert len(set(devs)) == job.num_gpus == len(devs)
            held[jid] = devs
    assert all(u == 0 for u in used)
    # 3. every job ends exactly once, after its work
    assert res.stopped_by == "drained"
    for r in res.records:
        assert r.state is JobState.DONE
        assert math.isfinite(r.end) and r.end >= r.job.submit_time + r.job.duration - 1e-6
        assert r.remaining == 0.0
    # 4. allocated device-seconds of the series == sum over jobs of held time x share
    total = sum(r.run_time * r.job.num_gpus * r.job.gpu_milli / 1000 for r in res.records)
    series = allocated_device_seconds(res.util_t, res.util_milli, res.end_time)
    assert series == pytest.approx(total, rel=1e-9, abs=1e-6)


def test_same_seed_same_summary(tmp_path: Any) -> None:
    from clustersim.api import simulate, write_results
    from clustersim.config import validate_scenario

    data = {
        "name": "det",
        "seed": 7,
        "cluster": {"nodes": 4, "gpus_per_node": 8, "device": "H100"},
        "workload": {"format": "synthetic", "synthetic": {"jobs": 300, "arrival_rate": 0.02}},
        "scheduler": {"name": "las"},
    }
    outs = []
    for k in range(2):
        res = simulate(validate_scenario(dict(data)))
        write_results(res, tmp_path / f"r{k}")
        s = json.loads((tmp_path / f"r{k}" / "summary.json").read_text())
        s.pop("wall_s")
        outs.append(s)
    assert outs[0] == outs[1]
    assert (tmp_path / "r0" / "config.yaml").read_text() == (
        tmp_path / "r1" / "config.yaml"
    ).read_text()
    other = simulate(validate_scenario({**data, "seed": 8})).summary
    assert other["avg_jct_s"] != outs[0]["avg_jct_s"]


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(1, 8), st.sampled_from(["first_fit", "pack", "spread"])),
        min_size=1,
        max_size=25,
    )
)
def test_state_indexes_stay_consistent(ops: list[tuple[int, str]]) -> None:
    """Random allocate/release sequences keep every index equal to a recount from scratch."""
    cluster = Cluster.uniform(5, 8, "V100")
    state = ClusterState(cluster)
    live: list[tuple[int, ...]] = []
    for i, (k, pl) in enumerate(ops):
        devs = get_placement(pl)(Job(f"x{i}", 0, k, 1), state)
        if devs is None:
            assert k > state.free_total
            if live:
                state.release(live.pop(0))
            continue
        state.allocate(devs)
        live.append(devs)
        if i % 3 == 2:
            state.release(live.pop(0))
        free = [
            sum(1 for d in cluster.node_devices(n) if state.used[d] == 0)
            for n in range(cluster.num_nodes)
        ]
        assert state.node_free == free
        assert state.all.free == free
        assert state.free_total == sum(free)
        assert state.all.max_free == max(free)
        assert [sorted(x) for x in state.free_devices] == state.free_devices
