"""Pooling savings: GPUs each serving policy needs for the same market load at equal SLO.

The market is the one of ``model_market_waste.py`` (86 models, GenAI long-tail
popularity, ServeGen m-large traffic, daily peak window, Azure conversation lengths,
H20 devices). For every policy the pool size is searched (bisection) for the smallest
number of devices that serves the window with at least ``--target`` SLO attainment
(Aegaeon's SLO: TTFT 10 s, TBT 100 ms, token deadlines from arrival). ``dedicated``
is sized per model by the same load test (models are independent there).

Outputs ``summary.json`` (policy -> gpus_needed, slo_attainment, cost_per_mtok, tail
latency, utilisation; savings vs dedicated; a traffic sweep for dedicated vs the
pooled policies) and PNG figures.

Every number comes from one point of a :mod:`clustersim.sweep` function sweep
(``run_point``; the GenAI and Azure trace files' SHA-256 and every setting are part of
its parameters) stored in ``DIR/points``: one ``policy`` point per policy (a pooled
policy's search is bounded by the dedicated device count, which its point derives
from the same deterministic sizing; within one process the market and that sizing are
computed once) and, in a full run, one ``traffic`` point per traffic factor. A re-run
reuses them; ``wall_seconds`` and ``search_wall_s`` are the seconds the points measured
when computed. Run: ``python experiments/pooling_savings.py --out DIR [--quick]
[--executor SPEC] [--workers N] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import math
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

from clustersim.errors import ConfigError  # noqa: E402
from clustersim.hardware import get_device  # noqa: E402
from clustersim.serving import (  # noqa: E402
    SLO,
    attainment,
    dedicated_sizing,
    gpus_needed,
    simulate,
    summary,
)
from clustersim.serving.workload import (  # noqa: E402
    Calibration,
    Market,
    calibrated_market,
    load_servegen_clients,
)
from clustersim.sweep import file_digest  # noqa: E402
from experiments._points import PointResult, add_sweep_args, run_points  # noqa: E402

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442"]
POOLED = ["serverless", "multiplexed", "token_pooled", "hybrid_pooled"]
INPUT_FILES = {
    "genai": ("alibaba-genai-2026-sd", "lora_request_trace.csv"),
    "azure_conv": ("azure-llm-2023", "AzureLLMInferenceTrace_conv.csv"),
}


def _sizing(mk: Market, dev: Any, target: float) -> tuple[list[int], list[int]]:
    # size on the replayed window itself: the per-model busiest 10-min window of it
    n, tp = dedicated_sizing(
        mk, dev, SLO(), method="simulate", target=target, window=min(600.0, mk.duration)
    )
    return list(n), list(tp)


def _row(res: Any, g: int) -> dict[str, Any]:
    s = summary(res, None)
    return {
        "gpus_needed": g,
        "slo_attainment": s["slo_attainment"],
        "slo_attainment_strict": attainment(res, SLO(anchor="first_token")),
        "cost_per_mtok": s["cost_per_mtok"] if g else math.inf,
        "cost_usd_window": s["provisioned_usd"],
        "ttft_p99_s": s["ttft_p99_s"],
        "max_gap_p99_s": s["max_gap_p99_s"],
        "max_gap_p50_s": s["max_gap_p50_s"],
        "pool_utilization": s["pool_utilization"],
        "goodput_rps": s["goodput_rps"],
        "extra": {k: v for k, v in s["extra"].items() if k != "placement"},
    }


def _search(mk: Market, dev: Any, policy: str, target: float, lo: int, hi: int) -> dict[str, Any]:
    def run(g: int) -> Any:
        return simulate(mk, policy, device=dev, gpus=g)

    g, res, tried = gpus_needed(run, target, lo, hi)
    out: dict[str, Any] = {"searched": {str(k): v for k, v in sorted(tried.items())}}
    if res is None:
        out.update(
            {
                "gpus_needed": None,
                "reached": False,
                "note": f"target not reached with {hi} devices (the dedicated count)",
            }
        )
        return out
    out.update(_row(res, g))
    out["reached"] = True
    return out


def _base_rate(traces: Path) -> float:
    """The mean aggregate ServeGen m-large rate: ``calibrated_market``'s default total rate."""
    sg = traces / "alibaba-servegen-2025" / "data" / "language" / "m-large"
    agg = np.sum([c.rate for c in load_servegen_clients(sg)], axis=0)
    return float(agg.mean())


_MARKETS: dict[tuple[Any, ...], tuple[Market, Calibration]] = {}
_SIZINGS: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}


def _market(params: dict[str, Any], factor: float | None) -> tuple[Market, Calibration]:
    """The point's market (cached per process): base rate if ``factor`` is None."""
    traces = Path(str(params["traces"]))
    key = (str(traces), int(params["n_models"]), float(params["window"]), int(params["seed"]))
    key = (*key, factor)
    if key not in _MARKETS:
        rate = None if factor is None else _base_rate(traces) * factor
        _MARKETS[key] = calibrated_market(
            traces,
            int(params["n_models"]),
            float(params["window"]),
            np.random.default_rng(int(params["seed"])),
            shape="genai",
            at_peak=True,
            total_rate=rate,
        )
    return _MARKETS[key]


def _dedicated_sizing(
    params: dict[str, Any], factor: float | None, dev: Any
) -> tuple[Market, list[int], list[int]]:
    """The market and its dedicated per-model (instances, tp), cached per process."""
    mk, _ = _market(params, factor)
    key = (id(mk), dev.name, float(params["target"]))
    if key not in _SIZINGS:
        _SIZINGS[key] = _sizing(mk, dev, float(params["target"]))
    n, tp = _SIZINGS[key]
    return mk, n, tp


def _dedicated(
    params: dict[str, Any], factor: float | None, dev: Any
) -> tuple[int, dict[str, Any]]:
    mk, n, tp = _dedicated_sizing(params, factor, dev)
    res = simulate(mk, "dedicated", device=dev, instances=n, tp=tp)
    g = int(np.dot(n, tp))
    return g, _row(res, g)


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point, by ``kind`` (each stores the seconds it took as ``wall_seconds``).

    ``policy``: the row of ``policy`` on the market (rng ``seed``, ServeGen base rate):
    ``dedicated`` -- per-model load-test sizing, then a replay; a pooled policy -- the
    bisection between 2 and the dedicated device count (``search_wall_s`` its time); the
    ``dedicated`` point also stores the market's request count and calibration.
    ``traffic``: dedicated vs ``token_pooled`` and ``hybrid_pooled`` at ``factor`` x the
    base rate.
    """
    t0 = time.perf_counter()
    kind = str(params["kind"])
    dev = get_device(str(params["device"]))
    target = float(params["target"])
    out: dict[str, Any]
    if kind == "policy":
        p = str(params["policy"])
        if p == "dedicated":
            mk, cal = _market(params, None)
            _, out = _dedicated(params, None, dev)
            out["_market"] = {
                "device": dev.name,
                "requests": len(mk.requests),
                "calibration": cal.__dict__,
            }
        else:
            mk, n, tp = _dedicated_sizing(params, None, dev)
            t1 = time.perf_counter()
            out = _search(mk, dev, p, target, lo=2, hi=int(np.dot(n, tp)))
            out["search_wall_s"] = time.perf_counter() - t1
    elif kind == "traffic":
        f = float(params["factor"])
        gd, rd = _dedicated(params, f, dev)
        mk_s, _ = _market(params, f)
        out = {
            "traffic_factor": f,
            "total_rate": _base_rate(Path(str(params["traces"]))) * f,
            "dedicated_gpus": gd,
            "dedicated_utilization": rd["pool_utilization"],
        }
        for p in ("token_pooled", "hybrid_pooled"):
            r = _search(mk_s, dev, p, target, lo=2, hi=gd)
            out[p] = r.get("gpus_needed")
            out[p + "_searched"] = r["searched"]
            out[p + "_saving"] = (1 - r["gpus_needed"] / gd) if r.get("gpus_needed") else None
    else:
        raise ValueError(f"unknown point kind {kind!r}; known: policy, traffic")
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def run(
    out: Path,
    quick: bool,
    device_name: str,
    seed: int,
    target: float,
    *,
    executor: str | None = None,
    workers: int | None = 1,
    force: bool = False,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    n_models = 16 if quick else 86
    window = 40.0 if quick else 300.0
    # traffic sweep: where does token-level pooling reach Aegaeon's 82 % saving?
    factors = [] if quick else [0.05, 0.25, 1.0]
    run_ = run_points(
        out,
        script="pooling_savings",
        name="pooling-savings",
        base={
            "traces": str(TRACES.resolve()),
            "inputs_sha256": {k: file_digest(TRACES / Path(*v)) for k, v in INPUT_FILES.items()},
            "device": device_name,
            "n_models": n_models,
            "window": window,
            "target": target,
        },
        points=[
            *({"kind": "policy", "policy": p} for p in ["dedicated", *POOLED]),
            *({"kind": "traffic", "factor": f} for f in factors),
        ],
        seeds=[seed],
        executor=executor,
        workers=workers,
        force=force,
    )
    pts: list[PointResult] = run_.results
    policies: dict[str, Any] = {}
    market: dict[str, Any] = {}
    for pt in pts:
        if pt.params["kind"] == "policy":
            row = {k: v for k, v in pt.summary.items() if k != "wall_seconds"}
            market = row.pop("_market", market)
            policies[str(pt.params["policy"])] = row
    sweep = [
        {k: v for k, v in pt.summary.items() if k != "wall_seconds"}
        for pt in pts
        if pt.params["kind"] == "traffic"
    ]
    g_ded = policies["dedicated"]["gpus_needed"]
    for p in POOLED:
        g = policies[p].get("gpus_needed")
        policies[p]["gpu_saving_vs_dedicated"] = (1 - g / g_ded) if g else None
    tp = policies["token_pooled"]
    hy = policies["hybrid_pooled"]
    cal = market["calibration"]
    summ = {
        "experiment": "pooling_savings",
        "quick": quick,
        "device": market["device"],
        "n_models": n_models,
        "window_s": window,
        "requests": market["requests"],
        "target_attainment": target,
        "slo": {"ttft_s": 10.0, "tbt_s": 0.1, "anchor": "arrival (token deadlines)"},
        "calibration": cal,
        "policies": policies,
        "token_pooled_saving_vs_dedicated": tp.get("gpu_saving_vs_dedicated"),
        "meets_75pct_saving": bool((tp.get("gpu_saving_vs_dedicated") or 0) >= 0.75),
        "hybrid_vs_token_pooled": {
            "gpus": (hy.get("gpus_needed"), tp.get("gpus_needed")),
            "max_gap_p99_s": (hy.get("max_gap_p99_s"), tp.get("max_gap_p99_s")),
            "cost_per_mtok": (hy.get("cost_per_mtok"), tp.get("cost_per_mtok")),
        },
        "traffic_sweep": sweep,
        "paper": {
            "gpus_before": 1192,
            "gpus_after": 213,
            "saving": 1 - 213 / 1192,
            "source": "Aegaeon SOSP'25 [S], literature.md §1.2",
        },
        "wall_seconds": run_.compute_seconds("wall_seconds"),
    }
    (out / "summary.json").write_text(json.dumps(summ, indent=2, default=_json))
    _plots(out, policies, sweep, market["device"])
    print(run_.line())
    return summ


def _json(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return str(x)


def _plots(out: Path, policies: dict[str, Any], sweep: list[dict[str, Any]], dev: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["dedicated", *POOLED]
    g = [policies[n].get("gpus_needed") or 0 for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    bars = ax.bar(names, g, color=OKABE_ITO[: len(names)])
    for b, n in zip(bars, names, strict=True):
        if not policies[n].get("gpus_needed"):
            ax.text(
                b.get_x() + b.get_width() / 2,
                0,
                "not reached",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
            )
    ax.set_ylabel("GPUs needed at equal SLO attainment")
    ax.set_title(f"Same market load, each policy ({dev})")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "gpus_needed.png", dpi=150)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, n in enumerate(names):
        r = policies[n]
        if r.get("gpus_needed"):
            ax.scatter(r["gpus_needed"], r["max_gap_p99_s"], color=OKABE_ITO[i], s=50, label=n)
    ax.set_xlabel("GPUs needed")
    ax.set_ylabel("p99 longest token gap (s)")
    ax.set_yscale("log")
    ax.set_title("Devices vs tail token latency at the needed pool size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "gpus_vs_tail.png", dpi=150)
    plt.close(fig)

    if sweep:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        x = [s["total_rate"] for s in sweep]
        for i, p in enumerate(("token_pooled", "hybrid_pooled")):
            ax.plot(
                x,
                [s[p + "_saving"] if s[p + "_saving"] is not None else np.nan for s in sweep],
                "o-",
                color=OKABE_ITO[2 + i],
                label=p,
            )
        ax.axhline(0.75, color="grey", ls=":", lw=1, label="75 % saving")
        ax.axhline(1 - 213 / 1192, color=OKABE_ITO[4], ls="--", lw=1, label="Aegaeon 82 %")
        ax.set_xscale("log")
        ax.set_xlabel("market traffic (requests/s, daily mean)")
        ax.set_ylabel("GPU saving vs dedicated")
        ax.set_title("Pooling saving vs traffic level")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "saving_vs_traffic.png", dpi=150)
        plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="reduced run for tests (16 models, 40-s window, no traffic sweep)",
    )
    ap.add_argument("--device", default="H20")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.99, help="SLO attainment target")
    add_sweep_args(ap, workers=1)
    a = ap.parse_args(argv)
    if not TRACES.exists():
        raise SystemExit(f"traces not found at {TRACES}; this experiment needs ../shared/traces")
    try:
        get_device(a.device)  # an unknown device fails here, not inside a point
        s = run(
            a.out,
            a.quick,
            a.device,
            a.seed,
            a.target,
            executor=a.executor,
            workers=a.workers,
            force=a.force,
        )
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    for p, r in s["policies"].items():
        print(
            f"{p:14s} gpus={r.get('gpus_needed')} attain={r.get('slo_attainment')} "
            f"cost/Mtok={r.get('cost_per_mtok')}"
        )
    print(f"wrote {a.out / 'summary.json'} and PNGs in {a.out}")
    return s


if __name__ == "__main__":
    main()
