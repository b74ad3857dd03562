"""GPU-sharing placements (FGD and baselines) in the event-driven engine, and run fragmentation."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.api import simulate, write_results
from clustersim.config import Scenario
from clustersim.engine import Engine, Outage
from clustersim.errors import ConfigError, UnknownNameError
from clustersim.fragmentation import (
    POLICIES,
    GpuShareState,
    PodRequest,
    TypicalMix,
    fragmentation_timeline,
    gpu_only_mix,
    node_fragment,
    run_fragmentation,
)
from clustersim.schedulers import share_placement as sp
from clustersim.schedulers.placement import PLACEMENTS, Placement, get_placement
from clustersim.schedulers.registry import create_scheduler
from clustersim.state import ClusterState
from clustersim.topology import Cluster
from clustersim.workload.job import Job

REPO = Path(__file__).resolve().parents[1]
OPENB = REPO.parent / "shared" / "traces" / "alibaba-gpu-2023-openb"


def het() -> Cluster:
    """T4 nodes of 2, 2, 1 GPUs (nodes 0-2) and V100 nodes of 4, 4, 8 GPUs (nodes 3-5)."""
    return Cluster.from_dict(
        {
            "name": "het",
            "nodes": [
                {"count": 2, "gpus": 2, "device": "T4"},
                {"count": 1, "gpus": 1, "device": "T4"},
                {"count": 2, "gpus": 4, "device": "V100"},
                {"count": 1, "gpus": 8, "device": "V100"},
            ],
            "levels": [{"name": "fabric", "nodes": 6, "bandwidth": 12.5e9}],
        }
    )


def mix1(milli: int) -> TypicalMix:
    """A mix of one shape: a single GPU share of ``milli``, any model."""
    return gpu_only_mix([1], [milli])


def reference(cluster: Cluster, live: list[tuple[tuple[int, ...], int]], mix: Any) -> GpuShareState:
    """A GpuShareState built from scratch with fragmentation.py's own ``allocate``."""
    n = cluster.num_nodes
    z = np.zeros(n, dtype=np.int64)
    ref = GpuShareState(
        [f"n{i:03d}" for i in range(n)], z, z, cluster.node_size, cluster.node_type, mix
    )
    for devs, milli in live:
        node = int(cluster.node_of[devs[0]])
        f = cluster.node_first[node]
        ref.allocate(node, [d - f for d in devs], PodRequest(0, 0, len(devs), milli))
    return ref


def devices_of(cluster: Cluster, got: tuple[int, tuple[int, ...]] | None) -> tuple[int, ...] | None:
    if got is None:
        return None
    node, gpus = got
    return tuple(cluster.node_first[node] + g for g in gpus)


# --------------------------------------------------------------------------- registry


def test_registered_names() -> None:
    assert set(sp.REGISTERED) <= set(PLACEMENTS)
    for name in sp.REGISTERED:
        assert get_placement(name) is sp.SHARE_PLACEMENTS[name]
    assert set(sp.REGISTERED.values()) == set(POLICIES)
    with pytest.raises(UnknownNameError):
        sp.make_share_placement("nope")
    with pytest.raises(UnknownNameError):
        sp.make_share_placement("fgd", tie_break="coin")


# --------------------------------------------------------------------------- hand-built


def test_hand_built_fgd_fills_the_fragment() -> None:
    """Devices: T4 nodes 0, 1 (0-1, 2-3) and 2 (4); V100 nodes 3, 4 (5-8, 9-12) and 5 (13-20).

    Mix = 500-milli shares. Node 4 GPU 1 (device 10) has 400 free, a fragment (< 500): a
    400-milli pod there removes it (score int(sigmoid(0.4) * 100) = 59); anywhere else it
    leaves >= 600 free and changes no fragment (score 50). FGD must pick device 10 although
    lower node ids tie for the rest."""
    c = het()
    s = ClusterState(c)
    fgd = sp.make_fgd_placement(mix1(500))
    s.allocate([10], 600)
    assert fgd(Job("a", 0, 1, 1, 400), s) == (10,)
    # a whole V100: every V100 node scores 50 (no fragment change), lowest node id wins
    assert fgd(Job("b", 0, 1, 1, 1000, "V100"), s) == (5,)
    # a 300 T4 share leaves 700 (>= 500) anywhere: tie, lowest T4 node
    assert fgd(Job("c", 0, 1, 1, 300, "T4"), s) == (0,)
    # bestfit: least leftover free GPU -> the 1-GPU T4 node 2 (raw 95 vs 89, normalised 100)
    assert get_placement("share_bestfit")(Job("d", 0, 1, 1, 300, "T4"), s) == (4,)


@pytest.mark.parametrize("name", list(sp.REGISTERED))
def test_hand_built_matches_choose(name: str) -> None:
    c = het()
    s = ClusterState(c)
    live: list[tuple[tuple[int, ...], int]] = []
    for devs, milli in [((9,), 600), ((0,), 250), ((14, 15), 1000), ((5,), 700)]:
        s.allocate(devs, milli)
        live.append((devs, milli))
    before = reference(c, live, None)
    mix = gpu_only_mix([1, 1, 2, 1], [250, 600, 1000, 700])
    place = sp.make_share_placement(sp.REGISTERED[name], mix=mix, seed=7)
    rng = np.random.default_rng(7)
    for k, (n, m, t) in enumerate(
        [(1, 300, None), (1, 1000, "V100"), (2, 1000, None), (1, 50, "T4")]
    ):
        job = Job(f"j{k}", 0, n, 1, m, t)
        ref = reference(c, live, mix if name == "fgd" else None)
        ref.tags -= before.tags  # documented: a mirror built on a busy state counts no classes
        pod = PodRequest(0, 0, n, m, t or "")
        want = devices_of(c, POLICIES[sp.REGISTERED[name]](ref, pod, rng))
        got = place(job, s)
        assert got == want
        assert got is not None
        s.allocate(got, m)
        live.append((got, m))


def test_hand_built_bestfit_and_packing() -> None:
    c = het()
    s = ClusterState(c)
    s.allocate([1], 700)  # node 0: GPU 1 has 300 free
    s.allocate([4], 1000)  # node 2 (single T4) full
    # bestfit on T4 nodes 0, 1: node 0 has 1300 free, node 1 has 2000 -> node 0; GPU "best":
    # the least free share that fits a 200 pod = GPU 1 (300 free) -> device 1
    assert get_placement("share_bestfit")(Job("a", 0, 1, 1, 200, "T4"), s) == (1,)
    # gpupacking: shared GPU first (100 - (300 * 100 // 1000) // 10 = 97 beats 33 and 50)
    assert get_placement("gpupacking")(Job("b", 0, 1, 1, 200, "T4"), s) == (1,)
    # gpuclustering: node 0 hosts only share pods (+75) -> device 1 again
    assert get_placement("gpuclustering")(Job("c", 0, 1, 1, 200, "T4"), s) == (1,)


# --------------------------------------------------------------------------- hypothesis

SHAPES = [(1, 100), (1, 250), (1, 500), (1, 700), (1, 1000), (2, 1000), (4, 1000), (8, 1000)]
MAX_OF = {None: 8, "V100": 8, "T4": 2, "T4|V100": 8, "H100|T4": 2}
TYPES = list(MAX_OF)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(list(sp.REGISTERED)),
    ops=st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from(SHAPES),
            st.sampled_from(TYPES),
            st.integers(0, 10_000),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_same_choice_as_fragmentation_choose(
    name: str, ops: list[tuple[bool, tuple[int, int], str | None, int]]
) -> None:
    """The registered policy equals fragmentation.py's choose() on a from-scratch state,
    and its incrementally kept mirror equals that state, after any allocate/release mix."""
    c = het()
    s = ClusterState(c)
    place = get_placement(name)
    rng = np.random.default_rng(sp.DEFAULT_SEED)
    live: list[tuple[tuple[int, ...], int]] = []
    seen: list[Job] = []
    for i, (release, (n, m), dtype, pick) in enumerate(ops):
        if release and live:
            devs, milli = live.pop(pick % len(live))
            s.release(devs, milli)
            continue
        if n > MAX_OF[dtype]:
            continue
        job = Job(f"j{i}", 0, n, 1, m, dtype)
        seen.append(job)
        mix = None
        if name == "fgd":  # lazy mix: the jobs seen, rebuilt at powers of two
            k = 1 << (len(seen).bit_length() - 1)
            mix = sp.mix_from_jobs(seen[:k])
        ref = reference(c, live, mix)
        pod = PodRequest(0, 0, n, m, dtype or "")
        want = devices_of(c, POLICIES[sp.REGISTERED[name]](ref, pod, rng))
        got = place(job, s)
        assert got == want
        mirror = sp.mirror_of(s, place)
        assert mirror is not None
        mirror.sync(s)
        assert (mirror.share.gpu_free == ref.gpu_free).all()
        assert (mirror.share.tags == ref.tags).all()
        if mix is not None:
            np.testing.assert_allclose(mirror.share.frag, ref.frag)
            np.testing.assert_allclose(mirror.share.frag, node_fragment(ref))
        if got is not None:
            s.allocate(got, m)
            live.append((got, m))


def test_lazy_mix_schedule() -> None:
    c = het()
    s = ClusterState(c)
    fgd = get_placement("fgd")
    jobs = [Job(f"j{i}", 0, 1, 1, m) for i, m in enumerate([100, 200, 200, 500, 700])]
    for k, j in enumerate(jobs, start=1):
        fgd(j, s)
        fgd(j, s)  # the same job again is not counted twice
        mirror = sp.mirror_of(s, fgd)
        assert mirror is not None and mirror.share.mix is not None
        expect = sp.mix_from_jobs(jobs[: 1 << (k.bit_length() - 1)])
        assert list(mirror.share.mix.gpu_milli) == list(expect.gpu_milli)
        np.testing.assert_allclose(mirror.share.mix.freq, expect.freq)
        assert mirror.share.mix.cpu_milli.sum() == 0


def test_down_devices_and_fallback() -> None:
    c = het()
    s = ClusterState(c)
    place = get_placement("fgd")
    place(Job("w", 0, 1, 1, 500), s)  # build the mirror
    s.set_down(range(5, 13))  # both 4-GPU V100 nodes
    assert place(Job("a", 0, 4, 1, 1000, "V100"), s) == (13, 14, 15, 16)
    assert place(Job("a2", 0, 1, 1, 500, "V100"), s) == (13,)
    s.set_up(range(5, 13))
    assert place(Job("b", 0, 4, 1, 1000, "V100"), s) == (5, 6, 7, 8)
    # 12 V100 GPUs never fit one node: the registered ``pack`` places it across nodes
    big = Job("big", 0, 12, 1, 1000, "V100")
    assert place(big, s) == PLACEMENTS["pack"](big, s)
    assert place(Job("x", 0, 1, 1, 1000, "H100"), s) is None  # no such device here
    # alternatives: "H100|T4" may only use T4 nodes (largest 2 GPUs: 3 falls back to pack)
    assert place(Job("y", 0, 2, 1, 1000, "H100|T4"), s) == (0, 1)
    three = Job("z", 0, 3, 1, 1000, "H100|T4")
    assert place(three, s) == PLACEMENTS["pack"](three, s) is not None


def test_mirror_dropped_with_its_state() -> None:
    s = ClusterState(het())
    get_placement("random_fit")(Job("a", 0, 1, 1, 500), s)
    assert s in sp._MIRRORS
    n = len(sp._MIRRORS)
    del s
    gc.collect()
    assert len(sp._MIRRORS) == n - 1


# --------------------------------------------------------------------------- engine


def random_jobs(seed: int, n: int = 80) -> list[Job]:
    rng = np.random.default_rng(seed)
    out: list[Job] = []
    t = 0.0
    for i in range(n):
        t += float(rng.exponential(2.0))
        k, m = SHAPES[int(rng.integers(len(SHAPES)))]
        dtype = TYPES[int(rng.integers(len(TYPES)))]
        if k > MAX_OF[dtype]:
            dtype = None
        if i % 25 == 24:
            k, m, dtype = 12, 1000, "V100"  # needs the ``pack`` fallback (two nodes or more)
        out.append(Job(f"j{i}", t, k, float(rng.uniform(1, 40)), m, dtype, i))
    return out


@pytest.mark.parametrize("name", list(sp.REGISTERED))
def test_engine_runs_with_departures_and_failures(name: str) -> None:
    c = het()
    jobs = random_jobs(3)
    e = Engine(
        c,
        jobs,
        create_scheduler("fifo_backfill", {}),
        get_placement(name),
        outages=[Outage(30.0, (3, 4), 20.0)],
    )
    r = e.run()
    assert r.stopped_by == "drained"
    assert all(rec.state.value == "done" for rec in r.records)
    assert any(rec.job.gpu_milli < 1000 and rec.job.num_gpus == 1 for rec in r.records)
    mirror = sp.mirror_of(e.state, get_placement(name))
    assert mirror is not None
    mirror.sync(e.state)
    share = mirror.share
    assert (share.gpu_free[share.gpu_exists] == 1000).all()
    assert (share.tags == 0).all()
    # no device ever over-allocated: the engine validates, and the segments agree
    seg = r.segments
    milli = {j.id: j.gpu_milli for j in jobs}
    ts = np.unique(np.concatenate([[x[1] for x in seg], [x[2] for x in seg]]))
    tl = fragmentation_timeline(
        c,
        [x[1] for x in seg],
        [x[2] for x in seg],
        [x[3] for x in seg],
        [milli[x[0]] for x in seg],
        sp.mix_from_jobs(jobs),
        ts,
    )
    assert (tl.idle_milli >= 0).all() and tl.idle_milli[-1] == tl.total_milli


def test_engine_runs_are_deterministic() -> None:
    c = het()
    jobs = random_jobs(5)
    runs = []
    for _ in range(2):
        for place in (
            get_placement("random_fit"),
            sp.make_fgd_placement(tie_break="random", seed=3),
        ):
            r = Engine(c, jobs, create_scheduler("fifo_backfill", {}), place).run()
            runs.append(r.segments)
    assert runs[0] == runs[2] and runs[1] == runs[3]
    assert runs[0] != runs[1]


# --------------------------------------------------------------------------- timeline


def two_by_two() -> Cluster:
    return Cluster.uniform(2, 2, "V100")


def test_fragmentation_timeline_hand_case() -> None:
    """Mix = 500-milli shares. Samples (state after the events at t):

    t=0:  dev0 600 used -> node 0 free [400, 1000]: hosts 500, fragment = 400 (GPU < 500);
          node 1 empty: 0.  F = 400, idle = 3400.
    t=5:  + dev1 1000, dev2 300 -> node 0 [400, 0] cannot host 500: F = 400 (all free);
          node 1 [700, 1000]: 0.  F = 400, idle = 2100.
    t=10: dev0 ended at 10, dev2 at 8 -> node 0 [1000, 0]: F = 0; idle = 3000.
    t=20: everything ended: F = 0, idle = 4000.
    """
    tl = fragmentation_timeline(
        two_by_two(),
        [0, 5, 2],
        [10, 15, 8],
        [[0], [1], [2]],
        [600, 1000, 300],
        mix1(500),
        [0, 5, 10, 20],
    )
    np.testing.assert_allclose(tl.fragment_milli, [400, 400, 0, 0])
    assert tl.idle_milli.tolist() == [3400, 2100, 3000, 4000]
    assert tl.total_milli == 4000
    np.testing.assert_allclose(tl.ratio, [400 / 3400, 400 / 2100, 0, 0])
    np.testing.assert_allclose(tl.unallocated_share, [0.85, 0.525, 0.75, 1.0])
    # step average over [0, 20]: ratio 400/3400 for 5 s, 400/2100 for 5 s, 0 for 10 s
    assert tl.time_average(tl.ratio) == pytest.approx((400 / 3400 * 5 + 400 / 2100 * 5) / 20)


def test_fragmentation_timeline_errors() -> None:
    c = two_by_two()
    with pytest.raises(ConfigError, match="holds 1200"):
        fragmentation_timeline(c, [0, 1], [5, 5], [[0], [0]], [600, 600], mix1(500), [2])
    with pytest.raises(ConfigError, match="does not exist"):
        fragmentation_timeline(c, [0], [5], [[9]], [600], mix1(500), [2])
    with pytest.raises(ConfigError, match="gpu_only_mix"):
        mix = TypicalMix.__new__(TypicalMix)
        object.__setattr__(mix, "cpu_milli", np.array([100]))
        fragmentation_timeline(c, [0], [5], [[0]], [600], mix, [2])
    with pytest.raises(ConfigError, match="one of each"):
        fragmentation_timeline(c, [0], [5, 6], [[0]], [600], mix1(500), [2])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fragmentation_timeline_matches_node_fragment(seed: int) -> None:
    """Vectorised samples equal node_fragment() of a state rebuilt at each sample time."""
    c = het()
    rng = np.random.default_rng(seed)
    s = ClusterState(c)
    segs: list[tuple[float, float, tuple[int, ...], int]] = []
    live: list[tuple[float, tuple[int, ...], int]] = []
    t = 0.0
    for i in range(30):
        t += float(rng.integers(1, 4))
        if live and rng.random() < 0.4:
            t0, devs, m = live.pop(int(rng.integers(len(live))))
            s.release(devs, m)
            segs.append((t0, t, devs, m))
            continue
        k, m = SHAPES[int(rng.integers(5))]  # single-GPU shapes keep it simple
        got = get_placement("first_fit")(Job(f"j{i}", 0, k, 1, m), s)
        if got is not None:
            s.allocate(got, m)
            live.append((t, got, m))
    segs += [(t0, math.nan, devs, m) for t0, devs, m in live]
    mix = gpu_only_mix([1, 1, 2], [300, 500, 1000])
    times = np.arange(0.0, t + 2.0, 1.5)
    tl = fragmentation_timeline(
        c,
        [x[0] for x in segs],
        [x[1] for x in segs],
        [x[2] for x in segs],
        [x[3] for x in segs],
        mix,
        times,
    )
    for i, ti in enumerate(times):
        active = [
            (x[2], x[3]) for x in segs if x[0] <= ti < (math.inf if math.isnan(x[1]) else x[1])
        ]
        ref = reference(c, [(d, m) for d, m in active], mix)
        assert tl.fragment_milli[i] == pytest.approx(float(node_fragment(ref).sum()))
        assert tl.idle_milli[i] == ref.idle_gpu_milli


def test_run_fragmentation_from_a_results_folder(tmp_path: Path) -> None:
    """Scenario wiring: ``scheduler.placement: fgd`` through simulate(); then the folder."""
    trace = tmp_path / "jobs.csv"
    rows = ["job_id,submit_time,num_gpus,duration,gpu_milli"]
    rng = np.random.default_rng(1)
    for i in range(40):
        k, m = SHAPES[int(rng.integers(6))]
        rows.append(f"j{i},{i * 0.5},{k},{float(rng.uniform(2, 20)):.3f},{m}")
    trace.write_text("\n".join(rows) + "\n")
    sc = Scenario.model_validate(
        {
            "name": "fgd-engine",
            "cluster": {"nodes": 3, "gpus_per_node": 4, "device": "V100"},
            "workload": {"format": "csv", "trace": str(trace)},
            "scheduler": {"name": "fifo_backfill", "placement": "fgd"},
        }
    )
    res = simulate(sc)
    assert res.summary["placement"] == "fgd"
    assert res.summary["jobs_completed"] == 40
    out = write_results(res, tmp_path / "run")
    tl = run_fragmentation(out, res.cluster, samples=50)
    assert tl.times.size == 50
    seg = res.engine.segments
    milli = dict(zip(res.jobs["job_id"], res.jobs["gpu_milli"], strict=True))
    direct = fragmentation_timeline(
        res.cluster,
        [x[1] for x in seg],
        [x[2] for x in seg],
        [x[3] for x in seg],
        [milli[x[0]] for x in seg],
        gpu_only_mix(res.jobs["num_gpus"], res.jobs["gpu_milli"]),
        tl.times,
    )
    np.testing.assert_allclose(tl.fragment_milli, direct.fragment_milli)
    assert (tl.idle_milli == direct.idle_milli).all()
    assert tl.idle_milli.min() < tl.total_milli  # something ran
    with pytest.raises(ConfigError, match="missing"):
        run_fragmentation(tmp_path, res.cluster)


# --------------------------------------------------------------------------- openb replay


def openb_quarter() -> Cluster:
    """The openb topology at quarter scale: every node group's count divided by 4, rounded
    up (308 nodes, 1,575 GPUs, the same device types and node sizes)."""
    d = yaml.safe_load((REPO / "topologies" / "alibaba-openb.yaml").read_text())
    for g in d["nodes"]:
        g["count"] = math.ceil(g["count"] / 4)
    d["levels"][0]["nodes"] = sum(g["count"] for g in d["nodes"])
    return Cluster.from_dict(d)


def openb_burst(cluster: Cluster, seed: int, target: float = 1.3, gap: float = 0.001) -> list[Job]:
    """GPU jobs of openb_pod_list_default.csv (load_openb; sorted by id) drawn uniformly with
    replacement until the next one would push GPU demand over ``target`` x capacity; job i
    arrives at ``i * gap`` s and keeps its trace run time."""
    from clustersim.workload.loaders import load_openb

    path = OPENB / "openb_pod_list_default.csv"
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/traces beside the repo); not present here")
    base, _ = load_openb(path)
    base.sort(key=lambda j: j.id)
    rng = np.random.default_rng(seed)
    out: list[Job] = []
    demand = 0.0
    while True:
        j = base[int(rng.integers(len(base)))]
        g = j.gpu_demand
        if demand + g > target * cluster.num_devices:
            return out
        demand += g
        i = len(out)
        out.append(Job(f"p{i}", i * gap, j.num_gpus, j.duration, j.gpu_milli, j.device_type, i))


def burst_outcome(cluster: Cluster, jobs: list[Job], place: Placement) -> dict[str, float]:
    """Fragmentation ratio when 80 % of capacity has arrived, unallocated share at 100 %."""
    r = Engine(cluster, jobs, create_scheduler("fifo_backfill", {}), place).run()
    assert r.stopped_by == "drained"
    assert all(rec.state.value == "done" for rec in r.records)
    arrived = np.cumsum([j.gpu_demand for j in jobs]) / cluster.num_devices
    times = [jobs[int(np.searchsorted(arrived, f))].submit_time for f in (0.8, 1.0)]
    seg = r.segments
    milli = {j.id: j.gpu_milli for j in jobs}
    tl = fragmentation_timeline(
        cluster,
        [x[1] for x in seg],
        [x[2] for x in seg],
        [x[3] for x in seg],
        [milli[x[0]] for x in seg],
        sp.mix_from_jobs(jobs),
        times,
    )
    return {"ratio_80": float(tl.ratio[0]), "unallocated_100": float(tl.unallocated_share[1])}


def test_openb_burst_fgd_beats_random_fit() -> None:
    """Measured on quarter-scale openb, seeds 0/1/2: fragmentation ratio at 80 % arrived
    0.184/0.168/0.168 with fgd vs 0.462/0.387/0.413 with random_fit; unallocated GPU share
    at 100 % arrived 4.41/3.98/4.12 % vs 8.71/7.89/9.39 %. Seed 0 is asserted with margin."""
    c = openb_quarter()
    jobs = openb_burst(c, seed=0)
    fgd = burst_outcome(c, jobs, get_placement("fgd"))
    rnd = burst_outcome(c, jobs, get_placement("random_fit"))
    assert fgd["ratio_80"] <= 0.5 * rnd["ratio_80"]
    assert fgd["unallocated_100"] <= rnd["unallocated_100"] - 0.02
