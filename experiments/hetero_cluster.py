"""Heterogeneity-blind vs -aware scheduling on two real heterogeneous node lists.

Method:

1. Clusters: the 1,213 GPU nodes of the Alibaba openb node list (6,212 GPUs: G2, T4, G3,
   P100, V100 32/16 GB, A10) and the 4,278 nodes of the Alibaba spot-2026 list (10,412
   GPUs: A100, A10, H800, A800, GPU-series-1/2), built by ``clustersim.hetero``.
   Undisclosed codes (G2, G3, GPU-series-*) are heterogeneity-neutral: speed, power and
   price of the reference device (T4 for openb, A100 for spot).
2. Workload: the openb pod list (default ``openb_pod_list_default.csv``); each job's
   duration is its work in seconds on the reference device; GPU-sharing pods are class
   ``memory`` (bandwidth-bound), whole-GPU pods class ``compute``. On the spot list every
   job accepts any type (openb's GPU models do not exist there).
3. Loads: ``trace`` -- the pods at their real arrival times (the cluster is nearly
   empty: the trace never fills it); ``inflated`` -- FGD's evaluation load: the list is
   tiled until its GPU demand reaches 130 % of the cluster's GPUs and arrivals are
   compressed into one hour (``clustersim.hetero.inflate_jobs``), so jobs queue.
4. Policies: ``blind_backfill`` (FIFO backfill, first fit over node ids, speed-blind),
   ``gavel_throughput``, ``gavel_maxmin`` and ``cost_aware`` (cheapest type meeting a
   deadline of submit + traced duration), all with the roofline speed matrix.
5. Per run: avg/p50/p99 JCT, GPU utilisation over the run, ``cost`` = allocated
   device-hours x list price, operator cost, facility energy, device-hours by type.

Writes ``DIR/summary.json``: policy -> {avg_jct_s, gpu_utilization, cost} for the openb
node list at trace timing, plus the same numbers for every (node list, load) under
``runs``; ``DIR/details.json`` (speed matrices, improvements of each aware policy over
the blind one, everything per run) and two PNGs. ``--quick`` keeps every 10th node, the
first 600 pods and an inflation target of 0.5 (used by tests).

Each (node list, load, policy) is one point of a :mod:`clustersim.sweep` function sweep
(``run_point``; the input files' SHA-256 are part of its parameters; the runs are
deterministic, so the one ``seed`` is only a label) stored in ``DIR/points``: a re-run
reuses finished points, and ``--executor dask://HOST:PORT`` runs them on a Dask cluster.
Each run's ``wall_s`` is the time the point measured when computed; ``details.json``
adds ``simulation_s``, their sum.
Run: ``python experiments/hetero_cluster.py --out DIR [--quick] [--executor SPEC]
[--workers N] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT) not in sys.path:  # `experiments.<name>:run_point` must import (sweep workers too)
    sys.path.append(str(ROOT))

from clustersim.hetero import (  # noqa: E402
    HeteroCluster,
    inflate_jobs,
    openb_cluster,
    openb_hetero_jobs,
    replay_hetero,
    spot_cluster,
)
from clustersim.schedulers import hetero_policies as hp  # noqa: E402
from clustersim.sweep import file_digest  # noqa: E402
from clustersim.workload.job import Job  # noqa: E402
from experiments._points import add_sweep_args, run_points  # noqa: E402

TRACES = ROOT.parent / "shared" / "traces"
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
CLUSTERS = ("openb", "spot")
LOADS = ("trace", "inflated")
OPENB_NODES = ("alibaba-gpu-2023-openb", "openb_node_list_gpu_node.csv")
SPOT_NODES = ("alibaba-spot-2026-nodes", "node_info_df.csv")
POINT_ONLY = frozenset({"cluster_info", "workload"})
"""Point-summary keys that describe the inputs (``details.json``), not the run."""
POLICIES = ("blind_backfill", "gavel_throughput", "gavel_maxmin", "cost_aware")
LABELS = {
    "blind_backfill": "blind FIFO-backfill",
    "gavel_throughput": "Gavel max-throughput",
    "gavel_maxmin": "Gavel max-min",
    "cost_aware": "cost-aware (deadline)",
}
KEYS = (
    "avg_jct_s",
    "p50_jct_s",
    "p99_jct_s",
    "avg_queue_delay_s",
    "gpu_utilization",
    "cost",
    "operator_cost_usd",
    "energy_kwh",
    "makespan_s",
    "jct_p95_completion_s",
    "jobs_completed",
    "jobs_unfinished",
    "device_hours_by_type",
    "stopped_by",
    "wall_s",
)


def make_policy(name: str, hc: HeteroCluster) -> Any:
    """A fresh policy object with the cluster's roofline matrix and specs."""
    m = hc.speed_matrix()
    cls = {
        "blind_backfill": hp.BlindBackfill,
        "gavel_throughput": hp.GavelThroughput,
        "gavel_maxmin": hp.GavelMaxMin,
        "cost_aware": hp.CostAware,
    }[name]
    return cls(matrix=m, specs=hc.specs)


_DATA: dict[Any, Any] = {}


def load_inputs(params: dict[str, Any]) -> tuple[HeteroCluster, dict[str, list[Job]], int]:
    """Node list ``params["cluster"]`` and its ``trace``/``inflated`` jobs (cached per process).

    Returns the cluster, the job list per load and the pods the loader dropped.
    """
    cname = str(params["cluster"])
    every = int(params["node_stride"])
    max_jobs = params["max_jobs"]
    key = (
        cname,
        params["openb_nodes_csv"],
        params["spot_nodes_csv"],
        params["pods_csv"],
        every,
        max_jobs,
        float(params["target"]),
    )
    if key not in _DATA:
        if cname == "openb":
            hc = openb_cluster(Path(params["openb_nodes_csv"]), every=every)
        elif cname == "spot":
            hc = spot_cluster(Path(params["spot_nodes_csv"]), every=every)
        else:
            raise ValueError(f"unknown node list {cname!r}; known: {', '.join(CLUSTERS)}")
        jobs, dropped = openb_hetero_jobs(
            Path(params["pods_csv"]), hc, keep_gpu_spec=cname == "openb"
        )
        if max_jobs is not None:
            jobs = jobs[: int(max_jobs)]
        inflated = inflate_jobs(jobs, hc.cluster.num_devices, target=float(params["target"]))
        _DATA.clear()  # one node list at a time (points run node list by node list)
        _DATA[key] = (hc, {"trace": jobs, "inflated": inflated}, dropped)
    hc, loads, dropped = _DATA[key]
    return hc, loads, dropped


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point: ``policy`` on node list ``cluster`` under load ``load``.

    Returns the run's :data:`KEYS` plus ``cluster_info`` (reference device, speed
    matrix, GPUs by type, assumptions) and ``workload`` (jobs per load, dropped pods).
    """
    hc, loads, dropped = load_inputs(params)
    policy = str(params["policy"])
    r = replay_hetero(hc, loads[str(params["load"])], make_policy(policy, hc), policy_name=policy)
    out: dict[str, Any] = {k: r.summary.get(k) for k in KEYS}
    out["cluster_info"] = {
        "reference": hc.reference,
        "speeds": hc.speed_matrix().to_dict(),
        "gpus_by_type": hc.gpus_by_type(),
        "assumptions": dict(hc.assumptions),
    }
    out["workload"] = {k: len(v) for k, v in loads.items()} | {"dropped": dropped}
    return out


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or reuse) every point into ``args.out/points``; runs, matrices, workloads."""
    openb_nodes = (args.traces / Path(*OPENB_NODES)).resolve()
    spot_nodes = (args.traces / Path(*SPOT_NODES)).resolve()
    pods = (args.traces / OPENB_NODES[0] / args.pods).resolve()
    run = run_points(
        args.out,
        script="hetero_cluster",
        name="hetero-cluster",
        base={
            "openb_nodes_csv": str(openb_nodes),
            "spot_nodes_csv": str(spot_nodes),
            "pods_csv": str(pods),
            "inputs_sha256": {
                "openb_nodes": file_digest(openb_nodes),
                "spot_nodes": file_digest(spot_nodes),
                "pods": file_digest(pods),
            },
            "node_stride": 10 if args.quick else 1,
            "max_jobs": 600 if args.quick else None,
            "target": 0.5 if args.quick else args.target,
        },
        grid={"cluster": list(CLUSTERS), "load": list(LOADS), "policy": list(args.policies)},
        seeds=[0],
        executor=args.executor,
        workers=args.workers,
        force=args.force,
    )
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    matrices: dict[str, Any] = {}
    workloads: dict[str, Any] = {}
    for pt in run.results:
        cname, lname, p = (str(pt.params[k]) for k in ("cluster", "load", "policy"))
        matrices.setdefault(cname, pt.summary["cluster_info"])
        workloads.setdefault(cname, pt.summary["workload"])
        key = f"{cname}/{lname}"
        v = {k: x for k, x in pt.summary.items() if k not in POINT_ONLY}
        runs.setdefault(key, {})[p] = v
        print(
            f"  {key:16s} {p:18s} avg JCT {v['avg_jct_s']:10.0f} s  "
            f"util {v['gpu_utilization']:.4f}  cost ${v['cost']:,.0f}  "
            f"({v['wall_s']:.1f} s)",
            flush=True,
        )
    print(run.line())
    return {
        "runs": runs,
        "matrices": matrices,
        "workloads": workloads,
        "simulation_s": run.compute_seconds("wall_s"),
        "points": run.line(),
    }


def improvements(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per (node list, load): each aware policy's avg-JCT reduction vs the blind one."""
    out: dict[str, dict[str, Any]] = {}
    for key, per in runs.items():
        base = per.get("blind_backfill")
        if not base or not base["avg_jct_s"]:
            continue
        out[key] = {}
        for p, v in per.items():
            if p == "blind_backfill" or v["avg_jct_s"] is None:
                continue
            out[key][p] = {
                "avg_jct_reduction": 1.0 - v["avg_jct_s"] / base["avg_jct_s"],
                "avg_jct_speedup": base["avg_jct_s"] / v["avg_jct_s"],
                "cost_change": v["cost"] / base["cost"] - 1.0 if base["cost"] else None,
                "energy_change": v["energy_kwh"] / base["energy_kwh"] - 1.0,
            }
    return out


def plot(runs: dict[str, dict[str, dict[str, Any]]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[Path] = []
    keys = list(runs)
    pols = [p for p in POLICIES if any(p in runs[k] for k in keys)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    width = 0.8 / max(len(pols), 1)
    for ax, metric, label in (
        (axes[0], "avg_jct_s", "average JCT (h)"),
        (axes[1], "cost", "cost at list price (thousand USD)"),
    ):
        for i, p in enumerate(pols):
            vals = [runs[k][p][metric] or 0.0 for k in keys]
            scale = 3600.0 if metric == "avg_jct_s" else 1000.0
            xs = [j + (i - (len(pols) - 1) / 2) * width for j in range(len(keys))]
            ax.bar(xs, [v / scale for v in vals], width, color=OKABE_ITO[i + 1], label=LABELS[p])
        ax.set_xticks(range(len(keys)), [k.replace("/", "\n") for k in keys])
        ax.set_ylabel(label)
        ax.set_xlabel("node list / load")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("Average job completion time (lower is better)")
    axes[1].set_title("Tenant cost: allocated device-hours x list price")
    axes[0].legend(fontsize=8)
    fig.suptitle("openb pods on real heterogeneous node lists: blind vs heterogeneity-aware")
    fig.tight_layout()
    files.append(out / "hetero_jct_cost.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 4.4), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        types = sorted({t for p in pols for t in (runs[k][p]["device_hours_by_type"] or {})})
        bottom = [0.0] * len(pols)
        for ti, t in enumerate(types):
            tot = [sum((runs[k][p]["device_hours_by_type"] or {}).values()) or 1.0 for p in pols]
            share = [
                (runs[k][p]["device_hours_by_type"] or {}).get(t, 0.0) / tot[i] * 100
                for i, p in enumerate(pols)
            ]
            ax.bar(range(len(pols)), share, bottom=bottom, color=OKABE_ITO[ti % 8], label=t)
            bottom = [b + s for b, s in zip(bottom, share, strict=True)]
        ax.set_xticks(range(len(pols)), [LABELS[p].split(" ")[0] for p in pols], rotation=30)
        ax.set_title(k)
        ax.set_ylabel("share of allocated device-hours (%)")
    axes[0][-1].legend(fontsize=7, loc="upper right", title="device type")
    fig.suptitle("Where each policy ran the work (device-hour share by device type)")
    fig.tight_layout()
    files.append(out / "hetero_device_mix.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)
    return files


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--quick", action="store_true", help="every 10th node, 600 pods")
    ap.add_argument("--traces", type=Path, default=TRACES, help="the shared/traces folder")
    ap.add_argument("--pods", default="openb_pod_list_default.csv", help="openb pod list")
    ap.add_argument("--target", type=float, default=1.3, help="inflation: demand / capacity")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    add_sweep_args(ap, workers=1)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = run_all(args)
    runs = res["runs"]
    imp = improvements(runs)
    main_key = "openb/trace"
    summary: dict[str, Any] = {}
    for p in args.policies:
        v = runs[main_key][p]
        summary[p] = {
            "avg_jct_s": v["avg_jct_s"],
            "gpu_utilization": v["gpu_utilization"],
            "cost": v["cost"],
            "runs": {
                k: {m: runs[k][p][m] for m in ("avg_jct_s", "gpu_utilization", "cost")}
                for k in runs
            },
        }
    details = {
        "method": (__doc__ or "").strip(),
        "summary_node_list": main_key,
        "improvement_vs_blind": imp,
        "wall_s": time.perf_counter() - t0,
        **res,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "details.json").write_text(json.dumps(details, indent=2, default=str))
    files = plot(runs, args.out)
    for key, per in imp.items():
        best = max(per.items(), key=lambda kv: kv[1]["avg_jct_reduction"])
        print(
            f"{key}: best aware policy {best[0]} cuts avg JCT by "
            f"{best[1]['avg_jct_reduction'] * 100:.1f} % ({best[1]['avg_jct_speedup']:.2f}x)"
        )
    print(f"wrote {args.out / 'summary.json'}, details.json and {', '.join(f.name for f in files)}")
    return summary


if __name__ == "__main__":
    main()
