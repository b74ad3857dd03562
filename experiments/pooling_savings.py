"""Pooling savings: GPUs each serving policy needs for the same market load at equal SLO.

Two markets (``--market``), both 86 models with GenAI long-tail popularity, ServeGen
m-large traffic (195.8 req/s daily mean), Azure conversation lengths, H20 devices and
Aegaeon's SLO (TTFT 10 s, TBT 100 ms, token deadlines from arrival):

* ``temporal`` (default, :mod:`clustersim.serving.temporal`): every model's traffic over
  a day is the sum of real ServeGen client days, so models peak at different times.
  ``dedicated`` is sized per model by a load test of the model's **own busiest
  10-minute window of the day** (>= 99 % attainment, >= 1 engine); a pooled policy gets
  one fixed pool for the day that must reach ``--target`` on each of the ``--k-windows``
  busiest aggregate 10-minute windows by estimated work (each replayed with the
  ``--warmup`` seconds before it, which are not scored). Search: bisection on the
  busiest window down to a relative step of ``--tol``, then the other windows are
  checked and the pool grows by that step until all pass.
* ``shared`` (the earlier model): one shared daily profile for every model; the
  5 minutes around the aggregate daily peak are replayed and ``dedicated`` is
  load-tested on that same window.

``--scope`` (temporal market): ``market`` (all models), ``cold_tail`` (the 94.1 %
least-requested models by daily mean rate, Aegaeon's cut, with exactly their requests of
the full market; dedicated and pools sized on the tail alone) or ``both`` (default; the
tail's rows go to ``summary.json["cold_tail"]`` and ``cold_tail_*.png``).

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
from clustersim.serving.temporal import (  # noqa: E402
    COLD_TAIL_MODEL_SHARE,
    TemporalMarket,
    busiest_windows,
    repair_dedicated,
    scored_attainment,
    temporal_market,
    window_work,
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
SCOPES = ("market", "cold_tail")
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


# --------------------------------------------------------------------- temporal market
_TMARKETS: dict[tuple[Any, ...], TemporalMarket] = {}
_TSIZINGS: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
_TREPLAYS: dict[tuple[Any, ...], Market] = {}
_TADDED: dict[tuple[Any, ...], tuple[int, int]] = {}


def _tmarket(params: dict[str, Any]) -> TemporalMarket:
    """The point's temporal market (cached per process)."""
    traces = Path(str(params["traces"]))
    f = float(params.get("rate_factor", 1.0))
    key = (str(traces), int(params["n_models"]), int(params["seed"]), f)
    if key not in _TMARKETS:
        _TMARKETS[key] = temporal_market(
            traces,
            int(params["n_models"]),
            np.random.default_rng(int(params["seed"])),
            shape="genai",
            total_rate=_base_rate(traces) * f,
        )
    scope = str(params.get("scope", "market"))
    if scope == "market":
        return _TMARKETS[key]
    if scope != "cold_tail":
        raise ConfigError(f"scope must be 'market' or 'cold_tail', not {scope!r}")
    tkey = (*key, scope)
    if tkey not in _TMARKETS:
        full = _TMARKETS[key]
        _TMARKETS[tkey] = full.subset(
            full.cold_tail(), label="[cold tail: 94.1 % least-requested models]"
        )
    return _TMARKETS[tkey]


def _t_windows(tm: TemporalMarket, dev: Any, k: int) -> tuple[list[int], np.ndarray]:
    """The ``k`` busiest aggregate windows (busiest first) and the per-window work."""
    work = window_work(tm, dev)
    return busiest_windows(work, k), work.sum(axis=0)


def _t_sizing(params: dict[str, Any], dev: Any) -> tuple[TemporalMarket, list[int], list[int]]:
    """Dedicated (instances, tp): each model load-tested on its own busiest window."""
    tm = _tmarket(params)
    key = (id(tm), dev.name, float(params["target"]))
    if key not in _TSIZINGS:
        n, tp = dedicated_sizing(
            tm.peak_stack(),
            dev,
            SLO(),
            method="simulate",
            target=float(params["target"]),
            window=tm.window,
        )
        # equal SLO: the sizing must also pass every evaluated window in aggregate
        windows, _ = _t_windows(tm, dev, int(params["k_windows"]))
        warmup = float(params["warmup"])
        replays = [
            (_t_replay(tm, w, warmup), w * tm.window - max(0.0, w * tm.window - warmup))
            for w in windows
        ]
        n2, added = repair_dedicated(replays, dev, n, tp, float(params["target"]))
        _TSIZINGS[key] = (list(n2), list(tp))
        _TADDED[key] = (added, int(np.dot(n, tp)))
    n, tp = _TSIZINGS[key]
    return tm, n, tp


def _t_replay(tm: TemporalMarket, w: int, warmup: float) -> Market:
    """Window ``w`` with the ``warmup`` seconds before it (cached per process)."""
    key = (id(tm), w, warmup)
    if key not in _TREPLAYS:
        start = max(0.0, w * tm.window - warmup)
        _TREPLAYS[key] = tm.span(start, (w + 1) * tm.window)
    return _TREPLAYS[key]


def _t_run(
    tm: TemporalMarket, w: int, warmup: float, dev: Any, policy: str, g: int, **kw: Any
) -> tuple[float, Any]:
    """Scored attainment and result of ``policy`` on window ``w`` (0.0 if it cannot run)."""
    mk = _t_replay(tm, w, warmup)
    t_from = w * tm.window - max(0.0, w * tm.window - warmup)
    try:
        res = simulate(mk, policy, device=dev, gpus=g if policy != "dedicated" else None, **kw)
    except ConfigError:
        return 0.0, None
    return scored_attainment(res, t_from), res


def _t_search(
    tm: TemporalMarket,
    dev: Any,
    policy: str,
    target: float,
    windows: list[int],
    warmup: float,
    lo: int,
    hi: int,
    tol: float,
) -> dict[str, Any]:
    """Smallest fixed pool meeting ``target`` on every window (see module docstring).

    Bisection on ``windows[0]`` until ``b - a <= tol * b`` (``b`` passes); then each
    other window is checked at ``b`` and ``b`` grows by ``ceil(tol * b)`` until all pass
    (or exceeds ``hi``: not reached).
    """
    tried: dict[str, dict[str, float]] = {}

    def ok(g: int, w: int) -> tuple[bool, Any]:
        a, res = _t_run(tm, w, warmup, dev, policy, g)
        tried.setdefault(str(w), {})[str(g)] = a
        return a >= target, res

    passed, res_hi = ok(hi, windows[0])
    if not passed:
        return {
            "gpus_needed": None,
            "reached": False,
            "searched": tried,
            "note": f"target not reached with {hi} devices (the dedicated count) on the "
            f"busiest window",
        }
    a, b, best = lo, hi, res_hi
    while b - a > max(1.0, tol * b):
        mid = (a + b) // 2
        good, res = ok(mid, windows[0])
        if good:
            b, best = mid, res
        else:
            a = mid + 1
    results = {windows[0]: best}
    w_i = 1
    while w_i < len(windows):
        good, res = ok(b, windows[w_i])
        if good:
            results[windows[w_i]] = res
            w_i += 1
            continue
        b += max(1, math.ceil(tol * b))
        if b > hi:
            return {
                "gpus_needed": None,
                "reached": False,
                "searched": tried,
                "note": f"window {windows[w_i]} not served within {hi} devices",
            }
        results = {}
        w_i = 0  # re-check every window at the larger pool
    out = _t_rows(results, windows, warmup, tm, b)
    out["searched"] = tried
    out["reached"] = True
    return out


def _t_rows(
    results: dict[int, Any], windows: list[int], warmup: float, tm: TemporalMarket, g: int
) -> dict[str, Any]:
    """Row at pool ``g``: the busiest window's metrics plus per-window attainment."""
    w0 = windows[0]
    t_from = w0 * tm.window - max(0.0, w0 * tm.window - warmup)
    out = _row(results[w0], g)
    att = {}
    for w in windows:
        r = results[w]
        tf = w * tm.window - max(0.0, w * tm.window - warmup)
        att[str(w)] = scored_attainment(r, tf)
    out["slo_attainment"] = min(att.values())
    out["slo_attainment_strict"] = scored_attainment(results[w0], t_from, SLO(anchor="first_token"))
    out["attainment_per_window"] = att
    # a fixed pool pays for the whole day: provisioned dollars / expected day tokens
    lengths = tm.lengths
    mean_tok = (
        float(lengths.input_tokens.mean() + lengths.output_tokens.mean()) if lengths else 1200.0
    )
    day_mtok = tm.total_rate * tm.n_windows * tm.window * mean_tok / 1e6
    price = results[w0].device.price_per_hour
    out["cost_per_mtok_window"] = out["cost_per_mtok"]
    out["cost_per_mtok"] = g * price * tm.n_windows * tm.window / 3600.0 / day_mtok
    return out


def _t_point(params: dict[str, Any], dev: Any) -> dict[str, Any]:
    """A ``policy`` point of the temporal market."""
    p = str(params["policy"])
    target = float(params["target"])
    warmup = float(params["warmup"])
    tm, n, tp = _t_sizing(params, dev)
    windows, agg_work = _t_windows(tm, dev, int(params["k_windows"]))
    g_ded = int(np.dot(n, tp))
    if p == "dedicated":
        results = {}
        for w in windows:
            _, res = _t_run(tm, w, warmup, dev, "dedicated", g_ded, instances=n, tp=tp)
            results[w] = res
        out = _t_rows(results, windows, warmup, tm, g_ded)
        util_peak = out["pool_utilization"]
        r = tm.rates
        per_model_pm = r.max(axis=1) / r.mean(axis=1)
        out["_market"] = {
            "device": dev.name,
            "requests": int(sum(len(_t_replay(tm, w, warmup).requests) for w in windows)),
            "market": "temporal",
            "scope": str(params.get("scope", "market")),
            "models": len(tm.models),
            "model_names": [m.name for m in tm.models],
            "daily_mean_rate": tm.total_rate,
            "windows": windows,
            "window_start_s": [w * tm.window for w in windows],
            "window_work_device_s_per_s": [float(agg_work[w]) for w in windows],
            "mean_work_device_s_per_s": float(agg_work.mean()),
            "peak_stack_requests": len(tm.peak_stack().requests),
            "calibration": {
                "popularity": "GenAI SD trace per-model shares (86 base models)",
                "total_rate": tm.total_rate,
                "source": tm.source,
                "client_days_in_pool": len(tm.day_rate),
                "client_days_per_model": [len(m) for m in tm.members],
                "rate_scale_per_model": tm.scale.tolist(),
                "aggregate_peak_over_mean": float(r.sum(0).max() / r.sum(0).mean()),
                "per_model_peak_over_mean": per_model_pm.tolist(),
                "per_model_peak_over_mean_median": float(np.median(per_model_pm)),
                "sum_model_peaks_over_aggregate_peak": float(r.max(1).sum() / r.sum(0).max()),
                "peak_window_per_model": tm.peak_windows().tolist(),
            },
        }
        out["instances"] = n
        out["tp"] = tp
        added, g_peak = _TADDED[(id(tm), dev.name, target)]
        out["gpus_peak_sizing"] = g_peak
        out["engines_added_for_evaluated_windows"] = added
        # busy time scales ~ with work; the day average is an estimate, not a replay
        out["pool_utilization_day_estimate"] = util_peak * float(
            agg_work.mean() / agg_work[windows[0]]
        )
        return out
    t1 = time.perf_counter()
    out = _t_search(
        tm,
        dev,
        p,
        target,
        windows,
        warmup,
        lo=max(2, math.floor(0.5 * float(agg_work[windows[0]]))),
        hi=g_ded,
        tol=float(params["tol"]),
    )
    out["search_wall_s"] = time.perf_counter() - t1
    return out


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
    if params.get("market", "shared") == "temporal":
        if kind != "policy":
            raise ValueError("the temporal market has only policy points")
        out = _t_point(params, dev)
    elif kind == "policy":
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
    market: str = "temporal",
    k_windows: int = 3,
    warmup: float = 240.0,
    tol: float = 0.03,
    policies_run: Sequence[str] | None = None,
    executor: str | None = None,
    workers: int | None = 1,
    force: bool = False,
    scopes: Sequence[str] = SCOPES,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    scopes = [sc for sc in SCOPES if sc in scopes]
    if market != "temporal" or not scopes:
        scopes = ["market"]
    n_models = 16 if quick else 86
    order = ["dedicated", "token_pooled", "hybrid_pooled", "multiplexed", "serverless"]
    chosen = [p for p in order if policies_run is None or p in policies_run]
    if "dedicated" not in chosen:
        raise ConfigError("--policies must include dedicated (the baseline)")
    if market not in ("temporal", "shared"):
        raise ConfigError(f"--market must be temporal or shared, not {market!r}")
    base: dict[str, Any] = {
        "traces": str(TRACES.resolve()),
        "inputs_sha256": {k: file_digest(TRACES / Path(*v)) for k, v in INPUT_FILES.items()},
        "device": device_name,
        "n_models": n_models,
        "target": target,
    }
    if market == "temporal":
        window = 600.0
        # quick: 2 % of the traffic keeps the 10-minute windows small for the tests
        base.update(
            market="temporal",
            window=window,
            k_windows=k_windows,
            warmup=warmup,
            tol=tol,
            rate_factor=0.02 if quick else 1.0,
        )
        factors: list[float] = []
    else:
        window = 40.0 if quick else 300.0
        base["window"] = window
        # traffic sweep: where does token-level pooling reach Aegaeon's 82 % saving?
        factors = [] if quick else [0.05, 0.25, 1.0]
    run_ = run_points(
        out,
        script="pooling_savings",
        name="pooling-savings",
        base=base,
        points=[
            *(
                {"kind": "policy", "policy": p}
                if sc == "market"
                else {"kind": "policy", "policy": p, "scope": sc}
                for sc in scopes
                for p in chosen
            ),
            *({"kind": "traffic", "factor": f} for f in factors),
        ],
        seeds=[seed],
        executor=executor,
        workers=workers,
        force=force,
    )
    pts: list[PointResult] = run_.results
    by_scope: dict[str, dict[str, Any]] = {sc: {} for sc in scopes}
    infos: dict[str, dict[str, Any]] = {}  # each scope's market description
    for pt in pts:
        if pt.params["kind"] == "policy":
            sc = str(pt.params.get("scope", "market"))
            row = {k: v for k, v in pt.summary.items() if k != "wall_seconds"}
            if "_market" in row:
                infos[sc] = row.pop("_market")
            by_scope[sc][str(pt.params["policy"])] = row
    sweep = [
        {k: v for k, v in pt.summary.items() if k != "wall_seconds"}
        for pt in pts
        if pt.params["kind"] == "traffic"
    ]
    for pol in by_scope.values():
        g_ded = pol["dedicated"]["gpus_needed"]
        for p in POOLED:
            if p not in pol:
                pol[p] = {"gpus_needed": None, "note": "not run (--policies)"}
                continue
            g = pol[p].get("gpus_needed")
            pol[p]["gpu_saving_vs_dedicated"] = (1 - g / g_ded) if g else None
    head = scopes[0]
    policies = by_scope[head]
    info = infos[head]
    tp = policies["token_pooled"]
    hy = policies["hybrid_pooled"]
    cal = info["calibration"]
    summ = {
        "experiment": "pooling_savings",
        "quick": quick,
        "market": info,
        "method": (
            f"dedicated: per-model load test on each model's own busiest 10-min window of the "
            f"day; pooled: one fixed pool reaching the target on each of the {k_windows} "
            f"busiest aggregate 10-min windows by estimated work ({warmup:g} s unscored "
            f"warm-up; search step {tol:.0%})"
            if market == "temporal"
            else "shared daily profile; the 5 minutes around the aggregate peak; dedicated "
            "load-tested on that window"
        ),
        "device": info["device"],
        "n_models": n_models,
        "window_s": window,
        "requests": info["requests"],
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
        "cold_tail": _tail_summary(by_scope, infos) if "cold_tail" in by_scope else None,
        "token_pooled_saving_by_scope": {
            sc: pol["token_pooled"].get("gpu_saving_vs_dedicated") for sc, pol in by_scope.items()
        },
        "paper": {
            "gpus_before": 1192,
            "gpus_after": 213,
            "saving": 1 - 213 / 1192,
            "source": "Aegaeon SOSP'25 [S], literature.md §1.2",
        },
        "wall_seconds": run_.compute_seconds("wall_seconds"),
    }
    if head != "market":  # only the cold tail was run: its rows are the main table
        summ["scope"] = head
    (out / "summary.json").write_text(json.dumps(summ, indent=2, default=_json))
    _plots(out, policies, sweep, info["device"])
    if "cold_tail" in by_scope and head != "cold_tail":
        _plots(out, by_scope["cold_tail"], [], info["device"], prefix="cold_tail_")
    print(run_.line())
    return summ


def _tail_summary(by_scope: dict[str, Any], infos: dict[str, Any]) -> dict[str, Any]:
    """The cold-tail rows, with the tail's share of the market's requests and GPUs."""
    pol = by_scope["cold_tail"]
    tinfo = infos["cold_tail"]
    tp = pol["token_pooled"]
    out: dict[str, Any] = {
        "rule": f"the {COLD_TAIL_MODEL_SHARE:.1%} least-requested models by daily mean rate "
        "(Aegaeon's cut), with exactly their requests of the full market; dedicated and "
        "pooled sized as for the market, on the tail's own busiest windows",
        "market": tinfo,
        "policies": pol,
        "token_pooled_saving_vs_dedicated": tp.get("gpu_saving_vs_dedicated"),
        "meets_75pct_saving": bool((tp.get("gpu_saving_vs_dedicated") or 0) >= 0.75),
    }
    if "market" in by_scope:
        full = infos["market"]
        out["request_share_of_market"] = tinfo["daily_mean_rate"] / full["daily_mean_rate"]
        g_full = by_scope["market"]["dedicated"]["gpus_needed"]
        out["dedicated_gpu_share_of_market"] = pol["dedicated"]["gpus_needed"] / g_full
    return out


def _json(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return str(x)


def _plots(
    out: Path, policies: dict[str, Any], sweep: list[dict[str, Any]], dev: str, prefix: str = ""
) -> None:
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
                "not run" if "not run" in str(policies[n].get("note", "")) else "not reached",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
            )
    ax.set_ylabel("GPUs needed at equal SLO attainment")
    what = "the cold tail's load" if prefix else "same market load"
    ax.set_title(f"{what[0].upper()}{what[1:]}, each policy ({dev})")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{prefix}gpus_needed.png", dpi=150)
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
    fig.savefig(out / f"{prefix}gpus_vs_tail.png", dpi=150)
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
        help="reduced run for tests (16 models; temporal: 2 %% of the traffic; shared: 40-s "
        "window, no traffic sweep)",
    )
    ap.add_argument("--device", default="H20")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.99, help="SLO attainment target")
    ap.add_argument(
        "--market",
        default="temporal",
        choices=["temporal", "shared"],
        help="temporal: per-model ServeGen client days over a day (default); shared: one "
        "shared daily profile, 5 minutes at the peak (the earlier model)",
    )
    ap.add_argument("--k-windows", type=int, default=3, help="busiest windows a pool must pass")
    ap.add_argument(
        "--warmup",
        type=float,
        default=240.0,
        help="unscored seconds replayed before a window (the token pool needs ~3 min to "
        "reach steady state from empty)",
    )
    ap.add_argument("--tol", type=float, default=0.03, help="relative step of the pool search")
    ap.add_argument(
        "--policies",
        default=None,
        help="comma-separated subset of policies to run (default: all; must include dedicated)",
    )
    ap.add_argument(
        "--scope",
        default="both",
        choices=["both", *SCOPES],
        help="temporal market: the whole market, its cold tail (the 94.1 %% least-requested "
        "models, Aegaeon's cut) or both (default)",
    )
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
            market=a.market,
            k_windows=a.k_windows,
            warmup=a.warmup,
            tol=a.tol,
            policies_run=a.policies.split(",") if a.policies else None,
            scopes=SCOPES if a.scope == "both" else (a.scope,),
            executor=a.executor,
            workers=a.workers,
            force=a.force,
        )
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    tables = [(s.get("scope", "market"), s["policies"])]
    if s.get("cold_tail") and s.get("scope") != "cold_tail":
        tables.append(("cold_tail", s["cold_tail"]["policies"]))
    for name, pol in tables:
        print(f"[{name}]")
        for p, r in pol.items():
            print(
                f"{p:14s} gpus={r.get('gpus_needed')} attain={r.get('slo_attainment')} "
                f"cost/Mtok={r.get('cost_per_mtok')}"
            )
    print(f"wrote {a.out / 'summary.json'} and PNGs in {a.out}")
    return s


if __name__ == "__main__":
    main()
