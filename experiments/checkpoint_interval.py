"""Checkpoint-interval sweep for a 16,384-GPU job: does the measured optimum agree with Young/Daly?

Setup: one 2,048-node (16,384-GPU) job, default failure rates, baseline recovery,
synchronous checkpoints with fixed intervals from 0.2x to 5x the Young interval.
Two write costs: the Llama-3-class storage (4 GB per GPU at 2 TB/s per 16,384
GPUs, w = 32.8 s) and a slow storage (w = 5 min). Every interval of a seed sees
the *same* failure sequence (common random numbers), so differences between
intervals are not sampling noise. The measured optimum is the maximum of a
quadratic fit of mean ETTR against log(interval) around the best grid point.

Run: python experiments/checkpoint_interval.py --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import clustersim  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from clustersim.reliability import (
    CheckpointPolicy,
    ClusterLayout,
    JobSpec,
    ReliabilityConfig,
    checkpoint_costs,
    daly_interval,
    generate_failures,
    job_failure_rate,
    young_interval,
)
from clustersim.reliability.plots import plot_interval_sweep
from clustersim.reliability.runs import run_seeds

DAY = 86400.0
NODES = 2048
MULTIPLIERS = (0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0, 1.15, 1.35, 1.6, 2.0, 3.0, 5.0)
QUICK_MULTIPLIERS = (0.25, 0.5, 0.75, 1.0, 1.35, 2.0, 4.0)
WRITE_COSTS = {"fast storage (w = 32.8 s)": None, "slow storage (w = 300 s)": 300.0}


def policy_for(w: float | None, interval: float) -> CheckpointPolicy:
    base = CheckpointPolicy(policy="fixed", interval=interval)
    if w is None:
        return base
    bw = base.state_bytes_per_device / w
    return base.model_copy(
        update={"storage_bandwidth_per_device": bw, "storage_read_bandwidth_per_device": bw}
    )


def measured_optimum(xs: list[float], ys: list[float]) -> float:
    """Maximum of a quadratic in log(x) through the best grid point and its neighbours."""
    i = int(np.argmax(ys))
    lo, hi = max(0, i - 2), min(len(xs), i + 3)
    if hi - lo < 3:
        return xs[i]
    lx = np.log(np.asarray(xs[lo:hi]))
    a, b, _ = np.polyfit(lx, np.asarray(ys[lo:hi]), 2)
    if a >= 0:
        return xs[i]
    return float(np.exp(np.clip(-b / (2 * a), lx.min(), lx.max())))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--quick", action="store_true", help="7 intervals, 2 seeds, 10 days")
    ap.add_argument("--days", type=float, default=None, help="simulated days per run")
    ap.add_argument("--seeds", type=int, default=None, help="failure sequences")
    ap.add_argument("--seed", type=int, default=99, help="first seed")
    args = ap.parse_args(argv)
    mults = QUICK_MULTIPLIERS if args.quick else MULTIPLIERS
    days = args.days or (10.0 if args.quick else 30.0)
    seeds = [args.seed + i for i in range(args.seeds or (2 if args.quick else 6))]
    horizon = days * DAY
    args.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    base = ReliabilityConfig()
    pool = NODES + base.spares.counts(NODES)[1] + base.spares.counts(NODES)[0]
    layout = ClusterLayout.for_model(base.failures, pool)
    failures = [
        generate_failures(base.failures, layout, horizon, np.random.default_rng(s)) for s in seeds
    ]
    mttf = 1.0 / job_failure_rate(base.failures, layout, range(NODES))
    job = JobSpec("job-16384", NODES)

    cases: dict[str, Any] = {}
    curves = {}
    markers = {}
    for label, w_override in WRITE_COSTS.items():
        w = checkpoint_costs(policy_for(w_override, 1.0), NODES * 8, 1.0).blocking_cost
        young = young_interval(w, mttf)
        daly = daly_interval(w, mttf)
        xs, means, stds = [], [], []
        for m in mults:
            dt = m * young
            cfg = base.model_copy(update={"checkpoint": policy_for(w_override, dt)})
            res = run_seeds(
                cfg, job, horizon=horizon, seeds=seeds, failures=failures, layout=layout
            )
            e = [r.jobs[0].ettr for r in res]
            xs.append(dt)
            means.append(float(np.mean(e)))
            stds.append(float(np.std(e, ddof=1)) if len(e) > 1 else 0.0)
        best = measured_optimum(xs, means)
        cases[label] = {
            "w_s": w,
            "job_mttf_h": mttf / 3600.0,
            "young_s": young,
            "daly_s": daly,
            "measured_optimum_s": best,
            "grid_best_s": xs[int(np.argmax(means))],
            "ratio_measured_to_young": best / young,
            "ratio_measured_to_daly": best / daly,
            "ettr_at_young": means[mults.index(1.0)] if 1.0 in mults else math.nan,
            "ettr_best_grid": max(means),
            "curve": [
                {"interval_s": x, "ettr_mean": y, "ettr_std": s}
                for x, y, s in zip(xs, means, stds, strict=True)
            ],
        }
        curves[label] = (xs, means, stds)
        markers[label] = [
            (young, f"Young {young / 60:.1f} min"),
            (best, f"measured {best / 60:.1f} min"),
        ]
        print(
            f"{label}: Young {young:.0f} s, Daly {daly:.0f} s, measured {best:.0f} s "
            f"(ratio {best / young:.2f})"
        )
    summary = {
        "experiment": "checkpoint_interval",
        "setup": {"gpus": NODES * 8, "days": days, "seeds": seeds, "multipliers": list(mults)},
        "cases": cases,
        "agrees_with_young_within_25pct": all(
            abs(c["ratio_measured_to_young"] - 1) <= 0.25 for c in cases.values()
        ),
        "runtime_s": time.perf_counter() - t_all,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_interval_sweep(
        curves,
        markers,
        args.out / "interval_sweep.png",
        title=f"16,384-GPU job: ETTR vs checkpoint interval ({days:g} days, {len(seeds)} seeds)",
    )
    print(f"wrote {args.out / 'summary.json'} and PNGs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
