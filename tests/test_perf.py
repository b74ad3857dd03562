"""Communication-aware speed model: formulas pinned on hand-computed cases, invariants, wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.config import validate_scenario
from clustersim.engine import Engine
from clustersim.errors import ConfigError
from clustersim.perf import (
    CommSpeedModel,
    PerfConfig,
    allreduce_time,
    job_profile,
    level_counts,
    p2p_time,
    speed_model_for,
)
from clustersim.schedulers.placement import get_placement
from clustersim.schedulers.registry import create_scheduler
from clustersim.topogen import supernode_cluster
from clustersim.topology import Cluster
from clustersim.workload.job import Job

S = 1e9  # bytes


def two_level(**levels: object) -> Cluster:
    """2 nodes x 2 devices: node link 100 GB/s / 1 us, fabric 10 GB/s / 5 us."""
    return Cluster.from_dict(
        {
            "nodes": [{"count": 2, "gpus": 2, "device": "H100"}],
            "node_link": {"bandwidth": 100e9, "latency": 1e-6},
            "levels": [{"name": "fabric", "nodes": 2, "bandwidth": 10e9, "latency": 5e-6}],
            **levels,
        }
    )


def fat_tree() -> Cluster:
    """4 nodes x 8 H100: NVLink 450 GB/s, leaf of 2 nodes and spine at 50 GB/s."""
    return Cluster.from_dict(
        {
            "nodes": [{"count": 4, "gpus": 8, "device": "H100"}],
            "node_link": {"bandwidth": 450e9, "latency": 1e-6},
            "levels": [
                {"name": "leaf", "nodes": 2, "bandwidth": 50e9, "latency": 2e-6},
                {"name": "spine", "nodes": 4, "bandwidth": 50e9, "latency": 3e-6},
            ],
        }
    )


def frac_job(k: int, f: float = 0.2) -> Job:
    return Job("f", 0.0, k, 100.0, attrs={"comm_fraction": f})


# --------------------------------------------------------------------------- formulas


def test_allreduce_one_level_is_nccl() -> None:
    # NCCL: 2 (n-1)/n * S/B; alpha-beta ring latency 2 (n-1) alpha
    got = allreduce_time(S, [8, 1], [450e9], [1e-6])
    assert got == pytest.approx(2 * 7 / 8 * S / 450e9 + 2 * 7 * 1e-6, rel=1e-12)


def test_allreduce_two_levels_is_the_hierarchical_formula() -> None:
    # literature.md §3.2: 2(g-1)/g S/B_up + 2(N-1)/N (S/g)/B_out + 2(g-1)a_up + 2(N-1)a_out
    got = allreduce_time(S, [16, 2, 1], [450e9, 50e9], [1e-6, 2e-6])
    want = 2 * 7 / 8 * S / 450e9 + 2 * 1 / 2 * (S / 8) / 50e9 + 2 * 7 * 1e-6 + 2 * 1 * 2e-6
    assert got == pytest.approx(want, rel=1e-12)


def test_allreduce_ring_pays_the_slowest_link() -> None:
    got = allreduce_time(S, [16, 2, 1], [450e9, 50e9], [1e-6, 2e-6], "ring")
    assert got == pytest.approx(2 * 15 / 16 * S / 50e9 + 2 * 15 * 2e-6, rel=1e-12)
    assert allreduce_time(S, [1, 1], [450e9], [1e-6], "ring") == 0.0


def test_three_levels_and_p2p() -> None:
    # 32 ranks: 8 per node, 4 nodes, 2 leaves: n - 1 = 31 = 28 + 2 + 1
    got = allreduce_time(S, [32, 4, 2, 1], [450e9, 50e9, 25e9], [0, 0, 0])
    assert got == pytest.approx(2 * S / 32 * (28 / 450e9 + 2 / 50e9 + 1 / 25e9), rel=1e-12)
    assert p2p_time(S, 50e9, 2e-6, messages=3) == pytest.approx(S / 50e9 + 6e-6)


def test_level_counts() -> None:
    rows = np.array([[0, 0, 1, 1], [2, 3, 4, 5]])
    got = level_counts(rows, [1, 2, 8])
    assert got.tolist() == [[4, 2, 1, 1], [4, 4, 2, 1]]


# --------------------------------------------------------------------------- the model


def test_fraction_job_across_nodes_hand_computed() -> None:
    m = CommSpeedModel(fat_tree())
    # 16 devices on nodes 0-1 (one leaf): ratio = (14/450 + 1/50) / (15/450)
    ratio = (14 / 450 + 1 / 50) / (15 / 450)
    assert m(frac_job(16), tuple(range(16)), m.cluster) == pytest.approx(
        1 / (0.8 + 0.2 * ratio), rel=1e-12
    )
    assert m(frac_job(8), tuple(range(8)), m.cluster) == 1.0  # one node
    assert m(frac_job(1), (3,), m.cluster) == 1.0
    assert m(Job("s", 0, 2, 1, gpu_milli=500, attrs={"comm_fraction": 0.5}), (0, 9), m.cluster) == 1


def test_compute_only_reference() -> None:
    m = CommSpeedModel(fat_tree(), PerfConfig(reference="compute_only"))
    # inside one node: comm = f; compute = 1 - f
    assert m(frac_job(8), tuple(range(8)), m.cluster) == pytest.approx(0.8)
    ratio = (14 / 450 + 1 / 50) / (15 / 450)
    assert m(frac_job(16), tuple(range(16)), m.cluster) == pytest.approx(0.8 / (0.8 + 0.2 * ratio))


def test_3d_model_hand_computed() -> None:
    """tp=2 x dp=2 on 2 nodes x 2 devices: TP inside nodes, DP across the fabric."""
    c = two_level()
    m = CommSpeedModel(c)
    attrs = {
        "model_params": 1e6,
        "tp": 2,
        "hidden_size": 1024,
        "num_layers": 2,
        "tokens_per_step": 1000,
        "step_time_s": 1.0,
    }
    job = Job("a", 0, 4, 10.0, attrs=attrs)
    st_ = m.step_time(job, (0, 1, 2, 3))
    # TP: 4 all-reduces x 2 layers x 500 tokens x 1024 x 2 B = 8,192,000 B over 2 ranks of a node;
    # 8 calls each pay 2 (2-1) x 1 us
    tp = 8_192_000 / 100e9 + 8 * 2 * 1e-6
    # DP: 1e6/2 params x 2 B = 1e6 B between the two nodes: (2S/2)(1/10e9) + 2 (2-1) 5 us
    dp = 1e6 / 10e9 + 2 * 5e-6
    dp_ref = 1e6 / 100e9 + 2 * 1e-6  # levels above the node as fast as the node
    assert st_.tp == pytest.approx(tp, rel=1e-12)
    assert st_.dp == pytest.approx(dp, rel=1e-12)
    assert st_.comm_ref == pytest.approx(tp + dp_ref, rel=1e-12)
    assert st_.speed == pytest.approx((1 + tp + dp_ref) / (1 + tp + dp), rel=1e-12)


def test_pipeline_p2p_hand_computed() -> None:
    c = two_level()
    m = CommSpeedModel(c, PerfConfig(reference="compute_only"))
    attrs = {
        "model_params": 1e6,
        "pp": 2,
        "hidden_size": 1024,
        "num_layers": 2,
        "tokens_per_step": 1000,
        "step_time_s": 1.0,
        "micro_batches": 4,
    }
    job = Job("p", 0, 2, 10.0, attrs=attrs)
    size = 1000 * 1024 * 2  # tokens x h x 2 B, one direction
    cross = 2 * size / 10e9 + 2 * 4 * 5e-6
    assert m.step_time(job, (0, 2)).pp == pytest.approx(cross, rel=1e-12)
    assert m(job, (0, 2), c) == pytest.approx(1 / (1 + cross), rel=1e-12)
    same = 2 * size / 100e9 + 2 * 4 * 1e-6
    assert m.step_time(job, (0, 1)).pp == pytest.approx(same, rel=1e-12)


def test_compute_from_flops() -> None:
    c = two_level()
    m = CommSpeedModel(c, PerfConfig(reference="compute_only"))
    job = Job("c", 0, 2, 1.0, attrs={"model_params": 1e9, "tokens_per_step": 1e6})
    st_ = m.step_time(job, (0, 1))
    # 6 P T / (n x 989 TFLOP/s x 0.40)
    assert st_.compute == pytest.approx(6 * 1e9 * 1e6 / (2 * 989e12 * 0.40), rel=1e-12)


def test_scale_up_domain_runs_at_full_speed_and_spreading_slows() -> None:
    c = Cluster.from_dict(supernode_cluster(288, domain=72, gpus_per_node=4, device="GB200"))
    assert c.scale_up_top == 1
    m = CommSpeedModel(c)
    job = frac_job(64, 0.3)
    inside = tuple(range(4, 68))  # 16 trays of rack 0
    across = tuple(range(40, 104))  # racks 0 and 1
    assert m(job, inside, c) == 1.0
    s = m(job, across, c)
    assert 0 < s < 1.0


def _grid_cluster() -> Cluster:
    return Cluster.from_dict(
        {
            "nodes": [{"count": 16, "gpus": 4, "device": "H100"}],
            "node_link": {"bandwidth": 450e9, "latency": 1e-6},
            "levels": [
                {"name": "sn", "nodes": 4, "bandwidth": 400e9, "latency": 2e-6, "scale_up": True},
                {"name": "leaf", "nodes": 8, "bandwidth": 50e9, "latency": 3e-6},
                {"name": "spine", "nodes": 16, "bandwidth": 50e9, "latency": 5e-6},
            ],
        }
    )


@settings(max_examples=60, deadline=None)
@given(
    k=st.sampled_from([2, 4, 8, 16]),
    frac=st.floats(0.01, 0.9),
    seed=st.integers(0, 10_000),
    alg=st.sampled_from(["hierarchical", "ring"]),
    ref=st.sampled_from(["scale_up", "compute_only"]),
)
def test_confined_never_slower_than_spread(
    k: int, frac: float, seed: int, alg: str, ref: str
) -> None:
    c = _grid_cluster()
    m = CommSpeedModel(c, PerfConfig(algorithm=alg, reference=ref))  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    job = frac_job(k, frac)
    dom = int(rng.integers(4))  # one 16-device supernode
    confined = tuple(sorted(rng.choice(np.arange(16 * dom, 16 * dom + 16), k, replace=False)))
    spread = tuple(sorted(rng.choice(64, k, replace=False)))
    sc, ss = m(job, confined, c), m(job, spread, c)
    assert 0 < ss <= sc <= 1.0
    if ref == "scale_up":
        assert sc == 1.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), tp=st.sampled_from([1, 2, 4]), pp=st.sampled_from([1, 2]))
def test_model_job_confined_is_full_speed(seed: int, tp: int, pp: int) -> None:
    c = _grid_cluster()
    m = CommSpeedModel(c)
    attrs = {
        "model_params": 7e9,
        "tp": tp,
        "pp": pp,
        "hidden_size": 4096,
        "num_layers": 32,
        "tokens_per_step": 4e6,
    }
    job = Job("m", 0, 16, 1.0, attrs=attrs)
    rng = np.random.default_rng(seed)
    dom = int(rng.integers(4))
    assert m(job, tuple(range(16 * dom, 16 * dom + 16)), c) == 1.0
    spread = tuple(sorted(rng.choice(64, 16, replace=False)))
    assert 0 < m(job, spread, c) <= 1.0


def test_tp_split_across_nodes_is_slower_than_aligned() -> None:
    c = fat_tree()
    m = CommSpeedModel(c, PerfConfig(reference="compute_only"))
    attrs = {
        "model_params": 70e9,
        "tp": 8,
        "hidden_size": 8192,
        "num_layers": 80,
        "tokens_per_step": 4e6,
    }
    job = Job("t", 0, 16, 1.0, attrs=attrs)
    aligned = m.step_time(job, tuple(range(16)))
    split = m.step_time(job, tuple(range(4, 20)))  # each TP group straddles two nodes
    # hierarchical: 4 + 4 ranks per group; (6/450 + 1/50) / (7/450) of the aligned cost
    assert split.tp / aligned.tp == pytest.approx((6 / 450 + 1 / 50) / (7 / 450), rel=1e-3)
    assert split.speed < aligned.speed
    # one flat ring at the NIC: 450 -> 50 GB/s, the "~9x slower" of literature.md §3.2
    ring = CommSpeedModel(c, PerfConfig(reference="compute_only", algorithm="ring"))
    assert ring.step_time(job, tuple(range(4, 20))).tp / aligned.tp == pytest.approx(9, rel=1e-2)


def test_degraded_link_and_ecmp_penalty_slow_jobs_down() -> None:
    base = fat_tree()
    job = frac_job(32)
    devs = tuple(range(32))
    s0 = CommSpeedModel(base)(job, devs, base)
    slow = Cluster.from_dict(
        {
            "nodes": [{"count": 4, "gpus": 8, "device": "H100"}],
            "node_link": {"bandwidth": 450e9, "latency": 1e-6},
            "levels": [
                {"name": "leaf", "nodes": 2, "bandwidth": 50e9, "latency": 2e-6},
                {"name": "spine", "nodes": 4, "bandwidth": 50e9, "latency": 3e-6},
            ],
            "links": [{"node": 3, "level": "spine", "bandwidth": 10e9}],
        }
    )
    assert not slow.uniform_links
    s1 = CommSpeedModel(slow)(job, devs, slow)
    assert s1 < s0
    # a job that avoids node 3 does not notice it
    j16 = frac_job(16)
    assert CommSpeedModel(slow)(j16, tuple(range(16)), slow) == pytest.approx(
        CommSpeedModel(base)(j16, tuple(range(16)), base)
    )
    s2 = CommSpeedModel(base, PerfConfig(ecmp_penalty=0.3))(job, devs, base)
    assert s2 < s0
    # the leaf (first scale-out level, one hop) has no ECMP: a one-leaf job is unaffected
    assert CommSpeedModel(base, PerfConfig(ecmp_penalty=0.3))(j16, tuple(range(16)), base) == (
        pytest.approx(CommSpeedModel(base)(j16, tuple(range(16)), base))
    )


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("attrs", "needle"),
    [
        ({"model_params": 1e9, "tp": 3, "tokens_per_step": 1e6}, "does not divide its 8"),
        ({"model_params": 1e9}, "needs 'tokens_per_step'"),
        ({"model_params": 1e9, "tp": 2, "step_time_s": 1.0}, "needs hidden_size, num_layers"),
        ({"model_params": 1e9, "tp": 2.5, "step_time_s": 1.0}, "'tp' must be a whole number"),
        ({"comm_fraction": 1.5}, "comm_fraction must be in [0, 1)"),
        ({"comm_fraction": "lots"}, "'comm_fraction' must be a number"),
        ({"model_params": 1e9, "dp": 3, "tokens_per_step": 1}, "dp=3 != its 8 devices"),
    ],
)
def test_bad_job_attrs_name_the_job(attrs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        job_profile(Job("bad-job", 0, 8, 1.0, attrs=attrs), PerfConfig())
    assert "job 'bad-job'" in str(ei.value) and needle in str(ei.value)


def test_defaults_and_precedence() -> None:
    cfg = PerfConfig(comm_fraction=0.1)
    assert job_profile(Job("a", 0, 8, 1.0), cfg).fraction == 0.1
    assert job_profile(Job("b", 0, 8, 1.0, attrs={"comm_fraction": 0.3}), cfg).fraction == 0.3
    assert job_profile(Job("c", 0, 8, 1.0), PerfConfig()).kind == "none"
    p = job_profile(Job("d", 0, 8, 1.0, attrs={"model_params": 8e9, "step_time_s": 2.0}), cfg)
    assert p.kind == "model" and p.dp == 8 and p.dp_bytes == 8e9 * 2
    assert math.isclose(p.compute_s or 0.0, 2.0)
    with pytest.raises(ValueError, match="either 'comm_fraction' or 'model_params'"):
        PerfConfig(comm_fraction=0.1, model_params=1e9)


def test_scenario_perf_section_and_unknown_keys() -> None:
    base = {
        "cluster": {"nodes": 2, "gpus_per_node": 8, "network": "topology"},
        "workload": {"format": "synthetic"},
    }
    sc = validate_scenario({**base, "perf": {"comm_fraction": 0.25, "algorithm": "ring"}})
    model = speed_model_for(sc, Cluster.uniform(2, 8, "H100"))
    assert isinstance(model, CommSpeedModel) and model.cfg.algorithm == "ring"
    with pytest.raises(ConfigError, match="unknown key 'comm_fracton'"):
        validate_scenario({**base, "perf": {"comm_fracton": 0.25}})


def test_engine_jct_reflects_placement() -> None:
    """The engine runs a 16-device job (2 nodes) at the model's speed: JCT = work / speed."""
    c = fat_tree()
    job = frac_job(16, 0.5)
    m = CommSpeedModel(c)
    speed = m(job, tuple(range(16)), c)
    eng = Engine(
        c,
        [job],
        create_scheduler("fifo", {}),
        get_placement("first_fit"),
        speed_model=m,
    )
    res = eng.run()
    rec = res.records[0]
    assert rec.end - rec.first_start == pytest.approx(100.0 / speed, rel=1e-9)
    assert speed < 1.0


def test_domain_results_follow_the_bandwidth_ratios() -> None:
    """A TP=8 job inside one scale-up domain: its communication time scales as 1/B_up."""
    from pathlib import Path

    lib = Path(__file__).resolve().parents[1] / "topologies"
    attrs = {
        "model_params": 70e9,
        "tp": 8,
        "hidden_size": 8192,
        "num_layers": 80,
        "tokens_per_step": 4e6,
        "step_time_s": 30.0,
    }
    job = Job("t", 0, 16, 1.0, attrs=attrs)
    comm: dict[str, float] = {}
    for name in ("dgx-h100", "gb200-nvl72", "cloudmatrix384", "kunlun-p800-512"):
        c = Cluster.from_yaml(lib / f"{name}.yaml")
        m = CommSpeedModel(c, PerfConfig(reference="compute_only"))
        comm[name] = m.step_time(job, tuple(range(16))).tp
        full = CommSpeedModel(c)(job, tuple(range(16)), c)
        # 16 devices: one supernode, but two DGX nodes (the DP all-reduce crosses the leaf)
        assert full == 1.0 if c.scale_up_top > 0 else full < 1.0
    # the TP groups stay in one node: 450 vs 900 vs 392 vs 200 GB/s (latency is ~1e-5 of it)
    assert comm["dgx-h100"] / comm["gb200-nvl72"] == pytest.approx(900 / 450, rel=1e-3)
    assert comm["cloudmatrix384"] / comm["dgx-h100"] == pytest.approx(450 / 392, rel=1e-3)
    assert comm["kunlun-p800-512"] / comm["dgx-h100"] == pytest.approx(450 / 200, rel=1e-3)


def test_supernode_speedup_quick(tmp_path: object) -> None:
    """The experiment's --quick run writes summary.json (topology -> numbers) and figures."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "supernode_speedup.py"
    spec = importlib.util.spec_from_file_location("supernode_speedup", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = Path(str(tmp_path)) / "out"
    assert mod.main(["--out", str(out), "--quick", "--jobs", "24"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"dgx-h100", "gb200-nvl72", "cloudmatrix384", "kunlun-p800-512"} <= set(summary)
    for v in summary.values():
        assert v["avg_jct_s"] > 0 and v["makespan_s"] > 0
        assert v["placement"] in v["placements"] and v["devices"] == 4608
    # same placement, same jobs: faster scale-up links never lose
    pl = "consolidate"
    speed = {t: summary[t]["placements"][pl]["mean_speed"] for t in summary}
    assert speed["gb200-nvl72"] >= speed["dgx-h100"] >= speed["kunlun-p800-512"]
    for f in ("fig_avg_jct.png", "fig_makespan.png", "fig_throughput.png", "meta.json"):
        assert (out / f).stat().st_size > 0
