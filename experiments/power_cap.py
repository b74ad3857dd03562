"""A site power cap from 100 % down to 50 % of peak draw: wait for headroom vs power-limit devices.

Method:

1. Cluster: the openb GPU node list (6,212 GPUs), undisclosed G2/G3 neutral (= T4).
   Power (``clustersim.power``): catalogue idle and TDP per device, node overhead 27.5 %
   of GPU TDP, PUE 1.58. *Peak draw* = facility draw with every device allocated.
2. Workload: the openb default pods at FGD's evaluation load (tiled to 130 % of the
   cluster's GPUs, arrivals compressed into one hour; ``clustersim.hetero.inflate_jobs``),
   GPU-sharing pods class ``memory``, whole-GPU pods class ``compute``; roofline speeds.
3. Two ways to respect a cap ``c x peak`` (c = 1.0, 0.9, ..., 0.5):

   * ``wait`` -- policy ``power_aware`` (FIFO backfill, first fit) starts a job only if the
     added draw fits in the headroom; run under ``PowerCapGuard``, which rejects any start
     that would exceed the cap and records the exact draw series;
   * ``throttle`` -- every device gets the same power limit ``f x TDP``, the largest that
     keeps the all-allocated draw under the cap (``uniform_limit_fraction``); compute-bound
     work slows by the DVFS factor ``((f TDP - idle) / (TDP - idle))^(1/3)``, bandwidth-bound
     work does not; jobs start whenever devices are free (``blind_backfill``).

4. Reported per cap and mechanism: ``throughput`` = jobs completed per hour until 95 % of
   all jobs are done (this trace's last 5 % run for months and would otherwise set any
   end-to-end rate); ``work_rate_24h`` = reference GPU-hours of work delivered per hour in
   the first 24 h (exact for these non-preemptive runs); ``avg_jct_s``,
   ``energy_kwh`` (facility energy until the last job ends), peak draw and the largest
   draw / cap ratio at any instant (must be <= 1;
   checked twice: from the guard's live series and rebuilt independently from job records).

Writes ``DIR/summary.json``: cap (fraction of peak, e.g. ``"0.70"``) -> {throughput,
avg_jct_s, energy_kwh, ... , "throttle": {same keys}}; ``DIR/details.json`` and two PNGs.
``--quick``: every 10th node, 600 pods, caps 1.0 and 0.6.

Each (cap, mechanism) is one point of a :mod:`clustersim.sweep` function sweep
(``run_point``; the input files' SHA-256 are part of its parameters; the runs are
deterministic, so the one ``seed`` is only a label) stored in ``DIR/points``: a re-run
reuses finished points, and ``--executor dask://HOST:PORT`` runs them on a Dask cluster.
The ``wait`` points store their draw series as table ``series``; ``details.json`` gives
``simulation_s``, the seconds the points measured when computed.
Run: ``python experiments/power_cap.py --out DIR [--quick] [--executor SPEC] [--workers N]
[--force]``.
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

from clustersim.hetero import (  # noqa: E402
    HeteroCluster,
    hetero_speed_model,
    inflate_jobs,
    job_class,
    openb_cluster,
    openb_hetero_jobs,
    replay_hetero,
)
from clustersim.power import (  # noqa: E402
    PowerModel,
    draw_series_from_records,
    dvfs_speed_factor,
    uniform_limit_fraction,
)
from clustersim.schedulers import hetero_policies as hp  # noqa: E402
from clustersim.sweep import file_digest  # noqa: E402
from clustersim.topology import Cluster  # noqa: E402
from clustersim.workload.job import Job  # noqa: E402
from experiments._points import add_sweep_args, run_points  # noqa: E402

TRACES = ROOT.parent / "shared" / "traces"
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
CAPS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
MECHANISMS = ("wait", "throttle")
NODES_CSV = "openb_node_list_gpu_node.csv"
POINT_ONLY = frozenset({"sim_seconds", "inputs"})
"""Point-summary keys that go to ``details.json``, not ``summary.json``."""


WINDOW_S = 24 * 3600.0


def delivered_rate(records: Sequence[Any], t0: float, window_s: float = WINDOW_S) -> float:
    """Reference GPU-hours of work delivered per hour during ``[t0, t0 + window_s]``.

    Non-preemptive runs: a job progresses at its speed from its start to its end, on
    ``num_gpus x share`` devices, so the work inside the window is exact.
    """
    t1 = t0 + window_s
    total = 0.0
    for r in records:
        start = r.first_start
        if start != start:  # NaN: never started
            continue
        end = r.end if r.end == r.end else t1
        overlap = min(end, t1) - max(start, t0)
        if overlap > 0:
            total += overlap * r.speed * r.job.gpu_demand
    return total / window_s


def throughput_95(summary: dict[str, Any], jobs_done: int) -> float | None:
    """Jobs per hour up to the completion of 95 % of them."""
    t = summary.get("jct_p95_completion_s")
    if not t:
        return None
    return 0.95 * jobs_done / (float(t) / 3600.0)


def run_wait(hc: HeteroCluster, jobs: list[Job], cap_frac: float) -> dict[str, Any]:
    m = hc.speed_matrix()
    pm = PowerModel(hc.cluster, hc.specs)
    cap = pm.cap_w(cap_frac)
    inner = hp.PowerAware(cap_w=cap, matrix=m, specs=hc.specs)
    guard = hp.PowerCapGuard(inner, pm, cap, strict=True)
    r = replay_hetero(
        hc, jobs, guard, matrix=m, policy_name="power_aware", power_series=guard.series
    )
    rebuilt = draw_series_from_records(r.records, pm, r.engine.start_time, r.engine.end_time)
    s = r.summary
    live = guard.series(r.engine.end_time)
    return {
        "throughput": throughput_95(s, s["jobs_completed"]),
        "avg_jct_s": s["avg_jct_s"],
        "energy_kwh": s["energy_kwh"],
        "work_rate_24h": delivered_rate(r.records, r.engine.start_time),
        "cap_w": cap,
        "peak_draw_w": s["peak_draw_w"],
        "max_draw_over_cap": max(live.peak_w, rebuilt.peak_w) / cap,
        "p99_jct_s": s["p99_jct_s"],
        "avg_queue_delay_s": s["avg_queue_delay_s"],
        "jobs_completed": s["jobs_completed"],
        "makespan_s": s["makespan_s"],
        "series": (live.t - r.engine.start_time, live.draw_w),
    }


def run_throttle(hc: HeteroCluster, jobs: list[Job], cap_frac: float) -> dict[str, Any]:
    m = hc.speed_matrix()
    base_pm = PowerModel(hc.cluster, hc.specs)
    cap = base_pm.cap_w(cap_frac)
    f = uniform_limit_fraction(base_pm, cap)
    pm = PowerModel(hc.cluster, hc.specs, power_limit_fraction=f)
    factor = {t: dvfs_speed_factor(f * s.tdp_w, s) for t, s in hc.specs.items()}
    base = hetero_speed_model(m)
    col = {t: factor[t] for t in hc.cluster.device_types}

    def speed(job: Job, devices: tuple[int, ...], cluster: Cluster) -> float:
        s = base(job, devices, cluster)
        if job_class(job) != "compute":
            return s
        node_of = cluster.node_of
        return s * min(col[cluster.node_type[int(node_of[d])]] for d in devices)

    r = replay_hetero(
        hc,
        jobs,
        hp.BlindBackfill(matrix=m, specs=hc.specs),
        matrix=m,
        speed_model=speed,
        policy_name="blind_backfill+power_limit",
        power_model=pm,
    )
    s = r.summary
    return {
        "throughput": throughput_95(s, s["jobs_completed"]),
        "avg_jct_s": s["avg_jct_s"],
        "energy_kwh": s["energy_kwh"],
        "work_rate_24h": delivered_rate(r.records, r.engine.start_time),
        "cap_w": cap,
        "peak_draw_w": s["peak_draw_w"],
        "max_draw_over_cap": s["peak_draw_w"] / cap,
        "power_limit_fraction_of_tdp": f,
        "compute_speed_factor": {t: factor[t] for t in sorted(factor)},
        "p99_jct_s": s["p99_jct_s"],
        "avg_queue_delay_s": s["avg_queue_delay_s"],
        "jobs_completed": s["jobs_completed"],
        "makespan_s": s["makespan_s"],
    }


_DATA: dict[str, Any] = {}


def load_inputs(
    nodes_csv: str, pods_csv: str, every: int, max_jobs: int | None, target: float
) -> tuple[HeteroCluster, list[Job]]:
    """The openb cluster (every ``every``-th node) and its inflated pods (cached per process)."""
    key = (nodes_csv, pods_csv, every, max_jobs, target)
    if _DATA.get("key") != key:
        hc = openb_cluster(Path(nodes_csv), every=every)
        jobs, _ = openb_hetero_jobs(Path(pods_csv), hc)
        if max_jobs is not None:
            jobs = jobs[:max_jobs]
        _DATA.update(key=key, hc=hc, jobs=inflate_jobs(jobs, hc.cluster.num_devices, target=target))
    return _DATA["hc"], _DATA["jobs"]


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point: cap ``cap`` (fraction of peak) respected by ``mechanism``.

    ``wait`` returns :func:`run_wait`'s numbers with its draw series as table ``series``
    (``t_s`` since the start, ``draw_w``); ``throttle`` returns :func:`run_throttle`'s.
    ``sim_seconds`` is the time the run took; ``inputs`` the job count and the uncapped
    power model's peak and idle-floor draw (for ``details.json``).
    """
    max_jobs = params["max_jobs"]
    hc, jobs = load_inputs(
        str(params["nodes_csv"]),
        str(params["pods_csv"]),
        int(params["node_stride"]),
        None if max_jobs is None else int(max_jobs),
        float(params["target"]),
    )
    cap = float(params["cap"])
    mech = str(params["mechanism"])
    t0 = time.perf_counter()
    if mech == "wait":
        r = run_wait(hc, jobs, cap)
        t, w = r.pop("series")
        r["tables"] = {"series": {"t_s": np.asarray(t).tolist(), "draw_w": np.asarray(w).tolist()}}
    elif mech == "throttle":
        r = run_throttle(hc, jobs, cap)
    else:
        raise ValueError(f"unknown mechanism {mech!r}; known: {', '.join(MECHANISMS)}")
    r["sim_seconds"] = time.perf_counter() - t0
    pm = PowerModel(hc.cluster, hc.specs)
    r["inputs"] = {"jobs": len(jobs), "peak_draw_w": pm.peak_w, "idle_floor_w": pm.idle_floor_w}
    return r


def plot(summary: dict[str, Any], series: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[Path] = []
    caps = sorted((float(k) for k in summary), reverse=True)
    keys = [f"{c:.2f}" for c in caps]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, metric, label, scale in (
        (axes[0], "throughput", "throughput (jobs/h until 95 % done)", 1.0),
        (axes[1], "avg_jct_s", "average JCT (h)", 3600.0),
        (axes[2], "energy_kwh", "facility energy (MWh)", 1000.0),
    ):
        for i, (mech, get) in enumerate(
            (("wait (power_aware)", lambda k: summary[k]), ("throttle (power limit)", None))
        ):
            vals = [
                (summary[k] if get else summary[k]["throttle"])[metric] or float("nan")
                for k in keys
            ]
            ax.plot(
                [c * 100 for c in caps],
                [v / scale for v in vals],
                marker="os"[i],
                color=OKABE_ITO[5 + i],
                ls=("-", "--")[i],
                label=mech,
            )
        ax.set_xlabel("power cap (% of peak facility draw)")
        ax.set_ylabel(label)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[0].set_title("Throughput")
    axes[1].set_title("Average job completion time")
    axes[2].set_title("Energy")
    fig.suptitle("openb trace at FGD load under a site power cap")
    fig.tight_layout()
    files.append(out / "power_cap_sweep.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.4))
    for i, (k, (t, w)) in enumerate(sorted(series.items(), reverse=True)):
        cap = summary[k]["cap_w"]
        color = OKABE_ITO[(i + 1) % 8]
        ax.step(t / 3600.0, w / 1e6, where="post", color=color, label=f"cap {float(k) * 100:.0f} %")
        ax.axhline(cap / 1e6, color=color, ls=":", lw=1)
    ax.set_xlim(0, 12)
    ax.set_xlabel("time since first arrival (h)")
    ax.set_ylabel("facility draw (MW)")
    ax.set_title("Power draw over time under power_aware (dotted: caps)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.append(out / "power_cap_draw.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)
    return files


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--quick", action="store_true", help="every 10th node, 600 pods, 2 caps")
    ap.add_argument("--traces", type=Path, default=TRACES, help="the shared/traces folder")
    ap.add_argument("--pods", default="openb_pod_list_default.csv", help="openb pod list")
    ap.add_argument("--caps", type=float, nargs="+", default=list(CAPS), help="fractions of peak")
    add_sweep_args(ap, workers=1)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    d = args.traces / "alibaba-gpu-2023-openb"
    nodes_csv = str((d / NODES_CSV).resolve())
    pods_csv = str((d / args.pods).resolve())
    every = 10 if args.quick else 1
    caps = [1.0, 0.6] if args.quick else args.caps
    run = run_points(
        args.out,
        script="power_cap",
        name="power-cap",
        base={
            "nodes_csv": nodes_csv,
            "pods_csv": pods_csv,
            "inputs_sha256": {
                "nodes": file_digest(Path(nodes_csv)),
                "pods": file_digest(Path(pods_csv)),
            },
            "node_stride": every,
            "max_jobs": 600 if args.quick else None,
            "target": 1.3,
        },
        grid={"cap": [float(c) for c in caps], "mechanism": list(MECHANISMS)},
        seeds=[0],
        executor=args.executor,
        workers=args.workers,
        force=args.force,
    )
    summary: dict[str, Any] = {}
    series: dict[str, Any] = {}
    for c in caps:
        key = f"{c:.2f}"
        per = {pt.params["mechanism"]: pt for pt in run.results if pt.params["cap"] == float(c)}
        w = {k: v for k, v in per["wait"].summary.items() if k not in POINT_ONLY}
        tab = per["wait"].table("series")
        series[key] = (np.asarray(tab["t_s"]), np.asarray(tab["draw_w"]))
        w["throttle"] = {k: v for k, v in per["throttle"].summary.items() if k not in POINT_ONLY}
        summary[key] = w
        th = w["throttle"]
        print(
            f"  cap {c * 100:5.1f} %  wait: {w['throughput']:8.1f} jobs/h  JCT "
            f"{w['avg_jct_s']:9.0f} s  {w['energy_kwh']:10.0f} kWh  max/cap "
            f"{w['max_draw_over_cap']:.4f} | throttle: {th['throughput']:8.1f} jobs/h  JCT "
            f"{th['avg_jct_s']:9.0f} s  {th['energy_kwh']:10.0f} kWh",
            flush=True,
        )
    details = {
        "method": (__doc__ or "").strip(),
        **run.results[0].summary["inputs"],
        "wall_s": time.perf_counter() - t0,
        "simulation_s": run.compute_seconds("sim_seconds"),
        "points": run.line(),
        "results": summary,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "details.json").write_text(json.dumps(details, indent=2, default=str))
    files = plot(summary, series, args.out)
    print(run.line())
    print(f"wrote {args.out / 'summary.json'}, details.json and {', '.join(f.name for f in files)}")
    return summary


if __name__ == "__main__":
    main()
