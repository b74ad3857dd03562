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

Run: python experiments/ettr_vs_scale.py --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

try:
    import clustersim  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from clustersim.reliability import (
    FailureModel,
    JobSpec,
    ReliabilityConfig,
    SparePool,
    Uniform,
    fast_config,
    meta_rsc_sources,
)
from clustersim.reliability.checkpoint import CheckpointPolicy
from clustersim.reliability.distributions import Fixed
from clustersim.reliability.failures import META_RSC2_RF
from clustersim.reliability.plots import plot_breakdown, plot_ettr_vs_size, plot_grouped_bars
from clustersim.reliability.recovery import (
    BYTEROBUST_WARM_STANDBY_SPEEDUP,
    DELTA_OVERPROVISION,
    META_U0,
)
from clustersim.reliability.runs import run_seeds, summarise_job

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


def _job(devices: int) -> JobSpec:
    return JobSpec(f"job-{devices}", devices // 8)


def _run(cfg: ReliabilityConfig, devices: int, horizon: float, seeds: list[int]) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = run_seeds(cfg, _job(devices), horizon=horizon, seeds=seeds)
    s = summarise_job([r.jobs[0] for r in res])
    s["sim_seconds_per_run"] = (time.perf_counter() - t0) / len(seeds)
    return s


def allowed_loss(s: dict[str, Any], target: float) -> float:
    """Largest mean loss per interruption (s) that still meets ``target`` at this rate."""
    rate = s["interruptions_per_day"]["mean"] / DAY
    overhead = s["fractions"]["checkpoint"]
    return (1.0 - target - overhead) / rate if rate > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--quick", action="store_true", help="3 sizes, 1 seed, 7 days")
    ap.add_argument("--days", type=float, default=None, help="simulated days per run")
    ap.add_argument("--seeds", type=int, default=None, help="repetitions per point")
    ap.add_argument("--seed", type=int, default=7, help="first seed")
    args = ap.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    days = args.days or (7.0 if args.quick else 30.0)
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.quick else 3))]
    horizon = days * DAY
    args.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    base_cfg, fast_cfg = ReliabilityConfig(), fast_config()
    details: dict[str, dict[str, Any]] = {}
    for n in sizes:
        b = _run(base_cfg, n, horizon, seeds)
        f = _run(fast_cfg, n, horizon, seeds)
        details[str(n)] = {"baseline": b, "fast": f}
        print(f"{n:>7} devices: baseline {b['ettr']['mean']:.3f}  fast {f['ettr']['mean']:.3f}")

    abl_sizes = (16384, 100000)
    ablation: dict[str, dict[str, float]] = {}
    for name, cfg in ablation_steps().items():
        ablation[name] = {str(n): _run(cfg, n, horizon, seeds)["ettr"]["mean"] for n in abl_sizes}

    claim_sizes = (9600, 16384, 100000)
    claims: dict[str, dict[str, Any]] = {}
    for name, cfg in claims_configs().items():
        claims[name] = {}
        for n in claim_sizes:
            s = _run(cfg, n, horizon, seeds)
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
    fast_base = fast_config()
    for frac in SPARE_FRACTIONS:
        cfg = fast_base.model_copy(
            update={"spares": SparePool(hot_spare_fraction=frac, reserve_fraction=0.0)}
        )
        s = _run(cfg, 100000, horizon, seeds)
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
            "runtime_s": time.perf_counter() - t_all,
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
    print(f"wrote {args.out / 'summary.json'} and PNGs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
