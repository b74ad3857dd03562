"""Supernode speedup: one large-model training trace on a fat tree, NVL72 and 384/512 supernodes.

Question: with the same devices' worth of compute and the same jobs, how much do job
completion time (JCT), makespan and delivered throughput change when the scale-up domain
grows from an 8-GPU node to a 72-GPU NVL72 rack or a 384/512-device supernode, and how
much does the placement policy matter on each?

Method:

1. Trace (seeded, ``--jobs``): dense transformer training jobs of six public model shapes
   (GPT-3 family / Llama 2 70B; sizes in ``MODELS``, [U]), 30 % of them small 1-4 device
   jobs, with Megatron-style tensor (TP <= 8) and pipeline parallelism, data parallel over
   the rest, a 4M-token global batch [U].
   Compute per step = 6 x params x tokens / (devices x 989 TFLOP/s x 0.40 MFU) (H100 peak
   [S], Llama 3 MFU [S]); every topology gets the *same* compute, so only the interconnect
   differs. Run time in steps: lognormal (median 2 h of compute, sigma 0.8, 10 min..24 h).
   Poisson arrivals at an offered load of 0.8 of the cluster (device-seconds of compute).
2. Topologies with the same device count (4,608 = lcm of 8, 72, 384, 512), built by
   :mod:`clustersim.topogen`, each with its published links (docs/speed-model.md):
   ``dgx-h100`` 8-GPU nodes on NVLink (450 GB/s) + rail-optimised 400 Gb/s fat tree;
   ``gb200-nvl72`` 72-GPU NVLink5 racks (900 GB/s) + 400 Gb/s; ``cloudmatrix384`` 384-NPU UB
   supernodes (392 GB/s, 3 % less and +1 us across servers) + 400 Gb/s RDMA [U];
   ``kunlun-p800-512`` 512-card supernodes with the catalogue's placeholder links
   (200 GB/s scale-up, 200 Gb/s scale-out, [U]). A control set ``iso:*`` repeats the four
   shapes with H100 links everywhere, isolating the size of the scale-up domain.
3. Speed model: :mod:`clustersim.perf`, hierarchical all-reduce, ``reference: compute_only``
   (trace durations are pure compute, so faster links count); FIFO scheduler; six
   placements: first_fit, pack, spread, consolidate, best_fit, buddy.
4. Reported per topology (its best placement by average JCT, named in ``placement``, as an
   operator would pick; every placement under ``placements``): average JCT, makespan,
   delivered tokens/s over the makespan, mean GPU-weighted speed, and the time-averaged
   stranded devices per level (:mod:`clustersim.fragmetrics`, typical job = most frequent
   size).

Writes ``DIR/summary.json`` (topology -> numbers), ``DIR/meta.json`` (method, trace
statistics, runtimes), the trace CSV and topology YAMLs it ran, and three PNG figures.
Each (topology, placement, seed) is one point of a :mod:`clustersim.sweep` function sweep
(``run_point``, which regenerates the seeded trace and the topology, so workers need no
shared files) stored in ``DIR/points``: a re-run reuses finished points, and
``--executor dask://HOST:PORT`` runs them on a Dask cluster. ``wall_s`` per placement is
the simulation time the point measured when computed.
Run: ``python experiments/supernode_speedup.py --out DIR [--quick] [--executor SPEC]
[--workers N] [--force]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
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

from clustersim import topogen as tg  # noqa: E402
from clustersim.api import simulate  # noqa: E402
from clustersim.config import validate_scenario  # noqa: E402
from clustersim.fragmetrics import stranded_timeline, typical_size  # noqa: E402
from clustersim.perf import DEFAULT_MFU  # noqa: E402
from clustersim.workload.loaders import load_csv  # noqa: E402
from experiments._points import add_sweep_args, run_points  # noqa: E402

DEVICES = 4608
"""lcm(8, 72, 384, 512): every topology tiles exactly."""
H100_FLOPS = 989e12
"""H100 SXM dense BF16 FLOP/s (literature.md §4.1) [S]."""
TOKENS_PER_STEP = 4 * 2**20
"""Global batch of 4M tokens (Llama 2) [U]."""
OFFERED_LOAD = 0.8
"""Offered load: compute device-seconds per second over cluster devices (a load setting)."""
MEDIAN_RUN_S = 2 * 3600.0
RUN_SIGMA = 0.8
RUN_CLIP_S = (600.0, 24 * 3600.0)

MODELS: dict[str, tuple[float, int, int, int, int, tuple[int, ...], float]] = {
    "350M": (350e6, 1024, 24, 1, 1, (1, 2, 4), 0.30),
    "1.3B": (1.3e9, 2048, 24, 1, 1, (8, 16), 0.20),
    "6.7B": (6.7e9, 4096, 32, 2, 1, (16, 32, 64), 0.20),
    "13B": (13e9, 5120, 40, 4, 1, (32, 64, 128), 0.15),
    "70B": (70e9, 8192, 80, 8, 4, (128, 256, 512), 0.10),
    "175B": (175e9, 12288, 96, 8, 8, (512, 1024), 0.05),
}
"""name: (params, hidden, layers, TP, PP, device counts, share of jobs). Shapes: GPT-3 family
(Brown et al. 2020, Table 2.1) and Llama 2 70B [U]. Small 1-4 device jobs (fine-tuning,
evaluation) are 30 % of jobs: GPU-job sizes are heavily skewed to 1 GPU in LLM clusters
(AcmeTrace Kalos: median 1 GPU, mean 26.8 GPUs per GPU job, NSDI'24 [P data])."""
PLACEMENTS = ("first_fit", "pack", "spread", "consolidate", "best_fit", "buddy")
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442"]


# --------------------------------------------------------------------------- inputs


def make_trace(n_jobs: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The training jobs (rows of the clustersim CSV with the speed model's columns)."""
    names = list(MODELS)
    shares = np.array([MODELS[m][6] for m in names])
    rows: list[dict[str, Any]] = []
    for i in range(n_jobs):
        name = names[int(rng.choice(len(names), p=shares / shares.sum()))]
        params, h, layers, tp, pp, sizes, _ = MODELS[name]
        n = int(sizes[int(rng.integers(len(sizes)))])
        step = 6.0 * params * TOKENS_PER_STEP / (n * H100_FLOPS * DEFAULT_MFU)
        target = float(
            np.clip(MEDIAN_RUN_S * math.exp(RUN_SIGMA * rng.standard_normal()), *RUN_CLIP_S)
        )
        steps = max(1, math.ceil(target / step))
        rows.append(
            {
                "job_id": f"{name}-{i}",
                "num_gpus": n,
                "duration": steps * step,
                "model_params": params,
                "tp": tp,
                "pp": pp,
                "hidden_size": h,
                "num_layers": layers,
                "tokens_per_step": TOKENS_PER_STEP,
                "step_time_s": step,
                "micro_batches": 4 * pp,
                "steps": steps,
            }
        )
    work = np.array([r["num_gpus"] * r["duration"] for r in rows])
    rate = OFFERED_LOAD * DEVICES / float(work.mean())  # jobs per second
    t = np.cumsum(rng.exponential(1.0 / rate, size=n_jobs))
    t -= t[0]
    for r, s in zip(rows, t, strict=True):
        r["submit_time"] = float(s)
    return rows


def write_trace(rows: Sequence[dict[str, Any]], path: Path) -> None:
    cols = ["job_id", "submit_time", "num_gpus", "duration"] + [
        k for k in rows[0] if k not in ("job_id", "submit_time", "num_gpus", "duration")
    ]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})


def topologies() -> dict[str, tuple[dict[str, Any], str]]:
    """name -> (topology mapping, scale-up domain label)."""
    out: dict[str, tuple[dict[str, Any], str]] = {
        "dgx-h100": (tg.fat_tree(DEVICES, device="H100", name="dgx-h100"), "8"),
        "gb200-nvl72": (
            tg.supernode_cluster(
                DEVICES, domain=72, gpus_per_node=4, device="GB200", name="gb200-nvl72"
            ),
            "72",
        ),
        "cloudmatrix384": (
            tg.supernode_cluster(
                DEVICES,
                domain=384,
                device="Ascend910C",
                domain_bandwidth=392e9 * 0.97,
                domain_latency=2e-6,
                name="cloudmatrix384",
            ),
            "384",
        ),
        "kunlun-p800-512": (
            tg.supernode_cluster(
                DEVICES,
                domain=512,
                device="KunlunP800",
                domain_latency=2e-6,
                name="kunlun-p800-512",
            ),
            "512",
        ),
    }
    out["iso:fat-tree-8"] = (tg.fat_tree(DEVICES, device="H100", name="iso-fat-tree-8"), "8")
    for label, dom, gpn in (("iso:nvl72", 72, 4), ("iso:sn384", 384, 8), ("iso:sn512", 512, 8)):
        spec = tg.supernode_cluster(
            DEVICES,
            domain=dom,
            gpus_per_node=gpn,
            device="H100",
            scale_up_bandwidth=450e9,
            nic_bandwidth=50e9,
            name=label.replace(":", "-"),
        )
        out[label] = (spec, str(dom))
    return out


# --------------------------------------------------------------------------- runs


def run_one(topo_path: Path, trace_path: Path, placement: str, seed: int) -> dict[str, Any]:
    sc = validate_scenario(
        {
            "name": f"{topo_path.stem}-{placement}",
            "seed": seed,
            "cluster": {"topology": str(topo_path), "network": "topology"},
            "workload": {"trace": str(trace_path), "format": "csv"},
            "scheduler": {"name": "fifo", "placement": placement},
            "perf": {"reference": "compute_only", "algorithm": "hierarchical"},
        },
        source="<supernode_speedup>",
    )
    t0 = time.perf_counter()
    res = simulate(sc)
    wall = time.perf_counter() - t0
    recs = res.engine.records
    done = [r for r in recs if not math.isnan(r.end)]
    tokens = sum(float(r.job.attrs["steps"]) * TOKENS_PER_STEP for r in done)
    gw = np.array([r.num_gpus for r in done], dtype=float)
    speeds = np.array([r.speed for r in done], dtype=float)
    span = res.summary["makespan_s"] or float("nan")
    typical = typical_size([r.job for r in recs])
    tl = stranded_timeline(res.cluster, recs, typical)
    end = max(r.end for r in done) if done else 0.0
    return {
        "avg_jct_s": res.summary["avg_jct_s"],
        "p99_jct_s": res.summary["p99_jct_s"],
        "avg_wait_s": res.summary["avg_wait_s"],
        "makespan_s": span,
        "tokens_per_s": tokens / span if span and span > 0 else None,
        "mean_speed": float((speeds * gw).sum() / gw.sum()) if len(done) else None,
        "min_speed": float(speeds.min()) if len(done) else None,
        "gpu_utilization": res.summary["gpu_utilization"],
        "jobs_completed": res.summary["jobs_completed"],
        "typical_job_devices": typical,
        "stranded_time_avg": tl.time_average(0.0, end),
        "wall_s": wall,
    }


def topology_file(name: str, spec: dict[str, Any], folder: Path) -> Path:
    """Write topology ``name`` as ``folder/<name>.yaml`` (``:`` becomes ``-``)."""
    path = folder / f"{name.replace(':', '-')}.yaml"
    path.write_text(tg.to_yaml(spec, [f"generated by experiments/supernode_speedup.py ({name})"]))
    return path


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point: the ``jobs``-job trace of ``seed`` on ``topology`` with ``placement``.

    Regenerates the trace (``default_rng(seed)``) and the topology into a temporary folder,
    byte-identical to the files ``main`` writes to ``DIR``.
    """
    name = str(params["topology"])
    seed = int(params["seed"])
    spec, _ = topologies()[name]
    with tempfile.TemporaryDirectory(prefix="supernode-") as tmp:
        trace = Path(tmp) / "trace.csv"
        write_trace(make_trace(int(params["jobs"]), np.random.default_rng(seed)), trace)
        path = topology_file(name, spec, Path(tmp))
        return run_one(path, trace, str(params["placement"]), seed)


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[Path] = []
    groups = [
        ("published links", [t for t in summary if not t.startswith("iso:")]),
        (
            "same links (H100: 450 GB/s up, 50 GB/s out)",
            [t for t in summary if t.startswith("iso:")],
        ),
    ]
    placements = list(next(iter(summary.values()))["placements"])
    metrics = [
        (
            "avg_jct_s",
            1 / 3600.0,
            "average JCT (h)",
            "fig_avg_jct.png",
            "Average job completion time",
        ),
        ("makespan_s", 1 / 3600.0, "makespan (h)", "fig_makespan.png", "Makespan"),
        (
            "tokens_per_s",
            1e-6,
            "delivered throughput (M tokens/s)",
            "fig_throughput.png",
            "Effective training throughput",
        ),
    ]
    for key, scale, ylabel, fname, title in metrics:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
        for ax, (gname, topos) in zip(axes, groups, strict=True):
            x = np.arange(len(topos))
            w = 0.8 / len(placements)
            for i, pl in enumerate(placements):
                vals = [(summary[t]["placements"][pl][key] or float("nan")) * scale for t in topos]
                ax.bar(
                    x + (i - (len(placements) - 1) / 2) * w,
                    vals,
                    w,
                    label=pl,
                    color=OKABE_ITO[i % len(OKABE_ITO)],
                )
            ax.set_xticks(x)
            ax.set_xticklabels(
                [f"{t}\n(domain {summary[t]['scale_up_domain']})" for t in topos], fontsize=8
            )
            ax.set_title(gname, fontsize=10)
            ax.set_xlabel("topology (scale-up domain, devices)")
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel(ylabel)
        axes[1].legend(title="placement", fontsize=8, loc="upper right")
        fig.suptitle(f"{title}, {DEVICES} devices, same trace and compute", fontsize=12)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=130)
        plt.close(fig)
        files.append(path)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (created)")
    ap.add_argument("--quick", action="store_true", help="small run for tests (fewer jobs)")
    ap.add_argument("--jobs", type=int, default=None, help="jobs in the trace (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    add_sweep_args(ap, workers=1)
    args = ap.parse_args(argv)
    n_jobs = args.jobs or (40 if args.quick else 300)
    placements = ("first_fit", "consolidate", "buddy") if args.quick else PLACEMENTS
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "topologies").mkdir(exist_ok=True)
    rng = np.random.default_rng(args.seed)
    rows = make_trace(n_jobs, rng)
    trace = out / "trace.csv"
    write_trace(rows, trace)
    jobs, _ = load_csv(trace)
    t_all = time.perf_counter()
    topos = topologies()
    for name, (spec, _) in topos.items():
        topology_file(name, spec, out / "topologies")
    run = run_points(
        out,
        script="supernode_speedup",
        name="supernode-speedup",
        base={"jobs": n_jobs},
        grid={"topology": list(topos), "placement": list(placements)},
        seeds=[args.seed],
        executor=args.executor,
        workers=args.workers,
        force=args.force,
    )
    summary: dict[str, Any] = {}
    for name, (_, domain) in topos.items():
        per: dict[str, Any] = {}
        for pt in run.results:
            if pt.params["topology"] == name:
                per[str(pt.params["placement"])] = pt.summary
        for pl in placements:
            print(
                f"{name:18s} {pl:12s} avg JCT {per[pl]['avg_jct_s'] / 3600:7.2f} h  makespan "
                f"{per[pl]['makespan_s'] / 3600:7.2f} h  speed {per[pl]['mean_speed']:.3f}",
                flush=True,
            )
        best = min(per, key=lambda p: (per[p]["avg_jct_s"], placements.index(p)))
        head = per[best]
        summary[name] = {
            "avg_jct_s": head["avg_jct_s"],
            "makespan_s": head["makespan_s"],
            "tokens_per_s": head["tokens_per_s"],
            "mean_speed": head["mean_speed"],
            "devices": DEVICES,
            "scale_up_domain": int(domain),
            "placement": best,
            "placements": per,
        }
    base = summary["dgx-h100"]["avg_jct_s"]
    for v in summary.values():
        v["jct_speedup_vs_dgx_h100"] = base / v["avg_jct_s"] if v["avg_jct_s"] else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    n_per_model: dict[str, int] = {}
    for r in rows:
        m = r["job_id"].split("-")[0]
        n_per_model[m] = n_per_model.get(m, 0) + 1
    meta = {
        "devices": DEVICES,
        "jobs": n_jobs,
        "jobs_per_model": n_per_model,
        "trace_device_seconds": float(sum(j.num_gpus * j.duration for j in jobs)),
        "offered_load": OFFERED_LOAD,
        "models": {k: [*v[:6], v[6]] for k, v in MODELS.items()},
        "tokens_per_step": TOKENS_PER_STEP,
        "mfu": DEFAULT_MFU,
        "h100_flops": H100_FLOPS,
        "scheduler": "fifo",
        "placements": list(placements),
        "headline": "per topology, the placement with the lowest average JCT",
        "perf": {"reference": "compute_only", "algorithm": "hierarchical"},
        "seed": args.seed,
        "wall_s": time.perf_counter() - t_all,
        "simulation_s": run.compute_seconds("wall_s"),
        "points": run.line(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    figs = plot(summary, out)
    print(run.line())
    print(
        f"wrote {out / 'summary.json'}, {out / 'meta.json'} and {', '.join(f.name for f in figs)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
