"""Model-market waste: how many GPUs serve the long tail when every model is dedicated.

Reproduces the setting of Aegaeon's "17.7 % of GPUs serve 1.35 % of requests"
(literature §1.1): a market of tens of models, each with its own reserved instances
sized for its peak (at least one), fed with the real long-tail popularity of the
Alibaba GenAI trace, a Bailian (ServeGen) traffic level, daily cycle and burstiness,
and Azure conversation token lengths. The share of GPUs held by the least-requested
94.1 % of models and the share of GPUs serving the least-requested 1.35 % of requests
come out of the trace and the sizing rule — no constant is set to hit them.

Also reported: the same market with Aegaeon's own two-point popularity (Zipf fitted to
"94.1 % of models -> 1.35 % of requests": request share is then an input, the GPU
share is still an output) and a sweep of the total traffic level, because the waste
share depends on how much traffic the head carries compared with the tail's count.

Every number comes from one point of a :mod:`clustersim.sweep` function sweep
(``run_point``; the GenAI and Azure trace files' SHA-256 and every setting are part of
its parameters) stored in ``DIR/points``: one ``headline`` point (the day's market,
its peak sizing and the replayed peak window), one ``paper_shape`` point, one
``traffic`` point per traffic factor and one ``seed`` point per seed of the spread.
A re-run reuses them; ``wall_seconds`` are the seconds the points measured when computed.
Run: ``python experiments/model_market_waste.py --out DIR [--quick] [--executor SPEC]
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT) not in sys.path:  # `experiments.<name>:run_point` must import (sweep workers too)
    sys.path.append(str(ROOT))

from clustersim.hardware import get_device  # noqa: E402
from clustersim.serving import SLO, dedicated_sizing, simulate, summary  # noqa: E402
from clustersim.serving.metrics import (  # noqa: E402
    Lorenz,
    attainment,
    gpu_lorenz,
    model_lorenz,
    per_gpu,
    tail_share,
)
from clustersim.serving.workload import calibrated_market, load_servegen_clients  # noqa: E402
from clustersim.sweep import file_digest  # noqa: E402
from experiments._points import PointResult, add_sweep_args, run_points  # noqa: E402

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442"]
PAPER_TAIL = 0.941
PAPER_REQ = 0.0135
PAPER_GPU = 0.177
N_MODELS = 86  # the GenAI trace's base-model count ("tens of models")
INPUT_FILES = {
    "genai": ("alibaba-genai-2026-sd", "lora_request_trace.csv"),
    "azure_conv": ("azure-llm-2023", "AzureLLMInferenceTrace_conv.csv"),
}


def _sizing(mk, device, method: str):  # type: ignore[no-untyped-def]
    """Per-model load test on each model's busiest 10-minute window (99 % attainment);
    ``--quick`` uses the analytic capacity rule instead (see dedicated_sizing)."""
    n, tp = dedicated_sizing(mk, device, SLO(), method=method, target=0.99)
    return np.asarray(n), np.asarray(tp)


def _base_rate(traces: Path) -> float:
    """The mean aggregate ServeGen m-large rate: ``calibrated_market``'s default total rate."""
    sg = traces / "alibaba-servegen-2025" / "data" / "language" / "m-large"
    agg = np.sum([c.rate for c in load_servegen_clients(sg)], axis=0)
    return float(agg.mean())


def _lorenz_table(lor: Lorenz) -> dict[str, list[float]]:
    return {"x": [float(v) for v in lor.x], "y": [float(v) for v in lor.y]}


def _sized_row(mk: Any, device: Any, method: str) -> dict[str, Any]:
    i_s, t_s = _sizing(mk, device, method)
    ts = tail_share(mk.request_counts(), i_s * t_s, PAPER_TAIL)
    return {
        "gpus_total": int((i_s * t_s).sum()),
        "cold_gpu_share": ts["gpu_share"],
        "cold_request_share": ts["request_share"],
        "gpu_share_serving_1.35pct_requests": model_lorenz(mk.request_counts(), i_s * t_s).x_at(
            PAPER_REQ
        ),
    }


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point, by ``kind`` (every point stores the seconds it took as ``wall_seconds``).

    ``headline``: the day's market (GenAI popularity, rng ``seed``), its peak sizing, tail
    shares, model Lorenz curve (table ``lorenz``) and the replay of its first
    ``sim_window`` seconds (table ``gpu_lorenz``); ``paper_shape``: the Zipf two-point
    market (rng ``seed + 2``, table ``lorenz``); ``traffic``: the sizing of the market at
    ``factor`` x the base rate (rng ``seed``); ``seed``: the sizing at rng ``seed + offset``.
    """
    t0 = time.perf_counter()
    kind = str(params["kind"])
    traces = Path(str(params["traces"]))
    device = get_device(str(params["device"]))
    n_models = int(params["n_models"])
    day = float(params["day"])
    seed = int(params["seed"])
    method = str(params["sizing"])
    out: dict[str, Any]
    if kind == "headline":
        rng = np.random.default_rng(seed)
        # 1) the day, for peak-sizing; 2) a peak window replayed under `dedicated`
        mk_day, cal = calibrated_market(traces, n_models, day, rng, shape="genai", at_peak=True)
        inst, tp = _sizing(mk_day, device, method)
        gpus = inst * tp
        counts = mk_day.request_counts()
        tail = tail_share(counts, gpus, PAPER_TAIL)
        lor = model_lorenz(counts, gpus)
        # the replayed window: the day's first `sim_window` seconds, which start at the
        # daily peak (at_peak=True), served by the day's peak-sized deployment
        sim_window = float(params["sim_window"])
        mk_win = mk_day.slice_time(0.0, sim_window)
        res = simulate(
            mk_win,
            "dedicated",
            device=device,
            instances=inst.tolist(),
            tp=tp.tolist(),
            processes=int(params["processes"]),
        )
        s = summary(res)
        glor = gpu_lorenz(res)
        pg = per_gpu(res)
        out = {
            "device": device.name,
            "gpus_total": int(gpus.sum()),
            "cold_models": int(tail["models"]),
            "cold_request_share": tail["request_share"],
            "cold_gpu_share": tail["gpu_share"],
            "gpu_share_serving_least_requested_1.35pct": lor.x_at(PAPER_REQ),
            "calibration": cal.__dict__,
            "replayed_window": {
                "source": mk_win.source,
                "duration_s": sim_window,
                "slo_attainment": s["slo_attainment"],
                "slo_attainment_strict_first_token_anchor": attainment(
                    res, SLO(anchor="first_token")
                ),
                "pool_utilization": s["pool_utilization"],
                "requests": s["requests"],
                "gpu_lorenz_share_serving_least_1.35pct": glor.x_at(PAPER_REQ),
                "gpus_idle_share_of_time": float(
                    pg["idle_s"].sum() / max(pg["allocated_s"].sum(), 1e-9)
                ),
                "wall_seconds": s["wall_seconds"],
            },
            "instances_per_model": inst.tolist(),
            "tp_per_model": tp.tolist(),
            "requests_per_model": counts.tolist(),
            "tables": {"lorenz": _lorenz_table(lor), "gpu_lorenz": _lorenz_table(glor)},
        }
    elif kind == "paper_shape":
        # paper-shape variant (Zipf from the two-point statistic)
        mk_p, cal_p = calibrated_market(
            traces, n_models, day, np.random.default_rng(seed + 2), shape="paper", at_peak=False
        )
        inst_p, tp_p = _sizing(mk_p, device, method)
        tail_p = tail_share(mk_p.request_counts(), inst_p * tp_p, PAPER_TAIL)
        lor_p = model_lorenz(mk_p.request_counts(), inst_p * tp_p)
        out = {
            "zipf_s": cal_p.zipf_s,
            "gpus_total": int((inst_p * tp_p).sum()),
            "cold_request_share": tail_p["request_share"],
            "cold_gpu_share": tail_p["gpu_share"],
            "gpu_share_serving_least_requested_1.35pct": lor_p.x_at(PAPER_REQ),
            "tables": {"lorenz": _lorenz_table(lor_p)},
        }
    elif kind == "traffic":
        # same seed: same architectures and cv per model, only traffic scales
        rate = _base_rate(traces) * float(params["factor"])
        mk_s, _ = calibrated_market(
            traces,
            n_models,
            day,
            np.random.default_rng(seed),
            shape="genai",
            total_rate=rate,
            at_peak=True,
        )
        out = {"total_rate": rate, **_sized_row(mk_s, device, method)}
    elif kind == "seed":
        # seed spread of the headline (architecture and cv draws change with the seed)
        sd = seed + int(params["offset"])
        mk_x, _ = calibrated_market(
            traces, n_models, day, np.random.default_rng(sd), shape="genai", at_peak=True
        )
        out = {"seed": sd, **_sized_row(mk_x, device, method)}
    else:
        raise ValueError(
            f"unknown point kind {kind!r}; known: headline, paper_shape, traffic, seed"
        )
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def _curve(pt: PointResult, name: str) -> Lorenz:
    t = pt.table(name)
    return Lorenz(np.asarray(t["x"], dtype=float), np.asarray(t["y"], dtype=float))


def run(
    out: Path,
    quick: bool,
    device_name: str,
    seed: int,
    processes: int,
    *,
    executor: str | None = None,
    workers: int | None = 1,
    force: bool = False,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    sizing = "analytic" if quick else "simulate"
    factors = [0.25, 4.0] if quick else [0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    n_seeds = 1 if quick else 5
    sim_window = 300.0 if quick else 3600.0
    run_ = run_points(
        out,
        script="model_market_waste",
        name="model-market-waste",
        base={
            "traces": str(TRACES.resolve()),
            "inputs_sha256": {k: file_digest(TRACES / Path(*v)) for k, v in INPUT_FILES.items()},
            "device": device_name,
            "n_models": N_MODELS,
            "sizing": sizing,
        },
        points=[
            {
                "kind": "headline",
                "day": 1800.0 if quick else 86400.0,
                "sim_window": sim_window,
                "processes": processes,
            },
            {"kind": "paper_shape", "day": 1800.0 if quick else 86400.0},
            *(
                {"kind": "traffic", "factor": f, "day": 1800.0 if quick else 2 * 3600.0}
                for f in factors
            ),
            *(
                {"kind": "seed", "offset": k, "day": 1800.0 if quick else 6 * 3600.0}
                for k in range(n_seeds)
            ),
        ],
        seeds=[seed],
        executor=executor,
        workers=workers,
        force=force,
    )
    by_kind: dict[str, list[PointResult]] = {}
    for pt in run_.results:
        by_kind.setdefault(str(pt.params["kind"]), []).append(pt)
    head_pt = by_kind["headline"][0]
    paper_pt = by_kind["paper_shape"][0]
    h = head_pt.summary
    p = paper_pt.summary
    sweep = [
        {k: v for k, v in pt.summary.items() if k != "wall_seconds"} for pt in by_kind["traffic"]
    ]
    seed_stats = [
        {k: v for k, v in pt.summary.items() if k != "wall_seconds"} for pt in by_kind["seed"]
    ]
    lor, glor, lor_p = (
        _curve(head_pt, "lorenz"),
        _curve(head_pt, "gpu_lorenz"),
        _curve(paper_pt, "lorenz"),
    )
    at_paper = h["gpu_share_serving_least_requested_1.35pct"]
    glor_at = h["replayed_window"]["gpu_lorenz_share_serving_least_1.35pct"]
    summary_json = {
        "experiment": "model_market_waste",
        "quick": quick,
        "device": h["device"],
        "n_models": N_MODELS,
        "policy": "dedicated (peak-sized, >= 1 instance per model)",
        "gpus_total": h["gpus_total"],
        "tail_model_fraction": PAPER_TAIL,
        "cold_models": h["cold_models"],
        "cold_request_share": h["cold_request_share"],
        "cold_gpu_share": h["cold_gpu_share"],
        "gpu_share_serving_least_requested_1.35pct": at_paper,
        "gpu_share_serving_least_requested_1.35pct_per_gpu_replay": glor_at,
        "phenomenon_double_digit_gpus_for_low_single_digit_requests": bool(
            glor_at >= 0.10 or at_paper >= 0.10
        ),
        "sizing": sizing,
        "paper": {
            "cold_request_share": PAPER_REQ,
            "cold_gpu_share": PAPER_GPU,
            "gpus_before": 1192,
            "source": "Aegaeon SOSP'25 [S], literature.md §1.1",
        },
        "calibration": h["calibration"],
        "replayed_window": h["replayed_window"],
        "paper_shape": {k: v for k, v in p.items() if k != "wall_seconds"},
        "traffic_sweep": sweep,
        "seed_spread": {
            "runs": seed_stats,
            "cold_gpu_share_mean": float(np.mean([x["cold_gpu_share"] for x in seed_stats])),
            "cold_gpu_share_min": float(np.min([x["cold_gpu_share"] for x in seed_stats])),
            "cold_gpu_share_max": float(np.max([x["cold_gpu_share"] for x in seed_stats])),
        },
        "instances_per_model": h["instances_per_model"],
        "tp_per_model": h["tp_per_model"],
        "requests_per_model": h["requests_per_model"],
        "wall_seconds": run_.compute_seconds("wall_seconds"),
    }
    (out / "summary.json").write_text(json.dumps(summary_json, indent=2, default=float))
    tail = {"gpu_share": h["cold_gpu_share"], "request_share": h["cold_request_share"]}
    _plots(out, lor, lor_p, glor, sweep, tail, h["device"])
    print(run_.line())
    return summary_json


def _plots(out, lor, lor_p, glor, sweep, tail, dev):  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.plot(
        lor.x, lor.y, color=OKABE_ITO[0], lw=2, label="GenAI trace popularity (models own GPUs)"
    )
    ax.plot(
        lor_p.x,
        lor_p.y,
        color=OKABE_ITO[1],
        lw=2,
        ls="--",
        label="Aegaeon two-point popularity (Zipf fit)",
    )
    ax.plot(
        glor.x,
        glor.y,
        color=OKABE_ITO[2],
        lw=1.5,
        ls=":",
        label="per-GPU requests, replayed peak hour",
    )
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, label="equal share")
    ax.scatter(
        [tail["gpu_share"]],
        [tail["request_share"]],
        color=OKABE_ITO[3],
        zorder=5,
        label=f"least-requested 94.1 % of models ({tail['gpu_share']:.1%} GPUs)",
    )
    ax.scatter(
        [PAPER_GPU],
        [PAPER_REQ],
        color=OKABE_ITO[4],
        marker="x",
        s=60,
        zorder=5,
        label="Aegaeon: 17.7 % GPUs / 1.35 % requests",
    )
    ax.set_xlabel("cumulative share of GPUs (least-requested first)")
    ax.set_ylabel("cumulative share of requests")
    ax.set_title(f"Dedicated serving of an 86-model market on {dev}: Lorenz curve")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(out / "lorenz.png", dpi=150)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    x = [s["total_rate"] for s in sweep]
    ax.plot(
        x,
        [s["cold_gpu_share"] for s in sweep],
        "o-",
        color=OKABE_ITO[0],
        label="GPU share of least-requested 94.1 % of models",
    )
    ax.plot(
        x,
        [s["gpu_share_serving_1.35pct_requests"] for s in sweep],
        "s--",
        color=OKABE_ITO[3],
        label="GPU share serving least-requested 1.35 % of requests",
    )
    ax.axhline(PAPER_GPU, color=OKABE_ITO[4], lw=1, ls=":", label="Aegaeon 17.7 %")
    ax.set_xscale("log")
    ax.set_xlabel("market traffic (requests/s, daily mean)")
    ax.set_ylabel("share of dedicated GPUs")
    ax.set_title("Tail waste vs market traffic (GenAI popularity, peak-sized)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "waste_vs_traffic.png", dpi=150)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="reduced run for tests (30-min day, 5-min replay, analytic sizing)",
    )
    ap.add_argument("--device", default="H20", help="device type (Model Studio beta used H20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=2, help="worker processes for replay")
    add_sweep_args(ap, workers=1)
    a = ap.parse_args(argv)
    if not TRACES.exists():
        raise SystemExit(f"traces not found at {TRACES}; this experiment needs ../shared/traces")
    s = run(
        a.out,
        a.quick,
        a.device,
        a.seed,
        a.processes,
        executor=a.executor,
        workers=a.workers,
        force=a.force,
    )
    print(
        f"gpus_total={s['gpus_total']} cold_request_share={s['cold_request_share']:.4f} "
        f"cold_gpu_share={s['cold_gpu_share']:.4f} "
        f"gpu_share@1.35%req={s['gpu_share_serving_least_requested_1.35pct']:.4f}"
    )
    print(
        f"wrote {a.out / 'summary.json'}, {a.out / 'lorenz.png'}, {a.out / 'waste_vs_traffic.png'}"
    )
    return s


if __name__ == "__main__":
    main()
