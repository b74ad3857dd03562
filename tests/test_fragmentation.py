"""Tests of the openb loaders, the FGD fragmentation measure and the six placement policies."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.errors import SchedulerError, TraceError, UnknownNameError
from clustersim.fragmentation import (
    MILLI,
    POLICIES,
    GpuShareState,
    PodRequest,
    TypicalMix,
    bestfit,
    cluster_fragmentation,
    count_stranded_gpus,
    dotproduct,
    fgd,
    fgd_scores,
    get_policy,
    gpuclustering,
    gpupacking,
    node_fragment,
    random,
    replay,
    stranded_gpu_milli,
    typical_job,
    typical_mix,
)
from clustersim.workload.openb import load_openb_nodes, load_openb_pods

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
OPENB = SHARED / "alibaba-gpu-2023-openb"
REPO = Path(__file__).resolve().parents[1]


def mix_of(*shapes: tuple[int, int, int, float], spec: tuple[str, ...] = ()) -> TypicalMix:
    """A mix from (cpu, num_gpu, gpu_milli, freq) tuples."""
    return TypicalMix(
        cpu_milli=np.asarray([s[0] for s in shapes], dtype=np.int64),
        num_gpu=np.asarray([s[1] for s in shapes], dtype=np.int64),
        gpu_milli=np.asarray([s[2] for s in shapes], dtype=np.int64),
        gpu_spec=spec or ("",) * len(shapes),
        freq=np.asarray([s[3] for s in shapes], dtype=np.float64),
        coverage=1.0,
    )


def cluster(
    gpus: list[int],
    cpu: list[int] | None = None,
    mix: TypicalMix | None = None,
    names: list[str] | None = None,
    models: list[str] | None = None,
    mem: list[int] | None = None,
) -> GpuShareState:
    n = len(gpus)
    return GpuShareState(
        names or [f"n{i}" for i in range(n)],
        cpu or [64_000] * n,
        mem or [1_000_000] * n,
        gpus,
        models or ["T4"] * n,
        mix,
    )


def share(milli: int, cpu: int = 1000) -> PodRequest:
    return PodRequest(cpu, 0, 1, milli)


def whole(k: int, cpu: int = 1000) -> PodRequest:
    return PodRequest(cpu, 0, k, MILLI)


RNG = np.random.default_rng(0)


def node_of(choice: tuple[int, tuple[int, ...]] | None) -> int:
    assert choice is not None
    return choice[0]


# --------------------------------------------------------------------------- loaders


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)


def test_load_pods_fields_and_nan(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "pods.csv",
        POD_HEADER
        + "a,4000,1024,1,250,V100M16|V100M32,LS,Running,10,20,11\n"
        + "b,8000,2048,0,0,,BE,Pending,12,30,\n",
    )
    pods = load_openb_pods(p)
    assert pods.name == ["a", "b"]
    assert pods.cpu_milli.tolist() == [4000, 8000]
    assert pods.memory_mib.tolist() == [1024, 2048]
    assert pods.num_gpu.tolist() == [1, 0]
    assert pods.gpu_milli.tolist() == [250, 0]
    assert pods.gpu_spec == ["V100M16|V100M32", ""]
    assert pods.qos == ["LS", "BE"]
    assert pods.creation_time.tolist() == [10.0, 12.0]
    assert pods.scheduled_time[0] == 11.0 and math.isnan(pods.scheduled_time[1])
    assert pods.total_gpu_milli.tolist() == [250, 0]


def test_load_pods_without_optional_columns(tmp_path: Path) -> None:
    p = write(tmp_path, "m.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\nx,1000,1,8,1000\n")
    pods = load_openb_pods(p)
    assert pods.gpu_spec == [""] and pods.qos == [""]
    assert math.isnan(pods.creation_time[0]) and pods.num_gpu[0] == 8


@pytest.mark.parametrize(
    ("row", "line", "field"),
    [
        ("b,abc,1,1,500,,LS,R,1,2,1", 3, "cpu_milli"),
        ("b,1000,1,0,500,,LS,R,1,2,1", 3, "gpu_milli"),
        ("b,1000,1,1,0,,LS,R,1,2,1", 3, "num_gpu"),
        ("b,1000,1,2,500,,LS,R,1,2,1", 3, "gpu_milli"),
        ("b,1000,1,1,1500,,LS,R,1,2,1", 3, "gpu_milli"),
        ("b,1000,-5,1,500,,LS,R,1,2,1", 3, "memory_mib"),
        ("b,1000,1,1,500,,LS,R,soon,2,1", 3, "creation_time"),
        ("a,1000,1,1,500,,LS,R,1,2,1", 3, "name"),
    ],
)
def test_load_pods_errors_name_file_line_field(
    tmp_path: Path, row: str, line: int, field: str
) -> None:
    p = write(tmp_path, "bad.csv", POD_HEADER + "a,1000,1,1,500,,LS,R,1,2,1\n" + row + "\n")
    with pytest.raises(TraceError) as exc:
        load_openb_pods(p)
    err = exc.value
    assert (err.path, err.line, err.field) == (str(p), line, field)
    assert f"{p}:{line}: field '{field}'" in str(err)


def test_load_missing_column_and_file(tmp_path: Path) -> None:
    p = write(tmp_path, "h.csv", "name,cpu_milli,memory_mib,num_gpu\na,1,1,0\n")
    with pytest.raises(TraceError) as exc:
        load_openb_pods(p)
    assert (exc.value.line, exc.value.field) == (1, "gpu_milli")
    with pytest.raises(TraceError, match="file not found"):
        load_openb_pods(tmp_path / "nope.csv")


def test_load_nodes_and_errors(tmp_path: Path) -> None:
    good = write(
        tmp_path, "n.csv", "sn,cpu_milli,memory_mib,gpu,model\nx,32000,1024,0,\ny,96000,2048,8,G2\n"
    )
    nodes = load_openb_nodes(good)
    assert nodes.sn == ["x", "y"] and nodes.gpu.tolist() == [0, 8] and nodes.model == ["", "G2"]
    bad = write(tmp_path, "b.csv", "sn,cpu_milli,memory_mib,gpu,model\nx,32000,1024,2,\n")
    with pytest.raises(TraceError) as exc:
        load_openb_nodes(bad)
    assert (exc.value.line, exc.value.field) == (2, "model")
    bad2 = write(tmp_path, "c.csv", "sn,cpu_milli,memory_mib,gpu,model\nx,1.5,1024,2,T4\n")
    with pytest.raises(TraceError) as exc:
        load_openb_nodes(bad2)
    assert (exc.value.line, exc.value.field) == (2, "cpu_milli")


@pytest.mark.shared
def test_real_openb_files_load() -> None:
    if not OPENB.exists():
        pytest.skip(f"openb trace not found at {OPENB}")
    nodes = load_openb_nodes(OPENB / "openb_node_list_gpu_node.csv")
    assert len(nodes) == 1213 and int(nodes.gpu.sum()) == 6212
    pods = load_openb_pods(OPENB / "openb_pod_list_default.csv")
    assert len(pods) == 8152
    mix = TypicalMix.from_pods(pods)
    assert len(mix) == 35 and 0.95 <= mix.coverage < 0.96  # "35 shapes covering ~95 %"
    for f in sorted(OPENB.glob("openb_pod_list_*.csv")):
        assert len(load_openb_pods(f)) > 0


# --------------------------------------------------------------------------- typical mix


def test_typical_mix_order_cutoff_and_renormalisation() -> None:
    # shapes (cpu, num_gpu, milli): A x4, B x3, C x2 (tie with D x2, C has more CPU), D x2, E x1
    cpu = [1000] * 4 + [2000] * 3 + [9000] * 2 + [500] * 2 + [0]
    ngpu = [1] * 4 + [0] * 3 + [1] * 2 + [1] * 2 + [1]
    milli = [500] * 4 + [0] * 3 + [1000] * 2 + [1000] * 2 + [300]
    mix = typical_mix(cpu, ngpu, milli, [""] * 12, threshold=0.7)
    # cumulative 4, 7, 9 >= 0.7 * 12 = 8.4 -> three shapes kept
    assert mix.cpu_milli.tolist() == [1000, 2000, 9000]
    assert mix.num_gpu.tolist() == [1, 0, 1]
    assert np.allclose(mix.freq, [4 / 9, 3 / 9, 2 / 9])
    assert mix.coverage == pytest.approx(9 / 12)
    full = typical_mix(cpu, ngpu, milli, [""] * 12, threshold=1.0)
    assert 100 in full.cpu_milli.tolist()  # zero CPU request counts as 100 m
    assert typical_job(mix) == PodRequest(1000, 0, 1, 500, "", "typical")


# --------------------------------------------------------------------------- measure


def test_fragment_quadrants_hand_computed() -> None:
    # one node, 2 GPUs with free [1000, 300] (after a 700-milli pod), CPU free 4000 of 8000
    mix = mix_of(
        (2000, 1, 500, 0.5),  # Q3: fits on GPU0; GPU1 (300 < 500) is fragment -> 300
        (8000, 1, 200, 0.25),  # Q4: lacks CPU -> all 1300 idle
        (1000, 0, 0, 0.25),  # CPU-only (fits): all 1300 idle
    )
    s = cluster([2], cpu=[8000], mix=mix)
    s.allocate(0, [1], PodRequest(4000, 0, 1, 700))
    assert s.gpu_free[0].tolist() == [1000, 300]
    expect = 0.5 * 300 + 0.25 * 1300 + 0.25 * 1300
    assert node_fragment(s)[0] == pytest.approx(expect)
    rep = cluster_fragmentation(s)
    assert rep.fragment_milli == pytest.approx(expect)
    assert rep.idle_milli == 1300 and rep.ratio == pytest.approx(expect / 1300)
    assert rep.unallocated_share == pytest.approx(1300 / 2000)


def test_fragment_q1_q2_and_no_access() -> None:
    mix = mix_of((1000, 2, 1000, 1.0))  # a 2-GPU whole task
    s = cluster([2, 2], cpu=[4000, 4000], mix=mix, models=["T4", "P100"])
    s.allocate(0, [0], PodRequest(500, 0, 1, 100))  # node0 GPUs [900, 1000]: lacks GPU (Q2)
    s.allocate(1, [], PodRequest(3500, 0, 0, 0))  # node1 CPU 500 < 1000: lacks CPU (Q4)
    f = node_fragment(s)
    assert f.tolist() == [1900.0, 2000.0]
    s.allocate(0, [], PodRequest(3500, 0, 0, 0))  # node0 now lacks both (Q1)
    assert node_fragment(s)[0] == 1900.0
    only_p100 = TypicalMix(
        np.asarray([1]), np.asarray([1]), np.asarray([100]), ("P100",), np.asarray([1.0]), 1.0
    )
    t = cluster([1, 1], mix=only_p100, models=["T4", "P100"])
    assert node_fragment(t).tolist() == [1000.0, 0.0]  # no access on the T4 node
    empty_ok = mix_of((1000, 1, 600, 1.0))
    u = cluster([3], mix=empty_ok)
    u.allocate(0, [1], share(500))  # [1000, 500, 1000] -> only the 500 GPU is fragment
    assert node_fragment(u)[0] == 500.0


def test_cached_fragment_matches_recomputation_and_requires_mix() -> None:
    mix = mix_of((1000, 1, 500, 0.6), (3000, 0, 0, 0.4))
    s = cluster([4, 2], mix=mix)
    s.allocate(0, [2], share(300))
    s.allocate(1, [0, 1], whole(2))
    assert np.allclose(s.frag, node_fragment(s))
    with pytest.raises(Exception, match="TypicalMix"):
        cluster_fragmentation(cluster([1]))


# --------------------------------------------------------------------------- stranded


def test_stranded_gpus_exact() -> None:
    s = cluster([8, 8, 2], cpu=[96_000, 96_000, 16_000])
    s.allocate(0, [0], share(500))  # node0 partly used, 7.5 GPUs free, hosts 1 GPU still
    s.allocate(1, [], PodRequest(90_000))  # node1: CPU nearly gone, 8 GPUs stranded
    job = PodRequest(12_000, 0, 1, 1000)
    assert stranded_gpu_milli(s, job).tolist() == [0, 8000, 0]
    assert count_stranded_gpus(s, job) == 8.0
    big = PodRequest(12_000, 0, 8, 1000)  # an 8-GPU job
    assert stranded_gpu_milli(s, big).tolist() == [7500, 8000, 0]  # node2 untouched: not counted
    assert stranded_gpu_milli(s, big, partly_used_only=False).tolist() == [7500, 8000, 2000]
    assert count_stranded_gpus(s, big, partly_used_only=False) == 17.5


# --------------------------------------------------------------------------- policies


def test_fgd_prefers_fragment_free_gpu_where_bestfit_packs() -> None:
    mix = mix_of((1000, 1, 500, 1.0))
    s = cluster([1, 1], mix=mix)
    s.allocate(0, [0], share(400))  # node0 GPU free 600
    pod = share(400)
    # node0: 600 -> 200 leaves no GPU for a 500 task: F 0 -> 200, int(sigmoid(-0.2)*100) = 45
    # node1: 1000 -> 600 still hosts it: F 0 -> 0, score 50
    cand, scores, gpus = fgd_scores(s, pod)
    assert cand.tolist() == [0, 1] and scores.tolist() == [45, 50] and gpus.tolist() == [0, 0]
    assert fgd(s, pod, RNG) == (1, (0,))
    assert bestfit(s, pod, RNG) == (0, (0,))


def test_fgd_vectorised_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    mix = mix_of((2000, 1, 300, 0.3), (4000, 1, 700, 0.3), (8000, 2, 1000, 0.2), (3000, 0, 0, 0.2))
    s = cluster([8, 4, 2, 1, 8], cpu=[96_000, 32_000, 16_000, 8000, 40_000], mix=mix)
    shapes = [share(250), share(500), share(800), whole(1, 6000), whole(2), PodRequest(7000)]
    for _ in range(60):
        pod = shapes[int(rng.integers(len(shapes)))]
        cand, scores, best = fgd_scores(s, pod)
        for k, n in enumerate(cand):
            before = node_fragment(s)[n]
            if pod.is_shared:
                per = []
                for g in range(int(s.gpu_count[n])):
                    if s.gpu_free[n, g] >= pod.gpu_milli:
                        t = s.copy()
                        t.allocate(int(n), [g], pod)
                        x = (before - node_fragment(t)[n]) / 1000
                        per.append((int(1 / (1 + math.exp(-x)) * 100), g))
                top = max(v for v, _ in per)
                assert scores[k] == top
                assert best[k] == min(g for v, g in per if v == top)
            else:
                t = s.copy()
                t.allocate(int(n), list(np.flatnonzero(t.gpu_free[n] == MILLI)[: pod.num_gpu]), pod)
                x = (before - node_fragment(t)[n]) / 1000
                assert scores[k] == int(1 / (1 + math.exp(-x)) * 100)
        choice = fgd(s, pod, rng)
        if choice is None:
            break
        s.allocate(choice[0], choice[1], pod)


def test_bestfit_normalisation_and_name_tie_break() -> None:
    s = cluster([2, 2], names=["n-b", "n-a"])
    # identical nodes -> equal scores -> lowest name ("n-a", index 1) wins
    assert bestfit(s, whole(1), RNG) == (1, (0,))
    s.allocate(0, [0], share(300))
    # node0 has less free GPU -> higher score; share pod takes the tightest GPU (700 free)
    assert bestfit(s, share(200), RNG) == (0, (0,))


def test_dotproduct_prefers_small_dot_product() -> None:
    s = cluster([2, 1], cpu=[64_000, 8000])
    # node0: (0.5, 0.25).(0.03125, 0.125)/2 -> 97; node1: (0.0625, 0.125)... -> 99
    assert dotproduct(s, whole(1, 4000), RNG) == (1, (0,))


def test_gpupacking_rules() -> None:
    s = cluster([8, 8, 2])
    s.allocate(1, [3], share(700))  # node1 GPU3 has 300 free
    assert gpupacking(s, share(200), RNG) == (1, (3,))  # case 1: 100 - 30 // 10 = 97
    assert gpupacking(s, whole(1), RNG) == (1, (0,))  # case 2 (49) beats empty nodes (25, 31)
    t = cluster([8, 2])
    assert gpupacking(t, whole(1), RNG) == (1, (0,))  # empty 2-GPU node 31 > empty 8-GPU 25


def test_gpuclustering_rules() -> None:
    s = cluster([2, 2, 2, 2])
    s.allocate(0, [0], share(300))  # node0: share only
    s.allocate(1, [0], whole(1))  # node1: 1-gpu only
    s.allocate(2, [0], share(300))
    s.allocate(2, [1], whole(1))  # node2: both classes
    # share pod: node0 = 25*(8000-1700)//8000 + 75 = 94 beats node2 (50+) and node3 (25+)
    assert gpuclustering(s, share(100), RNG) == (0, (0,))
    assert gpuclustering(s, whole(1), RNG) == (1, (1,))
    # CPU-only pod: every node scores 0 -> lowest name
    assert gpuclustering(s, PodRequest(1000), RNG) == (0, ())


def test_random_is_uniform_over_feasible_and_seeded() -> None:
    s = cluster([1, 1, 1, 1])
    s.allocate(2, [0], whole(1))  # node2 infeasible for GPU pods
    picks = [node_of(random(s, share(500), np.random.default_rng(i))) for i in range(300)]
    assert set(picks) == {0, 1, 3}
    assert min(picks.count(k) for k in (0, 1, 3)) > 60
    a = [random(s, share(500), np.random.default_rng(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_random_tie_break_and_none_when_nothing_fits() -> None:
    s = cluster([1, 1, 1], mix=mix_of((1000, 1, 500, 1.0)))
    seen = {node_of(bestfit(s, whole(1), np.random.default_rng(i), "random")) for i in range(40)}
    assert seen == {0, 1, 2}
    for name, policy in POLICIES.items():
        assert policy(s, whole(2), RNG) is None, name
    with pytest.raises(UnknownNameError):
        get_policy("worstfit")
    with pytest.raises(UnknownNameError):
        bestfit(s, whole(1), RNG, "coin")


def test_allocate_refuses_over_allocation() -> None:
    s = cluster([2], cpu=[4000], mem=[100])
    with pytest.raises(SchedulerError):
        s.allocate(0, [0], PodRequest(5000, 0, 1, 500))
    with pytest.raises(SchedulerError):
        s.allocate(0, [0], PodRequest(100, 200, 1, 500))
    s.allocate(0, [0], share(600))
    with pytest.raises(SchedulerError):
        s.allocate(0, [0], share(600))
    with pytest.raises(SchedulerError):
        s.allocate(0, [0, 0], whole(2))
    with pytest.raises(SchedulerError):
        s.allocate(0, [1], PodRequest(100, 0, 1, 500, "P100"))


# --------------------------------------------------------------------------- invariants

pod_st = st.one_of(
    st.builds(
        lambda c, m, g: PodRequest(c, m, 1, g),
        st.integers(0, 40_000),
        st.integers(0, 50_000),
        st.integers(1, 999),
    ),
    st.builds(
        lambda c, k: PodRequest(c, 0, k, 1000),
        st.integers(0, 40_000),
        st.sampled_from([1, 2, 4, 8]),
    ),
    st.builds(lambda c, m: PodRequest(c, m), st.integers(0, 60_000), st.integers(0, 50_000)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pods=st.lists(pod_st, min_size=1, max_size=40),
    policy=st.sampled_from(sorted(POLICIES)),
    tie=st.sampled_from(["name", "random"]),
    seed=st.integers(0, 2**16),
)
def test_invariants_never_overallocate(
    pods: list[PodRequest], policy: str, tie: str, seed: int
) -> None:
    mix = mix_of((4000, 1, 500, 0.5), (16_000, 1, 1000, 0.3), (8000, 0, 0, 0.2))
    s = cluster(
        [8, 4, 2, 1],
        cpu=[96_000, 32_000, 16_000, 8000],
        mem=[400_000, 100_000, 60_000, 30_000],
        mix=mix,
    )
    tr = replay(s, pods, policy, np.random.default_rng(seed), tie)
    placed = [p for p, ok in zip(pods, tr.placed, strict=True) if ok]
    assert (s.gpu_free >= 0).all() and (s.gpu_free <= MILLI).all()
    assert (s.gpu_free[~s.gpu_exists] == 0).all()
    assert (s.cpu_free >= 0).all() and (s.mem_free >= 0).all()
    assert int(s.cpu_free.sum()) + sum(p.cpu_milli for p in placed) == int(s.cpu_cap.sum())
    assert int(s.mem_free.sum()) + sum(p.memory_mib for p in placed) == int(s.mem_cap.sum())
    alloc = sum(p.total_gpu_milli for p in placed)
    assert s.allocated_gpu_milli == alloc == tr.allocated_milli[-1]
    assert s.idle_gpu_milli + alloc == s.total_gpu_milli
    assert tr.arrived_milli[-1] == sum(p.total_gpu_milli for p in pods)
    assert np.allclose(s.frag, node_fragment(s))
    assert tr.fragment_milli[-1] == pytest.approx(float(node_fragment(s).sum()), abs=1e-6)
    assert (tr.placed == (tr.node >= 0)).all()
    # a pod is dropped exactly when no node could host it (same seed -> same choices)
    s2 = cluster(
        [8, 4, 2, 1],
        cpu=[96_000, 32_000, 16_000, 8000],
        mem=[400_000, 100_000, 60_000, 30_000],
        mix=mix,
    )
    rng2 = np.random.default_rng(seed)
    for p, ok, n in zip(pods, tr.placed, tr.node, strict=True):
        feasible = bool(s2.feasible(p).any())
        choice = POLICIES[policy](s2, p, rng2, tie)
        assert feasible == ok == (choice is not None)
        if choice is not None:
            assert choice[0] == n and s2.feasible(p)[choice[0]]
            s2.allocate(choice[0], choice[1], p)


def test_replay_is_deterministic() -> None:
    mix = mix_of((4000, 1, 500, 0.7), (8000, 0, 0, 0.3))
    rng = np.random.default_rng(3)
    pods = [share(int(rng.integers(100, 1000))) for _ in range(50)] + [whole(2)] * 5
    runs = []
    for _ in range(2):
        s = cluster([8, 4, 2], mix=mix)
        runs.append(replay(s, pods, "random", np.random.default_rng(11)))
    assert (runs[0].node == runs[1].node).all()
    assert (runs[0].fragment_milli == runs[1].fragment_milli).all()


# --------------------------------------------------------------------------- experiment


@pytest.mark.shared
@pytest.mark.slow
def test_quick_experiment_fgd_lowest_unallocated(tmp_path: Path) -> None:
    if not OPENB.exists():
        pytest.skip(f"openb trace not found at {OPENB}")
    spec = importlib.util.spec_from_file_location(
        "fragmentation_openb", REPO / "experiments" / "fragmentation_openb.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    summary = mod.main(
        [
            "--out",
            str(tmp_path),
            "--seeds",
            "1",
            "--node-stride",
            "3",
            "--workers",
            "1",
            "--tie-break",
            "name",
        ]
    )
    assert set(summary) == set(POLICIES)
    un = {p: v["unallocated_gpu_share"] for p, v in summary.items()}
    assert all(0 < u < 0.3 for u in un.values())
    for p, u in un.items():
        assert un["fgd"] <= u, (p, un)
    assert (tmp_path / "summary.json").exists()
    for f in (
        "allocation_vs_arrived.png",
        "fragmentation_ratio_vs_arrived.png",
        "unallocated_share_bar.png",
    ):
        assert (tmp_path / f).stat().st_size > 10_000
