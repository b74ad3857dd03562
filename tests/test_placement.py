"""Placement policies on hand-built occupancy states."""

from __future__ import annotations

from clustersim.schedulers.placement import first_fit, pack, spread
from clustersim.state import ClusterState
from clustersim.topology import Cluster, Level
from clustersim.workload.job import Job


def state_with(used: list[list[int]]) -> ClusterState:
    """4 nodes x 4 devices; ``used[n]`` = local device indexes taken on node n."""
    c = Cluster.uniform(4, 4, "V100")
    s = ClusterState(c)
    for n, locs in enumerate(used):
        if locs:
            s.allocate([n * 4 + i for i in locs])
    return s


def job(k: int, milli: int = 1000) -> Job:
    return Job("x", 0, k, 1, milli)


def test_first_fit_walks_nodes_in_order() -> None:
    s = state_with([[0, 1, 2], [], [0], []])
    assert first_fit(job(3), s) == (3, 4, 5)


def test_pack_best_fit_single_node() -> None:
    s = state_with([[0, 1, 2], [], [0], []])  # free: 1, 4, 3, 4
    assert pack(job(3), s) == (9, 10, 11)  # node 2 (3 free) is the tightest fit
    assert pack(job(1), s) == (3,)
    assert pack(job(4), s) == (4, 5, 6, 7)


def test_pack_multi_node_fewest_nodes() -> None:
    s = state_with([[0, 1, 2], [], [0], []])  # free 1,4,3,4 -> 6 = node1 whole + 2 of node2(3)
    got = pack(job(6), s)
    assert got is not None and sorted(got) == [4, 5, 6, 7, 9, 10]
    assert pack(job(13), s) is None
    assert s.all.free == [1, 4, 3, 4]  # temporary hiding undone


def test_spread_one_per_node() -> None:
    s = state_with([[0, 1, 2], [], [0], []])
    got = spread(job(3), s)
    assert got == (4, 12, 9)  # nodes 1 and 3 (4 free), then node 2 (3 free)
    assert spread(job(13), s) is None
    assert spread(job(12), s) is not None and len(set(spread(job(12), s) or ())) == 12
    assert s.all.free == [1, 4, 3, 4]


def test_shared_best_fit_on_share() -> None:
    s = state_with([[], [], [], []])
    s.allocate([0], 700)  # device 0: 300 free
    s.allocate([5], 400)  # device 5: 600 free
    assert first_fit(job(1, 250), s) == (0,)
    assert first_fit(job(1, 500), s) == (5,)
    assert first_fit(job(1, 700), s) == (1,)  # no partial fits: first fully free device


def hetero_state() -> ClusterState:
    c = Cluster(
        "h",
        [4, 4, 2],
        ["H100", "A100", "T4"],
        [Level("node", 1, 1e11, 1e-6), Level("fabric", 3, 1e10, 1e-6)],
    )
    return ClusterState(c)


def test_alternative_device_types() -> None:
    s = hetero_state()
    j = Job("x", 0, 2, 1, device_type="A100|T4")
    assert first_fit(j, s) == (4, 5)
    s.allocate([4, 5, 6, 7])
    assert first_fit(j, s) == (8, 9)  # A100 node full: T4 node
    assert first_fit(Job("y", 0, 3, 1, device_type="A100|T4"), s) is None
    assert first_fit(Job("z", 0, 1, 1, device_type="B200|V100"), s) is None


def test_shared_jobs_reuse_partial_devices_on_mixed_clusters() -> None:
    s = hetero_state()
    s.allocate([9], 600)  # a T4 shared at 600/1000
    assert first_fit(Job("a", 0, 1, 1, 300), s) == (9,)  # untyped share finds it
    assert first_fit(Job("b", 0, 1, 1, 300, device_type="T4"), s) == (9,)
    assert first_fit(Job("c", 0, 1, 1, 300, device_type="A100|T4"), s) == (9,)
    s.release([9], 600)
    assert first_fit(Job("d", 0, 1, 1, 300, device_type="A100|T4"), s) == (4,)
