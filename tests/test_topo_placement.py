"""Topology-aware placement (consolidate, buddy, best_fit) and per-level stranded-device metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.engine import Engine
from clustersim.fragmetrics import (
    allocation_ratio,
    stranded_by_level,
    stranded_timeline,
    typical_size,
)
from clustersim.perf import CommSpeedModel
from clustersim.schedulers.placement import PLACEMENTS, get_placement
from clustersim.schedulers.registry import create_scheduler
from clustersim.schedulers.topo_placement import LevelCounts, best_fit, buddy, consolidate
from clustersim.state import ClusterState
from clustersim.topology import Cluster
from clustersim.workload.job import Job


def racks(nodes: int = 8, gpus: int = 4, rack: int = 2, pod: int = 4) -> Cluster:
    """``nodes`` x ``gpus`` H100 in racks of ``rack`` nodes and pods of ``pod`` nodes."""
    return Cluster.from_dict(
        {
            "nodes": [{"count": nodes, "gpus": gpus, "device": "H100"}],
            "node_link": {"bandwidth": 450e9},
            "levels": [
                {"name": "rack", "nodes": rack, "bandwidth": 50e9},
                {"name": "pod", "nodes": pod, "bandwidth": 50e9},
                {"name": "spine", "nodes": nodes, "bandwidth": 25e9},
            ],
        }
    )


def job(k: int, milli: int = 1000, dtype: str | None = None) -> Job:
    return Job("x", 0, k, 1, milli, dtype)


def hand_state() -> ClusterState:
    """8 nodes x 4: node 0 has 1 free (dev 3), node 1 has 3 free (5, 6, 7), the rest empty."""
    s = ClusterState(racks())
    for p in (consolidate, best_fit, buddy):  # build the indexes before the state changes
        p(job(1), s)
    s.allocate([0, 1, 2])
    s.allocate([4])
    return s


def test_registered() -> None:
    assert {"consolidate", "buddy", "best_fit", "first_fit", "pack", "spread"} <= set(PLACEMENTS)
    assert get_placement("buddy") is buddy


def test_consolidate_hand_cases() -> None:
    s = hand_state()
    assert consolidate(job(3), s) == (5, 6, 7)  # tightest node
    assert consolidate(job(1), s) == (3,)
    # 6 devices: no node has 6; racks 1..3 have 8 each -> rack 1 (nodes 2, 3): node 2 whole + 2
    assert consolidate(job(6), s) == (8, 9, 10, 11, 12, 13)
    # 12: no rack has 12; pods 0 (12 free) and 1 (16): best fit pod 0. Fill: rack 1 whole (8),
    # then rack 0's 4: node 1 (3, the larger child) whole, then node 0's last device
    assert consolidate(job(12), s) == (*range(8, 16), 5, 6, 7, 3)
    assert consolidate(job(16), s) == tuple(range(16, 32))
    assert consolidate(job(28), s) is not None and consolidate(job(29), s) is None


def test_best_fit_hand_cases() -> None:
    s = hand_state()
    assert best_fit(job(3), s) == (5, 6, 7)
    # 4: node 2 (leftover 0) and rack 0 (4 free, leftover 0): the lower level wins
    assert best_fit(job(4), s) == (8, 9, 10, 11)
    # 2: node 0 (1) too small; node 1 leftover 1; rack 0 leftover 2 -> node 1, two lowest ids
    assert best_fit(job(2), s) == (5, 6)
    # 5: no node; rack 0 has 4; racks 1-3 have 8 (leftover 3); pod 0 has 12 -> rack 1
    assert best_fit(job(5), s) == (8, 9, 10, 11, 12)


def test_best_fit_fills_holes_where_consolidate_takes_whole_nodes() -> None:
    c = Cluster.from_dict(
        {
            "nodes": [{"count": 3, "gpus": 4, "device": "H100"}],
            "levels": [{"name": "top", "nodes": 3, "bandwidth": 50e9}],
        }
    )
    s = ClusterState(c)
    s.allocate([0, 1, 2])
    s.allocate([4])  # free per node: 1, 3, 4
    # consolidate: the emptiest node whole, then 2 from the best-fitting node (3 free)
    assert consolidate(job(6), s) == (8, 9, 10, 11, 5, 6)
    # best_fit: smallest hole first (node 0), then node 1's 3, then 2 of node 2
    assert best_fit(job(6), s) == (3, 5, 6, 7, 8, 9)


def test_buddy_hand_cases() -> None:
    s = hand_state()
    assert buddy(job(1), s) == (3,)  # an exact 1-cell: node 0's last device
    assert buddy(job(2), s) == (6, 7)  # node 1's aligned 2-block, not a split 4-block
    assert buddy(job(3), s) == (8, 9, 10)  # needs a 4-cell: first whole node
    # 6 > node: whole free nodes only; rack 1 has 8 whole-node devices -> nodes 2 + part of 3
    assert buddy(job(6), s) == (8, 9, 10, 11, 12, 13)
    # 28 free in all, but only 24 on whole free nodes: buddy waits where consolidate fits
    assert consolidate(job(28), s) is not None and buddy(job(28), s) is None
    assert buddy(job(24), s) is not None


def test_buddy_waits_for_an_aligned_block() -> None:
    s = ClusterState(Cluster.uniform(1, 4, "H100"))
    buddy(job(1), s)
    s.allocate([0])
    s.allocate([3])  # free 1, 2: two devices but no aligned 2-block
    assert buddy(job(2), s) is None and consolidate(job(2), s) == (1, 2)
    assert buddy(job(1), s) == (1,)


def test_fractional_and_typed_jobs() -> None:
    c = Cluster.from_dict(
        {
            "nodes": [
                {"count": 2, "gpus": 4, "device": "H100"},
                {"count": 2, "gpus": 4, "device": "A100"},
            ],
            "levels": [
                {"name": "rack", "nodes": 2, "bandwidth": 50e9},
                {"name": "spine", "nodes": 4, "bandwidth": 50e9},
            ],
        }
    )
    s = ClusterState(c)
    for p in (consolidate, best_fit, buddy):
        got = p(job(6, dtype="A100"), s)
        assert got is not None and all(d >= 8 for d in got)
        assert p(job(9, dtype="A100"), s) is None
        assert p(job(1, dtype="TPU"), s) is None
    s.allocate([0], 700)
    for p in (consolidate, best_fit, buddy):
        assert p(job(1, 250, "H100"), s) == (0,)  # best fit on share
        got = p(job(1, 500, "H100"), s)
        assert got is not None and got != (0,) and got[0] < 8


def _brute_free(s: ClusterState, k: int) -> tuple[int, int, int]:
    """(lowest level with a group holding >= k free, min leftover over all groups, total free)."""
    c = s.cluster
    free = np.asarray(s.node_free)
    low, left = -1, 10**9
    for lvl, g in enumerate(c.group_of):
        tot = np.bincount(g, weights=free)
        ok = tot[tot >= k]
        if ok.size:
            if low < 0:
                low = lvl
            left = min(left, int(ok.min()) - k)
    return low, left, int(free.sum())


def _check_counts(idx: LevelCounts, s: ClusterState) -> None:
    free = np.asarray(s.node_free)
    if idx.whole:
        free = np.where(free == np.asarray(s.cluster.node_size), free, 0)
    for lvl, g in enumerate(s.cluster.group_of):
        assert idx.val[lvl] == np.bincount(g, weights=free).astype(int).tolist()
        assert idx.glob[lvl] == sorted(zip(idx.val[lvl], range(len(idx.val[lvl])), strict=True))


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from([1, 2, 3, 4, 5, 8, 12]), st.integers(0, 99)), max_size=40
    ),
    policy=st.sampled_from(["consolidate", "best_fit", "buddy"]),
)
def test_placement_invariants(ops: list[tuple[int, int]], policy: str) -> None:
    c = racks()
    s = ClusterState(c)
    place = PLACEMENTS[policy]
    running: list[tuple[int, ...]] = []
    place(job(1), s)
    for k, r in ops:
        if r < 30 and running:  # release one
            s.release(running.pop(r % len(running)))
            continue
        got = place(job(k), s)
        low, left, total = _brute_free(s, k)
        if got is None:
            if policy != "buddy":
                assert total < k
            continue
        assert len(got) == k and len(set(got)) == k
        assert all(s.used[d] == 0 for d in got)
        nodes = sorted({int(c.node_of[d]) for d in got})
        span = c.common_level(list(got))
        if policy == "consolidate":
            assert span == low
        elif policy == "best_fit":
            grp = nodes[0] // c.levels[span].nodes
            tot = sum(
                s.node_free[n] for n in range(c.num_nodes) if n // c.levels[span].nodes == grp
            )
            assert tot - k >= left and span <= len(c.levels) - 1
        else:
            cell = 1 << (k - 1).bit_length()
            if cell <= 4:  # inside one node, inside one aligned cell
                assert len(nodes) == 1
                off = [d - c.node_first[nodes[0]] for d in got]
                assert min(off) % cell == 0 and max(off) < min(off) + cell
            else:  # whole free nodes
                assert all(s.node_free[n] == 4 for n in nodes)
        s.allocate(got)
        running.append(got)
        for key, idx in s.indexes.items():
            if key.startswith("topo:free") or key.startswith("topo:whole"):
                _check_counts(idx, s)


def test_placements_leave_the_state_untouched() -> None:
    s = hand_state()
    before = (list(s.node_free), [list(x) for x in s.free_devices], list(s.all.free))
    for p in (consolidate, best_fit, buddy):
        for k in (1, 2, 3, 5, 12, 28, 29):
            p(job(k), s)
    assert (list(s.node_free), [list(x) for x in s.free_devices], list(s.all.free)) == before


def test_engine_consolidate_keeps_jobs_at_full_speed() -> None:
    """A 1-GPU job holds device 0; first_fit then splits a 4-GPU job over two nodes."""
    c = racks(nodes=4, gpus=4, rack=2, pod=4)
    jobs = [
        Job("small", 0.0, 1, 1000.0, seq=0),
        Job("big", 1.0, 4, 100.0, seq=1, attrs={"comm_fraction": 0.5}),
    ]
    out = {}
    for name in ("first_fit", "consolidate", "best_fit", "buddy"):
        eng = Engine(
            c,
            jobs,
            create_scheduler("fifo", {}),
            get_placement(name),
            speed_model=CommSpeedModel(c),
        )
        res = eng.run()
        big = next(r for r in res.records if r.id == "big")
        out[name] = big.end - big.first_start
    assert out["consolidate"] == pytest.approx(100.0)
    assert out["best_fit"] == pytest.approx(100.0)
    assert out["buddy"] == pytest.approx(100.0)
    assert out["first_fit"] > 100.0


# --------------------------------------------------------------------------- fragmetrics


def frag_state() -> ClusterState:
    """2 racks x 2 nodes x 4: free per node 1, 4, 0, 2."""
    c = Cluster.from_dict(
        {
            "nodes": [{"count": 4, "gpus": 4, "device": "H100"}],
            "levels": [
                {"name": "rack", "nodes": 2, "bandwidth": 50e9},
                {"name": "top", "nodes": 4, "bandwidth": 50e9},
            ],
        }
    )
    s = ClusterState(c)
    s.allocate([0, 1, 2])
    s.allocate([8, 9, 10, 11])
    s.allocate([12, 13])
    return s


def test_stranded_by_level_hand_computed() -> None:
    s = frag_state()
    # typical 2: only node 0 (1 free, partly used) strands
    assert stranded_by_level(s, 2) == {"node": 1, "rack": 0, "top": 0}
    # typical 8: nodes need 4 (node 0: 1, node 3: 2); racks need 8 (5 + 2); top needs 8 (7)
    assert stranded_by_level(s, 8) == {"node": 3, "rack": 7, "top": 7}
    assert allocation_ratio(s) == pytest.approx(9 / 16)
    s.allocate([4], 500)
    assert allocation_ratio(s) == pytest.approx(9.5 / 16)
    assert stranded_by_level(s, 2)["node"] == 1  # node 1 now has 3 free, enough for 2
    with pytest.raises(Exception, match="typical job size"):
        stranded_by_level(s, 0)


def test_stranded_by_type_and_typical_size() -> None:
    c = Cluster.from_dict(
        {
            "nodes": [
                {"count": 1, "gpus": 4, "device": "H100"},
                {"count": 1, "gpus": 4, "device": "A100"},
            ],
            "levels": [{"name": "top", "nodes": 2, "bandwidth": 50e9}],
        }
    )
    s = ClusterState(c)
    s.allocate([0, 1, 2, 4])
    assert stranded_by_level(s, 2) == {"node": 1, "top": 0}
    assert stranded_by_level(s, 2, "A100") == {"node": 0, "top": 0}
    assert stranded_by_level(s, 4, "A100") == {"node": 3, "top": 3}
    jobs = [job(1), job(2), job(2), job(4), job(4), job(1, 500)]
    assert typical_size(jobs) == 2 and typical_size([]) == 1


def test_stranded_timeline_replays_a_run() -> None:
    c = racks(nodes=4, gpus=4, rack=2, pod=4)
    jobs = [
        Job("a", 0.0, 3, 10.0, seq=0),
        Job("b", 0.0, 2, 20.0, seq=1),
        Job("c", 5.0, 4, 10.0, seq=2),
    ]
    eng = Engine(c, jobs, create_scheduler("fifo", {}), get_placement("first_fit"))
    res = eng.run()
    tl = stranded_timeline(c, res.records, typical=4, times=[1.0, 6.0, 12.0, 30.0])
    # t=1: a on 0-2, b on 3,4 -> node 0 free 0, node 1 free 3 (partly used, < 4) -> 3
    assert tl.stranded["node"].tolist()[0] == 3
    # t=6: c takes 5-8 -> node 1 full, node 2 has 3 free -> 3
    assert tl.stranded["node"].tolist()[1] == 3
    assert tl.allocation.tolist()[0] == pytest.approx(5 / 16)
    assert tl.free.tolist()[-1] == 16
    avg = tl.time_average(1.0, 30.0)
    assert set(avg) == {"node", "rack", "pod", "spine"}
    # t=12: a is done; node 0 and node 2 each have 3 free of 4 -> 6; t=30: all free
    assert tl.stranded["node"].tolist() == [3, 3, 6, 0]
    assert avg["node"] == pytest.approx((3 * 5 + 3 * 6 + 6 * 18) / 29)
