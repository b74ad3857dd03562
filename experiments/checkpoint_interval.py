"""Checkpoint-interval sweep for a 16,384-GPU job: does the measured optimum agree with Young/Daly?

Setup: one 2,048-node (16,384-GPU) job, default failure rates, baseline recovery,
synchronous checkpoints with fixed intervals from 0.2x to 5x the Young interval.
Two write costs: the Llama-3-class storage (4 GB per GPU at 2 TB/s per 16,384
GPUs, w = 32.8 s) and a slow storage (w = 5 min). Every interval of a seed sees
the *same* failure sequence (common random numbers), so differences between
intervals are not sampling noise. The measured optimum is the maximum of a
quadratic fit of mean ETTR against log(interval) around the best grid point.

Each (storage, multiplier, seed) is one point of a :mod:`clustersim.sweep` function
sweep (``run_point``, which regenerates its seed's failure sequence) stored in
``DIR/points``: a re-run reuses finished points, and ``--executor dask://HOST:PORT`` runs
them on a Dask cluster. ``runtime_s`` is the simulation seconds the points measured.

Run: python experiments/checkpoint_interval.py --out DIR [--quick] [--executor SPEC]
     [--workers N] [--force]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import clustersim  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT) not in sys.path:  # `experiments.<name>:run_point` must import (sweep workers too)
    sys.path.append(str(ROOT))

from clustersim.reliability import (  # noqa: E402
    CheckpointPolicy,
    ClusterLayout,
    JobSpec,
    ReliabilityConfig,
    checkpoint_costs,
    daly_interval,
    generate_failures,
    job_failure_rate,
    simulate,
    young_interval,
)
from clustersim.reliability.plots import plot_interval_sweep  # noqa: E402
from experiments._points import (  # noqa: E402
    add_sweep_args,
    job_metrics,
    reliability_point,
    run_points,
)

DAY = 86400.0
NODES = 2048
MULTIPLIERS = (0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0, 1.15, 1.35, 1.6, 2.0, 3.0, 5.0)
QUICK_MULTIPLIERS = (0.25, 0.5, 0.75, 1.0, 1.35, 2.0, 4.0)
WRITE_COSTS = {"fast storage (w = 32.8 s)": None, "slow storage (w = 300 s)": 300.0}
STORAGE = {"fast": "fast storage (w = 32.8 s)", "slow": "slow storage (w = 300 s)"}
"""Point parameter ``storage`` -> the case label (key of ``WRITE_COSTS``)."""


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


@functools.lru_cache(maxsize=1)
def _setup() -> tuple[ReliabilityConfig, ClusterLayout, float]:
    """Base config, the cluster layout (job + spares) and the job's MTTF (s)."""
    base = ReliabilityConfig()
    pool = NODES + base.spares.counts(NODES)[1] + base.spares.counts(NODES)[0]
    layout = ClusterLayout.for_model(base.failures, pool)
    mttf = 1.0 / job_failure_rate(base.failures, layout, range(NODES))
    return base, layout, mttf


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point: interval ``multiplier`` x Young for write cost ``storage``, one seed.

    The failure sequence is drawn from ``default_rng(seed)`` exactly as for every other
    interval of that seed (common random numbers); the simulator gets its own
    ``default_rng(seed)``.
    """
    days = float(params["days"])
    seed = int(params["seed"])
    w_override = WRITE_COSTS[STORAGE[str(params["storage"])]]
    horizon = days * DAY
    base, layout, mttf = _setup()
    failures = generate_failures(base.failures, layout, horizon, np.random.default_rng(seed))
    w = checkpoint_costs(policy_for(w_override, 1.0), NODES * 8, 1.0).blocking_cost
    young = young_interval(w, mttf)
    dt = float(params["multiplier"]) * young
    cfg = base.model_copy(update={"checkpoint": policy_for(w_override, dt)})
    t0 = time.perf_counter()
    res = simulate(
        cfg,
        JobSpec("job-16384", NODES),
        horizon=horizon,
        rng=np.random.default_rng(seed),
        failures=failures,
        layout=layout,
    )
    out = reliability_point(res, time.perf_counter() - t0)
    out.update(interval_s=dt, w_s=w, young_s=young, daly_s=daly_interval(w, mttf), job_mttf_s=mttf)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--quick", action="store_true", help="7 intervals, 2 seeds, 10 days")
    ap.add_argument("--days", type=float, default=None, help="simulated days per run")
    ap.add_argument("--seeds", type=int, default=None, help="failure sequences")
    ap.add_argument("--seed", type=int, default=99, help="first seed")
    add_sweep_args(ap, workers=1)
    args = ap.parse_args(argv)
    mults = QUICK_MULTIPLIERS if args.quick else MULTIPLIERS
    days = args.days or (10.0 if args.quick else 30.0)
    seeds = [args.seed + i for i in range(args.seeds or (2 if args.quick else 6))]
    args.out.mkdir(parents=True, exist_ok=True)

    run = run_points(
        args.out,
        script="checkpoint_interval",
        name="checkpoint-interval",
        base={"days": days},
        grid={"storage": list(STORAGE), "multiplier": list(mults)},
        seeds=seeds,
        executor=args.executor,
        workers=args.workers,
        force=args.force,
    )
    cases: dict[str, Any] = {}
    curves = {}
    markers = {}
    for key, label in STORAGE.items():
        pts = [r for r in run.results if r.params["storage"] == key]
        w, young, daly = (pts[0].summary[k] for k in ("w_s", "young_s", "daly_s"))
        mttf = pts[0].summary["job_mttf_s"]
        xs, means, stds = [], [], []
        for m in mults:
            at = [r for r in pts if r.params["multiplier"] == m]  # seed order
            e = [job_metrics(r.summary).ettr for r in at]
            xs.append(at[0].summary["interval_s"])
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
        "runtime_s": run.compute_seconds("sim_seconds"),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_interval_sweep(
        curves,
        markers,
        args.out / "interval_sweep.png",
        title=f"16,384-GPU job: ETTR vs checkpoint interval ({days:g} days, {len(seeds)} seeds)",
    )
    print(run.line())
    print(f"wrote {args.out / 'summary.json'} and PNGs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
