"""Reproduce the FGD fragmentation study (Weng et al., USENIX ATC'23) on the openb trace.

Method (the authors' artifact, ``experiments/run_scripts/generate_run_scripts.py`` and
``pkg/simulator/simulator.go`` of hkust-adsl/kubernetes-scheduler-simulator):

1. Cluster: the 1,213 GPU nodes of ``openb_node_list_gpu_node.csv`` (6,212 GPUs).
2. Typical mix: the most popular pod shapes of the whole pod list covering 95 % of pods
   (35 shapes on ``openb_pod_list_default.csv``), CPU-only pods included.
3. Arrivals, per seed: the pod list sorted by name and shuffled; if its GPU demand is below
   ``--target`` (1.3) x cluster GPU capacity, pods drawn uniformly with replacement from the
   list are appended while the demand stays <= target; if above, random pods are removed
   until it is <= target. No departures. A pod no node can host is counted and dropped.
4. Each policy places the same arrival sequence (per seed); ties between equal node scores
   go to the lowest node name (the authors' kube-scheduler fork) unless
   ``--tie-break random``; ``--tie-break both`` also runs the random rule as a sensitivity
   check.
5. Recorded after every pod: arrived GPU demand, allocated GPU, fragment amount. Reported:
   GPU allocation ratio and fragmentation ratio against arrived workload (0..130 % of
   capacity, value after the last pod at or below each percent), and the final unallocated
   GPU share = 1 - allocated milli-GPU / total milli-GPU. Mean and std over seeds.

Writes ``DIR/summary.json`` (policy -> numbers), ``DIR/details.json`` (method, per-seed
numbers, curves, runtimes, sensitivity, the authors' published expected results for
comparison) and three PNG figures. Each (tie-break, policy, seed) is one point of a
:mod:`clustersim.sweep` function sweep (``run_point``; the input files' SHA-256 are part of
its parameters, so a changed trace is recomputed) stored in ``DIR/points``, its curves in
``curves.parquet``: a re-run reuses finished points, and ``--executor dask://HOST:PORT``
runs them on a Dask cluster (workers must see the trace at the same path).
``runtime_s_per_run`` is the replay time the points measured when computed.
Run: ``python experiments/fragmentation_openb.py --out DIR [--executor SPEC] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT) not in sys.path:  # `experiments.<name>:run_point` must import (sweep workers too)
    sys.path.append(str(ROOT))

from clustersim.fragmentation import (  # noqa: E402
    MILLI,
    POLICIES,
    TIE_BREAKS,
    GpuShareState,
    PodRequest,
    TypicalMix,
    cluster_fragmentation,
    pods_from_openb,
    replay,
)
from clustersim.sweep import file_digest  # noqa: E402
from clustersim.workload.openb import (  # noqa: E402
    OpenbNodes,
    load_openb_nodes,
    load_openb_pods,
)
from experiments._points import add_sweep_args, run_points  # noqa: E402

TRACE_DIR = ROOT.parent / "shared" / "traces" / "alibaba-gpu-2023-openb"
GRID = np.arange(0, 131)  # arrived workload, % of cluster GPU capacity
OKABE_ITO = {
    "fgd": "#D55E00",
    "bestfit": "#0072B2",
    "gpupacking": "#009E73",
    "gpuclustering": "#CC79A7",
    "dotproduct": "#E69F00",
    "random": "#56B4E9",
}
STYLES = {
    "fgd": "-",
    "bestfit": "-",
    "gpupacking": "--",
    "gpuclustering": "-.",
    "dotproduct": ":",
    "random": "-",
}
LABELS = {
    "fgd": "FGD",
    "bestfit": "BestFit",
    "gpupacking": "GpuPacking",
    "gpuclustering": "GpuClustering",
    "dotproduct": "DotProduct",
    "random": "Random",
}
# Authors' expected results (openb_pod_list_default, tune 1.3, seeds 42-51): mean and std
# of 100 - allocation % at 130 % arrived, read from experiments/analysis/expected_results/
# analysis_allo_discrete.csv of hkust-adsl/kubernetes-scheduler-simulator. For comparison
# only; nothing in this script is fitted to them.
AUTHORS_EXPECTED_UNALLOCATED_PCT = {
    "fgd": (4.609, 0.082),
    "bestfit": (6.924, 0.134),
    "gpupacking": (7.998, 0.545),
    "gpuclustering": (8.122, 0.625),
    "dotproduct": (9.151, 0.202),
    "random": (12.530, 0.319),
}


# --------------------------------------------------------------------------- method


def subset_nodes(nodes: OpenbNodes, stride: int) -> OpenbNodes:
    """Every ``stride``-th node (a proportionally reduced cluster for quick runs)."""
    if stride <= 1:
        return nodes
    sel = slice(None, None, stride)
    return OpenbNodes(
        sn=nodes.sn[sel],
        cpu_milli=nodes.cpu_milli[sel],
        memory_mib=nodes.memory_mib[sel],
        gpu=nodes.gpu[sel],
        model=nodes.model[sel],
    )


def arrival_sequence(
    pods: Sequence[PodRequest], capacity_milli: int, target: float, rng: np.random.Generator
) -> list[PodRequest]:
    """The authors' ``shufflePod`` + ``TunePodsByNodeTotalResource`` (see module docstring)."""
    base = sorted(pods, key=lambda p: p.name)
    seq = [base[i] for i in rng.permutation(len(base))]
    limit = target * capacity_milli
    demand = sum(p.total_gpu_milli for p in seq)
    if demand > limit:
        while demand > limit and seq:
            removed = seq.pop(int(rng.integers(len(seq))))
            demand -= removed.total_gpu_milli
        return seq
    while True:
        pod = base[int(rng.integers(len(base)))]
        if demand + pod.total_gpu_milli > limit:
            return seq
        seq.append(pod)
        demand += pod.total_gpu_milli


def step_curve(x: np.ndarray, y: np.ndarray, y0: float) -> np.ndarray:
    """Value after the last pod whose arrived share (%) is <= each grid point."""
    idx = np.searchsorted(x, GRID, side="right") - 1
    out: np.ndarray = np.where(idx >= 0, y[np.maximum(idx, 0)], y0)
    return out


_DATA: dict[str, Any] = {}


def _load(nodes_csv: str, pods_csv: str, stride: int) -> None:
    if _DATA.get("key") == (nodes_csv, pods_csv, stride):
        return
    pods = load_openb_pods(pods_csv)
    _DATA.update(
        key=(nodes_csv, pods_csv, stride),
        nodes=subset_nodes(load_openb_nodes(nodes_csv), stride),
        reqs=pods_from_openb(pods),
        mix=TypicalMix.from_pods(pods),
    )


def run_once(task: tuple[str, str, int, str, str, int, float]) -> dict[str, Any]:
    """One (tie-break, policy, seed) run; returns scalars and grid curves."""
    tie, policy, seed, nodes_csv, pods_csv, stride, target = task
    _load(nodes_csv, pods_csv, stride)
    nodes: OpenbNodes = _DATA["nodes"]
    mix: TypicalMix = _DATA["mix"]
    state = GpuShareState.from_openb(nodes, mix)
    total = state.total_gpu_milli
    seq = arrival_sequence(_DATA["reqs"], total, target, np.random.default_rng([seed, 0]))
    frag0 = cluster_fragmentation(state).ratio
    t0 = time.perf_counter()
    tr = replay(state, seq, policy, np.random.default_rng([seed, 1]), tie_break=tie)
    runtime = time.perf_counter() - t0
    arrived = 100.0 * tr.arrived_milli / total
    alloc = 100.0 * tr.allocated_milli / total
    idle = tr.idle_milli
    fratio = 100.0 * np.divide(tr.fragment_milli, idle, out=np.zeros(len(idle)), where=idle > 0)
    failed = ~tr.placed
    first_fail = float(arrived[np.argmax(failed)]) if failed.any() else float("nan")
    final = cluster_fragmentation(state)
    return {
        "tie_break": tie,
        "policy": policy,
        "seed": seed,
        "pods": len(seq),
        "runtime_s": runtime,
        "unallocated_gpu_share": final.unallocated_share,
        "fragmentation_ratio": final.ratio,
        "fragment_gpus": final.fragment_milli / MILLI,
        "idle_gpus": final.idle_milli / MILLI,
        "arrived_share": float(tr.arrived_milli[-1] / total) if len(seq) else 0.0,
        "failed_pods": int(failed.sum()),
        "failed_gpu_demand_share": float(
            sum(p.total_gpu_milli for p, f in zip(seq, failed, strict=True) if f) / total
        ),
        "first_failure_arrived_pct": first_fail,
        "alloc_curve": step_curve(arrived, alloc, 0.0).tolist(),
        "frag_curve": step_curve(arrived, fratio, 100.0 * frag0).tolist(),
    }


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point: :func:`run_once` with the curves stored as table ``curves``."""
    r = run_once(
        (
            str(params["tie_break"]),
            str(params["policy"]),
            int(params["seed"]),
            str(params["nodes_csv"]),
            str(params["pods_csv"]),
            int(params["node_stride"]),
            float(params["target"]),
        )
    )
    r["tables"] = {
        "curves": {
            "arrived_pct": GRID.tolist(),
            "alloc_pct": r.pop("alloc_curve"),
            "frag_pct": r.pop("frag_curve"),
        }
    }
    return r


def aggregate(results: list[dict[str, Any]], tie: str) -> dict[str, dict[str, Any]]:
    """Per-policy mean/std over seeds for one tie-break rule."""
    out: dict[str, dict[str, Any]] = {}
    for policy in POLICIES:
        runs = sorted(
            (r for r in results if r["policy"] == policy and r["tie_break"] == tie),
            key=lambda r: r["seed"],
        )
        if not runs:
            continue

        def stats(key: str, rs: list[dict[str, Any]] = runs) -> tuple[float, float]:
            v = np.asarray([r[key] for r in rs], dtype=np.float64)
            return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

        un, un_sd = stats("unallocated_gpu_share")
        fr, fr_sd = stats("fragmentation_ratio")
        out[policy] = {
            "unallocated_gpu_share": un,
            "unallocated_gpu_share_std": un_sd,
            "fragmentation_ratio": fr,
            "fragmentation_ratio_std": fr_sd,
            "fragment_gpus": stats("fragment_gpus")[0],
            "idle_gpus": stats("idle_gpus")[0],
            "failed_pods": stats("failed_pods")[0],
            "failed_gpu_demand_share": stats("failed_gpu_demand_share")[0],
            "first_failure_arrived_pct": stats("first_failure_arrived_pct")[0],
            "arrived_share": stats("arrived_share")[0],
            "runtime_s_per_run": stats("runtime_s")[0],
            "seeds": len(runs),
            "tie_break": tie,
            "per_seed_unallocated_gpu_share": [r["unallocated_gpu_share"] for r in runs],
            "alloc_curve_pct": np.mean([r["alloc_curve"] for r in runs], axis=0).tolist(),
            "frag_curve_pct": np.mean([r["frag_curve"] for r in runs], axis=0).tolist(),
        }
    return out


# --------------------------------------------------------------------------- plots


def plot(out: Path, agg: dict[str, dict[str, Any]], sens: dict[str, dict[str, Any]]) -> list[Path]:
    """Allocation and fragmentation curves plus the unallocated-share bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = max(v["seeds"] for v in agg.values())
    files: list[Path] = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, lo in zip(axes, (0, 80), strict=True):
        ax.plot(GRID, GRID, ls="--", color="0.6", lw=1, label="all arrived work placed")
        for p, v in agg.items():
            ax.plot(
                GRID,
                v["alloc_curve_pct"],
                color=OKABE_ITO[p],
                ls=STYLES[p],
                lw=1.8,
                label=LABELS[p],
            )
        ax.set_xlim(lo, 130)
        ax.set_ylim(lo if lo else 0, 100)
        ax.set_xlabel("Arrived workload (% of cluster GPU capacity)")
        ax.set_ylabel("GPU allocation ratio (% of GPU capacity)")
        ax.grid(alpha=0.3)
    axes[0].set_title("Allocation vs arrived workload (openb default)")
    axes[1].set_title("Zoom: 80-130 % arrived")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"GPU allocation ratio, 1,213-node openb cluster, mean of {seeds} seeds")
    fig.tight_layout()
    files.append(out / "allocation_vs_arrived.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for p, v in agg.items():
        ax.plot(
            GRID, v["frag_curve_pct"], color=OKABE_ITO[p], ls=STYLES[p], lw=1.8, label=LABELS[p]
        )
    ax.set_xlabel("Arrived workload (% of cluster GPU capacity)")
    ax.set_ylabel("Fragmentation ratio (% of idle GPU capacity)")
    ax.set_title(f"FGD fragmentation ratio vs arrived workload (mean of {seeds} seeds)")
    ax.set_xlim(0, 130)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    files.append(out / "fragmentation_ratio_vs_arrived.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    names = list(agg)
    x = np.arange(len(names))
    width = 0.38 if sens else 0.6
    ours = [100 * agg[p]["unallocated_gpu_share"] for p in names]
    ours_sd = [100 * agg[p]["unallocated_gpu_share_std"] for p in names]
    ax.bar(
        x - (width / 2 if sens else 0),
        ours,
        width,
        yerr=ours_sd,
        capsize=3,
        color=[OKABE_ITO[p] for p in names],
        label="clustersim, ties -> lowest node name (authors' rule)",
    )
    if sens:
        ax.bar(
            x + width / 2,
            [100 * sens[p]["unallocated_gpu_share"] for p in names],
            width,
            yerr=[100 * sens[p]["unallocated_gpu_share_std"] for p in names],
            capsize=3,
            color=[OKABE_ITO[p] for p in names],
            alpha=0.45,
            hatch="//",
            label="clustersim, ties -> random (stock kube-scheduler)",
        )
    ref = [AUTHORS_EXPECTED_UNALLOCATED_PCT[p][0] for p in names]
    ax.scatter(
        x - (width / 2 if sens else 0),
        ref,
        marker="D",
        color="black",
        zorder=3,
        label="authors' expected_results (seeds 42-51)",
    )
    ax.set_xticks(x, [LABELS[p] for p in names])
    ax.set_ylabel("Unallocated GPU share at 130 % arrived (%)")
    ax.set_title(f"Unallocated GPUs after arrivals reach 130 % of capacity ({seeds} seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    files.append(out / "unallocated_share_bar.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)
    return files


# --------------------------------------------------------------------------- CLI


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    ap.add_argument("--quick", action="store_true", help="2 seeds, every 3rd node")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--tie-break", default="both", choices=[*TIE_BREAKS, "both"])
    ap.add_argument("--node-stride", type=int, default=1, help="keep every K-th node")
    ap.add_argument("--target", type=float, default=1.3, help="arrived demand / capacity")
    ap.add_argument("--traces", type=Path, default=TRACE_DIR, help="openb trace folder")
    ap.add_argument("--nodes", default="openb_node_list_gpu_node.csv")
    ap.add_argument("--pods", default="openb_pod_list_default.csv")
    add_sweep_args(ap, workers=2)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = min(args.seeds, 2)
        args.node_stride = max(args.node_stride, 3)
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    for name in (args.nodes, args.pods):
        if not (args.traces / name).is_file():
            ap.error(f"openb trace file not found: {args.traces / name} (see --traces)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    args = parse(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    nodes_csv = str((args.traces / args.nodes).resolve())
    pods_csv = str((args.traces / args.pods).resolve())
    ties = list(TIE_BREAKS) if args.tie_break == "both" else [args.tie_break]
    t0 = time.perf_counter()
    run = run_points(
        out,
        script="fragmentation_openb",
        name="fragmentation-openb",
        base={
            "nodes_csv": nodes_csv,
            "pods_csv": pods_csv,
            "inputs_sha256": {
                "nodes": file_digest(Path(nodes_csv)),
                "pods": file_digest(Path(pods_csv)),
            },
            "node_stride": args.node_stride,
            "target": args.target,
        },
        grid={"tie_break": ties, "policy": list(args.policies)},
        seeds=list(range(args.seeds)),
        executor=args.executor,
        workers=args.workers,
        force=args.force,
    )
    results = []
    for pt in run.results:
        r = dict(pt.summary)
        curves = pt.table("curves")
        r["alloc_curve"] = curves["alloc_pct"]
        r["frag_curve"] = curves["frag_pct"]
        results.append(r)
    wall = time.perf_counter() - t0
    primary = ties[0]
    agg = aggregate(results, primary)
    sens = aggregate(results, "random") if primary != "random" and "random" in ties else {}
    summary = {
        p: {k: v for k, v in d.items() if not k.endswith("_curve_pct")} for p, d in agg.items()
    }
    _load(nodes_csv, pods_csv, args.node_stride)
    mix: TypicalMix = _DATA["mix"]
    nodes: OpenbNodes = _DATA["nodes"]
    details = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "method": {
            "nodes_csv": nodes_csv,
            "pods_csv": pods_csv,
            "nodes": len(nodes),
            "gpus": int(nodes.gpu.sum()),
            "node_stride": args.node_stride,
            "target_arrived_share": args.target,
            "seeds": list(range(args.seeds)),
            "tie_break_primary": primary,
            "typical_shapes": len(mix),
            "typical_coverage": mix.coverage,
        },
        "wall_time_s": wall,
        "workers": args.workers,
        "executor": run.report.executor,
        "points": {
            "total": run.report.total,
            "computed": run.report.computed,
            "reused": run.report.reused,
            "store": str(run.store),
        },
        "arrived_grid_pct": GRID.tolist(),
        "policies": agg,
        "sensitivity_random_tie_break": sens,
        "authors_expected_unallocated_pct": AUTHORS_EXPECTED_UNALLOCATED_PCT,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "details.json").write_text(json.dumps(details, indent=2))
    files = plot(out, agg, sens)
    print(
        f"{'policy':14s} {'unalloc %':>10s} {'std':>6s} {'frag %':>7s} {'authors %':>9s}"
        f" {'ties=random %':>13s} {'s/run':>6s}"
    )
    for p, v in agg.items():
        alt = f"{100 * sens[p]['unallocated_gpu_share']:.2f}" if p in sens else "-"
        print(
            f"{LABELS[p]:14s} {100 * v['unallocated_gpu_share']:10.2f}"
            f" {100 * v['unallocated_gpu_share_std']:6.2f} {100 * v['fragmentation_ratio']:7.1f}"
            f" {AUTHORS_EXPECTED_UNALLOCATED_PCT[p][0]:9.2f} {alt:>13s}"
            f" {v['runtime_s_per_run']:6.1f}"
        )
    print(f"wall time {wall:.1f} s; {run.line()}")
    print(f"wrote {out / 'summary.json'}, {out / 'details.json'}")
    for f in files:
        print(f"wrote {f}")
    return summary


if __name__ == "__main__":
    main()
