"""Benchmark: replay a day of one ServeGen language-model class and print requests per second.

Workload: every client window of ServeGen ``--class`` (Alibaba Bailian, default
``m-large``) turned into arrivals (Gamma/Weibull renewal per window, real rates), Azure
LLM 2023 conversation token lengths, one market model of ``--model`` architecture.
Serving: ``dedicated`` with analytic peak sizing, round-robin dispatch, engines
replayed in ``--processes`` worker processes (the serving fast path, whose loop numba
compiles: the first run on a machine adds ≈ 10-15 s to compile it, later runs load it from
the cache; ``CLUSTERSIM_JIT=0`` runs it interpreted, ≈ 10x slower). Prints the
time of every phase (loading the traces, arrival generation, length sampling, sizing,
simulation), the total wall time, requests simulated per second, the machine's core
count and the CPU seconds of this process and its worker processes (``getrusage``), so
the figures mean something on a shared machine. Every request of the window is
simulated (no sampling).

Run: ``python benchmarks/bench_serving.py [--class m-large] [--hours 24] [--processes 2]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

from clustersim.hardware import get_device
from clustersim.serving import (
    SLO,
    Market,
    MarketModel,
    Requests,
    attainment,
    get_model,
    load_azure_llm,
    load_servegen_clients,
    servegen_arrivals,
    simulate,
)

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


def _sized(mk: Market, dev: object, tp: int) -> int:
    """Analytic peak sizing (dedicated_sizing) at the requested tensor-parallel degree."""
    import math

    from clustersim.serving import instance_capacity, model_cost
    from clustersim.serving.policies import peak_rates

    c = model_cost(mk.models[0].spec, dev, tp)  # type: ignore[arg-type]
    r = mk.requests
    cap = instance_capacity(c, float(r.input_tokens.mean()), float(r.output_tokens.mean()), SLO())
    return math.ceil(float(peak_rates(mk)[0]) / cap)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--class", dest="cls", default="m-large", help="ServeGen language class")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--device", default="H800")
    ap.add_argument("--model", default="Qwen2.5-72B")
    ap.add_argument("--tp", type=int, default=4, help="devices per engine (Aegaeon: TP=4 for 72B)")
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not TRACES.exists():
        raise SystemExit(f"traces not found at {TRACES}")
    wall0 = time.perf_counter()
    cpu0 = _cpu()
    rng = np.random.default_rng(a.seed)
    clients = load_servegen_clients(TRACES / "alibaba-servegen-2025" / "data" / "language" / a.cls)
    az = load_azure_llm(TRACES / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv")
    t_load = time.perf_counter()
    t, _ = servegen_arrivals(clients, rng, start=0.0, end=a.hours * 3600.0, rate_scale=a.rate_scale)
    t_arr = time.perf_counter()
    inp, out = az.sample(len(t), rng)
    mk = Market(
        (MarketModel(a.cls, get_model(a.model)),),
        Requests(
            t,
            np.zeros(len(t), dtype=np.int32),
            inp.astype(np.int32, copy=False),
            out.astype(np.int32, copy=False),
        ),
        a.hours * 3600.0,
        f"ServeGen {a.cls}",
    )
    t_len = time.perf_counter()
    dev = get_device(a.device)
    tp = [a.tp]
    n = [max(1, _sized(mk, dev, a.tp))]
    t_size = time.perf_counter()
    cpu_gen = _cpu() - cpu0
    res = simulate(mk, "dedicated", device=dev, instances=n, tp=tp, processes=a.processes)
    t_sim = time.perf_counter()
    c = res.conservation()
    att = attainment(res)
    t_end = time.perf_counter()
    cpu_all = _cpu() - cpu0
    wall = t_end - wall0
    gen = t_size - wall0
    sim = t_sim - t_size
    nreq = len(t)
    print(
        f"workload: ServeGen {a.cls}, {a.hours:g} h, {nreq:,} requests "
        f"(mean {nreq / (a.hours * 3600):.1f} req/s), {a.model} TP{tp[0]} on {dev.name}"
    )
    print(f"engines: {n[0]} ({n[0] * tp[0]} devices), processes: {a.processes}")
    print(
        f"phases (wall s): load traces {t_load - wall0:.1f}, arrivals {t_arr - t_load:.1f}, "
        f"lengths {t_len - t_arr:.1f}, sizing {t_size - t_len:.1f}, simulate {sim:.1f}, "
        f"metrics {t_end - t_sim:.1f}"
    )
    print(f"generate: {gen:.1f} s   simulate: {sim:.1f} s   total: {wall:.1f} s")
    print(f"requests/s simulated: {nreq / sim:,.0f} (simulation), {nreq / wall:,.0f} (end to end)")
    print(
        f"cores: {os.cpu_count()}   CPU s (this process + workers): generate {cpu_gen:.1f}, "
        f"total {cpu_all:.1f} = {cpu_all / max(nreq, 1) * 1e6:.2f} us per request; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"served {c['served']:,}  SLO attainment {att:.4f}")


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its finished child processes."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


if __name__ == "__main__":
    main()
