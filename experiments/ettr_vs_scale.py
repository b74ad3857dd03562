"""ETTR of one gang job from 1k to 100k devices: baseline versus fast recovery.

Question: what does it take to stay above 95 % ETTR at 10k+ devices, and under
which assumptions do providers' 97-99.5 % claims hold?

* baseline: Meta-RSC-style recovery (5-minute health checks, 10-minute NCCL
  timeout for hangs, 1-minute requeue, u0 = 5 min), 5 % cold reserve, synchronous
  checkpoints to storage (4 GB per device; storage bandwidth scaled with the job
  as Llama 3's 2 TB/s per 16,384 GPUs) at the Young interval;
* fast: ByteRobust/Gemini-style -- detection in 10-30 s, in-place restart when
  nothing needs repair, warm standby (5 % hot spares), restart u0 / 10.87,
  in-memory peer checkpoints at the Young interval with an hourly storage tier.
Both use the default failure rates (Meta RSC pooled r_f split by Llama 3 shares).
An ablation adds the fast features one at a time at 16,384 and 100,000 devices,
a claims section runs the fast pipeline at lower failure rates, and a spares
section shrinks the warm-spare pool of the fast pipeline at 100,000 devices.

Each (configuration, size, seed) is one point of a :mod:`clustersim.sweep` function
sweep (``run_point``; configurations by name, see ``CONFIGS``) stored in ``DIR/points``.
A configuration the sections share (baseline, fast) runs once per size and seed; a
re-run reuses finished points, and ``--executor dask://HOST:PORT`` runs them on a Dask
cluster. ``runtime_s`` and ``sim_seconds_per_run`` are the simulation seconds the points
measured when computed.

Run: python experiments/ettr_vs_scale.py --out DIR [--quick] [--executor SPEC]
     [--workers N] [--force]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
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
    FailureModel,
    JobSpec,
    ReliabilityConfig,
    SparePool,
    Uniform,
    fast_config,
    meta_rsc_sources,
    simulate,
)
from clustersim.reliability.checkpoint import CheckpointPolicy  # noqa: E402
from clustersim.reliability.distributions import Fixed  # noqa: E402
from clustersim.reliability.failures import META_RSC2_RF  # noqa: E402
from clustersim.reliability.plots import (  # noqa: E402
    plot_breakdown,
    plot_ettr_vs_size,
    plot_grouped_bars,
)
from clustersim.reliability.recovery import (  # noqa: E402
    BYTEROBUST_WARM_STANDBY_SPEEDUP,
    DELTA_OVERPROVISION,
    META_U0,
)
from clustersim.reliability.runs import summarise_job  # noqa: E402
from experiments._points import (  # noqa: E402
    PointsRun,
    add_sweep_args,
    job_metrics,
    reliability_point,
    run_points,
)

DAY = 86400.0
SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 100000)
QUICK_SIZES = (1024, 16384, 100000)
CLAIMS = (
    (9600, 0.97, "ByteRobust 97 % (9,600 GPUs)"),
    (10000, 0.995, "Baidu Baige 99.5 % (10k cards)"),
    (16384, 0.90, "Llama 3 > 90 %"),
    (4096, 0.9881, "AWS HLAT 98.8 % (4,096 Trn1)"),
)
TARGETS = (0.95, 0.98, 0.99)
SPARE_FRACTIONS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05)


def ablation_steps() -> dict[str, ReliabilityConfig]:
    """Baseline, then fast features added one at a time, ending at the fast config."""
    base = ReliabilityConfig()
    fast = fast_config()
    r = base.recovery
    det = r.model_copy(
        update={"detection": Uniform(low=10, high=30), "hang_detection": Uniform(low=10, high=30)}
    )
    standby = det.model_copy(update={"reschedule": Fixed(value=0.0), "restart_in_place": True})
    hot = SparePool(hot_spare_fraction=DELTA_OVERPROVISION, reserve_fraction=0.0)
    quick_restart = standby.model_copy(
        update={"restart": Fixed(value=META_U0 / BYTEROBUST_WARM_STANDBY_SPEEDUP)}
    )
    return {
        "baseline": base,
        "+ detection 10-30 s": base.model_copy(update={"recovery": det}),
        "+ in-place restart, warm standby": base.model_copy(
            update={"recovery": standby, "spares": hot}
        ),
        "+ restart u0/10.87": base.model_copy(update={"recovery": quick_restart, "spares": hot}),
        "+ async checkpoints": base.model_copy(
            update={
                "recovery": quick_restart,
                "spares": hot,
                "checkpoint": CheckpointPolicy(mode="async"),
            }
        ),
        "+ in-memory checkpoints (= fast)": fast,
    }


def claims_configs() -> dict[str, ReliabilityConfig]:
    hw_only = meta_rsc_sources(include_software=False)
    rsc2 = FailureModel(sources=meta_rsc_sources(META_RSC2_RF))
    return {
        "baseline, default rates": ReliabilityConfig(),
        "baseline, RSC-2 rates": ReliabilityConfig(failures=rsc2),
        "fast, default rates": fast_config(),
        "fast, RSC-2 rates": fast_config(rsc2),
        "fast, no software/maintenance failures": fast_config(FailureModel(sources=hw_only)),
        "fast, RSC-2 rates, no software": fast_config(
            FailureModel(sources=meta_rsc_sources(META_RSC2_RF, include_software=False))
        ),
    }


def _spares(frac: float) -> ReliabilityConfig:
    """The fast pipeline with a warm-spare pool of ``frac`` and no cold reserve."""
    return fast_config().model_copy(
        update={"spares": SparePool(hot_spare_fraction=frac, reserve_fraction=0.0)}
    )


def _ablation(name: str) -> ReliabilityConfig:
    return ablation_steps()[name]


def _claim(name: str) -> ReliabilityConfig:
    return claims_configs()[name]


def _registry() -> dict[str, Callable[[], ReliabilityConfig]]:
    reg: dict[str, Callable[[], ReliabilityConfig]] = {
        "baseline": ReliabilityConfig,
        "fast": fast_config,
    }
    for name in ablation_steps():
        reg[f"ablation: {name}"] = functools.partial(_ablation, name)
    for name in claims_configs():
        reg[f"claims: {name}"] = functools.partial(_claim, name)
    for frac in SPARE_FRACTIONS:
        reg[f"fast, warm spares {frac:g}"] = functools.partial(_spares, frac)
    return reg


CONFIGS = _registry()
"""Configuration name (point parameter ``config``) -> the configuration."""


def canonical_names() -> dict[str, str]:
    """Each configuration name -> the first name with an equal configuration (runs once)."""
    built = {k: f() for k, f in CONFIGS.items()}
    out: dict[str, str] = {}
    for k, cfg in built.items():
        out[k] = next(j for j, other in built.items() if other == cfg)
    return out


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point: configuration ``config`` for a ``devices``-device gang job, one seed."""
    devices = int(params["devices"])
    t0 = time.perf_counter()
    res = simulate(
        CONFIGS[str(params["config"])](),
        JobSpec(f"job-{devices}", devices // 8),
        horizon=float(params["days"]) * DAY,
        rng=np.random.default_rng(int(params["seed"])),
    )
    return reliability_point(res, time.perf_counter() - t0)


class _Runs:
    """Stored points by (configuration, devices), each summarised over its seeds."""

    def __init__(self, run: PointsRun, canon: dict[str, str]) -> None:
        self.canon = canon
        self.by: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in run.results:  # point order: seeds ascending within a (config, devices)
            key = (str(r.params["config"]), int(r.params["devices"]))
            self.by.setdefault(key, []).append(r.summary)

    def __call__(self, config: str, devices: int) -> dict[str, Any]:
        pts = self.by[(self.canon[config], devices)]
        s = summarise_job([job_metrics(p) for p in pts])
        s["sim_seconds_per_run"] = float(np.mean([p["sim_seconds"] for p in pts]))
        return s


def allowed_loss(s: dict[str, Any], target: float) -> float:
    """Largest mean loss per interruption (s) that still meets ``target`` at this rate."""
    rate = s["interruptions_per_day"]["mean"] / DAY
    overhead = s["fractions"]["checkpoint"]
    return (1.0 - target - overhead) / rate if rate > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--quick", action="store_true", help="3 sizes, 1 seed, 7 days")
    ap.add_argument("--days", type=float, default=None, help="simulated days per run")
    ap.add_argument("--seeds", type=int, default=None, help="repetitions per point")
    ap.add_argument("--seed", type=int, default=7, help="first seed")
    add_sweep_args(ap, workers=1)
    args = ap.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    days = args.days or (7.0 if args.quick else 30.0)
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.quick else 3))]
    args.out.mkdir(parents=True, exist_ok=True)

    abl_sizes = (16384, 100000)
    claim_sizes = (9600, 16384, 100000)
    wanted: list[tuple[str, int]] = [(c, n) for n in sizes for c in ("baseline", "fast")]
    wanted += [(f"ablation: {k}", n) for k in ablation_steps() for n in abl_sizes]
    wanted += [(f"claims: {k}", n) for k in claims_configs() for n in claim_sizes]
    wanted += [(f"fast, warm spares {f:g}", 100000) for f in SPARE_FRACTIONS]
    canon = canonical_names()
    points = list(dict.fromkeys((canon[c], n) for c, n in wanted))
    run = run_points(
        args.out,
        script="ettr_vs_scale",
        name="ettr-vs-scale",
        base={"days": days},
        points=[{"config": c, "devices": n} for c, n in points],
        seeds=seeds,
        executor=args.executor,
        workers=args.workers,
        force=args.force,
    )
    get = _Runs(run, canon)

    details: dict[str, dict[str, Any]] = {}
    for n in sizes:
        b = get("baseline", n)
        f = get("fast", n)
        details[str(n)] = {"baseline": b, "fast": f}
        print(f"{n:>7} devices: baseline {b['ettr']['mean']:.3f}  fast {f['ettr']['mean']:.3f}")

    ablation: dict[str, dict[str, float]] = {}
    for name in ablation_steps():
        ablation[name] = {str(n): get(f"ablation: {name}", n)["ettr"]["mean"] for n in abl_sizes}

    claims: dict[str, dict[str, Any]] = {}
    for name in claims_configs():
        claims[name] = {}
        for n in claim_sizes:
            s = get(f"claims: {name}", n)
            claims[name][str(n)] = {
                "ettr": s["ettr"]["mean"],
                "interruptions_per_day": s["interruptions_per_day"]["mean"],
                "allowed_loss_per_interruption_s": {
                    f"{t:.2f}": allowed_loss(s, t) for t in TARGETS
                },
                "mean_loss_per_interruption_s": (
                    1 - s["ettr"]["mean"] - s["fractions"]["checkpoint"]
                )
                * DAY
                / max(s["interruptions_per_day"]["mean"], 1e-12),
            }

    # warm-spare pool size at 100k devices (fast pipeline): spares must cover nodes in repair
    spares: dict[str, dict[str, float]] = {}
    for frac in SPARE_FRACTIONS:
        s = get(f"fast, warm spares {frac:g}", 100000)
        spares[f"{frac:g}"] = {
            "ettr": s["ettr"]["mean"],
            "queueing_share": s["fractions"]["queueing"],
            "capacity_waits": s["capacity_waits"]["mean"],
        }

    timing_100k = (
        {
            k: details[str(100000)][k]["sim_seconds_per_run"] * (60.0 / days)
            for k in ("baseline", "fast")
        }
        if "100000" in details
        else {}
    )
    summary: dict[str, Any] = {
        str(n): {
            "baseline_ettr": details[str(n)]["baseline"]["ettr"]["mean"],
            "fast_ettr": details[str(n)]["fast"]["ettr"]["mean"],
            "baseline_ettr_std": details[str(n)]["baseline"]["ettr"]["std"],
            "fast_ettr_std": details[str(n)]["fast"]["ettr"]["std"],
        }
        for n in sizes
    }
    above = [n for n in sizes if summary[str(n)]["fast_ettr"] >= 0.95]
    summary.update(
        {
            "experiment": "ettr_vs_scale",
            "setup": {"days": days, "seeds": seeds, "sizes_devices": list(sizes)},
            "details": details,
            "ablation": ablation,
            "claims": claims,
            "spares_100k_fast": spares,
            "largest_size_fast_above_95": max(above) if above else None,
            "estimated_seconds_per_60_day_100k_run": timing_100k,
            "runtime_s": run.compute_seconds("sim_seconds"),
        }
    )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))

    plot_ettr_vs_size(
        list(sizes),
        {
            "baseline (Meta-RSC-style recovery)": [summary[str(n)]["baseline_ettr"] for n in sizes],
            "fast (ByteRobust/Gemini-style)": [summary[str(n)]["fast_ettr"] for n in sizes],
        },
        args.out / "ettr_vs_size.png",
        errors={
            "baseline (Meta-RSC-style recovery)": [
                summary[str(n)]["baseline_ettr_std"] for n in sizes
            ],
            "fast (ByteRobust/Gemini-style)": [summary[str(n)]["fast_ettr_std"] for n in sizes],
        },
        title=f"ETTR versus job size ({days:g}-day runs, default failure rates)",
        targets=(0.95,),
        claims=CLAIMS,
    )
    for mode in ("baseline", "fast"):
        plot_breakdown(
            [f"{n:,}" for n in sizes],
            [details[str(n)][mode]["fractions"] for n in sizes],
            args.out / f"breakdown_{mode}.png",
            title=f"Where wall time went: {mode} recovery",
            xlabel="job size (devices)",
        )
    plot_grouped_bars(
        list(ablation),
        {f"{int(n):,} devices": [ablation[k][str(n)] for k in ablation] for n in abl_sizes},
        args.out / "ablation.png",
        title="ETTR as fast-recovery features are added",
        ylabel="ETTR (productive / wall time)",
        xlabel="recovery pipeline",
    )
    print(run.line())
    print(f"wrote {args.out / 'summary.json'} and PNGs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
