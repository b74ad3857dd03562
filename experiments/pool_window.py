"""One pooled policy on one 10-minute window of the temporal market, at one pool size.

The single replays quoted in docs/serving.md (§3 and §6.2) come from this script; the
market is the one ``pooling_savings.py`` uses (86 models, seed 0, H20, 240 s of unscored
warm-up before the window). It prints the scored SLO attainment, the attainment per
minute of the replay, where the misses are, how busy each kind of worker was
(prefill / decode / engine, per tensor-parallel degree) and, for the token pools, the
busiest models' decode batches against the staffing plan.

Run: ``python experiments/pool_window.py --policy serverless --gpus 3456 --window 20:10
[--kw scale_out_at=8] [--kw staffing=proportional] [--scope cold_tail]``. Needs
``../shared/traces``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from clustersim.hardware import get_device  # noqa: E402
from clustersim.serving import simulate  # noqa: E402
from clustersim.serving.metrics import slo_met  # noqa: E402
from clustersim.serving.temporal import scored_attainment, temporal_market  # noqa: E402

TRACES = ROOT.parent / "shared" / "traces"


def _window(text: str, width: float) -> int:
    """Window index from ``HH:MM`` (its start) or a plain index."""
    if ":" in text:
        h, m = text.split(":")
        return int((int(h) * 3600 + int(m) * 60) // width)
    return int(text)


def _kw(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, val = item.partition("=")
        try:
            out[key] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            out[key] = val  # a bare word, e.g. staffing=proportional
    return out


def main(argv: Sequence[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--gpus", type=int, required=True)
    ap.add_argument("--window", default="20:10", help="HH:MM of the window start, or its index")
    ap.add_argument("--warmup", type=float, default=240.0)
    ap.add_argument("--device", default="H20")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kw", action="append", default=[], help="policy parameter key=value")
    ap.add_argument("--traces", type=Path, default=TRACES)
    ap.add_argument(
        "--scope",
        default="market",
        choices=["market", "cold_tail"],
        help="the whole market, or its cold tail (the 94.1 %% least-requested models, as "
        "pooling_savings.py --scope cold_tail)",
    )
    a = ap.parse_args(argv)
    tm = temporal_market(a.traces, 86, np.random.default_rng(a.seed))
    if a.scope == "cold_tail":
        tm = tm.subset(tm.cold_tail(), label="[cold tail]")
    w = _window(a.window, tm.window)
    start = max(0.0, w * tm.window - a.warmup)
    mk = tm.span(start, (w + 1) * tm.window)
    t_from = w * tm.window - start
    cpu = time.process_time()
    res = simulate(mk, a.policy, device=get_device(a.device), gpus=a.gpus, **_kw(a.kw))
    cpu = time.process_time() - cpu
    att = scored_attainment(res, t_from)
    r = mk.requests
    ok = slo_met(res)
    minute = (r.arrival // 60).astype(int)
    per_min = np.bincount(minute, weights=ok) / np.maximum(np.bincount(minute), 1)
    bad = (r.arrival >= t_from) & ~ok
    print(
        f"{a.policy} on {a.gpus} {a.device}, window {w} ({w * tm.window / 3600:.2f} h), "
        f"{len(r.arrival):,} requests: attainment {att:.4f}  ({cpu:.0f} CPU s)"
    )
    print("attainment per minute of the replay:", np.round(per_min, 3).tolist())
    if bad.any():
        ttft = res.first_token - r.arrival
        per_model = np.bincount(r.model[bad], minlength=len(mk.models))
        top = np.argsort(-per_model)[:5]
        print(
            f"misses: {int(bad.sum()):,}; first token within 10 s: "
            f"{np.mean(ttft[bad] <= 10.0):.3f}; median longest gap "
            f"{np.nanmedian(res.max_gap[bad]):.2f} s; by model: "
            + ", ".join(f"{mk.models[m].name} {mk.models[m].spec.name} {per_model[m]}" for m in top)
        )
    print("workers over the replay (busy / loading: share of their allocated device-time):")
    for kind, tp, n, dev, busy, load in worker_breakdown(res):
        print(f"  {kind:>8} TP{tp}: {n:4d} workers {dev:5d} devices", end="")
        print(f"  busy {busy:.3f}  loading {load:.3f}")
    db = res.extra.get("decode_batches")
    if db:  # token pools: time-averaged decode batch of the models with most token-steps
        work = np.asarray(db["steps"]) * np.asarray(db["mean_batch"])
        print("decode batches of the busiest models (time-averaged vs staffing plan):")
        for m in np.argsort(-work, kind="stable")[:5].tolist():
            print(
                f"  {mk.models[m].name} {mk.models[m].spec.name}: {db['mean_batch'][m]:.1f} vs "
                f"{db['planned_batch'][m]:.1f}, on {int(db['workers'][m])} decode workers"
            )
    return att


def worker_breakdown(res: Any) -> list[tuple[str, int, int, int, float, float]]:
    """Per (kind, tensor-parallel degree), in that order: ``(kind, tp, workers, devices,
    busy share, loading share)``; shares are of the workers' allocated device-seconds
    (a worker still alive at the end counts until the horizon)."""
    agg: dict[tuple[str, int], list[float]] = {}
    for r in res.instances:
        end = r.stopped if np.isfinite(r.stopped) else res.horizon
        life = max(0.0, end - r.created) * r.tp
        a = agg.setdefault((r.kind, r.tp), [0, 0, 0.0, 0.0, 0.0])
        a[0] += 1
        a[1] += r.tp
        a[2] += life
        a[3] += r.busy * r.tp
        a[4] += r.load_time * r.tp
    return [
        (k, tp, int(a[0]), int(a[1]), a[3] / a[2] if a[2] else 0.0, a[4] / a[2] if a[2] else 0.0)
        for (k, tp), a in sorted(agg.items())
    ]


if __name__ == "__main__":
    main()
