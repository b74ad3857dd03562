"""Mixed cluster: training (Philly) and a serving market (ServeGen/GenAI/Azure) on one cluster.

One cluster of H20 nodes (8 devices each) is shared by a real training trace (the
bundled Philly sample, jobs submitted from day ``--day`` for ``--hours``) and a
calibrated serving market (``calibrated_market``: GenAI popularity, ServeGen m-large
daily cycle and burstiness, Azure conversation lengths; the window starts at midnight
so the daily cycle is in it). The serving rate is set so that inference is
``--inference-share`` (65 %, the middle of the issue's "60-70 % of new demand is
inference"; not in literature.md, grade [U]) of the new GPU demand:

* training new demand = sum over jobs submitted in the window of
  ``num_gpus * min(duration, H - submit) / H`` (devices, mean over the window);
* serving new demand = mean over 10-minute windows of the serving plan's devices
  (:func:`clustersim.mixed.serving_plan`), found by bisection on the total rate with
  the rates of one reference market scaled (the plan at rate ``R`` equals the plan of
  the reference market at ``headroom' = (1 + headroom) R / R0 - 1``), then the market
  is drawn again at that rate from the same seed.

Cluster size rule: ``static_split``'s serving partition (peak plan, whole nodes) plus
training's new demand rounded up to whole nodes. The three policies of
:mod:`clustersim.mixed` run on it; outputs ``summary.json`` (both sides' metrics per
policy) and PNGs: stacked devices over time per policy, training JCT CDF, serving SLO
attainment and p99 TTFT. Run: ``python experiments/mixed_cluster.py --out DIR [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))

from clustersim.metrics import jct_cdf  # noqa: E402
from clustersim.mixed import (  # noqa: E402
    POLICIES,
    ServingSide,
    TrainingSide,
    check_conservation,
    serving_plan,
    simulate_mixed,
    window_jobs,
)
from clustersim.serving.workload import calibrated_market  # noqa: E402
from clustersim.workload.loaders import load_csv  # noqa: E402
from experiments._points import PointResult, add_sweep_args, run_points  # noqa: E402

SAMPLE = ROOT / "src" / "clustersim" / "data" / "traces" / "philly-sample.csv"
TRACES = ROOT.parent / "shared" / "traces"
OKABE_ITO = {"training": "#0072B2", "serving": "#E69F00", "idle": "#BBBBBB", "held": "#D55E00"}
POLICY_COLOURS = {"static_split": "#0072B2", "serving_first": "#D55E00", "borrow_idle": "#009E73"}


def training_demand(jobs: list[Any], horizon: float) -> float:
    """Mean devices of new training demand in ``[0, horizon)`` (rule in the module doc)."""
    return float(sum(j.num_gpus * min(j.duration, horizon - j.submit_time) for j in jobs)) / horizon


def serving_rate_for(
    side: ServingSide, rate0: float, target: float, device: str, gpn: int
) -> tuple[float, float]:
    """Total rate (req/s) whose plan's mean devices is ``target``; returns (rate, devices)."""

    def mean_devices(rate: float) -> float:
        h = (1.0 + side.headroom) * rate / rate0 - 1.0
        return float(serving_plan(replace(side, headroom=h), device, gpn).devices.mean())

    lo, hi = 0.0, rate0
    while mean_devices(hi) < target:
        lo, hi = hi, hi * 2.0
        if hi > 1e6:
            break
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if mean_devices(mid) < target:
            lo = mid
        else:
            hi = mid
    return hi, mean_devices(hi)


def _setup(
    seed: int, day: float, hours: float, n_models: int, share: float, headroom: float
) -> tuple[int, TrainingSide, ServingSide, Any, dict[str, Any]]:
    """Both sides and the cluster size (rules in the module doc); deterministic in ``seed``."""
    device, gpn = "H20", 8
    H = hours * 3600.0
    all_jobs, _ = load_csv(SAMPLE)
    jobs = window_jobs(all_jobs, day * 86400.0, H)
    train = TrainingSide(tuple(jobs))
    t_dem = training_demand(jobs, H)
    s_target = share / (1.0 - share) * t_dem
    rate0 = 10.0
    mk0, _ = calibrated_market(
        TRACES, n_models, H, np.random.default_rng(seed), total_rate=rate0, at_peak=False
    )
    side0 = ServingSide(mk0, headroom=headroom)
    rate, _ = serving_rate_for(side0, rate0, s_target, device, gpn)
    mk, _ = calibrated_market(
        TRACES, n_models, H, np.random.default_rng(seed), total_rate=rate, at_peak=False
    )
    side = ServingSide(mk, headroom=headroom)
    plan = serving_plan(side, device, gpn)
    s_dem = float(plan.devices.mean())
    p_static = -(-plan.static_devices // gpn)
    nodes = p_static + math.ceil(t_dem / gpn)
    info: dict[str, Any] = {
        "cluster": {"nodes": nodes, "gpus_per_node": gpn, "device": device, "devices": nodes * gpn},
        "horizon_s": H,
        "training_trace": {
            "file": str(SAMPLE.relative_to(ROOT)),
            "window_start_day": day,
            "jobs": len(jobs),
            "new_demand_gpus": t_dem,
        },
        "serving_market": {
            "models": n_models,
            "total_rate_rps": rate,
            "requests": len(mk.requests),
            "new_demand_gpus": s_dem,
            "plan_peak_gpus": int(plan.devices.max()),
            "static_partition_nodes": p_static,
            "headroom": headroom,
            "source": mk.source,
        },
        "inference_share_of_new_demand": s_dem / (s_dem + t_dem),
        "inference_share_target": share,
    }
    return nodes, train, side, plan, info


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point: one mixed-cluster ``policy`` on the market and trace of ``seed``.

    Returns both sides' metrics (``summary``), the set-up (``setup``), the measured times,
    and as tables the cluster timeline and the training JCT CDF the figures need.
    """
    t0 = time.perf_counter()
    seed = int(params["seed"])
    nodes, train, side, plan, info = _setup(
        seed,
        float(params["day"]),
        float(params["hours"]),
        int(params["models"]),
        float(params["inference_share"]),
        float(params["headroom"]),
    )
    setup_s = time.perf_counter() - t0
    pol = str(params["policy"])
    t1 = time.perf_counter()
    r = simulate_mixed(nodes, 8, "H20", train, side, pol, seed=seed, plan=plan)
    check_conservation(r)
    wall = time.perf_counter() - t1
    print(
        f"{pol}: attainment {r.summary['serving']['slo_attainment']:.4f}, "
        f"jobs done {r.summary['training']['jobs_completed']}, {wall:.1f} s",
        flush=True,
    )
    tl = r.timeline()
    x, y = jct_cdf(r.training_jobs)
    summary = json.loads(json.dumps(r.summary, default=_json))
    return {
        "summary": summary,
        "setup": json.loads(json.dumps(info, default=_json)),
        "devices": int(r.devices),
        "horizon_s": float(r.horizon),
        "setup_s": setup_s,
        "wall_s": wall,
        "tables": {
            "timeline": {k: [float(v) for v in tl[k]] for k in tl},
            "jct_cdf": {"jct_s": [float(v) for v in x], "fraction": [float(v) for v in y]},
        },
    }


def aggregate(out: Path, quick: bool, seed: int, pts: list[PointResult]) -> dict[str, Any]:
    """summary.json and the figures, from the stored points only."""
    first = pts[0].summary
    summary: dict[str, Any] = {
        "quick": quick,
        "seed": seed,
        **first["setup"],
        "policies": {str(p.params["policy"]): p.summary["summary"] for p in pts},
        "wall_s": {
            "setup": first["setup_s"],
            **{str(p.params["policy"]): p.summary["wall_s"] for p in pts},
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n")
    _plots(out, pts)
    return summary


def _json(v: Any) -> Any:
    if isinstance(v, np.integer | np.floating):
        return v.item()
    return str(v)


def _plots(out: Path, pts: list[PointResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pts), 1, figsize=(9, 2.6 * len(pts)), sharex=True)
    for ax, pt in zip(np.atleast_1d(axes), pts, strict=True):
        pol = str(pt.params["policy"])
        devices = int(pt.summary["devices"])
        tl = {k: np.asarray(v) for k, v in pt.table("timeline").items()}
        t = np.append(tl["time"], pt.summary["horizon_s"]) / 3600.0
        ys = [tl["training"], tl["serving"], tl["idle"]]
        ys = [np.append(y, y[-1]) for y in ys]
        ax.stackplot(
            t,
            *ys,
            labels=["training", "serving", "idle"],
            colors=[OKABE_ITO["training"], OKABE_ITO["serving"], OKABE_ITO["idle"]],
            step="post",
        )
        held = np.append(tl["serving_held"], tl["serving_held"][-1])
        ax.step(
            t,
            devices - held,
            where="post",
            color=OKABE_ITO["held"],
            lw=1.0,
            label="training limit (cluster − serving held)",
        )
        ax.set_ylim(0, devices)
        ax.set_ylabel("devices")
        ax.set_title(f"{pol}: devices over time")
    axes[0].legend(loc="upper right", fontsize=7, ncol=4)
    np.atleast_1d(axes)[-1].set_xlabel("time (h)")
    fig.tight_layout()
    fig.savefig(out / "gpus_over_time.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for pt in pts:
        pol = str(pt.params["policy"])
        cdf = pt.table("jct_cdf")
        x, y = np.asarray(cdf["jct_s"]), np.asarray(cdf["fraction"])
        ax.step(x / 3600.0, y, where="post", label=pol, color=POLICY_COLOURS[pol])
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (h, log)")
    ax.set_ylabel("fraction of completed jobs")
    ax.set_title("Training JCT CDF (jobs completed within the horizon)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "training_jct_cdf.png", dpi=120)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [str(pt.params["policy"]) for pt in pts]
    att = [100 * pt.summary["summary"]["serving"]["slo_attainment"] for pt in pts]
    ttft = [pt.summary["summary"]["serving"]["ttft_p99_s"] for pt in pts]
    cols = [POLICY_COLOURS[p] for p in names]
    a1.bar(names, att, color=cols)
    a1.set_ylabel("SLO attainment (%)")
    a1.set_ylim(min(att) - 5 if att else 0, 100)
    a1.set_title("Serving SLO attainment")
    a2.bar(names, ttft, color=cols)
    a2.set_ylabel("p99 TTFT (s)")
    a2.set_title("Serving p99 time to first token")
    for a in (a1, a2):
        a.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "serving_attainment.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument(
        "--quick", action="store_true", help="1.5 h from day 24 15:15, 6 models (for tests)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--day", type=float, default=None, help="Philly window start, day (24; quick 24 d 15:15)"
    )
    ap.add_argument("--hours", type=float, default=None, help="simulated hours (default 24)")
    ap.add_argument("--models", type=int, default=None, help="market models (default 12)")
    ap.add_argument("--inference-share", type=float, default=0.65)
    ap.add_argument("--headroom", type=float, default=0.25)
    add_sweep_args(ap, workers=1)
    a = ap.parse_args(argv)
    if not TRACES.exists():
        print(f"needs the public traces in {TRACES}", file=sys.stderr)
        return 2
    hours = a.hours if a.hours is not None else (1.5 if a.quick else 24.0)
    models = a.models if a.models is not None else (6 if a.quick else 12)
    day = a.day if a.day is not None else (24.0 + 15.25 / 24.0 if a.quick else 24.0)
    a.out.mkdir(parents=True, exist_ok=True)
    run = run_points(
        a.out,
        script="mixed_cluster",
        name="mixed-cluster",
        base={
            "day": day,
            "hours": hours,
            "models": models,
            "inference_share": a.inference_share,
            "headroom": a.headroom,
        },
        grid={"policy": list(POLICIES)},
        seeds=[a.seed],
        executor=a.executor,
        workers=a.workers,
        force=a.force,
    )
    aggregate(a.out, a.quick, a.seed, run.results)
    print(run.line())
    print(f"wrote {a.out / 'summary.json'} and PNGs in {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
