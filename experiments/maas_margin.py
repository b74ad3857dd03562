"""Gross margin of a model service versus load rate: dedicated instances vs a pooled fleet.

Method (analytical; inputs cited in docs/hetero-power-economics.md):

1. One instance = Qwen2.5-7B on one H20 (Alibaba's Model Studio fleet is H20; Aegaeon
   served 6-14B models). Its capacity comes from the roofline cost model of the serving
   module (``clustersim.economics.serving_capacity``): the largest decode batch whose
   step meets the TBT SLO of 100 ms (Aegaeon's main setting) with the KV cache that fits,
   prefills batched between decode steps.
2. Requests: mean prompt and output lengths of the Azure LLM inference trace 2023
   (conversation), read from ``shared/traces/azure-llm-2023``.
3. Market: 100 models with Zipf popularity s = 2.85 (the exponent that puts 98.65 % of
   requests on the top 5.9 % of models, literature.md §1.3 [D]).
4. Fleets at aggregate load L requests/s, sized for one hour (``maas_fleet``):
   ``dedicated`` -- each model keeps max(1, ceil(L_m / mu)) instances (at least one per
   model, today's practice); ``pooled`` -- one token-level pool of ceil(L / mu) instances
   (Aegaeon-style, model switches taken as free: an upper bound on pooling).
5. Cost per device-hour: ``CostModel`` (capex over 5 years, energy at 0.0806 USD/kWh with
   PUE 1.58 and 27.5 % node overhead, facility 163.44 USD/kW-month); energy follows the
   fleet's busy fraction. Revenue: 0.20 / 0.60 USD per million input / output tokens
   (a public list price for an 8B-class open model). Gross margin = (revenue - cost) /
   revenue; cost per million tokens counts input + output tokens.
6. Also: the margin of renting H20, A100 and H100 by the device-hour at list price versus
   the sold (busy) fraction.

Writes ``DIR/summary.json``: policy -> {load_rate, cost_per_mtok, gross_margin, devices,
utilization, energy_kwh_per_mtok} (lists over load rates, requests/s); ``DIR/details.json``
(inputs, instance capacity, break-even loads, rental margins) and two PNGs.
``--quick``: 6 load rates.

Every number comes from one point of a :mod:`clustersim.sweep` function sweep
(``run_point``; the trace file's SHA-256 and every input constant are part of its
parameters; the model is analytical, so the one ``seed`` is only a label) stored in
``DIR/points``: one ``inputs`` point (trace lengths, instance capacity), one ``fleet``
point per (policy, load rate) and one ``rental`` point per device. A re-run reuses them.
Run: ``python experiments/maas_margin.py --out DIR [--quick] [--executor SPEC]
[--workers N] [--force]``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT) not in sys.path:  # `experiments.<name>:run_point` must import (sweep workers too)
    sys.path.append(str(ROOT))

from clustersim.economics import (  # noqa: E402
    CostModel,
    maas_fleet,
    rental_margin,
    serving_capacity,
    zipf_shares,
)
from clustersim.hardware import get_device  # noqa: E402
from clustersim.sweep import file_digest  # noqa: E402
from experiments._points import add_sweep_args, run_points  # noqa: E402

TRACES = ROOT.parent / "shared" / "traces"
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
MODEL = "Qwen2.5-7B"
DEVICE = "H20"
TBT_S = 0.1  # Aegaeon main SLO: TBT 100 ms [S]
N_MODELS = 100
ZIPF_S = 2.85  # literature.md §1.3, M = 100 [D]
PRICE_IN = 0.20  # USD per million input tokens, 8B-class open model list price [S]
PRICE_OUT = 0.60  # USD per million output tokens [S]
POLICIES = ("dedicated", "pooled")
RENTAL_DEVICES = ("H20", "A100", "H100")
TRACE_CSV = ("azure-llm-2023", "AzureLLMInferenceTrace_conv.csv")


def azure_lengths(path: Path) -> tuple[float, float, int]:
    """Mean prompt and output tokens of an Azure LLM trace CSV (and the row count)."""
    ctx: list[float] = []
    gen: list[float] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            ctx.append(float(row["ContextTokens"]))
            gen.append(float(row["GeneratedTokens"]))
    return float(np.mean(ctx)), float(np.mean(gen)), len(ctx)


def break_even(loads: Sequence[float], margins: Sequence[float]) -> float | None:
    """Smallest load (log-interpolated) at which the margin crosses zero."""
    for i in range(1, len(loads)):
        a, b = margins[i - 1], margins[i]
        if a < 0 <= b:
            la, lb = math.log(loads[i - 1]), math.log(loads[i])
            return float(math.exp(la + (lb - la) * (-a) / (b - a)))
    return None if margins and margins[0] < 0 else (loads[0] if loads else None)


_LENGTHS: dict[str, tuple[float, float, int]] = {}


def _instance(params: dict[str, Any]) -> tuple[float, float, int, Any]:
    """Trace lengths (cached per process) and the instance capacity of ``params``."""
    path = str(params["trace_csv"])
    if path not in _LENGTHS:
        _LENGTHS[path] = azure_lengths(Path(path))
    prompt, output, n_req = _LENGTHS[path]
    cap = serving_capacity(
        str(params["model"]),
        get_device(str(params["device"])),
        prompt_tokens=prompt,
        output_tokens=output,
        tbt_s=float(params["tbt_s"]),
    )
    return prompt, output, n_req, cap


def run_point(params: dict[str, Any]) -> dict[str, Any]:
    """One sweep point, by ``kind``.

    ``inputs``: the trace's mean prompt/output tokens and row count, the instance
    capacity and the device-hour cost at full load; ``fleet``: :func:`maas_fleet` of
    ``policy`` at ``load_rps``; ``rental``: :func:`rental_margin` of ``rent_device``
    over ``utilization`` (a list).
    """
    kind = str(params["kind"])
    cm = CostModel()
    if kind == "rental":
        spec = get_device(str(params["rent_device"]))
        us = [float(u) for u in params["utilization"]]
        return {
            "price_per_hour": spec.price_per_hour,
            "cost_per_hour_full_load": cm.device_hour(spec, 1.0).as_dict(),
            "utilization": us,
            "gross_margin": [rental_margin(spec, u, cm) for u in us],
        }
    prompt, output, n_req, cap = _instance(params)
    dev = get_device(str(params["device"]))
    if kind == "inputs":
        return {
            "azure_conv_requests": n_req,
            "mean_prompt_tokens": prompt,
            "mean_output_tokens": output,
            "instance": dataclasses.asdict(cap),
            "device_hour_cost_full_load": cm.device_hour(dev, 1.0).as_dict(),
        }
    if kind != "fleet":
        raise ValueError(f"unknown point kind {kind!r}; known: inputs, fleet, rental")
    x = maas_fleet(
        str(params["policy"]),
        float(params["load_rps"]),
        cast(Sequence[float], zipf_shares(int(params["n_models"]), float(params["zipf_s"]))),
        cap,
        dev,
        prompt_tokens=prompt,
        output_tokens=output,
        usd_per_mtok_in=float(params["price_in"]),
        usd_per_mtok_out=float(params["price_out"]),
        cost=cm,
    )
    return {
        "load_rate": x.load_rps,
        "cost_per_mtok": x.cost_per_mtok,
        "gross_margin": x.gross_margin,
        "devices": x.devices,
        "utilization": x.utilization,
        "energy_kwh_per_mtok": x.energy_kwh_per_mtok,
    }


def plot(summary: dict[str, Any], rent: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[Path] = []
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.4))
    for i, p in enumerate(POLICIES):
        v = summary[p]
        m = [x * 100 if math.isfinite(x) else float("nan") for x in v["gross_margin"]]
        axes[0].plot(v["load_rate"], m, marker="os"[i], color=OKABE_ITO[5 + i], label=p)
        axes[1].plot(
            v["load_rate"], v["cost_per_mtok"], marker="os"[i], color=OKABE_ITO[5 + i], label=p
        )
    axes[0].axhline(0, color="black", lw=0.8)
    axes[0].set_ylim(-300, 100)
    axes[0].set_ylabel("gross margin (%)")
    axes[0].set_title("Gross margin vs load (100 models, Zipf 2.85)")
    axes[1].set_yscale("log")
    price = summary["_blended_price_per_mtok"]
    axes[1].axhline(price, color=OKABE_ITO[0], ls=":", label=f"blended list price ${price:.2f}")
    axes[1].set_ylabel("cost (USD per million tokens)")
    axes[1].set_title("Cost per million tokens (in + out)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("aggregate load (requests/s)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"{MODEL} on {DEVICE}: dedicated per-model instances vs a pooled fleet")
    fig.tight_layout()
    files.append(out / "maas_margin.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (dev, v) in enumerate(rent.items()):
        ax.plot(
            [u * 100 for u in v["utilization"]],
            [m * 100 for m in v["gross_margin"]],
            color=OKABE_ITO[i + 1],
            label=f"{dev} at ${v['price_per_hour']:.2f}/h",
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylim(-200, 100)
    ax.set_xlabel("sold share of device-hours (%)")
    ax.set_ylabel("gross margin (%)")
    ax.set_title("Renting by the device-hour at list price")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(out / "rental_margin.png")
    fig.savefig(files[-1], dpi=130)
    plt.close(fig)
    return files


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--quick", action="store_true", help="6 load rates")
    ap.add_argument("--traces", type=Path, default=TRACES, help="the shared/traces folder")
    add_sweep_args(ap, workers=1)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trace = (args.traces / Path(*TRACE_CSV)).resolve()
    loads = [float(x) for x in np.logspace(-1, 3, 6 if args.quick else 25)]
    us = [float(u) for u in np.linspace(0.05, 1.0, 20)]
    run = run_points(
        args.out,
        script="maas_margin",
        name="maas-margin",
        base={
            "trace_csv": str(trace),
            "inputs_sha256": {"trace": file_digest(trace)},
            "model": MODEL,
            "device": DEVICE,
            "tbt_s": TBT_S,
            "n_models": N_MODELS,
            "zipf_s": ZIPF_S,
            "price_in": PRICE_IN,
            "price_out": PRICE_OUT,
        },
        points=[
            {"kind": "inputs"},
            *({"kind": "fleet", "policy": p, "load_rps": lam} for p in POLICIES for lam in loads),
            *({"kind": "rental", "rent_device": d, "utilization": us} for d in RENTAL_DEVICES),
        ],
        seeds=[0],
        executor=args.executor,
        workers=args.workers,
        force=args.force,
    )
    by_kind: dict[str, list[Any]] = {}
    for pt in run.results:
        by_kind.setdefault(str(pt.params["kind"]), []).append(pt)
    inputs = by_kind["inputs"][0].summary
    prompt = float(inputs["mean_prompt_tokens"])
    output = float(inputs["mean_output_tokens"])
    cap = inputs["instance"]
    summary: dict[str, Any] = {}
    for p in POLICIES:
        pts = [pt.summary for pt in by_kind["fleet"] if pt.params["policy"] == p]
        summary[p] = {k: [x[k] for x in pts] for k in pts[0]}
    blended = (prompt * PRICE_IN + output * PRICE_OUT) / (prompt + output)
    rent = {str(pt.params["rent_device"]): pt.summary for pt in by_kind["rental"]}
    details = {
        "method": (__doc__ or "").strip(),
        "model": MODEL,
        "device": DEVICE,
        "tbt_s": TBT_S,
        **inputs,
        "n_models": N_MODELS,
        "zipf_s": ZIPF_S,
        "price_usd_per_mtok": {"input": PRICE_IN, "output": PRICE_OUT, "blended": blended},
        "break_even_load_rps": {
            p: break_even(summary[p]["load_rate"], summary[p]["gross_margin"]) for p in POLICIES
        },
        "rental": rent,
        "wall_s": time.perf_counter() - t0,
        "points": run.line(),
    }
    plot({**summary, "_blended_price_per_mtok": blended}, rent, args.out)
    clean = {
        p: {
            k: [None if isinstance(x, float) and not math.isfinite(x) else x for x in v]
            for k, v in summary[p].items()
        }
        for p in POLICIES
    }
    (args.out / "summary.json").write_text(json.dumps(clean, indent=2))
    (args.out / "details.json").write_text(json.dumps(details, indent=2, default=str))
    print(
        f"instance: batch {cap['batch']}, {cap['requests_per_s']:.2f} req/s, "
        f"{cap['output_tokens_per_s']:.0f} output tok/s; prompt {prompt:.0f} / output "
        f"{output:.0f}"
    )
    for p in POLICIES:
        v = summary[p]
        print(
            f"{p:9s}: margin {v['gross_margin'][0] * 100:8.1f} % at {loads[0]:.2f} req/s -> "
            f"{v['gross_margin'][-1] * 100:6.1f} % at {loads[-1]:.0f} req/s; break-even "
            f"{details['break_even_load_rps'][p]}"
        )
    print(run.line())
    print(f"wrote {args.out / 'summary.json'}, details.json, maas_margin.png, rental_margin.png")
    return clean


if __name__ == "__main__":
    main()
